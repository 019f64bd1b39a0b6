//! Capability URLs for the storage service. The gateway and scheduler sign what a holder may do
//! (method, object key, expiry, maximum size); the storage service checks the signature before it
//! reads a single body byte, and holds no user or build state of its own.
//!
//! A capability a worker gets for its build's source or certs also names the attempt it was
//! granted for (`att`): storage serves it only while that attempt is the build's current one and
//! still running, so the URL dies with the attempt (completed, failed, cancelled or requeued),
//! not only at its expiry.
//!
//! Storage also signs a *receipt* of every object it wrote (key, size, SHA-256), so the scheduler
//! can record the checksum storage computed rather than one a worker claims.

use crate::ids::{Attempt, BuildId};
use crate::object_key::ObjectKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a capability allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET and HEAD.
    Get,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// The query parameters of a signed URL, as parsed by the storage service.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CapabilityParams {
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Largest body a PUT may send, in bytes (0 for other methods).
    #[serde(default)]
    pub max: u64,
    /// The build and attempt this capability is bound to, when it was granted to a worker (a
    /// retried build reads its original's objects, so the key alone does not name the build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bld: Option<BuildId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub att: Option<i32>,
    pub sig: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    #[error("the capability has expired")]
    Expired,
    #[error("the capability signature does not match this method and object")]
    BadSignature,
}

/// The attempt of a build a capability lives with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub build: BuildId,
    pub attempt: Attempt,
}

impl CapabilityParams {
    /// The attempt this capability is bound to; both halves or none (else the signature fails).
    pub fn bound(&self) -> Option<Bound> {
        Some(Bound {
            build: self.bld?,
            attempt: Attempt::new(self.att?).ok()?,
        })
    }
}

/// A secret that was current before a rotation: still accepted when checking, never used to
/// sign, and only until `until` (epoch seconds) when that is set.
#[derive(Clone)]
pub struct PreviousSecret {
    pub secret: String,
    pub until: Option<i64>,
}

impl std::fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreviousSecret(<redacted>, until {:?})", self.until)
    }
}

