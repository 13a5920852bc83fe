//! The OpenTelemetry Collector as the benchmarks' peer: the distribution in `tests/collector`, built by its
//! `build.sh` into `target/collector` when missing (or the binary `TAILGATE_OTELCOL` names), run with one of the
//! configurations beside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::child::Process;

/// The Collector's binary, built first when missing; `None` when it cannot be built here.
pub fn binary() -> Option<PathBuf> {
    if let Some(binary) = std::env::var_os("TAILGATE_OTELCOL") {
        return Some(PathBuf::from(binary));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/collector/build.sh");
    let output = Command::new("bash").arg(script).stderr(Stdio::inherit()).output().ok()?;
    let path = String::from_utf8(output.stdout).ok()?.lines().last()?.trim().to_owned();
    (output.status.success() && Path::new(&path).exists()).then(|| PathBuf::from(path))
}

/// The Collector with `tests/collector/{config}` and `env`, its log in `dir/{log}.log`.
pub fn start(binary: &Path, dir: &Path, config: &str, env: &[(&str, String)], log: &str) -> Process {
    let mut command = Command::new(binary);
    command.arg("--config").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/collector").join(config));
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{log}.log"))).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    Process(child)
}

/// Whether consumer group `group` has committed the end of every partition of `topic` (the Collector's kafka
/// receiver marks a record once it is handed on, and commits every second).
pub fn group_caught_up(brokers: &str, group: &str, topic: &str, partitions: i32) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let Ok(committed) = consumer.committed_offsets(list, Duration::from_secs(5)) else { return false };
    (0..partitions).all(|partition| {
        let Ok((_, high)) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) else { return false };
        match committed.find_partition(topic, partition).map(|p| p.offset()) {
            Some(Offset::Offset(offset)) => offset >= high,
            _ => high == 0,
        }
    })
}
