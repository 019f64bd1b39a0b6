//! The object routes: streaming PUT (SHA-256 and size computed in flight, size limit enforced
//! mid-stream, nothing visible unless the whole body arrived), GET with single `Range`s, HEAD and
//! DELETE. Every request is checked against its capability before a body byte is read.
//! Results are write-once: a PUT to a result key that already holds an object answers
//! `409 conflict` and leaves it untouched (`upload.rs` says how that is atomic).

use crate::AppState;
use crate::crypt::CertsCipher;
use crate::error::StorageError;
use crate::upload::{Publish, Upload};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use freeagent_shared::capability::{CapabilityParams, Method};
use freeagent_shared::object_key::ObjectKey;
use freeagent_shared::wire::StoredObject;
use futures::StreamExt;
use object_store::{GetOptions, GetRange, ObjectStoreExt, path::Path as StorePath};

type CapQuery = Result<Query<CapabilityParams>, axum::extract::rejection::QueryRejection>;

async fn authorize(
    st: &AppState,
    method: Method,
    raw_key: &str,
    q: CapQuery,
) -> Result<(ObjectKey, CapabilityParams), StorageError> {
    let key = ObjectKey::parse(raw_key).map_err(|_| StorageError::BadKey)?;
    let Query(params) = q.map_err(|_| StorageError::MissingCapability)?;
    st.signer.verify(method, &key, &params, chrono_now())?;
    check_attempt(st, &params).await?;
    Ok((key, params))
}

/// A worker's source and certs capabilities name their attempt: they are served only while it
/// is the build's current attempt and still running (a finished, cancelled or requeued attempt's
/// URL is dead at once, not at its expiry).
async fn check_attempt(st: &AppState, params: &CapabilityParams) -> Result<(), StorageError> {
    let Some(bound) = params.bound() else {
        // Half a binding (or an attempt below 1) is never signed by the farm: refuse it.
        if params.bld.is_some() || params.att.is_some() {
            return Err(StorageError::MissingCapability);
        }
        return Ok(());
    };
    let Some(db) = &st.db else {
        return Err(StorageError::AttemptUnchecked(
            "storage has no database configured".into(),
        ));
    };
    match freeagent_shared::db::builds::build_attempt_running(db, bound.build, bound.attempt).await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(StorageError::AttemptOver),
        Err(e) => Err(StorageError::AttemptUnchecked(e.to_string())),
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn store_path(key: &ObjectKey) -> StorePath {
    // ObjectKey's text is made of UUIDs, digits and fixed words: always a valid path.
    StorePath::from(key.to_string())
}

pub async fn put_object(
    State(st): State<AppState>,
    Path(raw_key): Path<String>,
    q: CapQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, StorageError> {
    let (key, cap) = authorize(&st, Method::Put, &raw_key, q).await?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap.max) {
        metrics::counter!(freeagent_shared::metrics::STORAGE_UPLOADS_REFUSED).increment(1);
        return Err(StorageError::TooLarge { max: cap.max });
    }
    // A result is the artifact a build's record points at, with its SHA-256: write-once, so a
    // replayed or concurrent PUT can never swap the bytes under a recorded checksum.
    let publish = match key {
        ObjectKey::Result(..) => Publish::CreateOnly(st.publish_locks.clone()),
        ObjectKey::Source(_) | ObjectKey::Certs(_) | ObjectKey::Logs(_) => Publish::Overwrite,
    };
    let mut upload = Upload::new(
        st.store.clone(),
        store_path(&key),
        st.part_size,
        st.parts_in_flight,
        publish,
    );
    // Credentials are encrypted before they leave this process.
    let mut encrypting =
        matches!(key, ObjectKey::Certs(_)).then(|| st.certs.encryptor(key.to_string()));
    // ring: assembly SHA-256 (SHA-NI or AVX2), twice the portable code where SHA-NI is absent.
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    let outcome: Result<(), StorageError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StorageError::Truncated(e.to_string()))?;
            size += chunk.len() as u64;
            if size > cap.max {
                return Err(StorageError::TooLarge { max: cap.max });
            }
            hasher.update(&chunk);
            let out = match encrypting.as_mut() {
                Some(enc) => enc.update(&chunk)?,
                None => chunk,
            };
            upload.write(out).await?;
        }
        if let Some(n) = declared.filter(|n| *n != size) {
            return Err(StorageError::Truncated(format!("got {size} of {n} bytes")));
        }
        if let Some(enc) = encrypting.take() {
            upload.write(enc.finish()?).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        if matches!(e, StorageError::TooLarge { .. }) {
            metrics::counter!(freeagent_shared::metrics::STORAGE_UPLOADS_REFUSED).increment(1);
        }
        upload.abort().await;
        return Err(e);
    }
    if let Err(e) = upload.finish().await {
        if matches!(e, crate::upload::FinishError::Exists(_)) {
            metrics::counter!(freeagent_shared::metrics::STORAGE_UPLOADS_REFUSED).increment(1);
        }
        return Err(e.into());
    }
    metrics::counter!(freeagent_shared::metrics::STORAGE_BYTES_WRITTEN).increment(size);
    let sha256 = hex::encode(hasher.finish());
    let receipt = st.signer.receipt(&key, size, &sha256);
    let stored = StoredObject {
        key: key.to_string(),
        size,
        sha256,
        receipt,
    };
    tracing::info!(key = %stored.key, size, "object stored");
    Ok((StatusCode::CREATED, axum::Json(stored)).into_response())
}

