//! The per-build cost budget (issue 25): what the whole life of one no-op build costs the farm —
//! submit, dispatch, claim, run, complete, log archive — in SQL statements, Postgres row writes,
//! JetStream messages stored and JetStream acknowledgements waited for. Counted, never timed:
//! statements and awaited acks from the services' own `/metrics`, row writes from Postgres's
//! `pg_stat_user_tables`, stored messages from each stream's last sequence. A change that adds a
//! statement, a write or a publish to a build's path fails here and has to say why (and move
//! the budget here and in docs/benchmarks.md, "The per-build cost budget").
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::metrics::{JETSTREAM_ACKS_AWAITED, SQL_STATEMENTS};
use freeagent_tests::freeagent_shared::subjects;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::{Farm, FarmOpts, example};
use std::collections::BTreeMap;
use std::time::Duration;

/// Statements a build's life may send, all services together.
const STATEMENTS: u64 = 14;
/// Rows a build's life may insert, update or delete, all tables together (trigger writes too).
const ROW_WRITES: i64 = 12;
/// Messages a build's life may store in JetStream, all streams together.
const STORED_MESSAGES: u64 = 15;
/// JetStream acknowledgements the farm may wait for on a build's path.
const ACKS_AWAITED: u64 = 9;

/// Statements that cost per second or per key, not per build: the log archiver's poll (every
/// second, whatever builds there are) and an API key's look-up (cached for 5 s per key). They
/// are shown beside the budget, not in it.
const NOT_PER_BUILD: &[&str] = &["builds/logs_archive_lease", "api_keys/find"];

#[derive(Debug, Default, Clone, PartialEq)]
struct Costs {
    statements: BTreeMap<String, u64>,
    acks: BTreeMap<String, u64>,
    /// Per table: inserts, updates, deletes, of which HOT updates.
    rows: BTreeMap<String, [i64; 4]>,
    /// Per stream: its last sequence.
    stored: BTreeMap<String, u64>,
}

impl Costs {
    async fn read(farm: &Farm) -> Costs {
        let mut c = Costs::default();
        for base in [&farm.gateway, &farm.scheduler, &farm.storage] {
            let text = farm.metrics(base).await.unwrap_or_default();
            add_series(&mut c.statements, &text, SQL_STATEMENTS, "statement");
            add_series(&mut c.acks, &text, JETSTREAM_ACKS_AWAITED, "stream");
        }
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd \
             FROM pg_stat_user_tables",
        )
        .fetch_all(&farm.db.pool)
        .await
        .unwrap();
        for (table, ins, upd, del, hot) in rows {
            c.rows.insert(table, [ins, upd, del, hot]);
        }
        let js = async_nats::jetstream::new(farm.service_nats().await);
        for name in [
            subjects::BUILDS_STREAM,
            subjects::LOGS_STREAM,
            subjects::EVENTS_STREAM,
        ] {
            let mut s = js.get_stream(name).await.unwrap();
            let last = s.info().await.unwrap().state.last_sequence;
            c.stored.insert(name.to_owned(), last);
        }
        c
    }

    /// Once every count is in and nothing moves any more. A Postgres backend publishes its
    /// table counts when it is idle for a second or when it exits, so the farm's connections
    /// are closed (the pools open new ones on their next use) and their counts read after.
    async fn settled(farm: &Farm) -> Costs {
        let mut last: Option<Costs> = None;
        for _ in 0..30 {
            flush_backends(farm).await;
            let now = Costs::read(farm).await;
            if last.as_ref().map(Costs::without_polling) == Some(now.without_polling()) {
                return now;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("the farm's counters did not settle: {last:#?}");
    }

    fn without_polling(&self) -> Costs {
        let mut c = self.clone();
        c.statements
            .retain(|k, _| !NOT_PER_BUILD.contains(&k.as_str()));
        c
    }

    /// What happened between `before` and `self`.
    fn since(&self, before: &Costs) -> Costs {
        fn diff<V: Copy + std::ops::Sub<Output = V> + Default + PartialEq>(
            now: &BTreeMap<String, V>,
            then: &BTreeMap<String, V>,
        ) -> BTreeMap<String, V> {
            now.iter()
                .map(|(k, v)| (k.clone(), *v - then.get(k).copied().unwrap_or_default()))
                .filter(|(_, v)| *v != V::default())
                .collect()
        }
        let rows = self
            .rows
            .iter()
            .map(|(k, v)| {
                let b = before.rows.get(k).copied().unwrap_or_default();
                (
                    k.clone(),
                    [v[0] - b[0], v[1] - b[1], v[2] - b[2], v[3] - b[3]],
                )
            })
            .filter(|(_, v)| v.iter().any(|n| *n != 0))
            .collect();
        Costs {
            statements: diff(&self.statements, &before.statements),
            acks: diff(&self.acks, &before.acks),
            rows,
            stored: diff(&self.stored, &before.stored),
        }
    }

    fn print(&self) {
        println!("statements (all services):");
        for (k, v) in &self.statements {
            let note = if NOT_PER_BUILD.contains(&k.as_str()) {
                "  (per second or per key: not in the budget)"
            } else {
                ""
            };
            println!("  {v:>3}  {k}{note}");
        }
        println!("row writes (inserts, updates, deletes; HOT updates):");
        for (k, [i, u, d, h]) in &self.rows {
            println!("  {i:>3} {u:>3} {d:>3}  ({h} HOT)  {k}");
        }
        println!("JetStream messages stored: {:?}", self.stored);
        println!("JetStream acks awaited: {:?}", self.acks);
    }

    fn statement_total(&self) -> u64 {
        self.without_polling().statements.values().sum()
    }
    fn row_writes(&self) -> i64 {
        self.rows.values().map(|[i, u, d, _]| i + u + d).sum()
    }
}

/// Ends the farm's database sessions and waits until they are gone (a backend's counts are
/// published as it exits).
async fn flush_backends(farm: &Farm) {
    // One session asks, so it is not among those it ends.
    let mut conn = farm.db.pool.acquire().await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(&pids)
        .execute(&mut *conn)
        .await
        .unwrap();
    wait::until(
        "the farm's sessions to end",
        Duration::from_secs(10),
        || async {
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                    .bind(&pids)
                    .fetch_one(&farm.db.pool)
                    .await
                    .unwrap();
            (left == 0).then_some(())
        },
    )
    .await;
}

/// Adds every `name{label="x"} n` of `text` into `into[x]`.
fn add_series(into: &mut BTreeMap<String, u64>, text: &str, name: &str, label: &str) {
    let prefix = format!("{name}{{");
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let needle = format!("{label}=\"");
        let Some(at) = series.find(&needle) else {
            continue;
        };
        let rest = &series[at + needle.len()..];
        let key = rest.split('"').next().unwrap_or_default().to_owned();
        let n = value.parse::<f64>().unwrap_or(0.0) as u64;
        *into.entry(key).or_default() += n;
    }
}

