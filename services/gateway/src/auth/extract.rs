//! Credentials as axum extractors: the credential a route needs is its handler's signature.
//! Extractors that read headers run before the body is read, so a stranger gets 401/403 and
//! never a complaint about a body it should not have sent.

use crate::auth::{self, WorkerCaller, WorkerCredential};
use crate::error::GatewayError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use freeagent_shared::api::WorkerIdQuery;
use freeagent_shared::db::{api_keys::ApiKey, builds::Build};
use std::marker::PhantomData;

/// The scopes an API key may hold for a route (any one of them will do; `admin` holds all).
pub trait Scope: Send + Sync + 'static {
    const ANY_OF: &'static [&'static str];
}

/// Reads builds, workers and figures.
pub struct Read;
/// Submits, cancels and retries builds.
pub struct Submit;
/// Operates the farm (drain workers).
pub struct Admin;
/// Registers workers: a worker-scoped key, or a registration-only key.
pub struct Register;

impl Scope for Read {
    const ANY_OF: &'static [&'static str] = &[auth::SCOPE_READ];
}
impl Scope for Submit {
    const ANY_OF: &'static [&'static str] = &[auth::SCOPE_SUBMIT];
}
impl Scope for Admin {
    const ANY_OF: &'static [&'static str] = &[auth::SCOPE_ADMIN];
}
/// A worker machine's own views (the seed's menu bar and Statistics window): a reader, or a
/// `worker` key, which then sees only the workers it registered.
pub struct ReadOrWorkers;
impl Scope for ReadOrWorkers {
    const ANY_OF: &'static [&'static str] = &[auth::SCOPE_READ, auth::SCOPE_WORKER];
}
impl Scope for Register {
    const ANY_OF: &'static [&'static str] = &[auth::SCOPE_WORKER, auth::SCOPE_REGISTER_WORKERS];
}

/// An API key holding one of `S`'s scopes.
pub struct Key<S: Scope> {
    pub key: ApiKey,
    scope: PhantomData<S>,
}

impl<S: Scope> FromRequestParts<AppState> for Key<S> {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, GatewayError> {
        let key = auth::require_api_key_any(st, &parts.headers, S::ANY_OF).await?;
        Ok(Key {
            key,
            scope: PhantomData,
        })
    }
}

/// A worker's credential, checked; which worker a key speaks for may come later (in the body).
pub struct WorkerAuth(pub WorkerCredential);

impl FromRequestParts<AppState> for WorkerAuth {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, GatewayError> {
        Ok(WorkerAuth(
            auth::worker_credential(st, &parts.headers).await?,
        ))
    }
}

/// The calling worker: its token, or a key plus `worker_id` (query) or `X-Worker-Id`.
impl FromRequestParts<AppState> for WorkerCaller {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, GatewayError> {
        let credential = auth::worker_credential(st, &parts.headers).await?;
        let Query(q) = Query::<WorkerIdQuery>::from_request_parts(parts, st)
            .await
            .unwrap_or_default();
        credential
            .caller(st, &parts.headers, q.worker_id.as_deref())
            .await
    }
}

/// The build of the path's `{id}`, for an API key with the read scope or that build's token.
pub struct ReadableBuild(pub Build);

impl FromRequestParts<AppState> for ReadableBuild {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, GatewayError> {
        let raw = match Path::<String>::from_request_parts(parts, st).await {
            Ok(Path(id)) => id,
            // Routes with more than `{id}` in the path: the id is the first segment.
            Err(_) => Path::<(String, String)>::from_request_parts(parts, st)
                .await
                .map(|Path((id, _))| id)
                .map_err(|_| GatewayError::not_found("build"))?,
        };
        let id = crate::auth::parse_or_auth(st, &parts.headers, &raw).await?;
        Ok(ReadableBuild(
            auth::build_reader(st, &parts.headers, id).await?,
        ))
    }
}