/// A single byte range, resolved against the object's size. Multiple ranges are not supported
/// (the whole object is sent instead, as RFC 9110 allows).
pub fn parse_range(value: &str, size: u64) -> Result<Option<std::ops::Range<u64>>, StorageError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else {
        return Err(StorageError::Range { size });
    };
    let (start, end) = (start.trim(), end.trim());
    let bad = || StorageError::Range { size };
    let range = if start.is_empty() {
        let n: u64 = end.parse().map_err(|_| bad())?;
        if n == 0 || size == 0 {
            return Err(bad());
        }
        size.saturating_sub(n)..size
    } else {
        let s: u64 = start.parse().map_err(|_| bad())?;
        let e: u64 = if end.is_empty() {
            size.saturating_sub(1)
        } else {
            end.parse::<u64>()
                .map_err(|_| bad())?
                .min(size.saturating_sub(1))
        };
        if s >= size || e < s {
            return Err(bad());
        }
        s..e + 1
    };
    Ok(Some(range))
}

pub async fn get_object(
    State(st): State<AppState>,
    Path(raw_key): Path<String>,
    q: CapQuery,
    headers: HeaderMap,
) -> Result<Response, StorageError> {
    let (key, _) = authorize(&st, Method::Get, &raw_key, q).await?;
    let path = store_path(&key);
    if matches!(key, ObjectKey::Certs(_)) {
        return get_encrypted(&st, &key, &path).await;
    }
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (range, size) = match range_header {
        None => (None, None),
        Some(r) => {
            let meta = st.store.head(&path).await.map_err(not_found)?;
            (parse_range(r, meta.size)?, Some(meta.size))
        }
    };
    let opts = GetOptions {
        range: range.clone().map(GetRange::Bounded),
        ..Default::default()
    };
    let result = st.store.get_opts(&path, opts).await.map_err(not_found)?;
    let total = size.unwrap_or(result.meta.size);
    let served = result.range.clone();
    let len = served.end - served.start;
    metrics::counter!(freeagent_shared::metrics::STORAGE_BYTES_READ).increment(len);
    let body = Body::from_stream(object_stream(result));
    let mut resp = Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if range.is_some() {
        resp = resp.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{total}",
                served.start,
                served.end.saturating_sub(1)
            ),
        );
    }
    resp.body(body)
        .map_err(|e| StorageError::Truncated(e.to_string()))
}

