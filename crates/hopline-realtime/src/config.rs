//! `[realtime.NAME]` sections of the config file: read here (the edge keeps them raw),
//! refused with file, line and column like every other section.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hopline_edge::config::{ByteSize, ConfigError};
use serde::Deserialize;

/// One hub of channels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Publications kept per channel.
    #[serde(default = "default_history", deserialize_with = "history")]
    pub history: usize,
    /// How long a publication stays in history ("5m", "30s", "1h").
    #[serde(default = "default_history_ttl")]
    pub history_ttl: Span,
    /// Largest publication (413 above it; WebSocket messages: close 1009).
    #[serde(default = "default_max_message", deserialize_with = "max_message")]
    pub max_message: ByteSize,
    /// How long a long poll is held before it answers with no events.
    #[serde(default = "default_long_poll")]
    pub long_poll_ms: u64,
    /// SSE comment / WebSocket ping interval.
    #[serde(default = "default_ping")]
    pub ping_ms: u64,
    /// Per-connection send queue: a subscriber further behind than this is cut.
    #[serde(default = "default_client_queue")]
    pub client_queue: ByteSize,
    /// Who may publish: "open" or { jwt_secret = "…" }.
    #[serde(default = "default_publish")]
    pub publish: Access,
    /// Who may subscribe: "open" (default) or { jwt_secret = "…" }.
    #[serde(default)]
    pub subscribe: Access,
    /// "memory" (default) or "redis://HOST:PORT" (shared by several nodes).
    #[serde(default = "default_engine", deserialize_with = "engine")]
    pub engine: String,
    /// Channels one WebSocket connection may subscribe to.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions: usize,
    /// SSE `retry:` field sent to browsers (ms before they reconnect).
    #[serde(default = "default_retry")]
    pub sse_retry_ms: u64,
    /// The application's say on connections, subscriptions and publications:
    /// `{ connect = "http://…", subscribe = "http://…", publish = "http://…",
    /// timeout_ms = 1000, on_error = "deny", headers = ["cookie", "authorization"] }`.
    #[serde(default)]
    pub hooks: Option<Hooks>,
    /// Keep who is subscribed to each channel (WebSocket and SSE): `GET
    /// /live/CHANNEL?presence`, the WebSocket `presence` command.
    #[serde(default)]
    pub presence: bool,
}

/// `hooks = { … }` of a hub: URLs the hub asks (HTTP POST, JSON) before it lets a client
/// connect, subscribe or publish; the answer allows, denies, or (publish) rewrites.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Asked when a WebSocket connects (before the 101).
    #[serde(default, deserialize_with = "hook_url")]
    pub connect: Option<String>,
    /// Asked for every subscription (WebSocket, SSE, polls).
    #[serde(default, deserialize_with = "hook_url")]
    pub subscribe: Option<String>,
    /// Asked for every publication; its answer may replace the data.
    #[serde(default, deserialize_with = "hook_url")]
    pub publish: Option<String>,
    /// How long an answer may take.
    #[serde(default = "default_hook_timeout")]
    pub timeout_ms: u64,
    /// What a hook that fails (timeout, refused, 5xx, not JSON) means: "deny" (503) or
    /// "allow".
    #[serde(default)]
    pub on_error: OnError,
    /// The client's request fields passed on to the hook (lower case).
    #[serde(default = "default_hook_headers")]
    pub headers: Vec<String>,
}

/// What a failing hook means.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Deny,
    Allow,
}

fn hook_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let ok = s
        .strip_prefix("http://")
        .and_then(|_| s.parse::<http::Uri>().ok())
        .is_some_and(|u| u.authority().is_some());
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "a hook is an http:// URL of the application (e.g. \"http://127.0.0.1:3000/hooks/subscribe\"), found {s:?}"
        )));
    }
    Ok(Some(s))
}

fn default_hook_timeout() -> u64 {
    1000
}

fn default_hook_headers() -> Vec<String> {
    vec!["cookie".into(), "authorization".into()]
}

// Checks made while the file is read, so that an error names the value's line and column.

fn history<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("history must be at least 1")),
        n => Ok(n),
    }
}

fn max_message<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
    let b = ByteSize::deserialize(d)?;
    if b.0 == 0 || b.0 > 64 * 1024 * 1024 {
        return Err(serde::de::Error::custom(
            "max_message must be between 1 byte and 64MiB",
        ));
    }
    Ok(b)
}

fn engine<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s != "memory" && !s.starts_with("redis://") {
        return Err(serde::de::Error::custom(format!(
            "engine must be \"memory\" or \"redis://HOST:PORT\", found {s:?}"
        )));
    }
    Ok(s)
}

