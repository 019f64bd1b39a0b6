//! Reading builds: the list with filters and a cursor (paging in headers), one build in full, and the status shape
//! old clients poll (timestamps in epoch milliseconds).

use crate::auth::extract::{BuildAccess, Key, Read, ReadableBuild};
use crate::auth::{self};
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use freeagent_shared::api::{
    Artifact, AttemptView, BuildDetail, BuildSummary, LegacyStatus, ListQuery, metadata_label,
};
use freeagent_shared::db;
use freeagent_shared::db::api_keys::ApiKey;
use freeagent_shared::db::builds::{AttemptRecord, Build, ListFilter};
use freeagent_shared::ids::{BuildId, WorkerId};
use freeagent_shared::status::BuildStatus;
use freeagent_shared::team::TeamName;
use std::collections::HashMap;

pub const DEFAULT_LIST_LIMIT: i64 = 50;
pub const MAX_LIST_LIMIT: i64 = 500;

pub fn summary(b: &Build) -> BuildSummary {
    BuildSummary {
        id: b.id,
        platform: b.platform,
        status: b.status,
        worker_id: b.worker_id,
        worker_name: b.worker_name.clone(),
        submitted_at: b.submitted_at,
        created_at: b.submitted_at,
        updated_at: b.updated_at,
        completed_at: b.completed_at,
        completed_at_legacy: b.completed_at,
        error_message: b.error_message.clone(),
        has_result: b.result_key.is_some() && b.purged_at.is_none(),
        team: b.team.clone(),
        purged_at: b.purged_at,
        queue: b.queue.clone(),
        attempt: b.attempt,
        started_at: b.started_at,
        duration_ms: match (b.started_at, b.completed_at) {
            (Some(s), Some(e)) => Some((e - s).num_milliseconds()),
            _ => None,
        },
        name: metadata_label(&b.metadata, &["name", "title"]),
        branch: metadata_label(&b.metadata, &["branch", "git_branch"]),
        commit: metadata_label(&b.metadata, &["commit", "git_commit"]),
        submitted_by_name: b.submitted_by_name.clone(),
        waiting: None,
    }
}

fn detail(b: &Build, attempts: Vec<AttemptRecord>) -> BuildDetail {
    let mut artifacts = vec![Artifact {
        name: "source".into(),
        size: b.source_size,
        sha256: b.source_sha256.clone(),
    }];
    if b.purged_at.is_some() {
        // Retention deleted the files; the record keeps their facts, but nothing is offered.
        artifacts.clear();
    } else if let (Some(size), Some(sha)) = (b.result_size, &b.result_sha256) {
        artifacts.push(Artifact {
            name: format!("{}.{}", b.id, b.platform.artifact_extension()),
            size,
            sha256: sha.clone(),
        });
    }
    BuildDetail {
        summary: summary(b),
        max_attempts: b.max_attempts,
        timeout_secs: b.timeout_secs,
        retry_on_failure: b.retry_on_failure,
        priority: b.priority,
        metadata: b.metadata.clone(),
        progress: b.progress,
        original_build_id: b.original_build_id,
        artifacts,
        attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                worker_id: a.worker_id,
                claimed_at: a.claimed_at,
                ended_at: a.ended_at,
                outcome: a.outcome,
                error: a.error,
            })
            .collect(),
        logs_archived_at: b.logs_archived_at,
        submitted_by: b.submitted_by,
    }
}

fn query_param<T: std::str::FromStr>(
    raw: &Option<String>,
    name: &str,
    expected: &str,
) -> Result<Option<T>> {
    match raw.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            GatewayError::bad_request(format!("invalid {name} {v:?}: expected {expected}"))
        }),
    }
}