/// Credentials are read and decrypted whole before any header is sent: an object that does not
/// authenticate (altered, truncated, or written with a key this service does not have) is a
/// `500` with an error body, logged with its object key, never a `200` whose body breaks off.
/// Holding the object in memory is acceptable for certs only: they are small (the gateway caps
/// them at `FREEAGENT_CERTS_LIMIT`, 10 MiB by default) and read once per attempt; every other
/// object streams. Ranges are not offered: the holder of a lease reads them whole.
async fn get_encrypted(
    st: &AppState,
    key: &ObjectKey,
    path: &StorePath,
) -> Result<Response, StorageError> {
    let stored = st
        .store
        .get(path)
        .await
        .map_err(not_found)?
        .bytes()
        .await
        .map_err(not_found)?;
    let name = key.to_string();
    let plain = st
        .certs
        .open(&name, &stored)
        .map_err(|_| StorageError::Undecryptable { key: name })?;
    metrics::counter!(freeagent_shared::metrics::STORAGE_BYTES_READ).increment(plain.len() as u64);
    Response::builder()
        .header(header::CONTENT_LENGTH, plain.len())
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(plain))
        .map_err(|e| StorageError::Truncated(e.to_string()))
}

/// Read size for objects on local disk. object_store reads files 8 KiB per blocking task, which
/// held downloads to ~160 MiB/s; 256 KiB reads cost the same per call and move 32 times more.
const LOCAL_READ: usize = 256 * 1024;

/// The bytes of a fetched object as a stream, read in large chunks when they are a local file.
fn object_stream(
    result: object_store::GetResult,
) -> futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>> {
    use futures::TryStreamExt;
    use std::io::Seek;
    use tokio::io::AsyncReadExt;
    let range = result.range.clone();
    match result.payload {
        object_store::GetResultPayload::File(mut file, _) => {
            if let Err(e) = file.seek(std::io::SeekFrom::Start(range.start)) {
                return futures::stream::once(async move { Err(e) }).boxed();
            }
            let reader = tokio::fs::File::from_std(file).take(range.end - range.start);
            tokio_util::io::ReaderStream::with_capacity(reader, LOCAL_READ).boxed()
        }
        object_store::GetResultPayload::Stream(s) => s.map_err(std::io::Error::other).boxed(),
    }
}

pub async fn head_object(
    State(st): State<AppState>,
    Path(raw_key): Path<String>,
    q: CapQuery,
) -> Result<Response, StorageError> {
    let (key, _) = authorize(&st, Method::Get, &raw_key, q).await?;
    let meta = st.store.head(&store_path(&key)).await.map_err(not_found)?;
    let (len, ranges) = match key {
        ObjectKey::Certs(_) => (
            CertsCipher::plaintext_len(meta.size).ok_or(crate::crypt::CryptError::Decrypt)?,
            "none",
        ),
        _ => (meta.size, "bytes"),
    };
    Ok((
        [
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ACCEPT_RANGES, ranges.to_owned()),
        ],
        (),
    )
        .into_response())
}

pub async fn delete_object(
    State(st): State<AppState>,
    Path(raw_key): Path<String>,
    q: CapQuery,
) -> Result<StatusCode, StorageError> {
    let (key, _) = authorize(&st, Method::Delete, &raw_key, q).await?;
    match st.store.delete(&store_path(&key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(e.into()),
    }
}

fn not_found(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(parse_range("bytes=0-0", 10).unwrap(), Some(0..1));
        assert_eq!(parse_range("bytes=9-", 10).unwrap(), Some(9..10));
        assert_eq!(parse_range("bytes=-1", 10).unwrap(), Some(9..10));
        assert_eq!(parse_range("bytes=2-5", 10).unwrap(), Some(2..6));
        assert_eq!(parse_range("bytes=2-500", 10).unwrap(), Some(2..10));
        assert_eq!(parse_range("bytes=-50", 10).unwrap(), Some(0..10));
        assert!(parse_range("bytes=10-", 10).is_err());
        assert!(parse_range("bytes=5-2", 10).is_err());
        assert!(parse_range("bytes=x-2", 10).is_err());
        assert!(parse_range("bytes=-0", 10).is_err());
        assert_eq!(parse_range("bytes=0-1,3-4", 10).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 10).unwrap(), None);
    }
}
