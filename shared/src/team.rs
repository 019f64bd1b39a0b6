//! Teams (tenancy): every API key belongs to one, every build to its submitter's. A key that is
//! not an admin's sees and acts on its own team's builds only. The name is the team's identity
//! everywhere (API, CLI, dashboard, metrics), so it follows the rules of a queue name.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The team of every key and build from before teams existed, and of keys made without one.
pub const DEFAULT_TEAM: &str = "default";

/// A team's name: 1-64 characters of a-z, 0-9, '-' and '_'.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "db", derive(sqlx::Type), sqlx(transparent))]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema), schema(value_type = String, pattern = "^[a-z0-9_-]{1,64}$"))]
pub struct TeamName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid team {0:?}: use 1-64 characters of a-z, 0-9, '-' and '_'")]
pub struct TeamNameError(pub String);

impl TeamName {
    pub fn parse(s: &str) -> Result<Self, TeamNameError> {
        if crate::status::is_name_token(s) {
            Ok(TeamName(s.to_owned()))
        } else {
            Err(TeamNameError(s.to_owned()))
        }
    }

    pub fn default_team() -> Self {
        TeamName(DEFAULT_TEAM.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TeamName {
    type Err = TeamNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TeamName::parse(s)
    }
}

impl TryFrom<String> for TeamName {
    type Error = TeamNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TeamName::parse(&s)
    }
}

impl From<TeamName> for String {
    fn from(t: TeamName) -> String {
        t.0
    }
}

impl fmt::Display for TeamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_queue_rules() {
        assert!(TeamName::parse("mobile-ios_2").is_ok());
        assert!(TeamName::parse(DEFAULT_TEAM).is_ok());
        for bad in ["", "Mobile", "a b", "a.b", &"x".repeat(65)] {
            assert!(TeamName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
