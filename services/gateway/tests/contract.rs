//! The credential rules of `spec/http-api.md`, for every route of the contract, from one table:
//! no credential → 401 (whatever the body, malformed or not, and whatever the id); a credential
//! of the wrong kind, or one that does not grant the request → 403; an unknown build → 404, only
//! after a credential that could have seen it. Each test reports every row that disagrees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use support::{Auth, Farm, Reply, Worker, send, unknown_build};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Anyone,
    /// An API key (with the route's scope).
    Key,
    /// An API key allowed to register workers.
    Register,
    /// An API key or this build's token.
    KeyOrToken,
    /// A worker token, or a key allowed to act as a worker plus the worker's id.
    Worker,
}

#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    /// JSON text; `{b}` is the build id, `{w}` the worker id.
    Json(&'static str),
    /// A submission (multipart: platform, source).
    Submit,
    /// An outcome (multipart: build_id, success, result).
    Outcome,
}

#[derive(Clone, Copy, Debug)]
struct Route {
    method: &'static str,
    /// `{b}`: a build id; `{w}`: a worker id.
    path: &'static str,
    who: Who,
    body: Body,
}

const fn r(method: &'static str, path: &'static str, who: Who, body: Body) -> Route {
    Route {
        method,
        path,
        who,
        body,
    }
}

use Body::{Json, Outcome, Submit};
use Who::*;

