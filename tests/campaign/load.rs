//! The load: `tests/python/campaign_client.py`, the OpenTelemetry Python SDK — a client we didn't write — sending
//! steady traces, logs and metrics alternately through the two gateways, and keeping the ledger of what it saw
//! acknowledged.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::harness::{python, python_script};

pub struct Load {
    child: Option<Child>,
    pub ledger: PathBuf,
}

impl Load {
    /// Starts the client: `seconds` of load at `rate` traces a second, choices from `seed`.
    pub fn start(dir: &Path, gateways: &[std::net::SocketAddr], seconds: f64, rate: f64, seed: u64) -> Load {
        let ledger = dir.join("ledger.jsonl");
        let gateways: Vec<String> = gateways.iter().map(ToString::to_string).collect();
        let log = std::fs::File::create(dir.join("client.log")).unwrap();
        let child = python()
            .arg(python_script("campaign_client.py"))
            .args(["--gateways", &gateways.join(",")])
            .args(["--seconds", &seconds.to_string(), "--rate", &rate.to_string()])
            // Python's `random.Random` takes any integer; the low 63 bits keep the argument positive.
            .args(["--seed", &(seed & (u64::MAX >> 1)).to_string()])
            .arg("--ledger")
            .arg(&ledger)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the Python SDK client starts (tests/run.sh installs it; TAILGATE_PYTHON points at it)");
        Load { child: Some(child), ledger }
    }

    /// Whether the client is done sending.
    pub fn finished(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().unwrap().is_some())
    }

    /// Waits for the client to flush and exit; panics if it failed.
    /// Returns the ledger and the number of traces the client started.
    pub async fn wait(mut self, timeout: Duration) -> (PathBuf, usize) {
        let done = crate::harness::eventually(timeout, || self.finished()).await;
        assert!(done, "the load client did not finish within {timeout:?}");
        let output = self.child.take().unwrap().wait_with_output().unwrap();
        assert!(output.status.success(), "the load client failed ({}); see client.log", output.status);
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the client's summary");
        eprintln!("load client: {summary}");
        (self.ledger.clone(), summary["traces"].as_u64().unwrap() as usize)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
        }
    }
}
