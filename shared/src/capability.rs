//! Capability URLs for the storage service. The gateway and scheduler sign what a holder may do
//! (method, object key, expiry, maximum size); the storage service checks the signature before it
//! reads a single body byte, and holds no user or build state of its own.
//!
//! Storage also signs a *receipt* of every object it wrote (key, size, SHA-256), so the scheduler
//! can record the checksum storage computed rather than one a worker claims.

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
    pub sig: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    #[error("the capability has expired")]
    Expired,
    #[error("the capability signature does not match this method and object")]
    BadSignature,
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

    /// Signs a capability for `method` on `key` until `exp` (epoch seconds).
    pub fn sign(&self, method: Method, key: &ObjectKey, exp: i64, max: u64) -> CapabilityParams {
        let mac = self.mac(&[
            "cap-v1",
            method.as_str(),
            &key.to_string(),
            &exp.to_string(),
            &max.to_string(),
        ]);
        CapabilityParams {
            exp,
            max,
            sig: hex::encode(mac.finalize().into_bytes()),
        }
    }

    /// Checks a capability; the comparison is constant-time.
    pub fn verify(
        &self,
        method: Method,
        key: &ObjectKey,
        p: &CapabilityParams,
        now: i64,
    ) -> Result<(), CapabilityError> {
        let sig = hex::decode(&p.sig).map_err(|_| CapabilityError::BadSignature)?;
        let parts = [
            "cap-v1",
            method.as_str(),
            &key.to_string(),
            &p.exp.to_string(),
            &p.max.to_string(),
        ];
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
        let p = self.sign(method, key, exp, max);
        format!(
            "{}/objects/{key}?exp={}&max={}&sig={}",
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
    use crate::ids::BuildId;

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
