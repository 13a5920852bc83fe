//! The embedded Kafka-API broker behind `tailgate all-in-one`: Tansu, linked in-process.
//!
//! Linked rather than supervised as a child process so that `all-in-one` needs nothing installed beyond this
//! binary. The broker runs on its own thread and runtime, so Tailgate's roles talk to it over TCP exactly as they
//! would to a remote Kafka, and so its shutdown cannot hold up ours: Tansu 0.6 offers no way to stop a broker
//! from outside, so the process exits (after the roles drained and flushed) without waiting for it. Its SQLite
//! storage commits each write, so nothing acknowledged is lost by that.

mod admin;
mod disk;
mod indexes;

use std::net::SocketAddr;

use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;

type TansuBroker = Broker<Controller<StorageContainer>, StorageContainer>;
use std::path::Path;
use std::time::{Duration, Instant};

/// Name of the broker's threads, so its CPU can be told apart from Tailgate's (see the ingest benchmark).
pub const THREAD_NAME: &str = "tansu-broker";

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot create the broker's data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("invalid broker setting: {0}")]
    Url(String),
    #[error("the embedded broker failed: {0}")]
    Broker(String),
    #[error("the embedded broker did not accept connections on {0} within 30s")]
    NotListening(SocketAddr),
}

/// Where the broker keeps its log.
pub enum Storage<'a> {
    /// A SQLite database in this directory: survives restarts. Records older than `retention` are deleted (by
    /// Tansu's maintenance, which runs every hundredth of it, between every second and every 5 s) from topics created with
    /// `cleanup.policy=delete` and their `retention.ms` — what [`topic_config`] gives every topic Tailgate creates.
    /// Past `retention_bytes`, every topic's retention is shortened until the database fits (see `disk`), but those
    /// of `own_retention`: topics that hold state, not traffic, whose own retention is what their readers need (the
    /// sampler's decisions topic: the decision lookback).
    Dir { dir: &'a Path, retention: Duration, retention_bytes: u64, own_retention: Vec<String> },
    /// In memory, for tests.
    Memory,
}

/// The topic settings under which Tansu deletes a topic's old records: both must be set on the topic (Tansu reads
/// no broker-wide default).
pub fn topic_config(retention: Duration) -> [(&'static str, String); 2] {
    [("cleanup.policy", "delete".to_owned()), ("retention.ms", retention.as_millis().to_string())]
}

/// How often Tansu's maintenance (deleting records past their retention) runs: every hundredth of the retention,
/// between one second and five. Often, so that each run deletes little: a run deletes everything past its time in
/// one SQLite transaction, and while it runs the broker answers nothing. Measured at 20,000 spans/s with every
/// tenth of a 10-minute retention (a minute's records a run): the broker stopped for 2–3 s every minute, growing,
/// until in minute 23 a stop outlasted the sampler's 6 s session and its group lost the assignment for good.
fn maintenance_interval(retention: Duration) -> Duration {
    (retention / 100).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// A running broker. Dropping the handle does not stop it (see the module docs).
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts a broker on `listen` and waits until it accepts connections.
    pub fn start(listen: SocketAddr, storage: Storage<'_>) -> Result<EmbeddedBroker, BrokerError> {
        EmbeddedBroker::start_advertising(listen, &listen.to_string(), storage)
    }

    /// Starts a broker on `listen` that tells clients to connect to `advertised` (`host:port`) — a proxy in front
    /// of it, such as a TLS terminator (Tansu 0.6 accepts a TLS config but serves plaintext only).
    pub fn start_advertising(
        listen: SocketAddr,
        advertised: &str,
        storage: Storage<'_>,
    ) -> Result<EmbeddedBroker, BrokerError> {
        let mut size_bound = None;
        let storage_url = match storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Dir { dir, retention, retention_bytes, own_retention } => {
                std::fs::create_dir_all(dir)
                    .map_err(|source| BrokerError::DataDir { path: dir.display().to_string(), source })?;
                let dir = std::fs::canonicalize(dir)
                    .map_err(|source| BrokerError::DataDir { path: dir.display().to_string(), source })?;
                // Tansu resolves the URL's path against the working directory unless, after dropping one leading
                // slash, it is still absolute: hence four slashes.
                let every = maintenance_interval(retention);
                let db = dir.join("tansu.db");
                // Checked every other maintenance, so that a shortened retention has taken effect before the next.
                size_bound =
                    Some((db.clone(), disk::Bound::new(retention_bytes, retention, every), every * 2, own_retention));
                format!("sqlite:///{}?maintenance_interval={}ms", db.display(), every.as_millis())
            }
        };
        let parse = |text: &str| url::Url::parse(text).map_err(|e| BrokerError::Url(format!("{text}: {e}")));
        let listener = parse(&format!("tcp://{listen}"))?;
        let advertised = parse(&format!("tcp://{advertised}"))?;
        let storage = parse(&storage_url)?;

        let (failed_tx, failed_rx) = std::sync::mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("embedded-broker".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(THREAD_NAME)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = failed_tx.send(error.to_string());
                        return;
                    }
                };
                let result = runtime.block_on(async move {
                    let index = size_bound.as_ref().map(|bound| bound.0.clone());
                    if let Some((db, bound, every, own_retention)) = size_bound {
                        tokio::spawn(disk::keep_within(db, listen, bound, every, own_retention));
                    }
                    let mut broker = TansuBroker::builder()
                        .node_id(111)
                        .cluster_id("tailgate")
                        .incarnation_id(uuid::Uuid::new_v4())
                        .advertised_listener(advertised)
                        .storage(storage)
                        .listener(listener)
                        .silent(true)
                        .build()
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    if let Some(db) = index {
                        // Without them the broker slows as its store grows, and stops while retention deletes.
                        indexes::add(&db).await.map_err(|e| format!("cannot index the broker's database: {e}"))?;
                    }
                    broker.serve(tokio::time::Instant::now()).await.map_err(|e| format!("{e:?}"))
                });
                if let Err(error) = result {
                    let _ = failed_tx.send(error);
                }
                // Keep the runtime (and so any task the broker left behind) alive until the process exits.
                std::mem::forget(runtime);
            })
            .map_err(|e| BrokerError::Broker(e.to_string()))?;

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(error) = failed_rx.try_recv() {
                return Err(BrokerError::Broker(error));
            }
            if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
                return Ok(EmbeddedBroker { addr: listen });
            }
            if Instant::now() > deadline {
                return Err(BrokerError::NotListening(listen));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
