//! The HTTP edge every feature shares: what a route is and the OpenAPI document built from the
//! routes, request bodies (JSON, multipart), server-sent events, the rate limits, the request
//! deadline, and what a refused request's unread body costs. Nothing here knows a feature.

pub(crate) mod body;
pub(crate) mod cookie;
pub(crate) mod deadline;
pub mod multipart;
pub(crate) mod openapi;
pub(crate) mod rate_limit;
pub(crate) mod route;
pub(crate) mod schema;
pub(crate) mod sse;
pub(crate) mod unread_body;
