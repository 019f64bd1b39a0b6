//! The one public error shape, `{"error", "code", "hint"?}`, shared by the gateway, the storage
//! service and the CLI. The message is safe to show; internal detail goes to logs only.

use serde::{Deserialize, Serialize};

/// Machine-readable error codes, stable across releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    BadRequest,
    InvalidPlatform,
    MissingSource,
    NotMultipart,
    MalformedMultipart,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    BuildNotCompleted,
    BuildAlreadyFinished,
    Conflict,
    InvalidCapability,
    ChecksumMismatch,
    RangeNotSatisfiable,
    /// The object existed but retention deleted it.
    Gone,
    /// The object store is out of space.
    StorageFull,
    /// Too many requests from one credential or address; `Retry-After` says when to come back.
    RateLimited,
    /// The method is not served on this path.
    MethodNotAllowed,
    /// A non-streaming request took longer than the gateway allows.
    Timeout,
    /// The client sent its request body slower than the minimum rate.
    BodyTooSlow,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidPlatform
            | ErrorCode::MissingSource
            | ErrorCode::NotMultipart
            | ErrorCode::MalformedMultipart
            | ErrorCode::BuildNotCompleted
            | ErrorCode::BuildAlreadyFinished
            | ErrorCode::ChecksumMismatch => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::InvalidCapability => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RangeNotSatisfiable => 416,
            ErrorCode::Gone => 410,
            ErrorCode::StorageFull => 507,
            ErrorCode::RateLimited => 429,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Timeout => 503,
            ErrorCode::BodyTooSlow => 408,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// The JSON body of every error reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    pub error: String,
    pub code: ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiErrorBody {
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            code,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for ApiErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(f, "{code}: {}", self.error)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}
