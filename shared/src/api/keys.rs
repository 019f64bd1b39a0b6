//! API keys as a managed resource (admin only): create, list, revoke. The secret of a key is in
//! the reply to its creation and nowhere else; the farm keeps only its hash.

use crate::ids::ApiKeyId;
use crate::team::TeamName;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an API key may do. `admin` holds every other scope too.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ApiScope {
    /// Submit, cancel and retry builds.
    Submit,
    /// Read builds, workers and figures.
    Read,
    /// Register workers and act for the workers the key registered.
    Worker,
    /// Register workers and nothing else: the key a worker machine holds.
    RegisterWorkers,
    /// Every scope, plus operating the farm (drain workers, manage keys).
    Admin,
}

impl ApiScope {
    pub const ALL: [ApiScope; 5] = [
        ApiScope::Submit,
        ApiScope::Read,
        ApiScope::Worker,
        ApiScope::RegisterWorkers,
        ApiScope::Admin,
    ];

    /// The name stored in `api_keys.scopes` and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiScope::Submit => "submit",
            ApiScope::Read => "read",
            ApiScope::Worker => "worker",
            ApiScope::RegisterWorkers => "register_workers",
            ApiScope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for ApiScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApiScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ApiScope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scope '{s}': use {}",
                    ApiScope::ALL.map(ApiScope::as_str).join(", ")
                )
            })
    }
}

/// `POST /api/keys`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateKeyRequest {
    /// 1 to 200 characters, for people (not unique).
    pub name: String,
    /// At least one.
    pub scopes: Vec<ApiScope>,
    /// When the key stops working (in the future); none: it works until revoked.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// For keys that register workers: the only queues their workers may serve (none: any).
    #[serde(default)]
    pub worker_queues: Option<Vec<String>>,
    /// For keys that register workers: the most live workers at once (none: any number).
    #[serde(default)]
    pub max_workers: Option<i32>,
    /// The team whose builds the key sees and acts on (made if new; none: `default`). An admin
    /// key sees every team's builds whatever its team.
    #[serde(default)]
    pub team: Option<TeamName>,
}

/// 201 to `POST /api/keys`: the only reply that carries the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<ApiScope>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub worker_queues: Option<Vec<String>>,
    pub max_workers: Option<i32>,
    pub team: TeamName,
    /// The secret (`X-API-Key`), shown once: the farm keeps only its hash.
    pub key: String,
}

/// One key in `GET /api/keys` (never its secret or hash).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<ApiScope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Approximate: recorded at most once a minute per key.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub worker_queues: Option<Vec<String>>,
    pub max_workers: Option<i32>,
    pub team: TeamName,
}

/// `GET /api/keys`: every key, oldest first, revoked ones included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// `DELETE /api/keys/:id` and `POST /api/keys/:id/revoke`. Revoking again gives the first time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyRevoked {
    pub id: ApiKeyId,
    pub revoked_at: DateTime<Utc>,
}

/// An expiry as a client writes it: a duration from `now` (`30d`, `12h`) or an RFC 3339 time.
pub fn parse_expiry(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(s) {
        return Ok(at.with_timezone(&Utc));
    }
    humantime::parse_duration(s)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| {
            format!("'{s}' is neither a duration (30d, 12h) nor a time (2027-01-01T00:00:00Z)")
        })
}

/// `parse_expiry` from the current time (the CLI's `--expires`).
pub fn parse_expiry_from_now(s: &str) -> Result<DateTime<Utc>, String> {
    parse_expiry(s, Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_names() {
        for s in ApiScope::ALL {
            assert_eq!(s.as_str().parse::<ApiScope>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::Value::String(s.as_str().into()))
            );
        }
        assert!("root".parse::<ApiScope>().is_err());
        assert!(serde_json::from_str::<ApiScope>("\"Admin\"").is_err());
    }

    #[test]
    fn expiry_is_a_duration_from_now_or_a_time() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("a fixed time")
            .with_timezone(&Utc);
        assert_eq!(
            parse_expiry("30d", now).map(|t| t.to_rfc3339()),
            Ok("2026-01-31T00:00:00+00:00".into())
        );
        assert_eq!(
            parse_expiry("2027-01-01T00:00:00Z", now).map(|t| t.to_rfc3339()),
            Ok("2027-01-01T00:00:00+00:00".into())
        );
        assert!(parse_expiry("soon", now).is_err());
    }
}
