//! Build logs, read back from the `LOGS` stream (`logs.<build_id>`). A line's `seq` is its
//! JetStream sequence, so `after` resumes exactly where the last page ended.

use super::builds::parse_or_auth;
use crate::auth;
use crate::error::{GatewayError, Result};
use crate::state::AppState;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use freeagent_shared::db::builds::Build;
use freeagent_shared::ids::BuildId;
use freeagent_shared::subjects;
use freeagent_shared::wire::{self, LogLine};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

pub const DEFAULT_LOG_LIMIT: usize = 1000;
pub const MAX_LOG_LIMIT: usize = 10_000;

#[derive(Debug, Serialize)]
pub struct Entry {
    pub seq: u64,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub level: wire::LogLevel,
    pub message: String,
    pub attempt: freeagent_shared::ids::Attempt,
}

/// Up to `limit` lines after stream sequence `after`, oldest first.
pub async fn read(
    nats: &async_nats::Client,
    id: BuildId,
    after: u64,
    limit: usize,
) -> Result<Vec<Entry>> {
    let js = async_nats::jetstream::new(nats.clone());
    let stream = js
        .get_stream(subjects::LOGS_STREAM)
        .await
        .map_err(GatewayError::unavailable)?;
    let mut consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subjects::logs(id),
            deliver_policy: if after == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                }
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(GatewayError::unavailable)?;
    let info = consumer.info().await.map_err(GatewayError::unavailable)?;
    let (pending, name) = (info.num_pending as usize, info.name.clone());
    let mut out = Vec::new();
    if pending > 0 {
        let mut msgs = consumer
            .fetch()
            .max_messages(limit.min(pending))
            .messages()
            .await
            .map_err(GatewayError::unavailable)?;
        while let Some(m) = msgs.next().await {
            let m = m.map_err(GatewayError::unavailable)?;
            let Ok(meta) = m.info() else { continue };
            let seq = meta.stream_sequence;
            match wire::decode::<LogLine>(&m.payload) {
                Ok(l) => out.push(Entry {
                    seq,
                    timestamp: l.timestamp,
                    level: l.level,
                    message: l.message,
                    attempt: l.attempt,
                }),
                Err(e) => {
                    tracing::warn!(build_id = %id, seq, error = %e, "skipping a malformed log line")
                }
            }
            if out.len() >= limit {
                break;
            }
        }
    }
    let _ = stream.delete_consumer(&name).await;
    Ok(out)
}

pub async fn get(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>> {
    let id = parse_or_auth(&st, &headers, &id).await?;
    let b = auth::build_reader(&st, &headers, id).await?;
    let after: u64 = match q.get("after").filter(|s| !s.is_empty()) {
        None => 0,
        Some(v) => v.parse().map_err(|_| {
            GatewayError::bad_request(format!("invalid after {v:?}: expected a sequence number"))
        })?,
    };
    let limit: usize = match q.get("limit").filter(|s| !s.is_empty()) {
        None => DEFAULT_LOG_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| GatewayError::bad_request("limit must be a positive integer"))?,
    };
    let logs = read(&st.nats, b.id, after, limit.min(MAX_LOG_LIMIT)).await?;
    let next_after = logs.last().map(|l| l.seq).unwrap_or(after);
    Ok(Json(
        json!({"build_id": b.id, "logs": logs, "next_after": next_after}),
    ))
}

/// The whole log as text, streamed page by page.
pub async fn download_text(st: &AppState, b: &Build) -> Result<Response> {
    let (nats, id) = (st.nats.clone(), b.id);
    let pages = futures::stream::unfold(Some(0u64), move |after| {
        let nats = nats.clone();
        async move {
            let after = after?;
            match read(&nats, id, after, MAX_LOG_LIMIT).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let next = lines.last().map(|l| l.seq);
                    let mut text = String::new();
                    for l in &lines {
                        text.push_str(&format!(
                            "{} [{:?}] {}\n",
                            l.timestamp.to_rfc3339(),
                            l.level,
                            l.message
                        ));
                    }
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(text)), next))
                }
                Err(_) => Some((Err(std::io::Error::other("log stream unavailable")), None)),
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.log\""),
            ),
        ],
        Body::from_stream(pages),
    )
        .into_response())
}
