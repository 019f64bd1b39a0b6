//! `/api/keys`: API keys as a managed resource, for admin keys only. A new key's secret is in
//! the reply to its creation and nowhere else (the farm stores its hash, as for the bootstrap
//! key); lists never carry a secret or a hash. Revocation is one-way and takes effect at once on
//! this gateway and within the key cache's lifetime (`api_key_cache::TTL`) on the others.

pub(crate) mod routes;

use crate::auth::extract::PathId;
use crate::auth::extract::{Admin, Key};
use crate::error::{GatewayError, Result};
use crate::http::body::bad_json;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use freeagent_shared::api::{ApiScope, CreateKeyRequest, CreatedKey, KeyList, KeyRevoked, KeyView};
use freeagent_shared::db::{self, api_keys::ApiKey, api_keys::NewApiKey};
use freeagent_shared::ids::ApiKeyId;
use freeagent_shared::team::TeamName;
use freeagent_shared::token;

/// The most queues one key may be scoped to.
const MAX_WORKER_QUEUES: usize = 100;

/// The scopes of a stored key. Every stored name is one of `ApiScope`'s (the gateway writes
/// them); a name it does not know would grant nothing, so it is left out.
fn scopes_of(k: &ApiKey) -> Vec<ApiScope> {
    k.scopes.iter().filter_map(|s| s.parse().ok()).collect()
}

fn view(k: ApiKey) -> KeyView {
    KeyView {
        scopes: scopes_of(&k),
        id: k.id,
        name: k.name,
        created_at: k.created_at,
        expires_at: k.expires_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
        worker_queues: k.worker_queues,
        max_workers: k.max_workers,
        team: k.team,
    }
}

/// `POST /api/keys`: 201 with the new key's secret, shown once.
pub async fn create(
    State(st): State<AppState>,
    Key { key: admin, .. }: Key<Admin>,
    body: std::result::Result<Json<CreateKeyRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedKey>)> {
    let Json(req) = body.map_err(bad_json)?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(GatewayError::bad_request(
            "name must be 1 to 200 characters",
        ));
    }
    let mut scopes = req.scopes;
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(GatewayError::bad_request(format!(
            "scopes must list at least one of {}",
            ApiScope::ALL.map(ApiScope::as_str).join(", ")
        )));
    }
    if let Some(at) = req.expires_at
        && at <= chrono::Utc::now()
    {
        return Err(GatewayError::bad_request(
            "expires_at must be in the future",
        ));
    }
    let worker_queues = match req.worker_queues {
        None => None,
        Some(list) if list.is_empty() || list.len() > MAX_WORKER_QUEUES => {
            return Err(GatewayError::bad_request(format!(
                "worker_queues must list 1 to {MAX_WORKER_QUEUES} queues (leave it out for any queue)"
            )));
        }
        Some(list) => {
            let mut queues = list
                .iter()
                .map(|q| {
                    freeagent_shared::status::QueueName::parse(q).map(|q| q.as_str().to_owned())
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| GatewayError::bad_request(format!("worker_queues: {e}")))?;
            queues.sort();
            queues.dedup();
            Some(queues)
        }
    };
    if req.max_workers.is_some_and(|n| n < 1) {
        return Err(GatewayError::bad_request(
            "max_workers must be at least 1 (leave it out for no maximum)",
        ));
    }
    let team = req.team.unwrap_or_else(TeamName::default_team);
    let secret = token::generate(token::TokenKind::ApiKey);
    let names: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    // A team exists once a key names it.
    let mut tx = st.pool.begin().await.map_err(db::Error::from_sqlx)?;
    db::teams::team_ensure(&mut *tx, &team).await?;
    let k = db::api_keys::api_key_insert(
        &mut *tx,
        &NewApiKey {
            id: ApiKeyId::new(),
            name,
            key_hash: &token::hash(&secret),
            scopes: &names,
            expires_at: req.expires_at,
            worker_queues: worker_queues.as_deref(),
            max_workers: req.max_workers,
            team: &team,
        },
    )
    .await?;
    tx.commit().await.map_err(db::Error::from_sqlx)?;
    tracing::info!(key_id = %k.id, by = %admin.id, scopes = ?names, team = %k.team, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            scopes: scopes_of(&k),
            id: k.id,
            name: k.name,
            expires_at: k.expires_at,
            created_at: k.created_at,
            worker_queues: k.worker_queues,
            max_workers: k.max_workers,
            team: k.team,
            key: secret,
        }),
    ))
}

/// `GET /api/keys`: every key, oldest first, revoked ones included.
pub async fn list(State(st): State<AppState>, _admin: Key<Admin>) -> Result<Json<KeyList>> {
    let keys = db::api_keys::api_key_list(&st.pool).await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(view).collect(),
    }))
}

/// `DELETE /api/keys/:id`, `POST /api/keys/:id/revoke`: the key stops working. Revoking again
/// answers the first revocation's time.
pub async fn revoke(
    State(st): State<AppState>,
    Key { key: admin, .. }: Key<Admin>,
    PathId(id): PathId<ApiKeyId>,
) -> Result<Json<KeyRevoked>> {
    let k = db::api_keys::api_key_revoke(&st.pool, id)
        .await?
        .ok_or_else(|| GatewayError::not_found("API key"))?;
    st.api_keys.forget(id);
    let revoked_at = k.revoked_at.ok_or_else(|| {
        GatewayError::unavailable(format!("key {id} is not revoked after revoke"))
    })?;
    tracing::info!(key_id = %id, by = %admin.id, "API key revoked");
    Ok(Json(KeyRevoked { id, revoked_at }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;

    #[test]
    fn the_api_scopes_are_the_scopes_the_gateway_checks() {
        let mut names: Vec<&str> = ApiScope::ALL.map(ApiScope::as_str).to_vec();
        let mut checked: Vec<&str> = auth::ALL_SCOPES.to_vec();
        checked.push(auth::SCOPE_REGISTER_WORKERS);
        names.sort();
        checked.sort();
        assert_eq!(names, checked);
    }
}
