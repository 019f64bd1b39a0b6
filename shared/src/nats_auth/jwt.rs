//! NATS JWTs (v2): the claims this farm issues and their signing with nkeys. The format is small
//! (a JSON header, JSON claims, an ed25519 signature, base64url); no maintained crate writes
//! operator and account claims with JetStream limits and revocations, so it is written here,
//! once (ADR-0009).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("malformed JWT: {0}")]
    Malformed(String),
    #[error("nkey error: {0}")]
    Key(String),
}

/// Claims common to every JWT; `nats` is the kind-specific part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims<N> {
    pub jti: String,
    pub iat: i64,
    pub iss: String,
    pub name: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub nats: N,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_account: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// `-1` means unlimited throughout, as in the server's own claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountLimits {
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
    pub imports: i64,
    pub exports: i64,
    pub wildcards: bool,
    pub conn: i64,
    pub leaf: i64,
    /// JetStream is enabled for an account whose storage limits are non-zero.
    pub mem_storage: i64,
    pub disk_storage: i64,
    pub streams: i64,
    pub consumer: i64,
}

impl AccountLimits {
    pub fn unlimited(jetstream: bool) -> Self {
        let js = if jetstream { -1 } else { 0 };
        Self {
            subs: -1,
            data: -1,
            payload: -1,
            imports: -1,
            exports: -1,
            wildcards: true,
            conn: -1,
            leaf: -1,
            mem_storage: js,
            disk_storage: js,
            streams: js,
            consumer: js,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountClaims {
    pub limits: AccountLimits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    /// User public key → issued-at: JWTs of that user issued at or before it are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revocations: BTreeMap<String, i64>,
    /// What other accounts may import from this one (the farm's, for its workers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<Export>,
    /// What this account takes from others (the workers', from their farm's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<Import>,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// Whether an export answers requests (`service`: NATS maps each request's reply subject across
/// the accounts) or carries messages one way (`stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportType {
    Stream,
    Service,
}

/// How many messages answer one request to a service export: one, or any number (a pull).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseType {
    Singleton,
    Stream,
    Chunked,
}

/// One entry of an account's `exports` (NATS JWT v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    pub name: String,
    pub subject: String,
    #[serde(rename = "type")]
    pub kind: ExportType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_type: Option<ResponseType>,
}

/// One entry of an account's `imports` (NATS JWT v2): `subject` of `account`'s exports, seen
/// here under `local_subject` (or the same subject).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Import {
    pub name: String,
    pub subject: String,
    pub account: String,
    #[serde(rename = "type")]
    pub kind: ExportType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_subject: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(rename = "pub")]
    pub publish: SubjectRules,
    #[serde(rename = "sub")]
    pub subscribe: SubjectRules,
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
    /// The account the user belongs to when a signing key (not the account key) signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_account: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u8,
}

/// Signs `claims` with `signer`; `iss` and `jti` are filled in here.
pub fn sign<N: Serialize>(mut claims: Claims<N>, signer: &KeyPair) -> Result<String, JwtError> {
    claims.iss = signer.public_key();
    claims.jti = String::new();
    let body = serde_json::to_vec(&claims).map_err(|e| JwtError::Malformed(e.to_string()))?;
    claims.jti = jti(&body);
    let body = serde_json::to_vec(&claims).map_err(|e| JwtError::Malformed(e.to_string()))?;
    let half = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(body)
    );
    let sig = signer
        .sign(half.as_bytes())
        .map_err(|e| JwtError::Key(e.to_string()))?;
    Ok(format!("{half}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// The claims of a JWT, without checking its signature (for reading our own credentials).
pub fn decode<N: serde::de::DeserializeOwned>(jwt: &str) -> Result<Claims<N>, JwtError> {
    let body = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| JwtError::Malformed("expected three dot-separated parts".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(body.trim())
        .map_err(|e| JwtError::Malformed(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| JwtError::Malformed(e.to_string()))
}

/// A unique id: base32 of the SHA-256 of the claims (the server only requires uniqueness).
fn jti(body: &[u8]) -> String {
    use sha2::Digest;
    data_encoding::BASE32_NOPAD.encode(&sha2::Sha256::digest(body))
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn claims<N>(name: &str, subject: &str, exp: Option<i64>, nats: N) -> Claims<N> {
    Claims {
        jti: String::new(),
        iat: now(),
        iss: String::new(),
        name: name.to_owned(),
        sub: subject.to_owned(),
        exp,
        nats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_jwts_verify_with_the_issuer_key_and_decode() {
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let nats = UserClaims {
            publish: SubjectRules {
                allow: vec!["a.b".into()],
                deny: vec![],
            },
            subscribe: SubjectRules::default(),
            subs: -1,
            data: -1,
            payload: -1,
            issuer_account: None,
            kind: "user".into(),
            version: 2,
        };
        let jwt = sign(claims("u", &user.public_key(), Some(5), nats), &account).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let half = format!("{}.{}", parts[0], parts[1]);
        account.verify(half.as_bytes(), &sig).unwrap();
        let back: Claims<UserClaims> = decode(&jwt).unwrap();
        assert_eq!(back.iss, account.public_key());
        assert_eq!(back.sub, user.public_key());
        assert_eq!(back.exp, Some(5));
        assert_eq!(back.nats.publish.allow, vec!["a.b".to_string()]);
        assert!(!back.jti.is_empty());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode::<UserClaims>("nope").is_err());
        assert!(decode::<UserClaims>("a.!!!.c").is_err());
    }
}
