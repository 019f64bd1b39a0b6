//! Property tests for `wire::decode`: whatever arrives on a NATS subject (any bytes, any JSON,
//! or a valid message with one field replaced by anything) decodes to a message or to an error,
//! for every message type, and never panics. What decodes re-encodes to something that decodes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use chrono::Utc;
use freeagent_shared::events::{BuildChange, BuildEvent, FarmEvent};
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::status::{BuildStatus, Platform, QueueName};
use freeagent_shared::wire::{self, *};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// Decodes `bytes` as `T`; if that works, what we would send back must decode too.
fn decodes_or_refuses<T: DeserializeOwned + Serialize>(bytes: &[u8]) {
    if let Ok(msg) = wire::decode::<T>(bytes) {
        let again = wire::encode(&msg);
        assert!(
            wire::decode::<T>(&again).is_ok(),
            "{} decoded from {:?} but its own encoding {:?} does not decode",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&again)
        );
    }
}

/// Every message type on the wire (and the enums they carry).
fn decode_every_type(bytes: &[u8]) {
    decodes_or_refuses::<Dispatch>(bytes);
    decodes_or_refuses::<ClaimRequest>(bytes);
    decodes_or_refuses::<JobGrant>(bytes);
    decodes_or_refuses::<ClaimReply>(bytes);
    decodes_or_refuses::<HeartbeatRequest>(bytes);
    decodes_or_refuses::<HeartbeatReply>(bytes);
    decodes_or_refuses::<StoredObject>(bytes);
    decodes_or_refuses::<CompleteRequest>(bytes);
    decodes_or_refuses::<FailRequest>(bytes);
    decodes_or_refuses::<FinishReply>(bytes);
    decodes_or_refuses::<AbandonRequest>(bytes);
    decodes_or_refuses::<PresenceRequest>(bytes);
    decodes_or_refuses::<PresenceReply>(bytes);
    decodes_or_refuses::<LogLine>(bytes);
    decodes_or_refuses::<CancelRequest>(bytes);
    decodes_or_refuses::<CancelReply>(bytes);
    decodes_or_refuses::<CancelOrder>(bytes);
    decodes_or_refuses::<FarmEvent>(bytes);
    decodes_or_refuses::<NotYours>(bytes);
    decodes_or_refuses::<LogLevel>(bytes);
}

