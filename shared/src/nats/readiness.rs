//! Whether JetStream can serve the farm right now, for `/readyz`: a connected client is not
//! enough on a cluster, where JetStream stops answering while it has no meta leader (a majority
//! of nodes lost) and a stream stops taking messages while it has no leader of its own.

use crate::subjects;
use async_nats::jetstream;
use std::time::Duration;

/// How long a stream may take to describe itself before the service counts as not ready. A
/// readiness probe must answer well within a load balancer's timeout.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// `Ok` when every stream of the farm answers and, on a cluster, has a leader; else which one
/// does not and why.
pub async fn jetstream_ready(js: &jetstream::Context) -> Result<(), String> {
    // Asked together: the answer stays within one `ANSWER_WITHIN` however many are silent.
    let answers = futures::future::join_all(
        [
            subjects::BUILDS_STREAM,
            subjects::LOGS_STREAM,
            subjects::EVENTS_STREAM,
        ]
        .map(|name| stream_ready(js, name)),
    )
    .await;
    answers.into_iter().collect()
}

async fn stream_ready(js: &jetstream::Context, name: &str) -> Result<(), String> {
    let stream = tokio::time::timeout(ANSWER_WITHIN, js.get_stream(name))
        .await
        .map_err(|_| format!("stream {name} did not answer within {ANSWER_WITHIN:?}"))?
        .map_err(|e| format!("stream {name}: {e}"))?;
    match &stream.cached_info().cluster {
        Some(cluster) if cluster.leader.as_deref().is_none_or(str::is_empty) => {
            Err(format!("stream {name} has no leader"))
        }
        _ => Ok(()),
    }
}
