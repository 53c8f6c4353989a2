//! The `[upstream.NAME]` section: a pool of origin servers, how it is balanced, health
//! checked and retried.

use serde::Deserialize;
use toml::Spanned;

use hopline_engine::byte_size::ByteSize;

/// A pool of origin servers behind the proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// round_robin | weighted_round_robin | dynamic_round_robin | fastest |
    /// least_connections | ring_hash | maglev
    #[serde(default = "default_balance")]
    pub balance: hopline_balance::Algorithm,
    /// What `ring_hash` and `maglev` hash: "client_ip" (default), "uri", "header:NAME" or
    /// "cookie:NAME". A request without it is balanced round robin.
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    /// Sticky sessions: `{ cookie = "NAME" }` — the balancer sets a cookie naming the
    /// server — or `{ learn = "JSESSIONID" }` — the origin's own session cookie carries
    /// the server's id as a prefix (`ID~value`, stripped on the way back in). Either way
    /// every balancer node reads it alike: no state is shared.
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// "IP:PORT", "host:port", or { addr, weight, backup }.
    pub servers: Spanned<Vec<Spanned<ServerEntry>>>,
    /// Active health checks.
    pub health: Option<HealthConfig>,
    /// Give up connecting to a server after this (then: next server, or 502).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Wait this long for the response head (then 504). Streams that have started are
    /// never cut by it.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    /// Extra attempts on another server after a failed connect (idempotent requests only).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Speak HTTP/2 to the servers (h2c prior knowledge) instead of HTTP/1.1.
    #[serde(default)]
    pub http2: bool,
    /// Idle keep-alive connections kept per server.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_server: usize,
    /// Idle upstream connections are closed after this.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Read buffers the idle connections of one server may keep, in all (each keeps at
    /// most 128 KiB): the next answer is then read whole, into memory already there.
    /// 0 keeps none.
    #[serde(default = "default_idle_buffers")]
    pub idle_buffers: ByteSize,
    /// Passive outlier detection: this many connect errors / 5xx in a row eject a server.
    #[serde(default = "default_outlier_errors")]
    pub max_fails: u32,
    /// Ejection time of passive outlier detection; a server whose probe fails after it is
    /// ejected again for twice as long, up to 6x.
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout_ms: u64,
}

fn default_balance() -> hopline_balance::Algorithm {
    hopline_balance::Algorithm::RoundRobin
}
fn default_connect_timeout() -> u64 {
    1000
}
fn default_read_timeout() -> u64 {
    30_000
}
fn default_retries() -> u32 {
    1
}
fn default_max_idle() -> usize {
    256
}
fn default_idle_timeout() -> u64 {
    60_000
}
fn default_idle_buffers() -> ByteSize {
    ByteSize(8 * 1024 * 1024)
}
fn default_outlier_errors() -> u32 {
    3
}
fn default_fail_timeout() -> u64 {
    10_000
}

/// What a hashing balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The path and query.
    Uri,
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(String),
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "hash_key {text:?}: expected \"client_ip\", \"uri\", \"header:NAME\" or \"cookie:NAME\""
            ))
        };
        match text.split_once(':') {
            None if text == "client_ip" => Ok(HashKey::ClientIp),
            None if text == "uri" => Ok(HashKey::Uri),
            Some(("header", name)) => http::HeaderName::from_bytes(name.trim().as_bytes())
                .map(HashKey::Header)
                .map_err(|_| bad()),
            Some(("cookie", name)) if is_cookie_name(name.trim()) => {
                Ok(HashKey::Cookie(name.trim().to_string()))
            }
            _ => Err(bad()),
        }
    }
}

/// A cookie name (RFC 6265 token).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Sticky sessions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StickyTable")]
pub enum Sticky {
    /// The balancer's own cookie names the server.
    Insert {
        /// Its name.
        cookie: String,
        /// Its Max-Age (none: a session cookie).
        max_age_s: Option<u64>,
    },
    /// The origin's session cookie, prefixed with the server's id.
    Learn {
        /// Its name.
        cookie: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StickyTable {
    cookie: Option<String>,
    learn: Option<String>,
    max_age_s: Option<u64>,
}

impl TryFrom<StickyTable> for Sticky {
    type Error = String;
    fn try_from(t: StickyTable) -> Result<Sticky, String> {
        let sticky = match (t.cookie, t.learn) {
            (Some(cookie), None) => Sticky::Insert {
                cookie,
                max_age_s: t.max_age_s,
            },
            (None, Some(cookie)) if t.max_age_s.is_none() => Sticky::Learn { cookie },
            (None, Some(_)) => {
                return Err("sticky: max_age_s is for { cookie = … } (a learned cookie keeps the origin's own)".into());
            }
            _ => {
                return Err("sticky: expected { cookie = \"NAME\" } (the balancer's cookie) or { learn = \"NAME\" } (the origin's session cookie)".into());
            }
        };
        let (Sticky::Insert { cookie, .. } | Sticky::Learn { cookie }) = &sticky;
        if !is_cookie_name(cookie) {
            return Err(format!("sticky: {cookie:?} is not a cookie name"));
        }
        Ok(sticky)
    }
}

/// One server of a pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ServerEntry {
    /// Just an address.
    Addr(String),
    /// An address with options.
    Full {
        /// "IP:PORT" or "host:port".
        addr: String,
        /// Relative share of traffic (default 1).
        #[serde(default = "one")]
        weight: u32,
        /// Used only when every primary server is down.
        #[serde(default)]
        backup: bool,
    },
}

fn one() -> u32 {
    1
}

impl ServerEntry {
    /// (address text, weight, backup)
    pub fn parts(&self) -> (&str, u32, bool) {
        match self {
            ServerEntry::Addr(a) => (a, 1, false),
            ServerEntry::Full {
                addr,
                weight,
                backup,
            } => (addr, *weight, *backup),
        }
    }
}

/// Active health checks of a pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path asked with GET; 2xx/3xx = healthy.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between checks of one server.
    #[serde(default = "default_health_interval")]
    pub interval_ms: u64,
    /// A check slower than this failed.
    #[serde(default = "default_health_timeout")]
    pub timeout_ms: u64,
    /// Failed checks in a row that take a server out.
    #[serde(default = "default_two")]
    pub fails: u32,
    /// Passed checks in a row that bring it back.
    #[serde(default = "default_two")]
    pub passes: u32,
}

fn default_health_path() -> String {
    "/healthz".into()
}
fn default_health_interval() -> u64 {
    1000
}
fn default_health_timeout() -> u64 {
    500
}
fn default_two() -> u32 {
    2
}