/// One valid message of every type, as JSON objects (with `"v": 1`).
fn samples() -> Vec<Value> {
    let b = BuildId::new();
    let w = WorkerId::new();
    let a = Attempt::new(2).unwrap();
    let stored = StoredObject {
        key: format!("builds/{b}/attempts/2/result"),
        size: 7,
        sha256: "ab".repeat(32),
        receipt: "cd".repeat(32),
    };
    let grant = JobGrant {
        build_id: b,
        attempt: a,
        platform: Platform::Android,
        source_url: "http://127.0.0.1:8081/objects/x?exp=1&max=0&sig=00".into(),
        source_sha256: "ef".repeat(32),
        certs_url: None,
        certs_sha256: None,
        result_url: "http://127.0.0.1:8081/objects/y?exp=1&max=9&sig=00".into(),
        lease_expires_at: Utc::now(),
        heartbeat_interval_ms: 10_000,
        cancel_subject: format!("cancel.{b}"),
        metadata: json!({"k": [1, 2.5, null]}),
    };
    let encoded: Vec<Vec<u8>> = vec![
        wire::encode(&Dispatch {
            build_id: b,
            attempt: a,
            platform: Platform::Ios,
            queue: QueueName::parse("ios").unwrap(),
        }),
        wire::encode(&ClaimRequest {
            build_id: b,
            attempt: a,
            worker_id: w,
        }),
        wire::encode(&grant),
        wire::encode(&ClaimReply::Granted(Box::new(grant.clone()))),
        wire::encode(&ClaimReply::NotYours {
            reason: NotYours::Stale,
            status: Some(BuildStatus::Building),
        }),
        wire::encode(&HeartbeatRequest {
            build_id: b,
            attempt: a,
            worker_id: w,
            progress: Some(50),
        }),
        wire::encode(&HeartbeatReply::Renewed {
            lease_expires_at: Utc::now(),
            result_url: Some("http://x".into()),
        }),
        wire::encode(&CompleteRequest {
            build_id: b,
            attempt: a,
            worker_id: w,
            result: stored.clone(),
        }),
        wire::encode(&FailRequest {
            build_id: b,
            attempt: a,
            worker_id: w,
            error: "exit 1".into(),
        }),
        wire::encode(&FinishReply::Recorded {
            status: BuildStatus::Completed,
        }),
        wire::encode(&AbandonRequest {
            build_id: b,
            attempt: a,
            worker_id: w,
            reason: "shutdown".into(),
        }),
        wire::encode(&PresenceRequest {
            worker_id: w,
            running: 1,
        }),
        wire::encode(&PresenceReply::Seen {
            drain: false,
            nats_jwt: Some("jwt".into()),
            awaiting_approval: false,
        }),
        wire::encode(&LogLine {
            build_id: b,
            attempt: a,
            seq: 1,
            timestamp: Utc::now(),
            level: LogLevel::Info,
            message: "hello".into(),
            stream: None,
        }),
        wire::encode(&CancelRequest { build_id: b }),
        wire::encode(&FarmEvent::Build(BuildEvent {
            build_id: b,
            event: BuildChange::Requeued,
            status: BuildStatus::Pending,
            attempt: a,
            queue: QueueName::parse("android").unwrap(),
            platform: None,
            worker_id: Some(w),
            at: Utc::now(),
        })),
        wire::encode(&PresenceReply::Seen {
            drain: true,
            nats_jwt: None,
            awaiting_approval: true,
        }),
    ];
    encoded
        .iter()
        .map(|bytes| serde_json::from_slice(bytes).unwrap())
        .collect()
}

