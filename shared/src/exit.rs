//! How every binary ends: errors at start-up are printed whole (the cause chain, no backtrace)
//! and the process exits with 1.

use std::process::ExitCode;

/// Maps a binary's result to its exit code, printing an error with `{:#}` (anyhow's cause chain).
pub fn code<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
