//! Configuration building blocks shared by every Tailgate role.
//!
//! Each role's section follows one shape: a serde struct with defaults in code, then `validate(path, problems)`
//! that reports *every* problem with its path (`ingest.max_request_bytes`), so a user fixes a file in one round.
//! Unknown keys are collected the same way by [`from_yaml`] rather than failing on the first one.

#![forbid(unsafe_code)]

mod bytes;
mod duration;
mod problems;
mod secret;

pub use bytes::ByteSize;
pub use duration::Duration;
pub use problems::{Problem, Problems};
pub use secret::{Secret, SecretSource};

use serde::de::DeserializeOwned;

/// Parses a YAML document into `T`, reporting unknown keys and type errors with their paths.
pub fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, Problems> {
    let mut problems = Problems::default();
    let document = serde_yaml::Deserializer::from_str(text);
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path_string(&path));
    let ignoring = serde_ignored::Deserializer::new(document, &mut record);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(ignoring);
    for path in unknown {
        problems.push(path, "unknown key");
    }
    match parsed {
        Ok(value) if problems.is_empty() => Ok(value),
        Ok(_) => Err(problems),
        Err(error) => {
            let path = error.path().to_string();
            let message = without_values(&error.into_inner().to_string());
            problems.push(if path == "." { String::new() } else { path }, message);
            Err(problems)
        }
    }
}

/// serde's message with the string it was given left out: `invalid type: string "s3cr3t", expected …` is what a
/// token written inline where `{ file | env }` is expected produces, and no error, log line or metric may carry a
/// secret. Where that was expected, says how to give one.
fn without_values(message: &str) -> String {
    const GIVEN: &str = "invalid type: string \"";
    let Some(start) = message.find(GIVEN) else { return message.to_owned() };
    let rest = &message[start + GIVEN.len()..];
    // serde quotes the value with Rust's escapes; the message goes on after `", expected`.
    let Some(end) = rest.rfind("\", expected") else {
        return format!("{}invalid type: a string (not shown)", &message[..start]);
    };
    let mut out = format!("{}invalid type: a string (not shown){}", &message[..start], &rest[end + 1..]);
    if out.contains("SecretSource") {
        out.push_str("; a secret is read from a file or the environment: { file: PATH } or { env: NAME }");
    }
    out
}

/// `a.b[2].c`, the way `serde_path_to_error` and users write paths.
fn path_string(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_string(parent)),
        Path::Map { parent, key } => {
            let parent = path_string(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => path_string(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A token written inline where `{ file | env }` is expected: the error names the path and says what to
    /// write, without the token (before: `invalid type: string "s3cr3t", expected struct SecretSource`).
    #[test]
    fn a_secret_written_inline_is_not_echoed() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Auth {
            token: SecretSource,
        }
        let problems = from_yaml::<Auth>("token: s3cr3t-value\n").unwrap_err().to_string();
        assert!(!problems.contains("s3cr3t"), "{problems}");
        assert!(problems.contains("token") && problems.contains("{ file: PATH }"), "{problems}");
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        wait: Duration,
        size: ByteSize,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Outer {
        inner: Inner,
        list: Vec<Inner>,
    }

    #[test]
    fn reports_every_unknown_key_with_its_path() {
        let problems = from_yaml::<Outer>("inner: { wiat: 1s }\nlist: [ {}, { sise: 1KiB } ]\nextra: 1\n").unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["inner.wiat", "list[1].sise", "extra"]);
    }

    #[test]
    fn reports_a_bad_value_with_its_path() {
        let problems = from_yaml::<Outer>("list: [ { wait: soon } ]\n").unwrap_err();
        let problem = problems.iter().next().unwrap();
        assert_eq!(problem.path, "list[0].wait");
        assert!(problem.message.contains("soon"), "{}", problem.message);
    }

    #[test]
    fn parses_collector_style_values() {
        let outer: Outer = from_yaml("inner: { wait: 500ms, size: 16MiB }\n").unwrap();
        assert_eq!(outer.inner.wait.get(), std::time::Duration::from_millis(500));
        assert_eq!(outer.inner.size.get(), 16 << 20);
    }
}
