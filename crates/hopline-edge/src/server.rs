//! The running edge: start, reload and stop. It binds the listeners and runs their accept
//! loops (with a connection limit), the TLS handshake, and hands each connection to the
//! engine — HTTP/1.1, or HTTP/2 by ALPN or h2c prior knowledge, or HTTP/3 on the UDP side
//! of a TLS listener ([`http3`]) — with the request path ([`crate::request::phases`]) as
//! its service. A reload swaps the compiled table whole and adds or removes listeners;
//! shutdown is graceful.

mod http3;
mod state;

use state::{Builders, ConnGuard, EdgeService, Shared, builders};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::Config;
use crate::error::EdgeError;
use crate::request::files::FileCache;
use crate::request::phases::{ConnInfo, PathState};
use crate::request::router::{self, FastMap, Table};
use hopline_engine::access_log::AccessLog;
use hopline_engine::body::{Body, RequestBody};
use hopline_engine::h2::{h2_preface, until_closing};

/// A stream listener's socket.
enum Either {
    Tcp(TcpListener),
    Udp(tokio::net::UdpSocket),
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
    /// The QUIC endpoints of listeners with HTTP/3 sites, by configured address.
    h3: parking_lot::Mutex<HashMap<SocketAddr, http3::H3Listener>>,
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
            h3: parking_lot::Mutex::new(HashMap::new()),
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
        server.sync_h3()?;
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
        self.sync_h3()
    }

    /// Open, update or close the QUIC endpoints of the TLS listeners with HTTP/3 sites,
    /// and give those listeners the `Alt-Svc` their HTTP/3 sites advertise.
    fn sync_h3(&self) -> Result<(), EdgeError> {
        let table = self.shared.path.table.load();
        let listeners = self.listeners.lock();
        let mut h3 = self.h3.lock();
        let wanted = |configured: &SocketAddr| {
            table
                .listeners
                .get(configured)
                .filter(|lt| lt.http3)
                .and_then(|lt| lt.tls.as_ref().map(|tls| (lt, tls)))
        };
        h3.retain(|configured, l| {
            let keep = listeners.contains_key(configured) && wanted(configured).is_some();
            if !keep {
                tracing::info!(target: "hopline::edge", "stopped listening on udp {} (HTTP/3)", l.bound);
                l.stop();
            }
            keep
        });
        for (configured, handle) in listeners.iter() {
            let Some((lt, tls)) = wanted(configured) else {
                continue;
            };
            let l = match h3.entry(*configured) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    e.get().update(&self.shared, tls)?;
                    e.into_mut()
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    let open = self
                        .shared
                        .listeners
                        .lock()
                        .get(configured)
                        .map(|(_, open)| open.clone())
                        .unwrap_or_default();
                    e.insert(http3::H3Listener::start(
                        &self.shared,
                        *configured,
                        handle.bound,
                        tls,
                        open,
                    )?)
                }
            };
            let _ = lt.alt_svc.set(l.alt_svc());
        }
        Ok(())
    }

    /// The UDP addresses HTTP/3 is served on, by configured listen address.
    pub fn h3_addrs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let mut v: Vec<_> = self.h3.lock().iter().map(|(c, l)| (*c, l.bound)).collect();
        v.sort();
        v
    }

    /// Stop accepting, let in-flight requests finish (up to `timeout`), then return.
    pub async fn shutdown(self, timeout: Duration) -> Shutdown {
        let mut handles: Vec<ListenerHandle> =
            self.listeners.lock().drain().map(|(_, h)| h).collect();
        handles.extend(self.streams.lock().drain(..));
        if let Some((_, admin)) = self.admin.lock().take() {
            handles.push(admin);
        }
        for (_, l) in self.h3.lock().drain() {
            l.stop();
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
        let Some(guard) = ConnGuard::admit(&shared, &open) else {
            tracing::debug!(target: "hopline::edge", "connection limit reached: closing {peer}");
            drop(stream);
            continue;
        };
        // TCP_NODELAY comes from the listening socket (see `bind`)
        debug_assert!(stream.nodelay().unwrap_or(true));
        // spawned directly: wrapping it in another async block would store it twice
        if let Some(conn) = connection(stream, peer, configured, shared.clone(), guard) {
            tokio::spawn(conn);
        }
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
            // boxed: hyper spawns a task per HTTP/2 stream holding this future, and a
            // task's future is moved on spawn — a pointer moves faster than the whole
            // request path's state (it showed as ~5% of a DoH request's CPU in memcpy)
            let mut resp = Box::pin(crate::request::phases::handle(
                &shared.path,
                &info,
                req.map(RequestBody::Hyper),
                interim.as_ref(),
            ))
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
