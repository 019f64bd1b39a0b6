//! A worker's report of an outcome over HTTP: `POST /api/workers/result` (alias `/upload`), a
//! multipart form whose parts may come in any order (old mock workers send the file first). The
//! file streams to storage when the build and the worker are already known, or is spooled to
//! local disk until the form names them; a refused report stores nothing.

use super::adapter::{build_id, finish_reply, held, reported};
use crate::auth::extract::WorkerAuth;
use crate::auth::{self, WorkerCaller};
use crate::error::{GatewayError, Result};
use crate::http::multipart::{self, malformed};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Multipart, State, multipart::MultipartRejection};
use axum::http::HeaderMap;
use freeagent_shared::api::Outcome;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::ids::{Attempt, BuildId};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::status::BuildStatus;
use freeagent_shared::wire::{CompleteRequest, FailRequest, FinishReply, StoredObject};

/// The result file of a report, as far as the form got.
enum Upload {
    /// Streamed to the attempt's result key (the build and the worker were known first).
    Stored(Attempt, StoredObject),
    /// Held on local disk: the file came before `build_id` or `worker_id` (old mock workers).
    Spooled(multipart::Spooled),
    /// A replay of a recorded completion: the stored artifact stays as it is.
    Replay,
}

/// What a worker's report form said.
struct Report {
    id: Option<BuildId>,
    success: Option<bool>,
    error: Option<String>,
    worker_id: Option<String>,
    upload: Option<Upload>,
}

