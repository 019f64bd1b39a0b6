//! NATS: connecting with an actionable error, and the idempotent set-up of the JetStream streams
//! and queue consumers every service relies on. Works on NATS 2.9 and later (no multi-filter
//! consumers, no consumer updates).

use crate::status::QueueName;
use crate::subjects;
use async_nats::jetstream::{self, consumer, stream};
use backon::Retryable;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach NATS at {url}: {reason}. Start it (`nats-server -js`) or set FREEAGENT_NATS_URL"
    )]
    Unreachable { url: String, reason: String },
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
#[derive(Debug, Clone)]
pub struct StreamLimits {
    pub logs_max_age: Duration,
    pub logs_max_bytes: i64,
    pub events_max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
}

pub const DEFAULT_LOGS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_LOGS_MAX_BYTES: i64 = 1 << 30;
/// Lines one worker may keep in one build's log (the reference worker stops far earlier).
pub const LOGS_MAX_PER_SUBJECT: i64 = 500_000;
/// Largest log message (a line is cut at 16 KiB before it is sent).
pub const LOGS_MAX_MESSAGE: i32 = 64 << 10;
pub const DEFAULT_EVENTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Unacked dispatches a queue consumer allows: at least the fleet size.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 10_000;
/// A worker that took a dispatch must claim (and ack) within this, or it is redelivered.
/// Pull requests a queue's consumer holds at once: one per idle worker.
pub const DEFAULT_MAX_WAITING: i64 = 100_000;
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            logs_max_age: DEFAULT_LOGS_MAX_AGE,
            logs_max_bytes: DEFAULT_LOGS_MAX_BYTES,
            events_max_age: DEFAULT_EVENTS_MAX_AGE,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        }
    }
}

impl StreamLimits {
    /// `FREEAGENT_LOGS_MAX_AGE`, `FREEAGENT_LOGS_MAX_BYTES` and `FREEAGENT_EVENTS_MAX_AGE` (set
    /// the same on the gateway and the scheduler: each brings the streams to its settings). A
    /// finished build's log is archived to object storage, so the LOGS stream only needs to
    /// keep builds until they end and settle.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        let bytes =
            crate::config::bytes("FREEAGENT_LOGS_MAX_BYTES", DEFAULT_LOGS_MAX_BYTES as u64)?;
        Ok(Self {
            logs_max_age: crate::config::duration("FREEAGENT_LOGS_MAX_AGE", DEFAULT_LOGS_MAX_AGE)?,
            logs_max_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            events_max_age: crate::config::duration(
                "FREEAGENT_EVENTS_MAX_AGE",
                DEFAULT_EVENTS_MAX_AGE,
            )?,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        })
    }
}

/// How to reach NATS and who to be there: from `FREEAGENT_NATS_*` (see `docs/security.md`).
#[derive(Debug, Clone, Default)]
pub struct NatsSettings {
    /// `nats://host:port` or `tls://host:port` (several, comma-separated).
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
}

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
        };
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(crate::config::ConfigError::new(
                "FREEAGENT_NATS_TLS_CERT",
                "",
                "FREEAGENT_NATS_TLS_CERT and FREEAGENT_NATS_TLS_KEY set together",
            ));
        }
        Ok(s)
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
    let unreachable = |reason: String| Error::Unreachable {
        url: url.to_owned(),
        reason,
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
    if url.starts_with("tls://") {
        options = options.require_tls(true);
    }
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    options
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .connect(url)
        .await
        .map_err(|e| match e.kind() {
            async_nats::ConnectErrorKind::AuthorizationViolation => Error::Refused {
                url: url.to_owned(),
                reason: e.to_string(),
            },
            _ => unreachable(e.to_string()),
        })
}

