//! The `[upstream.NAME]` section: a pool of origin servers, how it is balanced, health
//! checked and retried.

use serde::Deserialize;
use toml::Spanned;

use hopline_engine::byte_size::ByteSize;

/// A pool of origin servers behind the proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// round_robin | weighted_round_robin | dynamic_round_robin | fastest | least_connections
    #[serde(default = "default_balance")]
    pub balance: hopline_balance::Algorithm,
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
