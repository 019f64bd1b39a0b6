//! CPU time by component (the farm's services, Postgres, NATS, this benchmark), from
//! `/proc/<pid>/stat`, so every figure says where the cores went.

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS: f64 = 100.0;

pub struct Sample {
    at: Instant,
    ticks: BTreeMap<String, u64>,
}

/// utime + stime of a process, in ticks, and its command name.
fn stat(pid: u32) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    let fields: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Samples every process, grouping by component: the named farm processes by pid, Postgres and
/// NATS servers by command name, everything else dropped.
pub fn sample(named: &[(&str, Option<u32>)]) -> Sample {
    let mut ticks: BTreeMap<String, u64> = BTreeMap::new();
    for (name, pid) in named {
        if let Some((_, t)) = pid.and_then(stat) {
            *ticks.entry((*name).to_owned()).or_default() += t;
        }
    }
    if let Some((_, t)) = stat(std::process::id()) {
        ticks.insert("bench".into(), t);
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((comm, t)) = stat(pid) {
                let group = if comm.starts_with("postgres") || comm.starts_with("postmaster") {
                    "postgres"
                } else if comm.starts_with("nats-server") {
                    "nats"
                } else {
                    continue;
                };
                *ticks.entry(group.to_owned()).or_default() += t;
            }
        }
    }
    Sample {
        at: Instant::now(),
        ticks,
    }
}

/// Cores used by each component between two samples (1.0 = one core busy).
pub fn cores(before: &Sample, after: &Sample) -> BTreeMap<String, f64> {
    let secs = (after.at - before.at).as_secs_f64().max(1e-9);
    after
        .ticks
        .iter()
        .map(|(k, &t)| {
            let d = t.saturating_sub(before.ticks.get(k).copied().unwrap_or(0));
            let c = d as f64 / TICKS / secs;
            (k.clone(), (c * 1000.0).round() / 1000.0)
        })
        .collect()
}

pub fn print(label: &str, c: &BTreeMap<String, f64>) {
    let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
    println!("{label} cores used: {}", parts.join(", "));
}
