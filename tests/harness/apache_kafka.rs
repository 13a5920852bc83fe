//! Apache Kafka for tests: the real broker, in KRaft mode, from the jars `tests/kafka/pom.xml` names (copied under
//! `target/kafka/libs` by `tests/run.sh`), started by the tests themselves on free ports.
//!
//! Most tests share one single-node cluster per test binary (`kafka()`), each with topics and groups of its own;
//! a test that stops, restarts, secures or replicates brokers starts a `Cluster` of its own. Every node has three
//! listeners: `CLIENT` (what the roles and the tests connect to; its protocol is the test's choice), `INTERNAL`
//! (plaintext, between the brokers) and `CONTROLLER` (the KRaft quorum). A node is a `java` process: SIGKILLed,
//! paused and restarted on its own log directory as a test says. Every JVM started here dies with the test
//! process, however that ends: a watchdog process reads a pipe that only this process holds and, when the pipe
//! closes, kills every broker listed in its pid file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::local::{free_port, temp_dir};
use super::proxy::Proxy;

/// The Apache Kafka version the suite runs: the one `tests/kafka/pom.xml` resolves, and the image
/// `docker-compose.yml` and `deploy/kubernetes` pin.
pub const VERSION: &str = "4.1.1";

/// The single-node cluster this test binary shares: started on first use, killed when the process exits.
pub fn kafka() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| Cluster::start(Options::default()))
}

/// Its bootstrap address.
pub fn brokers() -> String {
    kafka().bootstrap()
}

/// What a cluster is started with.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    /// The security protocol of the `CLIENT` listener.
    pub client_protocol: &'static str,
    /// The name the `CLIENT` listener is advertised under: `localhost` where a client checks it against the
    /// broker's certificate.
    pub advertised_host: &'static str,
    /// Server properties beyond the suite's defaults (they win over them).
    pub properties: Vec<(String, String)>,
    /// SCRAM-SHA-512 credentials written into the metadata log when the nodes are formatted: (user, password).
    pub scram_users: Vec<(String, String)>,
    /// Whether clients reach each node through a [`Proxy`] of its own (the node advertises the proxy's port), so
    /// that a test can delay, stall or reset the network between the clients and the cluster. The brokers and the
    /// quorum talk to each other directly.
    pub proxied: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 1,
            client_protocol: "PLAINTEXT",
            advertised_host: "127.0.0.1",
            properties: Vec::new(),
            scram_users: Vec::new(),
            proxied: false,
        }
    }
}

impl Options {
    pub fn property(mut self, key: &str, value: impl ToString) -> Self {
        self.properties.push((key.to_owned(), value.to_string()));
        self
    }
}

pub struct Cluster {
    nodes: Vec<Node>,
}

/// One broker-and-controller of a cluster.
pub struct Node {
    pub id: u32,
    host: &'static str,
    /// The port clients are told: the node's `CLIENT` listener, or its proxy.
    pub port: u16,
    /// Between the clients and the node, if the cluster is proxied.
    pub proxy: Option<Proxy>,
    dir: PathBuf,
    process: Mutex<Option<Child>>,
    /// How many "started" lines its log had after the last start: the next start is the next line.
    starts_seen: AtomicUsize,
}

