//! Credentials as axum extractors: the credential a route needs is its handler's signature.
//! Extractors that read headers run before the body is read, so a stranger gets 401/403 and
//! never a complaint about a body it should not have sent.

use crate::auth::{self, WorkerCaller, WorkerCredential};
use crate::error::GatewayError;
use crate::http::route::{Caller, Who};
use crate::state::AppState;
use axum::extract::{FromRequestParts, Query, RawPathParams};
use axum::http::request::Parts;
use freeagent_shared::api::WorkerIdQuery;
use freeagent_shared::db::{api_keys::ApiKey, builds::Build};
use freeagent_shared::ids::{ApiKeyId, BuildId, WorkerId};
use std::marker::PhantomData;

/// The scopes an API key may hold for a route (any one of them will do; `admin` holds all).
pub trait Scope: Send + Sync + 'static {
    const ANY_OF: &'static [&'static str];
    /// Who a key with this scope is, in the OpenAPI document.
    const WHO: Who = Who::ApiKey;
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
    const WHO: Who = Who::RegisterKey;
}

/// An API key holding one of `S`'s scopes.
pub struct Key<S: Scope> {
    pub key: ApiKey,
    scope: PhantomData<S>,
}

impl<S: Scope> Caller for Key<S> {
    const WHO: Who = S::WHO;
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

impl Caller for WorkerAuth {
    const WHO: Who = Who::Worker;
}

impl FromRequestParts<AppState> for WorkerAuth {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, GatewayError> {
        Ok(WorkerAuth(
            auth::worker_credential(st, &parts.headers).await?,
        ))
    }
}

impl Caller for WorkerCaller {
    const WHO: Who = Who::Worker;
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

/// How a caller reached a build: an API key, or the build's own token (or a dashboard session
/// opened with it).
pub enum Access {
    Key(ApiKey),
    BuildToken,
}

/// The build of the path's `{id}`, for an API key holding one of `S`'s scopes (and seeing the
/// build's team), or that build's token. A malformed or unknown id is 404, but only after the
/// caller showed a credential (401 before).
pub struct BuildAccess<S: Scope>(pub Build, pub Access, pub PhantomData<S>);

/// The build of the path, for a reader.
pub type ReadableBuild = BuildAccess<Read>;

impl<S: Scope> Caller for BuildAccess<S> {
    const WHO: Who = Who::ApiKeyOrBuildToken;
}

impl<S: Scope> FromRequestParts<AppState> for BuildAccess<S> {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, GatewayError> {
        let raw = first_path_param(parts, st).await.unwrap_or_default();
        let id = auth::parse_or_auth(st, &parts.headers, &raw, S::ANY_OF).await?;
        if auth::presents_api_key(&parts.headers) {
            let key = auth::require_api_key_any(st, &parts.headers, S::ANY_OF).await?;
            let build = auth::build_for_key(st, &key, id).await?;
            return Ok(BuildAccess(build, Access::Key(key), PhantomData));
        }
        let build = auth::build_by_token(st, &parts.headers, id).await?;
        Ok(BuildAccess(build, Access::BuildToken, PhantomData))
    }
}

/// The first parameter of the request's path (`{id}`, `{worker_id}`).
async fn first_path_param(parts: &mut Parts, st: &AppState) -> Option<String> {
    let params = RawPathParams::from_request_parts(parts, st).await.ok()?;
    params.iter().next().map(|(_, v)| v.to_owned())
}

/// What a path's id names, for its 404.
pub trait Named: std::str::FromStr + Send {
    const WHAT: &'static str;
}
impl Named for BuildId {
    const WHAT: &'static str = "build";
}
impl Named for WorkerId {
    const WHAT: &'static str = "worker";
}
impl Named for ApiKeyId {
    const WHAT: &'static str = "API key";
}

/// The path's id (its first parameter), typed: a malformed one names nothing, so it is a 404.
/// Put it after the credential in a handler's arguments, so a stranger gets 401 first.
pub struct PathId<T>(pub T);

impl<T: Named> FromRequestParts<AppState> for PathId<T> {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, GatewayError> {
        first_path_param(parts, st)
            .await
            .and_then(|raw| raw.parse().ok())
            .map(PathId)
            .ok_or_else(|| GatewayError::not_found(T::WHAT))
    }
}
