//! What every connection of a running edge shares: the request path's state, the
//! protocol engines' settings, the open-connection count, and the request path as the
//! engines call it. A leaf of the server: its listeners (TCP and QUIC) use it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Limits;
use crate::request::phases::{ConnInfo, PathState};
use crate::request::router::FastMap;
use hopline_engine::body::{Body, RequestBody};

/// State shared by every connection.
pub(super) struct Shared {
    /// What the request path reads.
    pub(super) path: PathState,
    pub(super) http: ArcSwap<Builders>,
    pub(super) open_connections: AtomicUsize,
    /// Set to true when the server shuts down: connections finish their request and close.
    pub(super) closing: hopline_engine::h1::connection::Closing,
    /// Woken when the last connection closes.
    pub(super) idle: tokio::sync::Notify,
    /// Per configured listen address: the bound address and its open connections.
    pub(super) listeners: parking_lot::Mutex<FastMap<SocketAddr, (SocketAddr, Arc<AtomicUsize>)>>,
    /// Boxes of the dashboard from outside the edge (the DNS services).
    pub(super) extras: ArcSwapOption<hopline_admin::view::ExtraNodes>,
    /// The `[[stream]]` listeners.
    pub(super) streams: parking_lot::Mutex<Vec<hopline_proxy::layer4::StreamInfo>>,
    /// What the admin side shows of the table in force (made with it).
    pub(super) snapshot: ArcSwap<hopline_admin::view::Snapshot>,
}

impl hopline_proxy::layer4::Pools for Shared {
    fn pool(&self, name: &str) -> Option<Arc<hopline_proxy::pool::UpstreamPool>> {
        self.path.table.load().upstreams.get(name).cloned()
    }
}

impl hopline_admin::view::AdminView for Shared {
    fn trace(&self, id: &str) -> Vec<hopline_admin::counters::TraceHop> {
        self.path.traces.get(id)
    }
    fn snapshot(&self) -> Arc<hopline_admin::view::Snapshot> {
        self.snapshot.load_full()
    }
    fn metrics(&self) -> &hopline_admin::counters::Metrics {
        &self.path.metrics
    }
    fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
    fn listener(&self, configured: SocketAddr) -> Option<(SocketAddr, usize)> {
        self.listeners
            .lock()
            .get(&configured)
            .map(|(bound, open)| (*bound, open.load(Ordering::Relaxed)))
    }
    fn extras(&self) -> Vec<hopline_admin::view::ExtraNode> {
        self.extras.load().as_ref().map(|f| f()).unwrap_or_default()
    }
    fn recent_traces(&self, n: usize) -> Vec<String> {
        self.path.traces.recent(n)
    }
    fn streams(&self) -> Vec<hopline_proxy::layer4::StreamInfo> {
        self.streams.lock().clone()
    }
}

/// The HTTP/2 engine (hyper), built once per config; HTTP/1.1 is hopline's own
/// ([`hopline_engine::h1`]). HTTP/2 only: a connection that chose h2 (ALPN or the prior-knowledge
/// preface) that then does not start with the preface gets GOAWAY(PROTOCOL_ERROR), never
/// an HTTP/1.1 answer.
pub(super) struct Builders {
    pub(super) h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    pub(super) h1: hopline_engine::h1::connection::Options,
    pub(super) h3: hopline_engine::h3::H3Settings,
}

pub(super) fn builders(limits: &Limits) -> Builders {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(limits.max_header_bytes.0.min(u32::MAX as u64) as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        // RFC 8441: WebSocket (and other protocols) over an HTTP/2 stream
        .enable_connect_protocol();
    Builders {
        h2: b,
        h1: hopline_engine::h1::connection::Options {
            header_timeout: Duration::from_millis(limits.header_timeout_ms.max(1)),
            keepalive_timeout: Duration::from_millis(limits.keepalive_timeout_ms.max(1)),
            max_header_bytes: (limits.max_header_bytes.0 as usize).clamp(1024, 1 << 30),
            send_timeout: Duration::from_millis(limits.send_timeout_ms.max(1)),
        },
        h3: hopline_engine::h3::H3Settings {
            max_streams: limits.h3_max_streams.max(1),
            idle_timeout: Duration::from_millis(limits.keepalive_timeout_ms.max(1)),
            max_header_bytes: limits.max_header_bytes.0,
            retry_above: limits.quic_retry_above,
            ..Default::default()
        },
    }
}

/// Counts an open connection (in all and on its listener); uncounts it when dropped.
pub(super) struct ConnGuard(pub(super) Arc<Shared>, pub(super) Arc<AtomicUsize>);

impl ConnGuard {
    /// Count a new connection on the listener whose open count is `open`, or `None` at
    /// the connection limit (counted as refused).
    pub(super) fn admit(shared: &Arc<Shared>, open: &Arc<AtomicUsize>) -> Option<ConnGuard> {
        let max = shared.path.table.load().limits.max_connections;
        let metrics = &shared.path.metrics;
        if shared.open_connections.fetch_add(1, Ordering::Relaxed) >= max {
            shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
        open.fetch_add(1, Ordering::Relaxed);
        Some(ConnGuard(shared.clone(), open.clone()))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::Relaxed);
        if self.0.open_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The edge's request path, as the HTTP/1.1 engine calls it.
pub(super) struct EdgeService {
    pub(super) shared: Arc<Shared>,
    pub(super) info: Arc<ConnInfo>,
    /// Counts the connection as open while it lives.
    pub(super) _guard: ConnGuard,
}

impl hopline_engine::h1::connection::Service for EdgeService {
    fn call<'a>(
        &'a self,
        req: Request<RequestBody>,
        interim: Option<&'a hopline_engine::h1::interim::Interim>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'a {
        crate::request::phases::handle(&self.shared.path, &self.info, req, interim)
    }

    fn refused(&self, refusal: hopline_engine::h1::connection::Refusal) {
        crate::request::phases::refused(&self.shared.path, &self.info, refusal)
    }
}
