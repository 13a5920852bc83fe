//! A listener's TLS config that follows its files: read again every `reload_interval`, swapped in when they changed
//! and load.

use std::sync::{Arc, RwLock, Weak};

use crate::pem::TlsError;
use crate::server::{Files, ServerTlsConfig};

/// The rustls config new handshakes of one listener use. Cloning shares it.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl ServerTls {
    /// Loads `config`'s files and, with a `reload_interval`, starts watching them (on the current tokio runtime)
    /// for as long as this or a clone lives. `listener` names it in logs and metrics.
    pub fn new(
        config: &ServerTlsConfig,
        alpn: &'static [&'static [u8]],
        listener: &'static str,
    ) -> Result<Self, TlsError> {
        let files = config.read()?;
        let current = Arc::new(RwLock::new(config.build(&files, alpn)?));
        let interval = config.reload_interval.get();
        if !interval.is_zero() {
            let watch = Watch::new(config.clone(), alpn, listener, files);
            tokio::spawn(watch.run(Arc::downgrade(&current), interval));
        }
        Ok(ServerTls { current })
    }

    /// The config a handshake starting now uses.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

struct Watch {
    config: ServerTlsConfig,
    alpn: &'static [&'static [u8]],
    listener: &'static str,
    /// What is in use.
    loaded: Files,
    /// What was last refused, so that a bad file is reported once, not every interval.
    refused: Option<Files>,
    /// The read that failed last, and whether that failure was reported.
    unreadable: Option<(TlsError, bool)>,
}

/// What one look at the files found.
enum Step {
    Unchanged,
    /// The files changed and load: new handshakes use this.
    Loaded(Arc<rustls::ServerConfig>),
    /// The files cannot be used (report it).
    Refused(TlsError),
}

impl Watch {
    fn new(config: ServerTlsConfig, alpn: &'static [&'static [u8]], listener: &'static str, loaded: Files) -> Self {
        Watch { config, alpn, listener, loaded, refused: None, unreadable: None }
    }

    async fn run(mut self, current: Weak<RwLock<Arc<rustls::ServerConfig>>>, interval: std::time::Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(current) = current.upgrade() else { return };
            match self.step() {
                Step::Unchanged => {}
                Step::Loaded(config) => {
                    *current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
                    tracing::info!(listener = self.listener, "TLS certificate files changed; new connections use them");
                    metrics::counter!(crate::RELOADS, "listener" => self.listener, "outcome" => "success").increment(1);
                }
                Step::Refused(error) => {
                    tracing::warn!(
                        listener = self.listener,
                        key = error.key,
                        %error,
                        "TLS certificate files cannot be used; keeping the ones loaded before"
                    );
                    metrics::counter!(crate::RELOADS, "listener" => self.listener, "outcome" => "failure").increment(1);
                }
            }
        }
    }

    /// Reads the files once. A file that cannot be read is reported when the next read fails the same way too (a
    /// file being replaced may be missing for a moment), and then not again until the failure changes; files that
    /// read but do not load are reported once per content.
    fn step(&mut self) -> Step {
        let files = match self.config.read() {
            Ok(files) => {
                self.unreadable = None;
                files
            }
            Err(error) => {
                return match &mut self.unreadable {
                    Some((seen, reported)) if *seen == error => {
                        if std::mem::replace(reported, true) {
                            Step::Unchanged
                        } else {
                            Step::Refused(error)
                        }
                    }
                    _ => {
                        self.unreadable = Some((error, false));
                        Step::Unchanged
                    }
                };
            }
        };
        if files == self.loaded || self.refused.as_ref() == Some(&files) {
            return Step::Unchanged;
        }
        match self.config.build(&files, self.alpn) {
            Ok(config) => {
                self.loaded = files;
                self.refused = None;
                Step::Loaded(config)
            }
            Err(error) => {
                self.refused = Some(files);
                Step::Refused(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(step: Step) -> &'static str {
        match step {
            Step::Unchanged => "unchanged",
            Step::Loaded(_) => "loaded",
            Step::Refused(_) => "refused",
        }
    }

    #[test]
    fn a_missing_or_broken_file_is_reported_once_and_a_good_one_loads() {
        let dir = std::env::temp_dir().join(format!("tailgate-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", "/CN=localhost", "-days", "1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
        let pem = std::fs::read_to_string(&cert).unwrap();
        let config = ServerTlsConfig {
            cert_file: cert.clone(),
            key_file: key.clone(),
            client_ca_file: None,
            min_version: Default::default(),
            reload_interval: tailgate_config::Duration::from_secs(1),
        };
        let files = config.read().unwrap();
        config.build(&files, &[]).expect("the test certificate loads");
        let mut watch = Watch::new(config, &[], "test", files);
        assert_eq!(outcome(watch.step()), "unchanged");

        // Deleted: a moment's absence is not reported; still absent at the next read, reported once.
        std::fs::remove_file(&cert).unwrap();
        let steps: Vec<_> = (0..4).map(|_| outcome(watch.step())).collect();
        assert_eq!(steps, ["unchanged", "refused", "unchanged", "unchanged"]);
        // Back, unchanged: nothing to load.
        std::fs::write(&cert, &pem).unwrap();
        assert_eq!(outcome(watch.step()), "unchanged");
        // Readable but broken: reported at once, once.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
        let steps: Vec<_> = (0..2).map(|_| outcome(watch.step())).collect();
        assert_eq!(steps, ["refused", "unchanged"]);
        // Whole again: its content was loaded before, so nothing changes; a changed good file is loaded.
        std::fs::write(&cert, &pem).unwrap();
        assert_eq!(outcome(watch.step()), "unchanged");
        std::fs::write(&cert, format!("{pem}\n")).unwrap();
        assert_eq!(outcome(watch.step()), "loaded");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
