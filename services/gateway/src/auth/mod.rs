//! Who is calling. API keys (`X-API-Key` or `Authorization: Bearer`) are looked up by hash;
//! build tokens (`X-Build-Token`) reach one build and are compared in constant time. A missing
//! credential is 401, one that does not grant the request 403, and an unknown build 404 only
//! after a credential that could have seen it. A revoked or expired API key is 401 with a hint
//! (it was a credential once; the caller needs a new one).

pub(crate) mod api_key_cache;
pub(crate) mod csrf;
pub(crate) mod extract;
pub(crate) mod key_usage;
pub(crate) mod session;

use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::http::HeaderMap;
use freeagent_shared::db::{self, api_keys::ApiKey, builds::Build};
use freeagent_shared::ids::BuildId;
use freeagent_shared::team::TeamName;
use freeagent_shared::token;

pub const SCOPE_SUBMIT: &str = "submit";
pub const SCOPE_READ: &str = "read";
pub const SCOPE_WORKER: &str = "worker";
pub const SCOPE_ADMIN: &str = "admin";
/// May register workers and nothing else: the key a worker machine holds.
pub const SCOPE_REGISTER_WORKERS: &str = "register_workers";
pub const ALL_SCOPES: [&str; 4] = [SCOPE_SUBMIT, SCOPE_READ, SCOPE_WORKER, SCOPE_ADMIN];

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The API key the request presents, if any.
pub fn presented_api_key(headers: &HeaderMap) -> Option<&str> {
    header(headers, "x-api-key").or_else(|| {
        header(headers, "authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
    })
}

/// Whether the request presents an API key: in a header, or as a dashboard session made from
/// one (the session cookie; `session`), which is checked exactly like the key.
pub fn presents_api_key(headers: &HeaderMap) -> bool {
    presented_api_key(headers).is_some() || crate::auth::session::claims_key(headers)
}

/// Checks a presented API key (or the key of a dashboard session); `Ok(None)` when none was
/// presented or the session is unknown or expired.
pub async fn api_key(st: &AppState, headers: &HeaderMap) -> Result<Option<ApiKey>> {
    let Some(key) = presented_api_key(headers) else {
        return match crate::auth::session::key(st, headers).await? {
            Some(k) => live_key(st, k).map(Some),
            None => Ok(None),
        };
    };
    let hash = token::hash(key);
    let k = match st.api_keys.get(&hash) {
        Some(k) => k,
        None => match db::api_keys::api_key_find(&st.pool, &hash).await? {
            Some(k) => {
                st.api_keys.put(hash, k.clone());
                k
            }
            None => return Err(GatewayError::forbidden("invalid API key")),
        },
    };
    live_key(st, k).map(Some)
}

/// The key, unless it was revoked or expired (401 with a hint).
fn live_key(st: &AppState, k: ApiKey) -> Result<ApiKey> {
    let refused = if k.revoked_at.is_some() {
        Some("this API key was revoked".to_owned())
    } else if k.expired(chrono::Utc::now()) {
        k.expires_at
            .map(|at| format!("this API key expired at {}", at.to_rfc3339()))
    } else {
        None
    };
    if let Some(message) = refused {
        return Err(GatewayError::new(
            freeagent_shared::api_error::ErrorCode::Unauthorized,
            message,
        )
        .hint("ask an operator for a new key (`freeagent keys create`, POST /api/keys)"));
    }
    st.key_usage.used(k.id);
    Ok(k)
}

/// Whether `key` may see (and, with the scope, act on) `build`: an admin key every team's builds,
/// any other key its own team's only.
pub fn sees(key: &ApiKey, build: &Build) -> bool {
    team_scope(key).is_none_or(|team| *team == build.team)
}

/// The one team whose builds `key` sees; none for an admin key (every team).
pub fn team_scope(key: &ApiKey) -> Option<&TeamName> {
    (!key.scopes.iter().any(|s| s == SCOPE_ADMIN)).then_some(&key.team)
}

/// The build `id` for `key`: another team's build is as unknown as a missing one (404), so ids
/// cannot be probed across teams.
pub async fn build_for_key(st: &AppState, key: &ApiKey, id: BuildId) -> Result<Build> {
    db::builds::build_get(&st.pool, id)
        .await?
        .filter(|b| sees(key, b))
        .ok_or_else(|| GatewayError::not_found("build"))
}

pub fn has_scope(key: &ApiKey, scope: &str) -> bool {
    key.scopes.iter().any(|s| s == scope || s == SCOPE_ADMIN)
}

/// Whether the request carries any credential at all (of any kind).
fn any_credential(headers: &HeaderMap) -> bool {
    presented_api_key(headers).is_some()
        || header(headers, "x-build-token").is_some()
        || header(headers, "x-worker-token").is_some()
}

/// 401 when no credential was sent, 403 when one of another kind was.
fn missing_or_wrong_kind(headers: &HeaderMap, needed: &str) -> GatewayError {
    if any_credential(headers) {
        GatewayError::forbidden(format!("this request needs {needed}"))
    } else {
        GatewayError::unauthorized()
    }
}

/// An API key with `scope` is required.
pub async fn require_api_key(st: &AppState, headers: &HeaderMap, scope: &str) -> Result<ApiKey> {
    let key = api_key(st, headers)
        .await?
        .ok_or_else(|| missing_or_wrong_kind(headers, "an API key"))?;
    if !has_scope(&key, scope) {
        return Err(GatewayError::forbidden(format!(
            "this API key lacks the '{scope}' scope"
        )));
    }
    Ok(key)
}

/// An API key with any of `scopes` is required.
pub async fn require_api_key_any(
    st: &AppState,
    headers: &HeaderMap,
    scopes: &[&str],
) -> Result<ApiKey> {
    let key = api_key(st, headers)
        .await?
        .ok_or_else(|| missing_or_wrong_kind(headers, "an API key"))?;
    if !scopes.iter().any(|s| has_scope(&key, s)) {
        return Err(GatewayError::forbidden(format!(
            "this API key lacks the '{}' scope",
            scopes.join("' or '")
        )));
    }
    Ok(key)
}

/// An API key with the read scope, or this build's token; returns the build.
pub async fn build_reader(st: &AppState, headers: &HeaderMap, id: BuildId) -> Result<Build> {
    if presents_api_key(headers) {
        let key = require_api_key(st, headers, SCOPE_READ).await?;
        return build_for_key(st, &key, id).await;
    }
    build_by_token(st, headers, id).await
}

/// The build, for its own token (`X-Build-Token`) or a dashboard session opened with it.
pub async fn build_by_token(st: &AppState, headers: &HeaderMap, id: BuildId) -> Result<Build> {
    // A dashboard session opened with this build's token stands for the token.
    if header(headers, "x-build-token").is_none() && crate::auth::session::claims_build(headers) {
        return match crate::auth::session::build(st, headers).await? {
            Some(b) if b == id => db::builds::build_get(&st.pool, id)
                .await?
                .ok_or_else(|| GatewayError::not_found("build")),
            Some(_) => Err(GatewayError::forbidden(
                "this session was opened for another build",
            )),
            None => Err(GatewayError::unauthorized().hint("the session ended: sign in again")),
        };
    }
    let Some(presented) = header(headers, "x-build-token") else {
        return Err(missing_or_wrong_kind(
            headers,
            "an API key or this build's token",
        ));
    };
    // An unknown id and a wrong token look the same, so ids cannot be probed with a token.
    match db::builds::build_get(&st.pool, id).await? {
        Some(b) if token::verify(presented, &b.token_hash) => Ok(b),
        _ => Err(GatewayError::forbidden(
            "this build token does not grant access to this build",
        )),
    }
}

/// A worker calling over HTTP. The gateway sends its operations to the scheduler on the
/// worker's own subject (`scheduler.<op>.<worker_id>`), which only the worker and the gateway
/// may publish on: having authenticated the caller, the gateway speaks for it.
pub struct WorkerCaller {
    pub worker: freeagent_shared::db::workers::Worker,
    /// The worker's own token, echoed in replies (`None` for legacy API-key workers).
    pub token: Option<String>,
}

impl WorkerCaller {
    pub fn id(&self) -> freeagent_shared::ids::WorkerId {
        self.worker.id
    }
}

/// A worker's credential, checked before the body is read: its own token (the worker is known),
/// or an API key allowed to act for workers (the worker is named later, maybe in the body).
pub enum WorkerCredential {
    Token(Box<WorkerCaller>),
    Key(ApiKey),
}

/// Checks the credential of a worker route without reading the body: none → 401, a wrong or
/// expired one → 401/403.
pub async fn worker_credential(st: &AppState, headers: &HeaderMap) -> Result<WorkerCredential> {
    if let Some(t) = header(headers, "x-worker-token") {
        return Ok(WorkerCredential::Token(Box::new(
            token_caller(st, t).await?,
        )));
    }
    if presented_api_key(headers).is_none() {
        return Err(
            missing_or_wrong_kind(headers, "a worker token, or an API key with worker_id")
                .hint("send X-Worker-Token, or X-API-Key with worker_id"),
        );
    }
    // A `worker` key acts for the workers it registered (`key_caller`): a Mac holds one key of
    // its own for everything. A registration-only key never does: one such key is shared by a
    // whole fleet, and would let any machine act for every other machine's workers.
    let key = require_api_key_any(st, headers, &[SCOPE_WORKER, SCOPE_REGISTER_WORKERS]).await?;
    if !has_scope(&key, SCOPE_WORKER) {
        return Err(GatewayError::forbidden(
            "this API key registers workers but does not act for them",
        )
        .hint("use the worker's X-Worker-Token, or give this machine a key of its own with the 'worker' scope (freeagent keys create --name <machine> --scope worker)"));
    }
    Ok(WorkerCredential::Key(key))
}

/// Whether `key` reads the whole farm, or only what its own workers do (a worker machine's key).
pub fn reads_only_its_workers(key: &ApiKey) -> bool {
    !has_scope(key, SCOPE_READ)
}

impl WorkerCredential {
    /// The calling worker; a key names it in `worker_id` (query or body) or `X-Worker-Id`.
    pub async fn caller(
        self,
        st: &AppState,
        headers: &HeaderMap,
        worker_id: Option<&str>,
    ) -> Result<WorkerCaller> {
        match self {
            WorkerCredential::Token(c) => Ok(*c),
            WorkerCredential::Key(key) => key_caller(st, headers, &key, worker_id).await,
        }
    }
}

async fn token_caller(st: &AppState, t: &str) -> Result<WorkerCaller> {
    let w = db::workers::worker_find_by_token(&st.pool, &token::hash(t)).await?;
    let Some(w) = w.filter(|w| w.token_ok(t, chrono::Utc::now()) && w.revoked_at.is_none()) else {
        return Err(GatewayError::new(
            freeagent_shared::api_error::ErrorCode::Unauthorized,
            "invalid or expired worker token",
        )
        .hint("use the access_token of the latest reply, or register again"));
    };
    // Every reply carries the newest token; renew it when a third of its life is left.
    let policy = db::workers::TokenPolicy {
        ttl: st.config.worker_token_ttl,
        grace: st.config.worker_token_grace,
    };
    let current = match db::workers::worker_token_refresh(&st.pool, &w, t, policy).await? {
        Some((fresh, _)) => fresh,
        None => t.to_owned(),
    };
    Ok(WorkerCaller {
        token: Some(current),
        worker: w,
    })
}

async fn key_caller(
    st: &AppState,
    headers: &HeaderMap,
    key: &ApiKey,
    worker_id: Option<&str>,
) -> Result<WorkerCaller> {
    // A key without the worker it speaks for is an incomplete credential (401); a worker this
    // key did not register is not its to speak for (403, unknown ids alike, so none is probed),
    // unless the key is an operator's (admin), which may act for any worker (e.g. unregister it).
    let raw = worker_id
        .or_else(|| header(headers, "x-worker-id"))
        .ok_or_else(|| {
            GatewayError::new(
                freeagent_shared::api_error::ErrorCode::Unauthorized,
                "an API key acts for a worker only with that worker's id",
            )
            .hint("send worker_id (query or form field) or X-Worker-Id, or use X-Worker-Token")
        })?;
    let not_yours = || {
        GatewayError::forbidden("this API key did not register that worker")
            .hint("use the key that registered the worker, or its X-Worker-Token")
    };
    let id: freeagent_shared::ids::WorkerId = raw.parse().map_err(|_| not_yours())?;
    let w = db::workers::worker_get(&st.pool, id)
        .await?
        .filter(|w| w.registered_by == Some(key.id) || key.scopes.iter().any(|s| s == SCOPE_ADMIN))
        .ok_or_else(not_yours)?;
    if w.revoked_at.is_some() {
        return Err(GatewayError::forbidden(
            "this worker's registration was revoked; register it again",
        ));
    }
    Ok(WorkerCaller {
        token: None,
        worker: w,
    })
}

/// Parses a build id from the path, or answers 404 (a malformed id names no build).
pub fn parse_id(raw: &str) -> Result<BuildId> {
    raw.parse().map_err(|_| GatewayError::not_found("build"))
}

/// A malformed id is 404, but only after the caller showed some credential (401 otherwise): a
/// key holding one of `scopes`, or a build token.
pub async fn parse_or_auth(
    st: &AppState,
    headers: &HeaderMap,
    raw: &str,
    scopes: &[&str],
) -> Result<BuildId> {
    match parse_id(raw) {
        Ok(id) => Ok(id),
        Err(not_found) => {
            if presents_api_key(headers) {
                require_api_key_any(st, headers, scopes).await?;
                Err(not_found)
            } else if headers.contains_key("x-build-token")
                || headers.contains_key("x-worker-token")
                || session::claims_build(headers)
            {
                Err(GatewayError::forbidden(
                    "this build token does not grant access to this build",
                ))
            } else {
                Err(GatewayError::unauthorized())
            }
        }
    }
}
