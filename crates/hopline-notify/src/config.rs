//! `[notify.NAME]` sections of the config file (the edge keeps them raw; read here and
//! refused with file, line and column like every other section).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hopline_edge::config::{ByteSize, ConfigError};
use serde::Deserialize;

/// One notification service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// "sqlite" (embedded, the default) or "redis://HOST:PORT" (Redis Streams: several
    /// nodes share the service).
    #[serde(default = "default_engine", deserialize_with = "engine")]
    pub engine: String,
    /// The SQLite file (relative to the config file).
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// Delays before each attempt ("0s", "5s", "5m", …).
    #[serde(default = "default_retry", deserialize_with = "retry")]
    pub retry: Vec<String>,
    /// Let webhooks reach loopback and private addresses (the SSRF guard is on by default).
    #[serde(default)]
    pub allow_private_targets: bool,
    /// Largest size of the database (a quota that keeps the disk from filling): past it,
    /// new messages are refused with 503 — as when the disk itself is full — and nothing
    /// is accepted that is not durable. Default: no limit but the disk's.
    pub max_database_size: Option<ByteSize>,
    /// How long a finished message (delivered, sent, failed, bounced, expired, dead,
    /// cancelled) is kept, with its history and attempts, counted from its acceptance;
    /// "off" keeps everything. Idempotency keys are dropped after their 24 h. Default
    /// "30d".
    #[serde(default = "default_retention")]
    pub retention: toml::Spanned<String>,
    /// Largest API request body (413 above it).
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// A webhook attempt's timeout.
    #[serde(default = "default_webhook_timeout")]
    pub webhook_timeout_ms: u64,
    /// Attempts in flight per channel.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Messages one app may send, e.g. "100/s" (GCRA, the edge's limiter); 429 above it.
    #[serde(default, deserialize_with = "rate")]
    pub app_rate: Option<String>,
    /// Burst of `app_rate` (default: one period's worth).
    pub app_burst: Option<u32>,
    /// Messages to one recipient (per app and channel), e.g. "5/h" for SMS; 429 above it.
    #[serde(default, deserialize_with = "rate")]
    pub recipient_rate: Option<String>,
    /// Burst of `recipient_rate`.
    pub recipient_burst: Option<u32>,
    /// "redis://HOST:PORT" to share the limits between nodes (default: this process).
    pub limit_store: Option<String>,
    /// Redis engine: a message a node took and did not finish within this time (the
    /// node died) is taken over by another node. Default: 60 s, and at least twice
    /// `webhook_timeout_ms` (a live node's slow attempt is not taken from it).
    pub claim_idle_ms: Option<u64>,
    /// The SMS gateway (`channel = "sms"`).
    pub sms: Option<SmsProvider>,
    /// The push provider (`channel = "push"`).
    pub push: Option<PushProvider>,
    /// The SMTP relay (`channel = "email"`).
    pub email: Option<EmailProvider>,
}

/// An SMTP relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailProvider {
    /// The relay's host name (checked against its certificate with TLS).
    pub host: String,
    /// Its port (default: 587 with starttls, 465 with tls, 25 without).
    pub port: Option<u16>,
    /// "starttls" (default), "tls" (implicit, port 465) or "none" (local relays only).
    #[serde(default = "default_smtp_tls", deserialize_with = "smtp_tls")]
    pub tls: String,
    /// AUTH user, if the relay wants one.
    pub user: Option<String>,
    /// AUTH password.
    pub password: Option<String>,
    /// The From address, e.g. "Shop <shop@example.com>".
    #[serde(deserialize_with = "mailbox")]
    pub from: String,
    /// Bounce reports (`POST /v1/callbacks/email`) are signed with this.
    pub callback_secret: String,
}

// Checks made while the file is read, so that an error names the value's line and column
// (serde's custom errors carry the span of the value being read).

/// A string value checked by `check` (its error is the message).
fn checked<'de, D: serde::Deserializer<'de>>(
    d: D,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn engine<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |s| {
        let ok = s == "sqlite" || (s.starts_with("redis://") && redis::Client::open(s).is_ok());
        if ok {
            Ok(())
        } else {
            Err(format!(
                "engine {s:?}: expected \"sqlite\" or \"redis://HOST:PORT\""
            ))
        }
    })
}

fn retry<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let delays = Vec::<String>::deserialize(d)?;
    if delays.is_empty() {
        return Err(serde::de::Error::custom(
            "retry needs at least one delay (the first attempt's, e.g. \"0s\")",
        ));
    }
    for delay in &delays {
        parse_delay(delay).map_err(|e| serde::de::Error::custom(format!("retry: {e}")))?;
    }
    Ok(delays)
}

fn rate<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, |s| {
        hopline_edge::limits::config::Rate::parse(s)
            .map(|_| ())
            .map_err(|e| format!("rate {s:?}: {e}"))
    })
    .map(Some)
}

fn smtp_tls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |s| match s {
        "starttls" | "tls" | "none" => Ok(()),
        _ => Err(format!(
            "tls {s:?}: expected \"starttls\", \"tls\" or \"none\""
        )),
    })
}

fn mailbox<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |s| match s.parse::<lettre::message::Mailbox>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "from {s:?} is not a mailbox (e.g. \"Shop <shop@example.com>\")"
        )),
    })
}

fn default_smtp_tls() -> String {
    "starttls".into()
}

