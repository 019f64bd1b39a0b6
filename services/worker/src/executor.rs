//! Runs the build command as `sandbox.rs` prepared it, streams its stdout and stderr as log
//! lines, and on cancel ends everything the build started: SIGTERM, then SIGKILL after a grace
//! period. A sandboxed build is reached through its PID namespace (daemons that called
//! `setsid` left the process group, not the namespace); an unsandboxed one through its process
//! group.

use crate::config::MAX_LOG_LINE;
use crate::log_stream::LogSink;
use crate::sandbox::{self, Launch, Level};
use freeagent_shared::wire::LogStream;
use futures::StreamExt;
use nix::sys::signal::Signal;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncRead;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

/// Once the build exited, the output still in its pipes is read to the end: a reader is waited
/// for while it makes progress (up to `READ_OUT_MAX`), and left once idle this long (something
/// that left the build's group holds the pipe open).
const READ_OUT_IDLE: Duration = Duration::from_secs(5);
const READ_OUT_MAX: Duration = Duration::from_secs(120);

#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Success,
    Failed(String),
    /// Cancelled, lease lost or shutting down: everything the build started was ended.
    Stopped,
}

pub async fn run(
    command: &str,
    launch: &Launch,
    log: &LogSink,
    stop: &CancellationToken,
    kill_grace: Duration,
) -> std::io::Result<Exit> {
    let mut child = tokio::process::Command::from(launch.command(command))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Killing `unshare` kills the namespace's pid 1 (`--kill-child`), and with it the rest.
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id();
    let read = Arc::new(AtomicU64::new(0));
    let readers = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(pump(o, log.clone(), LogStream::Stdout, read.clone()))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(pump(e, log.clone(), LogStream::Stderr, read.clone()))),
    ];
    let exit = tokio::select! {
        status = child.wait() => {
            let status = status?;
            if status.success() {
                Exit::Success
            } else if let Some(why) = launch.out_of_memory() {
                // A build failure, not the machine's: the next attempt would meet the same limit.
                Exit::Failed(why)
            } else if let Some(why) = launch.disk_full() {
                // The same for a build that filled its own disk: the next attempt would too.
                Exit::Failed(why)
            } else {
                Exit::Failed(match status.code() {
                    Some(code) => format!("build command exited with status {code}"),
                    None => "build command was killed by a signal".to_owned(),
                })
            }
        }
        _ = stop.cancelled() => {
            // Signals go out only while `unshare` is unreaped: its namespace id cannot have
            // been reused by then.
            sandbox::signal_build(launch.level(), pid, Signal::SIGTERM);
            if tokio::time::timeout(kill_grace, child.wait()).await.is_err() {
                sandbox::signal_build(launch.level(), pid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            Exit::Stopped
        }
    };
    // A sandboxed build's namespace ended with its pid 1. Unsandboxed, whatever the command
    // left running in its group goes now (what left the group survives: see docs/sandbox.md).
    if launch.level() == Level::None {
        sandbox::signal_build(Level::None, pid, Signal::SIGKILL);
    }
    // A burst printed just before the exit can still fill the pipes: waiting a fixed time
    // instead lost the end of a 20,000-line log on a loaded machine.
    let started = Instant::now();
    for mut r in readers.into_iter().flatten() {
        loop {
            let before = read.load(Ordering::Relaxed);
            if tokio::time::timeout(READ_OUT_IDLE, &mut r).await.is_ok() {
                break;
            }
            if read.load(Ordering::Relaxed) == before || started.elapsed() > READ_OUT_MAX {
                r.abort();
                break;
            }
        }
    }
    Ok(exit)
}

async fn pump(out: impl AsyncRead + Unpin, log: LogSink, stream: LogStream, read: Arc<AtomicU64>) {
    let mut lines = FramedRead::new(out, LinesCodec::new_with_max_length(MAX_LOG_LINE));
    while let Some(line) = lines.next().await {
        read.fetch_add(1, Ordering::Relaxed);
        match line {
            Ok(l) => log.output(stream, l).await,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                log.output(
                    stream,
                    format!("[a line longer than {MAX_LOG_LINE} bytes was dropped]"),
                )
                .await
            }
            Err(LinesCodecError::Io(_)) => break,
        }
    }
}
