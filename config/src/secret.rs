//! Where a secret comes from: a file or an environment variable, never the config itself, so that the config can
//! be printed, committed and reviewed.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Problems;

/// `{ file: /run/secrets/token }` or `{ env: TAILGATE_TOKEN }`: exactly one. A file's content has its trailing
/// newline removed (`echo token > file` writes one).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// A secret's value: its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Where the source is: names the file or variable, never the value.
impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, &self.env) {
            (Some(file), _) => write!(f, "file {}", file.display()),
            (None, Some(env)) => write!(f, "environment variable {env}"),
            (None, None) => f.write_str("nowhere"),
        }
    }
}

impl SecretSource {
    /// Reads the secret now. The error names the file or variable, never the value.
    pub fn read(&self) -> Result<Secret, String> {
        let value = match (&self.file, &self.env) {
            (Some(file), None) => std::fs::read_to_string(file)
                .map_err(|error| format!("cannot read `{}`: {error}", file.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            (None, Some(env)) => {
                std::env::var(env).map_err(|_| format!("environment variable `{env}` is not set (or not UTF-8)"))?
            }
            _ => return Err("give exactly one of `file` and `env`".to_owned()),
        };
        if value.is_empty() {
            return Err(format!("{self:?} is empty"));
        }
        Ok(Secret(value))
    }

    /// Reports at `path` a source that cannot be read now.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if let Err(message) = self.read() {
            problems.push(path, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_without_its_newline_and_never_shows_the_value() {
        let file = std::env::temp_dir().join(format!("tailgate-secret-{}", std::process::id()));
        std::fs::write(&file, "s3cr3t\n").unwrap();
        let source = SecretSource { file: Some(file.clone()), env: None };
        let secret = source.read().unwrap();
        assert_eq!(secret.expose(), "s3cr3t");
        assert!(!format!("{secret:?} {source:?}").contains("s3cr3t"));
        std::fs::write(&file, "\n").unwrap();
        assert!(source.read().unwrap_err().ends_with("is empty"), "{:?}", source.read());
        std::fs::remove_file(&file).unwrap();
        let both = SecretSource { file: Some(file), env: Some("X".into()) };
        assert_eq!(both.read().unwrap_err(), "give exactly one of `file` and `env`");
        let unset = SecretSource { file: None, env: Some("TAILGATE_TEST_UNSET_VARIABLE".into()) };
        assert!(unset.read().unwrap_err().contains("TAILGATE_TEST_UNSET_VARIABLE` is not set"));
    }
}
