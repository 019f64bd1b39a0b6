//! The API keys' routes: create, list and revoke.

use crate::http::route::{Limits, Route, Who, r};
use crate::http::schema::json;
use axum::routing::{delete, get, post};
use freeagent_shared::api::*;

pub(crate) fn routes(_l: &Limits) -> Vec<Route> {
    use Who::*;
    vec![
        r(
            "post",
            "/api/keys",
            ApiKey,
            "Create an API key ({name, scopes, expires_at?}); the secret is in this reply only (admin)",
            post(super::create),
        )
        .takes(json::<CreateKeyRequest>()).gives(json::<CreatedKey>()).created(),
        r(
            "get",
            "/api/keys",
            ApiKey,
            "Every API key, without secrets (admin)",
            get(super::list),
        )
        .gives(json::<KeyList>()),
        r(
            "delete",
            "/api/keys/{id}",
            ApiKey,
            "Revoke an API key (admin)",
            delete(super::revoke),
        )
        .gives(json::<KeyRevoked>()),
        r(
            "post",
            "/api/keys/{id}/revoke",
            ApiKey,
            "Revoke an API key (admin)",
            post(super::revoke),
        )
        .gives(json::<KeyRevoked>()),
    ]
}
