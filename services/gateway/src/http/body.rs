//! JSON request bodies: a malformed or oversized body is a 400 or 413 that says what is wrong,
//! worded once for every route.

use crate::error::{GatewayError, Result};
use axum::Json;
use axum::extract::rejection::JsonRejection;

/// An optional JSON body: none (or no JSON content type) is the default; a malformed one is 400.
pub(crate) fn optional_json<T: Default>(
    body: std::result::Result<Json<T>, JsonRejection>,
) -> Result<T> {
    match body {
        Ok(Json(b)) => Ok(b),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        Err(e) => Err(bad_json(e)),
    }
}

pub(crate) fn bad_json(e: JsonRejection) -> GatewayError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return GatewayError::new(
            freeagent_shared::api_error::ErrorCode::PayloadTooLarge,
            "the JSON body is larger than the gateway accepts",
        )
        .hint("FREEAGENT_JSON_LIMIT (1 MiB by default)");
    }
    GatewayError::bad_request(format!("invalid JSON body: {}", e.body_text()))
}
