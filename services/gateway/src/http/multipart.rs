//! Streaming multipart: file parts go straight to storage through a small bounded channel, text
//! parts are read up to a limit. A malformed body or a part over its limit is a 4xx; whatever was
//! already stored for the request is deleted by the caller.

use crate::error::GatewayError;
use crate::storage_client::{StorageClient, StorageError};
use axum::extract::multipart::{Field, MultipartError};
use bytes::Bytes;
use freeagent_shared::api_error::ErrorCode;
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::wire::StoredObject;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Chunks in flight between the client and storage: memory per upload stays small (a chunk is
/// what one socket read delivered, up to a few hundred KiB). Two keep the pipe full.
const CHANNEL_DEPTH: usize = 2;

pub fn malformed(e: MultipartError) -> GatewayError {
    // A body the server stopped for arriving too slowly is not malformed: say what happened.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(c) = cause {
        if let Some(slow) = c.downcast_ref::<freeagent_shared::http_server::TooSlow>() {
            return GatewayError::new(ErrorCode::BodyTooSlow, slow.to_string())
                .hint("send the body steadily; a connection this slow cannot upload a build");
        }
        cause = c.source();
    }
    GatewayError::new(
        ErrorCode::MalformedMultipart,
        format!("malformed multipart body: {}", e.body_text()),
    )
}

pub fn too_large(part: &str, limit: u64) -> GatewayError {
    GatewayError::new(
        ErrorCode::PayloadTooLarge,
        format!("part '{part}' is larger than its limit of {limit} bytes"),
    )
}

/// Reads a text part of at most `limit` bytes.
pub async fn text(mut field: Field<'_>, name: &str, limit: usize) -> Result<String, GatewayError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        if buf.len() + chunk.len() > limit {
            return Err(too_large(name, limit as u64));
        }
        buf.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(buf)
        .map_err(|_| GatewayError::bad_request(format!("part '{name}' is not UTF-8 text")))?;
    no_nul(name, &text)?;
    Ok(text)
}

/// Streams a file part to storage under `key`, refusing it past `limit` bytes.
pub async fn to_storage(
    storage: &StorageClient,
    mut field: Field<'_>,
    name: &str,
    key: &ObjectKey,
    limit: u64,
) -> Result<StoredObject, GatewayError> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_DEPTH);
    let upload = storage.put_stream(key, limit, ReceiverStream::new(rx));
    let pump = async move {
        let mut n: u64 = 0;
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(()),
                Err(e) => {
                    // Fail the upload so storage aborts it and keeps nothing.
                    let _ = tx
                        .send(Err(std::io::Error::other("client body failed")))
                        .await;
                    return Err(malformed(e));
                }
            };
            n += chunk.len() as u64;
            if n > limit {
                let _ = tx.send(Err(std::io::Error::other("over limit"))).await;
                return Err(too_large(name, limit));
            }
            if tx.send(Ok(chunk)).await.is_err() {
                // Storage stopped reading; its reply says why.
                return Ok(());
            }
        }
    };
    let (pumped, stored) = tokio::join!(pump, upload);
    pumped?;
    match stored {
        Ok(s) => Ok(s),
        Err(StorageError::TooLarge) => Err(too_large(name, limit)),
        Err(e) => Err(e.into_gateway()),
    }
}

/// A file part held on the gateway's local disk until the form says where it belongs (an old
/// worker sends its result before naming the build). Deleted when dropped, so a refused upload
/// leaves nothing behind; memory stays bounded as with `to_storage`.
pub struct Spooled {
    file: tempfile::NamedTempFile,
    name: String,
}

/// Writes a file part to a temporary file, refusing it past `limit` bytes.
pub async fn spool(mut field: Field<'_>, name: &str, limit: u64) -> Result<Spooled, GatewayError> {
    use tokio::io::AsyncWriteExt;
    let spool_error = |e: std::io::Error| {
        tracing::error!(error = %e, "cannot spool an upload to the temporary directory");
        GatewayError::unavailable("the gateway cannot hold this upload now; retry")
    };
    let file = tempfile::NamedTempFile::new().map_err(spool_error)?;
    let mut out = tokio::fs::File::from_std(file.reopen().map_err(spool_error)?);
    let mut n: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        n += chunk.len() as u64;
        if n > limit {
            return Err(too_large(name, limit));
        }
        out.write_all(&chunk).await.map_err(spool_error)?;
    }
    out.flush().await.map_err(spool_error)?;
    Ok(Spooled {
        file,
        name: name.to_owned(),
    })
}

impl Spooled {
    /// Streams the held bytes to storage under `key`.
    pub async fn to_storage(
        self,
        storage: &StorageClient,
        key: &ObjectKey,
        limit: u64,
    ) -> Result<StoredObject, GatewayError> {
        let file = tokio::fs::File::open(self.file.path()).await.map_err(|e| {
            tracing::error!(error = %e, "cannot reopen a spooled upload");
            GatewayError::unavailable("the gateway lost this upload; retry")
        })?;
        let stored = storage
            .put_stream(key, limit, tokio_util::io::ReaderStream::new(file))
            .await;
        // `self.file` is dropped (and deleted) after the upload.
        match stored {
            Ok(s) => Ok(s),
            Err(StorageError::TooLarge) => Err(too_large(&self.name, limit)),
            Err(e) => Err(e.into_gateway()),
        }
    }
}

/// Postgres stores no NUL character, in text or JSON: refuse it at the door (400), rather than
/// as a database error.
pub fn no_nul(field: &str, text: &str) -> Result<(), GatewayError> {
    if text.contains('\0') {
        return Err(GatewayError::bad_request(format!(
            "'{field}' contains a NUL (\\u0000) character"
        ))
        .hint("remove NUL characters; they cannot be stored"));
    }
    Ok(())
}

/// `no_nul` for every string (and key) of a JSON value.
pub fn no_nul_json(field: &str, v: &serde_json::Value) -> Result<(), GatewayError> {
    use serde_json::Value;
    match v {
        Value::String(s) => no_nul(field, s),
        Value::Array(items) => items.iter().try_for_each(|i| no_nul_json(field, i)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            no_nul(field, k)?;
            no_nul_json(field, v)
        }),
        _ => Ok(()),
    }
}
