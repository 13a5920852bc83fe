//! The processes a benchmark starts: Tailgate's binary (this build's, or the one `TAILGATE_BIN` names, to compare
//! builds in one run) and peers, each killed when its handle is dropped.

use std::process::Child;

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tailgate`: `TAILGATE_BIN`, or the binary of this build beside the bench's own.
pub fn tailgate_binary() -> String {
    std::env::var("TAILGATE_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("tailgate").display().to_string()
    })
}
