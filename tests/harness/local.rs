//! What a test takes from the machine without clashing with other tests, or with another run: free ports and
//! directories of its own. Shared with the benches (`tests/bench/ingest.rs`).

use std::net::TcpListener;
use std::path::PathBuf;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A new directory `tailgate-<what>-<pid>-<port>` under the system's temporary directory.
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tailgate-{what}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
