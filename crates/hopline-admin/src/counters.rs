//! What the request path counts as it goes (requests, errors, bytes, per site) and the
//! traces it keeps: plain atomics and bounded maps, bumped on the hot path, read by the
//! admin side. A leaf: it imports nothing of the edge.

use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Counters of the request path, read by `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class: index 1..=5 for 1xx..5xx.
    pub responses: [AtomicU64; 6],
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections refused at the connection limit.
    pub connections_refused: AtomicU64,
    /// Requests by protocol: HTTP/1.x, HTTP/2, HTTP/3.
    pub requests_by_protocol: [AtomicU64; 3],
    /// QUIC connection attempts answered with a Retry (their address not yet proven while
    /// many handshakes were in flight).
    pub quic_retries: AtomicU64,
}

/// The protocols [`Metrics::requests_by_protocol`] counts, as `/metrics` labels them.
pub const PROTOCOLS: [&str; 3] = ["http/1.1", "h2", "h3"];

impl Metrics {
    /// Count a request by its protocol.
    pub fn count_protocol(&self, version: http::Version) {
        let i = match version {
            http::Version::HTTP_2 => 1,
            http::Version::HTTP_3 => 2,
            _ => 0,
        };
        self.requests_by_protocol[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Count a response.
    pub fn count(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).min(5) as usize;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// Requests, server errors and latency (to the response head) of one site: two relaxed
/// atomic adds and a histogram bucket per request; the dashboard samples them per second.
#[derive(Debug, Default)]
pub struct SiteStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Of those, answered 5xx.
    pub errors: AtomicU64,
    /// Time to the response head.
    pub latency: hopline_balance::histogram::Histogram,
}

impl SiteStats {
    /// Count one answered request.
    #[inline]
    pub fn record(&self, status: StatusCode, took: std::time::Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(took);
    }
}

/// Head-based trace sampling: up to `[admin] sample` requests per second that came
/// without a `traceparent` start a trace (refilled once a second; a request that finds
/// the bucket empty pays one relaxed load).
#[derive(Debug, Default)]
pub struct Sampler {
    tokens: AtomicU32,
}

impl Sampler {
    /// Take one token: this request starts a trace.
    #[inline]
    pub fn take(&self) -> bool {
        self.tokens.load(Ordering::Relaxed) > 0
            && self
                .tokens
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1))
                .is_ok()
    }

    /// A new second: `n` tokens.
    pub fn refill(&self, n: u32) {
        self.tokens.store(n, Ordering::Relaxed);
    }
}

/// One hop of a traced request, as this edge saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceHop {
    /// The site (hop) that answered.
    pub site: String,
    /// Method and target.
    pub request: String,
    /// Response status.
    pub status: u16,
    /// Time to the response head, ms.
    pub ms: f64,
    /// When it arrived (µs since the Unix epoch).
    pub at_us: u128,
    /// The span id of the incoming `traceparent`.
    pub span: String,
    /// `Cache-Status` of the response, if any.
    pub cache_status: Option<String>,
    /// `Server-Timing` of the response, if any.
    pub server_timing: Option<String>,
}

/// Recent traced requests, bounded (10,000 traces, 10 minutes).
pub struct TraceLog {
    hops: moka::sync::Cache<String, Arc<parking_lot::Mutex<Vec<TraceHop>>>>,
    /// The ids of the last traces seen, oldest first.
    recent: parking_lot::Mutex<std::collections::VecDeque<String>>,
}

/// How many trace ids [`TraceLog::recent`] remembers.
const RECENT: usize = 100;

impl std::fmt::Debug for TraceLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceLog")
    }
}

impl Default for TraceLog {
    fn default() -> Self {
        TraceLog {
            hops: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
            recent: Default::default(),
        }
    }
}

impl TraceLog {
    /// Remember a hop.
    pub fn record(&self, trace: &str, hop: TraceHop) {
        let entry = self
            .hops
            .entry_by_ref(trace)
            .or_insert_with(|| Arc::new(parking_lot::Mutex::new(Vec::new())));
        if entry.is_fresh() {
            let mut recent = self.recent.lock();
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(trace.to_string());
        }
        entry.into_value().lock().push(hop);
    }

    /// The ids of the last `n` traces (newest first) still remembered.
    pub fn recent(&self, n: usize) -> Vec<String> {
        self.recent
            .lock()
            .iter()
            .rev()
            .filter(|id| self.hops.contains_key(*id))
            .take(n)
            .cloned()
            .collect()
    }

    /// The hops of a trace, in arrival order.
    pub fn get(&self, trace: &str) -> Vec<TraceHop> {
        let mut v = self
            .hops
            .get(trace)
            .map(|h| h.lock().clone())
            .unwrap_or_default();
        // arrival order; on a tie the outer hop (which took longer) first
        v.sort_by(|a, b| a.at_us.cmp(&b.at_us).then(b.ms.total_cmp(&a.ms)));
        v
    }
}
