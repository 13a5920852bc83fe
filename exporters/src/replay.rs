//! `tailgate replay`: re-deliver the records of a time range to one backend, through a throw-away consumer group
//! starting at `offsets_for_times(from)`. The normal exporter group and its offsets are untouched.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tailgate_kafka::KafkaConfig;
use tokio_util::sync::CancellationToken;

use crate::{build, ExporterError, ExportersConfig, Source};

/// A point in time as users write it: RFC 3339 (`2026-11-24T14:00:00Z`), relative to now (`-2h`, `-90m`, `2h ago`),
/// or `now`. Returns Unix milliseconds.
pub fn parse_time(text: &str, now: SystemTime) -> Result<i64, String> {
    let text = text.trim();
    let now_ms = now.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    if text == "now" {
        return Ok(now_ms);
    }
    let relative = text.strip_prefix('-').or_else(|| text.strip_suffix(" ago")).or_else(|| text.strip_suffix("ago"));
    if let Some(ago) = relative {
        let ago = humantime::parse_duration(ago.trim()).map_err(|e| format!("`{text}`: {e}"))?;
        return Ok(now_ms - ago.as_millis() as i64);
    }
    let at = humantime::parse_rfc3339_weak(text)
        .map_err(|_| format!("`{text}` is neither a time like 2026-11-24T14:00:00Z nor relative like -2h"))?;
    Ok(at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
}

/// Writes a progress line: in place on a terminal (the cursor stays on it), one line each time elsewhere (a log).
pub fn show_progress(progress: &mut (dyn Write + Send), terminal: bool, line: &str) {
    let _ = if terminal { write!(progress, "\r{line}\x1b[K") } else { writeln!(progress, "{line}") };
    let _ = progress.flush();
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    pub items_delivered: u64,
    pub items_rejected: u64,
}

impl Summary {
    /// Everything in the range reached the backend.
    pub fn complete(&self) -> bool {
        self.dead_lettered == 0 && self.items_rejected == 0 && self.delivered == self.records
    }
}

/// Replays `[from_ms, to_ms]` into exporter `name`, writing a progress line to `progress` every second (in place
/// on a terminal) and returning the summary. Stops early, with what was done so far, on `shutdown`.
pub async fn replay(
    config: &ExportersConfig,
    kafka: &KafkaConfig,
    name: &str,
    from_ms: i64,
    to_ms: Option<i64>,
    progress: &mut (dyn Write + Send),
    shutdown: CancellationToken,
) -> Result<Summary, ExporterError> {
    let exporter = build(config, kafka, name, Source::Range { from_ms, to_ms }).await?;
    let stats = std::sync::Arc::clone(&exporter.stats);
    let health = std::sync::Arc::clone(&exporter.health);
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    // A replay commits nothing, so stopping needs no grace.
    let mut task = tokio::spawn(exporter.run(shutdown, Duration::ZERO));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    let result = loop {
        tokio::select! {
            result = &mut task => break result,
            _ = every.tick() => {
                let records = stats.records_read.load(Ordering::Relaxed);
                let bytes = stats.bytes_read.load(Ordering::Relaxed);
                let delivered = stats.records_delivered.load(Ordering::Relaxed);
                let expected = stats.records_expected.load(Ordering::Relaxed);
                let seconds = started.elapsed().as_secs_f64().max(0.001);
                let rate = delivered as f64 / seconds;
                let eta = if rate > 0.0 && expected > delivered {
                    format!("{:.0}s", (expected - delivered) as f64 / rate)
                } else {
                    "-".into()
                };
                let down = health.down_since().map(|_| " — backend down, retrying").unwrap_or("");
                let line = format!(
                    "replay {name}: {delivered}/{expected} records delivered, {records} read ({:.1} MiB), {rate:.0} records/s, ETA {eta}{down}",
                    bytes as f64 / (1 << 20) as f64
                );
                show_progress(progress, terminal, &line);
            }
        }
    };
    if terminal {
        let _ = writeln!(progress);
    }
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error),
        Err(error) => return Err(ExporterError::Setup("replay", error.to_string())),
    }
    let summary = Summary {
        records: stats.records_read.load(Ordering::SeqCst),
        bytes: stats.bytes_read.load(Ordering::SeqCst),
        delivered: stats.records_delivered.load(Ordering::SeqCst),
        dead_lettered: stats.records_dead_lettered.load(Ordering::SeqCst),
        items_delivered: stats.items_delivered.load(Ordering::SeqCst),
        items_rejected: stats.items_rejected.load(Ordering::SeqCst),
    };
    let _ = writeln!(
        progress,
        "replay {name} finished in {:.1}s: {} records ({:.1} MiB) read, {} delivered, {} dead-lettered; {} items delivered, {} rejected{}",
        started.elapsed().as_secs_f64(),
        summary.records,
        summary.bytes as f64 / (1 << 20) as f64,
        summary.delivered,
        summary.dead_lettered,
        summary.items_delivered,
        summary.items_rejected,
        if summary.complete() { "" } else { " — INCOMPLETE: see the dead-letter topic and tailgate_exporter_rejected_items_total" }
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_absolute_and_relative() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_time("now", now), Ok(1_800_000_000_000));
        assert_eq!(parse_time("-2h", now), Ok(1_800_000_000_000 - 7_200_000));
        assert_eq!(parse_time("90m ago", now), Ok(1_800_000_000_000 - 5_400_000));
        assert_eq!(parse_time("2026-11-24T14:00:00Z", now), Ok(1_795_528_800_000));
        assert!(parse_time("yesterday", now).unwrap_err().contains("relative like -2h"));
    }
}
