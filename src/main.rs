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
    /// Run every role with an embedded Kafka-API broker: the pipeline on one machine, from one command.
    AllInOne {
        /// Optional; the defaults work out of the box.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file: print every problem with its path (exit code 1), or the effective config.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, role) = match &cli.command {
        Command::Ingest { config } => (Some(config), tailgate::Role::Ingest),
        Command::Sampler { config } => (Some(config), tailgate::Role::Sampler),
        Command::AllInOne { config } => (config.as_ref(), tailgate::Role::AllInOne),
        Command::Validate { config } => (Some(config), tailgate::Role::Validate),
    };
    let config = match Config::load(path.map(PathBuf::as_path)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(1);
        }
    };
    if let tailgate::Role::Validate = role {
        match serde_yaml::to_string(&config) {
            Ok(yaml) => {
                println!(
                    "# {}: valid. Effective configuration:\n{yaml}",
                    path.map_or("<defaults>".into(), |p| p.display().to_string())
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
    let result = runtime.block_on(tailgate::run(role, config));
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
