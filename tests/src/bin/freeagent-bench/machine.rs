//! What the benchmark ran on, printed with every result.

use serde_json::{Value, json};

pub fn describe() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / (1024.0 * 1024.0))
        .unwrap_or(0.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    // Two hosts print the same model name; the model number and the SHA extension (which
    // decides the cost of every checksum) tell them apart.
    let sha_ni = field("flags").split_whitespace().any(|f| f == "sha_ni");
    json!({"cores": cores, "memory_gib": (mem_gib * 10.0).round() / 10.0, "cpu": field("model name"),
           "cpu_model_number": field("model"), "sha_ni": sha_ni,
           "postgres": postgres_settings()})
}

/// The database settings that move the scheduler's figures (asked with `psql`, which is
/// wherever the server is): a machine with autovacuum off keeps every dead row version and has
/// no planner statistics, which slows the same statements down as a run goes on.
fn postgres_settings() -> String {
    let url = std::env::var("FREEAGENT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| freeagent_shared::testing::DEFAULT_ADMIN_URL.to_owned());
    let sql = "SELECT 'PostgreSQL ' || current_setting('server_version') \
               || ', autovacuum ' || current_setting('autovacuum') \
               || ', synchronous_commit ' || current_setting('synchronous_commit') \
               || ', shared_buffers ' || current_setting('shared_buffers')";
    std::process::Command::new("psql")
        .args([url.as_str(), "-Atc", sql])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown (psql not found)".into())
}

pub fn print(m: &Value) {
    println!(
        "machine: {} cores, {} GiB, {} (model {}, SHA-NI {})",
        m["cores"],
        m["memory_gib"],
        m["cpu"].as_str().unwrap_or("?"),
        m["cpu_model_number"].as_str().unwrap_or("?"),
        if m["sha_ni"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    );
    println!("database: {}", m["postgres"].as_str().unwrap_or("?"));
}

/// Resident memory of process `pid`, in bytes (0 when it cannot be read).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