/// Field names and values the messages use, so random objects often look almost right.
fn near_miss_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(BuildId::new().to_string()),
        Just(Utc::now().to_rfc3339()),
        Just("+275760-09-13T00:00:00Z".to_owned()),
        Just("android".to_owned()),
        Just("granted".to_owned()),
        Just("not_yours".to_owned()),
        Just("renewed".to_owned()),
        Just("seen".to_owned()),
        Just("stale".to_owned()),
        Just("pending".to_owned()),
        Just(String::new()),
        ".{0,40}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "v",
            "build_id",
            "attempt",
            "platform",
            "queue",
            "worker_id",
            "outcome",
            "reason",
            "status",
            "lease_expires_at",
            "result_url",
            "source_url",
            "source_sha256",
            "certs_url",
            "heartbeat_interval_ms",
            "cancel_subject",
            "metadata",
            "progress",
            "result",
            "error",
            "running",
            "drain",
            "nats_jwt",
            "seq",
            "timestamp",
            "level",
            "message",
            "at",
        ])
        .prop_map(str::to_owned),
        ".{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, 2, -1, 255, 256, i32::MAX as i64 + 1])
            .prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        near_miss_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_every_type(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value(), versioned in any::<bool>()) {
        let v = match (v, versioned) {
            // Past the version check, into each type's own fields.
            (Value::Object(mut m), true) => {
                m.insert("v".into(), json!(1));
                Value::Object(m)
            }
            (v, _) => v,
        };
        decode_every_type(&serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn a_valid_message_with_one_field_replaced_never_panics(
        pick in any::<prop::sample::Index>(),
        field in any::<prop::sample::Index>(),
        replacement in json_value(),
    ) {
        let samples = samples();
        let Value::Object(mut m) = samples[pick.index(samples.len())].clone() else {
            unreachable!("every sample is an object");
        };
        let names: Vec<String> = m.keys().cloned().collect();
        let name = &names[field.index(names.len())];
        m.insert(name.clone(), replacement);
        decode_every_type(&serde_json::to_vec(&Value::Object(m)).unwrap());
    }

    #[test]
    fn a_valid_message_cut_or_flipped_never_panics(
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let samples = samples();
        let mut bytes = serde_json::to_vec(&samples[pick.index(samples.len())]).unwrap();
        let i = at.index(bytes.len());
        if cut {
            bytes.truncate(i);
        } else {
            bytes[i] = byte;
        }
        decode_every_type(&bytes);
    }
}

#[test]
fn every_sample_decodes_as_its_own_type() {
    // The samples above are real messages: the mutations start from something valid.
    let s = samples();
    let bytes: Vec<Vec<u8>> = s.iter().map(|v| serde_json::to_vec(v).unwrap()).collect();
    assert!(wire::decode::<Dispatch>(&bytes[0]).is_ok());
    assert!(wire::decode::<ClaimRequest>(&bytes[1]).is_ok());
    assert!(wire::decode::<JobGrant>(&bytes[2]).is_ok());
    assert!(wire::decode::<ClaimReply>(&bytes[3]).is_ok());
    assert!(wire::decode::<ClaimReply>(&bytes[4]).is_ok());
    assert!(wire::decode::<HeartbeatRequest>(&bytes[5]).is_ok());
    assert!(wire::decode::<HeartbeatReply>(&bytes[6]).is_ok());
    assert!(wire::decode::<CompleteRequest>(&bytes[7]).is_ok());
    assert!(wire::decode::<FailRequest>(&bytes[8]).is_ok());
    assert!(wire::decode::<FinishReply>(&bytes[9]).is_ok());
    assert!(wire::decode::<AbandonRequest>(&bytes[10]).is_ok());
    assert!(wire::decode::<PresenceRequest>(&bytes[11]).is_ok());
    assert!(wire::decode::<PresenceReply>(&bytes[12]).is_ok());
    assert!(wire::decode::<LogLine>(&bytes[13]).is_ok());
    assert!(wire::decode::<CancelRequest>(&bytes[14]).is_ok());
    assert!(wire::decode::<FarmEvent>(&bytes[15]).is_ok());
    assert_eq!(
        wire::decode::<PresenceReply>(&bytes[16]).ok(),
        Some(PresenceReply::Seen {
            drain: true,
            nats_jwt: None,
            awaiting_approval: true
        })
    );
    // A scheduler before approval existed sends no `awaiting_approval`: not awaiting.
    assert_eq!(
        wire::decode::<PresenceReply>(br#"{"v":1,"outcome":"seen","drain":false}"#).ok(),
        Some(PresenceReply::Seen {
            drain: false,
            nats_jwt: None,
            awaiting_approval: false
        })
    );
}

/// Whatever else lands on a worker's cancel subject (any other message of the farm, a JetStream
/// acknowledgement or API reply someone directed there) never reads as an order to stop.
#[test]
fn only_a_cancel_order_stops_a_build() {
    let (b, a) = (BuildId::new(), Attempt::new(2).unwrap());
    let mut others: Vec<Vec<u8>> = samples()
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect();
    others.extend([
        br#"{"stream":"LOGS", "seq":6}"#.to_vec(),
        br#"{"type":"io.nats.jetstream.api.v1.stream_purge_response","success":true,"purged":3}"#
            .to_vec(),
        vec![],
    ]);
    for bytes in &others {
        assert!(
            !CancelOrder::stops(bytes, b, a),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
    let order = wire::encode(&CancelOrder {
        cancel: b,
        attempt: a,
    });
    assert!(CancelOrder::stops(&order, b, a));
    assert!(!CancelOrder::stops(&order, b, Attempt::new(3).unwrap()));
    assert!(!CancelOrder::stops(&order, BuildId::new(), a));
}
