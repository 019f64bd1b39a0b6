//! Typed identifiers. Raw strings and UUIDs are parsed into these at the boundary, so a
//! `BuildId` can never be confused with a `WorkerId`, and an `Attempt` is the fencing token.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A malformed identifier from outside.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind}: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub reason: &'static str,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(feature = "db", derive(sqlx::Type), sqlx(transparent))]
        #[cfg_attr(feature = "api", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id, time-ordered (UUIDv7) so that new rows land at the end of indexes.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| IdError { kind: $kind, reason: "expected a UUID" })
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// One build, chosen by the server at submission.
    BuildId,
    "build id"
);
uuid_id!(
    /// One registered worker.
    WorkerId,
    "worker id"
);
uuid_id!(
    /// One API key row.
    ApiKeyId,
    "api key id"
);

/// The fencing token of a build: every dispatch increments it, and every later write names the
/// attempt it believes in. A write with a stale attempt changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
#[cfg_attr(feature = "db", derive(sqlx::Type), sqlx(transparent))]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema), schema(value_type = i32))]
pub struct Attempt(i32);

impl Attempt {
    /// Attempt of a build that was never dispatched.
    pub const NONE: Attempt = Attempt(0);

    pub fn new(n: i32) -> Result<Self, IdError> {
        if n < 0 {
            return Err(IdError {
                kind: "attempt",
                reason: "must not be negative",
            });
        }
        Ok(Self(n))
    }
    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i64> for Attempt {
    type Error = IdError;
    fn try_from(n: i64) -> Result<Self, IdError> {
        let n = i32::try_from(n).map_err(|_| IdError {
            kind: "attempt",
            reason: "out of range",
        })?;
        Attempt::new(n)
    }
}

impl From<Attempt> for i64 {
    fn from(a: Attempt) -> i64 {
        a.0 as i64
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_round_trips_through_text_and_json() {
        let id = BuildId::new();
        let parsed: BuildId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<BuildId>(&json).unwrap(), id);
    }

    #[test]
    fn malformed_ids_are_refused() {
        assert!("../../etc/passwd".parse::<BuildId>().is_err());
        assert!("".parse::<WorkerId>().is_err());
        assert!(serde_json::from_str::<BuildId>("\"nope\"").is_err());
    }

    #[test]
    fn attempt_is_never_negative() {
        assert!(Attempt::new(-1).is_err());
        assert!(serde_json::from_str::<Attempt>("-3").is_err());
        assert_eq!(serde_json::from_str::<Attempt>("2").unwrap().get(), 2);
        assert!(serde_json::from_str::<Attempt>("99999999999").is_err());
    }
}
