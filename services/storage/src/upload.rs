//! One object being written: the first part is buffered, so an object that fits in it is a
//! single PUT; a larger one becomes a multipart upload with at most `parts_in_flight` parts
//! uploading at once (the request body waits meanwhile: backpressure). Memory per upload is
//! about `part_size × (parts_in_flight + 1)` whatever the object's size, and nothing is visible
//! until `finish` succeeds; `abort` removes the parts of a failed upload.

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use std::sync::Arc;

pub struct Upload {
    store: Arc<dyn ObjectStore>,
    path: Path,
    part_size: usize,
    parts_in_flight: usize,
    state: State,
}

enum State {
    /// Still within the first part: may end up a single PUT.
    Buffering(BytesMut),
    Multipart(WriteMultipart),
}

impl Upload {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: Path,
        part_size: usize,
        parts_in_flight: usize,
    ) -> Self {
        Self {
            store,
            path,
            part_size,
            parts_in_flight,
            state: State::Buffering(BytesMut::new()),
        }
    }

    pub async fn write(&mut self, data: Bytes) -> Result<(), object_store::Error> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.state {
            State::Buffering(buf) if buf.len() + data.len() <= self.part_size => {
                buf.extend_from_slice(&data);
                Ok(())
            }
            State::Buffering(buf) => {
                let first = std::mem::take(buf);
                let upload = self.store.put_multipart(&self.path).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
                writer.write(&first);
                self.state = State::Multipart(writer);
                self.write_parts(&data).await
            }
            State::Multipart(_) => self.write_parts(&data).await,
        }
    }

    async fn write_parts(&mut self, data: &[u8]) -> Result<(), object_store::Error> {
        let State::Multipart(writer) = &mut self.state else {
            return Ok(());
        };
        writer.wait_for_capacity(self.parts_in_flight).await?;
        writer.write(data);
        Ok(())
    }

    /// Makes the object visible, all at once.
    pub async fn finish(self) -> Result<(), object_store::Error> {
        match self.state {
            State::Buffering(buf) => {
                self.store
                    .put(&self.path, PutPayload::from(buf.freeze()))
                    .await?;
                Ok(())
            }
            State::Multipart(writer) => {
                writer.finish().await?;
                Ok(())
            }
        }
    }

    /// Drops what was written so far; nothing becomes visible.
    pub async fn abort(self) {
        if let State::Multipart(writer) = self.state
            && let Err(e) = writer.abort().await
        {
            tracing::warn!(error = %e, "aborting a failed upload failed; its parts are not visible as an object");
        }
    }
}
