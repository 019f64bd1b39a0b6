//! Generating a NATS auth set-up: operator, system account, per farm an account and a workers
//! account (ADR-0016), the service credentials and the server configuration. Used by `freeagent nats-config`, `freeagent dev`
//! and the test harness, so all three run the same model.

use super::accounts::AccountRole;
use super::jwt::{self, AccountClaims, AccountLimits, OperatorClaims, UserClaims};
use super::{AuthError, Minter, Role, account_jwt, creds_text, workers_key_text};
use nkeys::KeyPair;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One farm: its account and the account's signing key (which mints the services' users), and
/// its workers' account and that one's signing key (which mints every worker).
pub struct FarmKeys {
    pub name: String,
    pub account: KeyPair,
    pub signing: KeyPair,
    /// `None` in a set-up as releases before ADR-0016 wrote it: workers in the farm's account.
    pub workers: Option<WorkersKeys>,
}

pub struct WorkersKeys {
    pub account: KeyPair,
    pub signing: KeyPair,
}

/// Everything a NATS server and its farms need, freshly generated.
pub struct Generated {
    pub operator: KeyPair,
    pub system_account: KeyPair,
    pub farms: Vec<FarmKeys>,
}

/// Where a farm's files were written; each becomes one `FREEAGENT_NATS_*` variable.
#[derive(Debug, Clone)]
pub struct FarmFiles {
    pub name: String,
    /// Scheduler's identity (`FREEAGENT_NATS_CREDS` of the scheduler).
    pub scheduler_creds: PathBuf,
    /// Gateway's identity (`FREEAGENT_NATS_CREDS` of the gateway).
    pub gateway_creds: PathBuf,
    /// The farm account's signing key (`FREEAGENT_NATS_SIGNING_KEY`; gateway and scheduler):
    /// the scheduler mints its reply connection with it, and, without `workers_key`, workers.
    pub signing_key: PathBuf,
    /// Mints worker credentials in the workers account (`FREEAGENT_NATS_WORKERS_SIGNING_KEY`;
    /// gateway and scheduler). `None` for a set-up without a workers account.
    pub workers_key: Option<PathBuf>,
    /// Re-signs the account to revoke workers (`FREEAGENT_NATS_OPERATOR_KEY`; scheduler).
    pub operator_key: PathBuf,
    /// Pushes the re-signed account to the servers (`FREEAGENT_NATS_SYSTEM_CREDS`; scheduler).
    pub system_creds: PathBuf,
}

fn seed(k: &KeyPair) -> Result<String, AuthError> {
    k.seed().map_err(|e| AuthError::Invalid(e.to_string()))
}

pub(super) fn mkdir(p: &Path) -> Result<(), AuthError> {
    std::fs::create_dir_all(p).map_err(|e| AuthError::File {
        what: "directory",
        path: p.display().to_string(),
        reason: e.to_string(),
    })
}

pub(super) fn write_secret(path: &Path, text: &str) -> Result<(), AuthError> {
    let err = |e: std::io::Error| AuthError::File {
        what: "NATS auth file",
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, text).map_err(err)
    }
}

impl Generated {
    pub fn new<S: AsRef<str>>(farms: &[S]) -> Self {
        let mut g = Self::without_workers_accounts(farms);
        for f in &mut g.farms {
            f.workers = Some(WorkersKeys {
                account: KeyPair::new_account(),
                signing: KeyPair::new_account(),
            });
        }
        g
    }

    /// A set-up as releases before ADR-0016 wrote it, workers in each farm's account (for the
    /// tests that an old set-up keeps working).
    pub fn without_workers_accounts<S: AsRef<str>>(farms: &[S]) -> Self {
        Self {
            operator: KeyPair::new_operator(),
            system_account: KeyPair::new_account(),
            farms: farms
                .iter()
                .map(|n| FarmKeys {
                    name: n.as_ref().to_owned(),
                    account: KeyPair::new_account(),
                    signing: KeyPair::new_account(),
                    workers: None,
                })
                .collect(),
        }
    }

    fn operator_jwt(&self) -> Result<String, AuthError> {
        let nats = OperatorClaims {
            system_account: Some(self.system_account.public_key()),
            kind: "operator".into(),
            version: 2,
        };
        Ok(jwt::sign(
            jwt::claims("freeagent", &self.operator.public_key(), None, nats),
            &self.operator,
        )?)
    }

