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
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    json!({"cores": cores, "memory_gib": (mem_gib * 10.0).round() / 10.0, "cpu": model})
}

pub fn print(m: &Value) {
    println!(
        "machine: {} cores, {} GiB, {}",
        m["cores"],
        m["memory_gib"],
        m["cpu"].as_str().unwrap_or("?")
    );
}
