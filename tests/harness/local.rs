//! What a test takes from the machine without clashing with other tests, or with another run: free ports and
//! directories of its own. Shared with the benches (`tests/bench/ingest.rs`).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

/// A port nothing listens on now, and that this process has not handed out before: ports are often chosen before
/// the processes that bind them start, and the system may give a released port out again (a campaign once gave a
/// sampler's metrics endpoint the broker's port, and the sampler exited).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// A new directory `tailgate-<what>-<pid>-<port>` under the system's temporary directory.
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tailgate-{what}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
