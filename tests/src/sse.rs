//! A server-sent-event reader for tests and the bench: reads one event at a time from a
//! streaming response (comments and keep-alives skipped).

use futures::StreamExt;
use std::time::Duration;

pub use freeagent_shared::testing::sse::SseEvent;

pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        SseReader {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event, or `None` when the stream ended (or `within` passed).
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        tokio::time::timeout(within, self.next_event()).await.ok()?
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(e) = freeagent_shared::testing::sse::parse_block(&block) {
                    return Some(e);
                }
            }
            let chunk = self.body.next().await?.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