/// Submits a build and waits for its log's archive. Waits by reading Postgres directly, so the
/// count holds only the farm's own statements (a client polling the API pays for its reads).
async fn one_build(farm: &Farm) {
    let b = farm.submit_dir(&example("hello"), "android").await;
    let id: uuid::Uuid = b["id"].as_str().unwrap().parse().unwrap();
    wait::until(
        "the build to finish and its log to be archived",
        Duration::from_secs(60),
        || async {
            let row: Option<(String, bool)> = sqlx::query_as(
                "SELECT status::text, logs_archived_at IS NOT NULL FROM builds WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&farm.db.pool)
            .await
            .unwrap();
            let (status, archived) = row?;
            assert!(
                ["pending", "assigned", "building", "completed"].contains(&status.as_str()),
                "{status}"
            );
            (status == "completed" && archived).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_builds_life_stays_within_its_budget() {
    let quiet = [
        // Nothing on a timer during the count but the archiver's poll (shown, not counted).
        ("FREEAGENT_SCHEDULER_TICK", "1h"),
        ("FREEAGENT_PRESENCE_INTERVAL", "1h"),
        ("FREEAGENT_RETENTION_INTERVAL", "1h"),
    ];
    let farm = Farm::start(FarmOpts {
        // Heartbeats every lease / 3: none while a no-op build runs.
        lease: "10m",
        extra_env: quiet
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    })
    .await;
    // The first build pays for what is done once (a key's first use, a queue's first dispatch).
    one_build(&farm).await;
    let before = Costs::settled(&farm).await;
    one_build(&farm).await;
    let cost = Costs::settled(&farm).await.since(&before);
    cost.print();

    let stored: u64 = cost.stored.values().sum();
    let acks: u64 = cost.acks.values().sum();
    println!(
        "one build: {} statements (budget {STATEMENTS}), {} row writes ({ROW_WRITES}), \
         {stored} JetStream messages stored ({STORED_MESSAGES}), {acks} acks awaited ({ACKS_AWAITED})",
        cost.statement_total(),
        cost.row_writes(),
    );
    assert!(
        cost.statement_total() <= STATEMENTS,
        "statements over budget"
    );
    assert!(cost.row_writes() <= ROW_WRITES, "row writes over budget");
    assert!(stored <= STORED_MESSAGES, "JetStream messages over budget");
    assert!(acks <= ACKS_AWAITED, "awaited acks over budget");
}
