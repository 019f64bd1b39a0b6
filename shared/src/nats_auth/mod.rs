//! NATS decentralized auth for a farm (ADR-0009): an operator, a system account, and one account
//! per farm whose signing key mints a user JWT per worker with that worker's permissions. The
//! server needs no change per worker; revoking a worker re-signs the farm's account with the
//! worker's key in `revocations` and pushes it through the system account.

pub mod jwt;
pub mod permissions;
pub mod setup;

use jwt::{AccountClaims, AccountLimits, Claims, JwtError, UserClaims};
use nkeys::KeyPair;
pub use permissions::Role;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{what} at {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("{0}")]
    Invalid(String),
}

fn read(what: &'static str, path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|e| AuthError::File {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A seed from a file holding just the seed (what `freeagent nats-config` writes).
pub fn read_seed(what: &'static str, path: &Path) -> Result<KeyPair, AuthError> {
    let text = read(what, path)?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('S'))
        .ok_or_else(|| AuthError::File {
            what,
            path: path.display().to_string(),
            reason: "no nkey seed (a line starting with S) in the file".into(),
        })?;
    KeyPair::from_seed(seed).map_err(|e| AuthError::File {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The standard `.creds` text: a user JWT and its seed.
pub fn creds_text(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The user JWT in a `.creds` file (the first block).
pub fn creds_jwt(creds: &str) -> Option<&str> {
    let mut lines = creds.lines().map(str::trim);
    lines.find(|l| l.starts_with("-----BEGIN NATS USER JWT"))?;
    lines.next().filter(|l| !l.is_empty())
}

/// The account a service's credentials belong to.
pub fn creds_account(creds_path: &Path) -> Result<String, AuthError> {
    let text = read("NATS credentials", creds_path)?;
    let jwt = creds_jwt(&text).ok_or_else(|| AuthError::File {
        what: "NATS credentials",
        path: creds_path.display().to_string(),
        reason: "no user JWT block".into(),
    })?;
    let claims: Claims<UserClaims> = jwt::decode(jwt)?;
    Ok(claims.nats.issuer_account.unwrap_or(claims.iss))
}

/// Mints user JWTs for the farm's account with its signing key.
#[derive(Clone)]
pub struct Minter {
    account: String,
    signing: std::sync::Arc<KeyPair>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Minter {
    pub fn new(account: String, signing: KeyPair) -> Self {
        Self {
            account,
            signing: std::sync::Arc::new(signing),
        }
    }

    /// From the signing seed file and the account of the service's own credentials.
    pub fn from_files(signing_key: &Path, creds: &Path) -> Result<Self, AuthError> {
        Ok(Self::new(
            creds_account(creds)?,
            read_seed("NATS account signing key", signing_key)?,
        ))
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn signing_public(&self) -> String {
        self.signing.public_key()
    }

    /// A user JWT for `user_public` (an nkey public key starting with U) in `role`.
    pub fn user_jwt(
        &self,
        role: &Role,
        user_public: &str,
        exp: Option<i64>,
    ) -> Result<String, AuthError> {
        if !user_public.starts_with('U') || KeyPair::from_public_key(user_public).is_err() {
            return Err(AuthError::Invalid(
                "nats_public_key must be a NATS user public key (56 characters starting with U)"
                    .into(),
            ));
        }
        let (publish, subscribe) = role.permissions();
        let (subs, payload) = role.limits();
        let nats = UserClaims {
            publish,
            subscribe,
            subs,
            data: -1,
            payload,
            issuer_account: Some(self.account.clone()),
            kind: "user".into(),
            version: 2,
        };
        Ok(jwt::sign(
            jwt::claims(&role.name(), user_public, exp, nats),
            &self.signing,
        )?)
    }
}

/// The farm account's claims: re-signed by the operator to change revocations.
pub fn account_jwt(
    operator: &KeyPair,
    name: &str,
    account: &str,
    signing_keys: Vec<String>,
    revocations: BTreeMap<String, i64>,
) -> Result<String, AuthError> {
    let nats = AccountClaims {
        limits: AccountLimits::unlimited(true),
        signing_keys,
        revocations,
        kind: "account".into(),
        version: 2,
    };
    Ok(jwt::sign(jwt::claims(name, account, None, nats), operator)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_round_trip() {
        let text = creds_text("eyJ.a.b", "SUXYZ");
        assert_eq!(creds_jwt(&text), Some("eyJ.a.b"));
        assert!(!text.contains("\n\n\n"));
    }

    #[test]
    fn minted_users_belong_to_the_account_and_bad_keys_are_refused() {
        let account = KeyPair::new_account();
        let minter = Minter::new(account.public_key(), KeyPair::new_account());
        let user = KeyPair::new_user();
        let jwt = minter
            .user_jwt(&Role::Gateway, &user.public_key(), None)
            .unwrap();
        let c: Claims<UserClaims> = jwt::decode(&jwt).unwrap();
        assert_eq!(
            c.nats.issuer_account.as_deref(),
            Some(account.public_key().as_str())
        );
        assert!(minter.user_jwt(&Role::Gateway, "nope", None).is_err());
        assert!(
            minter
                .user_jwt(&Role::Gateway, &account.public_key(), None)
                .is_err()
        );
    }
}
