//! One build on this worker: keep the lease with heartbeats, listen for cancel, prepare the
//! workspace, run the command, then upload the artifact and report — or report the failure.
//! Losing the lease or a cancel stops the command and uploads nothing.

use crate::agent::Agent;
use crate::executor::{self, Exit};
use crate::workspace::{self, Workspace, WorkspaceError};
use crate::{artifact, log_stream, sandbox};
use freeagent_shared::wire::{self, AbandonRequest};
use freeagent_shared::wire::{
    CompleteRequest, FailRequest, FinishReply, HeartbeatReply, HeartbeatRequest, JobGrant, LogLevel,
};
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Job {
    pub agent: Agent,
    pub grant: JobGrant,
    /// The newest upload capability (heartbeat replies renew it).
    pub result_url: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Job {
    pub fn new(agent: Agent, grant: JobGrant) -> Self {
        let result_url = std::sync::Arc::new(std::sync::Mutex::new(grant.result_url.clone()));
        Self {
            agent,
            grant,
            result_url,
        }
    }

    fn current_result_url(&self) -> String {
        match self.result_url.lock() {
            Ok(u) => u.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

enum Outcome {
    Complete(freeagent_shared::wire::StoredObject),
    Fail(String),
    Stopped,
}

impl Job {
    #[tracing::instrument(skip_all, fields(build_id = %self.grant.build_id, attempt = %self.grant.attempt, worker_id = %self.agent.worker_id))]
    pub async fn run(self, shutdown: CancellationToken) {
        let stop = shutdown.child_token();
        let heartbeat = tokio::spawn(self.keep_lease(stop.clone()));
        let cancel_watch = tokio::spawn(self.watch_cancel(stop.clone()));
        let (log, log_done) = log_stream::start(
            self.agent.scheduler.clone(),
            self.grant.build_id,
            self.agent.worker_id,
            self.grant.attempt,
            self.agent.config.log_caps,
        );

        let outcome = self.execute(&log, &stop).await;
        // No capability, token or key reaches the build's error message or log.
        let outcome = match outcome {
            Outcome::Fail(msg) => {
                Outcome::Fail(freeagent_shared::redact::redact(&msg).into_owned())
            }
            other => other,
        };
        if let Outcome::Fail(msg) = &outcome {
            log.line(LogLevel::Error, msg.clone()).await;
        }
        // Every log line is acknowledged before the outcome is reported.
        drop(log);
        let lines = log_done.await.unwrap_or(0);
        cancel_watch.abort();
        metrics::counter!(freeagent_shared::metrics::WORKER_BUILDS, "outcome" => match &outcome {
            Outcome::Complete(_) => "completed",
            Outcome::Fail(_) => "failed",
            Outcome::Stopped => "stopped",
        })
        .increment(1);
        let reply = match outcome {
            // Stopped because this worker is shutting down: hand the build back at once rather
            // than let its lease run out. Stopped for any other reason (cancel, lease lost,
            // timeout): the scheduler already moved on; nothing to report.
            Outcome::Stopped if shutdown.is_cancelled() => {
                let req = AbandonRequest {
                    build_id: self.grant.build_id,
                    attempt: self.grant.attempt,
                    worker_id: self.agent.worker_id,
                    reason: "the worker shut down".into(),
                };
                self.agent.scheduler.abandon(&req).await
            }
            Outcome::Stopped => {
                heartbeat.abort();
                tracing::info!(lines, "build stopped; nothing reported");
                return;
            }
            Outcome::Complete(result) => {
                let req = CompleteRequest {
                    build_id: self.grant.build_id,
                    attempt: self.grant.attempt,
                    worker_id: self.agent.worker_id,
                    result,
                };
                self.agent.scheduler.complete(&req).await
            }
            Outcome::Fail(error) => {
                let req = FailRequest {
                    build_id: self.grant.build_id,
                    attempt: self.grant.attempt,
                    worker_id: self.agent.worker_id,
                    error,
                };
                self.agent.scheduler.fail(&req).await
            }
        };
        // The lease is kept until the outcome is recorded: a report that has to be retried
        // (a scheduler died with it) must not let the build be taken away meanwhile.
        heartbeat.abort();
        match reply {
            Ok(FinishReply::Recorded { status }) => {
                tracing::info!(%status, lines, "build reported")
            }
            Ok(other) => tracing::warn!(reply = ?other, "the scheduler refused the outcome"),
            Err(e) => {
                tracing::error!(error = %e, "could not report the outcome; the lease will expire and the build be retried")
            }
        }
    }

    async fn execute(&self, log: &log_stream::LogSink, stop: &CancellationToken) -> Outcome {
        let g = &self.grant;
        let c = &self.agent.config;
        // On a file system of its own (`mkfs` and `mount`): off the async threads.
        let (parent, disks) = (c.work_dir.clone(), c.sandbox.disks().cloned());
        let made = tokio::task::spawn_blocking(move || {
            Workspace::create_sized(parent.as_deref(), disks.as_ref())
        });
        let ws = match made.await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                return Outcome::Fail(format!("worker could not create a workspace: {e}"));
            }
            Err(e) => return Outcome::Fail(format!("worker could not create a workspace: {e}")),
        };
        // A source too big for the build's own disk fails the build, and says so.
        let fail = |e: WorkspaceError| {
            Outcome::Fail(match ws.disk_full() {
                Some(why) => format!("{why} ({e})"),
                None => e.to_string(),
            })
        };
        let archive = ws.file("source.archive");
        match workspace::download(&self.agent.http, &g.source_url, &archive, "source").await {
            Ok(sha) if sha == g.source_sha256 => {}
            Ok(sha) => {
                return Outcome::Fail(format!(
                    "source checksum mismatch: expected {}, got {sha}",
                    g.source_sha256
                ));
            }
            Err(e) => return fail(e),
        }
        let (a, src, unpack_limits) = (archive.clone(), ws.source_dir(), c.unpack);
        match tokio::task::spawn_blocking(move || workspace::unpack(&a, &src, unpack_limits)).await
        {
            Ok(Ok(n)) => {
                log.line(LogLevel::Info, format!("[freeagent] unpacked {n} files"))
                    .await
            }
            Ok(Err(e)) => return fail(e),
            Err(e) => return Outcome::Fail(format!("unpacking failed: {e}")),
        }
        // The archive is not needed past this point: its space goes back to the build.
        let _ = tokio::fs::remove_file(&archive).await;
        // The build sees only the documented variables, inside the sandbox (sandbox.rs).
        let mut certs_path = None;
        if let Some(url) = &g.certs_url {
            if let Err(refusal) = c.sandbox.allows_certs() {
                return Outcome::Fail(refusal);
            }
            let certs = ws.file("certs");
            match workspace::download(&self.agent.http, url, &certs, "certs").await {
                Err(e) => return Outcome::Fail(e.to_string()),
                Ok(sha) if g.certs_sha256.as_ref().is_some_and(|want| *want != sha) => {
                    return Outcome::Fail(format!(
                        "certs checksum mismatch: expected {}, got {sha}",
                        g.certs_sha256.as_deref().unwrap_or_default()
                    ));
                }
                Ok(_) => {}
            }
            certs_path = Some(certs);
        }
        let build = sandbox::Build {
            id: g.build_id.to_string(),
            attempt: g.attempt.to_string(),
            platform: g.platform.to_string(),
        };
        let launch = match c.sandbox.prepare(&ws, &build, certs_path.as_deref()) {
            Ok(l) => l,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        if let Some(warning) = c.sandbox.warning() {
            log.line(LogLevel::Warn, warning.to_owned()).await;
        }
        if stop.is_cancelled() {
            return Outcome::Stopped;
        }
        log.line(
            LogLevel::Info,
            format!("[freeagent] running: {}", c.build_command),
        )
        .await;
        match executor::run(&c.build_command, &launch, log, stop, c.kill_grace).await {
            Err(e) => Outcome::Fail(format!("could not start the build command: {e}")),
            Ok(Exit::Stopped) => Outcome::Stopped,
            Ok(Exit::Failed(msg)) => Outcome::Fail(msg),
            Ok(Exit::Success) => {
                if stop.is_cancelled() {
                    return Outcome::Stopped;
                }
                let path = match artifact::find(&ws.output_dir(), g.platform) {
                    Ok(p) => p,
                    Err(e) => return Outcome::Fail(e.to_string()),
                };
                let url = || self.current_result_url();
                let upload = artifact::upload_with_retries(&self.agent.http, url, &path);
                // A cancel (or a lost lease) while storage is away ends the wait.
                let uploaded = tokio::select! {
                    r = upload => r,
                    () = stop.cancelled() => return Outcome::Stopped,
                };
                match uploaded {
                    Ok(stored) => {
                        log.line(
                            LogLevel::Info,
                            format!(
                                "[freeagent] artifact uploaded: {} bytes, sha256 {}",
                                stored.size, stored.sha256
                            ),
                        )
                        .await;
                        Outcome::Complete(stored)
                    }
                    Err(e) => Outcome::Fail(e.to_string()),
                }
            }
        }
    }

    /// Heartbeats from the start (the first one moves the build to `building`); a refusal stops it.
    fn keep_lease(
        &self,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let scheduler = self.agent.scheduler.clone();
        let agent = self.agent.clone();
        let (build_id, attempt) = (self.grant.build_id, self.grant.attempt);
        let result = self.result_url.clone();
        let every = Duration::from_millis(self.grant.heartbeat_interval_ms.max(100));
        async move {
            loop {
                let req = HeartbeatRequest {
                    build_id,
                    attempt,
                    worker_id: agent.worker_id,
                    progress: None,
                };
                match scheduler
                    .heartbeat(&req, every.max(Duration::from_secs(1)))
                    .await
                {
                    Ok(HeartbeatReply::Renewed { result_url, .. }) => {
                        // Upload capabilities live minutes: keep the newest.
                        if let (Some(url), Ok(mut current)) = (result_url, result.lock()) {
                            *current = url;
                        }
                    }
                    Ok(HeartbeatReply::Stop { reason, status }) => {
                        tracing::warn!(?reason, ?status, "lease lost; stopping the build");
                        stop.cancel();
                        return;
                    }
                    Ok(
                        HeartbeatReply::Error { message } | HeartbeatReply::Unavailable { message },
                    ) => {
                        tracing::warn!(%message, "heartbeat refused; will retry")
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        }
    }

    fn watch_cancel(
        &self,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let nats = self.agent.nats.clone();
        let subject = self.grant.cancel_subject.clone();
        let (build, attempt) = (self.grant.build_id, self.grant.attempt);
        async move {
            let Ok(mut sub) = nats.subscribe(subject).await else {
                return;
            };
            // Only an order for this very attempt stops it: other messages can be made to land
            // here (a JetStream acknowledgement sent to a reply subject another worker chose).
            while let Some(msg) = sub.next().await {
                if wire::CancelOrder::stops(&msg.payload, build, attempt) {
                    tracing::info!("build cancelled");
                    stop.cancel();
                    return;
                }
                tracing::warn!(
                    payload = %String::from_utf8_lossy(&msg.payload[..msg.payload.len().min(200)]),
                    "ignoring a message on the cancel subject that is no cancel of this attempt"
                );
            }
        }
    }
}
