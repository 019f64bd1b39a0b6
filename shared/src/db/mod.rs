//! Postgres access, behind the `db` feature so the worker and CLI never compile sqlx. Each table
//! has one module holding all of its SQL; there is no SQL anywhere else in the workspace. The
//! statements are SQL files beside the modules (`sql/<table>/`, `builds/sql/`), each saying what
//! it does and naming its parameters; only statements assembled at run time are built in code.

pub mod api_keys;
pub mod builds;
pub mod diagnostics;
pub mod failover;
pub mod nats_revocations;
pub mod nats_setup_lock;
pub mod teams;
pub mod ui_sessions;
pub mod workers;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::time::Duration;

pub use sqlx::{PgPool as Pool, Postgres, Transaction};

/// A statement's text, from its `.sql` file beside the module, counted on `/metrics` as
/// `freeagent_sql_statements_total{statement="<table>/<file>"}` each time it is sent: the
/// per-build cost budget (`tests/tests/cost_budget.rs`) reads these counts.
macro_rules! sql {
    ($file:literal) => {{
        static LABEL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
        $crate::db::count_statement(
            LABEL.get_or_init(|| $crate::db::statement_label(module_path!(), $file)),
        );
        include_str!($file)
    }};
}
pub(crate) use sql;

/// `<table>/<file stem>`: the table from the module (`db::builds::transitions` → `builds`), the
/// name from the file (`sql/workers/get.sql` → `get`). Made once per statement.
pub fn statement_label(module: &str, file: &str) -> &'static str {
    let table = module
        .split("::db::")
        .nth(1)
        .and_then(|rest| rest.split("::").next())
        .unwrap_or("db");
    let stem = file
        .rsplit('/')
        .next()
        .unwrap_or(file)
        .trim_end_matches(".sql");
    Box::leak(format!("{table}/{stem}").into_boxed_str())
}

/// Counts one statement sent (see `sql!`).
pub fn count_statement(label: &'static str) {
    metrics::counter!(crate::metrics::SQL_STATEMENTS, "statement" => label).increment(1);
}

/// Every statement is bounded: nothing may hold locks for long.
pub const STATEMENT_TIMEOUT: &str = "10s";
/// How long to wait for a free connection before reporting the database unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    #[error(
        "cannot reach Postgres at {url}. Start it (for example `pg_ctlcluster 15 main start`) or set FREEAGENT_DATABASE_URL"
    )]
    Unreachable { url: String, source: sqlx::Error },
    /// Several hosts are listed and none accepts writes (`failover`).
    #[error(
        "no host of FREEAGENT_DATABASE_URL ({hosts}) accepts writes: {why}. Start the primary or promote a standby"
    )]
    NoPrimary { hosts: String, why: String },
    /// The server takes no writes: a standby, as during a failover. An outage like a lost
    /// connection (callers answer "unavailable, retry"), never the caller's fault.
    #[error("the database is read-only (a standby, or a failover under way); retry shortly")]
    ReadOnly,
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a row with this key already exists")]
    UniqueViolation,
    /// Text Postgres cannot store (a NUL character, in text or JSON): the caller's input.
    #[error("text with a character Postgres cannot store (NUL)")]
    InvalidText,
    /// The farm's tables do not exist yet: no service has applied the migrations.
    #[error(
        "the database has no Free Agent tables yet; the gateway and the scheduler create them when they start"
    )]
    NotMigrated,
    #[error("database error: {0}")]
    Sqlx(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::from_sqlx(e)
    }
}

impl Error {
    /// Maps SQLSTATEs to the variants callers match on.
    pub fn from_sqlx(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            match db.code().as_deref() {
                Some("23505") => return Error::UniqueViolation,
                // character_not_in_repertoire (NUL in text), untranslatable_character (\u0000
                // in jsonb).
                Some("22021" | "22P05") => return Error::InvalidText,
                // undefined_table
                Some("42P01") => return Error::NotMigrated,
                // read_only_sql_transaction: a write reached a standby.
                Some("25006") => return Error::ReadOnly,
                _ => {}
            }
        }
        Error::Sqlx(e)
    }
}

/// Outcome of a guarded state transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition<T> {
    /// The guard held and the row changed.
    Applied(T),
    /// The row exists but the guard did not hold; this is what it holds now.
    Stale(builds::Current),
    NotFound,
}

/// Connection options with a statement timeout on every connection.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, Error> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| Error::BadUrl(e.to_string()))?;
    Ok(opts
        .options([
            ("statement_timeout", STATEMENT_TIMEOUT),
            ("lock_timeout", "5s"),
        ])
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// Opens a pool and checks that the database answers. A URL listing several hosts opens it on
/// the one that accepts writes and follows a failover to another (`failover`).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, Error> {
    if let Some(hosts) = failover::host_list(url)? {
        return failover::connect(hosts, max_connections).await;
    }
    let opts = connect_options(url)?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(|source| Error::Unreachable {
            url: redact(url),
            source,
        })
}

/// A pool that connects on first use, for a service that must work while Postgres is away. A
/// URL listing several hosts follows a failover as `connect`'s pool does.
pub fn connect_lazy(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, Error> {
    if let Some(hosts) = failover::host_list(url)? {
        return failover::connect_lazy(hosts, max_connections, acquire_timeout);
    }
    let opts = connect_options(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(opts))
}

/// Runs pending migrations. sqlx takes a Postgres advisory lock, so several services starting
/// at once apply each migration exactly once.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    sqlx::migrate!("../migrations").run(pool).await?;
    Ok(())
}

/// Creates the database named in `url` if it does not exist (used by `freeagent dev`).
pub async fn create_database_if_missing(url: &str) -> Result<bool, Error> {
    let opts = match failover::host_list(url)? {
        Some(hosts) => failover::primary_options(&hosts).await?,
        None => connect_options(url)?,
    };
    let Some(name) = opts.get_database().map(str::to_owned) else {
        return Err(Error::BadUrl("the URL names no database".into()));
    };
    let admin = opts.clone().database("postgres");
    let mut conn = admin.connect().await.map_err(|source| Error::Unreachable {
        url: redact(url),
        source,
    })?;
    let exists: bool = sqlx::query_scalar(crate::db::sql!("sql/database_exists.sql"))
        .bind(&name)
        .fetch_one(&mut conn)
        .await?;
    if exists {
        return Ok(false);
    }
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    // Built in code: CREATE DATABASE cannot take the name as a parameter, so it is quoted here.
    match sqlx::query(&format!("CREATE DATABASE {quoted}"))
        .execute(&mut conn)
        .await
    {
        Ok(_) => Ok(true),
        // Another process created it between our check and our CREATE (42P04 duplicate_database,
        // or 23505 on pg_database's unique index).
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            Ok(false)
        }
        Err(e) => Err(Error::from_sqlx(e)),
    }
}

/// Readiness probe.
pub async fn ping(pool: &PgPool) -> Result<(), Error> {
    sqlx::query(crate::db::sql!("sql/ping.sql"))
        .execute(pool)
        .await?;
    Ok(())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        rest.split_once('@')
            .map(|(cred, host)| (scheme, cred, host))
    }) {
        Some((scheme, cred, host)) => {
            let user = cred.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u@h:5432/db"
        );
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}
