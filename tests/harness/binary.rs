//! The real `tailgate` binary, started as an operator starts it: a subcommand, a config file, signals to stop it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::local::{free_port, temp_dir};
use super::wait;

/// `tailgate`, the binary this test run built, or the one `TAILGATE_BIN` names: a long campaign runs on a copy so
/// that building meanwhile does not change what its restarted processes run.
pub fn tailgate() -> Command {
    Command::new(std::env::var_os("TAILGATE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_tailgate").into()))
}

/// `tailgate <role> --config <config>` until it exits by itself or `timeout` passes (then it is killed): its exit
/// status if it exited, and what it wrote to stderr (through a file, so that a chatty process never blocks on a
/// full pipe).
pub fn run_until_exit(
    role: &str,
    config: &std::path::Path,
    timeout: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let log = config.with_extension(format!("{role}.log"));
    let mut child = tailgate()
        .args([role, "--config"])
        .arg(config)
        .env_remove("TAILGATE_KAFKA_BROKERS")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Sends `signal` (`-TERM`, `-KILL`) to `child`, as `kill` does.
pub fn signal(child: &Child, signal: &str) {
    Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
}

/// `tailgate all-in-one` on free ports, with its broker's data in a temporary directory.
pub struct AllInOne {
    pub child: Child,
    pub kafka: u16,
    pub grpc: u16,
    pub http: u16,
    pub telemetry: SocketAddr,
    pub dir: PathBuf,
}

/// A test that fails must not leave its process running (using CPU and ports for the rest of the suite).
impl Drop for AllInOne {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The ports of an `all-in-one`: its broker, gRPC and HTTP receivers, and telemetry.
pub type Ports = (u16, u16, u16, u16);

impl AllInOne {
    /// Starts it and waits until `/ready`.
    pub async fn start() -> AllInOne {
        AllInOne::start_with(temp_dir("aio"), AllInOne::ports(), "", "").await
    }

    /// Free ports for one.
    pub fn ports() -> Ports {
        (free_port(), free_port(), free_port(), free_port())
    }

    /// Starts it on `dir` (its data in `dir/data`, kept across starts) and `ports`, with `broker` settings inside
    /// `embedded_broker:` (`retention: 10s, `) and `extra` config, and waits until `/ready`.
    pub async fn start_with(dir: PathBuf, ports: Ports, broker: &str, extra: &str) -> AllInOne {
        let (kafka, grpc, http, metrics) = ports;
        let config = dir.join("tailgate.yaml");
        std::fs::write(
            &config,
            format!(
                "embedded_broker: {{ {broker}listen: 127.0.0.1:{kafka}, data_dir: {} }}\nkafka: {{ partitions: 2 }}\n\
                 ingest: {{ grpc: {{ endpoint: 127.0.0.1:{grpc} }}, http: {{ endpoint: 127.0.0.1:{http} }} }}\n\
                 telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }} }}\n{extra}",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut child = tailgate()
            .args(["all-in-one", "--config"])
            .arg(&config)
            .env_remove("TAILGATE_KAFKA_BROKERS")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("all-in-one.log")).unwrap())
            .spawn()
            .unwrap();
        let telemetry: SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
        wait::until_serving(telemetry, "/ready", &mut child, Duration::from_secs(60)).await;
        AllInOne { child, kafka, grpc, http, telemetry, dir }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka)
    }

    /// What it has logged so far (its standard error, `all-in-one.log` in its directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("all-in-one.log")).unwrap_or_default()
    }
}
