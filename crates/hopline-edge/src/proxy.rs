//! The reverse proxy and load balancer: one entry point in front of a pool of origin
//! servers. Picks a server with `hopline-balance`, forwards over pooled keep-alive
//! connections (HTTP/1.1 or h2c), streams bodies both ways, passes WebSocket upgrades
//! through as a raw tunnel, retries failed connects of idempotent requests on another
//! server, and runs active health checks. Every failure is one classified
//! [`ProxyError`], from which status, retry and log line are decided.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use crate::body::{Body, RequestBody};
use crate::config::{HealthConfig, Upstream};
use crate::error::EdgeError;
use crate::upstream::{HeadForm, UpstreamBody};
use hopline_balance::{Algorithm, Outcome, Pool, PoolOptions, ServerSpec};

type ProxyBody = Either<ClientBody, Empty<Bytes>>;

/// The client's request body on its way to the origin, watched: when it breaks (bad
/// chunk framing, the client closing early, a client too slow), the failure is the
/// client's — it is answered 400/408/499 and never counted against the server.
struct ClientBody {
    inner: RequestBody,
    failed: Arc<std::sync::OnceLock<ProxyError>>,
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(e))) = &polled {
            let _ = self.failed.set(ProxyError::client_body(e.as_ref()));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// One upstream server.
#[derive(Debug, Clone)]
pub struct ServerAddr {
    /// Where to connect.
    pub addr: SocketAddr,
    /// How it was written in the config (a hostname stays visible).
    pub id: String,
    /// Idle keep-alive connections of hopline's own HTTP/1.1 client to it.
    pub idle: Arc<crate::upstream::IdlePool>,
    /// `;desc="POOL SERVER via ALGORITHM"` of its `Server-Timing` entry, made once.
    timing_desc: Box<str>,
}

/// The servers of a pool right now and their balancer (replaced whole when a server
/// name resolves to other addresses).
pub struct Members {
    /// The balancer state.
    pub pool: Pool,
    /// Servers, index-aligned with the balancer's.
    pub servers: Vec<ServerAddr>,
}

/// A named pool with its balancer, connection pool and settings.
pub struct UpstreamPool {
    /// The `[upstream.NAME]` name.
    pub name: String,
    members: arc_swap::ArcSwap<Members>,
    entries: Vec<(String, u32, bool)>,
    opts: PoolOptions,
    /// Algorithm (for status and Server-Timing).
    pub algorithm: Algorithm,
    client: Client<HttpConnector, ProxyBody>,
    read_timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    health: Option<HealthConfig>,
    /// Speaks HTTP/2 to its servers (hyper's client does all of its requests).
    http2: bool,
    /// Idle connections per server, and how long they stay.
    idle: IdleLimits,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.name)
            .field("servers", &self.members.load().servers)
            .finish()
    }
}

/// Which side a failure belongs to (pingora's habit: decide from data, not strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Fault {
    /// The origin server (or the network to it).
    Upstream,
    /// The client.
    Downstream,
    /// hopline itself.
    Internal,
}

/// A classified proxy failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// No server of the pool is up.
    NoServer {
        /// Pool name.
        pool: String,
    },
    /// The TCP connect failed or timed out; nothing was sent.
    Connect {
        /// Server.
        server: String,
        /// Why.
        reason: String,
    },
    /// No response head within the read timeout.
    Timeout {
        /// Server.
        server: String,
        /// The timeout.
        after: Duration,
    },
    /// The server closed or broke the connection after the request was (partly) sent.
    Upstream {
        /// Server.
        server: String,
        /// Why.
        reason: String,
    },
    /// The client's request body failed on the way (bad framing: 400; too slow: 408;
    /// the client closed before its end: 499, as nginx logs it). Not the server's fault.
    Client {
        /// The status the client gets (and the log shows).
        status: StatusCode,
        /// Why.
        reason: String,
    },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoServer { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Client { status, .. } => *status,
        }
    }

    /// Whose fault.
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NoServer { .. } => Fault::Internal,
            ProxyError::Client { .. } => Fault::Downstream,
            _ => Fault::Upstream,
        }
    }

    /// The failure of a client's request body, classified by its I/O error kind.
    fn client_body(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ProxyError {
        let kind = e
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .unwrap_or(std::io::ErrorKind::Other);
        let status = match kind {
            std::io::ErrorKind::InvalidData => StatusCode::BAD_REQUEST,
            std::io::ErrorKind::TimedOut => StatusCode::REQUEST_TIMEOUT,
            // 499: nginx's "client closed request"; the client is gone, the log shows it
            _ => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        };
        ProxyError::Client {
            status,
            reason: e.to_string(),
        }
    }

    /// May another server be tried? Only when nothing reached the origin.
    pub fn retryable(&self) -> bool {
        matches!(self, ProxyError::Connect { .. })
    }

    /// The body the client reads: says which failure.
    pub fn body(&self) -> String {
        match self {
            ProxyError::NoServer { pool } => {
                format!(
                    "503 no server of upstream {pool:?} is up (all failed their health checks)\n"
                )
            }
            ProxyError::Connect { server, reason } => {
                format!("502 could not connect to upstream server {server}: {reason}\n")
            }
            ProxyError::Timeout { server, after } => format!(
                "504 upstream server {server} did not answer within {} ms\n",
                after.as_millis()
            ),
            ProxyError::Upstream { server, reason } => {
                format!("502 upstream server {server} failed: {reason}\n")
            }
            ProxyError::Client { status, reason } => {
                format!("{} bad request body: {reason}\n", status.as_u16())
            }
        }
    }

    /// The response the client gets.
    pub fn response(&self) -> Response<Body> {
        let text = self.body();
        let mut r = Response::new(Body::full(text.clone()));
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        r
    }
}

