//! One stored message of a stream by subject, read from the stream's leader (never a copy that
//! may still be catching up on a cluster): the first (what has waited longest on a work queue)
//! or the last (where a writer's lines end).

use async_nats::jetstream::{self, message::StreamMessage, stream};

#[derive(Debug, thiserror::Error)]
#[error("cannot read stream {stream} ({reason})")]
pub struct ReadError {
    pub stream: String,
    pub reason: String,
}

impl ReadError {
    fn new(stream: &str, e: impl std::fmt::Display) -> Self {
        ReadError {
            stream: stream.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// The oldest message `stream` holds on the literal `subject` at or after sequence `from`;
/// `None` when it holds none.
pub async fn first_on(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    from: u64,
) -> Result<Option<StreamMessage>, ReadError> {
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| ReadError::new(stream, e))?;
    // NATS 2.9 refuses a `next_by_subj` without a sequence.
    match s
        .get_first_raw_message_by_subject(subject, from.max(1))
        .await
    {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(ReadError::new(stream, e)),
    }
}

/// The newest message `stream` holds on the literal `subject`; `None` when it holds none.
pub async fn last_on(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<Option<StreamMessage>, ReadError> {
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| ReadError::new(stream, e))?;
    match s.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(ReadError::new(stream, e)),
    }
}
