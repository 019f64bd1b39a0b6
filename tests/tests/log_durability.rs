//! No log line is ever lost: the gateway stopped (SIGTERM) or killed (SIGKILL) at several points
//! of a build's life — mid-run, while the build ends, while its log is being archived — and a
//! worker killed mid-run (its build completes as attempt 2). After the restart, the final log
//! is compared line for line with what the build printed, through every reading: pages, the
//! seed's whole-log reading, and the text download. A burst keeps its last lines, and every
//! line while the spool can catch up.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::db;
use freeagent_tests::freeagent_shared::ids::BuildId;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::{API_KEY, Farm, FarmOpts, metric_value, project};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::Duration;

const LINES: usize = 40;

/// A build printing `LINES` numbered lines, 0.1 s apart.
fn numbered_build() -> tempfile::TempDir {
    project(&format!(
        "for i in $(seq 1 {LINES}); do echo \"line $i\"; sleep 0.1; done\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n"
    ))
}

async fn start() -> (Farm, String) {
    let farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    let dir = numbered_build();
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (farm, id)
}

/// Waits until the build printed `line n` (read from the stream by the gateway).
async fn until_printed(farm: &Farm, id: &str, n: usize) {
    let want = format!("line {n}");
    wait::until(&want.clone(), Duration::from_secs(60), || async {
        farm.all_logs(id).await.contains(&want).then_some(())
    })
    .await;
}

/// The log of a build once it has completed and its log is archived.
async fn completed_log(farm: &Farm, id: &str) -> Vec<String> {
    let b = farm.wait_terminal(id, Duration::from_secs(120)).await;
    assert_eq!(b["status"], "completed", "{b}");
    farm.wait_archived(id).await;
    farm.all_logs(id).await
}

/// Waits for the build to end, asking the database (the gateway may be down).
async fn until_ended(farm: &Farm, id: &str) {
    let id: BuildId = id.parse().unwrap();
    wait::until("the build to end", Duration::from_secs(60), || async {
        let b = db::builds::build_get(&farm.db.pool, id).await.ok()??;
        b.status.is_terminal().then_some(())
    })
    .await;
}

async fn ready(farm: &Farm) {
    let url = format!("{}/readyz", farm.gateway);
    wait::until("the gateway to be ready", Duration::from_secs(30), || {
        let (http, url) = (farm.http.clone(), url.clone());
        async move {
            http.get(&url)
                .send()
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        }
    })
    .await;
}

/// The finished build's log is whole in every reading, once archived.
async fn assert_whole(farm: &Farm, id: &str, seen_before: &[String]) {
    let b = farm.wait_terminal(id, Duration::from_secs(120)).await;
    assert_eq!(b["status"], "completed", "{b}");
    farm.wait_archived(id).await;
    let paged = farm.all_logs(id).await;
    let printed: Vec<String> = paged
        .iter()
        .filter(|l| l.starts_with("line "))
        .cloned()
        .collect();
    let expected: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(
        printed, expected,
        "every line the build printed, once, in order"
    );
    assert_eq!(
        paged.first().map(String::as_str),
        Some("Build submitted"),
        "{paged:?}"
    );
    assert_eq!(
        paged.last().map(String::as_str),
        Some("Build completed successfully"),
        "{paged:?}"
    );
    // What a reader saw before the restart is still there, in the same order.
    let kept: Vec<&String> = paged.iter().filter(|l| seen_before.contains(l)).collect();
    assert_eq!(
        kept.len(),
        seen_before.len(),
        "a restart never shortens a log: {seen_before:?} vs {paged:?}"
    );
    // `Farm::logs` reads as the seed does: no `after`, no `limit`, the whole log.
    assert_eq!(farm.logs(id).await, paged, "the seed's whole-log reading");
    let text = farm.log_text(id).await;
    assert_eq!(
        text.lines().count(),
        paged.len(),
        "the text download: {text}"
    );
}

/// Where in a build's life the gateway (or NATS) goes away.
#[derive(Clone, Copy)]
enum Point {
    /// Mid-run; it comes back at once.
    MidRun,
    /// Near the end, staying down until the build has ended: the end and the last lines are
    /// written meanwhile.
    WhileEnding,
    /// Just as the build ended, while its log settles and is archived.
    WhileArchiving,
}

