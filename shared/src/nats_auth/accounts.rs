//! A farm's two NATS accounts (ADR-0016): the farm's own, which holds the streams and the
//! services, and its workers', which has no JetStream and imports from the farm's account only
//! what workers use. Every import but the cancels is a *service* import, so NATS replaces the
//! reply subject a worker chose with one of its own (`_R_.…`) in the farm's account and carries
//! the answer back: whatever reply subject a worker picks, the farm's account (the scheduler,
//! JetStream) never publishes on it there. A reply subject of `$JS.API.STREAM.PURGE.LOGS` then
//! names a subject of the workers' account, where no stream lives and nothing listens.

use super::jwt::{Export, ExportType, Import, ResponseType};
use crate::subjects;

/// Which of a farm's accounts a JWT describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRole {
    /// The farm's account: JetStream, and the exports its workers import.
    Farm,
    /// The workers' account: no JetStream; imports from `farm` (its public key).
    Workers { farm: String },
}

/// One subject the farm's account shares with its workers.
struct Shared {
    name: &'static str,
    subject: String,
    kind: ExportType,
    response: Option<ResponseType>,
}

/// What a worker publishes or subscribes to outside its own account, and nothing else. The
/// per-worker user permissions (`permissions::Role::Worker`) still narrow each worker to its
/// own id and queues inside these.
fn shared() -> Vec<Shared> {
    let builds = subjects::BUILDS_STREAM;
    let service = |name, subject: String, response| Shared {
        name,
        subject,
        kind: ExportType::Service,
        response: Some(response),
    };
    vec![
        // `scheduler.<op>.<worker>`: one reply per request. Not `scheduler.>`: the wake,
        // cancelled and revoked notices (two tokens) stay inside the farm's account.
        service(
            "worker operations",
            subjects::OPERATIONS.into(),
            ResponseType::Singleton,
        ),
        // Log lines are not imported: they travel as an operation (`scheduler.log.<worker>`)
        // and the scheduler stores them once it has checked the sender holds the attempt.
        // One pull is answered by as many dispatches (and status messages) as it asked for.
        service(
            "dispatch pulls",
            format!("$JS.API.CONSUMER.MSG.NEXT.{builds}.>"),
            ResponseType::Stream,
        ),
        service(
            "queue consumer look-ups",
            format!("$JS.API.CONSUMER.INFO.{builds}.>"),
            ResponseType::Singleton,
        ),
        // No worker may publish here (its user permissions do not list it). The import is
        // there so that the server does not answer the workers account's JetStream API
        // itself: for an account without JetStream it adds its own `$JS.API.>` responder
        // ("JetStream not enabled for account", 10039), which would race the farm's answers,
        // unless the account imports `$JS.API.INFO` from another (nats-server
        // `enableJetStreamInfoServiceImportOnly`, 2.9 to today).
        service(
            "JetStream through the farm",
            "$JS.API.INFO".into(),
            ResponseType::Singleton,
        ),
        // A plain ack has no reply; a synchronous one gets one.
        service(
            "dispatch acks",
            format!("$JS.ACK.{builds}.>"),
            ResponseType::Singleton,
        ),
        // `cancel.<worker>.<build>`, published by the scheduler only; each worker may
        // subscribe to its own.
        Shared {
            name: "cancels",
            subject: "cancel.>".into(),
            kind: ExportType::Stream,
            response: None,
        },
    ]
}

/// The farm account's exports. They are public (no activation token): only an account JWT
/// signed by the operator can import them, and whoever holds the operator key can re-sign the
/// farm's account anyway.
pub fn farm_exports() -> Vec<Export> {
    shared()
        .into_iter()
        .map(|s| Export {
            name: s.name.into(),
            subject: s.subject,
            kind: s.kind,
            response_type: s.response,
        })
        .collect()
}

/// The workers account's imports from the farm's account `farm`, each under its own subject
/// (workers publish and subscribe on the same subjects as when they lived in the farm's
/// account).
pub fn worker_imports(farm: &str) -> Vec<Import> {
    shared()
        .into_iter()
        .map(|s| Import {
            name: s.name.into(),
            subject: s.subject,
            account: farm.to_owned(),
            kind: s.kind,
            local_subject: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_import_every_export_and_only_cancels_as_a_stream() {
        let exports = farm_exports();
        let imports = worker_imports("AFARM");
        assert_eq!(exports.len(), imports.len());
        for (e, i) in exports.iter().zip(&imports) {
            assert_eq!((&e.subject, e.kind), (&i.subject, i.kind));
            assert_eq!(i.account, "AFARM");
            assert_eq!(e.kind == ExportType::Stream, e.subject == "cancel.>");
        }
        // Nothing of the JetStream API beyond pulling and looking up BUILDS' consumers.
        assert!(
            exports
                .iter()
                .filter(|e| e.subject.starts_with("$JS.API."))
                .all(
                    |e| e.subject.starts_with("$JS.API.CONSUMER.MSG.NEXT.BUILDS.")
                        || e.subject.starts_with("$JS.API.CONSUMER.INFO.BUILDS.")
                        || e.subject == "$JS.API.INFO"
                )
        );
    }

    #[test]
    fn export_json_follows_the_nats_schema() {
        let json = serde_json::to_value(farm_exports()).unwrap();
        // The dispatch pulls: one request, many answers.
        assert_eq!(json[1]["type"], "service");
        assert_eq!(json[1]["response_type"], "Stream");
        let cancels = json.as_array().unwrap().last().unwrap();
        assert_eq!(cancels["type"], "stream");
        assert!(cancels.get("response_type").is_none());
        let json = serde_json::to_value(worker_imports("AFARM")).unwrap();
        assert_eq!(json[0]["account"], "AFARM");
        assert!(json[0].get("local_subject").is_none());
    }
}