/// Signs and checks capabilities and receipts with a shared secret. After a rotation the previous
/// secret is still accepted for a grace period, so URLs signed just before it keep working.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
    previous: Option<(Vec<u8>, Option<i64>)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self {
            secret: secret.as_ref().to_vec(),
            previous: None,
        }
    }

    /// Also accepts signatures made with `previous` (until its deadline, if any).
    pub fn with_previous(mut self, previous: Option<PreviousSecret>) -> Self {
        self.previous = previous.map(|p| (p.secret.into_bytes(), p.until));
        self
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        Self::mac_with(&self.secret, parts)
    }

    /// Whether `sig` is the MAC of `parts` under the current secret, or under the previous one
    /// while its grace period lasts.
    fn check(&self, parts: &[&str], sig: &[u8]) -> bool {
        if self.mac(parts).verify_slice(sig).is_ok() {
            return true;
        }
        match &self.previous {
            Some((secret, until)) if until.is_none_or(|u| now_epoch() <= u) => {
                Self::mac_with(secret, parts).verify_slice(sig).is_ok()
            }
            _ => false,
        }
    }

    fn mac_with(secret: &[u8], parts: &[&str]) -> HmacSha256 {
        // `new_from_slice` accepts any key length for HMAC.
        let mut mac = match HmacSha256::new_from_slice(secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    /// The signed parts of a capability. An attempt-bound one signs two more parts, so it cannot
    /// be passed off as an unbound one by dropping `att` from its URL.
    fn capability_parts(
        method: Method,
        key: &ObjectKey,
        exp: i64,
        max: u64,
        bld: Option<BuildId>,
        att: Option<i32>,
    ) -> Vec<String> {
        let mut parts = vec![
            "cap-v1".to_owned(),
            method.as_str().to_owned(),
            key.to_string(),
            exp.to_string(),
            max.to_string(),
        ];
        if bld.is_some() || att.is_some() {
            parts.push("attempt".to_owned());
            parts.push(bld.map(|b| b.to_string()).unwrap_or_default());
            parts.push(att.map(|a| a.to_string()).unwrap_or_default());
        }
        parts
    }

    /// Signs a capability for `method` on `key` until `exp` (epoch seconds).
    pub fn sign(&self, method: Method, key: &ObjectKey, exp: i64, max: u64) -> CapabilityParams {
        self.sign_bound(method, key, exp, max, None)
    }

    /// Signs a capability that also ends with the attempt `bound` names.
    pub fn sign_bound(
        &self,
        method: Method,
        key: &ObjectKey,
        exp: i64,
        max: u64,
        bound: Option<Bound>,
    ) -> CapabilityParams {
        let (bld, att) = (bound.map(|b| b.build), bound.map(|b| b.attempt.get()));
        let parts = Self::capability_parts(method, key, exp, max, bld, att);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        CapabilityParams {
            exp,
            max,
            bld,
            att,
            sig: hex::encode(self.mac(&parts).finalize().into_bytes()),
        }
    }

    /// Checks a capability's signature and expiry; the comparison is constant-time. Whether its
    /// attempt (`att`) is still running is for the caller to check.
    pub fn verify(
        &self,
        method: Method,
        key: &ObjectKey,
        p: &CapabilityParams,
        now: i64,
    ) -> Result<(), CapabilityError> {
        let sig = hex::decode(&p.sig).map_err(|_| CapabilityError::BadSignature)?;
        let parts = Self::capability_parts(method, key, p.exp, p.max, p.bld, p.att);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        if !self.check(&parts, &sig) {
            return Err(CapabilityError::BadSignature);
        }
        if now > p.exp {
            return Err(CapabilityError::Expired);
        }
        Ok(())
    }

    /// A full URL for a capability: `<base>/objects/<key>?exp=…&max=…&sig=…`.
    pub fn url(&self, base: &str, method: Method, key: &ObjectKey, exp: i64, max: u64) -> String {
        self.url_bound(base, method, key, exp, max, None)
    }

    /// A full URL for a capability bound to an attempt (`…&bld=<build>&att=N&sig=…`).
    pub fn url_bound(
        &self,
        base: &str,
        method: Method,
        key: &ObjectKey,
        exp: i64,
        max: u64,
        bound: Option<Bound>,
    ) -> String {
        let p = self.sign_bound(method, key, exp, max, bound);
        let att = match (p.bld, p.att) {
            (Some(b), Some(a)) => format!("&bld={b}&att={a}"),
            _ => String::new(),
        };
        format!(
            "{}/objects/{key}?exp={}&max={}{att}&sig={}",
            base.trim_end_matches('/'),
            p.exp,
            p.max,
            p.sig
        )
    }

    /// Signs the facts storage computed about an object it wrote.
    pub fn receipt(&self, key: &ObjectKey, size: u64, sha256: &str) -> String {
        let mac = self.mac(&["receipt-v1", &key.to_string(), &size.to_string(), sha256]);
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn verify_receipt(&self, key: &ObjectKey, size: u64, sha256: &str, receipt: &str) -> bool {
        let Ok(sig) = hex::decode(receipt) else {
            return false;
        };
        self.check(
            &["receipt-v1", &key.to_string(), &size.to_string(), sha256],
            &sig,
        )
    }
}

fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_bind_method_key_expiry_and_size() {
        let s = Signer::new("secret");
        let k = ObjectKey::Source(BuildId::new());
        let other = ObjectKey::Certs(BuildId::new());
        let p = s.sign(Method::Put, &k, 1_000, 10);
        assert_eq!(s.verify(Method::Put, &k, &p, 999), Ok(()));
        assert_eq!(
            s.verify(Method::Put, &k, &p, 1_001),
            Err(CapabilityError::Expired)
        );
        assert_eq!(
            s.verify(Method::Get, &k, &p, 999),
            Err(CapabilityError::BadSignature)
        );
        assert_eq!(
            s.verify(Method::Put, &other, &p, 999),
            Err(CapabilityError::BadSignature)
        );
        let bigger = CapabilityParams {
            max: 11,
            ..p.clone()
        };
        assert_eq!(
            s.verify(Method::Put, &k, &bigger, 999),
            Err(CapabilityError::BadSignature)
        );
        let later = CapabilityParams {
            exp: 5_000,
            ..p.clone()
        };
        assert_eq!(
            s.verify(Method::Put, &k, &later, 999),
            Err(CapabilityError::BadSignature)
        );
        assert_eq!(
            Signer::new("other").verify(Method::Put, &k, &p, 999),
            Err(CapabilityError::BadSignature)
        );
        let garbage = CapabilityParams {
            sig: "zz".into(),
            ..p
        };
        assert_eq!(
            s.verify(Method::Put, &k, &garbage, 999),
            Err(CapabilityError::BadSignature)
        );
    }

    #[test]
    fn an_attempt_bound_capability_cannot_drop_or_change_its_attempt() {
        let s = Signer::new("secret");
        let k = ObjectKey::Source(BuildId::new());
        let b = Bound {
            build: BuildId::new(),
            attempt: Attempt::new(2).unwrap(),
        };
        let p = s.sign_bound(Method::Get, &k, 1_000, 0, Some(b));
        assert_eq!(s.verify(Method::Get, &k, &p, 999), Ok(()));
        assert_eq!(p.bound(), Some(b));
        for (bld, att) in [
            (Some(b.build), None),
            (Some(b.build), Some(1)),
            (Some(b.build), Some(3)),
            (Some(BuildId::new()), Some(2)),
            (None, Some(2)),
            (None, None),
        ] {
            let forged = CapabilityParams {
                bld,
                att,
                ..p.clone()
            };
            assert_eq!(
                s.verify(Method::Get, &k, &forged, 999),
                Err(CapabilityError::BadSignature),
                "{bld:?} {att:?}"
            );
        }
        // An unbound capability cannot be given an attempt either.
        let unbound = s.sign(Method::Get, &k, 1_000, 0);
        let bound = CapabilityParams {
            bld: Some(b.build),
            att: Some(1),
            ..unbound
        };
        assert_eq!(
            s.verify(Method::Get, &k, &bound, 999),
            Err(CapabilityError::BadSignature)
        );
        let url = s.url_bound("http://s", Method::Get, &k, 1_000, 0, Some(b));
        assert!(
            url.contains(&format!("&bld={}&att=2&sig=", b.build)),
            "{url}"
        );
    }

    #[test]
    fn the_previous_secret_is_accepted_during_its_grace_period_only() {
        let k = ObjectKey::Source(BuildId::new());
        let old = Signer::new("old-secret");
        let p = old.sign(Method::Get, &k, 1_000, 0);
        let rotated = |until| {
            Signer::new("new-secret").with_previous(Some(PreviousSecret {
                secret: "old-secret".into(),
                until,
            }))
        };
        assert_eq!(rotated(None).verify(Method::Get, &k, &p, 999), Ok(()));
        let open = now_epoch() + 60;
        assert_eq!(rotated(Some(open)).verify(Method::Get, &k, &p, 999), Ok(()));
        let closed = now_epoch() - 1;
        assert_eq!(
            rotated(Some(closed)).verify(Method::Get, &k, &p, 999),
            Err(CapabilityError::BadSignature)
        );
        // New URLs are signed with the new secret only.
        let fresh = rotated(None).sign(Method::Get, &k, 1_000, 0);
        assert_eq!(
            old.verify(Method::Get, &k, &fresh, 999),
            Err(CapabilityError::BadSignature)
        );
        let r = old.receipt(&k, 3, "abc");
        assert!(rotated(None).verify_receipt(&k, 3, "abc", &r));
        assert!(!rotated(Some(closed)).verify_receipt(&k, 3, "abc", &r));
    }

    #[test]
    fn receipts_bind_size_and_checksum() {
        let s = Signer::new("secret");
        let k = ObjectKey::Source(BuildId::new());
        let r = s.receipt(&k, 5, "abc");
        assert!(s.verify_receipt(&k, 5, "abc", &r));
        assert!(!s.verify_receipt(&k, 6, "abc", &r));
        assert!(!s.verify_receipt(&k, 5, "abd", &r));
        assert!(!s.verify_receipt(&k, 5, "abc", "nothex"));
    }
}
