//! Postgres failover: a primary with a synchronous streaming standby, the primary SIGKILLed and
//! the standby promoted. The services, given both hosts in `FREEAGENT_DATABASE_URL`, follow the
//! promotion without a restart; nothing committed is lost and no build runs twice. Prints the
//! gap (never asserted: speed is measured, not a test threshold).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::db::{self, failover::DATABASE_FAILOVERS};
use freeagent_tests::freeagent_shared::testing::{TestDb, TestPg, factory, wait};
use freeagent_tests::freeagent_shared::{metrics, status::BuildStatus, team::TeamName};
use freeagent_tests::runs::{Runs, assert_exactly_once, terminal_count};
use freeagent_tests::{Farm, FarmOpts, metric_value};
use std::time::{Duration, Instant};

/// The database's name in a URL.
fn database_of(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

async fn pending(pool: &db::Pool) -> Result<i64, db::Error> {
    let counts = db::builds::build_count_by_status(pool).await?;
    Ok(counts
        .iter()
        .filter(|(s, _)| *s == BuildStatus::Pending)
        .map(|(_, n)| n)
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_follows_the_promoted_standby_and_loses_no_commit() {
    metrics::handle();
    let pg = TestPg::start();
    let mut db = TestDb::new_on(&pg.admin_url()).await;
    let standby = pg.add_standby(&mut db).await;
    let name = database_of(&db.url);
    // The standby listed first: the pool still opens on the host that accepts writes.
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{name}?target_session_attrs=read-write",
        standby.port, pg.port
    );
    let pool = db::connect(&url, 4).await.unwrap();
    for _ in 0..10 {
        factory::build(&pool, Default::default()).await;
    }

    // A write that reaches the standby is an outage (retry), like a lost connection.
    let on_standby = db::connect(&standby.database_url(&name), 2).await.unwrap();
    let refused = db::teams::team_ensure(&on_standby, &TeamName::default_team()).await;
    assert!(matches!(refused, Err(db::Error::ReadOnly)), "{refused:?}");

    pg.kill();
    let killed = Instant::now();
    // Until a standby is promoted, no host takes writes, and a new pool says so, naming both.
    let none = db::connect(&url, 4).await.unwrap_err().to_string();
    assert!(
        none.contains("accepts writes") && none.contains(&pg.port.to_string()),
        "{none}"
    );
    standby.promote();
    let promoted = Instant::now();
    wait::until(
        "the pool to write on the promoted standby",
        Duration::from_secs(30),
        || async {
            db::teams::team_ensure(&pool, &TeamName::default_team())
                .await
                .ok()
        },
    )
    .await;
    eprintln!(
        "pool failover: kill → promoted {:?}, promoted → first write {:?}",
        promoted - killed,
        promoted.elapsed()
    );
    // Every commit the old primary acknowledged is on the new one, once.
    assert_eq!(pending(&pool).await.unwrap(), 10);
    factory::build(&pool, Default::default()).await;
    assert_eq!(pending(&on_standby).await.unwrap(), 11);
    // The harness's own pool (primary first) followed too.
    wait::until(
        "the test database's pool to follow",
        Duration::from_secs(30),
        || async { pending(&db.pool).await.ok().filter(|n| *n == 11) },
    )
    .await;
    let moves = metric_value(&metrics::render(), DATABASE_FAILOVERS).unwrap_or(0.0);
    assert!(moves >= 2.0, "{DATABASE_FAILOVERS} = {moves}");
}

/// Whether `pid` is a live process (not gone, not a zombie the harness has yet to reap).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("\nState:\tZ"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_lost_mid_run_loses_and_duplicates_nothing() {
    let farm = Farm::start(FarmOpts {
        workers: 4,
        schedulers: 3,
        private_postgres: true,
        postgres_standby: true,
        extra_env: [
            ("FREEAGENT_REDISPATCH_AFTER", "5s"),
            ("FREEAGENT_DISPATCH_WINDOW", "32"),
            ("RUST_LOG", "info,async_nats=warn"),
            // Builds report each run to the test's listener on this machine's loopback.
            ("FREEAGENT_BUILD_NETWORK", "host"),
        ]
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Default::default()
    })
    .await;
    let (primary, standby) = (farm.pg.as_ref().unwrap(), farm.standby.as_ref().unwrap());
    let runs = Runs::start().await;
    let dir = runs.recorder();
    let n = 150;
    let ids = farm.submit_many(dir.path(), "android", n, 8, &[]).await;
    wait::until("some builds to finish", Duration::from_secs(90), || async {
        (terminal_count(&farm).await >= 20).then_some(())
    })
    .await;
    let services = [
        "storage",
        "scheduler-0",
        "scheduler-1",
        "scheduler-2",
        "gateway",
    ];
    let pids: Vec<u32> = services.iter().map(|s| farm.pid(s).unwrap()).collect();

    primary.kill();
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    // An HA tool takes a moment to decide; meanwhile the farm has no primary at all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    standby.promote();
    let promoted = Instant::now();
    eprintln!(
        "primary killed; standby promoted {:?} later",
        promoted - killed
    );

    wait::until(
        "every build to finish",
        Duration::from_secs(300),
        || async { (terminal_count(&farm).await >= n as i64).then_some(()) },
    )
    .await;
    assert_exactly_once(&farm, &ids, &runs).await;

    for (service, pid) in services.iter().zip(&pids) {
        assert_eq!(farm.pid(service), Some(*pid), "{service} was restarted");
        assert!(alive(*pid), "{service} exited:\n{}", farm.log_of(service));
        let log = farm.log_of(service);
        assert!(
            log.contains("the database's primary moved"),
            "{service} did not follow the promotion:\n{log}"
        );
    }
    for base in std::iter::once(&farm.gateway).chain(&farm.schedulers) {
        let text = farm.metrics(base).await.unwrap_or_default();
        let moves = metric_value(&text, DATABASE_FAILOVERS).unwrap_or(0.0);
        assert!(moves >= 1.0, "{base}: {DATABASE_FAILOVERS} = {moves}");
    }

    // Only the new primary can have completed a build after the kill.
    let mut first_after = None;
    for id in &ids {
        let build = db::builds::build_get(&farm.db.pool, id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        if let Some(at) = build.completed_at.filter(|at| *at > killed_at) {
            first_after =
                Some(first_after.map_or(at, |f: chrono::DateTime<chrono::Utc>| f.min(at)));
        }
    }
    let gap = first_after.map(|at| (at - killed_at).to_std().unwrap_or_default());
    eprintln!(
        "{n} builds through a primary kill: first build completed {gap:?} after the kill \
         ({:?} after the promotion)",
        gap.map(|g| g.saturating_sub(promoted - killed))
    );
}