    fn system_account_jwt(&self) -> Result<String, AuthError> {
        let nats = AccountClaims {
            limits: AccountLimits::unlimited(false),
            signing_keys: vec![],
            revocations: BTreeMap::new(),
            exports: vec![],
            imports: vec![],
            kind: "account".into(),
            version: 2,
        };
        let c = jwt::claims("SYS", &self.system_account.public_key(), None, nats);
        Ok(jwt::sign(c, &self.operator)?)
    }

    fn farm_account_jwt(&self, farm: &FarmKeys) -> Result<String, AuthError> {
        account_jwt(
            &self.operator,
            &farm.name,
            &farm.account.public_key(),
            vec![farm.signing.public_key()],
            BTreeMap::new(),
            &AccountRole::Farm,
        )
    }

    fn workers_account_jwt(&self, farm: &FarmKeys, w: &WorkersKeys) -> Result<String, AuthError> {
        account_jwt(
            &self.operator,
            &format!("{}-workers", farm.name),
            &w.account.public_key(),
            vec![w.signing.public_key()],
            BTreeMap::new(),
            &AccountRole::Workers {
                farm: farm.account.public_key(),
            },
        )
    }

    /// A system-account user (pushes account updates); signed by the system account itself.
    pub fn system_creds(&self) -> Result<String, AuthError> {
        let user = KeyPair::new_user();
        let nats = UserClaims {
            publish: jwt::SubjectRules::default(),
            subscribe: jwt::SubjectRules::default(),
            subs: -1,
            data: -1,
            payload: -1,
            issuer_account: None,
            kind: "user".into(),
            version: 2,
        };
        let c = jwt::claims("freeagent-system", &user.public_key(), None, nats);
        let token = jwt::sign(c, &self.system_account)?;
        Ok(creds_text(&token, &seed(&user)?))
    }

    /// A service's credentials (a fresh user key, no expiry) in `farm`.
    pub fn service_creds(&self, farm: &FarmKeys, role: &Role) -> Result<String, AuthError> {
        let user = KeyPair::new_user();
        let minter = Minter::new(farm.account.public_key(), clone_key(&farm.signing)?);
        let token = minter.user_jwt(role, &user.public_key(), None)?;
        Ok(creds_text(&token, &seed(&user)?))
    }

    /// The server configuration: operator mode, a full resolver keeping pushed account updates
    /// (revocations) in `resolver_dir`, every account preloaded.
    pub fn server_config(
        &self,
        listen: &str,
        store_dir: &Path,
        resolver_dir: &Path,
    ) -> Result<String, AuthError> {
        let mut preload = format!(
            "  {}: {}\n",
            self.system_account.public_key(),
            self.system_account_jwt()?
        );
        for f in &self.farms {
            preload.push_str(&format!(
                "  # farm {}\n  {}: {}\n",
                f.name,
                f.account.public_key(),
                self.farm_account_jwt(f)?
            ));
            if let Some(w) = &f.workers {
                preload.push_str(&format!(
                    "  # farm {}'s workers\n  {}: {}\n",
                    f.name,
                    w.account.public_key(),
                    self.workers_account_jwt(f, w)?
                ));
            }
        }
        Ok(format!(
            "# Generated by Free Agent (freeagent nats-config). Operator mode: every client needs\n\
             # credentials; each farm is an account of its own, its workers another.\n\
             listen: \"{listen}\"\n\
             jetstream {{ store_dir: {store:?} }}\n\
             operator: {op}\n\
             system_account: {sys}\n\
             resolver {{ type: full, dir: {res:?}, allow_delete: false, interval: \"2m\", timeout: \"5s\" }}\n\
             resolver_preload {{\n{preload}}}\n",
            store = store_dir.display().to_string(),
            res = resolver_dir.display().to_string(),
            op = self.operator_jwt()?,
            sys = self.system_account.public_key(),
        ))
    }

