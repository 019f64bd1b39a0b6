//! Heartbeat: the holder of an attempt renews its lease (and reports progress); the first beat
//! moves the build from `assigned` to `building`. The reply carries the new lease end and a fresh
//! result URL (capabilities never outlive the lease), or tells the worker to stop.
//!
//! Batch path only: heartbeats from many workers share one statement. Each batch authenticates
//! its senders in one query, renews every lease whose guard holds in one `UPDATE … FROM
//! unnest(…)` (`db::builds::build_heartbeat_batch`), reads the refused builds' current state in
//! one more query to word their refusals, and marks the senders seen.

use super::context::refusal;
use super::{Handlers, Unavailable};
use crate::events;
use freeagent_shared::db;
use freeagent_shared::db::builds::Beat;
use freeagent_shared::ids::{BuildId, WorkerId};
use freeagent_shared::status::BuildStatus;
use freeagent_shared::wire::{HeartbeatReply, HeartbeatRequest, NotYours};
use std::collections::HashMap;

impl Handlers {
    /// The batch path; a batch of one is a batch too.
    pub async fn heartbeat_many(
        &self,
        batch: Vec<HeartbeatRequest>,
    ) -> Result<Vec<HeartbeatReply>, Unavailable> {
        let workers = self
            .authenticate_many(batch.iter().map(|r| r.worker_id))
            .await?;
        let authorized: Vec<bool> = batch
            .iter()
            .map(|r| workers.contains_key(&r.worker_id))
            .collect();
        let beats: Vec<Beat> = batch
            .iter()
            .zip(&authorized)
            .filter_map(|(r, ok)| Some((r, workers.get(&r.worker_id).filter(|_| *ok)?)))
            .map(|(r, w)| Beat {
                id: r.build_id,
                attempt: r.attempt,
                worker: r.worker_id,
                progress: r.progress.map(|p| i16::from(p.min(100))),
                lease_secs: self.lease_secs(w),
            })
            .collect();
        let renewed = if beats.is_empty() {
            vec![]
        } else {
            db::builds::build_heartbeat_batch(&self.pool, &beats).await?
        };
        let by_key: HashMap<_, _> = renewed
            .iter()
            .map(|r| ((r.id, r.attempt, r.worker_id), r))
            .collect();
        let refused: Vec<BuildId> = beats
            .iter()
            .filter(|b| !by_key.contains_key(&(b.id, b.attempt, b.worker)))
            .map(|b| b.id)
            .collect();
        let current: HashMap<_, _> = if refused.is_empty() {
            HashMap::new()
        } else {
            db::builds::build_current_many(&self.pool, &refused)
                .await?
                .into_iter()
                .collect()
        };
        let seen: Vec<WorkerId> = renewed.iter().map(|r| r.worker_id).collect();
        if !seen.is_empty() {
            db::workers::workers_touch(&self.pool, &seen).await?;
        }
        let replies = batch
            .iter()
            .zip(&authorized)
            .map(|(r, ok)| {
                if !ok {
                    return HeartbeatReply::Stop {
                        reason: NotYours::Unauthorized,
                        status: None,
                    };
                }
                match by_key.get(&(r.build_id, r.attempt, r.worker_id)) {
                    Some(renewed) => HeartbeatReply::Renewed {
                        lease_expires_at: renewed.lease_expires_at,
                        result_url: Some(self.caps.result_url(
                            r.build_id,
                            r.attempt,
                            renewed.lease_expires_at,
                        )),
                    },
                    None => match current.get(&r.build_id) {
                        Some(c) => HeartbeatReply::Stop {
                            reason: refusal(c),
                            status: Some(c.status),
                        },
                        None => HeartbeatReply::Stop {
                            reason: NotYours::NotFound,
                            status: None,
                        },
                    },
                }
            })
            .collect();
        for r in renewed.iter().filter(|r| r.started) {
            events::publish_moved(
                &self.nats,
                r.id,
                r.attempt,
                BuildStatus::Building,
                Some(r.worker_id),
                &r.queue,
                r.platform,
            )
            .await;
        }
        Ok(replies)
    }
}
