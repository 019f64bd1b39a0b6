//! Live logs against the real binaries: `freeagent logs -f` prints a running build's log as it
//! grows, survives a gateway restart mid-stream by resuming with `Last-Event-ID`, exits with
//! the build's outcome, and what it printed equals the archived log byte for byte; a finished
//! build's log is read from its archive once the LOGS stream forgot it; followers before,
//! during and after a build see the same log; and each gateway caps its open streams and counts
//! them on `/metrics`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::sse::{SseEvent, SseReader};
use freeagent_tests::{API_KEY, Farm, FarmOpts, bin_dir, metric_value, project};
use std::process::Stdio;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_resumes_across_a_gateway_restart_and_exits_with_the_outcome() {
    let mut farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    let script = "for i in $(seq 1 30); do echo \"line $i\"; sleep 0.2; done\n\
                  echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n";
    let dir = project(script);
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cli = tokio::process::Command::new(bin_dir().join("freeagent"))
        .args(["logs", "-f", &id])
        .env_clear()
        .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
        .env("FREEAGENT_API_KEY", API_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Mid-build, the gateway goes away and comes back on the same port.
    until_it_printed_5_lines(&farm, &id).await;
    farm.restart("gateway");
    let out = tokio::time::timeout(Duration::from_secs(120), cli.wait_with_output())
        .await
        .expect("logs -f ends with the build")
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // What -f printed is the archived log, byte for byte: every line, once, in order.
    farm.wait_archived(&id).await;
    let archived = farm.log_text(&id).await;
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(printed, archived, "what -f printed is the whole log, once");
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.contains("] line ")).count(), 30);
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with("Build completed successfully")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_log_streams_are_capped_per_gateway() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![("FREEAGENT_MAX_LOG_FOLLOWERS".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let dir = project("true\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/api/builds/{id}/logs?follow=true", farm.gateway);
    // The build never runs (no worker): this stream stays open.
    let first = farm
        .http
        .get(&url)
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = farm
        .http
        .get(&url)
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    let body: serde_json::Value = second.json().await.unwrap();
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("FREEAGENT_MAX_LOG_FOLLOWERS"),
        "{body}"
    );
    // The paged route is not limited by it.
    let page = farm
        .http
        .get(format!("{}/api/builds/{id}/logs", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    // Operators see the open streams; one that leaves is counted out.
    let open_streams = || async {
        let metrics = farm.metrics(&farm.gateway).await?;
        freeagent_tests::metric_value(&metrics, "freeagent_live_clients{kind=\"log\"}")
    };
    assert_eq!(open_streams().await, Some(1.0));
    drop(first);
    freeagent_tests::freeagent_shared::testing::wait::until(
        "the left stream to be counted out",
        // Noticed at the latest at the next keep-alive (15 s) written to the closed socket.
        Duration::from_secs(40),
        || async { (open_streams().await == Some(0.0)).then_some(()) },
    )
    .await;
}

/// Follows `id`'s log over SSE (from after `last_event_id`) until `end`.
async fn follow(farm: &Farm, id: &str, last_event_id: Option<u64>) -> Vec<SseEvent> {
    let mut req = farm
        .http
        .get(format!("{}/api/builds/{id}/logs", farm.gateway))
        .header("x-api-key", API_KEY)
        .header("accept", "text/event-stream");
    if let Some(n) = last_event_id {
        req = req.header("last-event-id", n.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    let mut out = Vec::new();
    while let Some(e) = reader.next(Duration::from_secs(90)).await {
        let end = e.event == "end";
        out.push(e);
        if end {
            return out;
        }
    }
    panic!("the stream ended without `end`: {out:?}");
}

/// The (id, message) of each log event.
fn lines(events: &[SseEvent]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| {
            (
                e.id.expect("a log event has an id"),
                e.data["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_before_during_and_after_see_one_log_and_the_archive_outlives_the_stream() {
    let farm = std::sync::Arc::new(
        Farm::start(FarmOpts {
            workers: 1,
            ..Default::default()
        })
        .await,
    );
    let script = "for i in $(seq 1 20); do echo \"line $i\"; sleep 0.15; done\n\
                  echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n";
    let dir = project(script);
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let early = tokio::spawn({
        let (farm, id) = (farm.clone(), id.clone());
        async move { follow(&farm, &id, None).await }
    });
    until_it_printed_5_lines(&farm, &id).await;
    let halfway = follow(&farm, &id, None).await;
    let early = early.await.unwrap();
    let seen = lines(&early);
    let messages: Vec<&str> = seen.iter().map(|(_, m)| m.as_str()).collect();
    let worker_lines: Vec<String> = (1..=20).map(|i| format!("line {i}")).collect();
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.starts_with("line "))
            .copied()
            .collect::<Vec<_>>(),
        worker_lines,
        "every line, in order, once"
    );
    assert_eq!(messages.first(), Some(&"Build submitted"));
    assert_eq!(messages.last(), Some(&"Build completed successfully"));
    assert_eq!(lines(&halfway), seen, "started halfway: the same full log");
    let statuses: Vec<&str> = early
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| e.data["status"].as_str().unwrap_or_default())
        .collect();
    assert!(
        statuses.ends_with(&["building", "completed"]),
        "{statuses:?}"
    );
    assert_eq!(early.last().unwrap().data["status"], "completed");

    // Dropped after line N: Last-Event-ID N gives N+1.. exactly.
    let resumed = follow(&farm, &id, Some(seen[4].0)).await;
    assert_eq!(lines(&resumed), seen[5..].to_vec());

    // The stream forgets the build; the archive still has all of it.
    farm.wait_archived(&id).await;
    let metrics = farm.metrics(&farm.gateway).await.unwrap_or_default();
    assert_eq!(
        metric_value(
            &metrics,
            "freeagent_log_archive_write_seconds_count{source=\"memory\"}"
        ),
        Some(1.0),
        "the gateway followed the whole build, so it wrote the archive from memory: {metrics}"
    );
    let text_before = farm.log_text(&id).await;
    let nats = farm.service_nats().await;
    let js = async_nats::jetstream::new(nats);
    let mut logs = js.get_stream("LOGS").await.unwrap();
    logs.purge().filter(format!("logs.{id}.*")).await.unwrap();
    let left = logs.info().await.unwrap().state.messages;
    assert_eq!(
        left, 0,
        "the LOGS stream holds nothing of this build any more"
    );
    assert_eq!(
        farm.all_logs(&id).await,
        messages.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "pages come from the archive"
    );
    assert_eq!(
        lines(&follow(&farm, &id, None).await),
        seen,
        "so does the live stream"
    );
    assert_eq!(
        lines(&follow(&farm, &id, Some(seen[4].0)).await),
        seen[5..].to_vec(),
        "and its resume"
    );
    assert_eq!(
        farm.log_text(&id).await,
        text_before,
        "and the text download"
    );
}

/// The live feed is a subscription to what LOGS re-publishes, with the stream sequence and the
/// original subject in headers the server appends. A line on LOGS may carry headers of the same
/// names (workers no longer publish there: the scheduler's log gate stores their lines without
/// their headers; this keeps the reader's own defence tested, with a line published as a
/// worker's by a farm connection); the attack: a forged huge `Nats-Sequence` (so the feed would skip every
/// later line) and a forged `Nats-Subject` naming another build's farm subject (so its line
/// would pass as the farm's, in a build it does not hold). Neither works: the follower gets the
/// next genuine line live and never the forged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_forge_the_live_feeds_sequence_or_subject() {
    use freeagent_tests::freeagent_shared::ids::BuildId;
    use freeagent_tests::freeagent_shared::testing::factory::farm_line;
    use freeagent_tests::freeagent_shared::{subjects, wire};
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let dir = project("true\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let build: BuildId = id.parse().unwrap();
    let resp = farm
        .http
        .get(format!("{}/api/builds/{id}/logs?follow=true", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    // The past first: `Build submitted`.
    loop {
        let e = reader.next(Duration::from_secs(30)).await.expect("events");
        if e.event == "log" {
            assert_eq!(e.data["message"], "Build submitted");
            break;
        }
    }

    let rogue = farm.register_worker("rogue", &["android"]).await;
    let rogue_nats = farm.service_nats().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Sequence", "18446744073709551000");
    headers.insert("Nats-Subject", subjects::farm_logs(build).as_str());
    headers.insert("Nats-Stream", "LOGS");
    let forged = farm_line(build, 1, "forged by a worker".into());
    rogue_nats
        .publish_with_headers(
            subjects::logs(build, rogue.worker_id),
            headers,
            wire::encode(&forged).into(),
        )
        .await
        .unwrap();
    rogue_nats.flush().await.unwrap();

    // Then a genuine farm line: it arrives live (the feed did not jump past it), and the forged
    // one never does.
    let nats = farm.service_nats().await;
    let genuine = farm_line(build, 2, "genuine, after the forgery".into());
    nats.publish(subjects::farm_logs(build), wire::encode(&genuine).into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    loop {
        let e = reader
            .next(Duration::from_secs(30))
            .await
            .expect("the genuine line arrives");
        if e.event != "log" {
            continue;
        }
        assert_ne!(e.data["message"], "forged by a worker", "{e:?}");
        if e.data["message"] == "genuine, after the forgery" {
            break;
        }
    }
    // And the feed stayed live for later lines too (not caught by a one-second refill only).
    let started = std::time::Instant::now();
    let later = farm_line(build, 3, "later".into());
    nats.publish(subjects::farm_logs(build), wire::encode(&later).into())
        .await
        .unwrap();
    let e = loop {
        let e = reader.next(Duration::from_secs(30)).await.expect("later");
        if e.event == "log" {
            break e;
        }
    };
    assert_eq!(e.data["message"], "later");
    eprintln!("a later line arrived after {:?}", started.elapsed());
}

/// Waits until build `id` has printed 5 of its `line N` lines: it is running, midway.
async fn until_it_printed_5_lines(farm: &Farm, id: &str) {
    freeagent_tests::freeagent_shared::testing::wait::until(
        "the build to print some lines",
        Duration::from_secs(60),
        || async {
            (farm
                .all_logs(id)
                .await
                .iter()
                .filter(|l| l.starts_with("line "))
                .count()
                >= 5)
                .then_some(())
        },
    )
    .await;
}