/// Stops (SIGTERM) and then kills (SIGKILL) the gateway at `point` of a build, restarts it, and
/// checks the log is whole.
async fn gateway_goes_away(point: Point) {
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let (mut farm, id) = start().await;
        match point {
            Point::MidRun => until_printed(&farm, &id, 10).await,
            Point::WhileEnding => until_printed(&farm, &id, LINES - 5).await,
            Point::WhileArchiving => until_ended(&farm, &id).await,
        }
        let seen = farm.all_logs(&id).await;
        farm.signal_and_wait("gateway", signal, Duration::from_secs(30))
            .expect("the gateway exits");
        if let Point::WhileEnding = point {
            until_ended(&farm, &id).await;
        }
        farm.restart("gateway");
        ready(&farm).await;
        assert_whole(&farm, &id, &seen).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_mid_build_loses_no_line() {
    gateway_goes_away(Point::MidRun).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_ending_while_the_gateway_is_down_loses_no_line() {
    gateway_goes_away(Point::WhileEnding).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_while_the_log_is_archived_loses_no_line() {
    gateway_goes_away(Point::WhileArchiving).await;
}

/// Attempt 1's worker is killed mid-run; attempt 2 completes elsewhere. Both attempts' lines
/// are kept, each under its attempt, with the farm's own lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempts_lines_are_kept_under_their_attempt() {
    let mut farm = Farm::start(FarmOpts {
        workers: 1,
        lease: "2s",
        ..Default::default()
    })
    .await;
    let dir = project(
        "for i in $(seq 1 20); do echo \"attempt $FREEAGENT_ATTEMPT line $i\"; done\n\
         if [ \"$FREEAGENT_ATTEMPT\" = 1 ]; then sleep 60; fi\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
    );
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait::until("attempt 1 to print", Duration::from_secs(60), || async {
        farm.all_logs(&id)
            .await
            .iter()
            .any(|l| l == "attempt 1 line 20")
            .then_some(())
    })
    .await;
    let seen = farm.all_logs(&id).await;
    farm.kill("worker-0");
    farm.restart("gateway");
    farm.spawn_worker(1);
    ready(&farm).await;
    let b = farm.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempt"], 2);
    farm.wait_archived(&id).await;
    let metrics = farm.metrics(&farm.gateway).await.unwrap_or_default();
    assert_eq!(
        metric_value(
            &metrics,
            "freeagent_log_archive_write_seconds_count{source=\"stream\"}"
        ),
        Some(1.0),
        "a gateway restarted mid-build lacks the first lines, so it read the stream: {metrics}"
    );
    let page: Value = farm
        .http
        .get(format!(
            "{}/api/builds/{id}/logs?after=0&limit=10000",
            farm.gateway
        ))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lines: Vec<(u64, String)> = page["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["attempt"].as_u64().unwrap(),
                l["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for attempt in [1u64, 2] {
        let of_attempt: Vec<&str> = lines
            .iter()
            .filter(|(a, m)| *a == attempt && m.starts_with("attempt "))
            .map(|(_, m)| m.as_str())
            .collect();
        let expected: Vec<String> = (1..=20)
            .map(|i| format!("attempt {attempt} line {i}"))
            .collect();
        assert_eq!(of_attempt, expected, "attempt {attempt}'s lines: {lines:?}");
    }
    assert_eq!(lines.first().map(|l| l.1.as_str()), Some("Build submitted"));
    let messages: Vec<String> = lines.iter().map(|l| l.1.clone()).collect();
    for l in &seen {
        assert!(messages.contains(l), "{l:?} was seen live and is kept");
    }
}

/// A compiler's burst: 20,000 lines at once. The spool catches up at the rate, so every line is
/// kept; with a spool too small for it (1 s of a 1,000 lines/s rate), the middle gives way and
/// the note says how many and where, but the last 1,000 lines — the error — are always there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_keeps_its_last_lines_and_every_line_the_spool_can_hold() {
    let mut farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    let burst = project(
        "seq 1 20000 | sed 's/^/burst line /'\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
    );
    let id = farm.submit_dir(burst.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let log = farm.all_logs(&id).await;
    let kept: Vec<&String> = log.iter().filter(|l| l.starts_with("burst line")).collect();
    let all: Vec<String> = (1..=20_000).map(|i| format!("burst line {i}")).collect();
    assert_same_lines(&kept, &all, "every line, in order");
    assert!(
        !log.iter().any(|l| l.contains("dropped")),
        "nothing dropped"
    );
    // The seed CLI's `logs` (no `after`, no `limit`) prints the whole of it, not a first page.
    assert_eq!(farm.logs(&id).await, log, "the seed's whole-log reading");

    // A spool too small for the burst: the worker again, with 1 s of spool.
    farm.restart_with(
        "worker-0",
        &[
            ("FREEAGENT_LOG_LINES_PER_SEC", "1000"),
            ("FREEAGENT_LOG_SPOOL_SECS", "1"),
        ],
    );
    let id = farm.submit_dir(burst.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let log = farm.all_logs(&id).await;
    let notes = assert_accounted(&log, 20_000);
    assert!(
        notes >= 1,
        "the spool could not hold the burst: a note says so"
    );
    assert_last_lines_kept(&log, 1000);
}

/// The newest `tail` lines of the attempt's log from the worker (its own closing lines, such as
/// "artifact uploaded", count among them; the farm's "Build …" lines do not) are always kept:
/// no note among them, and the burst lines among them are consecutive and end the burst. Under
/// load the worker's closing line can push the oldest of the burst's last 1,000 out (soak).
fn assert_last_lines_kept(log: &[String], tail: usize) {
    let worker: Vec<&String> = log.iter().filter(|l| !l.starts_with("Build ")).collect();
    let last = &worker[worker.len().saturating_sub(tail)..];
    assert!(
        !last.iter().any(|l| l.contains(" dropped here (")),
        "a note among the last {tail} lines: {:?}",
        last.iter().find(|l| l.contains(" dropped here ("))
    );
    let burst: Vec<u64> = last
        .iter()
        .filter_map(|l| l.strip_prefix("burst line "))
        .map(|k| k.parse().unwrap())
        .collect();
    assert_eq!(burst.last(), Some(&20_000), "the burst's last line is kept");
    let first = burst[0];
    let want: Vec<u64> = (first..=20_000).collect();
    assert_eq!(burst, want, "the burst's last lines, consecutive");
    let others = last.len() - burst.len();
    assert!(
        others <= 5,
        "at most the worker's few closing lines among the last {tail}: {others}"
    );
}

/// Every line of the burst is in the log, in order, or inside the range of a note that stands
/// where it was dropped and counts it (its numbers count the attempt's lines from the worker,
/// its own included; the farm's lines are not among them); returns the number of notes.
fn assert_accounted(log: &[String], lines: u64) -> usize {
    let (mut n, mut next_burst, mut notes) = (0u64, 1u64, 0);
    for l in log {
        if l.starts_with("Build ") {
            continue;
        }
        if l.starts_with("[freeagent] ") && l.contains(" dropped here (") {
            let count: u64 = l["[freeagent] ".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|_| panic!("{l}"));
            let range = l.split("dropped here (").nth(1).unwrap();
            let range = range.split(')').next().unwrap();
            let (first, last) = match range.strip_prefix("lines ") {
                Some(r) => {
                    let (a, b) = r.split_once(" to ").unwrap();
                    (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap())
                }
                None => {
                    let a: u64 = range.strip_prefix("line ").unwrap().parse().unwrap();
                    (a, a)
                }
            };
            assert_eq!(
                first,
                n + 1,
                "the note {l:?} starts where the lines stopped"
            );
            assert_eq!(last - first + 1, count, "{l:?}");
            assert!(l.contains("FREEAGENT_LOG_LINES_PER_SEC"), "{l}");
            n = last;
            next_burst += count;
            notes += 1;
            continue;
        }
        n += 1;
        if let Some(k) = l.strip_prefix("burst line ") {
            assert_eq!(
                k.parse::<u64>().unwrap(),
                next_burst,
                "out of order at {l:?}"
            );
            next_burst += 1;
        }
    }
    assert_eq!(next_burst, lines + 1, "every line is accounted for");
    notes
}

/// Compares two runs of lines and names the first difference (a 20,000-line dump helps no one).
fn assert_same_lines(got: &[&String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i).copied() != want.get(i)) {
        panic!(
            "{what}: {} lines, {} expected; first difference at {i}: {:?} instead of {:?}",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

/// NATS freezes, then is killed, while the build prints as fast as the log rate allows:
/// hundreds of lines are in the worker's connection when it dies, and their acks never come. Each is
/// sent again once NATS is back, so the log is whole (before, every line in flight at the kill
/// was lost, "line 11" of the test below once in two suites, and a lost line held the build for
/// its ack's timeout, one after another: with hundreds lost the build never ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_frozen_then_killed_mid_burst_loses_no_line() {
    const BURST: usize = 8_000;
    let farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    // 1,000 lines every half second: the default rate (2,000 a second), never over it.
    let dir = project(&format!(
        "for k in $(seq 0 {chunks}); do seq $((k*1000+1)) $((k*1000+1000)) | sed 's/^/line /'; sleep 0.5; done\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
        chunks = BURST / 1000 - 1
    ));
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    until_printed(&farm, &id, 1500).await;
    // Frozen first, so the worker's lines pile up in a connection the server never reads; then
    // killed with them.
    let pid = nix::unistd::Pid::from_raw(farm.nats.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    farm.nats.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    farm.nats.restart().await;
    let paged = completed_log(&farm, &id).await;
    let printed: Vec<&String> = paged.iter().filter(|l| l.starts_with("line ")).collect();
    // Every line, and each at most twice (a line the server stored as it froze, whose ack
    // never left it, is sent again). Lines lost with the connection come after the lines that
    // were still on their way, so the order is not asserted here; the slow outage test below
    // keeps it.
    let mut count = std::collections::HashMap::<&str, usize>::new();
    for l in &printed {
        *count.entry(l.as_str()).or_default() += 1;
    }
    let missing: Vec<usize> = (1..=BURST)
        .filter(|i| !count.contains_key(format!("line {i}").as_str()))
        .collect();
    assert!(missing.is_empty(), "lines lost: {missing:?}");
    assert_eq!(count.len(), BURST, "only the lines the build printed");
    let twice = count.values().filter(|&&n| n == 2).count();
    assert!(count.values().all(|&n| n <= 2), "a line stored three times");
    eprintln!("{} lines, {twice} of them twice", printed.len());
}

/// NATS goes away (stopped, then back after the gateway noticed and longer than a publish waits
/// for its ack) at `point` of a build that prints a line every 0.1 s; the final log is every
/// line the build printed, once, in order.
async fn nats_goes_away(point: Point) {
    let farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    let dir = project(&format!(
        "for i in $(seq 1 {n}); do echo \"line $i\"; sleep 0.1; done\n\
         echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n",
        n = 4 * LINES
    ));
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    match point {
        Point::MidRun => until_printed(&farm, &id, 10).await,
        // Half a second of lines left: the build ends, and its last lines and outcome are
        // written, while NATS is away.
        Point::WhileEnding => until_printed(&farm, &id, 4 * LINES - 5).await,
        Point::WhileArchiving => until_ended(&farm, &id).await,
    }
    let seen = farm.all_logs(&id).await;
    farm.nats.stop();
    // The outage lasts until the gateway has noticed it (a second or more of the build's lines).
    wait::until(
        "the gateway to miss NATS",
        Duration::from_secs(30),
        || async {
            let r = farm
                .http
                .get(format!("{}/readyz", farm.gateway))
                .send()
                .await
                .ok()?;
            (r.status() == 503).then_some(())
        },
    )
    .await;
    // And then longer than a JetStream publish waits for its ack (the scenario's length, not a
    // wait for a condition).
    tokio::time::sleep(Duration::from_secs(8)).await;
    farm.nats.restart().await;
    let paged = completed_log(&farm, &id).await;
    let printed: Vec<&String> = paged.iter().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=4 * LINES).map(|i| format!("line {i}")).collect();
    assert_same_lines(
        &printed,
        &expected,
        "every line the build printed, once, in order",
    );
    for l in &seen {
        assert!(paged.contains(l), "{l:?} was seen before the outage");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_mid_build_loses_no_line() {
    nats_goes_away(Point::MidRun).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_ending_during_a_nats_outage_loses_no_line() {
    nats_goes_away(Point::WhileEnding).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_while_the_log_is_archived_loses_no_line() {
    nats_goes_away(Point::WhileArchiving).await;
}
