//! The running edge: start, reload and stop. It binds the listeners and runs their accept
//! loops (with a connection limit), the TLS handshake, and hands each connection to the
//! engine — HTTP/1.1, or HTTP/2 by ALPN or h2c prior knowledge — with the request path
//! ([`crate::request::phases`]) as its service. A reload swaps the compiled table whole
//! and adds or removes listeners; shutdown is graceful.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::{Config, Limits};
use crate::error::EdgeError;
use crate::request::files::FileCache;
use crate::request::phases::{ConnInfo, PathState};
use crate::request::router::{self, FastMap, Table};
use hopline_engine::access_log::AccessLog;
use hopline_engine::body::{Body, RequestBody};
use hopline_engine::h2::{h2_preface, until_closing};

/// State shared by every connection.
struct Shared {
    /// What the request path reads.
    path: PathState,
    http: ArcSwap<Builders>,
    open_connections: AtomicUsize,
    /// Set to true when the server shuts down: connections finish their request and close.
    closing: hopline_engine::h1::connection::Closing,
    /// Woken when the last connection closes.
    idle: tokio::sync::Notify,
    /// Per configured listen address: the bound address and its open connections.
    listeners: parking_lot::Mutex<FastMap<SocketAddr, (SocketAddr, Arc<AtomicUsize>)>>,
    /// Boxes of the dashboard from outside the edge (the DNS services).
    extras: ArcSwapOption<hopline_admin::view::ExtraNodes>,
    /// The `[[stream]]` listeners.
    streams: parking_lot::Mutex<Vec<hopline_proxy::layer4::StreamInfo>>,
    /// What the admin side shows of the table in force (made with it).
    snapshot: ArcSwap<hopline_admin::view::Snapshot>,
}

/// A stream listener's socket.
enum Either {
    Tcp(TcpListener),
    Udp(tokio::net::UdpSocket),
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

struct ListenerHandle {
    bound: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A running edge: its listeners and the table they serve.
pub struct Server {
    shared: Arc<Shared>,
    listeners: parking_lot::Mutex<HashMap<SocketAddr, ListenerHandle>>,
    admin: parking_lot::Mutex<Option<(SocketAddr, ListenerHandle)>>,
    /// `[[stream]]` listeners (TCP/UDP), bound at start; a reload keeps them.
    streams: parking_lot::Mutex<Vec<ListenerHandle>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.bound())
            .finish()
    }
}

/// What a finished shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every in-flight request completed.
    Drained,
    /// The timeout passed; the remaining connections were closed.
    TimedOut,
}

/// The HTTP/2 engine (hyper), built once per config; HTTP/1.1 is hopline's own
/// ([`hopline_engine::h1`]). HTTP/2 only: a connection that chose h2 (ALPN or the prior-knowledge
/// preface) that then does not start with the preface gets GOAWAY(PROTOCOL_ERROR), never
/// an HTTP/1.1 answer.
struct Builders {
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    h1: hopline_engine::h1::connection::Options,
}

fn builders(limits: &Limits) -> Builders {
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
    }
}

/// Binds a listening socket; a refusal names the address and what would have listened.
fn bind(addr: SocketAddr, role: &str) -> Result<TcpListener, EdgeError> {
    hopline_engine::listen::bind(addr).map_err(|e| EdgeError::Bind {
        addr,
        role: role.to_string(),
        reason: e,
    })
}

impl Server {
    /// Bind every listener of `config` and start serving. Nothing stays bound on error.
    pub async fn start(config: Config) -> Result<Server, EdgeError> {
        Self::start_with(config, crate::request::service::Services::new()).await
    }

    /// [`Server::start`] with route services (realtime, notify, …) the config's routes
    /// may name.
    /// Build everything [`Server::start_with`] would — routes, TLS certificates and keys,
    /// upstreams, caches — without binding (`hopline serve --check`, like `nginx -t`).
    pub fn check(
        config: &Config,
        services: &crate::request::service::Services,
    ) -> Result<(), EdgeError> {
        hopline_engine::tls::install_crypto_provider();
        router::compile(config, None, services).map(drop)
    }

