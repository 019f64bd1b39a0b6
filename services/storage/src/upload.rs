//! One object being written: the first part is buffered, so an object that fits in it is a
//! single PUT; a larger one becomes a multipart upload with at most `parts_in_flight` parts
//! uploading at once (the request body waits meanwhile: backpressure). Memory per upload is
//! about `part_size × (parts_in_flight + 1)` whatever the object's size, and nothing is visible
//! until `finish` succeeds; `abort` removes the parts of a failed upload.
//!
//! **Create-only publishing** ([`Publish::CreateOnly`], used for results): `finish` never
//! replaces an object that is already at the key, and of two uploads racing for one key exactly
//! one wins, whole. The check is the backend's own atomic primitive, never a read-then-write:
//! - an object that fits in one part is a single `PutMode::Create` PUT (local disk: the staged
//!   file is hard-linked into place, which fails if the name exists; S3: `If-None-Match: *`;
//!   GCS: `ifGenerationMatch=0`; Azure: `If-None-Match: *`);
//! - a larger one is streamed as a multipart upload to a provisional key next to the target
//!   (`<key>.partial-<random>`, which no capability can name), then published with
//!   `copy_if_not_exists` (local disk: a hard link; S3: a multipart copy completed with
//!   `If-None-Match: *`, enabled by `aws_copy_if_not_exists=multipart` in `backend.rs`; GCS and
//!   Azure: their native conditional copy). The provisional object is deleted either way; one
//!   left by a crash lies under `builds/<id>/` and goes with the build's retention.
//!
//! The copy happens inside the store (no bytes pass through this process), so memory stays
//! bounded on this path too.
//!
//! Within one process, create-only publishes of the same key also take turns ([`PublishLocks`]).
//! Real stores do not need it, but moto, the S3 server the tests run against, checks
//! `If-None-Match` and then writes without a lock between the two, so two racing requests can
//! both pass; taking turns means the second one asks only once the first has landed. Across
//! replicas, the guarantee is the backend's conditional write alone.

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::sync::Arc;

/// How `finish` makes the object visible.
#[derive(Clone, Debug)]
pub enum Publish {
    /// Replaces whatever is at the key (source and certs, written once by the gateway).
    Overwrite,
    /// Never replaces: `finish` fails with [`FinishError::Exists`] if the key holds an object.
    CreateOnly(Arc<PublishLocks>),
}

/// Lock stripes: publishes of different keys rarely share one, and when they do they wait for
/// one conditional request (a PUT of at most one part, or a server-side copy).
const PUBLISH_STRIPES: usize = 64;

