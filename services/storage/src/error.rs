//! Storage errors and their public shape. Backend detail goes to the log, never to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use freeagent_shared::api_error::{ApiErrorBody, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid object key")]
    BadKey,
    #[error("{0}")]
    Capability(#[from] freeagent_shared::capability::CapabilityError),
    #[error("the capability query is missing or malformed")]
    MissingCapability,
    /// The attempt an attempt-bound capability names is over (or was never current).
    #[error("the build attempt this URL was granted for has ended")]
    AttemptOver,
    /// Whether the attempt still runs cannot be told now (the database is away).
    #[error("cannot check the build attempt this URL was granted for: {0}")]
    AttemptUnchecked(String),
    #[error("object is larger than the {max} bytes this capability allows")]
    TooLarge { max: u64 },
    #[error("no such object")]
    NotFound,
    #[error("the requested range is not satisfiable for an object of {size} bytes")]
    Range { size: u64 },
    #[error("the upload was cut off: {0}")]
    Truncated(String),
    #[error("the object store is full: {0}")]
    Full(object_store::Error),
    #[error("{0}")]
    Crypt(#[from] crate::crypt::CryptError),
    /// Stored certs that do not authenticate. The object key goes to the log (no secret does);
    /// the client learns only that they cannot be read.
    #[error(
        "the certs at {key} cannot be decrypted: altered, truncated, or encrypted with a key this service does not have; check FREEAGENT_CERTS_KEY and FREEAGENT_CERTS_KEY_PREVIOUS (with no certs key of its own, the key is derived from FREEAGENT_SIGNING_SECRET: after a rotation keep the old secret in FREEAGENT_SIGNING_SECRET_PREVIOUS on storage)"
    )]
    Undecryptable { key: String },
    #[error("backend error: {0}")]
    Backend(object_store::Error),
    /// A result is write-once: its key already holds an object, which stays as it was.
    #[error("{0}")]
    Exists(String),
    /// The backend cannot write create-only (e.g. S3 with conditional put disabled).
    #[error("{0}")]
    CreateOnlyUnsupported(object_store::Error),
}

impl From<crate::upload::FinishError> for StorageError {
    fn from(e: crate::upload::FinishError) -> Self {
        use crate::upload::FinishError;
        match e {
            FinishError::Exists(path) => StorageError::Exists(path.to_string()),
            FinishError::Unsupported(e) => StorageError::CreateOnlyUnsupported(e),
            FinishError::Store(e) => e.into(),
        }
    }
}

impl From<object_store::Error> for StorageError {
    /// A full disk (or quota) is told apart from other backend failures: the operator's fix
    /// differs, and retrying will not help until space is freed.
    fn from(e: object_store::Error) -> Self {
        if is_out_of_space(&e) {
            StorageError::Full(e)
        } else {
            StorageError::Backend(e)
        }
    }
}

fn is_out_of_space(e: &object_store::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded
                || io.kind() == std::io::ErrorKind::FileTooLarge)
        {
            return true;
        }
        cur = err.source();
    }
    // Some backends only say so in words (S3-compatible servers, FUSE mounts).
    let text = e.to_string().to_ascii_lowercase();
    text.contains("no space left") || text.contains("quota exceeded")
}

impl StorageError {
    fn body(&self) -> ApiErrorBody {
        match self {
            StorageError::BadKey => ApiErrorBody::new(ErrorCode::BadRequest, self.to_string()),
            StorageError::Capability(_) | StorageError::MissingCapability => {
                ApiErrorBody::new(ErrorCode::InvalidCapability, self.to_string())
                    .with_hint("ask the gateway or scheduler for a fresh signed URL")
            }
            StorageError::AttemptOver => ApiErrorBody::new(ErrorCode::Gone, self.to_string())
                .with_hint("a build's source and certs are served only while the attempt they were granted for runs"),
            StorageError::AttemptUnchecked(_) => ApiErrorBody::new(
                ErrorCode::Unavailable,
                "cannot check the build attempt this URL was granted for",
            )
            .with_hint("retry later; operators: storage reads the build records from FREEAGENT_DATABASE_URL"),
            StorageError::TooLarge { .. } => {
                ApiErrorBody::new(ErrorCode::PayloadTooLarge, self.to_string())
            }
            StorageError::NotFound => ApiErrorBody::new(ErrorCode::NotFound, self.to_string()),
            StorageError::Range { .. } => {
                ApiErrorBody::new(ErrorCode::RangeNotSatisfiable, self.to_string())
            }
            StorageError::Truncated(_) => ApiErrorBody::new(
                ErrorCode::BadRequest,
                "the upload was cut off; nothing was stored",
            ),
            StorageError::Full(_) => ApiErrorBody::new(
                ErrorCode::StorageFull,
                "the object store is full; nothing was stored",
            )
            .with_hint("retry later; operators: free space or grow the volume behind FREEAGENT_STORAGE_URL"),
            StorageError::Crypt(_) | StorageError::Undecryptable { .. } => ApiErrorBody::new(
                ErrorCode::Internal,
                "the stored object cannot be decrypted",
            )
            .with_hint("operators: check FREEAGENT_CERTS_KEY (and _PREVIOUS after a rotation)"),
            StorageError::Backend(object_store::Error::NotFound { .. }) => {
                ApiErrorBody::new(ErrorCode::NotFound, "no such object")
            }
            StorageError::Exists(_) => ApiErrorBody::new(
                ErrorCode::Conflict,
                "a result is already stored for this attempt; it is never replaced",
            )
            .with_hint("results are write-once: a new upload needs a new attempt, and its URL from the scheduler"),
            StorageError::CreateOnlyUnsupported(_) => ApiErrorBody::new(
                ErrorCode::Internal,
                "the object store cannot write results create-only; nothing was stored",
            )
            .with_hint("operators: on S3 keep AWS_CONDITIONAL_PUT=etag and set AWS_COPY_IF_NOT_EXISTS (see docs/storage.md)"),
            StorageError::Backend(_) => ApiErrorBody::new(
                ErrorCode::Unavailable,
                "the object store failed; nothing was stored",
            )
            .with_hint("retry later; operators: see the storage service log"),
        }
    }
}

impl IntoResponse for StorageError {
    fn into_response(self) -> Response {
        let body = self.body();
        if matches!(
            body.code,
            ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::StorageFull
        ) {
            tracing::error!(error = %self, "storage request failed");
        } else {
            tracing::debug!(error = %self, "storage request refused");
        }
        let status = StatusCode::from_u16(body.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(body)).into_response();
        if let StorageError::Range { size } = self
            && let Ok(v) = format!("bytes */{size}").parse()
        {
            resp.headers_mut().insert("content-range", v);
        }
        resp
    }
}
