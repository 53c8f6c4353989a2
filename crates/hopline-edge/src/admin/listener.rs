//! The admin listener: `GET /.hopline/status` (JSON: every pool and server — up/down,
//! in-flight, requests, errors, EWMA latency, effective weight) and `GET /metrics`
//! (Prometheus text). Kept off the public listeners.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::body::Body;
use crate::request::router::Table;

/// Counters of the request path, read by `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class: index 1..=5 for 1xx..5xx.
    pub responses: [AtomicU64; 6],
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections refused at the connection limit.
    pub connections_refused: AtomicU64,
}

impl Metrics {
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

/// A box of the dashboard's topology that lives outside the edge (a DNS service).
#[derive(Debug, Clone)]
pub struct ExtraNode {
    /// Unique id, e.g. `dns:127.0.0.1:5300`.
    pub id: String,
    /// Role shown on the box, e.g. `resolver`, `authoritative`.
    pub role: String,
    /// Title.
    pub label: String,
    /// Address it serves on.
    pub addr: String,
    /// Requests (queries) answered so far.
    pub requests: u64,
    /// Of those, failures (SERVFAIL).
    pub errors: u64,
    /// Answer times so far.
    pub latency: hopline_balance::histogram::Snapshot,
    /// Where it sends clients: an IP (sites listening on it) or IP:PORT (another box).
    pub targets: Vec<String>,
    /// Anything else worth showing (JSON object of small values).
    pub detail: serde_json::Value,
}

/// A source of extra boxes, called once per dashboard sample.
pub type ExtraNodes = Box<dyn Fn() -> Vec<ExtraNode> + Send + Sync>;

/// What the admin endpoints read.
pub trait AdminView: Send + Sync + 'static {
    /// The table in force.
    fn table(&self) -> Arc<Table>;
    /// Counters.
    fn metrics(&self) -> &Metrics;
    /// Connections open now.
    fn open_connections(&self) -> usize;
    /// The hops this edge served for a W3C trace id.
    fn trace(&self, id: &str) -> Vec<TraceHop>;
    /// A configured listen address's bound address and its open connections.
    fn listener(&self, configured: std::net::SocketAddr) -> Option<(std::net::SocketAddr, usize)>;
    /// Boxes from outside the edge (DNS).
    fn extras(&self) -> Vec<ExtraNode>;
    /// The ids of the latest traces, newest first.
    fn recent_traces(&self, n: usize) -> Vec<String>;
    /// The `[[stream]]` listeners.
    fn streams(&self) -> Vec<crate::proxy::layer4::StreamInfo>;
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

/// The JSON of `/.hopline/status`.
pub fn status_json(view: &dyn AdminView) -> serde_json::Value {
    let table = view.table();
    let mut pools = serde_json::Map::new();
    for (name, up) in &table.upstreams {
        let members = up.members();
        let servers = members.pool.snapshot();
        pools.insert(
            name.clone(),
            serde_json::json!({
                "balance": up.algorithm,
                // no server is eligible: requests go to all of them anyway
                "panic": members.pool.panicking(),
                "panic_picks": members.pool.panic_picks(),
                "servers": servers,
            }),
        );
    }
    let m = view.metrics();
    serde_json::json!({
        "server": "hopline",
        "version": env!("CARGO_PKG_VERSION"),
        "connections": {
            "open": view.open_connections(),
            "accepted": m.connections_accepted.load(Ordering::Relaxed),
            "refused": m.connections_refused.load(Ordering::Relaxed),
        },
        "responses": {
            "1xx": m.responses[1].load(Ordering::Relaxed),
            "2xx": m.responses[2].load(Ordering::Relaxed),
            "3xx": m.responses[3].load(Ordering::Relaxed),
            "4xx": m.responses[4].load(Ordering::Relaxed),
            "5xx": m.responses[5].load(Ordering::Relaxed),
        },
        "upstreams": pools,
        "caches": table.caches.iter().map(|(name, c)| (name.clone(), cache_json(c))).collect::<serde_json::Map<_, _>>(),
        "services": table.services.iter().map(|(kind, name, s)| (format!("{kind}.{name}"), s.status())).collect::<serde_json::Map<_, _>>(),
    })
}

fn cache_json(c: &crate::cache::store::HttpCache) -> serde_json::Value {
    let st = &c.stats;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    serde_json::json!({
        "entries": c.entries(),
        "hits": n(&st.hits),
        "misses": n(&st.misses),
        "stale": n(&st.stale),
        "revalidated": n(&st.revalidated),
        "stored": n(&st.stored),
        "coalesced": n(&st.coalesced),
        "disk_hits": n(&st.disk_hits),
        "disk_corrupt": n(&st.disk_corrupt),
        "purged": n(&st.purged),
    })
}

/// Prometheus text exposition of the same.
pub fn metrics_text(view: &dyn AdminView) -> String {
    let m = view.metrics();
    let mut out = String::new();
    out.push_str("# HELP hopline_connections_open Client connections open now.\n# TYPE hopline_connections_open gauge\n");
    let _ = writeln!(out, "hopline_connections_open {}", view.open_connections());
    out.push_str("# HELP hopline_connections_total Client connections accepted.\n# TYPE hopline_connections_total counter\n");
    let _ = writeln!(
        out,
        "hopline_connections_total {}",
        m.connections_accepted.load(Ordering::Relaxed)
    );
    out.push_str("# HELP hopline_connections_refused_total Connections closed at the connection limit.\n# TYPE hopline_connections_refused_total counter\n");
    let _ = writeln!(
        out,
        "hopline_connections_refused_total {}",
        m.connections_refused.load(Ordering::Relaxed)
    );
    out.push_str("# HELP hopline_responses_total Responses by status class.\n# TYPE hopline_responses_total counter\n");
    for class in 1..=5 {
        let _ = writeln!(
            out,
            "hopline_responses_total{{class=\"{class}xx\"}} {}",
            m.responses[class].load(Ordering::Relaxed)
        );
    }
    let table = view.table();
    let mut lines = [
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ];
    out.push_str("# HELP hopline_upstream_panic Whether no server of a pool is eligible, so requests go to all of them anyway (1).\n# TYPE hopline_upstream_panic gauge\n");
    for (name, up) in &table.upstreams {
        let _ = writeln!(
            out,
            "hopline_upstream_panic{{upstream=\"{name}\"}} {}",
            u8::from(up.members().pool.panicking())
        );
    }
    out.push_str("# HELP hopline_upstream_panic_picks_total Picks made while no server of the pool was eligible.\n# TYPE hopline_upstream_panic_picks_total counter\n");
    for (name, up) in &table.upstreams {
        let _ = writeln!(
            out,
            "hopline_upstream_panic_picks_total{{upstream=\"{name}\"}} {}",
            up.members().pool.panic_picks()
        );
    }
    out.push_str("# HELP hopline_upstream_up Whether a server takes traffic (1) or is ejected (0).\n# TYPE hopline_upstream_up gauge\n");
    for (name, up) in &table.upstreams {
        for s in up.members().pool.snapshot() {
            let v = serde_json::to_value(&s).unwrap_or_default();
            let id = v["id"].as_str().unwrap_or("?").replace('"', "'");
            let labels = format!("upstream=\"{name}\",server=\"{id}\"");
            let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "hopline_upstream_up{{{labels}}} {}",
                if v["up"].as_bool().unwrap_or(false) {
                    1
                } else {
                    0
                }
            );
            let _ = writeln!(
                lines[0],
                "hopline_upstream_in_flight{{{labels}}} {}",
                num("in_flight")
            );
            let _ = writeln!(
                lines[1],
                "hopline_upstream_requests_total{{{labels}}} {}",
                num("requests")
            );
            let _ = writeln!(
                lines[2],
                "hopline_upstream_errors_total{{{labels}}} {}",
                num("errors")
            );
            let _ = writeln!(
                lines[3],
                "hopline_upstream_latency_ewma_ms{{{labels}}} {}",
                num("ewma_ms")
            );
            let _ = writeln!(
                lines[4],
                "hopline_upstream_effective_weight{{{labels}}} {}",
                num("effective_weight")
            );
        }
    }
    let heads = [
        (
            "hopline_upstream_in_flight",
            "gauge",
            "Requests in flight to a server.",
        ),
        (
            "hopline_upstream_requests_total",
            "counter",
            "Requests sent to a server.",
        ),
        (
            "hopline_upstream_errors_total",
            "counter",
            "Connect errors, timeouts and 5xx of a server.",
        ),
        (
            "hopline_upstream_latency_ewma_ms",
            "gauge",
            "Decaying average response time of a server.",
        ),
        (
            "hopline_upstream_effective_weight",
            "gauge",
            "Current effective weight of a server.",
        ),
    ];
    for (i, (name, kind, help)) in heads.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        out.push_str(&lines[i]);
    }
    out.push_str("# HELP hopline_cache_events_total Cache lookups and what came of them.\n# TYPE hopline_cache_events_total counter\n");
    for (name, c) in &table.caches {
        let v = cache_json(c);
        for ev in [
            "hits",
            "misses",
            "stale",
            "revalidated",
            "stored",
            "coalesced",
            "disk_hits",
            "disk_corrupt",
            "purged",
        ] {
            let _ = writeln!(
                out,
                "hopline_cache_events_total{{cache=\"{name}\",event=\"{ev}\"}} {}",
                v[ev]
            );
        }
    }
    out.push_str("# HELP hopline_cache_entries Keys in a cache's memory tier.\n# TYPE hopline_cache_entries gauge\n");
    for (name, c) in &table.caches {
        let _ = writeln!(
            out,
            "hopline_cache_entries{{cache=\"{name}\"}} {}",
            c.entries()
        );
    }
    for (_, _, service) in table.services.iter() {
        service.metrics(&mut out);
    }
    out
}