/// Is this server entry a name (to be resolved) rather than an address?
fn is_name(text: &str) -> bool {
    text.parse::<SocketAddr>().is_err()
}

/// What each server's idle pool may keep (the same for every server of a pool).
#[derive(Debug, Clone, Copy)]
struct IdleLimits {
    /// Connections.
    max: usize,
    /// How long one stays.
    timeout: Duration,
    /// Read buffer bytes, in all.
    buffers: usize,
}

/// The pool's members for a set of resolved addresses per entry.
fn members_of(
    pool_name: &str,
    algorithm: Algorithm,
    entries: &[(String, u32, bool)],
    resolved: &[Vec<SocketAddr>],
    opts: &PoolOptions,
    idle: IdleLimits,
) -> Members {
    let mut servers = Vec::new();
    let mut specs = Vec::new();
    for ((text, weight, backup), addrs) in entries.iter().zip(resolved) {
        for addr in addrs {
            let id = if is_name(text) {
                format!("{text} ({addr})")
            } else {
                addr.to_string()
            };
            specs.push(ServerSpec {
                id: id.clone(),
                weight: *weight,
                backup: *backup,
            });
            servers.push(ServerAddr {
                addr: *addr,
                timing_desc: format!(";desc=\"{}\"", timing_text(pool_name, &id, algorithm)).into(),
                id,
                idle: Arc::new(crate::upstream::IdlePool::new(
                    idle.max,
                    idle.timeout,
                    idle.buffers,
                )),
            });
        }
    }
    Members {
        pool: Pool::new(algorithm, specs, opts.clone()),
        servers,
    }
}

/// Build a pool from its config. Host names are resolved now; [`spawn_resolution`]
/// keeps them current, respecting the answers' TTL.
pub fn build_pool(name: &str, cfg: &Upstream) -> Result<UpstreamPool, EdgeError> {
    let entries: Vec<(String, u32, bool)> = cfg
        .servers
        .get_ref()
        .iter()
        .map(|e| {
            let (t, w, b) = e.get_ref().parts();
            (t.to_string(), w, b)
        })
        .collect();
    let mut resolved = Vec::new();
    for (text, _, _) in &entries {
        let addrs: Vec<SocketAddr> = match text.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(text.as_str())
                .map_err(|e| {
                    EdgeError::Conflict(format!("upstream {name}: cannot resolve {text}: {e}"))
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(EdgeError::Conflict(format!(
                "upstream {name}: {text} has no addresses"
            )));
        }
        resolved.push(addrs);
    }
    let mut opts = PoolOptions::default();
    if let Some(h) = &cfg.health {
        opts.fails = h.fails;
        opts.passes = h.passes;
    }
    opts.outlier_consecutive_errors = cfg.max_fails.max(1);
    opts.outlier_base_ejection = Duration::from_millis(cfg.fail_timeout_ms);
    opts.outlier_max_ejection = Duration::from_millis(cfg.fail_timeout_ms.saturating_mul(6));
    let idle = IdleLimits {
        max: cfg.max_idle_per_server,
        timeout: Duration::from_millis(cfg.idle_timeout_ms),
        buffers: usize::try_from(cfg.idle_buffers.0).unwrap_or(usize::MAX),
    };
    let members = members_of(name, cfg.balance, &entries, &resolved, &opts, idle);

    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(cfg.idle_timeout_ms))
        .pool_max_idle_per_host(cfg.max_idle_per_server)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(cfg.http2)
        .retry_canceled_requests(true)
        .set_host(false)
        .build(connector);
    Ok(UpstreamPool {
        name: name.to_string(),
        members: arc_swap::ArcSwap::from_pointee(members),
        entries,
        opts,
        algorithm: cfg.balance,
        client,
        read_timeout: Duration::from_millis(cfg.read_timeout_ms),
        connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        retries: cfg.retries,
        health: cfg.health.clone(),
        http2: cfg.http2,
        idle,
    })
}