/// `GET /api/builds`: a bare array of summaries, newest first (the old CLI reads an array), with
/// paging in headers as GitHub's API does: `X-Total-Count`, and `Link: <…?cursor=…>; rel="next"`
/// while more remain.
pub async fn list(
    State(st): State<AppState>,
    Key { key, .. }: Key<Read>,
    uri: axum::http::Uri,
    Query(q): Query<ListQuery>,
) -> Result<axum::response::Response> {
    let limit: i64 = query_param(&q.limit, "limit", "an integer")?.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit < 1 {
        return Err(GatewayError::bad_request("limit must be at least 1"));
    }
    let filter = ListFilter {
        status: query_param(
            &q.status,
            "status",
            "pending, assigned, building, completed, failed or cancelled",
        )?,
        platform: query_param(&q.platform, "platform", "ios or android")?,
        worker_id: query_param::<WorkerId>(&q.worker_id, "worker_id", "a worker id")?,
        queue: match q.queue.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(v) => Some(freeagent_shared::status::QueueName::parse(v).map_err(|_| {
                GatewayError::bad_request(format!(
                    "invalid queue {v:?}: expected a queue name (a-z, 0-9, '-', '_')"
                ))
            })?),
        },
        team: list_team(&key, &q.team)?,
        submitted_by: match q.mine.as_deref().map(str::trim) {
            None | Some("" | "false" | "0") => None,
            Some("true" | "1") => Some(key.id),
            Some(v) => {
                return Err(GatewayError::bad_request(format!(
                    "invalid mine {v:?}: expected true or false"
                )));
            }
        },
        after: query_param::<BuildId>(&q.cursor, "cursor", "the cursor of a Link header")?,
        limit: limit.min(MAX_LIST_LIMIT),
    };
    let builds = db::builds::build_list(&st.pool, &filter).await?;
    let total = db::builds::build_count(&st.pool, &filter).await?;
    let next_cursor = (builds.len() as i64 == filter.limit)
        .then(|| builds.last().map(|b| b.id))
        .flatten();
    let mut summaries: Vec<BuildSummary> = builds.iter().map(summary).collect();
    // Pending builds on the page say where they wait and why, as their page does.
    let pending: Vec<BuildId> = builds
        .iter()
        .filter(|b| b.status == freeagent_shared::status::BuildStatus::Pending)
        .map(|b| b.id)
        .collect();
    if !pending.is_empty() {
        let places = db::builds::build_queue_places(
            &st.pool,
            &pending,
            st.config.worker_offline_after.as_secs_f64(),
        )
        .await?;
        let mut places: HashMap<BuildId, db::builds::QueuePlace> =
            places.into_iter().map(|p| (p.id, p.place)).collect();
        for s in &mut summaries {
            if let Some(p) = places.remove(&s.id) {
                s.waiting = Some(waiting(&s.queue.to_string(), p));
            }
        }
    }
    let mut resp = Json(summaries).into_response();
    let h = resp.headers_mut();
    h.insert("x-total-count", HeaderValue::from(total));
    if let Some(cursor) = next_cursor {
        // The same query with the cursor moved on; a relative reference, as the client reached us.
        let next = ListQuery {
            cursor: Some(cursor.to_string()),
            ..q
        };
        let query = serde_urlencoded::to_string(&next).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!("<{}?{query}>; rel=\"next\"", uri.path())) {
            h.insert(header::LINK, v);
        }
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("x-total-count, link"),
        );
    }
    Ok(resp)
}

/// The team a list shows: an admin key's choice (none: every team), any other key's own team
/// (naming another is refused rather than answered with an empty list).
fn list_team(key: &ApiKey, asked: &Option<String>) -> Result<Option<TeamName>> {
    let asked = match asked.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => Some(TeamName::parse(v).map_err(|e| GatewayError::bad_request(e.to_string()))?),
    };
    match (auth::team_scope(key), asked) {
        (None, asked) => Ok(asked),
        (Some(own), Some(asked)) if asked != *own => Err(GatewayError::forbidden(format!(
            "this API key sees only team {own}'s builds"
        ))
        .hint("leave out team, or use a key of that team (or an admin key)")),
        (Some(own), _) => Ok(Some(own.clone())),
    }
}

