//! The route-service seam: how a product (real-time channels, the notification service,
//! what comes after) answers a route through the edge — its listeners, TLS, HTTP/1.1 and
//! HTTP/2 engines, upgrades, limits, access log, metrics and reload — without the edge
//! depending on the product.
//!
//! A product implements [`RouteService`]; the `hopline` binary reads its config sections
//! (`[KIND.NAME]`), builds a service per section, and hands them to the edge in
//! [`Services`] under `(kind, name)`. A route `service = "KIND:NAME"` (or `KIND = "NAME"`)
//! is then answered by the service registered as `(KIND, NAME)`. The edge knows no product
//! by name: it lifts any section that is not its own out of the file, keeps the names (to
//! check the routes that name them), and refuses a file whose kinds no registered product
//! serves (see [`crate::config::ProductSections`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};

use hopline_engine::body::{Body, RequestBody};

/// A boxed, sendable future: what a service's `call` returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a service knows of the request's connection and route.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection is TLS.
    pub tls: bool,
    /// The route's path prefix (e.g. `/live/`): the service reads the rest of the path.
    pub prefix: Arc<str>,
    /// The listeners' send timeout (`[limits] send_timeout_ms`): a connection the service
    /// writes itself ([`take_over`], [`on_upgrade`]) ends when no write makes progress
    /// for this long, as the edge's own do.
    pub send_timeout: std::time::Duration,
}

/// A product served on a route. The future it returns must not borrow the service: a
/// long poll or a stream may outlive a reload that replaced it.
pub trait RouteService: Send + Sync + 'static {
    /// Answer one request. A streaming body (SSE) is a [`Body::stream`]; an upgrade
    /// (WebSocket) is taken with [`on_upgrade`] before answering 101.
    fn call(&self, req: Request<RequestBody>, ctx: ServiceContext) -> BoxFuture<Response<Body>>;

    /// The service's part of `/.hopline/status` (JSON).
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// The service's part of `/metrics` (Prometheus text, appended as is).
    fn metrics(&self, _out: &mut String) {}

    /// The server is shutting down: end long-lived connections politely (WebSocket
    /// close 1001, streams ended) so that draining can finish.
    fn shutdown(&self) {}
}

/// A route service as the admin side sees it: its status and metrics.
pub(crate) struct Reporter(pub(crate) Arc<dyn RouteService>);

impl hopline_admin::view::Report for Reporter {
    fn status(&self) -> serde_json::Value {
        self.0.status()
    }
    fn metrics(&self, out: &mut String) {
        self.0.metrics(out);
    }
}

impl std::fmt::Debug for dyn RouteService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteService")
    }
}

/// A product served on the edge's routes (real-time channels, notifications, …), kept
/// across reloads. The `hopline` binary registers one per kind and, at start and at each
/// reload, hands each the config file's text: the product reads its own sections
/// (`[KIND.NAME]`) and answers with a route service per section.
pub trait Product: Send + Sync + 'static {
    /// The kind its sections and routes are named by: `[KIND.NAME]`,
    /// `service = "KIND:NAME"`.
    fn kind(&self) -> &'static str;

    /// Check the file's sections of this kind without starting anything. A bad section is
    /// refused with the file, line and column.
    fn check(
        &self,
        text: &str,
        file: &std::path::Path,
    ) -> Result<(), hopline_engine::error::BoxError>;

    /// Read the file's sections of this kind and register a route service per section in
    /// `services`: a section as it was keeps its running part (its state, its clients), a
    /// changed one is applied to it, a new one is started, and one the file no longer
    /// has is shut down.
    fn apply(
        &self,
        text: &str,
        file: &std::path::Path,
        services: &mut Services,
    ) -> Result<(), hopline_engine::error::BoxError>;

    /// The server stops: shut every running part down.
    fn shutdown(&self);
}

/// The services a config's routes may name, by `(kind, name)`, e.g. `("realtime", "live")`.
#[derive(Debug, Clone, Default)]
pub struct Services {
    map: BTreeMap<(String, String), Arc<dyn RouteService>>,
    /// Kinds the program serves, with or without a section in this file.
    declared: std::collections::BTreeSet<String>,
}