/// Creates the BUILDS, LOGS and EVENTS streams if they are missing.
pub async fn ensure_streams(js: &jetstream::Context, limits: &StreamLimits) -> Result<(), Error> {
    let configs = [
        stream::Config {
            name: subjects::BUILDS_STREAM.to_owned(),
            subjects: vec![subjects::BUILDS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: limits.duplicate_window,
            ..Default::default()
        },
        stream::Config {
            name: subjects::LOGS_STREAM.to_owned(),
            subjects: vec![subjects::LOGS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: limits.logs_max_age,
            max_bytes: limits.logs_max_bytes,
            // Backstops for a worker that ignores its log caps: no subject (one attempt of one
            // build from one worker) holds more than this, and no line is larger.
            max_messages_per_subject: LOGS_MAX_PER_SUBJECT,
            max_message_size: LOGS_MAX_MESSAGE,
            duplicate_window: limits.duplicate_window,
            republish: Some(live_republish()),
            ..Default::default()
        },
        stream::Config {
            name: subjects::EVENTS_STREAM.to_owned(),
            subjects: vec![subjects::EVENTS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: limits.events_max_age,
            republish: Some(live_republish()),
            ..Default::default()
        },
    ];
    for config in configs {
        // Services start together and set up the same streams at once. On a fresh account the
        // loser of that race can be told "error creating store", or "stream not found" by the
        // look-up right after the stream was made: the whole step is asked again.
        (|| ensure_stream(js, &config))
            .retry(
                backon::ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(8),
            )
            .when(|e| matches!(e, Error::Setup(_)))
            .notify(|e, after| tracing::info!(error = %e, ?after, "stream set-up raced another service; asking again"))
            .await?;
    }
    Ok(())
}

/// Creates one stream, or brings an existing one up to this release's settings.
async fn ensure_stream(js: &jetstream::Context, wanted: &stream::Config) -> Result<(), Error> {
    let name = &wanted.name;
    let mut config = wanted.clone();
    let mut stream = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(|e| classify(name, e.to_string()))?;
    // A stream made by an older release keeps its old subjects and limits until updated (a
    // stream update works on 2.9; only consumer updates need 2.10).
    let info = stream
        .info()
        .await
        .map_err(|e| classify(name, e.to_string()))?;
    if outdated(&info.config, &config)
        && let Err(e) = js.update_stream(config.clone()).await
    {
        // NATS 2.9 cannot add re-publishing to a stream made without it: keep the rest of
        // the update; the gateways then poll the stream (`gateway::live::feed`).
        if info.config.republish == config.republish
            || !e.to_string().to_lowercase().contains("republish")
        {
            return Err(classify(name, e.to_string()));
        }
        tracing::warn!(
            stream = %name,
            "this NATS server cannot add re-publishing to an existing stream, so live logs and events will be polled (up to 0.1 s later, more load on NATS); to fix, once every finished build's log is archived, delete the stream and restart the farm, or use NATS 2.10 or later"
        );
        config.republish = info.config.republish.clone();
        js.update_stream(config)
            .await
            .map_err(|e| classify(name, e.to_string()))?;
    }
    Ok(())
}

/// Whether a stream's settings on the server differ from what this release wants.
fn outdated(server: &stream::Config, wanted: &stream::Config) -> bool {
    server.subjects != wanted.subjects
        || server.max_age != wanted.max_age
        || (wanted.max_bytes > 0 && server.max_bytes != wanted.max_bytes)
        || server.max_messages_per_subject != wanted.max_messages_per_subject
        || server.max_message_size != wanted.max_message_size
        || server.republish != wanted.republish
}

/// Every stored message again on `live.<subject>`, for the gateways' live feeds.
fn live_republish() -> stream::Republish {
    stream::Republish {
        source: ">".into(),
        destination: subjects::LIVE_REPUBLISH.into(),
        headers_only: false,
    }
}

fn classify(what: &str, msg: String) -> Error {
    let lower = msg.to_lowercase();
    if lower.contains("jetstream not enabled")
        || lower.contains("no responders")
        || lower.contains("503")
    {
        Error::NoJetStream(msg)
    } else {
        Error::Setup(format!("{what}: {msg}"))
    }
}

/// The queue's consumer as a worker sees it: looked up, never created (a worker may not create
/// consumers; the gateway does when a worker of the queue registers).
pub async fn queue_consumer(
    js: &jetstream::Context,
    queue: &QueueName,
) -> Result<consumer::Consumer<consumer::pull::Config>, Error> {
    let name = subjects::queue_consumer(queue);
    js.get_consumer_from_stream(&name, subjects::BUILDS_STREAM)
        .await
        .map_err(|e| classify(&name, e.to_string()))
}

/// The durable pull consumer shared by every worker of `queue`.
pub async fn ensure_queue_consumer(
    js: &jetstream::Context,
    queue: &QueueName,
) -> Result<consumer::Consumer<consumer::pull::Config>, Error> {
    let stream = js
        .get_stream(subjects::BUILDS_STREAM)
        .await
        .map_err(|e| classify(subjects::BUILDS_STREAM, e.to_string()))?;
    let name = subjects::queue_consumer(queue);
    stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subjects::dispatch(queue),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: DEFAULT_ACK_WAIT,
                max_ack_pending: DEFAULT_MAX_ACK_PENDING,
                // Every idle worker of the queue keeps a pull request waiting; the server's
                // default (512) would refuse the rest of a large fleet.
                max_waiting: DEFAULT_MAX_WAITING,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| classify(&name, e.to_string()))
}

/// Waits for JetStream to store a publish on `stream`, counted on `/metrics`
/// (`freeagent_jetstream_acks_awaited_total`): each one is a round trip on the path that waits,
/// and the per-build cost budget (`tests/tests/cost_budget.rs`) holds their number.
pub async fn stored(
    ack: jetstream::context::PublishAckFuture,
    stream: &'static str,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    metrics::counter!(crate::metrics::JETSTREAM_ACKS_AWAITED, "stream" => stream).increment(1);
    ack.await
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
