//! Tailgate: a Kafka-buffered OpenTelemetry pipeline. This crate is the binary's library half: configuration,
//! Tailgate's own telemetry, the embedded broker and the wiring of roles. The roles live in their own crates.

#![forbid(unsafe_code)]

mod collector_keys;
pub mod config;
#[cfg(feature = "embedded-broker")]
pub mod embedded_broker;
pub mod loadgen;
pub mod redact;
pub mod reload;
pub mod resample;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context;
use tailgate_ingest::Gateway;
use tailgate_sampler::Sampler;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// What the process was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Sampler,
    Exporter,
    AllInOne,
    /// Only the embedded broker, on `embedded_broker.listen` and `data_dir`, until SIGTERM: a broker that can be
    /// killed and restarted on the same data on its own, as the fault campaign (`tests/campaign/`) does.
    Broker,
    Validate,
    /// Re-deliver `[from_ms, to_ms]` (Unix milliseconds of record time) to one exporter.
    Replay {
        exporter: String,
        from_ms: i64,
        to_ms: Option<i64>,
    },
    /// Re-decide `window` of the spans topic with `policies` and deliver what they keep.
    Resample {
        window: tailgate_sampler::Window,
        /// A policies file; none: keep every trace.
        policies: Option<std::path::PathBuf>,
        deliver: resample::Deliver,
    },
}

/// Runs `role` until SIGTERM or SIGINT, then shuts down gracefully. `path` is the configuration file, watched for
/// new sampler policies (and read again on SIGHUP) by a role that runs a sampler.
pub async fn run(role: Role, mut config: Config, path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));

    if let Role::Replay { exporter, from_ms, to_ms } = &role {
        return replay(&config, exporter, *from_ms, *to_ms, shutdown).await;
    }
    if let Role::Resample { window, policies, deliver } = role {
        let policies = resample::policies(policies.as_deref())?;
        return resample::resample(&config, window, policies, deliver, shutdown).await;
    }
    if role == Role::Broker {
        start_embedded_broker(&mut config)?;
        let retention = config.embedded_broker.retention.get().as_millis();
        println!(
            "Kafka-API broker on {}. Records are deleted after embedded_broker.retention ({}, sooner past retention_bytes: {}) from topics created with\n\
             cleanup.policy=delete and retention.ms: give the roles that use it `kafka.topic_config: {{ cleanup.policy: delete,\n\
             retention.ms: \"{retention}\" }}` (all-in-one does this itself).",
            config.kafka.brokers, config.embedded_broker.retention, config.embedded_broker.retention_bytes
        );
        shutdown.cancelled().await;
        return Ok(());
    }
    if role == Role::AllInOne && config.embedded_broker.enabled {
        start_embedded_broker(&mut config)?;
    }

    let handle = telemetry::install_recorder();
    let telemetry_listener = telemetry::bind(&config.telemetry.metrics).await?;

    let runs_ingest = matches!(role, Role::Ingest | Role::AllInOne);
    let runs_sampler = matches!(role, Role::Sampler | Role::AllInOne);
    let runs_exporters = matches!(role, Role::Exporter | Role::AllInOne);

    let gateway = match runs_ingest {
        true => Some(Gateway::build(&config.ingest, &config.kafka).await.context("cannot start the ingest gateway")?),
        false => None,
    };
    let sampler = match runs_sampler {
        true => {
            let mut sampler = Sampler::build(&config.sampler, &config.kafka, &config.kafka.consumer.sampler_group())
                .await
                .context("cannot start the sampler")?;
            if let Some(path) = path {
                let (updates, receiver) = tokio::sync::watch::channel(config.sampler.clone());
                sampler.reload_from(receiver);
                tokio::spawn(reload::watch(path, config.clone(), updates, shutdown.clone()));
            }
            Some(sampler)
        }
        false => None,
    };

    let exporters = match runs_exporters {
        true => tailgate_exporters::build_all(&config.exporters, &config.kafka)
            .await
            .context("cannot start the exporters")?,
        false => Vec::new(),
    };
    if role == Role::Exporter && exporters.is_empty() {
        anyhow::bail!(
            "no exporter is configured: add exporters.jaeger, exporters.prometheus_remote_write, exporters.prometheus \
             or exporters.loki"
        );
    }

    let health = gateway.as_ref().map(Gateway::health);
    let ready: telemetry::Readiness = Arc::new(move || health.as_ref().is_none_or(|h| h.ready()));
    let telemetry_addr = telemetry_listener.local_addr()?;
    let telemetry_stop = CancellationToken::new();
    let telemetry_auth = config.telemetry.metrics.auth.clone();
    let telemetry_server =
        tokio::spawn(telemetry::serve(telemetry_listener, handle, telemetry_auth, ready, telemetry_stop.clone()));

    if let (Role::AllInOne, Some(gateway)) = (role, &gateway) {
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        let loopback = gateway.grpc_addr().ip().is_loopback() && gateway.http_addr().ip().is_loopback();
        println!(
            "Tailgate is running.\n  send OTLP/gRPC to  {}://localhost:{}\n  send OTLP/HTTP to  {}://localhost:{}/v1/traces (…/v1/metrics, …/v1/logs)\n  Kafka brokers      {}{}\n  sampled traces     topic {}\n  exporters          {}\n  metrics & health   {}://localhost:{}/metrics  /health  /ready",
            scheme(config.ingest.grpc.tls.is_some()),
            gateway.grpc_addr().port(),
            scheme(config.ingest.http.tls.is_some()),
            gateway.http_addr().port(),
            config.kafka.brokers,
            match config.embedded_broker.enabled {
                true => format!(
                    " (embedded; keeps {} of data, at most {}, in {}: embedded_broker.retention, retention_bytes)",
                    config.embedded_broker.retention,
                    config.embedded_broker.retention_bytes,
                    config.embedded_broker.data_dir.display()
                ),
                false => String::new(),
            },
            config.kafka.topics.sampled_spans,
            match config.exporters.configured() {
                names if names.is_empty() => "none configured (add exporters: to a config file)".to_owned(),
                names => names.join(", "),
            },
            scheme(config.telemetry.metrics.tls.is_some()),
            telemetry_addr.port(),
        );
        if loopback {
            println!(
                "The receivers listen on this host only. To accept other hosts, set ingest.grpc.endpoint: 0.0.0.0:4317 and\n\
                 ingest.http.endpoint: 0.0.0.0:4318, with tls: and auth: on each (see SECURITY.md)."
            );
        }
        println!("Press Ctrl-C to stop.");
    }

    // Every role runs as its own task with the same token and grace. A role that ends — it failed, or the
    // gateway could not listen — stops the others too. From the moment of shutdown the roles stop together, all
    // within `shutdown.grace`, not one grace after another.
    let grace = config.shutdown.grace.get();
    let mut tasks: Vec<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> = Vec::new();
    let mut spawn_role = |name: String, role: futures::future::BoxFuture<'static, anyhow::Result<()>>| {
        let stop = shutdown.clone();
        tasks.push((
            name,
            tokio::spawn(async move {
                let result = role.await;
                stop.cancel();
                result
            }),
        ));
    };
    if let Some(gateway) = gateway {
        let run = gateway.run(shutdown.clone(), grace);
        spawn_role("ingest gateway".into(), Box::pin(async move { run.await.context("ingest gateway failed") }));
    }
    if let Some(sampler) = sampler {
        let run = sampler.run(shutdown.clone(), grace);
        spawn_role("sampler".into(), Box::pin(async move { run.await.context("sampler failed") }));
    }
    for exporter in exporters {
        let name = format!("exporter {}", exporter.name);
        let run = exporter.run(shutdown.clone(), grace);
        let context = format!("{name} failed");
        spawn_role(name, Box::pin(async move { run.await.context(context) }));
    }
    shutdown.cancelled().await;
    let deadline = tokio::time::Instant::now() + grace;
    let mut result = Ok(());
    for (name, task) in tasks {
        let ended = match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(ended)) => ended,
            Ok(Err(join)) => Err(anyhow::anyhow!("{name} task failed: {join}")),
            Err(_) => Err(anyhow::anyhow!("{name} did not stop within shutdown.grace ({grace:?})")),
        };
        result = result.and(ended);
    }
    telemetry_stop.cancel();
    let _ = telemetry_server.await;
    result
}

