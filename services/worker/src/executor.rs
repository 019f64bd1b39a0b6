//! Runs the build command in its own process group, streams its stdout and stderr as log lines,
//! and on cancel ends the whole group: SIGTERM, then SIGKILL after a grace period.

use crate::config::MAX_LOG_LINE;
use crate::log_stream::LogSink;
use freeagent_shared::wire::LogLevel;
use futures::StreamExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Success,
    Failed(String),
    /// Cancelled, lease lost or shutting down: the group was ended.
    Stopped,
}

pub async fn run(
    command: &str,
    cwd: &Path,
    env: &[(String, String)],
    log: &LogSink,
    stop: &CancellationToken,
    kill_grace: Duration,
) -> std::io::Result<Exit> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let pgid = child.id().map(|p| p as i32);
    let readers = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(pump(o, log.clone(), LogLevel::Info))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(pump(e, log.clone(), LogLevel::Warn))),
    ];
    let exit = tokio::select! {
        status = child.wait() => {
            let status = status?;
            if status.success() {
                Exit::Success
            } else {
                Exit::Failed(match status.code() {
                    Some(code) => format!("build command exited with status {code}"),
                    None => "build command was killed by a signal".to_owned(),
                })
            }
        }
        _ = stop.cancelled() => {
            signal_group(pgid, nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(kill_grace, child.wait()).await.is_err() {
                signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait().await;
            }
            Exit::Stopped
        }
    };
    // Whatever the command left running in its group goes too.
    signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    for r in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    Ok(exit)
}

fn signal_group(pgid: Option<i32>, sig: nix::sys::signal::Signal) {
    if let Some(p) = pgid {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(p), sig);
    }
}

async fn pump(out: impl AsyncRead + Unpin, log: LogSink, level: LogLevel) {
    let mut lines = FramedRead::new(out, LinesCodec::new_with_max_length(MAX_LOG_LINE));
    while let Some(line) = lines.next().await {
        match line {
            Ok(l) => log.line(level, l).await,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                log.line(
                    level,
                    format!("[a line longer than {MAX_LOG_LINE} bytes was dropped]"),
                )
                .await
            }
            Err(LinesCodecError::Io(_)) => break,
        }
    }
}
