//! The HTTP API's request and reply types, once: the gateway serves them, the CLI and the tests
//! read them, and `GET /api/openapi.json` describes them (their schemas come from these types).
//! Field names are the contract's, legacy spellings included (`createdAt`, `completedAt`, ...).

mod builds;
mod events;
mod keys;
mod overview;
mod reports;
mod workers;

pub use builds::*;
pub use events::*;
pub use keys::*;
pub use overview::*;
pub use reports::*;
pub use workers::*;

use serde::{Deserialize, Serialize};

/// `{success: true}`, with the worker's newest token when a worker called.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Success {
    pub success: bool,
    /// The caller's newest worker token (worker routes; `null` for legacy API-key workers).
    #[serde(default)]
    pub access_token: Option<String>,
}

impl Success {
    pub fn new(access_token: Option<String>) -> Self {
        Success {
            success: true,
            access_token,
        }
    }
}
