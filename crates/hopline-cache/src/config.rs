//! The `[cache.NAME]` table: memory and disk sizes, the largest object, the disk tier.

use std::path::PathBuf;

use serde::Deserialize;

use hopline_engine::byte_size::ByteSize;

/// The `[cache.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory tier size.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// Optional disk tier.
    pub disk: Option<DiskConfig>,
    /// Larger responses are passed through, not stored.
    #[serde(default = "default_max_object")]
    pub max_object: ByteSize,
    /// A cache-control field targeted at this cache only (RFC 9213), e.g.
    /// "Hopline-Cache-Control": it takes precedence over `CDN-Cache-Control`, which takes
    /// precedence over `Cache-Control`, for this cache's decisions; it is not forwarded.
    pub targeted_field: Option<String>,
    /// Store a response's `Set-Cookie` with it and replay it on hits (RFC 9111 allows it;
    /// default false: a fresh response that sets a cookie is stored without the cookie,
    /// which only the client that caused the miss gets).
    #[serde(default)]
    pub store_set_cookie: bool,
    /// Purges shared by the PoPs of one CDN through a Redis stream:
    /// `{ redis = "redis://127.0.0.1:6379", stream = "hopline:purge:NAME", keep = 100000 }`.
    #[serde(default)]
    pub shared_purge: Option<SharedPurge>,
}

/// `shared_purge = { … }` of a cache.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SharedPurge {
    /// The Redis server every PoP reaches.
    pub redis: String,
    /// The stream's key (default `hopline:purge:` + the cache's name).
    pub stream: Option<String>,
    /// Purges the stream keeps (default 100,000): a PoP away longer than that many
    /// purges cannot replay what it missed, so it marks everything stale instead.
    pub keep: Option<u64>,
}

/// The disk tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Folder (made if missing).
    pub path: PathBuf,
    /// Total size kept on disk.
    #[serde(default = "default_disk")]
    pub size: ByteSize,
}

fn default_memory() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_max_object() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_disk() -> ByteSize {
    ByteSize(1 << 30)
}