/// Every route of the contract.
#[rustfmt::skip]
const ROUTES: &[Route] = &[
    r("POST", "/api/builds", Key, Submit),
    r("POST", "/api/builds/submit", Key, Submit),
    r("GET", "/api/builds", Key, Body::None),
    r("GET", "/api/builds/{b}", KeyOrToken, Body::None),
    r("GET", "/api/builds/{b}/status", KeyOrToken, Body::None),
    r("GET", "/api/builds/{b}/logs", KeyOrToken, Body::None),
    r("GET", "/api/builds/{b}/download", KeyOrToken, Body::None),
    r("GET", "/api/builds/{b}/download/result", KeyOrToken, Body::None),
    r("GET", "/api/builds/{b}/download/source", KeyOrToken, Body::None),
    r("GET", "/api/builds/{b}/download/logs", KeyOrToken, Body::None),
    r("POST", "/api/builds/{b}/cancel", KeyOrToken, Body::None),
    r("DELETE", "/api/builds/{b}", KeyOrToken, Body::None),
    r("POST", "/api/builds/{b}/retry", KeyOrToken, Body::None),
    r("GET", "/api/builds/statistics", Key, Body::None),
    r("GET", "/api/builds/active", Key, Body::None),
    r("POST", "/api/workers/register", Register, Json(r#"{"name":"n","capabilities":{"platforms":["ios"]}}"#)),
    r("GET", "/api/workers/poll", Worker, Body::None),
    r("GET", "/api/builds/{b}/source", Worker, Body::None),
    r("GET", "/api/builds/{b}/certs", Worker, Body::None),
    r("GET", "/api/builds/{b}/certs-secure", Worker, Body::None),
    r("POST", "/api/builds/{b}/logs", Worker, Json(r#"{"level":"info","message":"hi"}"#)),
    r("POST", "/api/builds/{b}/heartbeat", Worker, Json(r#"{"progress":1}"#)),
    r("POST", "/api/workers/heartbeat", Worker, Json(r#"{"build_id":"{b}"}"#)),
    r("POST", "/api/workers/result", Worker, Outcome),
    r("POST", "/api/workers/upload", Worker, Outcome),
    r("POST", "/api/workers/fail", Worker, Json(r#"{"build_id":"{b}","error":"x"}"#)),
    r("POST", "/api/workers/abandon", Worker, Json(r#"{"build_id":"{b}","reason":"x"}"#)),
    r("POST", "/api/workers/unregister", Worker, Body::None),
    r("POST", "/api/workers/{w}/unregister", Worker, Body::None),
    r("POST", "/api/builds/{b}/telemetry", Worker, Json(r#"{"type":"vm","timestamp":1,"data":{"cpu":5}}"#)),
    r("POST", "/api/workers/{w}/drain", Key, Body::None),
    r("POST", "/api/workers/{w}/undrain", Key, Body::None),
    r("POST", "/api/workers/{w}/approve", Key, Body::None),
    r("GET", "/api/workers", Key, Body::None),
    r("GET", "/api/workers/{w}/stats", Key, Body::None),
    r("POST", "/api/diagnostics/report", Worker, Json(r#"{"worker_id":"{w}","status":"healthy","duration_ms":1,"checks":[]}"#)),
    r("GET", "/api/diagnostics/{w}", Key, Body::None),
    r("GET", "/api/diagnostics/{w}/latest", Key, Body::None),
    r("GET", "/api/overview", Key, Body::None),
    r("GET", "/api/events", Key, Body::None),
    r("POST", "/api/keys", Key, Body::None),
    r("GET", "/api/keys", Key, Body::None),
    r("DELETE", "/api/keys/{k}", Key, Body::None),
    r("POST", "/api/keys/{k}/revoke", Key, Body::None),
    r("GET", "/health", Anyone, Body::None),
    r("GET", "/api/health", Anyone, Body::None),
    r("GET", "/api/stats", Anyone, Body::None),
    r("GET", "/public/stats", Anyone, Body::None),
    r("GET", "/healthz", Anyone, Body::None),
    r("GET", "/readyz", Anyone, Body::None),
    r("GET", "/metrics", Anyone, Body::None),
    r("GET", "/api/openapi.json", Anyone, Body::None),
];

/// The contract's table and the gateway's declarations name the same routes, each with the same
/// credential: a route added without its contract row, or a handler whose credential changed,
/// fails here. (`{x}` in a declared path matches any segment; `{k}` is a key id.)
#[test]
fn the_table_names_every_declared_route_with_its_credential() {
    let who = |w: Who| match w {
        Anyone => "anyone",
        Key => "api_key",
        Register => "register_key",
        KeyOrToken => "api_key_or_build_token",
        Worker => "worker",
    };
    let matches = |declared: &str, row: &str| {
        let (d, r): (Vec<&str>, Vec<&str>) =
            (declared.split('/').collect(), row.split('/').collect());
        d.len() == r.len() && d.iter().zip(&r).all(|(d, r)| d == r || d.starts_with('{'))
    };
    let declared = freeagent_gateway::declared_routes();
    let mut failures = vec![];
    for row in ROUTES {
        let found: Vec<_> = declared
            .iter()
            .filter(|(m, p, _)| m.eq_ignore_ascii_case(row.method) && matches(p, row.path))
            .collect();
        match found.as_slice() {
            [] => failures.push(format!(
                "{} {}: in the contract, not declared",
                row.method, row.path
            )),
            [(_, p, w)] if *w != who(row.who) => failures.push(format!(
                "{} {}: the contract says {}, the handler of {p} takes a credential for {w}",
                row.method,
                row.path,
                who(row.who)
            )),
            _ => {}
        }
    }
    for (m, p, _) in &declared {
        if !ROUTES
            .iter()
            .any(|r| m.eq_ignore_ascii_case(r.method) && matches(p, r.path))
        {
            failures.push(format!(
                "{} {p}: declared, with no row in the contract",
                m.to_uppercase()
            ));
        }
    }
    verdict("the contract and the declarations", failures);
}

/// A farm with one build (`a`), held by worker `holder`, plus another build (`other`).
struct Fixture {
    farm: Farm,
    a: support::Submitted,
    other: support::Submitted,
    holder: Worker,
}

async fn fixture() -> Fixture {
    let farm = Farm::start().await;
    let a = farm.submit("android").await;
    let holder = farm.register("holder", &["android"]).await;
    farm.claim(&holder.auth(), &a.id).await;
    let other = farm.submit("ios").await;
    Fixture {
        farm,
        a,
        other,
        holder,
    }
}

fn fill(t: &str, b: &str, w: &str) -> String {
    t.replace("{b}", b).replace("{w}", w)
}

/// Sends `route` for build `b` and worker `w`; `malformed` replaces the body by garbage of the
/// same content type.
async fn call(farm: &Farm, route: &Route, b: &str, w: &str, auth: &Auth, malformed: bool) -> Reply {
    let method = Method::from_bytes(route.method.as_bytes()).unwrap();
    // The seed's VM bootstrap names the build in a header too (`certs-secure` requires it).
    let req = farm
        .req(method, &fill(route.path, b, w), auth)
        .header("x-build-id", b);
    let req = match (route.body, malformed) {
        (Body::None, _) => req,
        (Json(_), true) => req
            .header("content-type", "application/json")
            .body("{not json"),
        (Json(t), false) => req
            .header("content-type", "application/json")
            .body(fill(t, b, w)),
        (Submit | Outcome, true) => req
            .header("content-type", "multipart/form-data; boundary=zzz")
            .body("--zzz\r\nnot a part"),
        (Submit, false) => req.multipart(Form::new().text("platform", "android").part(
            "source",
            Part::bytes(support::gzip(b"x")).file_name("s.tar.gz"),
        )),
        (Outcome, false) => req.multipart(
            Form::new()
                .text("build_id", b.to_owned())
                .text("success", "true")
                .part("result", Part::bytes(b"app".to_vec()).file_name("app.apk")),
        ),
    };
    send(req).await
}

/// Panics listing every disagreement.
fn verdict(what: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{what}: {} rows disagree with the contract:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check(failures: &mut Vec<String>, route: &Route, how: &str, r: &Reply, want: u16) {
    if r.status != want {
        failures.push(format!(
            "{} {} ({how}): want {want}, got {r}",
            route.method, route.path
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_is_401_whatever_the_body_or_id_and_public_routes_answer_anyone() {
    let f = fixture().await;
    let (w, unknown) = (f.holder.id.as_str(), unknown_build());
    let mut failures = vec![];
    for route in ROUTES {
        if route.who == Anyone {
            let r = call(&f.farm, route, &f.a.id, w, &Auth::None, false).await;
            check(&mut failures, route, "anyone", &r, 200);
            continue;
        }
        let r = call(&f.farm, route, &f.a.id, w, &Auth::None, false).await;
        check(&mut failures, route, "no credential", &r, 401);
        let r = call(&f.farm, route, &unknown, w, &Auth::None, false).await;
        check(
            &mut failures,
            route,
            "no credential, unknown build",
            &r,
            401,
        );
        if !matches!(route.body, Body::None) {
            let r = call(&f.farm, route, &f.a.id, w, &Auth::None, true).await;
            check(
                &mut failures,
                route,
                "no credential, malformed body",
                &r,
                401,
            );
        }
    }
    verdict("without credentials", failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_of_the_wrong_kind_is_403() {
    let f = fixture().await;
    let w = f.holder.id.as_str();
    let build_token = Auth::BuildToken(f.a.token.clone());
    let worker_token = f.holder.auth();
    let mut failures = vec![];
    for route in ROUTES {
        let wrong: Vec<(&str, &Auth)> = match route.who {
            Anyone => vec![],
            Key => vec![
                ("build token", &build_token),
                ("worker token", &worker_token),
            ],
            Register => vec![("build token", &build_token)],
            KeyOrToken => vec![("worker token", &worker_token)],
            Worker => vec![("build token", &build_token)],
        };
        for (how, auth) in wrong {
            let r = call(&f.farm, route, &f.a.id, w, auth, false).await;
            check(&mut failures, route, how, &r, 403);
        }
    }
    verdict("credentials of the wrong kind", failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_the_scope_a_route_needs_is_403() {
    let f = fixture().await;
    let registration = support::REGISTRATION_KEY.to_owned();
    // A worker the registration-only key registered: that key still may not act for it.
    let machine = f
        .farm
        .register_as(&registration, "machine", &["android"])
        .await;
    let reader = f.farm.add_key("reader", &["read"]).await;
    let mut failures = vec![];
    for route in ROUTES {
        let auth = match route.who {
            Anyone | Register => continue,
            Key | KeyOrToken => Auth::Key(registration.clone()),
            Worker => Auth::Legacy {
                key: registration.clone(),
                worker: machine.id.clone(),
            },
        };
        let r = call(&f.farm, route, &f.a.id, &machine.id, &auth, false).await;
        check(&mut failures, route, "registration-only key", &r, 403);
    }
    let reader = Auth::Key(reader);
    // Submitting, draining (admin) and registering workers each need a scope `read` lacks.
    let needs_more = |r: &&Route| {
        let writes = [
            "/api/builds",
            "/api/builds/submit",
            "/api/workers/{w}/drain",
            "/api/workers/{w}/undrain",
            "/api/workers/{w}/approve",
        ];
        (r.method == "POST" && writes.contains(&r.path))
            || r.path.starts_with("/api/keys")
            || r.who == Register
    };
    for route in ROUTES.iter().filter(needs_more) {
        let r = call(&f.farm, route, &f.a.id, &f.holder.id, &reader, false).await;
        check(&mut failures, route, "read-only key", &r, 403);
    }
    // Another build's token reaches only its build.
    let other = Auth::BuildToken(f.other.token.clone());
    for route in ROUTES.iter().filter(|r| r.who == KeyOrToken) {
        let r = call(&f.farm, route, &f.a.id, &f.holder.id, &other, false).await;
        check(&mut failures, route, "another build's token", &r, 403);
    }
    verdict("keys that do not grant the request", failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_build_is_404_after_auth_and_403_to_a_build_token() {
    let f = fixture().await;
    let (w, unknown) = (f.holder.id.as_str(), unknown_build());
    let mut failures = vec![];
    let names_a_build = |r: &&Route| {
        r.path.contains("{b}")
            || matches!(r.body, Json(t) if t.contains("{b}"))
            || matches!(r.body, Outcome)
    };
    for route in ROUTES.iter().filter(names_a_build) {
        let auth = match route.who {
            Worker => f.holder.auth(),
            _ => f.farm.key(),
        };
        let r = call(&f.farm, route, &unknown, w, &auth, false).await;
        check(
            &mut failures,
            route,
            "right credential, unknown build",
            &r,
            404,
        );
        if route.who == KeyOrToken {
            let token = Auth::BuildToken(f.a.token.clone());
            let r = call(&f.farm, route, &unknown, w, &token, false).await;
            check(
                &mut failures,
                route,
                "a build token, unknown build",
                &r,
                403,
            );
            let r = call(&f.farm, route, "not-a-build-id", w, &f.farm.key(), false).await;
            check(&mut failures, route, "a malformed id", &r, 404);
        }
    }
    verdict("unknown builds", failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_routes_refuse_a_key_without_a_worker_id_401_and_a_worker_it_did_not_register_403() {
    let f = fixture().await;
    // Keys A and B may both act as workers (neither is an admin key); A registers a worker.
    let key_a = f.farm.add_key("a", &["worker", "register_workers"]).await;
    let key_b = f.farm.add_key("b", &["worker", "register_workers"]).await;
    let wa = f.farm.register_as(&key_a, "wa", &["android"]).await;
    let mut failures = vec![];
    for route in ROUTES.iter().filter(|r| r.who == Worker) {
        // These name the worker themselves (its path, or the report's `worker_id`).
        if !route.path.contains("{w}") && !matches!(route.body, Json(t) if t.contains("{w}")) {
            let r = call(
                &f.farm,
                route,
                &f.a.id,
                &wa.id,
                &Auth::Key(key_a.clone()),
                false,
            )
            .await;
            check(&mut failures, route, "key A without a worker id", &r, 401);
        }
        let b_for_a = Auth::Legacy {
            key: key_b.clone(),
            worker: wa.id.clone(),
        };
        let r = call(&f.farm, route, &f.a.id, &wa.id, &b_for_a, false).await;
        check(&mut failures, route, "key B for A's worker", &r, 403);
    }
    // The legacy id may also come as the `worker_id` query parameter.
    let r = f
        .farm
        .get(
            &format!("/api/workers/poll?worker_id={}", wa.id),
            &Auth::Key(key_b.clone()),
        )
        .await;
    assert_eq!(r.status, 403, "key B polling as A's worker (query): {r}");
    let r = f
        .farm
        .get(
            &format!("/api/workers/poll?worker_id={}", wa.id),
            &Auth::Key(key_a),
        )
        .await;
    assert_eq!(r.status, 200, "key A polling as its own worker: {r}");
    verdict("legacy worker credentials", failures);
}

/// `{x}` segments of the document's paths match any segment.
fn documented(paths: &serde_json::Map<String, Value>, method: &str, path: &str) -> bool {
    let want: Vec<&str> = path.split('/').collect();
    paths.iter().any(|(p, ops)| {
        let got: Vec<&str> = p.split('/').collect();
        got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.starts_with('{') || g == w)
            && ops.get(method.to_lowercase()).is_some()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_of_the_contract() {
    let farm = Farm::start().await;
    let r = farm.get("/api/openapi.json", &Auth::None).await;
    assert_eq!(r.status, 200, "{r}");
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let missing: Vec<String> = ROUTES
        .iter()
        .map(|r| (r.method, fill(r.path, "x", "y")))
        .filter(|(m, p)| !documented(paths, m, p))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    verdict("undocumented routes", missing);
}