fn default_history() -> usize {
    1000
}
fn default_history_ttl() -> Span {
    Span(Duration::from_secs(300))
}
fn default_max_message() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_long_poll() -> u64 {
    25_000
}
fn default_ping() -> u64 {
    20_000
}
fn default_client_queue() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_publish() -> Access {
    // publishing is not open unless the file says so
    Access::Closed
}
fn default_engine() -> String {
    "memory".into()
}
fn default_max_subscriptions() -> usize {
    100
}
fn default_retry() -> u64 {
    2000
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            history: default_history(),
            history_ttl: default_history_ttl(),
            max_message: default_max_message(),
            long_poll_ms: default_long_poll(),
            ping_ms: default_ping(),
            client_queue: default_client_queue(),
            publish: Access::Open,
            subscribe: Access::Open,
            engine: default_engine(),
            max_subscriptions: default_max_subscriptions(),
            sse_retry_ms: default_retry(),
            hooks: None,
            presence: false,
        }
    }
}

/// Who may do something.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    #[default]
    Open,
    /// Nobody (publishing when the section does not say).
    Closed,
    /// Holders of an HS256 JWT signed with this secret whose `channels` claim allows it.
    Jwt {
        /// The shared secret.
        secret: String,
    },
}

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Table { jwt_secret: String },
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected \"open\" or { jwt_secret = \"…\" }"))?
        {
            Raw::Word(w) if w == "open" => Ok(Access::Open),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected \"open\" or {{ jwt_secret = \"…\" }}, found {w:?}"
            ))),
            Raw::Table { jwt_secret } if jwt_secret.len() < 16 => Err(serde::de::Error::custom(
                "jwt_secret must be at least 16 characters",
            )),
            Raw::Table { jwt_secret } => Ok(Access::Jwt { secret: jwt_secret }),
        }
    }
}

/// A duration written "500ms", "30s", "5m", "2h" (or a number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    /// Parse "500ms", "30s", "5m", "2h", "1d".
    pub fn parse(s: &str) -> Result<Span, String> {
        let s = s.trim();
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(end);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("expected a duration like \"30s\" or \"5m\", found {s:?}"))?;
        let ms = match unit.trim() {
            "ms" => n,
            "" | "s" => n.saturating_mul(1000),
            "m" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            "d" => n.saturating_mul(86_400_000),
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} (use ms, s, m, h or d)"
                ));
            }
        };
        Ok(Span(Duration::from_millis(ms)))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a duration like \"30s\""))?
        {
            Raw::Secs(s) => Ok(Span(Duration::from_secs(s))),
            Raw::Text(t) => Span::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Read every `[realtime.NAME]` section of a config file's text.
pub fn load(text: &str, file: &Path) -> Result<BTreeMap<String, RealtimeConfig>, ConfigError> {
    #[derive(Deserialize)]
    struct Sections {
        #[serde(default)]
        realtime: BTreeMap<String, RealtimeConfig>,
    }
    let sections: Sections =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(file, text, "[realtime]", &e))?;
    for (name, c) in &sections.realtime {
        if c.client_queue.0 < c.max_message.0 {
            // (two keys disagree: the error points at the section's header)
            let header = format!("[realtime.{name}]");
            let at = text.find(&header).map(|i| i..i + header.len());
            return Err(ConfigError::at(
                file,
                text,
                at,
                format!("{header}: client_queue must hold at least one max_message"),
            ));
        }
    }
    Ok(sections.realtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_parse_with_defaults_and_errors_say_where() {
        let text = r#"
[realtime.live]
history = 10
history_ttl = "5m"
publish = { jwt_secret = "0123456789abcdef" }
[[site]]
listen = ["127.0.0.1:0"]
"#;
        let m = load(text, Path::new("t.toml")).unwrap();
        let c = &m["live"];
        assert_eq!(c.history, 10);
        assert_eq!(c.history_ttl.0, Duration::from_secs(300));
        assert_eq!(c.subscribe, Access::Open);
        assert!(matches!(c.publish, Access::Jwt { .. }));
        assert_eq!(c.long_poll_ms, 25_000);
        let e = load(
            "[realtime.live]\nhistory_ttl = \"5 parsecs\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("unknown duration unit"), "{e}");
        let e = load("[realtime.live]\nhistroy = 5\n", Path::new("t.toml")).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = load(
            "[realtime.live]\npublish = \"everyone\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.message.contains("open"), "{e}");
        // every check names the line of the value (the section's, for two that disagree)
        for (text, line, expected) in [
            ("[realtime.live]\n\nhistory = 0\n", 3, "at least 1"),
            (
                "[realtime.live]\nengine = \"mysql://x\"\n",
                2,
                "\"memory\" or",
            ),
            (
                "[realtime.live]\nmax_message = \"0B\"\n",
                2,
                "between 1 byte",
            ),
            (
                "# hub\n[realtime.live]\nmax_message = \"2MiB\"\nclient_queue = \"1MiB\"\n",
                2,
                "client_queue",
            ),
        ] {
            let e = load(text, Path::new("t.toml")).unwrap_err();
            assert_eq!(e.line, Some(line), "{text}: {e}");
            assert!(e.message.contains(expected), "{text}: {e}");
        }
        // publishing is closed unless the section says
        let m = load("[realtime.live]\n", Path::new("t.toml")).unwrap();
        assert_eq!(m["live"].publish, Access::Closed);
    }
}
