//! NATS: connecting to one server or a cluster with an actionable error, and who a connection
//! is. The streams and consumers every service relies on are in `streams`, the readiness of
//! JetStream in `readiness`, reading one stored message in `messages`.

mod messages;
mod readiness;
mod streams;

pub use messages::{ReadError, first_on, last_on};
pub use readiness::jetstream_ready;
pub use streams::*;

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach NATS at {url}: {reason}. Start it (`nats-server -js`) or set FREEAGENT_NATS_URL"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "FREEAGENT_NATS_URL {url:?} is not a NATS URL: {reason}. Write nats://host:4222, or the nodes of a cluster comma-separated (nats://a:4222,nats://b:4222)"
    )]
    BadUrl { url: String, reason: String },
    #[error(
        "JetStream is not available on the NATS server ({0}); start nats-server with -js (or `jetstream {{}}` in its config)"
    )]
    NoJetStream(String),
    #[error("JetStream set-up failed: {0}")]
    Setup(String),
    #[error(
        "NATS at {url} refused our credentials ({reason}). Check FREEAGENT_NATS_CREDS (services) or register the worker again"
    )]
    Refused { url: String, reason: String },
    #[error(
        "cannot use the NATS credentials at {path}: {reason}. Set FREEAGENT_NATS_CREDS to a .creds file from `freeagent nats-config`"
    )]
    Credentials { path: String, reason: String },
}

/// Stream limits, with defaults that suit one machine.
/// How to reach NATS and who to be there: from `FREEAGENT_NATS_*` (see `docs/security.md`).
#[derive(Debug, Clone, Default)]
pub struct NatsSettings {
    /// `nats://host:port` or `tls://host:port`, or several comma-separated: the nodes of a
    /// cluster (`servers`).
    pub url: String,
    /// A `.creds` file: this service's user JWT and seed (`FREEAGENT_NATS_CREDS`).
    pub creds: Option<PathBuf>,
    /// CA bundle that signed the server's certificate (`FREEAGENT_NATS_TLS_CA`).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (`FREEAGENT_NATS_TLS_CERT`, `_TLS_KEY`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The farm account's signing seed: mints worker credentials (`FREEAGENT_NATS_SIGNING_KEY`;
    /// gateway and scheduler).
    pub signing_key: Option<PathBuf>,
    /// The workers account's signing key and public key (`FREEAGENT_NATS_WORKERS_SIGNING_KEY`;
    /// gateway and scheduler): workers are minted there (ADR-0016). Unset in a set-up written
    /// before that: workers are then minted in the farm's account, as they were.
    pub workers_signing_key: Option<PathBuf>,
    /// The operator seed: re-signs the account to revoke workers (`FREEAGENT_NATS_OPERATOR_KEY`;
    /// scheduler).
    pub operator_key: Option<PathBuf>,
    /// A system-account user: pushes the re-signed account (`FREEAGENT_NATS_SYSTEM_CREDS`;
    /// scheduler).
    pub system_creds: Option<PathBuf>,
    /// How often the client pings its server (`FREEAGENT_NATS_PING_INTERVAL`); zero is
    /// [`DEFAULT_PING_INTERVAL`] for a worker, [`SERVICE_PING_INTERVAL`] for a service. A
    /// server that answers no ping for three intervals is given up for another node.
    pub ping_interval: Duration,
}

/// A node that froze or was cut off keeps its TCP connections open: a client leaves it for
/// another node after three unanswered pings. The client library's default interval (60 s, so
/// 3 minutes) let every lease expire behind a frozen node. A worker's connection pings every
/// 5 s (left after 15 s, inside the 30 s lease its heartbeats keep; 2,000 small messages a
/// second for 10,000 idle workers), a service's every 2 s (left after 6 s: the scheduler's
/// connection carries every worker's heartbeats).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// The same for the services' connections.
pub const SERVICE_PING_INTERVAL: Duration = Duration::from_secs(2);

