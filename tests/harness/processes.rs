//! The pipeline as an operator runs it: every role its own process of the real binary, each with its own config
//! file, its stderr appended to `<name>.log` in the run's directory (so a restart's output follows the crash's), and
//! its peak resident memory (`VmHWM` in `/proc/<pid>/status`, the kernel's own high-water mark) read for as long as
//! the campaign runs.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{binary, local, wait};

/// One role of the pipeline: how to start it, and the process currently running it.
pub struct Process {
    pub name: String,
    subcommand: &'static str,
    config: PathBuf,
    log: PathBuf,
    /// Where it answers `/health`; the broker has no telemetry and is ready when it accepts connections here.
    ready: Ready,
    child: Option<Child>,
    pid: Arc<AtomicU32>,
    /// Largest `VmHWM` seen, in KiB, over every incarnation.
    pub peak_rss_kib: Arc<AtomicU64>,
    pub starts: u32,
}

#[derive(Clone, Copy)]
pub enum Ready {
    Health(SocketAddr),
    Listening(SocketAddr),
}

impl Process {
    /// `tailgate <subcommand> --config <dir>/<name>.yaml`, with `config` written there.
    pub fn new(dir: &Path, name: &str, subcommand: &'static str, config: &str, ready: Ready) -> Process {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config).unwrap();
        Process {
            name: name.to_owned(),
            subcommand,
            config: path,
            log: dir.join(format!("{name}.log")),
            ready,
            child: None,
            pid: Arc::new(AtomicU32::new(0)),
            peak_rss_kib: Arc::new(AtomicU64::new(0)),
            starts: 0,
        }
    }

    /// Starts it and waits until it is ready.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options().create(true).append(true).open(&self.log).unwrap();
        let mut child = binary::tailgate()
            .args([self.subcommand, "--config"])
            .arg(&self.config)
            .env_remove("TAILGATE_KAFKA_BROKERS")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.pid.store(child.id(), Ordering::SeqCst);
        match self.ready {
            Ready::Health(addr) => wait::until_serving(addr, "/health", &mut child, Duration::from_secs(60)).await,
            Ready::Listening(addr) => {
                let up = wait::eventually(Duration::from_secs(60), || std::net::TcpStream::connect(addr).is_ok()).await;
                assert!(up, "{} never listened on {addr}", self.name);
            }
        }
        self.starts += 1;
        self.child = Some(child);
    }

    /// Sends `signal` (`-KILL`, `-STOP`, `-CONT`, `-TERM`) to the running process.
    pub fn signal(&self, signal: &str) {
        binary::signal(self.child.as_ref().expect("running"), signal);
    }

    /// Where it answers `/health` and `/metrics`, if it is a role with telemetry.
    pub fn telemetry(&self) -> Option<SocketAddr> {
        match self.ready {
            Ready::Health(addr) => Some(addr),
            Ready::Listening(_) => None,
        }
    }

    /// Its peak RSS so far, read from the kernel now: the sampler reads it every 100 ms, and this before a kill or
    /// a stop, so no incarnation's peak is missed.
    fn record_peak(&self) {
        if let Some(kib) = vm_hwm_kib(self.pid.load(Ordering::SeqCst)) {
            self.peak_rss_kib.fetch_max(kib, Ordering::SeqCst);
        }
    }

    /// Whether every thread of the running process is stopped: SIGSTOP is delivered to each thread in turn, and on
    /// a loaded machine one may still answer a request just after `kill -STOP` returned.
    pub fn stopped(&self) -> bool {
        let pid = self.pid.load(Ordering::SeqCst);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')))
        })
    }

    /// SIGKILL, and wait until it is gone (so its ports are free for the restart).
    pub fn kill(&mut self) {
        self.record_peak();
        let mut child = self.child.take().expect("running");
        binary::signal(&child, "-KILL");
        child.wait().unwrap();
        self.pid.store(0, Ordering::SeqCst);
    }

    /// SIGTERM, and wait for it to exit; its exit status (`None` if it was not running).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.record_peak();
        let mut child = self.child.take()?;
        binary::signal(&child, "-CONT");
        binary::signal(&child, "-TERM");
        let status = child.wait().unwrap();
        self.pid.store(0, Ordering::SeqCst);
        Some(status)
    }

    /// Whether the current process exited on its own (a crash the campaign did not cause).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// Its configuration file, read at every start (and watched by a sampler for policy changes).
    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads every process's `VmHWM` every 100 ms on a thread of its own until dropped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(processes: &[&Process]) -> RssSampler {
        let watched: Vec<(Arc<AtomicU32>, Arc<AtomicU64>)> =
            processes.iter().map(|p| (Arc::clone(&p.pid), Arc::clone(&p.peak_rss_kib))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::SeqCst) {
                    for (pid, peak) in &watched {
                        if let Some(kib) = vm_hwm_kib(pid.load(Ordering::SeqCst)) {
                            peak.fetch_max(kib, Ordering::SeqCst);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        RssSampler { stop, thread: Some(thread) }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `VmHWM` of `pid` in KiB — the largest its RSS has been, as the kernel counts it, so no spike between two reads
/// is missed; `None` for no process (0) or one that is gone.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    memory_kib(pid, "VmHWM:")
}

/// A memory line of `/proc/<pid>/status` in KiB (`"VmRSS:"`, `"VmHWM:"`, the peak); `None` for no process (0) or
/// one that is gone. The one reader of process memory the tests have.
pub fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A fresh local address for a process's listener.
pub fn local_addr() -> SocketAddr {
    format!("127.0.0.1:{}", local::free_port()).parse().unwrap()
}

/// The peak RSS of each process, in MiB, by name.
pub fn peaks(processes: &[&Process]) -> BTreeMap<String, f64> {
    processes.iter().map(|p| (p.name.clone(), p.peak_rss_kib.load(Ordering::SeqCst) as f64 / 1024.0)).collect()
}