fn reply(status: StatusCode, ct: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("hopline"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `PURGE /path` (Host header names the site) or `PURGE http://host/path`: drop that URL
/// from every cache; a path ending in `*` drops every URL with that prefix.
fn purge(view: &dyn AdminView, req: &Request<Incoming>) -> Response<Body> {
    let uri = req.uri();
    let (host, target) = match uri.authority() {
        Some(a) => (
            a.host().to_string(),
            uri.path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string(),
        ),
        None => (
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| crate::request::router::host_without_port(h).to_string())
                .unwrap_or_default(),
            uri.path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string(),
        ),
    };
    let table = view.table();
    let mut purged = 0;
    for cache in table.caches.values() {
        for tls in [false, true] {
            let key = crate::cache::store::key(tls, &host, target.trim_end_matches('*'));
            purged += if target.ends_with('*') {
                cache.purge_prefix(&key)
            } else {
                cache.invalidate(&key)
            };
        }
    }
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::json!({"purged": purged, "host": host, "target": target}).to_string() + "\n",
    )
}

async fn answer(
    view: Arc<dyn AdminView>,
    req: Request<Incoming>,
    stop: watch::Receiver<bool>,
) -> Response<Body> {
    let table = view.table();
    if let Some(refused) = crate::admin::dashboard::check_token(table.admin_token.as_deref(), &req) {
        return refused;
    }
    drop(table);
    if req.method() == Method::GET {
        match req.uri().path() {
            "/" | "/index.html" => return crate::admin::dashboard::page(),
            "/.hopline/events" => return crate::admin::dashboard::events(view, stop),
            _ => {}
        }
    }
    if req.method().as_str() == "PURGE" {
        return purge(&*view, &req);
    }
    if req.method() == Method::GET
        && let Some(id) = req.uri().path().strip_prefix("/.hopline/trace/")
    {
        let hops = view.trace(id);
        return reply(
            if hops.is_empty() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            },
            "application/json",
            serde_json::json!({"trace": id, "hops": hops}).to_string() + "\n",
        );
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/.hopline/status") => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&status_json(&*view)).unwrap_or_default() + "\n",
        ),
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(&*view),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "admin endpoints: GET / (the dashboard), GET /.hopline/events (its snapshots, server-sent events), GET /.hopline/status, GET /metrics, GET /.hopline/trace/TRACE_ID, PURGE /path (or /prefix*)\n"
                .into(),
        ),
    }
}

/// Serve the admin endpoints until `stop` turns true.
pub async fn run(listener: TcpListener, view: Arc<dyn AdminView>, mut stop: watch::Receiver<bool>) {
    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let view = view.clone();
        let http = http.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let view = view.clone();
                let stop = stop.clone();
                async move { Ok::<_, Infallible>(answer(view, req, stop).await) }
            });
            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