impl UpstreamPool {
    /// The current members (servers and balancer).
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }
}

/// Run the pool's active health checks until the pool is dropped (reload replaces it):
/// every interval, every current server at once.
pub fn spawn_health_checks(pool: &Arc<UpstreamPool>) {
    let Some(h) = pool.health.clone() else {
        return;
    };
    let weak = Arc::downgrade(pool);
    tokio::spawn(async move {
        let interval = Duration::from_millis(h.interval_ms.max(10));
        let timeout = Duration::from_millis(h.timeout_ms.max(1));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            let members = pool.members();
            drop(pool);
            let checks = members
                .servers
                .iter()
                .map(|s| check_once(s.addr, &h.path, timeout));
            let results = futures_util::future::join_all(checks).await;
            for (i, ok) in results.into_iter().enumerate() {
                members.pool.report_health_check(i, ok);
            }
        }
    });
}

/// Keep host-name servers current: re-resolve each name when its answer's TTL runs
/// out (at least every second, at most every 5 minutes) with hopline's resolver; when
/// the addresses change, the pool's members are replaced.
pub fn spawn_resolution(pool: &Arc<UpstreamPool>) {
    if !pool.entries.iter().any(|(t, _, _)| is_name(t)) {
        return;
    }
    let weak = Arc::downgrade(pool);
    tokio::spawn(async move {
        let resolver = match hopline_dns::Resolver::builder().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: "hopline::proxy", "no resolver for upstream names: {e}");
                return;
            }
        };
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            let Some(pool) = weak.upgrade() else { return };
            let mut resolved = Vec::new();
            let mut ttl = Duration::from_secs(300);
            let mut failed = false;
            for (text, _, _) in &pool.entries {
                if !is_name(text) {
                    resolved.push(vec![text.parse::<SocketAddr>().expect("an address")]);
                    continue;
                }
                let (host, port) = text.rsplit_once(':').expect("validated host:port");
                let port: u16 = port.parse().expect("validated port");
                match resolver.lookup_ip(host.trim_matches(['[', ']'])).await {
                    Ok(l) => {
                        ttl = ttl.min(l.ttl);
                        resolved.push(
                            l.addrs
                                .iter()
                                .map(|ip| SocketAddr::new(*ip, port))
                                .collect(),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(target: "hopline::proxy", "{}: cannot resolve {text}: {e}; keeping the current servers", pool.name);
                        failed = true;
                        break;
                    }
                }
            }
            wait = ttl.clamp(Duration::from_secs(1), Duration::from_secs(300));
            if failed {
                continue;
            }
            let current: Vec<SocketAddr> = pool.members().servers.iter().map(|s| s.addr).collect();
            let fresh: Vec<SocketAddr> = resolved.iter().flatten().copied().collect();
            if current != fresh && !fresh.is_empty() {
                tracing::info!(target: "hopline::proxy", "{}: servers now {:?} (were {:?})", pool.name, fresh, current);
                let m = members_of(
                    &pool.name,
                    pool.algorithm,
                    &pool.entries,
                    &resolved,
                    &pool.opts,
                    pool.idle,
                );
                pool.members.store(Arc::new(m));
            }
        }
    });
}

/// One health check: a fresh connection, `GET path`, 2xx/3xx within the timeout.
async fn check_once(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let _ = s.set_nodelay(true);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hopline-health\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 32];
        let mut n = 0;
        while n < 12 {
            let k = s.read(&mut buf[n..]).await.ok()?;
            if k == 0 {
                break;
            }
            n += k;
        }
        let head = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Whether `name` is one of [`HOP_BY_HOP`] or `Upgrade`.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// [`is_hop_by_hop`] for a name as it came on the wire (any case): a length compare
/// first, so most names are ruled out without looking at their bytes.
pub(crate) fn is_hop_by_hop_name(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ];
    NAMES
        .iter()
        .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
}

fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // the common case — none of them present — costs one pass, no hashing
    if !keep_upgrade && !h.keys().any(is_hop_by_hop) {
        return;
    }
    // names listed in Connection are hop-by-hop too
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        h.remove(&name);
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
}