impl NatsSettings {
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        let path = |name: &str| crate::config::var(name).map(PathBuf::from);
        let s = Self {
            url: crate::config::string("FREEAGENT_NATS_URL", crate::config::DEFAULT_NATS_URL),
            creds: path("FREEAGENT_NATS_CREDS"),
            tls_ca: path("FREEAGENT_NATS_TLS_CA"),
            tls_cert: path("FREEAGENT_NATS_TLS_CERT"),
            tls_key: path("FREEAGENT_NATS_TLS_KEY"),
            signing_key: path("FREEAGENT_NATS_SIGNING_KEY"),
            workers_signing_key: path("FREEAGENT_NATS_WORKERS_SIGNING_KEY"),
            operator_key: path("FREEAGENT_NATS_OPERATOR_KEY"),
            system_creds: path("FREEAGENT_NATS_SYSTEM_CREDS"),
            ping_interval: crate::config::duration("FREEAGENT_NATS_PING_INTERVAL", Duration::ZERO)?,
        };
        if let Err(e) = s.servers() {
            return Err(crate::config::ConfigError::new(
                "FREEAGENT_NATS_URL",
                &s.url,
                e.to_string(),
            ));
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(crate::config::ConfigError::new(
                "FREEAGENT_NATS_TLS_CERT",
                "",
                "FREEAGENT_NATS_TLS_CERT and FREEAGENT_NATS_TLS_KEY set together",
            ));
        }
        Ok(s)
    }

    /// The servers of `url`: one, or the nodes of a cluster, comma-separated. The client tries
    /// them in a random order and learns the rest of a cluster from the node it reaches, so one
    /// reachable node is enough to start and any live node is enough to reconnect.
    pub fn servers(&self) -> Result<Vec<String>, Error> {
        let bad = |reason: String| Error::BadUrl {
            url: self.url.clone(),
            reason,
        };
        let servers: Vec<String> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if servers.is_empty() {
            return Err(bad("no server in it".into()));
        }
        for s in &servers {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| bad(format!("{s:?}: {e}")))?;
        }
        Ok(servers)
    }

    /// Mints worker credentials, when this service has the account's signing key.
    pub fn minter(&self) -> Result<Option<crate::nats_auth::Minter>, crate::nats_auth::AuthError> {
        match (&self.signing_key, &self.creds) {
            (Some(key), Some(creds)) => Ok(Some(crate::nats_auth::Minter::from_files(key, creds)?)),
            (Some(_), None) => Err(crate::nats_auth::AuthError::Invalid(
                "FREEAGENT_NATS_SIGNING_KEY needs FREEAGENT_NATS_CREDS (the account is read from it)"
                    .into(),
            )),
            _ => Ok(None),
        }
    }

    /// Mints worker credentials: in the workers account when this service has its key, else
    /// (a set-up written before ADR-0016) in the farm's account with its signing key.
    pub fn worker_minter(
        &self,
    ) -> Result<Option<crate::nats_auth::Minter>, crate::nats_auth::AuthError> {
        match (&self.workers_signing_key, &self.creds) {
            (Some(key), Some(creds)) => Ok(Some(crate::nats_auth::Minter::workers_from_files(
                key, creds,
            )?)),
            (Some(_), None) => Err(crate::nats_auth::AuthError::Invalid(
                "FREEAGENT_NATS_WORKERS_SIGNING_KEY needs FREEAGENT_NATS_CREDS (the farm's account is read from it)"
                    .into(),
            )),
            (None, _) => self.minter(),
        }
    }

    /// Says so at start when workers share the farm's account: a worker's reply subjects can
    /// then make JetStream act on the farm's streams (docs/security.md, "Reply subjects").
    pub fn warn_if_workers_share_the_account(&self) {
        if self.creds.is_some() && self.workers_signing_key.is_none() {
            tracing::warn!(
                "FREEAGENT_NATS_WORKERS_SIGNING_KEY is not set: workers get NATS credentials in the farm's own account, where a registered worker can make JetStream purge the farm's streams with a reply subject. Run `freeagent nats-config` again and give the gateway and the scheduler the new files (docs/security.md, \"Moving a farm's workers into their own account\")"
            );
        }
    }

    /// The same server as the system-account user, for account updates.
    pub fn system(&self) -> Option<Self> {
        let creds = self.system_creds.clone()?;
        Some(Self {
            creds: Some(creds),
            ..self.clone()
        })
    }

    /// Plain settings for `url`, no credentials (tests, tools).
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Default::default()
        }
    }
}

/// Who a connection authenticates as.
pub enum Identity {
    /// The settings' `.creds` file, or anonymous when none is set.
    Settings,
    /// A worker's JWT, issued at registration (and renewed), with the key only it holds. The
    /// JWT is read at every (re)connect, so a renewed one is used from the next connect on.
    Worker {
        jwt: std::sync::Arc<std::sync::RwLock<String>>,
        key: std::sync::Arc<nkeys::KeyPair>,
        /// Cancelled when the server says these credentials were revoked.
        revoked: tokio_util::sync::CancellationToken,
    },
    /// A user JWT a service minted for one of its own connections (`nats_auth::Minter`).
    Minted {
        jwt: String,
        key: std::sync::Arc<nkeys::KeyPair>,
    },
}

/// Authenticates with `jwt`, signing the server's nonce with `key`.
fn jwt_auth(
    jwt: impl Fn() -> String + Send + Sync + 'static,
    key: std::sync::Arc<nkeys::KeyPair>,
) -> async_nats::ConnectOptions {
    let jwt = std::sync::Arc::new(jwt);
    async_nats::ConnectOptions::with_auth_callback(move |nonce| {
        let (jwt, key) = (jwt.clone(), key.clone());
        async move {
            let mut auth = async_nats::Auth::new();
            auth.jwt = Some(jwt());
            auth.signature = Some(key.sign(&nonce).map_err(async_nats::AuthError::new)?);
            Ok(auth)
        }
    })
}