/// `POST /api/workers/result` (alias `/upload`): multipart `build_id`, `worker_id` (legacy),
/// `success`, `error_message` and file `result`, in any order. When the file comes after the
/// build and the worker are known it streams straight to storage; before, it is spooled to local
/// disk (same limit) and stored once the form is read and the worker is found to hold the build.
/// A refused report stores nothing: whatever reached the result key is deleted again.
pub async fn result(
    State(st): State<AppState>,
    WorkerAuth(credential): WorkerAuth,
    headers: HeaderMap,
    mp: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Json<Outcome>> {
    let mut credential = Some(credential);
    let mut caller: Option<WorkerCaller> = None;
    let mut stored: Option<ObjectKey> = None;
    let outcome = report(&st, &headers, &mut credential, &mut caller, mp, &mut stored).await;
    if !matches!(outcome, Ok((_, true)))
        && let Some(key) = stored
        && let Err(e) = st.storage.delete(&key).await
    {
        tracing::warn!(%key, error = %e, "could not delete the result of a refused report");
    }
    outcome.map(|(reply, _)| reply)
}

/// Reads and applies a report; the flag says whether a result stored on the way is kept.
async fn report(
    st: &AppState,
    headers: &HeaderMap,
    credential: &mut Option<auth::WorkerCredential>,
    caller: &mut Option<WorkerCaller>,
    mp: std::result::Result<Multipart, MultipartRejection>,
    stored: &mut Option<ObjectKey>,
) -> Result<(Json<Outcome>, bool)> {
    let r = read_report(st, headers, credential, caller, mp, stored).await?;
    let id =
        r.id.ok_or_else(|| GatewayError::bad_request("the build_id part is required"))?;
    let caller = resolve(st, headers, credential, caller, &r.worker_id).await?;
    let b = reported(st, caller, id).await?;
    if !r.success.unwrap_or(r.upload.is_some()) {
        let req = FailRequest {
            build_id: id,
            attempt: b.attempt,
            worker_id: caller.id(),
            error: r
                .error
                .unwrap_or_else(|| "the worker reported a failure".into()),
        };
        return Ok((
            finish_reply(st.scheduler.fail(&req).await, &caller.token)?,
            false,
        ));
    }
    if b.status == BuildStatus::Completed {
        let replay = Outcome {
            success: true,
            status: BuildStatus::Completed,
            access_token: caller.token.clone(),
        };
        return Ok((Json(replay), false));
    }
    let (attempt, result) = match r.upload {
        Some(Upload::Stored(attempt, object)) => (attempt, object),
        Some(Upload::Spooled(spooled)) => {
            let b = held(st, caller, id).await?;
            let key = ObjectKey::Result(b.id, b.attempt);
            let object = super::adapter::while_renewing(
                st,
                caller,
                &b,
                spooled.to_storage(&st.storage, &key, st.config.result_limit),
            )
            .await?;
            *stored = Some(key);
            (b.attempt, object)
        }
        Some(Upload::Replay) | None => {
            return Err(GatewayError::bad_request(
                "success=true needs the result file",
            ));
        }
    };
    let req = CompleteRequest {
        build_id: id,
        attempt,
        worker_id: caller.id(),
        result,
    };
    let reply = st.scheduler.complete(&req).await;
    // Kept unless refused; a reply lost on the way may still have been recorded.
    let keep = !matches!(reply, Ok(FinishReply::NotYours { .. }));
    Ok((finish_reply(reply, &caller.token)?, keep))
}

/// Reads the form, streaming (or spooling) the result file as it comes.
async fn read_report(
    st: &AppState,
    headers: &HeaderMap,
    credential: &mut Option<auth::WorkerCredential>,
    caller: &mut Option<WorkerCaller>,
    mp: std::result::Result<Multipart, MultipartRejection>,
    stored: &mut Option<ObjectKey>,
) -> Result<Report> {
    let mut mp = mp.map_err(|e| {
        GatewayError::new(
            ErrorCode::NotMultipart,
            format!("expected multipart/form-data: {}", e.body_text()),
        )
    })?;
    let mut r = Report {
        id: None,
        success: None,
        error: None,
        worker_id: None,
        upload: None,
    };
    while let Some(field) = mp.next_field().await.map_err(malformed)? {
        match field.name().unwrap_or_default() {
            "build_id" => {
                r.id = Some(build_id(
                    multipart::text(field, "build_id", 64).await?.trim(),
                )?)
            }
            "worker_id" => r.worker_id = Some(multipart::text(field, "worker_id", 64).await?),
            "success" => {
                r.success = Some(matches!(
                    multipart::text(field, "success", 16).await?.trim(),
                    "true" | "1"
                ))
            }
            "error_message" => r.error = Some(multipart::text(field, "error_message", 4096).await?),
            "result" if r.upload.is_some() => {
                return Err(GatewayError::bad_request("send one result file"));
            }
            "result" => {
                let known = matches!(credential, Some(auth::WorkerCredential::Token(_)))
                    || caller.is_some()
                    || r.worker_id.is_some()
                    || headers.contains_key("x-worker-id");
                let (Some(id), true) = (r.id, known) else {
                    r.upload = Some(Upload::Spooled(
                        multipart::spool(field, "result", st.config.result_limit).await?,
                    ));
                    continue;
                };
                let c = resolve(st, headers, credential, caller, &r.worker_id).await?;
                let b = reported(st, c, id).await?;
                r.upload = Some(if b.status == BuildStatus::Completed {
                    drop(field);
                    Upload::Replay
                } else {
                    let b = held(st, c, id).await?;
                    let key = ObjectKey::Result(b.id, b.attempt);
                    let object = super::adapter::while_renewing(
                        st,
                        c,
                        &b,
                        multipart::to_storage(
                            &st.storage,
                            field,
                            "result",
                            &key,
                            st.config.result_limit,
                        ),
                    )
                    .await?;
                    *stored = Some(key);
                    Upload::Stored(b.attempt, object)
                });
            }
            _ => drop(field),
        }
    }
    Ok(r)
}

/// The calling worker, found once: from its token, or from the key plus the `worker_id` the
/// form (or `X-Worker-Id`) named.
async fn resolve<'a>(
    st: &AppState,
    headers: &HeaderMap,
    credential: &mut Option<auth::WorkerCredential>,
    caller: &'a mut Option<WorkerCaller>,
    worker_id: &Option<String>,
) -> Result<&'a WorkerCaller> {
    if caller.is_none() {
        let c = credential
            .take()
            .ok_or_else(|| GatewayError::unavailable("worker credential already used"))?;
        *caller = Some(c.caller(st, headers, worker_id.as_deref()).await?);
    }
    caller
        .as_ref()
        .ok_or_else(|| GatewayError::unavailable("worker credential already used"))
}