    /// Writes `server.conf` and, per farm, `<dir>/<farm>/…` (secrets 0600). Returns the farms'
    /// file paths in the order given to `new`.
    pub fn write(
        &self,
        dir: &Path,
        listen: &str,
        store_dir: &Path,
    ) -> Result<Vec<FarmFiles>, AuthError> {
        mkdir(dir)?;
        let resolver_dir = dir.join("resolver");
        mkdir(&resolver_dir)?;
        write_secret(
            &dir.join("server.conf"),
            &self.server_config(listen, store_dir, &resolver_dir)?,
        )?;
        self.write_credentials(dir)
    }

    /// Writes the operator's and system user's files and, per farm, `<dir>/<farm>/…` (secrets
    /// 0600): everything but the servers' configuration.
    pub(super) fn write_credentials(&self, dir: &Path) -> Result<Vec<FarmFiles>, AuthError> {
        mkdir(dir)?;
        let operator_key = dir.join("operator.nk");
        write_secret(&operator_key, &format!("{}\n", seed(&self.operator)?))?;
        let system_creds = dir.join("system.creds");
        write_secret(&system_creds, &self.system_creds()?)?;
        let mut out = Vec::new();
        for f in &self.farms {
            let fdir = dir.join(&f.name);
            mkdir(&fdir)?;
            let files = FarmFiles {
                name: f.name.clone(),
                scheduler_creds: fdir.join("scheduler.creds"),
                gateway_creds: fdir.join("gateway.creds"),
                signing_key: fdir.join("account-signing.nk"),
                workers_key: f.workers.as_ref().map(|_| fdir.join("workers-signing.nk")),
                operator_key: operator_key.clone(),
                system_creds: system_creds.clone(),
            };
            write_secret(
                &files.scheduler_creds,
                &self.service_creds(f, &Role::Scheduler)?,
            )?;
            write_secret(
                &files.gateway_creds,
                &self.service_creds(f, &Role::Gateway)?,
            )?;
            write_secret(&files.signing_key, &format!("{}\n", seed(&f.signing)?))?;
            if let (Some(w), Some(path)) = (&f.workers, &files.workers_key) {
                let text = workers_key_text(&w.account.public_key(), &seed(&w.signing)?);
                write_secret(path, &text)?;
            }
            out.push(files);
        }
        Ok(out)
    }
}

fn clone_key(k: &KeyPair) -> Result<KeyPair, AuthError> {
    KeyPair::from_seed(&seed(k)?).map_err(|e| AuthError::Invalid(e.to_string()))
}

/// `nats-server` on PATH or in the usual system directories.
pub fn find_server_binary() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/local/bin", "/usr/bin"])
        .map(|dir| PathBuf::from(dir).join("nats-server"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_config_naming_every_account_and_secret_files() {
        let g = Generated::new(&["a", "b"]);
        let dir = tempfile_dir();
        let files = g.write(&dir, "127.0.0.1:4222", &dir.join("js")).unwrap();
        assert_eq!(files.len(), 2);
        let conf = std::fs::read_to_string(dir.join("server.conf")).unwrap();
        for f in &g.farms {
            assert!(conf.contains(&f.account.public_key()));
        }
        assert!(conf.contains(&g.system_account.public_key()));
        // No seed in the server's configuration.
        assert!(!conf.contains(&g.operator.seed().unwrap()));
        let account = super::super::creds_account(&files[0].gateway_creds).unwrap();
        assert_eq!(account, g.farms[0].account.public_key());
        // Each farm's workers account is preloaded, and its key file names it.
        let workers = g.farms[1].workers.as_ref().unwrap();
        assert!(conf.contains(&workers.account.public_key()));
        let key = files[1].workers_key.as_ref().unwrap();
        let minter = Minter::workers_from_files(key, &files[1].gateway_creds).unwrap();
        assert_eq!(minter.account(), workers.account.public_key());
        assert_eq!(
            minter.account_role(),
            AccountRole::Workers {
                farm: g.farms[1].account.public_key()
            }
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_old_style_set_up_has_no_workers_account() {
        let g = Generated::without_workers_accounts(&["a"]);
        let dir = tempfile_dir();
        let files = g.write(&dir, "127.0.0.1:4222", &dir.join("js")).unwrap();
        assert!(files[0].workers_key.is_none());
        assert!(!dir.join("a").join("workers-signing.nk").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("fa-nats-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
