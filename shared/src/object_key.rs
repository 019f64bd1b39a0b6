//! Object storage keys, built only from typed ids. Nothing a client sends ever becomes a path:
//! the storage service parses every key back into this type before touching the backend.

use crate::ids::{Attempt, BuildId};
use std::fmt;

/// The objects a build owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    Source(BuildId),
    Certs(BuildId),
    Result(BuildId, Attempt),
    Logs(BuildId),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an object key: {0:?}")]
pub struct ObjectKeyError(pub String);

impl ObjectKey {
    pub fn build_id(&self) -> BuildId {
        match *self {
            ObjectKey::Source(b)
            | ObjectKey::Certs(b)
            | ObjectKey::Logs(b)
            | ObjectKey::Result(b, _) => b,
        }
    }

    /// Parses `builds/<uuid>/source`, `…/certs`, `…/logs` or `…/attempts/<n>/result`.
    pub fn parse(s: &str) -> Result<Self, ObjectKeyError> {
        let err = || ObjectKeyError(s.chars().take(200).collect());
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["builds", id, rest @ ..] => {
                let id: BuildId = id.parse().map_err(|_| err())?;
                match rest {
                    ["source"] => Ok(ObjectKey::Source(id)),
                    ["certs"] => Ok(ObjectKey::Certs(id)),
                    ["logs"] => Ok(ObjectKey::Logs(id)),
                    ["attempts", n, "result"] => {
                        // Only canonical decimal, so one object has exactly one key.
                        if n.is_empty()
                            || n.len() > 9
                            || !n.bytes().all(|b| b.is_ascii_digit())
                            || (n.len() > 1 && n.starts_with('0'))
                        {
                            return Err(err());
                        }
                        let n: i32 = n.parse().map_err(|_| err())?;
                        Ok(ObjectKey::Result(id, Attempt::new(n).map_err(|_| err())?))
                    }
                    _ => Err(err()),
                }
            }
            _ => Err(err()),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Source(b) => write!(f, "builds/{b}/source"),
            ObjectKey::Certs(b) => write!(f, "builds/{b}/certs"),
            ObjectKey::Logs(b) => write!(f, "builds/{b}/logs"),
            ObjectKey::Result(b, a) => write!(f, "builds/{b}/attempts/{a}/result"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let b = BuildId::new();
        for k in [
            ObjectKey::Source(b),
            ObjectKey::Certs(b),
            ObjectKey::Logs(b),
            ObjectKey::Result(b, Attempt::new(3).unwrap()),
        ] {
            assert_eq!(ObjectKey::parse(&k.to_string()).unwrap(), k);
        }
    }

    #[test]
    fn hostile_keys_are_refused() {
        let b = BuildId::new();
        for bad in [
            "../etc/passwd".to_owned(),
            format!("builds/{b}/../../x"),
            format!("builds/{b}/source/"),
            format!("builds/{b}/attempts/01/result"),
            format!("builds/{b}/attempts/-1/result"),
            "builds/not-a-uuid/source".to_owned(),
            String::new(),
        ] {
            assert!(ObjectKey::parse(&bad).is_err(), "{bad}");
        }
    }
}