pub(crate) fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Add `add` to the list field `name`, as one field line holding every earlier line's
/// items and then `add` (some readers look at the first line only).
fn append_header(h: &mut HeaderMap, name: HeaderName, add: &str) {
    let mut joined = String::new();
    for old in h.get_all(&name).iter().filter_map(|v| v.to_str().ok()) {
        if !old.trim().is_empty() {
            joined.push_str(old);
            joined.push_str(", ");
        }
    }
    let value = if joined.is_empty() {
        HeaderValue::from_str(add)
    } else {
        joined.push_str(add);
        HeaderValue::from_str(&joined)
    };
    if let Ok(v) = value {
        h.insert(name, v);
    }
}

/// A server's `Server-Timing` description: it goes into response heads as it is, so
/// only printable ASCII, no quote or backslash (a pool's name may hold anything).
fn timing_text(pool: &str, id: &str, algorithm: Algorithm) -> String {
    format!("{pool} {id} via {}", algorithm.as_str())
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// What the proxy knows of the client side.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    /// Client address.
    pub peer: SocketAddr,
    /// The client's IP address as text (made once per connection).
    pub client: &'a str,
    /// Client spoke TLS.
    pub tls: bool,
    /// Host (without port) the client asked for.
    pub host: &'a str,
    /// The Host / :authority exactly as sent (with its port), for the upstream's Host.
    pub authority: &'a str,
    /// Where the origin's 1xx responses go (an HTTP/1.1 client), if anywhere.
    pub interim: Option<&'a crate::h1::Interim>,
}

fn forwarded_for(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// The fields the proxy adds to a forwarded request, described once and either applied
/// to a header map (for hyper's client) or written straight into a request head (for
/// hopline's own), so both paths send the same thing.
struct Forwarding<'a> {
    /// Appended to `X-Forwarded-For`.
    client: &'a str,
    /// Set as `X-Forwarded-Proto`.
    proto: &'static str,
    /// Set as `X-Forwarded-Host` (when usable as a value).
    host: Option<&'a str>,
    /// `Host` when the request has none.
    authority: &'a str,
    /// The client's address as `Forwarded` writes it, when it is IPv6 (quoted, bracketed);
    /// IPv4 is `client` as it is.
    for_v6: Option<String>,
    /// `Host` as `Forwarded` may carry it (a token-safe value), if so.
    forwarded_host: Option<&'a str>,
    /// Appended to `Via`.
    via: &'static str,
}

/// Whether `s` can be a field value as it is (what `HeaderValue::from_str` accepts),
/// checked without making one.
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= b' ' && b != 0x7f))
}