    pub async fn start_with(
        config: Config,
        services: crate::request::service::Services,
    ) -> Result<Server, EdgeError> {
        hopline_engine::tls::install_crypto_provider();
        let table = router::compile(&config, None, &services)?;
        let access_log = AccessLog::open(config.access_log.as_deref())?;
        let mut bound = Vec::new();
        for addr in crate::config::listen_addrs(&config) {
            bound.push((addr, bind(addr, &role_of(&table, addr))?));
        }
        let admin = match table.admin {
            Some(a) => Some((a, bind(a, "admin")?)),
            None => None,
        };
        let mut streams = Vec::new();
        for st in &config.stream {
            let addr: SocketAddr = st.listen.get_ref().parse().expect("validated");
            let role = format!(
                "stream {} → {}",
                if st.udp() { "udp" } else { "tcp" },
                st.proxy.get_ref()
            );
            let socket = if st.udp() {
                let udp = std::net::UdpSocket::bind(addr)
                    .and_then(|u| u.set_nonblocking(true).map(|()| u))
                    .and_then(tokio::net::UdpSocket::from_std)
                    .map_err(|e| EdgeError::Bind {
                        addr,
                        role: role.clone(),
                        reason: e,
                    })?;
                Either::Udp(udp)
            } else {
                Either::Tcp(bind(addr, &role)?)
            };
            streams.push((st.clone(), socket, role));
        }
        for up in table.upstreams.values() {
            hopline_proxy::health::spawn_health_checks(up);
            hopline_proxy::health::spawn_resolution(up);
        }
        let snapshot = ArcSwap::from_pointee(table.snapshot());
        let shared = Arc::new(Shared {
            snapshot,
            http: ArcSwap::from_pointee(builders(&table.limits)),
            path: PathState {
                table: ArcSwap::from_pointee(table),
                files: FileCache::new(&config.file_cache),
                access_log: ArcSwapOption::new(access_log),
                metrics: hopline_admin::counters::Metrics::default(),
                traces: hopline_admin::counters::TraceLog::default(),
                sampler: hopline_admin::counters::Sampler::default(),
            },
            open_connections: AtomicUsize::new(0),
            closing: hopline_engine::h1::connection::Closing::default(),
            idle: tokio::sync::Notify::new(),
            listeners: parking_lot::Mutex::new(FastMap::default()),
            extras: ArcSwapOption::empty(),
            streams: parking_lot::Mutex::new(Vec::new()),
        });
        let server = Server {
            shared,
            listeners: parking_lot::Mutex::new(HashMap::new()),
            admin: parking_lot::Mutex::new(None),
            streams: parking_lot::Mutex::new(Vec::new()),
        };
        for (cfg, socket, role) in streams {
            let (stop, stop_rx) = watch::channel(false);
            let pools: Arc<dyn hopline_proxy::layer4::Pools> = server.shared.clone();
            let stats = Arc::new(hopline_proxy::layer4::StreamStats::default());
            let (udp, pool) = (cfg.udp(), cfg.proxy.get_ref().clone());
            let (bound, task) = match socket {
                Either::Tcp(l) => (
                    l.local_addr(),
                    tokio::spawn(hopline_proxy::layer4::run_tcp(
                        l,
                        cfg,
                        pools,
                        stats.clone(),
                        stop_rx,
                    )),
                ),
                Either::Udp(u) => (
                    u.local_addr(),
                    tokio::spawn(hopline_proxy::layer4::run_udp(
                        u,
                        cfg,
                        pools,
                        stats.clone(),
                        stop_rx,
                    )),
                ),
            };
            let bound = bound.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            server
                .shared
                .streams
                .lock()
                .push(hopline_proxy::layer4::StreamInfo {
                    bound,
                    udp,
                    pool,
                    stats,
                });
            tracing::info!(target: "hopline::edge", "listening on {bound} ({role})");
            server
                .streams
                .lock()
                .push(ListenerHandle { bound, stop, task });
        }
        for (addr, l) in bound {
            server.spawn_listener(addr, l);
        }
        if let Some((addr, l)) = admin {
            server.spawn_admin(addr, l);
        }
        // certificates by ACME, once the listeners answer HTTP-01 challenges
        server.shared.path.table.load().start_certificates();
        // trace sampling: `[admin] sample` tokens a second (none without an admin listener)
        let weak = Arc::downgrade(&server.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                let t = shared.path.table.load();
                shared
                    .path
                    .sampler
                    .refill(if t.admin.is_some() { t.sample } else { 0 });
            }
        });
        Ok(server)
    }

    /// Add boxes from outside the edge (the DNS services) to the admin dashboard.
    pub fn set_extras(&self, extras: hopline_admin::view::ExtraNodes) {
        self.shared.extras.store(Some(Arc::new(extras)));
    }

    fn spawn_listener(&self, configured: SocketAddr, listener: TcpListener) {
        let bound = listener.local_addr().unwrap_or(configured);
        let (stop, stop_rx) = watch::channel(false);
        let open = self
            .shared
            .listeners
            .lock()
            .entry(configured)
            .or_insert_with(|| (bound, Arc::default()))
            .1
            .clone();
        let task = tokio::spawn(accept_loop(
            listener,
            configured,
            self.shared.clone(),
            open,
            stop_rx,
        ));
        let role = role_of(&self.shared.path.table.load(), configured);
        tracing::info!(target: "hopline::edge", "listening on {bound} ({role})");
        self.listeners
            .lock()
            .insert(configured, ListenerHandle { bound, stop, task });
    }

    fn spawn_admin(&self, configured: SocketAddr, listener: TcpListener) {
        let bound = listener.local_addr().unwrap_or(configured);
        let (stop, stop_rx) = watch::channel(false);
        let view: Arc<dyn hopline_admin::view::AdminView> = self.shared.clone();
        let task = tokio::spawn(hopline_admin::listener::run(listener, view, stop_rx));
        tracing::info!(target: "hopline::edge", "listening on {bound} (admin: /.hopline/status, /metrics)");
        if let Some((_, old)) = self
            .admin
            .lock()
            .replace((configured, ListenerHandle { bound, stop, task }))
        {
            let _ = old.stop.send(true);
        }
    }

    /// The bound addresses of the `[[stream]]` listeners, in config order.
    pub fn stream_addrs(&self) -> Vec<SocketAddr> {
        self.streams.lock().iter().map(|h| h.bound).collect()
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.lock().as_ref().map(|(_, h)| h.bound)
    }

    /// (configured address, bound address) of every listener; they differ for port 0.
    pub fn bound(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let mut v: Vec<_> = self
            .listeners
            .lock()
            .iter()
            .map(|(c, h)| (*c, h.bound))
            .collect();
        v.sort();
        v
    }

    /// The bound address of the listener configured as `configured`.
    pub fn local_addr(&self, configured: SocketAddr) -> Option<SocketAddr> {
        self.listeners.lock().get(&configured).map(|h| h.bound)
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Relaxed)
    }

    /// Swap in a new config. A bad one is refused and the old one keeps serving; open
    /// connections are never dropped (they pick up the new table on their next request).
    pub async fn reload(&self, config: Config) -> Result<(), EdgeError> {
        let services = self.shared.path.table.load().services.clone();
        self.reload_with(config, services).await
    }

    /// [`Server::reload`] with the route services of the new config.
    /// The certificates obtained by ACME (for sites and on demand), as the admin
    /// listener shows them.
    pub fn certificates(&self) -> Vec<hopline_acme::manager::Status> {
        let table = self.shared.path.table.load();
        let mut out: Vec<_> = table.certificates.values().map(|m| m.status()).collect();
        for od in table.on_demand.values() {
            out.extend(od.statuses());
        }
        out
    }

    pub async fn reload_with(
        &self,
        config: Config,
        services: crate::request::service::Services,
    ) -> Result<(), EdgeError> {
        let mut table = router::compile(&config, Some(&self.shared.path.table.load()), &services)?;
        let access_log = AccessLog::open(config.access_log.as_deref())?;
        let existing: Vec<(SocketAddr, SocketAddr)> = self.bound();
        // A listener started as port 0 and now named by its real port is the same one.
        let mut wanted = Vec::new();
        for addr in crate::config::listen_addrs(&config) {
            let same = existing.iter().find(|(c, b)| {
                *c != addr && *b == addr && !existing.iter().any(|(c2, _)| *c2 == addr)
            });
            match same {
                Some((configured, _)) => {
                    if let Some(lt) = table.listeners.remove(&addr) {
                        table.listeners.insert(*configured, lt);
                    }
                    wanted.push(*configured);
                }
                None => wanted.push(addr),
            }
        }
        let existing: Vec<SocketAddr> = existing.into_iter().map(|(c, _)| c).collect();
        let mut fresh = Vec::new();
        for addr in &wanted {
            if !existing.contains(addr) {
                fresh.push((*addr, bind(*addr, &role_of(&table, *addr))?));
            }
        }
        let current_admin = self.admin.lock().as_ref().map(|(c, h)| (*c, h.bound));
        let new_admin = match (table.admin, current_admin) {
            (Some(a), Some((c, b))) if a == c || a == b => None,
            (Some(a), _) => Some((a, bind(a, "admin")?)),
            (None, _) => None,
        };
        if table.admin.is_none()
            && let Some((_, old)) = self.admin.lock().take()
        {
            let _ = old.stop.send(true);
        }
        for up in table.upstreams.values() {
            hopline_proxy::health::spawn_health_checks(up);
            hopline_proxy::health::spawn_resolution(up);
        }
        self.shared.http.store(Arc::new(builders(&table.limits)));
        self.shared.snapshot.store(Arc::new(table.snapshot()));
        self.shared.path.table.store(Arc::new(table));
        if let Some((a, l)) = new_admin {
            self.spawn_admin(a, l);
        }
        self.shared.path.access_log.store(access_log);
        for (addr, l) in fresh {
            self.spawn_listener(addr, l);
        }
        self.shared.path.table.load().start_certificates();
        let removed: Vec<ListenerHandle> = {
            let mut ls = self.listeners.lock();
            existing
                .iter()
                .filter(|a| !wanted.contains(a))
                .filter_map(|a| ls.remove(a))
                .collect()
        };
        for h in removed {
            tracing::info!(target: "hopline::edge", "stopped listening on {}", h.bound);
            let _ = h.stop.send(true);
        }
        Ok(())
    }

    /// Stop accepting, let in-flight requests finish (up to `timeout`), then return.
    pub async fn shutdown(self, timeout: Duration) -> Shutdown {
        let mut handles: Vec<ListenerHandle> =
            self.listeners.lock().drain().map(|(_, h)| h).collect();
        handles.extend(self.streams.lock().drain(..));
        if let Some((_, admin)) = self.admin.lock().take() {
            handles.push(admin);
        }
        for h in &handles {
            let _ = h.stop.send(true);
        }
        for h in handles {
            let _ = h.task.await;
        }
        self.shared.closing.start();
        for (_, _, service) in self.shared.path.table.load().services.iter() {
            service.shutdown();
        }
        let shared = self.shared.clone();
        let drained = async move {
            loop {
                let notified = shared.idle.notified();
                if shared.open_connections.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let outcome = match tokio::time::timeout(timeout, drained).await {
            Ok(()) => Shutdown::Drained,
            Err(_) => Shutdown::TimedOut,
        };
        // every buffered access-log line reaches the file before the process ends
        if let Some(log) = self.shared.path.access_log.load_full() {
            log.flush();
        }
        outcome
    }

    /// Open the access log file again (logrotate; `hopline serve` does it on SIGUSR1).
    pub fn reopen_logs(&self) -> Result<(), EdgeError> {
        if let Some(log) = self.shared.path.access_log.load_full() {
            log.reopen().map_err(|e| EdgeError::Io {
                what: "reopening the access log".into(),
                source: e,
            })?;
        }
        Ok(())
    }
}

fn role_of(table: &Table, addr: SocketAddr) -> String {
    match table.listeners.get(&addr) {
        Some(l) => format!(
            "edge {}, site {}",
            if l.tls.is_some() { "https" } else { "http" },
            l.site("").name
        ),
        None => "edge".into(),
    }
}

/// Counts an open connection (in all and on its listener); uncounts it when dropped.
struct ConnGuard(Arc<Shared>, Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::Relaxed);
        if self.0.open_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    configured: SocketAddr,
    shared: Arc<Shared>,
    open: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(target: "hopline::edge", "accept on {configured}: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let max = shared.path.table.load().limits.max_connections;
        if shared.open_connections.fetch_add(1, Ordering::Relaxed) >= max {
            shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            shared
                .path
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "hopline::edge", "connection limit {max} reached: closing {peer}");
            drop(stream);
            continue;
        }
        shared
            .path
            .metrics
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        open.fetch_add(1, Ordering::Relaxed);
        let guard = ConnGuard(shared.clone(), open.clone());
        // TCP_NODELAY comes from the listening socket (see `bind`)
        debug_assert!(stream.nodelay().unwrap_or(true));
        // spawned directly: wrapping it in another async block would store it twice
        if let Some(conn) = connection(stream, peer, configured, shared.clone(), guard) {
            tokio::spawn(conn);
        }
    }
}

