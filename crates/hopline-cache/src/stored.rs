//! One stored response: its policy, status, body, stale windows, variant and head.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

/// One stored response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// The policy (request + response headers as stored, times).
    pub policy: CachePolicy,
    /// Status code.
    pub status: u16,
    /// The body.
    #[serde(skip)]
    pub body: Bytes,
    /// `stale-while-revalidate` window.
    pub swr: Duration,
    /// `stale-if-error` window.
    pub sie: Duration,
    /// Values of the request headers named by Vary, to tell variants apart on disk.
    pub variant: String,
    /// The response headers as stored (for serving stale copies).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Soft-purged at this time: stale from then on, whatever its freshness said.
    #[serde(default)]
    pub soft_purged_at: Option<std::time::SystemTime>,
}

pub fn header_list(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

impl Stored {
    pub fn header_map(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_bytes(v),
            ) {
                h.append(k, v);
            }
        }
        h
    }
}
