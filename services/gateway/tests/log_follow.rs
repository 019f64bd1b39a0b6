//! `GET /api/builds/:id/logs` as server-sent events: a follower started before the build sees
//! every line in order, the status changes and `end`; one that reconnects with `Last-Event-ID`
//! gets exactly the lines after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use support::Farm;

use freeagent_shared::testing::sse::{SseEvent as Sse, parse_all as parse};

/// Follows `id`'s log until the stream ends.
async fn follow(farm: &Farm, id: &str, last_event_id: Option<u64>) -> Vec<Sse> {
    let mut req = farm
        .req(Method::GET, &format!("/api/builds/{id}/logs"), &farm.key())
        .header("accept", "text/event-stream");
    if let Some(n) = last_event_id {
        req = req.header("last-event-id", n.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the stream ends once the build is terminal")
        .unwrap();
    parse(&text)
}

fn messages(events: &[Sse]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.data["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A build followed from before it runs: a worker claims it, writes `step 1`..`step 5` and
/// completes it. Returns the build id and what the follower got, which holds every line in
/// order, once each, from `Build submitted` to `Build completed successfully`, then `end`.
async fn a_followed_build(farm: &std::sync::Arc<Farm>) -> (String, Vec<Sse>) {
    let w = farm.register("live", &["android"]).await;
    let b = farm.submit("android").await;
    let early = tokio::spawn({
        let (farm, id) = (farm.clone(), b.id.clone());
        async move { follow(&farm, &id, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let auth = w.auth();
    farm.claim(&auth, &b.id).await;
    let lines: Vec<String> = (1..=5).map(|i| format!("step {i}")).collect();
    for l in &lines {
        let r = farm
            .post(
                &format!("/api/builds/{}/logs", b.id),
                &auth,
                json!({"level": "info", "message": l}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = farm.upload(&auth, &b.id, true, b"app".to_vec()).await;
    assert_eq!(r.status, 200, "{r}");
    let events = early.await.unwrap();
    let msgs = messages(&events);
    assert_eq!(
        msgs.first().map(String::as_str),
        Some("Build submitted"),
        "{msgs:?}"
    );
    assert_eq!(
        msgs.last().map(String::as_str),
        Some("Build completed successfully"),
        "{msgs:?}"
    );
    let worker_lines: Vec<&String> = msgs.iter().filter(|m| m.starts_with("step ")).collect();
    assert_eq!(
        worker_lines,
        lines.iter().collect::<Vec<_>>(),
        "in order, once each"
    );
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("end"));
    (b.id, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_every_line_the_status_changes_and_the_end_and_resumes_exactly() {
    let farm = std::sync::Arc::new(Farm::start().await);
    let (id, events) = a_followed_build(&farm).await;
    let msgs = messages(&events);
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| e.data["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses.last(), Some(&"completed"), "{statuses:?}");
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("end"));

    // A follower started after the end sees the same full log.
    let late = follow(&farm, &id, None).await;
    assert_eq!(messages(&late), msgs);

    // Dropped after the third line: reconnecting with Last-Event-ID gets the rest, exactly.
    let ids: Vec<u64> = events
        .iter()
        .filter_map(|e| (e.event == "log").then_some(e.id))
        .flatten()
        .collect();
    assert_eq!(ids.len(), msgs.len(), "every line has an id");
    let resumed = follow(&farm, &id, Some(ids[2])).await;
    assert_eq!(messages(&resumed), msgs[3..].to_vec());
}

/// A status change the feed never carried (here the row changes under the farm, as if its event
/// were lost) still reaches every follower: the gateway reads its followed builds' statuses every
/// few seconds, in one query for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_whose_event_was_lost_still_reaches_followers() {
    use futures::StreamExt;
    let farm = Farm::start().await;
    let b = farm.submit("android").await;
    /// Reads `stream` into `text` until an event `wanted` accepts has come.
    async fn read_until(
        stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
        text: &mut String,
        wanted: impl Fn(&Sse) -> bool,
    ) -> bool {
        let read = async {
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                if parse(text).iter().any(&wanted) {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .unwrap_or(false)
    }
    // Both followers have read the build (their first status) before the row changes.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let resp = farm
            .req(
                Method::GET,
                &format!("/api/builds/{}/logs", b.id),
                &farm.key(),
            )
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let mut text = String::new();
        assert!(
            read_until(&mut stream, &mut text, |e| e.event == "status").await,
            "a first status: {text}"
        );
        streams.push((stream, text));
    }
    let id: freeagent_shared::ids::BuildId = b.id.parse().unwrap();
    sqlx::query("UPDATE builds SET status = 'cancelled', completed_at = now() WHERE id = $1")
        .bind(id)
        .execute(&farm.db.pool)
        .await
        .unwrap();
    for (mut stream, mut text) in streams {
        let seen = read_until(&mut stream, &mut text, |e| {
            e.event == "status" && e.data["status"] == "cancelled"
        })
        .await;
        assert!(seen, "the follower heard `cancelled`: {text}");
    }
}

/// A follower that stops reading while its build writes fast is dropped with a reason (its
/// backlog is bounded), and another follower of the same build is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_is_dropped_with_a_reason_and_others_carry_on() {
    use freeagent_shared::ids::BuildId;
    use freeagent_shared::testing::factory::farm_line;
    use freeagent_shared::wire;
    let farm = Farm::start().await;
    let b = farm.submit("android").await;
    let id: BuildId = b.id.parse().unwrap();
    let open = || {
        farm.req(
            Method::GET,
            &format!("/api/builds/{}/logs", b.id),
            &farm.key(),
        )
        .header("accept", "text/event-stream")
        .send()
    };
    // This one is never read until the writing is over.
    let stalled = open().await.unwrap();
    assert_eq!(stalled.status(), 200);
    // This one reads everything as it comes.
    let reader = tokio::spawn({
        let resp = open().await.unwrap();
        async move {
            let mut body = resp.bytes_stream();
            let mut lines = 0usize;
            let mut buf = String::new();
            use futures::StreamExt;
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    if block.contains("event: log") {
                        lines += 1;
                    }
                }
                if lines >= 6001 {
                    return lines;
                }
            }
            lines
        }
    });
    // 6,000 lines of 8 KiB as the farm: more than socket buffers and the follower's backlog
    // (4,096 events) hold together.
    let nats = freeagent_shared::nats::connect(
        &farm.nats.service_settings(0, "scheduler"),
        "writer",
        freeagent_shared::nats::Identity::Settings,
        None,
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(nats);
    let filler = "x".repeat(8 * 1024);
    for n in 1..=6000u64 {
        let line = farm_line(id, n, format!("{n} {filler}"));
        let ack = js
            .publish(
                freeagent_shared::subjects::farm_logs(id),
                wire::encode(&line).into(),
            )
            .await
            .unwrap();
        if n % 500 == 0 {
            ack.await.unwrap();
        }
    }
    let read = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the reading follower keeps up")
        .unwrap();
    assert!(read >= 6001, "the reading follower got every line ({read})");
    let text = tokio::time::timeout(Duration::from_secs(60), stalled.text())
        .await
        .expect("the stalled stream was ended")
        .unwrap();
    let events = parse(&text);
    let last = events.last().unwrap();
    assert_eq!(
        last.event,
        "error",
        "{:?}",
        &events[events.len().saturating_sub(3)..]
    );
    assert!(
        last.data["error"]
            .as_str()
            .unwrap()
            .contains("reads too slowly"),
        "{}",
        last.data
    );
    // What it had queued still reached it, in order: it resumes from its last id.
    let ids: Vec<u64> = events.iter().filter_map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

/// A farm upgraded on NATS 2.9 keeps its LOGS and EVENTS streams, made before they re-published
/// (2.9 refuses to add that to an existing stream): the services still start, the rest of the
/// streams' update applies, and followers still get every line and status, in order, from the
/// feed polling the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_made_without_republish_are_polled_and_followers_miss_nothing() {
    use async_nats::jetstream::stream;
    use freeagent_shared::subjects;
    let nats = freeagent_shared::testing::TestNats::start().await;
    let js = async_nats::jetstream::new(nats.client().await);
    for (name, subject) in [
        (subjects::LOGS_STREAM, subjects::LOGS_SUBJECTS),
        (subjects::EVENTS_STREAM, subjects::EVENTS_SUBJECTS),
    ] {
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let farm = std::sync::Arc::new(Farm::start_on(nats).await);
    let mut logs = js.get_stream(subjects::LOGS_STREAM).await.unwrap();
    let info = logs.info().await.unwrap().clone();
    // 2.9 keeps the old stream (the feed polls it); a later server takes the update.
    eprintln!(
        "LOGS re-publishes after the upgrade: {}",
        info.config.republish.is_some()
    );
    assert_eq!(
        info.config.max_messages_per_subject,
        freeagent_shared::nats::LOGS_MAX_PER_SUBJECT,
        "the rest of the update still applied"
    );

    a_followed_build(&farm).await;
}
