//! NATS decentralized auth for a farm (ADR-0009): an operator, a system account, and per farm an
//! account for its services and streams and one for its workers (ADR-0016), whose signing key
//! mints a user JWT per worker with that worker's permissions. The server needs no change per
//! worker; revoking a worker re-signs the workers' account with the worker's key in
//! `revocations` and pushes it through the system account.

pub mod accounts;
pub mod cluster;
pub mod jwt;
pub mod permissions;
pub mod setup;

use accounts::AccountRole;
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

/// The workers account's signing key file: the account's public key on an `account A…` line
/// (the minted JWTs name it, and revocations re-sign it), then the seed. One file, so that the
/// key and its account can never be configured apart.
pub fn workers_key_text(account: &str, seed: &str) -> String {
    format!(
        "# The signing key of this farm's workers account (freeagent nats-config): mints every\n\
         # worker's NATS credentials. Secret; for the gateway and the scheduler only.\n\
         account {account}\n{seed}\n"
    )
}

/// Reads what [`workers_key_text`] wrote: (account public key, signing key).
pub fn read_workers_key(path: &Path) -> Result<(String, KeyPair), AuthError> {
    const WHAT: &str = "NATS workers account signing key";
    let signing = read_seed(WHAT, path)?;
    let text = read(WHAT, path)?;
    let account = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("account "))
        .map(str::trim)
        .filter(|a| a.starts_with('A') && KeyPair::from_public_key(a).is_ok())
        .ok_or_else(|| AuthError::File {
            what: WHAT,
            path: path.display().to_string(),
            reason: "no `account A…` line naming the workers account (write it with `freeagent nats-config`)".into(),
        })?;
    Ok((account.to_owned(), signing))
}

/// Mints user JWTs for an account with its signing key: the farm's (its services' own
/// connections, and workers of a set-up without a workers account) or the workers'.
#[derive(Clone)]
pub struct Minter {
    account: String,
    signing: std::sync::Arc<KeyPair>,
    /// For the workers account: the farm account it imports from.
    farm: Option<String>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("account", &self.account)
            .field("farm", &self.farm)
            .finish_non_exhaustive()
    }
}

impl Minter {
    pub fn new(account: String, signing: KeyPair) -> Self {
        Self {
            account,
            signing: std::sync::Arc::new(signing),
            farm: None,
        }
    }

    /// Mints in the workers account `account`, which imports from the farm's account `farm`.
    pub fn for_workers(account: String, signing: KeyPair, farm: String) -> Self {
        Self {
            farm: Some(farm),
            ..Self::new(account, signing)
        }
    }

    /// From the signing seed file and the account of the service's own credentials.
    pub fn from_files(signing_key: &Path, creds: &Path) -> Result<Self, AuthError> {
        Ok(Self::new(
            creds_account(creds)?,
            read_seed("NATS account signing key", signing_key)?,
        ))
    }

    /// From the workers account's key file, for the farm of the service's own credentials.
    pub fn workers_from_files(workers_key: &Path, creds: &Path) -> Result<Self, AuthError> {
        let (account, signing) = read_workers_key(workers_key)?;
        let farm = creds_account(creds)?;
        if farm == account {
            return Err(AuthError::Invalid(
                "the workers account is the farm's own account; run `freeagent nats-config` again"
                    .into(),
            ));
        }
        Ok(Self::for_workers(account, signing, farm))
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// What this account is: the farm's own, or the workers' of a farm.
    pub fn account_role(&self) -> AccountRole {
        match &self.farm {
            Some(farm) => AccountRole::Workers { farm: farm.clone() },
            None => AccountRole::Farm,
        }
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

/// A farm's account claims, farm or workers (`role`): re-signed by the operator to change
/// revocations. The farm's account always carries its exports: with no importer they give
/// nobody anything, and a scheduler that re-signs it never drops what workers import.
pub fn account_jwt(
    operator: &KeyPair,
    name: &str,
    account: &str,
    signing_keys: Vec<String>,
    revocations: BTreeMap<String, i64>,
    role: &AccountRole,
) -> Result<String, AuthError> {
    let (limits, exports, imports) = match role {
        AccountRole::Farm => (
            AccountLimits::unlimited(true),
            accounts::farm_exports(),
            vec![],
        ),
        // No JetStream of its own: a worker's JetStream calls go to the farm's streams
        // through the imports, and nothing a worker's reply subject names can be a stream.
        AccountRole::Workers { farm } => (
            AccountLimits::unlimited(false),
            vec![],
            accounts::worker_imports(farm),
        ),
    };
    let nats = AccountClaims {
        limits,
        signing_keys,
        revocations,
        exports,
        imports,
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
    fn the_workers_account_imports_from_its_farm_and_has_no_jetstream() {
        let (operator, farm, workers) = (
            KeyPair::new_operator(),
            KeyPair::new_account(),
            KeyPair::new_account(),
        );
        let role = AccountRole::Workers {
            farm: farm.public_key(),
        };
        let revoked = BTreeMap::from([("UABC".to_owned(), 7)]);
        let jwt = account_jwt(
            &operator,
            "w",
            &workers.public_key(),
            vec![],
            revoked,
            &role,
        )
        .unwrap();
        let c: Claims<AccountClaims> = jwt::decode(&jwt).unwrap();
        assert_eq!(c.nats.limits.disk_storage, 0);
        assert!(c.nats.exports.is_empty());
        assert!(
            c.nats
                .imports
                .iter()
                .all(|i| i.account == farm.public_key())
        );
        assert_eq!(c.nats.revocations.get("UABC"), Some(&7));
        let jwt = account_jwt(
            &operator,
            "f",
            &farm.public_key(),
            vec![],
            BTreeMap::new(),
            &AccountRole::Farm,
        )
        .unwrap();
        let c: Claims<AccountClaims> = jwt::decode(&jwt).unwrap();
        assert_eq!(c.nats.limits.disk_storage, -1);
        assert_eq!(c.nats.exports, accounts::farm_exports());
        assert!(c.nats.imports.is_empty());
    }

    #[test]
    fn a_workers_key_file_names_its_account() {
        let (account, signing) = (KeyPair::new_account(), KeyPair::new_account());
        let dir = std::env::temp_dir().join(format!("fa-workers-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("workers-signing.nk");
        let text = workers_key_text(&account.public_key(), &signing.seed().unwrap());
        std::fs::write(&path, &text).unwrap();
        let (read, key) = read_workers_key(&path).unwrap();
        assert_eq!(read, account.public_key());
        assert_eq!(key.public_key(), signing.public_key());
        // A bare seed (no account line) is refused with a reason.
        std::fs::write(&path, signing.seed().unwrap()).unwrap();
        assert!(read_workers_key(&path).is_err());
        let _ = std::fs::remove_dir_all(dir);
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
