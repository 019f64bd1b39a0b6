//! Following a Postgres failover without a restart. When `FREEAGENT_DATABASE_URL` lists several
//! hosts, the pool opens on the one that accepts writes, and a watcher moves it when that host is
//! lost or turns read-only and another one accepts writes (a standby that the operator or an HA
//! tool such as Patroni promoted: the farm never promotes anything, it follows).

mod hosts;

pub use hosts::host_list;

use crate::db::Error;
use hosts::name;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Times a process's pool moved to another host, on `/metrics`.
pub const DATABASE_FAILOVERS: &str = "freeagent_database_failovers_total";
/// How often the watcher checks that its host still accepts writes.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one host may take to connect and answer: a host lost on a real network drops
/// packets rather than refusing them.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a pool on whichever host accepts writes, with the watcher that follows a failover.
pub async fn connect(hosts: Vec<PgConnectOptions>, max_connections: u32) -> Result<PgPool, Error> {
    let (current, conn) = find_primary(&hosts)
        .await
        .map_err(|why| no_primary(&hosts, why))?;
    let switched = Arc::new(LastSwitch::default());
    let pool = pool_options(
        max_connections,
        crate::db::ACQUIRE_TIMEOUT,
        switched.clone(),
    )
    .connect_with(hosts[current].clone())
    .await
    .map_err(|source| Error::Unreachable {
        url: name(&hosts[current]),
        source,
    })?;
    let watcher = Watcher::new(pool.clone(), hosts, Some(current), Some(conn), switched);
    tokio::spawn(watcher.run());
    Ok(pool)
}

/// The same without waiting for the database: the pool starts on the first host, and the
/// watcher's first check, at once, points it at the one that accepts writes.
pub fn connect_lazy(
    hosts: Vec<PgConnectOptions>,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, Error> {
    let Some(first) = hosts.first().cloned() else {
        return Err(Error::BadUrl("FREEAGENT_DATABASE_URL lists no host".into()));
    };
    let switched = Arc::new(LastSwitch::default());
    let pool =
        pool_options(max_connections, acquire_timeout, switched.clone()).connect_lazy_with(first);
    tokio::spawn(Watcher::new(pool.clone(), hosts, None, None, switched).run());
    Ok(pool)
}

/// The options of the host that accepts writes now, for a one-off connection. Hosts are probed
/// on their `postgres` database: the URL's may not exist yet (`create_database_if_missing`).
pub async fn primary_options(hosts: &[PgConnectOptions]) -> Result<PgConnectOptions, Error> {
    let admin: Vec<_> = hosts
        .iter()
        .map(|h| h.clone().database("postgres"))
        .collect();
    match find_primary(&admin).await {
        Ok((i, _)) => Ok(hosts[i].clone()),
        Err(why) => Err(no_primary(hosts, why)),
    }
}

fn no_primary(hosts: &[PgConnectOptions], why: String) -> Error {
    Error::NoPrimary {
        hosts: hosts.iter().map(name).collect::<Vec<_>>().join(","),
        why,
    }
}

/// The pool's settings plus two guards: a new connection must land on a host that accepts
/// writes (as libpq's `target_session_attrs=read-write`; sqlx retries a refused one until its
/// acquire timeout, by then on the host the watcher found), and a connection opened before the
/// last move is closed rather than handed out.
fn pool_options(
    max_connections: u32,
    acquire_timeout: Duration,
    switched: Arc<LastSwitch>,
) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                if accepts_writes(conn).await? {
                    Ok(())
                } else {
                    Err(sqlx::Error::Protocol(
                        "this database host is read-only (a standby); waiting for the primary"
                            .into(),
                    ))
                }
            })
        })
        .before_acquire(move |_, meta| {
            let keep = !switched.predates(meta.age);
            Box::pin(async move { Ok(keep) })
        })
}

/// When the pool last moved to another host.
#[derive(Default)]
struct LastSwitch(Mutex<Option<Instant>>);

impl LastSwitch {
    fn mark(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether a connection `age` old was opened before the last move (to the old host).
    fn predates(&self, age: Duration) -> bool {
        match *self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(at) => age >= at.elapsed(),
            None => false,
        }
    }
}

/// Whether the server behind `conn` accepts writes.
async fn accepts_writes(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(crate::db::sql!("sql/accepts_writes.sql"))
        .fetch_one(conn)
        .await
}

