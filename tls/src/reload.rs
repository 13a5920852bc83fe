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
            let watch = Watch { config: config.clone(), alpn, listener, loaded: files, refused: None };
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
}

impl Watch {
    async fn run(mut self, current: Weak<RwLock<Arc<rustls::ServerConfig>>>, interval: std::time::Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(current) = current.upgrade() else { return };
            // A file being rewritten may be missing or half written; the next tick sees it whole.
            let Ok(files) = self.config.read() else { continue };
            if files == self.loaded || self.refused.as_ref() == Some(&files) {
                continue;
            }
            match self.config.build(&files, self.alpn) {
                Ok(config) => {
                    *current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
                    self.loaded = files;
                    self.refused = None;
                    tracing::info!(listener = self.listener, "TLS certificate files changed; new connections use them");
                    metrics::counter!(crate::RELOADS, "listener" => self.listener, "outcome" => "success").increment(1);
                }
                Err(error) => {
                    self.refused = Some(files);
                    tracing::warn!(
                        listener = self.listener,
                        key = error.key,
                        %error,
                        "TLS certificate files changed but cannot be used; keeping the ones loaded before"
                    );
                    metrics::counter!(crate::RELOADS, "listener" => self.listener, "outcome" => "failure").increment(1);
                }
            }
        }
    }
}