/// Makes create-only publishes of one key take turns within this process (see the module doc).
#[derive(Debug)]
pub struct PublishLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for PublishLocks {
    fn default() -> Self {
        Self {
            stripes: (0..PUBLISH_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl PublishLocks {
    async fn lock(&self, path: &Path) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.as_ref().hash(&mut h);
        let stripe = self
            .stripes
            .get(h.finish() as usize % self.stripes.len().max(1))?;
        Some(stripe.lock().await)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Create-only: another upload already published an object at this key; nothing changed.
    #[error("an object is already stored at {0}; it is never replaced")]
    Exists(Path),
    /// Create-only: the backend cannot write or copy conditionally (configuration).
    #[error("the object store cannot write create-only: {0}")]
    Unsupported(object_store::Error),
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

pub struct Upload {
    store: Arc<dyn ObjectStore>,
    path: Path,
    part_size: usize,
    parts_in_flight: usize,
    publish: Publish,
    state: State,
}

enum State {
    /// Still within the first part: may end up a single PUT.
    Buffering(BytesMut),
    /// Writing parts to `target`: the object's own key, or (create-only) a provisional one.
    Multipart {
        writer: WriteMultipart,
        target: Path,
    },
}

impl Upload {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: Path,
        part_size: usize,
        parts_in_flight: usize,
        publish: Publish,
    ) -> Self {
        Self {
            store,
            path,
            part_size,
            parts_in_flight,
            publish,
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
                let target = match self.publish {
                    Publish::Overwrite => self.path.clone(),
                    Publish::CreateOnly(_) => provisional(&self.path),
                };
                let upload = self.store.put_multipart(&target).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
                writer.write(&first);
                self.state = State::Multipart { writer, target };
                self.write_parts(&data).await
            }
            State::Multipart { .. } => self.write_parts(&data).await,
        }
    }

    async fn write_parts(&mut self, data: &[u8]) -> Result<(), object_store::Error> {
        let State::Multipart { writer, .. } = &mut self.state else {
            return Ok(());
        };
        writer.wait_for_capacity(self.parts_in_flight).await?;
        writer.write(data);
        Ok(())
    }

    /// Makes the object visible, all at once (or, create-only, not at all if the key is taken).
    pub async fn finish(self) -> Result<(), FinishError> {
        match (self.state, self.publish) {
            (State::Buffering(buf), Publish::Overwrite) => {
                self.store
                    .put(&self.path, PutPayload::from(buf.freeze()))
                    .await?;
                Ok(())
            }
            (State::Buffering(buf), Publish::CreateOnly(locks)) => {
                let _turn = locks.lock(&self.path).await;
                let opts = PutOptions::from(PutMode::Create);
                let put = self
                    .store
                    .put_opts(&self.path, PutPayload::from(buf.freeze()), opts)
                    .await;
                put.map(|_| ())
                    .map_err(|e| create_only_error(&self.path, e))
            }
            (State::Multipart { writer, .. }, Publish::Overwrite) => {
                writer.finish().await?;
                Ok(())
            }
            (State::Multipart { writer, target }, Publish::CreateOnly(locks)) => {
                writer.finish().await?;
                // On a task of its own, so that the provisional object is deleted even if the
                // client hangs up (and this request's future is dropped) meanwhile.
                let (store, path) = (self.store, self.path);
                let publish = tokio::spawn(async move {
                    let published = {
                        let _turn = locks.lock(&path).await;
                        store.copy_if_not_exists(&target, &path).await
                    };
                    match store.delete(&target).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => tracing::warn!(
                            error = %e,
                            path = %target,
                            "deleting a provisional upload failed; retention removes it with its build"
                        ),
                    }
                    published.map_err(|e| create_only_error(&path, e))
                });
                publish.await.map_err(|e| {
                    FinishError::Store(object_store::Error::Generic {
                        store: "publish",
                        source: Box::new(e),
                    })
                })?
            }
        }
    }

    /// Drops what was written so far; nothing becomes visible.
    pub async fn abort(self) {
        if let State::Multipart { writer, .. } = self.state
            && let Err(e) = writer.abort().await
        {
            tracing::warn!(error = %e, "aborting a failed upload failed; its parts are not visible as an object");
        }
    }
}

/// A fresh key beside `path` for a create-only multipart upload. Not an `ObjectKey` (no
/// capability can name it), and under the same `builds/<id>/` prefix, so retention and the
/// orphan sweep treat it like the build's other objects.
fn provisional(path: &Path) -> Path {
    Path::from(format!("{path}.partial-{:032x}", rand::random::<u128>()))
}

/// A conditional write or copy that lost: the key is taken. Stores report it as `AlreadyExists`
/// (or, for some S3-compatible servers, a failed precondition).
fn create_only_error(path: &Path, e: object_store::Error) -> FinishError {
    match e {
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            FinishError::Exists(path.clone())
        }
        e @ (object_store::Error::NotImplemented { .. }
        | object_store::Error::NotSupported { .. }) => FinishError::Unsupported(e),
        e => FinishError::Store(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    async fn upload(
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        data: &[u8],
    ) -> Result<(), FinishError> {
        let locks = Arc::new(PublishLocks::default());
        let mut u = Upload::new(
            store.clone(),
            path.clone(),
            1024,
            2,
            Publish::CreateOnly(locks),
        );
        for chunk in data.chunks(100) {
            u.write(Bytes::copy_from_slice(chunk)).await?;
        }
        u.finish().await
    }

    #[tokio::test]
    async fn create_only_never_replaces_small_or_multipart_objects() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for (name, len) in [("small", 10), ("large", 5000)] {
            let path = Path::from(format!("builds/x/{name}"));
            upload(&store, &path, &vec![1u8; len]).await.unwrap();
            let again = upload(&store, &path, &vec![2u8; len]).await;
            assert!(matches!(again, Err(FinishError::Exists(_))), "{again:?}");
            let kept = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(kept.as_ref(), vec![1u8; len].as_slice());
        }
        // No provisional object is left behind.
        let mut listed = store.list(None);
        let mut n = 0;
        while let Some(m) = futures::StreamExt::next(&mut listed).await {
            assert!(!m.unwrap().location.as_ref().contains(".partial-"));
            n += 1;
        }
        assert_eq!(n, 2);
    }
}
