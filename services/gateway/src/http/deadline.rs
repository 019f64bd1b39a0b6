//! The request deadline (`FREEAGENT_REQUEST_DEADLINE`): a request that is not an upload, a
//! download or a long poll ends with a clear error when it runs past it.

/// Ends a request that runs past `deadline` with a clear error (the handler is dropped, which
/// rolls back any transaction it held).
pub(crate) async fn within_deadline(
    deadline: std::time::Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(?deadline, "a request ran past its deadline");
            crate::error::GatewayError::new(
                freeagent_shared::api_error::ErrorCode::Timeout,
                "the request took too long and was stopped",
            )
            .hint(
                "retry; if it keeps happening, the farm is overloaded (FREEAGENT_REQUEST_DEADLINE)",
            )
            .into_response()
        }
    }
}
