//! The broker a benchmark runs on, its own process(es), never counted: the embedded default (`tailgate broker`,
//! Tansu) or Apache Kafka (one KRaft node from the suite's jars, `target/kafka/libs`), as
//! `TAILGATE_BENCH_BROKER=tansu|kafka` says (Tansu by default).

use std::path::Path;

use crate::apache_kafka::{Cluster, Options};
use crate::child::Process;

pub enum Broker {
    Tansu { _process: Process, brokers: String },
    Kafka(Cluster),
}

impl Broker {
    /// Starts the broker `TAILGATE_BENCH_BROKER` names, with its data under `dir`.
    pub fn start(dir: &Path) -> Broker {
        match std::env::var("TAILGATE_BENCH_BROKER").as_deref() {
            Ok("kafka") => Broker::Kafka(Cluster::start(Options::default())),
            Ok("tansu") | Err(_) => {
                let port = crate::local::free_port();
                let brokers = format!("127.0.0.1:{port}");
                let config =
                    format!("embedded_broker: {{ listen: '{brokers}', data_dir: '{}' }}\n", dir.join("data").display());
                let process = crate::start_tailgate(dir, "broker", config, port);
                Broker::Tansu { _process: process, brokers }
            }
            Ok(other) => panic!("TAILGATE_BENCH_BROKER={other}: expected tansu or kafka"),
        }
    }

    pub fn brokers(&self) -> String {
        match self {
            Broker::Tansu { brokers, .. } => brokers.clone(),
            Broker::Kafka(cluster) => cluster.bootstrap(),
        }
    }

    /// How the tables name it.
    pub fn name(&self) -> &'static str {
        match self {
            Broker::Tansu { .. } => "Tansu",
            Broker::Kafka(_) => "Apache Kafka",
        }
    }

    /// Whether producers are idempotent on it: Tansu has no idempotent producer.
    pub fn idempotent(&self) -> bool {
        matches!(self, Broker::Kafka(_))
    }

    /// The `kafka.producer` settings Tailgate runs with on it.
    pub fn producer_yaml(&self) -> String {
        format!("producer: {{ idempotence: {} }}", self.idempotent())
    }
}
