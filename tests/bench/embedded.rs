//! The embedded default under sustained load: `tailgate all-in-one` (gateway, sampler and its Tansu broker in one
//! process) fed by `tailgate loadgen` (the seed's checkout: 12 spans and 12 log records per checkout) at a fixed
//! rate for a fixed time. Prints, every minute: spans acknowledged per second, the CPU of the broker's threads and
//! of Tailgate's (per second, and per 1,000 spans), the data directory's size, and the sampler's consumer lag —
//! whether the pipeline keeps up, and what the broker costs beside it. Prints figures; asserts nothing.
//!
//! Usage: `cargo build --release && TAILGATE_CHECKOUTS_PER_S=1667 TAILGATE_MINUTES=30 cargo bench --bench embedded`
//! (defaults: 1,667 checkouts/s, i.e. 20,000 spans/s, for 30 minutes; `TAILGATE_RETENTION` sets
//! `embedded_broker.retention`, default 10m, so that the disk bound is reached within the run).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod child;
// Shared with the other benches; this one reads other processes' CPU only.
#[allow(dead_code)]
mod cpu;
// Shared with the integration tests; this bench asks for /ready and /metrics.
#[allow(dead_code)]
#[path = "../harness/http.rs"]
mod http;
#[path = "../harness/local.rs"]
mod local;

use child::{tailgate_binary, Process};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map_or(0, |entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// The sum of every sample of `family` on a Prometheus text page (all label sets).
fn sum(page: &str, family: &str) -> f64 {
    page.lines()
        .filter(|line| line.starts_with(family) && line[family.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::main]
async fn main() {
    let checkouts: u64 = env_or("TAILGATE_CHECKOUTS_PER_S", 1667);
    let minutes: u64 = env_or("TAILGATE_MINUTES", 30);
    let retention: String = env_or("TAILGATE_RETENTION", "10m".to_owned());
    let dir = local::temp_dir("bench-embedded");
    let (kafka, grpc, http_port, metrics) =
        (local::free_port(), local::free_port(), local::free_port(), local::free_port());
    let config = dir.join("all-in-one.yaml");
    std::fs::write(
        &config,
        format!(
            "embedded_broker: {{ listen: 127.0.0.1:{kafka}, data_dir: '{}', retention: {retention} }}\n\
             ingest: {{ grpc: {{ endpoint: 127.0.0.1:{grpc} }}, http: {{ endpoint: 127.0.0.1:{http_port} }} }}\n\
             telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }}, logs: {{ level: info }} }}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let aio = Process(
        Command::new(tailgate_binary())
            .args(["all-in-one", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("all-in-one.log")).unwrap())
            .spawn()
            .expect("all-in-one starts"),
    );
    let telemetry = format!("127.0.0.1:{metrics}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http::try_request(telemetry, "GET", "/ready", &[], b"").await.is_ok_and(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "all-in-one not ready in 60 s: see {}", dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load = Process(
        Command::new(tailgate_binary())
            .args(["loadgen", "--endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--rate", &checkouts.to_string(), "--duration", &format!("{minutes}m")])
            .stdout(std::fs::File::create(dir.join("loadgen.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("loadgen starts"),
    );
    println!(
        "embedded benchmark: all-in-one at {checkouts} checkouts/s ({} spans/s offered) for {minutes} min, \
         retention {retention}",
        checkouts * 12
    );
    println!(
        "{:>4} {:>12} {:>12} {:>12} {:>14} {:>14} {:>10} {:>12}",
        "min",
        "spans/s ack",
        "broker CPU",
        "tailgate CPU",
        "broker CPU/1k",
        "tailgate CPU/1k",
        "data MB",
        "sampler lag"
    );
    let pid = aio.0.id();
    let broker = |pid| cpu::cpu_seconds(pid, &[]) - cpu::cpu_seconds(pid, &["tansu-broker"]);
    let page =
        || async { String::from_utf8(http::request(telemetry, "GET", "/metrics", &[], b"").await.body).unwrap() };
    let accepted = |page: &str| {
        page.lines()
            .filter(|l| l.starts_with("tailgate_ingest_items_accepted_total{") && l.contains("signal=\"traces\""))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>()
    };
    let (mut last_spans, mut last_broker, mut last_all) =
        (accepted(&page().await), broker(pid), cpu::cpu_seconds(pid, &[]));
    let (mut total_spans, mut total_broker, mut total_tailgate) = (0.0, 0.0, 0.0);
    for minute in 1..=minutes {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let text = page().await;
        // Every minute's page stays beside the logs: what moved when the figures changed.
        let _ = std::fs::write(dir.join(format!("metrics-{minute:02}.txt")), &text);
        let (spans, broker_cpu, all) = (accepted(&text), broker(pid), cpu::cpu_seconds(pid, &[]));
        let (d_spans, d_broker) = (spans - last_spans, broker_cpu - last_broker);
        let d_tailgate = (all - last_all) - d_broker;
        (total_spans, total_broker, total_tailgate) =
            (total_spans + d_spans, total_broker + d_broker, total_tailgate + d_tailgate);
        println!(
            "{minute:>4} {:>12.0} {:>12.2} {:>12.2} {:>14.3} {:>14.3} {:>10.1} {:>12.0}",
            d_spans / 60.0,
            d_broker / 60.0,
            d_tailgate / 60.0,
            d_broker / d_spans.max(1.0) * 1000.0,
            d_tailgate / d_spans.max(1.0) * 1000.0,
            dir_size(&dir.join("data")) as f64 / 1e6,
            sum(&text, "tailgate_sampler_consumer_lag_records"),
        );
        (last_spans, last_broker, last_all) = (spans, broker_cpu, all);
    }
    println!(
        "whole run: {:.0} spans/s acknowledged; {:.0} spans per broker CPU-second, {:.0} per Tailgate CPU-second",
        total_spans / (minutes * 60) as f64,
        total_spans / total_broker.max(1e-9),
        total_spans / total_tailgate.max(1e-9)
    );
    let summary = std::fs::read_to_string(dir.join("loadgen.log")).unwrap_or_default();
    if let Some(line) = summary.lines().last() {
        println!("loadgen: {line}");
    }
    drop((load, aio));
    // The logs stay for a look at what happened; the data does not (gigabytes).
    let _ = std::fs::remove_dir_all(dir.join("data"));
    println!("logs: {}", dir.display());
}