impl Cluster {
    /// Formats each node's log directory and starts the nodes; returns once every node says it has started.
    pub fn start(options: Options) -> Cluster {
        let libs = libs();
        let root = temp_dir("apache-kafka");
        let ports: Vec<(u16, u16, u16)> = (0..options.nodes).map(|_| (free_port(), free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, _, controller))| format!("{}@127.0.0.1:{controller}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let replicas = options.nodes.min(3);
        let cluster_id = cluster_id();
        let mut nodes = Vec::new();
        for (i, &(port, internal, controller)) in ports.iter().enumerate() {
            let id = i as u32 + 1;
            let proxy = options.proxied.then(|| Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()));
            let advertised = proxy.as_ref().map_or(port, |p| p.addr.port());
            let dir = root.join(format!("node-{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            let mut properties: Vec<(String, String)> = [
                ("process.roles", "broker,controller".to_owned()),
                ("node.id", id.to_string()),
                ("controller.quorum.voters", voters.clone()),
                (
                    "listeners",
                    format!(
                        "CLIENT://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}"
                    ),
                ),
                (
                    "advertised.listeners",
                    format!("CLIENT://{}:{advertised},INTERNAL://127.0.0.1:{internal}", options.advertised_host),
                ),
                (
                    "listener.security.protocol.map",
                    format!("CLIENT:{},INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT", options.client_protocol),
                ),
                ("inter.broker.listener.name", "INTERNAL".to_owned()),
                ("controller.listener.names", "CONTROLLER".to_owned()),
                ("log.dirs", dir.join("logs").display().to_string()),
                ("offsets.topic.replication.factor", replicas.to_string()),
                ("offsets.topic.num.partitions", "4".to_owned()),
                ("transaction.state.log.replication.factor", replicas.to_string()),
                ("transaction.state.log.min.isr", replicas.min(2).to_string()),
                ("default.replication.factor", replicas.to_string()),
                ("group.initial.rebalance.delay.ms", "0".to_owned()),
                // Retention and compaction looked at every second or two, so tests of them wait seconds.
                ("log.retention.check.interval.ms", "1000".to_owned()),
                ("log.cleaner.backoff.ms", "500".to_owned()),
                ("log.segment.delete.delay.ms", "1000".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            for (key, value) in &options.properties {
                properties.retain(|(k, _)| k != key);
                properties.push((key.clone(), value.clone()));
            }
            let text: String = properties.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            std::fs::write(dir.join("server.properties"), text).unwrap();
            std::fs::write(
                dir.join("log4j.properties"),
                "log4j.rootLogger=INFO, out\nlog4j.appender.out=org.apache.log4j.ConsoleAppender\n\
                 log4j.appender.out.layout=org.apache.log4j.PatternLayout\n\
                 log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n\n\
                 log4j.logger.kafka.request.logger=WARN\nlog4j.logger.state.change.logger=WARN\n",
            )
            .unwrap();
            let mut format = java(&libs, &dir);
            // `=`: an ID may start with `-`, which would read as an option.
            format.args([
                "kafka.tools.StorageTool",
                "format",
                &format!("--cluster-id={cluster_id}"),
                "-c",
                "server.properties",
            ]);
            for (user, password) in &options.scram_users {
                format.args(["--add-scram", &format!("SCRAM-SHA-512=[name={user},password={password}]")]);
            }
            let output = format.output().expect("java runs");
            assert!(
                output.status.success(),
                "formatting Apache Kafka's log directory failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            nodes.push(Node {
                host: options.advertised_host,
                id,
                port: advertised,
                proxy,
                dir,
                process: Mutex::new(None),
                starts_seen: AtomicUsize::new(0),
            });
        }
        let cluster = Cluster { nodes };
        for node in &cluster.nodes {
            node.spawn(&libs);
        }
        for node in &cluster.nodes {
            node.wait_started(Duration::from_secs(90));
        }
        cluster
    }

    /// Every node's `CLIENT` address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(|n| format!("{}:{}", n.host, n.port)).collect::<Vec<_>>().join(",")
    }

    pub fn node(&self, id: u32) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("a node of this cluster")
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node leading `partition` of `topic` now, as the metadata says (plaintext `CLIENT` listeners only).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<u32> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().expect("metadata client");
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        let topic = metadata.topics().iter().find(|t| t.name() == topic)?;
        let leader = topic.partitions().iter().find(|p| p.id() == partition)?.leader();
        (leader >= 0).then_some(leader as u32)
    }

    /// The leader of each partition of `topic` (index = partition), `None` where the metadata names none; asked of
    /// every node but `except` (a paused node takes the connection and never answers).
    pub fn leaders(&self, topic: &str, except: Option<u32>) -> Vec<Option<u32>> {
        let bootstrap = self
            .nodes
            .iter()
            .filter(|n| Some(n.id) != except)
            .map(|n| format!("{}:{}", n.host, n.port))
            .collect::<Vec<_>>()
            .join(",");
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("metadata client");
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else { return Vec::new() };
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == topic) else { return Vec::new() };
        let mut leaders = vec![None; topic.partitions().len()];
        for p in topic.partitions() {
            if let Some(slot) = leaders.get_mut(p.id() as usize) {
                *slot = (p.leader() >= 0).then_some(p.leader() as u32);
            }
        }
        leaders
    }

    /// Runs one of Kafka's command-line tools (`org.apache.kafka.tools.AclCommand`, …) with `args`; panics with
    /// its output if it fails.
    pub fn tool(&self, class: &str, args: &[&str]) -> String {
        let output = java(&libs(), &self.nodes[0].dir).arg(class).args(args).output().expect("java runs");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{class} {args:?} failed: {text}");
        text
    }
}

