//! Live reload of the sampler's policies, on SIGHUP or when the configuration file changes (what Refinery users
//! rely on). The new file is loaded and validated first: an invalid one is refused, every problem logged with its
//! path, and the running policies stay. What reloads: `sampler.policies`, `sampler.tenants`, `sampler.dry_run`,
//! `sampler.record_policy`; a change anywhere else is logged as taking effect at the next restart.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tailgate_sampler::SamplerConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How often the file is looked at for changes.
const POLL: Duration = Duration::from_secs(1);

/// The part of the sampler's section that reloads.
fn reloadable(config: &SamplerConfig) -> serde_yaml::Value {
    let value = |v: serde_yaml::Result<serde_yaml::Value>| v.unwrap_or(serde_yaml::Value::Null);
    serde_yaml::Value::Sequence(vec![
        value(serde_yaml::to_value(&config.policies)),
        value(serde_yaml::to_value(&config.tenants)),
        serde_yaml::Value::Bool(config.dry_run),
        serde_yaml::Value::Bool(config.record_policy),
    ])
}

/// Every section (and the sampler's other keys) as YAML, to tell what changed that needs a restart.
fn restart_only(config: &Config) -> Vec<(String, serde_yaml::Value)> {
    let mut sections = Vec::new();
    if let Ok(serde_yaml::Value::Mapping(all)) = serde_yaml::to_value(config) {
        for (key, value) in all {
            let name = key.as_str().unwrap_or_default().to_owned();
            match (name.as_str(), value) {
                ("sampler", serde_yaml::Value::Mapping(sampler)) => {
                    for (key, value) in sampler {
                        let key = key.as_str().unwrap_or_default().to_owned();
                        if !["policies", "tenants", "dry_run", "record_policy"].contains(&key.as_str()) {
                            sections.push((format!("sampler.{key}"), value));
                        }
                    }
                }
                (_, value) => sections.push((name, value)),
            }
        }
    }
    sections
}

fn modified(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Watches `path` and SIGHUP until `shutdown`, sending each valid new sampler section whose policies differ from
/// `running`'s to `updates`.
pub async fn watch(
    path: PathBuf,
    mut running: Config,
    updates: watch::Sender<SamplerConfig>,
    shutdown: CancellationToken,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the configuration file is still watched");
            None
        }
    };
    let mut seen = modified(&path);
    let mut poll = tokio::time::interval(POLL);
    loop {
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = async { match hangup.as_mut() { Some(signal) => signal.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = poll.tick() => {
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                // An editor or a ConfigMap update may be half-way through writing it: read it once it has not
                // changed for a whole poll interval.
                tokio::time::sleep(POLL).await;
                if modified(&path) != seen {
                    continue;
                }
                "the file changed"
            }
        };
        // An empty file parses as the defaults (10% probabilistic, no tenants, no dry run): at start that is a
        // choice, mid-run it is a file being written or truncated.
        let empty = std::fs::read_to_string(&path).is_ok_and(|text| text.trim().is_empty());
        if empty {
            metrics::counter!(tailgate_sampler::metrics::CONFIG_RELOAD_FAILURES).increment(1);
            tracing::error!(reason = why, path = %path.display(),
                "configuration reload refused: the file is empty; the running policies stay");
            continue;
        }
        match Config::load(Some(&path)) {
            Err(error) => {
                metrics::counter!(tailgate_sampler::metrics::CONFIG_RELOAD_FAILURES).increment(1);
                tracing::error!(reason = why, "configuration reload refused; the running policies stay.\n{error}");
            }
            Ok(new) => {
                let before = restart_only(&running);
                for (section, value) in restart_only(&new) {
                    if before.iter().find(|(name, _)| *name == section).map(|(_, v)| v) != Some(&value) {
                        tracing::warn!(section, "changed in the configuration file; takes effect at the next restart");
                    }
                }
                if reloadable(&new.sampler) != reloadable(&running.sampler) {
                    tracing::info!(reason = why, path = %path.display(), "configuration reloaded; new sampler policies");
                    let _ = updates.send(new.sampler.clone());
                } else {
                    tracing::info!(reason = why, "configuration read again; the sampler policies are unchanged");
                }
                running = new;
            }
        }
    }
}
