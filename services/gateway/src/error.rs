//! Gateway errors: a safe message and code for the client, the real cause for the log only.
//! A client's mistake is always a 4xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use freeagent_shared::api_error::{ApiErrorBody, ErrorCode};

#[derive(Debug)]
pub struct GatewayError {
    body: ApiErrorBody,
    /// Logged, never sent.
    internal: Option<String>,
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            body: ApiErrorBody::new(code, message),
            internal: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.body = self.body.with_hint(hint);
        self
    }
    pub fn code(&self) -> ErrorCode {
        self.body.code
    }
    /// For the gateway's own log: the real cause if there is one, else the client's message.
    pub fn detail(&self) -> String {
        self.internal
            .clone()
            .unwrap_or_else(|| self.body.error.clone())
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing credentials")
            .hint("send X-API-Key, Authorization: Bearer <key> or X-Build-Token")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    /// A dependency failed: 503 with a generic message; the detail goes to the log.
    pub fn unavailable(internal: impl std::fmt::Display) -> Self {
        Self {
            body: ApiErrorBody::new(
                ErrorCode::Unavailable,
                "a backing service is unavailable; retry shortly",
            )
            .with_hint("operators: see the gateway log and /readyz"),
            internal: Some(internal.to_string()),
        }
    }
}

impl From<freeagent_shared::db::Error> for GatewayError {
    fn from(e: freeagent_shared::db::Error) -> Self {
        match e {
            // The client's text, not the database's fault: a 400, and nothing logged at ERROR.
            freeagent_shared::db::Error::InvalidText => {
                GatewayError::bad_request("text fields may not contain NUL (\\u0000) characters")
                    .hint("remove NUL characters from metadata, names and messages")
            }
            e => GatewayError::unavailable(e),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        if let Some(internal) = &self.internal {
            tracing::error!(code = ?self.body.code, error = %internal, "request failed");
        }
        let status = StatusCode::from_u16(self.body.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body)).into_response()
    }
}
