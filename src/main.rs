//! `tailgate`: one binary, one subcommand per role. Parses the command line, loads the configuration, starts the
//! roles and waits for a signal; everything else lives in the role crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tailgate::config::Config;

#[derive(Parser)]
#[command(name = "tailgate", version, about = "Kafka-buffered OpenTelemetry pipeline with tail sampling")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive OTLP over gRPC and HTTP and write it to Kafka.
    Ingest {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Tail-sample traces: join consumer group `tailgate-sampler` on the spans topic, write kept traces to the
    /// sampled topic.
    Sampler {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Deliver to the configured backends (Jaeger, Prometheus, Loki); each is its own consumer group
    /// `tailgate-exporter-<name>` and commits only what its backend accepted.
    Exporter {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Re-deliver the records of a time range to one backend, e.g. after it lost data. Exit code 0 only if
    /// everything in the range was delivered.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
        /// `jaeger`, `prometheus_remote_write` or `loki`.
        #[arg(long)]
        exporter: String,
        /// Start: RFC 3339 (`2026-11-24T14:00:00Z`) or relative (`-2h`).
        #[arg(long, allow_hyphen_values = true)]
        from: String,
        /// End (inclusive), same forms; default: the end of each partition when the replay reaches it.
        #[arg(long, allow_hyphen_values = true)]
        to: Option<String>,
    },
    /// Re-decide a time range of the raw spans topic with another policy set (default: keep every trace) and
    /// deliver what it keeps to Jaeger (or the sampled topic). Traces the sampler already kept are not delivered
    /// again. Exit code 0 only if everything kept was delivered.
    Resample {
        #[arg(long, short)]
        config: PathBuf,
        /// Start: RFC 3339 (`2026-11-24T09:10:00Z`) or relative (`-30m`).
        #[arg(long, allow_hyphen_values = true)]
        from: String,
        /// End (inclusive), same forms.
        #[arg(long, allow_hyphen_values = true)]
        to: String,
        /// A YAML file `policies: [...]` in the `sampler.policies` schema; default: keep every trace.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// The exporter to deliver to.
        #[arg(long, default_value = "jaeger")]
        exporter: String,
        /// Write to the sampled topic instead, for the running exporters to deliver.
        #[arg(long)]
        to_sampled_topic: bool,
    },
    /// Run every role with an embedded Kafka-API broker: the pipeline on one machine, from one command.
    AllInOne {
        /// Optional; the defaults work out of the box.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run only the embedded Kafka-API broker (Tansu) on `embedded_broker.listen`, keeping its log in
    /// `embedded_broker.data_dir`, until SIGTERM.
    Broker {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Send the checkout flow of six services (traces, logs, business metrics) to a gateway, like instrumented
    /// services would. Also the load driver for benchmarks.
    Loadgen(tailgate::loadgen::LoadgenArgs),
    /// Check a configuration file: print every problem with its path (exit code 1), or the effective config.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Loadgen(args) = &cli.command {
        return loadgen(args);
    }
    let (path, role) = match &cli.command {
        Command::Ingest { config } => (Some(config), tailgate::Role::Ingest),
        Command::Sampler { config } => (Some(config), tailgate::Role::Sampler),
        Command::Exporter { config } => (Some(config), tailgate::Role::Exporter),
        Command::Replay { config, exporter, from, to } => {
            let now = std::time::SystemTime::now();
            let parse = |text: &str| tailgate_exporters::replay::parse_time(text, now);
            let (from, to) = match (parse(from), to.as_deref().map(parse).transpose()) {
                (Ok(from), Ok(to)) => (from, to),
                (Err(error), _) | (_, Err(error)) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            (Some(config), tailgate::Role::Replay { exporter: exporter.clone(), from_ms: from, to_ms: to })
        }
        Command::Resample { config, from, to, policies, exporter, to_sampled_topic } => {
            let now = std::time::SystemTime::now();
            let parse = |text: &str| tailgate_exporters::replay::parse_time(text, now);
            let window = match (parse(from), parse(to)) {
                (Ok(from_ms), Ok(to_ms)) => tailgate_sampler::Window { from_ms, to_ms },
                (Err(error), _) | (_, Err(error)) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            let deliver = match to_sampled_topic {
                true => tailgate::resample::Deliver::SampledTopic,
                false => tailgate::resample::Deliver::Exporter(exporter.clone()),
            };
            (Some(config), tailgate::Role::Resample { window, policies: policies.clone(), deliver })
        }
        Command::AllInOne { config } => (config.as_ref(), tailgate::Role::AllInOne),
        Command::Broker { config } => (Some(config), tailgate::Role::Broker),
        Command::Validate { config } => (Some(config), tailgate::Role::Validate),
        Command::Loadgen(_) => unreachable!("handled above"),
    };
    let config = match Config::load(path.map(PathBuf::as_path)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(1);
        }
    };
    if role == tailgate::Role::Validate {
        // The gateway logs these at start too.
        for (path, why) in config.ingest.warnings("ingest") {
            eprintln!("warning: {path}: {why}");
        }
        match serde_yaml::to_value(&config).and_then(|value| serde_yaml::to_string(&tailgate::redact::redacted(value)))
        {
            Ok(yaml) => {
                println!(
                    "# {}: valid. Effective configuration (secrets shown as {}):\n{yaml}",
                    path.map_or("<defaults>".into(), |p| p.display().to_string()),
                    tailgate::redact::REDACTED
                );
                return ExitCode::SUCCESS;
            }
            Err(error) => {
                eprintln!("cannot print the configuration: {error}");
                return ExitCode::from(1);
            }
        }
    }
    tailgate::telemetry::init_logs(&config.telemetry.logs);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(tailgate::run(role, config, path.cloned()));
    let code = match result {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            1
        }
    };
    // Exit without waiting for the runtime to wind down: roles have already drained and flushed, and an embedded
    // broker's tasks (and librdkafka's threads) would otherwise hold the process open.
    std::process::exit(code)
}

/// `tailgate loadgen`: no config file; progress on stdout; exit 1 if anything was not acknowledged.
fn loadgen(args: &tailgate::loadgen::LoadgenArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    let result = runtime.block_on(async move {
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            on_signal.cancel();
        });
        tailgate::loadgen::run(args, &mut std::io::stdout(), stop).await
    });
    match result {
        Ok(summary) if summary.rejected == 0 && summary.failed_requests == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