/// The edge's request path, as the HTTP/1.1 engine calls it.
struct EdgeService {
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    /// Counts the connection as open while it lives.
    _guard: ConnGuard,
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

/// The edge's request path as hyper's HTTP/2 engine calls it.
fn hyper_service(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let info = info.clone();
        async move {
            // 1xx responses (an origin's 103 Early Hints) go out on the stream through
            // the vendored hyper's queue (vendor/hyper/HOPLINE.md)
            let interim = req
                .extensions()
                .get::<hyper::ext::Http2Informational>()
                .cloned()
                .map(hopline_engine::h1::interim::Interim::http2);
            let mut resp = crate::request::phases::handle(
                &shared.path,
                &info,
                req.map(RequestBody::Hyper),
                interim.as_ref(),
            )
            .await;
            // HTTP/2 has no use for lines encoded for HTTP/1.1
            hopline_engine::body::expand_lines(&mut resp);
            Ok::<_, Infallible>(resp)
        }
    })
}

/// Everything a connection needs, set up before its task starts; the task's future
/// holds only what the connection uses while it lives (an idle HTTP/1.1 connection
/// costs its task, its socket registration and its `ConnInfo`: about 1.4 KiB).
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    shared: Arc<Shared>,
    guard: ConnGuard,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let initial = shared.path.table.load().listeners.get(&listener).cloned()?;
    let tls = initial.tls.clone();
    let http = shared.http.load_full();
    let info = Arc::new(ConnInfo {
        peer,
        client: std::sync::OnceLock::new(),
        listener,
        tls: tls.is_some(),
        initial,
        requests: AtomicU64::new(0),
    });
    let svc = EdgeService {
        shared,
        info,
        _guard: guard,
    };
    Some(async move {
        match tls {
            None => {
                let served = hopline_engine::h1::connection::serve(
                    stream,
                    &http.h1,
                    &svc,
                    &svc.shared.closing,
                )
                .await;
                if let hopline_engine::h1::connection::Outcome::Http2(io) = served {
                    // boxed: HTTP/2 state stays out of every HTTP/1.1 connection's task
                    Box::pin(serve_h2(io, &http, &svc)).await
                }
            }
            // boxed: TLS state lives only in TLS connections' tasks
            Some(cfg) => Box::pin(serve_tls(stream, cfg, &http, &svc)).await,
        }
    })
}

