//! A size in bytes as config files write it ("64KiB", "1MiB", 4096): a value type every
//! part's settings use, with no other import.

use std::fmt;

use serde::Deserialize;

/// A size in bytes, written as a number or with a unit: "512", "64KiB", "1MiB", "4GiB", "10MB".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parse "64KiB", "1 MiB", "1000", "2GB".
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let digits_end = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(digits_end);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("expected a size like \"64KiB\" or \"1MiB\", found {s:?}"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?}: expected B, KB, KiB, MB, MiB, GB or GiB"
                ));
            }
        };
        Ok(ByteSize((num * mult as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}
