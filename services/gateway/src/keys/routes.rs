//! The API keys' routes: create, list and revoke.

use crate::http::route::{self, Limits, Route};
use crate::http::schema::json;
use freeagent_shared::api::*;

pub(crate) fn routes(_l: &Limits) -> Vec<Route> {
    vec![
        route::post("/api/keys", "Create an API key ({name, scopes, expires_at?}); the secret is in this reply only (admin)", super::create)
            .takes(json::<CreateKeyRequest>())
            .gives(json::<CreatedKey>())
            .created(),
        route::get("/api/keys", "Every API key, without secrets (admin)", super::list)
            .gives(json::<KeyList>()),
        route::delete("/api/keys/{id}", "Revoke an API key (admin)", super::revoke)
            .gives(json::<KeyRevoked>()),
        route::post("/api/keys/{id}/revoke", "Revoke an API key (admin)", super::revoke)
            .gives(json::<KeyRevoked>()),
    ]
}