impl<'a> Forwarding<'a> {
    fn new(down: &Downstream<'a>, via: &'static str) -> Forwarding<'a> {
        let proto = if down.tls { "https" } else { "http" };
        let host_ok = !down.host.is_empty();
        Forwarding {
            client: down.client,
            proto,
            host: (host_ok && is_field_value(down.host)).then_some(down.host),
            authority: down.authority,
            for_v6: down.peer.is_ipv6().then(|| forwarded_for(down.peer.ip())),
            forwarded_host: (host_ok
                && down
                    .host
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b','))
            .then_some(down.host),
            via,
        }
    }

    /// The element appended to `Forwarded` (RFC 7239), in pieces:
    /// `for=CLIENT;proto=PROTO[;host=HOST]`.
    fn forwarded(&self) -> [&str; 6] {
        let (sep, host) = match self.forwarded_host {
            Some(h) => (";host=", h),
            None => ("", ""),
        };
        [
            "for=",
            self.for_v6.as_deref().unwrap_or(self.client),
            ";proto=",
            self.proto,
            sep,
            host,
        ]
    }

    fn apply(&self, h: &mut HeaderMap) {
        append_header(h, HeaderName::from_static("x-forwarded-for"), self.client);
        h.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(self.proto),
        );
        if let Some(host) = self.host
            && let Ok(v) = HeaderValue::from_str(host)
        {
            h.insert(HeaderName::from_static("x-forwarded-host"), v);
        }
        if !h.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(self.authority)
        {
            h.insert(header::HOST, v);
        }
        append_header(h, header::FORWARDED, &self.forwarded().concat());
        append_header(h, header::VIA, self.via);
    }

    /// The request head for hopline's own client: the request's fields (hop-by-hop ones
    /// already gone) with these added, as [`Forwarding::apply`] would have.
    fn head(&self, parts: &http::request::Parts, path_and_query: &str) -> Vec<u8> {
        /// `name: value` of a field the proxy sets
        fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        /// a list field the proxy extends: every earlier line's items, then `add` (as
        /// [`append_header`] does), given in pieces
        fn extend(out: &mut Vec<u8>, h: &HeaderMap, name: HeaderName, add: &[&str]) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            for old in h.get_all(&name).iter().filter(|v| v.to_str().is_ok()) {
                if !old.as_bytes().trim_ascii().is_empty() {
                    out.extend_from_slice(old.as_bytes());
                    out.extend_from_slice(b", ");
                }
            }
            for piece in add {
                out.extend_from_slice(piece.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        let h = &parts.headers;
        let mut out = Vec::with_capacity(384 + h.len() * 32);
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(path_and_query.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut extended = false;
        for (name, value) in h {
            let n = name.as_str();
            match n {
                "content-length" | "transfer-encoding" | "x-forwarded-proto"
                | "x-forwarded-host" => continue,
                // extended below
                "x-forwarded-for" | "forwarded" | "via" => {
                    extended = true;
                    continue;
                }
                _ => {}
            }
            line(&mut out, n.as_bytes(), value.as_bytes());
        }
        // (a request that came straight from a client has none of them: no lookups)
        let map = if extended { h } else { &HeaderMap::new() };
        extend(
            &mut out,
            map,
            HeaderName::from_static("x-forwarded-for"),
            &[self.client],
        );
        line(&mut out, b"x-forwarded-proto", self.proto.as_bytes());
        if let Some(host) = self.host {
            line(&mut out, b"x-forwarded-host", host.as_bytes());
        }
        if !h.contains_key(header::HOST) && is_field_value(self.authority) {
            line(&mut out, b"host", self.authority.as_bytes());
        }
        extend(&mut out, map, header::FORWARDED, &self.forwarded());
        extend(&mut out, map, header::VIA, &[self.via]);
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Forward one request to the pool; always returns a response (errors become 502/503/504).
pub async fn forward(
    up: &UpstreamPool,
    mut req: Request<RequestBody>,
    down: Downstream<'_>,
) -> Response<Body> {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = if upgrade {
        crate::h1::on_upgrade(&mut req)
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    match send(up, parts, Some(body), down, client_upgrade, HeadForm::Lines).await {
        Ok(resp) => {
            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let (parts, body) = resp.into_parts();
            let body = match body {
                _ if switching => Body::empty(),
                Either::Left(hyper_body) => Body::stream(hyper_body),
                // hopline's own client: the body unboxed, the fields as the origin's lines
                Either::Right(mut own) => match own.take_relayed() {
                    Some(r) => Body::origin(own).with_relayed_lines(r.lines.freeze(), r.has_date),
                    None => Body::origin(own),
                },
            };
            Response::from_parts(parts, body)
        }
        Err(e) => e.response(),
    }
}

/// Send a request (head + optional body) to a server of the pool, retrying failed
/// connects of bodiless idempotent requests on another server. The response comes back
/// with hop-by-hop headers stripped and `Via` / `Server-Timing` added; its body is the
/// upstream's, unread. With [`HeadForm::Lines`], a response of hopline's own client may
/// carry its fields as the origin's lines in its body (see [`UpstreamBody`]) rather
/// than in its header map.
pub async fn send(
    up: &UpstreamPool,
    mut parts: http::request::Parts,
    body: Option<RequestBody>,
    down: Downstream<'_>,
    client_upgrade: Option<crate::h1::OnUpgrade>,
    form: HeadForm,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let upgrade = client_upgrade.is_some();
    let via = if parts.version == http::Version::HTTP_2 {
        "2 hopline"
    } else {
        "1.1 hopline"
    };
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if !parts.headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(&up.name)
    {
        // (an HTTP/1.0 client may send none; HTTP/1.1 to the origin needs one: the
        // pool's name, as nginx sends $proxy_host)
        parts.headers.insert(header::HOST, v);
    }
    let forwarding = Forwarding::new(&down, via);
    let interim = down.interim;
    // A request without a body can be sent again to another server.
    let bodiless = body
        .as_ref()
        .is_none_or(|b| b.is_end_stream_hint(&parts.headers));
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let retryable = bodiless && idempotent && !upgrade;
    // (made only for a request with a body: a bodiless GET allocates nothing for it)
    let mut client_failed: Option<Arc<std::sync::OnceLock<ProxyError>>> = None;
    let mut body = Some(match body {
        Some(inner) if !bodiless => Either::Left(ClientBody {
            inner,
            failed: client_failed.insert(Arc::default()).clone(),
        }),
        _ => Either::Right(Empty::new()),
    });
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.version = http::Version::HTTP_11;

    // hopline's own HTTP/1.1 client takes the bodiless idempotent requests; hyper's
    // gets the forwarding fields in its header map
    let fast = !up.http2
        && bodiless
        && !upgrade
        && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !fast {
        forwarding.apply(&mut parts.headers);
    }
    let mut fast_head: Option<Vec<u8>> = None;
    let members = up.members();
    let mut tried: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
    let attempts = if retryable { up.retries + 1 } else { 1 };
    // (the error made only when there is one: a request that succeeds allocates none)
    let mut last_err: Option<ProxyError> = None;
    for attempt in 0..attempts {
        let Some(pick) = members.pool.pick(&tried) else {
            break; // none at all (NoServer below), or none left to retry on
        };
        let idx = pick.index();
        tried.push(idx);
        let server = &members.servers[idx];
        if fast {
            let head = fast_head.get_or_insert_with(|| forwarding.head(&parts, path_and_query));
            let started = Instant::now();
            let sent = crate::upstream::exchange(
                &server.idle,
                server.addr,
                crate::upstream::Ask {
                    head,
                    is_head: parts.method == Method::HEAD,
                    form,
                    interim,
                },
                up.connect_timeout,
                started + up.read_timeout,
            )
            .await;
            let latency = started.elapsed();
            match sent {
                Ok(resp) => {
                    pick.finish(if resp.status().is_server_error() {
                        Outcome::ServerError { latency }
                    } else {
                        Outcome::Success { latency }
                    });
                    let (mut rparts, mut rbody) = resp.into_parts();
                    // (the client left the hop-by-hop fields out already)
                    match rbody.relayed_mut() {
                        Some(relayed) => annotate_lines(&mut relayed.lines, server, latency),
                        None => annotate_response(&mut rparts.headers, server, latency),
                    }
                    return Ok(Response::from_parts(rparts, Either::Right(rbody)));
                }
                Err(crate::upstream::ExchangeError::Connect(reason)) => {
                    pick.finish(Outcome::ConnectError);
                    tracing::warn!(target: "hopline::proxy", "{}: connect to {} failed: {reason}", up.name, server.id);
                    last_err = Some(ProxyError::Connect {
                        server: server.id.clone(),
                        reason,
                    });
                    continue;
                }
                Err(crate::upstream::ExchangeError::Timeout) => {
                    pick.finish(Outcome::Timeout);
                    tracing::warn!(target: "hopline::proxy", "{}: {} timed out", up.name, server.id);
                    return Err(ProxyError::Timeout {
                        server: server.id.clone(),
                        after: up.read_timeout,
                    });
                }
                Err(crate::upstream::ExchangeError::Broken(reason)) => {
                    pick.finish(Outcome::ServerError { latency });
                    tracing::warn!(target: "hopline::proxy", "{}: {} failed: {reason}", up.name, server.id);
                    return Err(ProxyError::Upstream {
                        server: server.id.clone(),
                        reason,
                    });
                }
            }
        }
        let uri: Uri = match format!("http://{}{}", server.addr, path_and_query).parse() {
            Ok(u) => u,
            Err(_) => {
                pick.finish(Outcome::Success {
                    latency: Duration::ZERO,
                });
                return Err(ProxyError::Upstream {
                    server: server.id.clone(),
                    reason: "the request target cannot be forwarded".into(),
                });
            }
        };
        let mut out = Request::new(match body.take() {
            Some(b) => b,
            None => Either::Right(Empty::new()),
        });
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.version_mut() = parts.version;
        *out.headers_mut() = if retryable && attempt + 1 < attempts {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let started = Instant::now();
        let sent =
            tokio::time::timeout(up.read_timeout + up.connect_timeout, up.client.request(out))
                .await;
        let latency = started.elapsed();
        if !matches!(sent, Ok(Ok(_)))
            && let Some(e) = client_failed.as_ref().and_then(|f| f.get())
        {
            // the client's body broke: its error, not the server's (the pick is
            // dropped unfinished: nothing learned about the server)
            tracing::debug!(target: "hopline::proxy", "{}: request body from the client failed: {e:?}", up.name);
            drop(pick);
            return Err(e.clone());
        }
        match sent {
            Ok(Ok(mut resp)) => {
                let status = resp.status();
                pick.finish(if status.is_server_error() {
                    Outcome::ServerError { latency }
                } else {
                    Outcome::Success { latency }
                });
                let switching = status == StatusCode::SWITCHING_PROTOCOLS;
                if switching && let Some(client_upgrade) = client_upgrade {
                    let upstream_upgrade = hyper::upgrade::on(&mut resp);
                    let server_id = server.id.clone();
                    tokio::spawn(async move {
                        let upstream_upgrade =
                            async move { upstream_upgrade.await.map_err(std::io::Error::other) };
                        match tokio::try_join!(client_upgrade, upstream_upgrade) {
                            Ok((mut c, u)) => {
                                let mut u = TokioIo::new(u);
                                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await
                                {
                                    tracing::debug!(target: "hopline::proxy", "tunnel to {server_id} ended: {e}");
                                }
                            }
                            Err(e) => {
                                tracing::debug!(target: "hopline::proxy", "upgrade with {server_id} failed: {e}")
                            }
                        }
                    });
                }
                let (mut rparts, rbody) = resp.into_parts();
                response_headers(&mut rparts.headers, switching, server, latency);
                return Ok(Response::from_parts(rparts, Either::Left(rbody)));
            }
            Ok(Err(e)) if e.is_connect() => {
                pick.finish(Outcome::ConnectError);
                let reason = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string());
                tracing::warn!(target: "hopline::proxy", "{}: connect to {} failed: {reason}", up.name, server.id);
                last_err = Some(ProxyError::Connect {
                    server: server.id.clone(),
                    reason,
                });
                continue;
            }
            Ok(Err(e)) => {
                pick.finish(Outcome::ServerError { latency });
                let reason = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string());
                tracing::warn!(target: "hopline::proxy", "{}: {} failed: {reason}", up.name, server.id);
                return Err(ProxyError::Upstream {
                    server: server.id.clone(),
                    reason,
                });
            }
            Err(_) => {
                pick.finish(Outcome::Timeout);
                tracing::warn!(target: "hopline::proxy", "{}: {} timed out", up.name, server.id);
                return Err(ProxyError::Timeout {
                    server: server.id.clone(),
                    after: up.read_timeout,
                });
            }
        }
    }
    Err(last_err.unwrap_or_else(|| ProxyError::NoServer {
        pool: up.name.clone(),
    }))
}

/// What the proxy does to every response head: hop-by-hop headers out, `Via` and its
/// `Server-Timing` entry in.
fn response_headers(h: &mut HeaderMap, switching: bool, server: &ServerAddr, latency: Duration) {
    strip_hop_by_hop(h, switching);
    annotate_response(h, server, latency);
}

/// `Via` and the proxy's `Server-Timing` entry.
fn annotate_response(h: &mut HeaderMap, server: &ServerAddr, latency: Duration) {
    append_header(h, header::VIA, "1.1 hopline");
    let mut timing = String::with_capacity(40 + server.timing_desc.len());
    timing.push_str("hopline-proxy;dur=");
    push_millis(&mut timing, latency);
    timing.push_str(&server.timing_desc);
    append_header(h, HeaderName::from_static("server-timing"), &timing);
}

/// [`annotate_response`] for relayed lines: the same two fields, as lines of their own
/// (a list field may come in several lines, RFC 9110 §5.3).
fn annotate_lines(lines: &mut bytes::BytesMut, server: &ServerAddr, latency: Duration) {
    lines.extend_from_slice(b"via: 1.1 hopline\r\nserver-timing: hopline-proxy;dur=");
    push_millis(lines, latency);
    lines.extend_from_slice(server.timing_desc.as_bytes());
    lines.extend_from_slice(b"\r\n");
}

/// `d` in milliseconds with three decimals (`{:.3}` of the float, without formatting one).
fn push_millis(out: &mut impl std::fmt::Write, d: Duration) {
    let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
    let frac = us % 1000;
    let pad = if frac < 10 {
        "00"
    } else if frac < 100 {
        "0"
    } else {
        ""
    };
    // (writing into a String or a BytesMut cannot fail)
    let _ = out.write_str(itoa::Buffer::new().format(us / 1000));
    let _ = out.write_str(".");
    let _ = out.write_str(pad);
    let _ = out.write_str(itoa::Buffer::new().format(frac));
}

/// Does a request carry no body? Judged from its headers, as the body has not been read.
trait BodyHint {
    fn is_end_stream_hint(&self, headers: &HeaderMap) -> bool;
}

impl BodyHint for RequestBody {
    fn is_end_stream_hint(&self, headers: &HeaderMap) -> bool {
        use http_body::Body as _;
        if self.is_end_stream() {
            return true;
        }
        let cl_zero = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0");
        cl_zero && !headers.contains_key(header::TRANSFER_ENCODING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_fields_keep_every_earlier_line() {
        let mut h = HeaderMap::new();
        append_header(&mut h, header::VIA, "1.1 hopline");
        assert_eq!(h[header::VIA], "1.1 hopline");
        h.append(header::VIA, HeaderValue::from_static("1.1 other"));
        h.append(header::VIA, HeaderValue::from_static(""));
        append_header(&mut h, header::VIA, "2 last");
        let all: Vec<_> = h.get_all(header::VIA).iter().collect();
        assert_eq!(all, ["1.1 hopline, 1.1 other, 2 last"]);
    }

    #[test]
    fn millis_have_three_decimals() {
        for (us, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (45, "0.045"),
            (999, "0.999"),
            (1000, "1.000"),
            (12_345, "12.345"),
            (3_600_000_001, "3600000.001"),
        ] {
            let mut s = String::new();
            push_millis(&mut s, Duration::from_micros(us));
            assert_eq!(s, text);
            assert_eq!(s, format!("{:.3}", us as f64 / 1000.0));
        }
    }

    /// Both ways of adding the forwarding fields (to hyper's header map, into the own
    /// client's head) must send the same fields with the same values.
    #[test]
    fn forwarding_fields_are_the_same_on_both_client_paths() {
        let req = Request::get("/a?b=1")
            .header("host", "shop.test:8080")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-for", "198.51.100.1")
            .header("forwarded", "for=203.0.113.9")
            .header("x-forwarded-proto", "gopher")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        for (peer, tls, host) in [
            ("127.0.0.1:5000", false, "shop.test"),
            ("[::1]:5000", true, ""),
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            let client = peer.ip().to_string();
            let down = Downstream {
                peer,
                client: &client,
                tls,
                host,
                authority: "shop.test:8080",
                interim: None,
            };
            let f = Forwarding::new(&down, "1.1 hopline");
            let mut map = parts.headers.clone();
            f.apply(&mut map);
            let head = f.head(&parts, "/a?b=1");
            let head = String::from_utf8(head).unwrap();
            assert!(head.starts_with("GET /a?b=1 HTTP/1.1\r\n"), "{head}");
            assert!(head.ends_with("\r\n\r\n"), "{head}");
            let mut from_head: Vec<(String, String)> = head
                .lines()
                .skip(1)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (n, v) = l.split_once(": ").unwrap();
                    (n.to_string(), v.to_string())
                })
                .collect();
            let mut from_map: Vec<(String, String)> = map
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            from_head.sort();
            from_map.sort();
            assert_eq!(from_head, from_map);
            let get = |n: &str| {
                from_map
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            };
            let client = if tls { "::1" } else { "127.0.0.1" };
            // every earlier line's addresses, in order, then the client's
            assert_eq!(
                get("x-forwarded-for"),
                Some(&*format!("203.0.113.9, 198.51.100.1, {client}"))
            );
            assert_eq!(
                get("x-forwarded-proto"),
                Some(if tls { "https" } else { "http" })
            );
            assert_eq!(get("via"), Some("1.1 hopline"));
            assert_eq!(get("host"), Some("shop.test:8080"));
        }
    }

    #[test]
    fn hop_by_hop_names_are_the_list_and_upgrade() {
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            header::CONTENT_LENGTH,
            header::VIA,
            header::SERVER,
            header::TRAILER,
        ] {
            assert_eq!(is_hop_by_hop(&name), name == header::TRAILER, "{name}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        let mut a = h.clone();
        strip_hop_by_hop(&mut a, false);
        assert!(a.get("x-secret").is_none());
        assert!(a.get("keep-alive").is_none());
        assert!(a.get(header::CONNECTION).is_none());
        assert!(a.get(header::UPGRADE).is_none());
        assert_eq!(a["x-kept"], "yes");
        let mut b = h.clone();
        strip_hop_by_hop(&mut b, true);
        assert_eq!(b[header::UPGRADE], "websocket");
        assert_eq!(b[header::CONNECTION], "upgrade");
    }

    #[test]
    fn errors_say_what_and_whose() {
        let e = ProxyError::Connect {
            server: "127.0.0.1:9".into(),
            reason: "refused".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(e.retryable());
        assert!(e.body().contains("could not connect"));
        let e = ProxyError::Timeout {
            server: "a".into(),
            after: Duration::from_millis(50),
        };
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(!e.retryable());
        assert!(e.body().contains("did not answer within 50 ms"));
        let e = ProxyError::NoServer { pool: "app".into() };
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.fault(), Fault::Internal);
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        assert_eq!(forwarded_for("10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(forwarded_for("::1".parse().unwrap()), "\"[::1]\"");
    }
}
