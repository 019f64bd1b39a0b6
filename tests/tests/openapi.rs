//! `GET /api/openapi.json` lists every route the gateway serves (the router and the document are
//! built from one table), every documented operation is served, and the contract's paths are in it;
//! and every repository path the documents name exists.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::{Farm, FarmOpts};
use serde_json::Value;

/// Every path of the contract, `docs/http-api.md`, in the router's `{param}` spelling.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/api/builds"),
    ("post", "/api/builds/submit"),
    ("get", "/api/builds"),
    ("get", "/api/builds/{id}"),
    ("get", "/api/builds/{id}/status"),
    ("get", "/api/builds/{id}/logs"),
    ("get", "/api/builds/{id}/download"),
    ("get", "/api/builds/{id}/download/{kind}"),
    ("post", "/api/builds/{id}/cancel"),
    ("delete", "/api/builds/{id}"),
    ("post", "/api/builds/{id}/retry"),
    ("get", "/api/builds/statistics"),
    ("get", "/api/builds/active"),
    ("post", "/api/workers/register"),
    ("get", "/api/workers/poll"),
    ("get", "/api/builds/{id}/source"),
    ("get", "/api/builds/{id}/certs"),
    ("post", "/api/builds/{id}/logs"),
    ("post", "/api/builds/{id}/heartbeat"),
    ("post", "/api/workers/heartbeat"),
    ("post", "/api/workers/result"),
    ("post", "/api/workers/upload"),
    ("post", "/api/workers/fail"),
    ("post", "/api/workers/abandon"),
    ("post", "/api/workers/unregister"),
    ("post", "/api/workers/{id}/drain"),
    ("post", "/api/workers/{id}/approve"),
    ("get", "/api/workers"),
    ("get", "/api/workers/{id}/stats"),
    ("post", "/api/diagnostics/report"),
    ("get", "/api/diagnostics/{worker_id}"),
    ("get", "/api/diagnostics/{worker_id}/latest"),
    ("get", "/health"),
    ("get", "/api/health"),
    ("get", "/api/stats"),
    ("get", "/public/stats"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("post", "/api/builds/{id}/telemetry"),
    ("post", "/api/workers/{id}/unregister"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_the_router_agree() {
    let farm = Farm::start(FarmOpts {
        workers: 0,
        ..Default::default()
    })
    .await;
    let doc: Value = farm
        .http
        .get(format!("{}/api/openapi.json", farm.gateway))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    the_committed_document_is_the_served_one(&doc);
    every_operation_names_its_reply(&doc);
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in CONTRACT {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is missing from the document"
        );
    }
    let mut operations = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            operations += 1;
            let url = format!(
                "{}{}",
                farm.gateway,
                path.replace("{id}", "01a21ac6-0000-7000-8000-000000000000")
                    .replace("{worker_id}", "01a21ac6-0000-7000-8000-000000000000")
                    .replace("{kind}", "result")
            );
            let req = match method.as_str() {
                "get" => farm.http.get(&url),
                "post" => farm.http.post(&url),
                "delete" => farm.http.delete(&url),
                other => panic!("unexpected method {other}"),
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path} is documented but not served");
            assert!(
                !body.contains("route not found"),
                "{method} {path} is documented but not served"
            );
            // Served routes answer a stranger with a clear status, never a 5xx.
            assert!(
                status < 500 || path == "/readyz",
                "{method} {path} answered {status}: {body}"
            );
        }
    }
    assert!(operations >= CONTRACT.len());
    // An undocumented path is the fallback.
    let r = farm
        .http
        .get(format!("{}/api/nothing", farm.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// `docs/openapi.json` is what the gateway serves; `UPDATE_OPENAPI=1` rewrites it.
fn the_committed_document_is_the_served_one(served: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let text = serde_json::to_string_pretty(served).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "docs/openapi.json differs from the served document: regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p freeagent-tests --test openapi` and commit it"
    );
}

/// Every operation documents its success reply and every `$ref` resolves.
fn every_operation_names_its_reply(doc: &Value) {
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let ok = responses
                .iter()
                .find(|(code, _)| code.starts_with('2'))
                .unwrap_or_else(|| panic!("{method} {path} has no success reply"));
            if path != "/api/openapi.json" {
                assert!(
                    ok.1.get("content").is_some(),
                    "{method} {path} does not say what it replies"
                );
            }
        }
    }
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "unresolved $ref {name}");
    }
}

/// Every repository path the documents name exists: a path in backticks that starts at one of
/// the repository's top folders, and every relative link. Docs that cite a file that moved or
/// never existed send a newcomer nowhere.
#[test]
fn every_repository_path_the_docs_name_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs: Vec<std::path::PathBuf> = ["README.md", "ARCHITECTURE.md"]
        .iter()
        .map(|d| root.join(d))
        .filter(|p| p.exists())
        .collect();
    for dir in ["docs", "docs/adr"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "md") {
                docs.push(entry.path());
            }
        }
    }
    const TOP: &[&str] = &[
        "services/",
        "shared/",
        "cli/",
        "tests/",
        "docs/",
        "migrations/",
        "scripts/",
        "examples/",
        ".ci/",
    ];
    let mut missing = vec![];
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        let name = doc.strip_prefix(&root).unwrap().display().to_string();
        // Paths in backticks, relative to the repository.
        for (i, span) in text.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            for token in span.split_whitespace() {
                let path = token
                    .split(['#', ':'])
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches([',', '.', ';', ')']);
                let placeholder = ['*', '<', '{', '…', '$'].iter().any(|c| path.contains(*c))
                    || path.contains("...");
                if TOP.iter().any(|t| path.starts_with(t))
                    && !placeholder
                    && !root.join(path).exists()
                {
                    missing.push(format!("{name}: `{path}`"));
                }
            }
        }
        // Relative links, relative to the document.
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            if !doc.parent().unwrap().join(path).exists() {
                missing.push(format!("{name}: link ({target})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs name paths that do not exist:\n{}",
        missing.join("\n")
    );
}
