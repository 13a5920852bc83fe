use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes: a plain number, or a number with a unit — `KiB`/`MiB`/`GiB` (powers of 1024) or
/// `KB`/`MB`/`GB` (powers of 1000), as Kubernetes and the Collector write them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn b(n: u64) -> Self {
        ByteSize(n)
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| format!("`{text}` is not a size like `16MiB`"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => return Err(format!("unknown unit `{other}` in `{text}`; use B, KiB, MiB, GiB, KB, MB or GB")),
        };
        number.checked_mul(scale).map(ByteSize).ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            0 => write!(f, "0"),
            _ if n % (1 << 30) == 0 => write!(f, "{}GiB", n >> 30),
            _ if n % (1 << 20) == 0 => write!(f, "{}MiB", n >> 20),
            _ if n % (1 << 10) == 0 => write!(f, "{}KiB", n >> 10),
            _ => write!(f, "{n}"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => ByteSize::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn parses_and_prints_units() {
        assert_eq!(ByteSize::parse("16MiB").unwrap().get(), 16 << 20);
        assert_eq!(ByteSize::parse("1MB").unwrap().get(), 1_000_000);
        assert_eq!(ByteSize::parse("1000").unwrap().get(), 1000);
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert_eq!(ByteSize::mib(256).to_string(), "256MiB");
    }
}
