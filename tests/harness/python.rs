//! The OpenTelemetry Python SDK, a client we didn't write, and the scripts in `tests/python/` that drive it.

use std::process::Command;

/// The Python with the OpenTelemetry SDK that `tests/run.sh` installs: `TAILGATE_PYTHON`, else its venv under
/// `target/`, else `python3`.
pub fn python() -> Command {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/venv/bin/python");
    let python = std::env::var("TAILGATE_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new(venv).exists() {
            venv.to_owned()
        } else {
            "python3".to_owned()
        }
    });
    Command::new(python)
}

/// The path of `tests/python/<name>`.
pub fn python_script(name: &str) -> String {
    format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}