impl Node {
    fn spawn(&self, libs: &Path) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("kafka.log")).unwrap();
        let mut command = java(libs, &self.dir);
        command
            .args(["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"])
            .arg(format!("-Dlog4j.configuration=file:{}", self.dir.join("log4j.properties").display()))
            .args(["kafka.Kafka", "server.properties"])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command.spawn().expect("java starts");
        watch(child.id());
        *self.process.lock().unwrap() = Some(child);
    }

    /// Waits for this start's "Kafka Server started" line in the node's log.
    fn wait_started(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let log = self.dir.join("kafka.log");
        let starts = |text: &str| text.matches("Kafka Server started").count();
        let before = self.starts_seen.load(Ordering::SeqCst);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if starts(&text) > before {
                self.starts_seen.store(starts(&text), Ordering::SeqCst);
                return;
            }
            if let Some(child) = self.process.lock().unwrap().as_mut() {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("Apache Kafka node {} exited ({status}) while starting:\n{}", self.id, tail(&text));
                }
            }
            assert!(Instant::now() < deadline, "Apache Kafka node {} did not start:\n{}", self.id, tail(&text));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: the broker dies as in a crash or an OOM kill, its log directory as it was.
    pub fn kill(&self) {
        if let Some(mut child) = self.process.lock().unwrap().take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the node's JVM: SIGSTOP is a broker that stops answering with its
    /// connections open (a long GC pause, a frozen VM), which only its session timeout tells the controller.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = self.process.lock().unwrap().as_ref() {
            let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().expect("kill runs");
            assert!(status.success(), "kill {signal} node {}", self.id);
        }
    }

    /// SIGTERM, and waits for it to exit: Kafka's controlled shutdown, which moves the leadership of every
    /// partition the node leads to another in-sync replica before it goes (a rolling restart's first half).
    pub fn terminate(&self) {
        if let Some(mut child) = self.process.lock().unwrap().take() {
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            child.wait().unwrap();
        }
    }

    /// Starts the node again on its own log directory; returns once it says it has started.
    pub fn restart(&self) {
        self.kill();
        self.spawn(&libs());
        self.wait_started(Duration::from_secs(90));
    }
}

/// A test's own cluster stops with the test (its log directories removed), not when the test process exits: a
/// suite's clusters would otherwise all run to its end. The shared cluster is a static, never dropped.
impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.kill();
            let _ = std::fs::remove_dir_all(&node.dir);
        }
    }
}

/// `java` with Kafka's classpath, in `dir`.
fn java(libs: &Path, dir: &Path) -> Command {
    let mut command = Command::new("java");
    command.current_dir(dir).arg("-cp").arg(format!("{}/*", libs.display())).stdin(Stdio::null());
    command
}

/// The jars `tests/run.sh` copied; a clear message when they are not there.
fn libs() -> PathBuf {
    let libs = std::env::var_os("TAILGATE_KAFKA_LIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kafka/libs"));
    assert!(
        libs.join(format!("kafka_2.13-{VERSION}.jar")).exists(),
        "Apache Kafka {VERSION} is not in {}: run tests/run.sh (or `mvn -q -f tests/kafka/pom.xml \
         dependency:copy-dependencies -DoutputDirectory=target/kafka/libs`)",
        libs.display()
    );
    libs
}

/// A KRaft cluster ID: 16 random bytes, URL-safe base64 without padding.
fn cluster_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        ^ ((std::process::id() as u64) << 32)
        ^ free_port() as u64;
    let mut x = seed | 1;
    (0..22)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // The last character carries 2 bits of the 128: keep its low 4 bits zero, as base64 of 16 bytes does.
            let c = if i == 21 { (x % 4) << 4 } else { x % 64 };
            ALPHABET[c as usize] as char
        })
        .collect()
}

/// Adds `pid` to the watchdog's list: killed when this test process exits.
fn watch(pid: u32) {
    struct Watchdog {
        pids: PathBuf,
        _pipe: ChildStdin,
        /// Never waited for: it outlives this process by design.
        _process: Child,
    }
    static WATCHDOG: OnceLock<Mutex<Watchdog>> = OnceLock::new();
    let watchdog = WATCHDOG.get_or_init(|| {
        let pids = temp_dir("kafka-watchdog").join("pids");
        std::fs::write(&pids, "").unwrap();
        // `cat` ends when the pipe's only writer, this process, is gone.
        let mut child = Command::new("sh")
            .args(["-c", "cat >/dev/null; kill -9 $(cat \"$0\") 2>/dev/null", &pids.display().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh starts");
        Mutex::new(Watchdog { pids, _pipe: child.stdin.take().unwrap(), _process: child })
    });
    let watchdog = watchdog.lock().unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(&watchdog.pids).unwrap();
    writeln!(file, "{pid}").unwrap();
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