async fn serve_h2<I>(io: I, http: &Builders, svc: &EdgeService)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(io) = h2_preface(io, http.h1.header_timeout).await else {
        return;
    };
    // (extended CONNECT upgrades, RFC 8441, need no HTTP/1.1-style upgrade support)
    let conn = http.h2.serve_connection(
        TokioIo::new(io),
        hyper_service(svc.shared.clone(), svc.info.clone()),
    );
    if let Err(e) = until_closing(conn, &svc.shared.closing).await {
        let peer = svc.info.peer;
        tracing::debug!(target: "hopline::edge", "HTTP/2 connection from {peer}: {e}");
    }
}

/// The usual handshake: the certificate is chosen by SNI from what the listener has.
async fn plain_handshake(
    stream: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    http: &Builders,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    match tokio::time::timeout(http.h1.header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(target: "hopline::edge", "TLS handshake with {peer}: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(target: "hopline::edge", "TLS handshake with {peer} timed out");
            None
        }
    }
}

/// On-demand TLS: the ClientHello is read first; a name without a certificate waits
/// while one is obtained (or the handshake ends at once, saying why in the log).
async fn on_demand_handshake(
    stream: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    od: &dyn hopline_engine::tls::OnDemandTls,
    http: &Builders,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let lazy = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(http.h1.header_timeout, lazy).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(target: "hopline::edge", "TLS handshake with {peer}: {e}");
            return None;
        }
        Err(_) => {
            tracing::debug!(target: "hopline::edge", "TLS handshake with {peer} timed out");
            return None;
        }
    };
    let hello = start.client_hello();
    let challenge = hello
        .alpn()
        .is_some_and(|mut p| p.any(|p| p == hopline_engine::tls::ACME_TLS_ALPN));
    if let Some(name) = hello.server_name().map(str::to_ascii_lowercase)
        && !challenge
    {
        let waited = tokio::time::timeout(Duration::from_secs(60), od.ensure(&name)).await;
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                refusal_log(&name, peer, &why);
                return None;
            }
            Err(_) => {
                tracing::warn!(target: "hopline::acme", "on-demand TLS: no certificate for {name} within 60 s (handshake from {peer} refused)");
                return None;
            }
        }
    }
    match tokio::time::timeout(http.h1.header_timeout, start.into_stream(cfg)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(target: "hopline::edge", "TLS handshake with {peer}: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(target: "hopline::edge", "TLS handshake with {peer} timed out");
            None
        }
    }
}

