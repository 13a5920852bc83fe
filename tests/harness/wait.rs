//! Waiting for something that happens in another task or process, with a deadline, instead of sleeping a guess.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use super::http;

/// Polls `condition` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// Waits until the asynchronous `check` holds — a query of another process, say; panics with `what` if it does not
/// within `timeout`.
pub async fn until<F: std::future::Future<Output = bool>>(what: &str, timeout: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `GET path` on `addr` answers 200; panics if `child` exits first or `timeout` passes.
pub async fn until_serving(addr: SocketAddr, path: &str, child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    // Each attempt bounded: a port that something else holds (a Kafka broker reading "GET " as a 1 GB frame
    // length) may never answer, and the deadline and the child's exit must still be checked.
    let attempt = || tokio::time::timeout(Duration::from_secs(2), http::try_request(addr, "GET", path, &[], b""));
    while !attempt().await.is_ok_and(|r| r.is_ok_and(|r| r.status == 200)) {
        assert!(Instant::now() < deadline, "{addr}{path} never answered 200");
        assert!(child.try_wait().unwrap().is_none(), "the process exited before {addr}{path} answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
