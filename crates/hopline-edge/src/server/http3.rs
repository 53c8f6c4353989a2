//! The HTTP/3 side of a TLS listener: a QUIC endpoint on the UDP port of the same number
//! and address, its accept loop (the connection limit, a Retry under handshake
//! pressure), and the request path as the engine's HTTP/3 service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use http::{HeaderValue, Request, Response};
use tokio::sync::watch;

use super::state::{ConnGuard, EdgeService, Shared};
use crate::error::EdgeError;
use crate::request::phases::ConnInfo;
use hopline_engine::body::{Body, RequestBody};
use hopline_engine::h3::{H3Service, Handshakes};

impl H3Service for EdgeService {
    fn call(
        &self,
        req: Request<RequestBody>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        crate::request::phases::handle(&self.shared.path, &self.info, req, None)
    }
}

/// A listener's QUIC endpoint and its accept loop.
pub(super) struct H3Listener {
    endpoint: quinn::Endpoint,
    /// The UDP address it is bound to.
    pub(super) bound: SocketAddr,
    stop: watch::Sender<bool>,
}

impl H3Listener {
    /// Serve HTTP/3 for the listener `configured` on UDP `addr` (the TCP listener's bound
    /// address: same IP, same port number) with its TLS configuration.
    pub(super) fn start(
        shared: &Arc<Shared>,
        configured: SocketAddr,
        addr: SocketAddr,
        tls: &rustls::ServerConfig,
        open: Arc<AtomicUsize>,
    ) -> Result<H3Listener, EdgeError> {
        let settings = shared.http.load().h3.clone();
        let config = hopline_engine::h3::server_config(tls, &settings)?;
        let endpoint = hopline_engine::h3::endpoint(addr, config).map_err(|e| EdgeError::Bind {
            addr,
            role: "HTTP/3 over UDP, beside the TCP listener of the same port".into(),
            reason: e,
        })?;
        let bound = endpoint.local_addr().unwrap_or(addr);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(accept_loop(
            endpoint.clone(),
            configured,
            shared.clone(),
            open,
            stop_rx,
        ));
        tracing::info!(target: "hopline::edge", "listening on udp {bound} (HTTP/3)");
        Ok(H3Listener {
            endpoint,
            bound,
            stop,
        })
    }

    /// Take new certificates and settings (a reload); connections open keep theirs.
    pub(super) fn update(
        &self,
        shared: &Shared,
        tls: &rustls::ServerConfig,
    ) -> Result<(), EdgeError> {
        let settings = shared.http.load().h3.clone();
        let config = hopline_engine::h3::server_config(tls, &settings)?;
        self.endpoint.set_server_config(Some(config));
        Ok(())
    }

    /// Stop taking connections; those open finish (they close at shutdown with GOAWAY).
    pub(super) fn stop(&self) {
        self.endpoint.set_server_config(None);
        let _ = self.stop.send(true);
    }

    /// `Alt-Svc` for responses over TCP on this listener.
    pub(super) fn alt_svc(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", self.bound.port())).expect("digits")
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    configured: SocketAddr,
    shared: Arc<Shared>,
    open: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Handshakes::default());
    loop {
        let incoming = tokio::select! {
            biased;
            _ = stop.changed() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let settings = shared.http.load().h3.clone();
        let Some(incoming) = hopline_engine::h3::admit(incoming, &handshakes, &settings) else {
            shared
                .path
                .metrics
                .quic_retries
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(initial) = shared.path.table.load().listeners.get(&configured).cloned() else {
            incoming.refuse();
            continue;
        };
        let Some(guard) = ConnGuard::admit(&shared, &open) else {
            incoming.refuse();
            continue;
        };
        let info = Arc::new(ConnInfo {
            peer: incoming.remote_address(),
            client: std::sync::OnceLock::new(),
            listener: configured,
            tls: true,
            initial,
            requests: AtomicU64::new(0),
        });
        let svc = Arc::new(EdgeService {
            shared: shared.clone(),
            info,
            _guard: guard,
        });
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            let closing = &svc.shared.closing;
            hopline_engine::h3::serve(incoming, handshakes, svc.clone(), &settings, closing).await;
        });
    }
}
