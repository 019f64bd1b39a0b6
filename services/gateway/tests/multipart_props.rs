//! Property tests for the gateway's multipart handling. The routes that read forms
//! (`POST /api/builds`, `POST /api/workers/result`) authenticate against Postgres and report
//! through NATS before and while they read, so these drive the pieces they are built from
//! instead: axum's `Multipart` over arbitrary bodies and content types, read field by field the
//! way `submit::read_parts` and `worker_result::read_report` read them, with
//! `multipart::text` for text parts and `multipart::spool` for file parts.
//!
//! Properties: nothing panics; every refusal is a 4xx (a client's mistake is never a 500); a
//! well-formed form reads back exactly (text parts as sent, limits enforced); a spooled file is
//! the only thing written, it lands in the temporary directory whatever the part's `filename`
//! says, holds exactly the part's bytes, and is gone once dropped. That last property runs this
//! test binary again with `TMPDIR` set to a private directory, so it can see every file written.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{HeaderValue, Request, header};
use axum::response::IntoResponse;
use freeagent_gateway::multipart::{self, Spooled};
use proptest::prelude::*;
use std::path::PathBuf;

const BOUNDARY: &str = "fa-prop-boundary-7Qx";
/// Set (to the same path as `TMPDIR`) in the child run that checks what spooling writes.
const PRIVATE_TMP: &str = "FREEAGENT_PROP_PRIVATE_TMPDIR";

/// File parts, spooled to disk (as the result of an old worker's report is).
const FILE_PARTS: [&str; 3] = ["source", "certs", "result"];

#[derive(Debug, PartialEq)]
enum Read {
    Text(String, String),
    Spooled(String),
    Skipped,
}

/// What reading a form produced: the parts read, the status of the refusal that stopped it (if
/// any), and the spooled files (alive until the caller drops them).
struct Form {
    reads: Vec<Read>,
    refused: Option<u16>,
    spooled: Vec<Spooled>,
}

fn status(e: impl IntoResponse) -> u16 {
    e.into_response().status().as_u16()
}

/// Reads a form as the routes do: text parts under `limit`, file parts spooled under `limit`,
/// the part named `ignored` dropped unread.
async fn read_form(content_type: &str, body: Vec<u8>, limit: usize) -> Form {
    let mut form = Form {
        reads: vec![],
        refused: None,
        spooled: vec![],
    };
    let req = Request::builder()
        .method("POST")
        .uri("/")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    let mut mp = match Multipart::from_request(req, &()).await {
        Ok(mp) => mp,
        Err(rejection) => {
            form.refused = Some(status(rejection));
            return form;
        }
    };
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => return form,
            Err(e) => {
                form.refused = Some(status(multipart::malformed(e)));
                return form;
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        let read = if FILE_PARTS.contains(&name.as_str()) {
            multipart::spool(field, &name, limit as u64).await.map(|s| {
                form.spooled.push(s);
                Read::Spooled(name)
            })
        } else if name == "ignored" {
            drop(field);
            Ok(Read::Skipped)
        } else {
            multipart::text(field, &name, limit)
                .await
                .map(|t| Read::Text(name, t))
        };
        match read {
            Ok(r) => form.reads.push(r),
            Err(e) => {
                form.refused = Some(status(e));
                return form;
            }
        }
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[derive(Debug, Clone)]
struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    content: Vec<u8>,
}

fn part() -> impl Strategy<Value = Part> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "platform", "metadata", "priority", "build_id", "success", "source", "certs", "result",
            "ignored",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{0,10}",
    ];
    let filename = prop::option::of(prop_oneof![
        Just("../../../../etc/passwd".to_owned()),
        Just("/etc/shadow".to_owned()),
        Just("..".to_owned()),
        Just("a/../../b.tar.gz".to_owned()),
        "[a-zA-Z0-9./_-]{0,30}",
    ]);
    let content = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        ".{0,60}".prop_map(String::into_bytes),
        "[a-z0-9 ]{0,300}".prop_map(String::into_bytes),
    ];
    (
        name,
        filename,
        prop::option::of(Just("application/octet-stream".to_owned())),
        content,
    )
        .prop_map(|(name, filename, content_type, content)| Part {
            name,
            filename,
            content_type,
            content,
        })
}

fn body(parts: &[Part]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend(format!("--{BOUNDARY}\r\n").into_bytes());
        b.extend(format!("Content-Disposition: form-data; name=\"{}\"", p.name).into_bytes());
        if let Some(f) = &p.filename {
            b.extend(format!("; filename=\"{f}\"").into_bytes());
        }
        b.extend(b"\r\n");
        if let Some(t) = &p.content_type {
            b.extend(format!("Content-Type: {t}\r\n").into_bytes());
        }
        b.extend(b"\r\n");
        b.extend(&p.content);
        b.extend(b"\r\n");
    }
    b.extend(format!("--{BOUNDARY}--\r\n").into_bytes());
    b
}

