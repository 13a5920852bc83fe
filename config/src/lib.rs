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

/// serde's message with the value it was given left out: `invalid type: string "s3cr3t", expected …` is what a
/// token written inline where `{ file | env }` is expected produces (an integer, float or boolean the same way, in
/// backquotes), and no error, log line or metric may carry a secret. Where a secret was expected, says how to give
/// one.
fn without_values(message: &str) -> String {
    const GIVEN: &str = "invalid type: ";
    let Some(start) = message.find(GIVEN) else { return message.to_owned() };
    let rest = &message[start + GIVEN.len()..];
    let (unexpected, after) = match rest.find(", expected") {
        Some(end) => (&rest[..end], &rest[end..]),
        None => (rest, ""),
    };
    // `string "…"`, `integer `…``, `floating point `…``, `boolean `…``: the kind, then the value.
    let kind = unexpected.split(['"', '`']).next().unwrap_or_default().trim();
    let shown = if kind.len() < unexpected.len() { format!("{kind} (not shown)") } else { unexpected.to_owned() };
    let mut out = format!("{}{GIVEN}{shown}{after}", &message[..start]);
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
        for yaml in ["token: 31415926\n", "token: 2.71828\n", "token: true\n"] {
            let problems = from_yaml::<Auth>(yaml).unwrap_err().to_string();
            assert!(problems.contains("(not shown)"), "{problems}");
            assert!(!["31415926", "2.71828", "true`"].iter().any(|v| problems.contains(v)), "{problems}");
        }
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