/// A refused on-demand handshake, logged at most once a second (with how many were not):
/// anyone can open handshakes for names the ask endpoint denies, and must not be able to
/// fill the log with them. Every one is counted in the status's `on_demand.refused`.
fn refusal_log(name: &str, peer: SocketAddr, why: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static QUIET: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) == now {
        QUIET.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "hopline::acme", "on-demand TLS: no certificate for {name} (handshake from {peer} refused): {why}");
        return;
    }
    let quiet = QUIET.swap(0, Ordering::Relaxed);
    let more = if quiet > 0 {
        format!(" (and {quiet} more refusals in the last second, not logged)")
    } else {
        String::new()
    };
    tracing::warn!(target: "hopline::acme", "on-demand TLS: no certificate for {name} (handshake from {peer} refused): {why}{more}");
}

async fn serve_tls(
    stream: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    http: &Builders,
    svc: &EdgeService,
) {
    let peer = svc.info.peer;
    let tls_stream = match &svc.info.initial.on_demand {
        Some(od) => match on_demand_handshake(stream, cfg, od.as_ref(), http, peer).await {
            Some(s) => s,
            None => return,
        },
        None => match plain_handshake(stream, cfg, http, peer).await {
            Some(s) => s,
            None => return,
        },
    };
    let alpn = tls_stream.get_ref().1.alpn_protocol();
    if alpn == Some(hopline_engine::tls::ACME_TLS_ALPN) {
        // a CA's TLS-ALPN-01 validation: the handshake was the answer (RFC 8737 §3)
        return;
    }
    let h2 = alpn == Some(b"h2");
    if h2 {
        return serve_h2(tls_stream, http, svc).await;
    }
    match hopline_engine::h1::connection::serve(tls_stream, &http.h1, svc, &svc.shared.closing)
        .await
    {
        hopline_engine::h1::connection::Outcome::Closed => {}
        hopline_engine::h1::connection::Outcome::Http2(io) => {
            Box::pin(serve_h2(io, http, svc)).await
        }
    }
}