fn form_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// The temporary directory, when this run has a private one (the child run).
fn private_tmp() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os(PRIVATE_TMP)?);
    assert_eq!(std::env::temp_dir(), dir, "TMPDIR is the private directory");
    Some(dir)
}

fn files_in(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            assert!(path.is_file(), "only plain files are spooled: {path:?}");
            std::fs::read(path).unwrap()
        })
        .collect();
    out.sort();
    out
}

/// Checks a well-formed form against what the routes must make of it.
fn check_well_formed(parts: &[Part], limit: usize) -> Result<(), TestCaseError> {
    let form = run(read_form(&form_content_type(), body(parts), limit));
    let mut reads = form.reads.iter();
    let mut spooled_contents = vec![];
    for p in parts {
        let name = p.name.clone();
        if FILE_PARTS.contains(&p.name.as_str()) {
            if p.content.len() > limit {
                prop_assert_eq!(reads.next(), None);
                prop_assert_eq!(form.refused, Some(413));
                break;
            }
            prop_assert_eq!(reads.next(), Some(&Read::Spooled(name)));
            spooled_contents.push(p.content.clone());
        } else if p.name == "ignored" {
            prop_assert_eq!(reads.next(), Some(&Read::Skipped));
        } else if p.content.len() > limit {
            prop_assert_eq!(reads.next(), None);
            prop_assert_eq!(form.refused, Some(413));
            break;
        } else {
            match String::from_utf8(p.content.clone()) {
                Err(_) => {
                    prop_assert_eq!(reads.next(), None);
                    prop_assert_eq!(form.refused, Some(400));
                    break;
                }
                Ok(text) => match reads.next() {
                    Some(r) => prop_assert_eq!(r, &Read::Text(name, text)),
                    // Text the database cannot hold (NUL) may be refused, as a 400.
                    None => {
                        prop_assert!(text.contains('\0'), "{:?} refused", text);
                        prop_assert_eq!(form.refused, Some(400));
                        break;
                    }
                },
            }
        }
    }
    if form.refused.is_none() {
        prop_assert_eq!(reads.next(), None);
    }
    if let Some(dir) = private_tmp() {
        // The spooled files, and nothing else: whatever the filenames said.
        spooled_contents.sort();
        prop_assert_eq!(files_in(&dir), spooled_contents);
        drop(form.spooled);
        prop_assert!(
            files_in(&dir).is_empty(),
            "spooled files outlive their Spooled"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bodies_are_read_or_refused_with_a_4xx(
        content_type in prop_oneof![
            Just(form_content_type()),
            Just("multipart/form-data".to_owned()),
            "multipart/form-data; boundary=.{0,20}",
            ".{0,40}",
        ]
        // What hyper would let through as a header at all.
        .prop_filter("a header value", |s| HeaderValue::from_str(s).is_ok()),
        body in prop::collection::vec(any::<u8>(), 0..600),
        limit in 0usize..100,
    ) {
        let form = run(read_form(&content_type, body, limit));
        if let Some(s) = form.refused {
            prop_assert!((400..500).contains(&s), "refused with {s}");
        }
    }

    #[test]
    fn damaged_forms_are_read_or_refused_with_a_4xx(
        parts in prop::collection::vec(part(), 0..5),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
        limit in prop_oneof![0usize..50, Just(1 << 20)],
    ) {
        let mut b = body(&parts);
        let i = at.index(b.len());
        if cut {
            b.truncate(i);
        } else {
            b[i] = byte;
        }
        let form = run(read_form(&form_content_type(), b, limit));
        if let Some(s) = form.refused {
            prop_assert!((400..500).contains(&s), "refused with {s}");
        }
    }

    #[test]
    fn well_formed_forms_read_back_exactly(
        parts in prop::collection::vec(part(), 0..6),
        limit in prop_oneof![0usize..120, Just(1 << 20)],
    ) {
        check_well_formed(&parts, limit)?;
    }
}

/// Runs `well_formed_forms_read_back_exactly` again in a child process whose temporary
/// directory is private, so that it can check every file spooling writes.
#[test]
fn spooling_writes_only_its_own_temporary_files() {
    if std::env::var_os(PRIVATE_TMP).is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "well_formed_forms_read_back_exactly",
            "--test-threads=1",
        ])
        .env("TMPDIR", tmp.path())
        .env(PRIVATE_TMP, tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
