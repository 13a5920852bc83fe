//! `tailgate resample`: re-decide a time range of the raw spans topic with another policy set — by default, keep
//! every trace — and deliver what it keeps. Kafka holds every span for its retention, before sampling: after an
//! incident, every trace of the bad twenty minutes can still be had, not only the tenth the sampler kept.
//!
//! Two stages, each with progress on stderr and a summary:
//! 1. A sampler in range mode ([`tailgate_sampler::Window`]) reads the range through a throw-away consumer, decides
//!    in event time with the given policies, leaves out the traces the live sampler kept (they were delivered), and
//!    writes the rest it keeps to a topic of its own, `<sampled topic>.resample.<time>` (or, with
//!    `--to-sampled-topic`, to the sampled topic for the running exporters).
//! 2. A replay of that topic into the named exporter, with its retries and delivery guarantee; the topic is then
//!    deleted.
//!
//! The exit code is 0 only if every trace kept was delivered.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use tailgate_exporters::replay::show_progress;
use tailgate_sampler::policy::{PolicyConfig, PolicyType};
use tailgate_sampler::{Sampler, SamplerStats, Window};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Where a resample's kept traces go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deliver {
    /// Through a throw-away topic into this exporter (one that reads spans: `jaeger`).
    Exporter(String),
    /// Into the sampled topic, for the running exporters to deliver.
    SampledTopic,
}

/// A policies file: the `sampler.policies` schema, `policies: [...]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PoliciesFile {
    policies: Vec<PolicyConfig>,
}

/// The policies of `path`, validated (each problem with the file and its path), or keep-everything.
pub fn policies(path: Option<&Path>) -> anyhow::Result<Vec<PolicyConfig>> {
    let Some(path) = path else {
        return Ok(vec![PolicyConfig {
            name: "keep-everything".into(),
            kind: Some(PolicyType::AlwaysSample),
            ..Default::default()
        }]);
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: PoliciesFile =
        tailgate_config::from_yaml(&text).map_err(|problems| anyhow::anyhow!("{}:\n{problems}", path.display()))?;
    let mut problems = tailgate_config::Problems::default();
    if file.policies.is_empty() {
        problems.push("policies", "is empty: give at least one policy, or leave out --policies to keep everything");
    }
    tailgate_sampler::policy::validate_all(&file.policies, "policies", &mut problems);
    if let Err(problems) = problems.into_result() {
        bail!("{}:\n{problems}", path.display());
    }
    Ok(file.policies)
}

/// Runs a resample of `[from_ms, to_ms]`.
pub async fn resample(
    config: &Config,
    window: Window,
    policies: Vec<PolicyConfig>,
    deliver: Deliver,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if window.to_ms < window.from_ms {
        bail!("--to is before --from");
    }
    if let Deliver::Exporter(name) = &deliver {
        if name != tailgate_exporters::JAEGER {
            bail!("resample delivers traces: --exporter jaeger (the exporter of spans), or --to-sampled-topic");
        }
        if config.exporters.jaeger.is_none() {
            bail!("exporters.jaeger is not configured; configure it, or use --to-sampled-topic");
        }
    }
    let mut kafka = config.kafka.clone();
    let throwaway = match &deliver {
        Deliver::Exporter(_) => {
            let topic = format!("{}.resample.{}", kafka.topics.sampled_spans, tailgate_kafka::now_ms());
            kafka.topics.sampled_spans = topic.clone();
            // A topic of its own, made here even where the roles must not create theirs.
            let mut creating = kafka.clone();
            creating.create_topics = true;
            tailgate_kafka::ensure_topics(&creating, &[(&topic, &[])], Duration::from_secs(30))
                .await
                .with_context(|| format!("cannot create the resample's topic {topic}; or use --to-sampled-topic"))?;
            Some(topic)
        }
        Deliver::SampledTopic => None,
    };
    let mut sampler_config = config.sampler.clone();
    sampler_config.policies = policies;
    sampler_config.tenants.clear();
    // The live sampler's dry run would keep everything, whatever --policies says.
    sampler_config.dry_run = false;
    let sampler = Sampler::resample(&sampler_config, &kafka, window).await.context("cannot start the resample")?;
    let stats = sampler.stats();
    let started = Instant::now();
    let mut progress = std::io::stderr();
    let terminal = progress.is_terminal();
    let mut task = tokio::spawn(sampler.run(shutdown.clone(), Duration::ZERO));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    let result = loop {
        tokio::select! {
            result = &mut task => break result,
            _ = every.tick() => show_progress(&mut progress, terminal, &progress_line(&stats, started.elapsed())),
        }
    };
    // The last state, always: a resample shorter than a second still shows one line of progress.
    show_progress(&mut progress, terminal, &progress_line(&stats, started.elapsed()));
    if terminal {
        let _ = writeln!(progress);
    }
    result.context("the resample task failed")?.context("resample failed")?;
    let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::SeqCst);
    let completed = stats.completed.load(Ordering::SeqCst);
    let written_to = throwaway.as_deref().unwrap_or(&config.kafka.topics.sampled_spans);
    let _ = writeln!(
        progress,
        "resample finished in {:.1}s: {} records read, {} traces decided, {} kept ({} spans) written to {written_to}; \
         {} spans of traces the sampler had kept left out{}",
        started.elapsed().as_secs_f64(),
        get(&stats.records_read),
        get(&stats.traces_decided),
        get(&stats.traces_kept),
        get(&stats.spans_kept),
        get(&stats.already_kept_spans),
        if completed { "" } else { " — INCOMPLETE: stopped before the range was read and written" }
    );
    if !completed {
        bail!("resample stopped before it finished");
    }
    let Some(topic) = throwaway else { return Ok(()) };
    let summary = tailgate_exporters::replay::replay(
        &config.exporters,
        &kafka,
        tailgate_exporters::JAEGER,
        0,
        None,
        &mut progress,
        shutdown,
    )
    .await
    .context("delivering the resampled traces failed")?;
    if !summary.complete() {
        bail!(
            "resample incomplete: {} of {} records delivered, {} dead-lettered, {} spans rejected; the traces stay \
             in topic {topic}",
            summary.delivered,
            summary.records,
            summary.dead_lettered,
            summary.items_rejected
        );
    }
    // Delivered: the topic and the dead-letter topic the replay made for it go.
    for topic in [topic.clone(), tailgate_proto::headers::dead_letter_topic(&topic)] {
        if let Err(error) = tailgate_kafka::delete_topic(&kafka, &topic, Duration::from_secs(30)).await {
            tracing::warn!(%error, topic, "cannot delete the resample's topic; delete it by hand");
        }
    }
    Ok(())
}

fn progress_line(stats: &SamplerStats, elapsed: Duration) -> String {
    let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let (read, expected) = (get(&stats.records_read), get(&stats.records_expected));
    let rate = read as f64 / elapsed.as_secs_f64().max(0.001);
    let eta =
        if rate > 0.0 && expected > read { format!("{:.0}s", (expected - read) as f64 / rate) } else { "-".into() };
    let percent = (read * 100).checked_div(expected).map_or(100, |p| p.min(100));
    format!(
        "resample: {read}/{expected} records ({percent}%), {} traces kept of {} decided, {} spans already kept left \
         out, {rate:.0} records/s, ETA {eta}",
        get(&stats.traces_kept),
        get(&stats.traces_decided),
        get(&stats.already_kept_spans)
    )
}