/// A connection to `opts` if that server accepts writes; else why not.
async fn probe(opts: &PgConnectOptions) -> Result<PgConnection, String> {
    let attempt = async {
        let mut conn = opts.connect().await.map_err(|e| e.to_string())?;
        match accepts_writes(&mut conn).await {
            Ok(true) => Ok(conn),
            Ok(false) => {
                let _ = conn.close().await;
                Err("read-only (a standby)".to_owned())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")))
}

/// The host that accepts writes (its index) and a connection to it; else why each host was
/// passed over. All hosts are probed at once, so a lost one costs its timeout once; the first to
/// accept writes wins (only one does, unless the HA set-up let two primaries live).
async fn find_primary(hosts: &[PgConnectOptions]) -> Result<(usize, PgConnection), String> {
    let mut probes = tokio::task::JoinSet::new();
    for (i, opts) in hosts.iter().enumerate() {
        let opts = opts.clone();
        probes.spawn(async move { (i, probe(&opts).await) });
    }
    let mut why = vec![];
    while let Some(done) = probes.join_next().await {
        match done {
            Ok((i, Ok(conn))) => return Ok((i, conn)),
            Ok((i, Err(e))) => why.push((i, format!("{}: {e}", name(&hosts[i])))),
            Err(e) => why.push((usize::MAX, format!("a probe failed: {e}"))),
        }
    }
    why.sort();
    Err(why
        .into_iter()
        .map(|(_, w)| w)
        .collect::<Vec<_>>()
        .join("; "))
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The pool's host accepts writes.
    Primary,
    /// It did not; the pool moved to the host that does.
    Moved { from: String, to: String },
    /// No host accepts writes (the primary is lost and no standby is promoted yet).
    NoPrimary,
}

/// Watches the pool's host and moves the pool when another host becomes the primary.
struct Watcher {
    pool: PgPool,
    hosts: Vec<PgConnectOptions>,
    /// The host the pool connects to; `None` until a lazy pool's first check found it.
    current: Option<usize>,
    /// The watcher's own connection to the current host: the pool's may all be busy.
    conn: Option<PgConnection>,
    switched: Arc<LastSwitch>,
    /// Since when no host accepts writes (logged when it starts and ends, not every tick).
    lost: Option<Instant>,
}

impl Watcher {
    fn new(
        pool: PgPool,
        hosts: Vec<PgConnectOptions>,
        current: Option<usize>,
        conn: Option<PgConnection>,
        switched: Arc<LastSwitch>,
    ) -> Self {
        Self {
            pool,
            hosts,
            current,
            conn,
            switched,
            lost: None,
        }
    }

    async fn run_once(&mut self) -> Check {
        if let Some(conn) = self.conn.as_mut()
            && let Ok(Ok(true)) = tokio::time::timeout(PROBE_TIMEOUT, accepts_writes(conn)).await
        {
            return Check::Primary;
        }
        self.conn = None;
        let (found, conn) = match find_primary(&self.hosts).await {
            Ok(found) => found,
            Err(why) => {
                if self.lost.is_none() {
                    self.lost = Some(Instant::now());
                    tracing::warn!(%why, "no database host accepts writes; checking again every {CHECK_EVERY:?}");
                }
                return Check::NoPrimary;
            }
        };
        self.conn = Some(conn);
        if let Some(since) = self.lost.take() {
            tracing::info!(host = %name(&self.hosts[found]), "a database host accepts writes again after {:?}", since.elapsed());
        }
        let before = self.current.replace(found);
        if before == Some(found) {
            // The same host back (a restart): the pool reconnects by itself.
            return Check::Primary;
        }
        self.pool.set_connect_options(self.hosts[found].clone());
        // After the new options: a connection opened in between is dropped once, harmlessly.
        self.switched.mark();
        let to = name(&self.hosts[found]);
        let Some(before) = before else {
            tracing::info!(host = %to, "the database host that accepts writes is {to}");
            return Check::Primary;
        };
        let from = name(&self.hosts[before]);
        metrics::counter!(DATABASE_FAILOVERS).increment(1);
        tracing::warn!(%from, %to, "the database's primary moved: new connections go to {to}, those to {from} are closed");
        Check::Moved { from, to }
    }

    /// Checks every `CHECK_EVERY` until the pool is closed.
    async fn run(mut self) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.pool.is_closed() {
                return;
            }
            self.run_once().await;
        }
    }
}