pub async fn get(
    State(st): State<AppState>,
    BuildAccess(b, ..): ReadableBuild,
) -> Result<Json<BuildDetail>> {
    let attempts = db::builds::build_attempts(&st.pool, b.id).await?;
    let mut d = detail(&b, attempts);
    if let Some(key) = b.submitted_by {
        d.summary.submitted_by_name = db::api_keys::api_key_name(&st.pool, key).await?;
    }
    if b.status == freeagent_shared::status::BuildStatus::Pending
        && let Some(place) = db::builds::build_queue_place(
            &st.pool,
            b.id,
            st.config.worker_offline_after.as_secs_f64(),
        )
        .await?
    {
        d.summary.waiting = Some(waiting(&b.queue.to_string(), place));
    }
    Ok(Json(d))
}

/// Why a pending build has not started, in words.
fn waiting(queue: &str, p: db::builds::QueuePlace) -> freeagent_shared::api::QueueWait {
    let ahead = p.position - 1;
    let reason = if p.live_workers == 0 {
        format!("no live worker serves queue {queue}")
    } else if p.held >= p.slots {
        format!(
            "{} of {} worker slots of queue {queue} busy",
            p.held, p.slots
        )
    } else if ahead > 0 {
        format!(
            "{ahead} build{} ahead in queue {queue}",
            if ahead == 1 { "" } else { "s" }
        )
    } else {
        "next to be dispatched".to_owned()
    };
    freeagent_shared::api::QueueWait {
        position: p.position,
        live_workers: p.live_workers,
        slots: p.slots,
        busy: p.held,
        reason,
        eta_secs: eta_secs(&p),
    }
}

/// When a pending build should start: the free slots take the first builds in line at once;
/// the rest wait for slots to free, a round of `slots` builds per typical run.
fn eta_secs(p: &db::builds::QueuePlace) -> Option<i64> {
    let typical = p.typical_secs.filter(|t| t.is_finite() && *t >= 0.0)?;
    if p.live_workers == 0 || p.slots <= 0 {
        return None;
    }
    let free = (p.slots - p.held).max(0);
    let waiting_for_a_slot = p.position - free;
    if waiting_for_a_slot <= 0 {
        return Some(0);
    }
    let rounds = (waiting_for_a_slot + p.slots - 1) / p.slots;
    // Waiting for a slot is never "now", however quick the queue's builds.
    Some(((rounds as f64 * typical).ceil() as i64).max(1))
}

pub async fn status(BuildAccess(b, ..): ReadableBuild) -> Json<LegacyStatus> {
    // Old clients know no `cancelled`: this route (theirs) reports it as a failure.
    let (status, error_message) = match b.status {
        BuildStatus::Cancelled => (
            BuildStatus::Failed,
            Some(freeagent_shared::farm_log::CANCELLED.to_owned()),
        ),
        s => (s, b.error_message.clone()),
    };
    Json(LegacyStatus {
        id: b.id,
        status,
        platform: b.platform,
        worker_id: b.worker_id,
        submitted_at: b.submitted_at.timestamp_millis(),
        started_at: b.started_at.map(|t| t.timestamp_millis()),
        completed_at: b.completed_at.map(|t| t.timestamp_millis()),
        error_message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(
        position: i64,
        live_workers: i64,
        slots: i64,
        held: i64,
        typical: Option<f64>,
    ) -> db::builds::QueuePlace {
        db::builds::QueuePlace {
            position,
            live_workers,
            slots,
            held,
            typical_secs: typical,
        }
    }

    #[test]
    fn a_wait_is_guessed_in_rounds_of_the_queues_slots() {
        // A free slot takes it at once.
        assert_eq!(eta_secs(&place(1, 1, 2, 1, Some(60.0))), Some(0));
        // Two slots, both busy, third in line: two rounds of a minute.
        assert_eq!(eta_secs(&place(3, 1, 2, 2, Some(60.0))), Some(120));
        // Second in line behind a busy slot: one round.
        assert_eq!(eta_secs(&place(2, 2, 2, 2, Some(30.0))), Some(30));
        // Quick builds still make a wait for a busy slot a second at least.
        assert_eq!(eta_secs(&place(1, 1, 1, 1, Some(0.2))), Some(1));
        // No worker, or nothing to go by: no guess.
        assert_eq!(eta_secs(&place(1, 0, 0, 0, Some(60.0))), None);
        assert_eq!(eta_secs(&place(5, 1, 1, 1, None)), None);
    }
}
