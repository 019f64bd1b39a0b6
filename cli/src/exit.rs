//! How the CLI ends: one exit code per kind of ending, so a script tells a failed build from a
//! wrong key or a farm that is down; with `--json`, the error is also JSON on stderr
//! (`{error, code, hint}`, the gateway's own shape). The README's table lists the codes.

use freeagent_shared::api_error::ApiErrorBody;
use freeagent_shared::status::BuildStatus;
use serde_json::{Value, json};
use std::process::ExitCode;

/// The build failed (and errors of no other kind).
pub const FAILED: u8 = 1;
/// Wrong arguments, or a request the gateway refused as such (400, 404, 409, 413, 422): clap's
/// own code for a usage error.
pub const USAGE: u8 = 2;
/// The build was cancelled.
pub const CANCELLED: u8 = 3;
/// No credential, or one the gateway refused (401, 403).
pub const AUTH: u8 = 4;
/// The gateway could not be reached, failed (5xx) or asked to come back later (429).
pub const INFRASTRUCTURE: u8 = 5;
/// `--timeout` passed before the build ended (as `timeout(1)` says it).
pub const TIMED_OUT: u8 = 124;

/// The gateway answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{body}")]
    Api { status: u16, body: ApiErrorBody },
    /// An answer without the gateway's error body (a proxy's, an older gateway's).
    #[error("gateway answered {status}: {text}")]
    Other { status: u16, text: String },
}

/// The gateway could not be reached at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the gateway at {url}: {reason}")]
pub struct Unreachable {
    pub url: String,
    pub reason: String,
}

/// A command that needs an API key was given none.
#[derive(Debug, thiserror::Error)]
#[error("no API key: pass --api-key or set FREEAGENT_API_KEY (`freeagent dev` prints one)")]
pub struct NoKey;

/// The command was used wrongly in a way clap cannot see (an unknown setting, a missing default).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The exit code of a build that ended in `status`.
pub fn for_build(status: BuildStatus) -> ExitCode {
    ExitCode::from(match status {
        BuildStatus::Completed => return ExitCode::SUCCESS,
        BuildStatus::Cancelled => CANCELLED,
        _ => FAILED,
    })
}

fn for_status(status: u16) -> u8 {
    match status {
        401 | 403 => AUTH,
        429 | 500.. => INFRASTRUCTURE,
        _ => USAGE,
    }
}

/// The exit code of an error, and the error as `{error, code, hint}`.
pub fn classify(e: &anyhow::Error) -> (u8, Value) {
    let message = format!("{e:#}");
    if let Some(r) = e.downcast_ref::<Refused>() {
        return match r {
            Refused::Api { status, body } => (for_status(*status), json!(body)),
            Refused::Other { status, .. } => (
                for_status(*status),
                json!({"error": message, "code": format!("http_{status}")}),
            ),
        };
    }
    let (code, name, hint) = if e.downcast_ref::<Unreachable>().is_some() {
        (
            INFRASTRUCTURE,
            "unreachable",
            Some("check --gateway (FREEAGENT_GATEWAY_URL) and that the gateway runs"),
        )
    } else if e.downcast_ref::<NoKey>().is_some() {
        (AUTH, "unauthorized", None)
    } else if e.downcast_ref::<Usage>().is_some() {
        (USAGE, "bad_request", None)
    } else {
        (FAILED, "failed", None)
    };
    let mut body = json!({"error": message, "code": name});
    if let Some(h) = hint {
        body["hint"] = json!(h);
    }
    (code, body)
}

/// Prints an error as the command's caller asked (JSON with `--json`) and gives its exit code.
pub fn report(e: anyhow::Error) -> ExitCode {
    let (code, body) = classify(&e);
    if json_requested() {
        eprintln!("{body}");
    } else {
        eprintln!("error: {e:#}");
    }
    ExitCode::from(code)
}

/// Whether the command asked for JSON: its errors are then JSON too. Every command spells it
/// `--json`, a flag of its own.
pub fn json_requested() -> bool {
    std::env::args().any(|a| a == "--json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use freeagent_shared::api_error::ErrorCode;

    #[test]
    fn each_kind_of_ending_has_its_code() {
        let refused = |status| {
            anyhow::Error::new(Refused::Api {
                status,
                body: ApiErrorBody::new(ErrorCode::Forbidden, "no"),
            })
        };
        assert_eq!(classify(&refused(403)).0, AUTH);
        assert_eq!(classify(&refused(401)).0, AUTH);
        assert_eq!(classify(&refused(404)).0, USAGE);
        assert_eq!(classify(&refused(429)).0, INFRASTRUCTURE);
        assert_eq!(classify(&refused(503)).0, INFRASTRUCTURE);
        let unreachable = anyhow::Error::new(Unreachable {
            url: "http://x".into(),
            reason: "refused".into(),
        });
        let (code, body) = classify(&unreachable);
        assert_eq!(
            (code, body["code"].as_str()),
            (INFRASTRUCTURE, Some("unreachable"))
        );
        assert!(body["hint"].is_string());
        assert_eq!(classify(&anyhow::Error::new(NoKey)).0, AUTH);
        assert_eq!(classify(&anyhow::anyhow!("disk full")).0, FAILED);
        assert_eq!(for_build(BuildStatus::Cancelled), ExitCode::from(CANCELLED));
        assert_eq!(for_build(BuildStatus::Failed), ExitCode::from(FAILED));
    }

    #[test]
    fn a_refusal_keeps_the_gateways_own_body() {
        let e = anyhow::Error::new(Refused::Api {
            status: 404,
            body: ApiErrorBody::new(ErrorCode::NotFound, "build not found")
                .with_hint("check the id"),
        });
        let (_, body) = classify(&e);
        assert_eq!(body["error"], "build not found");
        assert_eq!(body["hint"], "check the id");
        assert!(body["code"].is_string());
    }
}
