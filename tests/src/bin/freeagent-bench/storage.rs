//! The storage benchmark: 1 GiB up and down through the gateway next to the raw write and read
//! rate of the same disk (measured in the same run), then peak resident memory of storage and
//! gateway with 1, 8 and 32 concurrent uploads of 256 MiB.

use crate::machine;
use bytes::Bytes;
use freeagent_tests::{API_KEY, Farm, FarmOpts};
use futures::StreamExt;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Instant;

const MIB: u64 = 1 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// Size of the single round trip, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Size of each concurrent upload, in MiB.
    #[arg(long, default_value_t = 256)]
    upload_mib: u64,
    /// Concurrency levels for the memory measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
}

/// One pseudo-random MiB, reused for every chunk: the client spends no CPU making data.
fn block() -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let v: Vec<u8> = (0..MIB / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    Bytes::from(v)
}

async fn farm() -> Farm {
    Farm::start(FarmOpts {
        workers: 0,
        extra_env: vec![
            ("FREEAGENT_SOURCE_LIMIT".into(), "64GiB".into()),
            ("RUST_LOG".into(), "warn".into()),
            ("FREEAGENT_RETENTION".into(), "off".into()),
        ],
        ..Default::default()
    })
    .await
}

/// Submits a build whose source is `mib` MiB; returns its id.
async fn upload(farm: &Farm, mib: u64, block: Bytes) -> anyhow::Result<String> {
    let body = futures::stream::iter(0..mib).map(move |_| Ok::<_, std::io::Error>(block.clone()));
    let part =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), mib * MIB)
            .file_name("source.tar.gz");
    let form = reqwest::multipart::Form::new()
        .text("platform", "android")
        .part("source", part);
    let resp = farm
        .http
        .post(format!("{}/api/builds", farm.gateway))
        .header("x-api-key", API_KEY)
        .multipart(form)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 201, "submit: {}", resp.text().await?);
    let v: Value = resp.json().await?;
    Ok(v["id"].as_str().unwrap_or_default().to_owned())
}

async fn download(farm: &Farm, id: &str) -> anyhow::Result<u64> {
    let resp = farm
        .http
        .get(format!("{}/api/builds/{id}/download/source", farm.gateway))
        .header("x-api-key", API_KEY)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "download: {}", resp.status());
    let mut n = 0;
    let mut s = resp.bytes_stream();
    while let Some(c) = s.next().await {
        n += c?.len() as u64;
    }
    Ok(n)
}

fn rate(bytes: u64, secs: f64) -> f64 {
    (bytes as f64 / MIB as f64 / secs * 10.0).round() / 10.0
}

/// Writes then reads `mib` MiB in 1 MiB blocks in `dir` (no fsync, as the service does not
/// either; the read may come from the page cache, as the service's does).
fn raw_disk(dir: &std::path::Path, mib: u64, block: &[u8]) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("raw-disk-probe");
    let t = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for _ in 0..mib {
        f.write_all(block)?;
    }
    f.flush()?;
    drop(f);
    let write = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut f = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; MIB as usize];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    let read = t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    anyhow::ensure!(n == mib * MIB, "raw read came up short");
    Ok((rate(n, write), rate(n, read)))
}

pub async fn run(a: Args) -> anyhow::Result<Value> {
    let m = machine::describe();
    machine::print(&m);
    println!(
        "parameters: round trip {} MiB; concurrent uploads of {} MiB at {:?}",
        a.size_mib, a.upload_mib, a.concurrency
    );
    let block = block();

    let f = farm().await;
    let dir = f.data.path().to_owned();
    let b = block.clone();
    let mib = a.size_mib;
    // Best of two: the first write of a run pays for page-cache pressure left by earlier ones.
    let (w1, r1) = {
        let (dir, b) = (dir.clone(), b.clone());
        tokio::task::spawn_blocking(move || raw_disk(&dir, mib, &b)).await??
    };
    let (w2, r2) = tokio::task::spawn_blocking(move || raw_disk(&dir, mib, &b)).await??;
    let (raw_write, raw_read) = (w1.max(w2), r1.max(r2));
    let t = Instant::now();
    let id = upload(&f, a.size_mib, block.clone()).await?;
    let up = rate(a.size_mib * MIB, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let n = download(&f, &id).await?;
    let down = rate(n, t.elapsed().as_secs_f64());
    drop(f);
    let ratio = |x: f64, raw: f64| (x / raw * 100.0).round() / 100.0;
    println!("raw disk write      {raw_write:>8} MiB/s");
    println!("raw disk read       {raw_read:>8} MiB/s");
    println!(
        "gateway upload      {up:>8} MiB/s  ({:.2} of raw write)",
        ratio(up, raw_write)
    );
    println!(
        "gateway download    {down:>8} MiB/s  ({:.2} of raw read)",
        ratio(down, raw_read)
    );

    let mut levels = vec![];
    for &c in &a.concurrency {
        let f = farm().await;
        // Warm up, then take the baseline.
        let warm = upload(&f, 4, block.clone()).await?;
        download(&f, &warm).await?;
        let base = [f.memory("storage").0, f.memory("gateway").0];
        let t = Instant::now();
        let uploads = (0..c).map(|_| upload(&f, a.upload_mib, block.clone()));
        for r in futures::future::join_all(uploads).await {
            r?;
        }
        let secs = t.elapsed().as_secs_f64();
        let peak = [f.memory("storage").1, f.memory("gateway").1];
        let mb = |x: u64| (x as f64 / MIB as f64 * 10.0).round() / 10.0;
        println!(
            "{c:>3} concurrent x {} MiB: {:>7} MiB/s aggregate; peak RSS storage {} MiB (+{}), gateway {} MiB (+{})",
            a.upload_mib,
            rate(c as u64 * a.upload_mib * MIB, secs),
            mb(peak[0]),
            mb(peak[0].saturating_sub(base[0])),
            mb(peak[1]),
            mb(peak[1].saturating_sub(base[1])),
        );
        levels.push(json!({
            "concurrency": c,
            "aggregate_mib_s": rate(c as u64 * a.upload_mib * MIB, secs),
            "storage_peak_rss_mib": mb(peak[0]),
            "storage_growth_mib": mb(peak[0].saturating_sub(base[0])),
            "gateway_peak_rss_mib": mb(peak[1]),
            "gateway_growth_mib": mb(peak[1].saturating_sub(base[1])),
        }));
    }
    let out = json!({
        "scenario": "storage",
        "machine": m,
        "size_mib": a.size_mib,
        "upload_mib": a.upload_mib,
        "raw_write_mib_s": raw_write,
        "raw_read_mib_s": raw_read,
        "upload_mib_s": up,
        "download_mib_s": down,
        "upload_ratio": ratio(up, raw_write),
        "download_ratio": ratio(down, raw_read),
        "concurrent": levels,
    });
    Ok(out)
}
