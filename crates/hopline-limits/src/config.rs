//! The `[limit.NAME]` table and the rate it is written in ("10r/s", "600r/m").

use std::time::Duration;

use serde::Deserialize;

/// The `[limit.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// What identifies a client: "client_ip" or "header:NAME".
    #[serde(default = "default_key")]
    pub key: String,
    /// "100/s", "600/m", "10000/h".
    pub rate: String,
    /// Requests allowed at once from a full bucket (default: one second's worth).
    pub burst: Option<u32>,
    /// "redis://127.0.0.1:6379" to share the limit across edge processes.
    pub store: Option<String>,
    /// Most keys remembered locally at once.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
}

fn default_key() -> String {
    "client_ip".into()
}
fn default_max_keys() -> u64 {
    1_000_000
}

/// A parsed rate: `count` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests.
    pub count: u32,
    /// Per this period.
    pub period: Duration,
}

impl Rate {
    /// Parse "100/s", "5/m", "1000/h", "10/500ms".
    pub fn parse(s: &str) -> Result<Rate, String> {
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("expected a rate like \"100/s\", found {s:?}"))?;
        let count: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| format!("rate count must be a positive integer, found {n:?}"))?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86400),
            other => match other.strip_suffix("ms").and_then(|v| v.parse::<u64>().ok()) {
                Some(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(format!(
                        "unknown rate period {other:?}: expected s, m, h, d or Nms"
                    ));
                }
            },
        };
        Ok(Rate { count, period })
    }
}