/// Tells from a worker connection's events that the server no longer accepts its credentials.
///
/// The server says "User Authentication Revoked" when it closes a live connection, but that one
/// event can be lost (the client drops events when its queue is full, or the connection breaks
/// first). Every reconnect with revoked (or expired) credentials is then refused with
/// "authorization violation": refused for [`REFUSED_FOR`] without connecting in between counts as
/// revoked too. Not the first refusal: a server still loading its accounts after a restart may
/// refuse once or twice.
#[derive(Default)]
struct RefusalWatch {
    first_refusal: std::sync::Mutex<Option<std::time::Instant>>,
}

const REFUSED_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl RefusalWatch {
    fn says_refused(&self, event: &async_nats::Event) -> bool {
        let text = event.to_string().to_lowercase();
        let mut first = match self.first_refusal.lock() {
            Ok(first) => first,
            Err(poisoned) => poisoned.into_inner(),
        };
        match event {
            async_nats::Event::Connected => {
                *first = None;
                false
            }
            async_nats::Event::ServerError(_) if text.contains("revoked") => true,
            _ if text.contains("authorization violation") => {
                first.get_or_insert_with(std::time::Instant::now).elapsed() >= REFUSED_FOR
            }
            _ => false,
        }
    }
}

/// Connects, retrying in the background once connected; fails fast if the first attempt fails.
/// `inbox_prefix` keeps a worker's reply subjects under the prefix its permissions allow.
pub async fn connect(
    settings: &NatsSettings,
    name: &str,
    identity: Identity,
    inbox_prefix: Option<String>,
) -> Result<async_nats::Client, Error> {
    let url = settings.url.as_str();
    let servers = settings.servers()?;
    let unreachable = |reason: String| Error::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let ping_interval = match (settings.ping_interval, &identity) {
        (Duration::ZERO, Identity::Worker { .. }) => DEFAULT_PING_INTERVAL,
        (Duration::ZERO, _) => SERVICE_PING_INTERVAL,
        (set, _) => set,
    };
    let mut options = match identity {
        Identity::Minted { jwt, key } => jwt_auth(move || jwt.clone(), key),
        Identity::Worker { jwt, key, revoked } => jwt_auth(
            move || match jwt.read() {
                Ok(j) => j.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            },
            key,
        )
        .event_callback({
            let refusals = std::sync::Arc::new(RefusalWatch::default());
            move |event| {
                let (revoked, refusals) = (revoked.clone(), refusals.clone());
                async move {
                    if refusals.says_refused(&event) {
                        revoked.cancel();
                    }
                    tracing::info!(%event, "NATS");
                }
            }
        }),
        Identity::Settings => match &settings.creds {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| Error::Credentials {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?,
            None => async_nats::ConnectOptions::new(),
        },
    };
    if let Some(ca) = &settings.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    if servers.iter().any(|s| s.starts_with("tls://")) {
        options = options.require_tls(true);
    }
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    options
        .name(name)
        .ping_interval(ping_interval)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .connect(servers.as_slice())
        .await
        .map_err(|e| match e.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation => Error::Refused {
                url: url.to_owned(),
                reason: e.to_string(),
            },
            _ => unreachable(e.to_string()),
        })
}

pub(crate) fn classify(what: &str, msg: String) -> Error {
    let lower = msg.to_lowercase();
    if lower.contains("temporarily unavailable") {
        // A cluster electing its JetStream leader (at start, or after losing a node): asked
        // again.
        Error::Setup(format!("{what}: {msg}"))
    } else if lower.contains("insufficient resources") {
        Error::Setup(format!(
            "{what}: {msg}. On a NATS cluster of fewer than 3 nodes (or nodes without JetStream) set FREEAGENT_NATS_REPLICAS to the nodes there are"
        ))
    } else if lower.contains("jetstream not enabled")
        || lower.contains("no responders")
        || lower.contains("503")
    {
        Error::NoJetStream(msg)
    } else {
        Error::Setup(format!("{what}: {msg}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::{ClientError, Event, ServerError};

    #[test]
    fn revocation_stops_at_once_and_refusals_only_when_they_last() {
        let watch = RefusalWatch::default();
        let refused = || Event::ClientError(ClientError::Other("authorization violation".into()));
        assert!(!watch.says_refused(&refused()), "one refusal is not enough");
        assert!(!watch.says_refused(&Event::Disconnected));
        // Refused since long ago, never connected in between: revoked.
        *watch.first_refusal.lock().unwrap() = Some(std::time::Instant::now() - REFUSED_FOR);
        assert!(watch.says_refused(&refused()));
        // Connecting in between starts over.
        assert!(!watch.says_refused(&Event::Connected));
        assert!(!watch.says_refused(&refused()));
        let revoked = Event::ServerError(ServerError::Other("User Authentication Revoked".into()));
        assert!(watch.says_refused(&revoked));
    }
}
