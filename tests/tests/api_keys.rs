//! API keys as a managed resource: an admin creates a key (its secret shown once), the key works
//! within its scopes, its use is recorded, and once revoked or expired it is refused with 401 and
//! a hint. Revoking the bootstrap key sticks across a gateway restart. The CLI drives the same
//! routes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::freeagent_shared::db;
use freeagent_tests::freeagent_shared::testing::wait;
use freeagent_tests::{API_KEY, Farm, FarmOpts, bin_dir};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

/// Long enough for a revocation to reach every cached copy (the cache keeps a key 5 s).
const REVOCATION_DEADLINE: Duration = Duration::from_secs(15);

async fn farm() -> Farm {
    Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await
}

/// Sends `method path` with `key` (if any) and an optional JSON body; returns the status and body.
async fn call(
    farm: &Farm,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", farm.gateway);
    let mut req = match method {
        "get" => farm.http.get(url),
        "post" => farm.http.post(url),
        "delete" => farm.http.delete(url),
        other => panic!("no method {other}"),
    };
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Creates a key with the bootstrap (admin) key; asserts 201 and returns (id, secret, reply).
async fn create(farm: &Farm, body: Value) -> (String, String, Value) {
    let (status, reply) = call(farm, "post", "/api/keys", Some(API_KEY), Some(body)).await;
    assert_eq!(status, 201, "{reply}");
    (
        reply["id"].as_str().unwrap().to_owned(),
        reply["key"].as_str().unwrap().to_owned(),
        reply,
    )
}

async fn list(farm: &Farm) -> (String, Value) {
    let r = farm
        .http
        .get(format!("{}/api/keys", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap();
    (text, v)
}

fn entry<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("key {id} not listed: {list}"))
}

/// Waits (up to `deadline`) until `key` is refused with 401; returns the refusal.
async fn until_refused(farm: &Farm, key: &str, deadline: Duration) -> Value {
    wait::until("the key to be refused", deadline, || async {
        let (status, body) = call(farm, "get", "/api/builds", Some(key), None).await;
        (status == 401).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lives_from_creation_through_use_to_revocation() {
    let farm = farm().await;
    let (id, secret, created) = create(
        &farm,
        json!({"name": "ci", "scopes": ["read", "submit", "read"]}),
    )
    .await;
    assert!(secret.starts_with("fak_"), "{created}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["scopes"], json!(["submit", "read"]));
    assert_eq!(created["expires_at"], Value::Null);
    assert!(created["created_at"].is_string());

    // It works, and its use is recorded (off the request path, so soon rather than at once).
    let (status, body) = call(&farm, "get", "/api/builds", Some(&secret), None).await;
    assert_eq!(status, 200, "{body}");
    let used = wait::until(
        "last_used_at to be set",
        Duration::from_secs(10),
        || async {
            let (_, l) = list(&farm).await;
            let e = entry(&l, &id).clone();
            e["last_used_at"].is_string().then_some(e)
        },
    )
    .await;
    assert_eq!(used["revoked_at"], Value::Null);

    // The list never carries a secret or a hash, of this key or any other.
    let (text, l) = list(&farm).await;
    assert!(!text.contains(&secret) && !text.contains(API_KEY), "{text}");
    for k in l["keys"].as_array().unwrap() {
        let fields: Vec<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = fields;
        fields.sort();
        assert_eq!(
            fields,
            [
                "created_at",
                "expires_at",
                "id",
                "last_used_at",
                "max_workers",
                "name",
                "revoked_at",
                "scopes",
                "team",
                "worker_queues"
            ],
            "{k}"
        );
    }
    assert!(
        l["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "bootstrap"),
        "{l}"
    );

    // Revoked: refused with 401 and a hint, within the cache's lifetime.
    let (status, revoked) = call(
        &farm,
        "delete",
        &format!("/api/keys/{id}"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["id"], id.as_str());
    let refusal = until_refused(&farm, &secret, REVOCATION_DEADLINE).await;
    assert_eq!(refusal["code"], "unauthorized", "{refusal}");
    assert!(
        refusal["error"].as_str().unwrap().contains("revoked"),
        "{refusal}"
    );
    assert!(refusal["hint"].is_string(), "{refusal}");
    let (_, l) = list(&farm).await;
    assert_eq!(entry(&l, &id)["revoked_at"], revoked["revoked_at"]);

    // Revoked on another gateway (here: straight in the database), this gateway's cached copy
    // stops working within the cache's lifetime.
    let (other_id, other, _) =
        create(&farm, json!({"name": "elsewhere", "scopes": ["read"]})).await;
    let (status, _) = call(&farm, "get", "/api/builds", Some(&other), None).await;
    assert_eq!(status, 200);
    db::api_keys::api_key_revoke(&farm.db.pool, other_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    until_refused(&farm, &other, REVOCATION_DEADLINE).await;

    // Revoking again (the POST alias) keeps the first time; unknown ids are 404.
    let (status, again) = call(
        &farm,
        "post",
        &format!("/api/keys/{id}/revoke"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/api/keys/{unknown}"),
        "/api/keys/not-an-id".to_owned(),
    ] {
        let (status, body) = call(&farm, "delete", &path, Some(API_KEY), None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_does_only_what_its_scopes_allow() {
    let farm = farm().await;
    // A worker machine's key: registers workers, and cannot submit or read.
    let (_, register, _) = create(
        &farm,
        json!({"name": "mac mini", "scopes": ["register_workers"]}),
    )
    .await;
    let form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part(
            "source",
            reqwest::multipart::Part::bytes(vec![1, 2, 3]).file_name("s.tar.gz"),
        );
    let r = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", &register)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a register_workers key must not submit");
    for path in ["/api/builds", "/api/workers", "/api/builds/statistics"] {
        let (status, body) = call(&farm, "get", path, Some(&register), None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, body) = call(
        &farm,
        "post",
        "/api/workers/register",
        Some(&register),
        Some(json!({"name": "mac", "capabilities": {"platforms": ["ios"]}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Keys are managed by admins only: 401 without a key, 403 for any other scope.
    let (_, reader) = {
        let (id, key, _) = create(
            &farm,
            json!({"name": "dashboards", "scopes": ["read", "submit", "worker"]}),
        )
        .await;
        (id, key)
    };
    let new_key = json!({"name": "escalate", "scopes": ["admin"]});
    let attempts = [
        ("post", "/api/keys".to_owned(), Some(new_key.clone())),
        ("get", "/api/keys".to_owned(), None),
        (
            "delete",
            format!("/api/keys/{}", uuid::Uuid::now_v7()),
            None,
        ),
        (
            "post",
            format!("/api/keys/{}/revoke", uuid::Uuid::now_v7()),
            None,
        ),
    ];
    for (method, path, body) in &attempts {
        let (status, reply) = call(&farm, method, path, None, body.clone()).await;
        assert_eq!(status, 401, "{method} {path} without a key: {reply}");
        for key in [&reader, &register] {
            let (status, reply) = call(&farm, method, path, Some(key), body.clone()).await;
            assert_eq!(status, 403, "{method} {path} with a non-admin key: {reply}");
        }
    }

    // What a key may be made of.
    let soon_past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    for bad in [
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": ["Admin"]}),
        json!({"name": "x"}),
        json!({"name": "  ", "scopes": ["read"]}),
        json!({"name": "x".repeat(201), "scopes": ["read"]}),
        json!({"name": "x", "scopes": ["read"], "expires_at": soon_past}),
        json!({"name": "x", "scopes": ["read"], "expires_at": "tomorrow"}),
    ] {
        let (status, reply) =
            call(&farm, "post", "/api/keys", Some(API_KEY), Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {reply}");
        assert_eq!(reply["code"], "bad_request", "{bad}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_with_a_hint() {
    let farm = farm().await;
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let (id, secret, created) = create(
        &farm,
        json!({"name": "short-lived", "scopes": ["read"], "expires_at": expires_at.to_rfc3339()}),
    )
    .await;
    assert!(created["expires_at"].is_string(), "{created}");
    let (status, body) = call(&farm, "get", "/api/builds", Some(&secret), None).await;
    assert_eq!(status, 200, "before expiry: {body}");
    // Expiry is checked on every request, cached or not: refused once the time has passed.
    let refusal = until_refused(&farm, &secret, Duration::from_secs(10)).await;
    assert!(chrono::Utc::now() >= expires_at);
    assert!(
        refusal["error"].as_str().unwrap().contains("expired"),
        "{refusal}"
    );
    assert!(refusal["hint"].is_string(), "{refusal}");
    let (_, l) = list(&farm).await;
    assert_eq!(entry(&l, &id)["revoked_at"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_bootstrap_key_sticks_across_a_restart() {
    let mut farm = farm().await;
    let (_, admin, _) = create(&farm, json!({"name": "operator", "scopes": ["admin"]})).await;
    let (_, l) = list(&farm).await;
    let bootstrap = l["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "bootstrap")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = call(
        &farm,
        "delete",
        &format!("/api/keys/{bootstrap}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    until_refused(&farm, API_KEY, REVOCATION_DEADLINE).await;

    // The gateway ensures FREEAGENT_API_KEY at start; it must not bring it back.
    farm.restart("gateway");
    let (http, ready) = (farm.http.clone(), format!("{}/readyz", farm.gateway));
    wait::until(
        "the gateway to be ready again",
        Duration::from_secs(30),
        || {
            let (http, ready) = (http.clone(), ready.clone());
            async move {
                let r = http.get(&ready).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        },
    )
    .await;
    let (status, body) = call(&farm, "get", "/api/builds", Some(API_KEY), None).await;
    assert_eq!(status, 401, "the revoked bootstrap key works again: {body}");
    let (status, body) = call(&farm, "get", "/api/keys", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(entry(&body, &bootstrap)["revoked_at"].is_string(), "{body}");
    assert!(
        farm.log_of("gateway")
            .contains("FREEAGENT_API_KEY was revoked and stays revoked"),
        "the gateway should say the bootstrap key is revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_and_revokes_keys() {
    let farm = farm().await;
    let gateway = farm.gateway.clone();
    let cli = move |key: &str, args: &[&str]| {
        let out = Command::new(bin_dir().join("freeagent"))
            .args(args)
            .env_remove("FREEAGENT_BUILD_TOKEN")
            .env("FREEAGENT_API_KEY", key)
            .env("FREEAGENT_GATEWAY_URL", &gateway)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = cli(
        API_KEY,
        &[
            "keys",
            "create",
            "--name",
            "from-cli",
            "--scope",
            "read",
            "--scope",
            "submit",
            "--expires",
            "30d",
            "--json",
        ],
    );
    assert!(ok, "{stdout} {stderr}");
    let created: Value = serde_json::from_str(stdout.trim()).unwrap();
    let (id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    let expires = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let days = (expires - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.9..=30.0).contains(&days), "expires in {days} days");

    // The new key reads; it may not manage keys.
    let (status, _) = call(&farm, "get", "/api/builds", Some(&secret), None).await;
    assert_eq!(status, 200);
    let (ok, stdout, stderr) = cli(&secret, &["keys", "list"]);
    assert!(!ok, "a read key listed keys: {stdout}");
    assert!(stderr.contains("forbidden"), "{stderr}");

    let (ok, stdout, stderr) = cli(API_KEY, &["keys", "list"]);
    assert!(ok, "{stdout} {stderr}");
    assert!(
        stdout.contains(&id) && stdout.contains("from-cli") && stdout.contains("submit,read"),
        "{stdout}"
    );
    assert!(!stdout.contains(&secret), "{stdout}");

    let (ok, stdout, stderr) = cli(API_KEY, &["keys", "revoke", &id, "--json"]);
    assert!(ok, "{stdout} {stderr}");
    let revoked: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(revoked["id"], id.as_str());
    until_refused(&farm, &secret, REVOCATION_DEADLINE).await;

    // A mistake is the server's answer, code and hint, and a failure exit.
    let (ok, _, stderr) = cli(
        API_KEY,
        &["keys", "revoke", &uuid::Uuid::now_v7().to_string()],
    );
    assert!(!ok && stderr.contains("not_found"), "{stderr}");
    let (ok, _, stderr) = cli(
        API_KEY,
        &["keys", "create", "--name", "x", "--scope", "root"],
    );
    assert!(!ok && stderr.contains("unknown scope"), "{stderr}");
}

/// The attack: one registration key registered any number of workers for any queue, each then
/// receiving every dispatch of those queues, certs included. A scoped key registers workers
/// for its queues only and at most `max_workers` live at once; a worker that leaves frees its
/// place; re-registering a worker it already has is not a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_registration_key_registers_only_its_queues_and_at_most_its_workers() {
    let farm = farm().await;
    let (_, key, reply) = create(
        &farm,
        json!({"name": "android fleet", "scopes": ["register_workers"],
               "worker_queues": ["android"], "max_workers": 2}),
    )
    .await;
    assert_eq!(reply["worker_queues"], json!(["android"]));
    // Unbounded or empty scopes are refused.
    let many: Vec<String> = (0..101).map(|i| format!("q{i}")).collect();
    for queues in [json!(many), json!([])] {
        let (status, body) = call(
            &farm,
            "post",
            "/api/keys",
            Some(API_KEY),
            Some(json!({"name": "x", "scopes": ["register_workers"], "worker_queues": queues})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
    }
    assert_eq!(reply["max_workers"], 2);
    let register = |name: &str, platforms: Value| json!({"name": name, "capabilities": {"platforms": platforms}});
    let path = "/api/workers/register";
    // Another queue, alone or next to its own.
    for platforms in [json!(["ios"]), json!(["android", "ios"])] {
        let (status, body) = call(
            &farm,
            "post",
            path,
            Some(&key),
            Some(register("w", platforms)),
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("android"),
            "{body}"
        );
    }
    let (s1, first) = call(
        &farm,
        "post",
        path,
        Some(&key),
        Some(register("w1", json!(["android"]))),
    )
    .await;
    assert_eq!(s1, 200, "{first}");
    let (s2, _) = call(
        &farm,
        "post",
        path,
        Some(&key),
        Some(register("w2", json!(["android"]))),
    )
    .await;
    assert_eq!(s2, 200);
    let (s3, third) = call(
        &farm,
        "post",
        path,
        Some(&key),
        Some(register("w3", json!(["android"]))),
    )
    .await;
    assert_eq!(s3, 403, "{third}");
    assert!(
        third["error"].as_str().unwrap().contains("max_workers"),
        "{third}"
    );
    // Re-registering a worker the key already has is allowed (with its own token).
    let id = first["id"].as_str().unwrap();
    let token = first["access_token"].as_str().unwrap();
    let again = farm
        .http
        .post(format!("{}{path}", farm.gateway))
        .header("x-api-key", &key)
        .header("x-worker-token", token)
        .json(&json!({"id": id, "name": "w1", "capabilities": {"platforms": ["android"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    // A worker that unregisters frees its place.
    let gone = farm
        .http
        .post(format!("{}/api/workers/unregister", farm.gateway))
        .header("x-worker-token", again["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);
    let (s4, fourth) = call(
        &farm,
        "post",
        path,
        Some(&key),
        Some(register("w4", json!(["android"]))),
    )
    .await;
    assert_eq!(s4, 200, "{fourth}");
    // The list shows the scope (never the secret).
    let (_, list) = call(&farm, "get", "/api/keys", Some(API_KEY), None).await;
    let listed = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "android fleet")
        .unwrap();
    assert_eq!(listed["max_workers"], 2, "{listed}");
}

/// The registration key from the gateway's settings takes its scope from them too
/// (`FREEAGENT_WORKER_REGISTRATION_QUEUES`, `FREEAGENT_WORKER_REGISTRATION_MAX`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_registration_key_follows_its_settings() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![
            (
                "FREEAGENT_WORKER_REGISTRATION_QUEUES".into(),
                "android".into(),
            ),
            ("FREEAGENT_WORKER_REGISTRATION_MAX".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let key = freeagent_tests::REGISTRATION_KEY;
    let path = "/api/workers/register";
    let body = |p: &str| json!({"name": "w", "capabilities": {"platforms": [p]}});
    assert_eq!(
        call(&farm, "post", path, Some(key), Some(body("ios")))
            .await
            .0,
        403
    );
    assert_eq!(
        call(&farm, "post", path, Some(key), Some(body("android")))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&farm, "post", path, Some(key), Some(body("android")))
            .await
            .0,
        403
    );
}

/// With `FREEAGENT_WORKER_APPROVAL=required`, whoever holds the registration key can add a
/// worker, but it gets no build until an admin approves it: a real NATS worker waits (its
/// presence replies tell it to), a claim with its own credentials is refused, an HTTP poller
/// gets no job, and `freeagent workers approve` lets the real worker in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_workers_take_no_build_until_approved_when_the_farm_requires_it() {
    use freeagent_tests::freeagent_shared::ids::{Attempt, BuildId};
    use freeagent_tests::freeagent_shared::subjects::Op;
    use freeagent_tests::freeagent_shared::wire::{
        ClaimReply, ClaimRequest, NotYours, PresenceReply, PresenceRequest,
    };
    let farm = Farm::start(FarmOpts {
        workers: 1,
        extra_env: vec![("FREEAGENT_WORKER_APPROVAL".into(), "required".into())],
        ..Default::default()
    })
    .await;
    let dir = freeagent_tests::project("echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id: BuildId = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait::until("the build's dispatch", Duration::from_secs(30), || async {
        db::builds::build_get(&farm.db.pool, id)
            .await
            .unwrap()
            .filter(|b| b.dispatched_at.is_some())
    })
    .await;
    // The real worker registered, says what it waits for, and is listed as unapproved.
    wait::until(
        "the worker to say it awaits approval",
        Duration::from_secs(30),
        || async {
            farm.log_of("worker-0")
                .contains("awaiting approval")
                .then_some(())
        },
    )
    .await;
    let (_, list) = call(&farm, "get", "/api/workers", Some(API_KEY), None).await;
    let real = list["workers"][0].clone();
    assert_eq!(real["approved"], false, "{list}");
    let real_id = real["id"].as_str().unwrap().to_owned();

    // A worker of the attacker's own, registered with the key: its claim is refused with its
    // own credentials, and as an HTTP poller it gets no job.
    let rogue = farm.register_worker("rogue", &["android"]).await;
    let claim: ClaimReply = farm
        .rpc(
            &rogue,
            Op::Claim,
            &ClaimRequest {
                build_id: id,
                attempt: Attempt::new(1).unwrap(),
                worker_id: rogue.worker_id,
            },
        )
        .await;
    assert!(
        matches!(
            claim,
            ClaimReply::NotYours {
                reason: NotYours::Draining,
                ..
            }
        ),
        "{claim:?}"
    );
    // Nor can it take a dispatch off the queue (where it would wait for its redelivery): its
    // credentials name no queue until it is approved.
    let pull = "$JS.API.CONSUMER.MSG.NEXT.BUILDS.queue-android";
    let mut watched = rogue.connect_watched(&farm.nats.url).await;
    watched
        .client
        .publish_with_reply(pull, "_INBOX.x", r#"{"batch":1,"no_wait":true}"#.into())
        .await
        .unwrap();
    watched.refused("an unapproved worker's pull").await;
    let (status, poller) = call(
        &farm,
        "post",
        "/api/workers/register",
        Some(API_KEY),
        Some(json!({"name": "poller", "capabilities": {"platforms": ["android"]}})),
    )
    .await;
    assert_eq!(status, 200, "{poller}");
    assert_eq!(poller["approved"], false, "{poller}");
    let poll = farm
        .http
        .get(format!(
            "{}/api/workers/poll?worker_id={}",
            farm.gateway,
            poller["id"].as_str().unwrap()
        ))
        .header("x-worker-token", poller["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);
    assert_eq!(poll.json::<Value>().await.unwrap()["job"], Value::Null);
    assert_eq!(farm.get_build(&id.to_string()).await["status"], "pending");

    // Approving needs an admin key; the CLI does it, and the real worker runs the build.
    let (status, _) = call(
        &farm,
        "post",
        &format!("/api/workers/{real_id}/approve"),
        Some(freeagent_tests::REGISTRATION_KEY),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let out = Command::new(bin_dir().join("freeagent"))
        .args(["workers", "approve", &real_id])
        .env_remove("FREEAGENT_BUILD_TOKEN")
        .env("FREEAGENT_API_KEY", API_KEY)
        .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("approved"));
    let b = farm
        .wait_terminal(&id.to_string(), Duration::from_secs(120))
        .await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempts"][0]["worker_id"], real_id.as_str(), "{b}");
    // Approved, a worker's next presence report brings credentials that may pull (the real
    // worker reconnected with them to run the build above).
    let rogue_id = rogue.worker_id.to_string();
    let (status, _) = call(
        &farm,
        "post",
        &format!("/api/workers/{rogue_id}/approve"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let seen: PresenceReply = farm
        .rpc(
            &rogue,
            Op::Presence,
            &PresenceRequest {
                worker_id: rogue.worker_id,
                running: 0,
            },
        )
        .await;
    let PresenceReply::Seen {
        nats_jwt: Some(jwt),
        awaiting_approval: false,
        ..
    } = seen
    else {
        panic!("no new credentials on approval: {seen:?}")
    };
    let approved = freeagent_tests::TestWorker {
        nats_jwt: Some(jwt),
        ..rogue.clone()
    };
    let mut watched = approved.connect_watched(&farm.nats.url).await;
    watched
        .client
        .publish_with_reply(pull, "_INBOX.x", r#"{"batch":1,"no_wait":true}"#.into())
        .await
        .unwrap();
    watched.allowed("an approved worker's pull").await;
    let listed = Command::new(bin_dir().join("freeagent"))
        .args(["workers", "list"])
        .env("FREEAGENT_API_KEY", API_KEY)
        .env("FREEAGENT_GATEWAY_URL", &farm.gateway)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("poller") && listed.contains("(unapproved)"),
        "{listed}"
    );

    // Approval stays with a worker that registers again under its id, and ends with its
    // registration: unregistered, it must be approved again.
    let poller_id = poller["id"].as_str().unwrap();
    let approve = format!("/api/workers/{poller_id}/approve");
    assert_eq!(
        call(&farm, "post", &approve, Some(API_KEY), None).await.0,
        200
    );
    let again =
        json!({"id": poller_id, "name": "poller", "capabilities": {"platforms": ["android"]}});
    let register = "/api/workers/register";
    let (status, r) = call(&farm, "post", register, Some(API_KEY), Some(again.clone())).await;
    assert_eq!((status, &r["approved"]), (200, &json!(true)), "{r}");
    let gone = farm
        .http
        .post(format!("{}/api/workers/unregister", farm.gateway))
        .header("x-worker-token", r["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);
    let (status, r) = call(&farm, "post", register, Some(API_KEY), Some(again)).await;
    assert_eq!((status, &r["approved"]), (200, &json!(false)), "{r}");
}

/// With `FREEAGENT_WORKER_IDENTITY_FILE` the reference worker keeps its id and NATS key: killed
/// and started again, it registers under the same id with a proof signed by that key and keeps
/// its approval (no operator needed at each restart). The fleet's registration key alone cannot
/// take the id: without the proof, or with one signed by another key, it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_keeps_its_identity_keeps_its_approval_across_restarts() {
    use freeagent_tests::freeagent_shared::{ids::WorkerId, worker_identity};
    let state = tempfile::tempdir().unwrap();
    let identity = state.path().join("worker-0.json");
    let mut farm = Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![
            ("FREEAGENT_WORKER_APPROVAL".into(), "required".into()),
            (
                "FREEAGENT_WORKER_IDENTITY_FILE".into(),
                identity.display().to_string(),
            ),
        ],
        ..Default::default()
    })
    .await;
    farm.spawn_worker(0);
    let first = wait::until(
        "the worker to register",
        Duration::from_secs(30),
        || async {
            let (_, list) = call(&farm, "get", "/api/workers", Some(API_KEY), None).await;
            list["workers"][0]["id"].as_str().map(str::to_owned)
        },
    )
    .await;
    // The worker writes the file once the gateway answered.
    wait::until("the identity file", Duration::from_secs(30), || async {
        identity.exists().then_some(())
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&identity).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the identity file holds a key: 0600");
    let approve = format!("/api/workers/{first}/approve");
    assert_eq!(
        call(&farm, "post", &approve, Some(API_KEY), None).await.0,
        200
    );

    farm.restart("worker-0");
    // The log file goes on across the restart: the second start registers and awaits nothing.
    let count = |what: &str| farm.log_of("worker-0").matches(what).count();
    wait::until(
        "the restarted worker to register",
        Duration::from_secs(30),
        || async { (count("worker registered") == 2).then_some(()) },
    )
    .await;
    assert_eq!(count("awaiting approval"), 1, "{}", farm.log_of("worker-0"));
    let (_, list) = call(&farm, "get", "/api/workers", Some(API_KEY), None).await;
    let workers = list["workers"].as_array().unwrap();
    assert_eq!(
        workers.len(),
        1,
        "the same worker, not a second one: {list}"
    );
    assert_eq!(
        (workers[0]["id"].as_str(), &workers[0]["approved"]),
        (Some(first.as_str()), &json!(true))
    );
    let dir = freeagent_tests::project("echo built > \"$FREEAGENT_OUTPUT_DIR/app.apk\"\n");
    let id = farm.submit_dir(dir.path(), "android").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = farm.wait_terminal(&id, Duration::from_secs(90)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["attempts"][0]["worker_id"], first.as_str(), "{b}");

    // The attack: the registration key every machine holds, naming the id.
    let worker_id: WorkerId = first.parse().unwrap();
    let thief = nkeys::KeyPair::new_user();
    let now = chrono::Utc::now().timestamp();
    let on_record = workers[0]["id"].as_str().unwrap();
    for proof in [
        None,
        Some(json!({"at": now, "sig": worker_identity::sign(&thief, worker_id, now).unwrap()})),
        Some(json!({"at": now, "sig": "AAAA"})),
    ] {
        let mut body = json!({"id": on_record, "name": "thief", "capabilities": {"platforms": ["android"]}, "nats_public_key": thief.public_key()});
        if let Some(p) = proof {
            body["identity_proof"] = p;
        }
        let (status, r) = call(
            &farm,
            "post",
            "/api/workers/register",
            Some(freeagent_tests::REGISTRATION_KEY),
            Some(body),
        )
        .await;
        assert_eq!(status, 403, "{r}");
    }
}