/// `tailgate replay`: progress on stderr, the summary last; an error unless everything was delivered.
async fn replay(
    config: &Config,
    exporter: &str,
    from_ms: i64,
    to_ms: Option<i64>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut progress = std::io::stderr();
    let summary = tailgate_exporters::replay::replay(
        &config.exporters,
        &config.kafka,
        exporter,
        from_ms,
        to_ms,
        &mut progress,
        shutdown,
    )
    .await
    .context("replay failed")?;
    if !summary.complete() {
        anyhow::bail!(
            "replay incomplete: {} of {} records delivered, {} dead-lettered, {} items rejected",
            summary.delivered,
            summary.records,
            summary.dead_lettered,
            summary.items_rejected
        );
    }
    Ok(())
}

#[cfg(feature = "embedded-broker")]
fn start_embedded_broker(config: &mut Config) -> anyhow::Result<()> {
    let listen = config.embedded_broker.listen.parse().context("embedded_broker.listen")?;
    let retention = config.embedded_broker.retention.get();
    let retention_bytes = config.embedded_broker.retention_bytes.get();
    let own_retention = vec![config.kafka.topics.decisions.clone()];
    let dir = &config.embedded_broker.data_dir;
    let storage = embedded_broker::Storage::Dir { dir, retention, retention_bytes, own_retention };
    let broker = embedded_broker::EmbeddedBroker::start(listen, storage).context("cannot start the embedded broker")?;
    tracing::info!(addr = %broker.addr, data_dir = %config.embedded_broker.data_dir.display(), ?retention, "embedded Kafka-API broker (Tansu) started");
    config.kafka.brokers = broker.addr.to_string();
    // Tansu deletes old records only from topics that say so themselves.
    for (key, value) in embedded_broker::topic_config(retention) {
        config.kafka.topic_config.entry(key.to_owned()).or_insert(value);
    }
    // One process owns the broker and every member of its groups: a member that died with a crashed process is
    // given up after 6 s, not Kafka's 45 s, so a restarted all-in-one samples again within seconds.
    config.kafka.consumer.session_timeout.get_or_insert(tailgate_config::Duration::from_secs(6));
    // Tansu 0.6's idempotent producer support panics its storage (see kafka.producer.idempotence).
    config.kafka.producer.idempotence.get_or_insert(false);
    // Tansu 0.6 has handed one partition to two members at once under cooperative rebalancing.
    config.kafka.consumer.assignment_strategy.get_or_insert(tailgate_kafka::AssignmentStrategy::Range);
    Ok(())
}

#[cfg(not(feature = "embedded-broker"))]
fn start_embedded_broker(_: &mut Config) -> anyhow::Result<()> {
    anyhow::bail!("this build has no embedded broker (feature `embedded-broker`); set embedded_broker.enabled: false and point kafka.brokers at a Kafka cluster")
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        _ = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
    shutdown.cancel();
}
