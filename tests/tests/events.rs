//! `GET /api/events` against the real binaries: one stream carries a build's whole life and a
//! worker's status changes, in order; filters keep to one build or queue; `Last-Event-ID`
//! resumes with nothing missed or repeated.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::sse::{SseEvent, SseReader};
use freeagent_tests::{API_KEY, Farm, FarmOpts, project};
use std::time::Duration;

async fn open(farm: &Farm, query: &str, last_event_id: Option<u64>) -> SseReader {
    let mut req = farm
        .http
        .get(format!("{}/api/events{query}", farm.gateway))
        .header("x-api-key", API_KEY);
    if let Some(n) = last_event_id {
        req = req.header("last-event-id", n.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    SseReader::new(resp)
}

/// Reads events until `done` holds for what was read.
async fn read_until(r: &mut SseReader, done: impl Fn(&[SseEvent]) -> bool) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while !done(&out) {
        match r.next(Duration::from_secs(90)).await {
            Some(e) => out.push(e),
            None => panic!("the event stream stopped early: {out:#?}"),
        }
    }
    out
}

fn field<'a>(e: &'a SseEvent, name: &str) -> &'a str {
    e.data[name].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_a_builds_life_and_a_workers_changes_in_order_and_resume_exactly() {
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![("FREEAGENT_PRESENCE_INTERVAL".into(), "200ms".into())],
        ..Default::default()
    })
    .await;
    let mut all = open(&farm, "", None).await;
    let mut ios = open(&farm, "?queue=ios", None).await;
    farm.spawn_worker(0);
    let dir = project("sleep 2\necho built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let build_done = |es: &[SseEvent]| {
        es.iter()
            .any(|e| e.event == "build" && field(e, "event") == "completed")
    };
    // The worker reports presence every 200 ms: after the build it is idle again.
    let seen = read_until(&mut all, |es| {
        build_done(es)
            && es
                .iter()
                .skip_while(|e| !(e.event == "worker" && field(e, "event") == "building"))
                .any(|e| e.event == "worker" && field(e, "event") == "idle")
    })
    .await;
    let builds: Vec<&SseEvent> = seen.iter().filter(|e| e.event == "build").collect();
    assert!(builds.iter().all(|e| field(e, "build_id") == id));
    assert_eq!(
        builds.iter().map(|e| field(e, "event")).collect::<Vec<_>>(),
        ["submitted", "assigned", "building", "completed"],
        "{seen:#?}"
    );
    assert_eq!(field(builds[0], "queue"), "android");
    let worker_id = field(builds[1], "worker_id").to_owned();
    assert!(!worker_id.is_empty(), "assigned names the worker");
    let ids: Vec<u64> = seen
        .iter()
        .map(|e| e.id.expect("every event has an id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

    // An operator drains the worker.
    let drained = farm
        .http
        .post(format!("{}/api/workers/{worker_id}/drain", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(drained.status(), 200);
    let more = read_until(&mut all, |es| {
        es.iter()
            .any(|e| e.event == "worker" && field(e, "event") == "draining")
    })
    .await;
    let worker_changes: Vec<&str> = seen
        .iter()
        .chain(&more)
        .filter(|e| e.event == "worker")
        .inspect(|e| assert_eq!(field(e, "worker_id"), worker_id))
        .map(|e| field(e, "event"))
        .collect();
    assert_eq!(
        worker_changes.first(),
        Some(&"registered"),
        "{worker_changes:?}"
    );
    assert_eq!(
        worker_changes.last(),
        Some(&"draining"),
        "{worker_changes:?}"
    );
    let pos = |what: &str| worker_changes.iter().position(|c| *c == what).unwrap();
    assert!(pos("registered") < pos("building") && pos("building") < pos("idle"));

    // Resumed after the first build event, filtered to the build: exactly the rest.
    let mut resumed = open(&farm, &format!("?build_id={id}"), builds[0].id).await;
    let rest = read_until(&mut resumed, |es| es.len() == 3).await;
    assert_eq!(
        rest,
        builds[1..].iter().map(|e| (*e).clone()).collect::<Vec<_>>()
    );
    assert!(
        resumed.next(Duration::from_millis(500)).await.is_none(),
        "nothing more, nothing twice"
    );
    // The ios-queue stream saw none of it.
    assert!(ios.next(Duration::from_millis(500)).await.is_none());

    // Bad filters are the client's mistake.
    for q in ["?build_id=nope", "?queue=Not%20A%20Queue", "?after=x"] {
        let r = farm
            .http
            .get(format!("{}/api/events{q}", farm.gateway))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
    }
    let anonymous = farm
        .http
        .get(format!("{}/api/events", farm.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Reads until the stream ends; the events it sent on the way (keep-alives left out).
async fn read_to_end(r: &mut SseReader) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(e) = r.next(Duration::from_secs(60)).await {
        if e.event != "keepalive" {
            out.push(e);
        }
    }
    out
}

/// A gateway told to stop (SIGTERM) ends its live streams at once, each with an `error` event
/// saying why, so clients reconnect (to another gateway, or this one restarted) instead of
/// holding the shutdown open until its grace runs out (30 s) and losing the connection unsaid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_closes_its_live_streams_at_once_and_says_why() {
    let mut farm = Farm::start(FarmOpts {
        workers: 1,
        ..Default::default()
    })
    .await;
    let dir = project("echo started\nexec sleep 600\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut events = open(&farm, "", Some(0)).await;
    read_until(&mut events, |seen| {
        seen.iter()
            .any(|e| field(e, "build_id") == id && field(e, "event") == "building")
    })
    .await;
    let resp = farm
        .http
        .get(format!("{}/api/builds/{id}/logs?follow=true", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut log = SseReader::new(resp);
    loop {
        let e = log.next(Duration::from_secs(60)).await.expect("the log");
        if e.event == "log" && field(&e, "message") == "started" {
            break;
        }
    }

    let pid = nix::unistd::Pid::from_raw(farm.pid("gateway").unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    for (name, stream) in [("events", &mut events), ("log", &mut log)] {
        let rest = read_to_end(stream).await;
        let last = rest.last().unwrap_or_else(|| panic!("{name}: no event"));
        assert_eq!(last.event, "error", "{name}: {rest:#?}");
        assert!(
            field(last, "error").contains("shutting down"),
            "{name}: {last:?}"
        );
    }
    // With its streams closed, it stops well inside its grace.
    let status = farm
        .signal_and_wait(
            "gateway",
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(20),
        )
        .expect("the gateway exits once its streams are closed");
    assert!(status.success(), "{status}");
}