impl Services {
    /// No services.
    pub fn new() -> Services {
        Services::default()
    }

    /// Register `service` as `kind`/`name` (replaces an earlier one).
    pub fn insert(&mut self, kind: &str, name: &str, service: Arc<dyn RouteService>) {
        self.map
            .insert((kind.to_string(), name.to_string()), service);
    }

    /// The service registered as `kind`/`name`.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Arc<dyn RouteService>> {
        self.map.get(&(kind.to_string(), name.to_string()))
    }

    /// Say that this program serves `kind` sections, even when the file has none.
    pub fn declare(&mut self, kind: &str) {
        self.declared.insert(kind.to_string());
    }

    /// The kinds of product this program serves (each once, sorted).
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self
            .map
            .keys()
            .map(|(k, _)| k.as_str())
            .chain(self.declared.iter().map(String::as_str))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }

    /// Every service with its kind and name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Arc<dyn RouteService>)> {
        self.map
            .iter()
            .map(|((k, n), s)| (k.as_str(), n.as_str(), s))
    }
}

/// A duplex byte stream: the raw connection after an upgrade.
pub trait UpgradedIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {
    /// The plain TCP socket underneath, when nothing (TLS, HTTP/2) sits between it and
    /// the service: a writer may then use the socket's non-blocking `try_write`, the
    /// cheapest write there is (what a publisher writing to thousands of subscriber
    /// sockets in a row wants).
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
}

impl UpgradedIo for hopline_engine::h1::upgrade::Upgraded {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        hopline_engine::h1::upgrade::Rewind::tcp(self)
    }
}

impl UpgradedIo for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}

/// An in-memory pipe (tests, or a service driven from inside the process).
impl UpgradedIo for tokio::io::DuplexStream {}

/// The raw connection of a request that is being upgraded, once its 101 (HTTP/1.1) or
/// 200 to an extended CONNECT (HTTP/2, RFC 8441) has been sent.
pub type Upgraded = Box<dyn UpgradedIo>;

/// Take the upgrade handle of a request: HTTP/1.1 `Upgrade` (hopline's own engine) or an
/// HTTP/2 extended CONNECT (hyper). Resolves to the raw stream once the service's
/// 101 / 200 answer went out; `None` when the request cannot be upgraded.
pub fn on_upgrade(req: &mut Request<RequestBody>) -> Option<BoxFuture<std::io::Result<Upgraded>>> {
    if let Some(h1) = hopline_engine::h1::upgrade::on_upgrade(req) {
        return Some(Box::pin(async move {
            let io = h1.await?;
            Ok(Box::new(io) as Upgraded)
        }));
    }
    if req.version() == http::Version::HTTP_2 && req.method() == http::Method::CONNECT {
        let on = hyper::upgrade::on(req);
        return Some(Box::pin(async move {
            let up = on.await.map_err(std::io::Error::other)?;
            Ok(Box::new(hyper_util::rt::TokioIo::new(up)) as Upgraded)
        }));
    }
    None
}

/// Ask for the raw connection once `resp`'s head has gone out, to write its body
/// straight to the socket (hopline's HTTP/1.1 engine only; the head is sent with
/// `Transfer-Encoding: chunked` and `Connection: close`, so the taker writes chunks and
/// ends with the last chunk). Where the engine does not hand connections over (HTTP/2,
/// HTTP/1.0, HEAD) the response's own body is sent as usual and the future resolves to an
/// error: build the response so that it works both ways.
pub fn take_over<B>(resp: &mut Response<B>) -> BoxFuture<std::io::Result<Upgraded>> {
    let h1 = hopline_engine::h1::upgrade::take_over(resp);
    Box::pin(async move {
        let io = h1.await?;
        Ok(Box::new(io) as Upgraded)
    })
}

/// The `:protocol` of an HTTP/2 extended CONNECT (RFC 8441), e.g. `websocket`.
pub fn connect_protocol<B>(req: &Request<B>) -> Option<&str> {
    req.extensions()
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str())
}