/// An SMS gateway that takes a form-encoded POST with basic auth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsProvider {
    /// The endpoint, e.g. "https://sms.example/v1/send".
    pub url: String,
    /// Basic auth user (account).
    pub user: String,
    /// Basic auth password (token).
    pub password: String,
    /// The sender number or name.
    pub from: String,
    /// Its delivery callbacks (`POST /v1/callbacks/sms`) are signed with this.
    pub callback_secret: String,
}

/// A push provider that takes a JSON POST with a bearer token (FCM HTTP v1's shape).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushProvider {
    /// The endpoint.
    pub url: String,
    /// The bearer token.
    pub token: String,
    /// Its delivery callbacks (`POST /v1/callbacks/push`) are signed with this.
    pub callback_secret: String,
}

fn default_engine() -> String {
    "sqlite".into()
}
fn default_database() -> PathBuf {
    PathBuf::from("notify.db")
}
fn default_retry() -> Vec<String> {
    ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_retention() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, "30d".into())
}
fn default_max_body() -> ByteSize {
    ByteSize(256 * 1024)
}
fn default_webhook_timeout() -> u64 {
    15_000
}
fn default_concurrency() -> usize {
    64
}

/// "0s", "500ms", "5m", "2h", "1d".
pub fn parse_delay(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(end);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a delay like \"5s\" or \"30m\", found {s:?}"))?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        u => return Err(format!("unknown unit {u:?} in {s:?} (ms, s, m, h, d)")),
    };
    Ok(Duration::from_millis(ms))
}

impl NotifyConfig {
    /// Redis engine: how long a taken message may stay unfinished before another node
    /// takes it over.
    pub fn claim_idle_ms(&self) -> u64 {
        self.claim_idle_ms
            .unwrap_or(60_000)
            .max(self.webhook_timeout_ms.saturating_mul(2))
    }

    /// How long finished messages are kept (`None`: for ever).
    pub fn retention(&self) -> Option<Duration> {
        match self.retention.get_ref().trim() {
            "off" => None,
            r => parse_delay(r).ok().filter(|d| !d.is_zero()),
        }
    }

    /// The retry schedule.
    pub fn schedule(&self) -> crate::model::Schedule {
        crate::model::Schedule {
            delays: self
                .retry
                .iter()
                .filter_map(|d| parse_delay(d).ok())
                .collect(),
        }
    }
}

/// Read every `[notify.NAME]` section of a config file's text; `database` paths are
/// resolved against `base`.
pub fn load(
    text: &str,
    file: &Path,
    base: &Path,
) -> Result<BTreeMap<String, NotifyConfig>, ConfigError> {
    #[derive(Deserialize)]
    struct Sections {
        #[serde(default)]
        notify: BTreeMap<String, NotifyConfig>,
    }
    let sections: Sections =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(file, text, "[notify]", &e))?;
    let mut out = BTreeMap::new();
    for (name, mut c) in sections.notify {
        let bad_at = |span: Option<std::ops::Range<usize>>, message: String| {
            ConfigError::at(file, text, span, format!("[notify.{name}]: {message}"))
        };
        let retention = c.retention.get_ref().trim();
        if retention != "off" {
            let at = Some(c.retention.span());
            let d = parse_delay(retention)
                .map_err(|e| bad_at(at.clone(), format!("retention: {e}, or \"off\"")))?;
            if d.is_zero() {
                return Err(bad_at(
                    at,
                    "retention: 0 would drop messages as they finish; say \"off\" to keep everything, or a time like \"30d\"".into(),
                ));
            }
        }
        if c.database.is_relative() {
            c.database = base.join(&c.database);
        }
        out.insert(name, c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_errors() {
        let m = load(
            "[notify.main]\nretry = [\"0s\", \"1s\"]\n",
            Path::new("t.toml"),
            Path::new("/srv"),
        )
        .unwrap();
        assert_eq!(m["main"].database, Path::new("/srv/notify.db"));
        assert_eq!(
            m["main"].schedule().delays,
            vec![Duration::ZERO, Duration::from_secs(1)]
        );
        let e = load(
            "[notify.main]\nretry = [\"0s\", \"soon\"]\n",
            Path::new("t.toml"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.message.contains("retry"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");
        // every check names the line of the value (and what was expected)
        for (text, line, expected) in [
            ("[notify.main]\nretry = []\n", 2, "at least one delay"),
            (
                "[notify.main]\n\nengine = \"postgres://x\"\n",
                3,
                "\"sqlite\" or \"redis://HOST:PORT\"",
            ),
            (
                "[notify.main]\napp_rate = \"100/s\"\nrecipient_rate = \"lots\"\n",
                3,
                "rate \"lots\"",
            ),
            ("[notify.main]\nretention = \"forever\"\n", 2, "or \"off\""),
            (
                "[notify.main]\n[notify.main.email]\nhost = \"smtp\"\ntls = \"ssl\"\nfrom = \"a@b.c\"\ncallback_secret = \"s\"\n",
                4,
                "\"starttls\", \"tls\" or \"none\"",
            ),
            (
                "[notify.main]\n[notify.main.email]\nhost = \"smtp\"\nfrom = \"not a mailbox\"\ncallback_secret = \"s\"\n",
                4,
                "is not a mailbox",
            ),
        ] {
            let e = load(text, Path::new("t.toml"), Path::new(".")).unwrap_err();
            assert_eq!(e.line, Some(line), "{text}: {e}");
            assert!(e.message.contains(expected), "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("t.toml:{line}:")), "{e}");
        }
        let e = load(
            "[notify.main]\nretyr = []\n",
            Path::new("t.toml"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2));
    }
}
