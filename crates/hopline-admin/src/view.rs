//! What the admin side reads of a running edge: the [`AdminView`] a server implements,
//! the [`Snapshot`] of the configuration in force the request path fills for it, and the
//! boxes from outside the edge (DNS) the dashboard shows.

use crate::counters::{Metrics, SiteStats, TraceHop};
use hopline_acme::manager::Managed;
use hopline_acme::on_demand::OnDemand;
use hopline_cache::store::HttpCache;
use hopline_limits::limiter::Limiter;
use hopline_proxy::pool::UpstreamPool;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the admin side shows of the configuration in force: the parts a request path
/// compiled (pools, caches, limits, certificates, services) and how its sites use them.
/// The request path makes one at start and at every reload; the admin side reads nothing
/// else of it, so counters and parts flow up and nothing reaches back down.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every site, in config order.
    pub sites: Vec<SiteView>,
    /// Upstream pools by name.
    pub upstreams: BTreeMap<String, Arc<UpstreamPool>>,
    /// Caches by name.
    pub caches: BTreeMap<String, Arc<HttpCache>>,
    /// Route services (products' sections), in registration order.
    pub services: Vec<ServiceView>,
    /// Certificates obtained by ACME, by `SECTION:name,name`.
    pub certificates: BTreeMap<String, Arc<Managed>>,
    /// On-demand certificates, by `SECTION:patterns`.
    pub on_demand: BTreeMap<String, Arc<OnDemand>>,
    /// The admin listener's token, if any.
    pub admin_token: Option<String>,
}

/// A site as the admin side shows it.
#[derive(Debug)]
pub struct SiteView {
    /// Its name.
    pub name: Arc<str>,
    /// Where it listens (as configured).
    pub listen: Vec<SocketAddr>,
    /// It speaks HTTPS.
    pub tls: bool,
    /// Its requests, errors and latency.
    pub stats: Arc<SiteStats>,
    /// The key in [`Snapshot::certificates`] of the certificate it serves, when ACME
    /// obtains it.
    pub certificate: Option<String>,
    /// Its routes, longest prefix first.
    pub routes: Vec<RouteView>,
}

/// A route as the admin side shows it.
#[derive(Debug)]
pub struct RouteView {
    /// What answers it.
    pub answer: RouteAnswer,
    /// The cache in front of it.
    pub cache: Option<Arc<HttpCache>>,
    /// Its rate limit.
    pub limit: Option<Arc<Limiter>>,
}

/// What answers a route, as far as the dashboard draws it.
#[derive(Debug)]
pub enum RouteAnswer {
    /// An upstream pool.
    Proxy(Arc<UpstreamPool>),
    /// A product's service `KIND:NAME`.
    Service {
        /// The product kind, e.g. `realtime`.
        kind: Arc<str>,
        /// The section's name.
        name: String,
    },
    /// Files, a redirect or a fixed response.
    Local,
}

/// What a product's service reports on the admin side.
pub trait Report: Send + Sync {
    /// Its part of `/.hopline/status` (a JSON object).
    fn status(&self) -> serde_json::Value;
    /// Its lines of `/metrics` (Prometheus text), appended to `out`.
    fn metrics(&self, out: &mut String);
}

/// A product's service, named as routes name it.
#[derive(Clone)]
pub struct ServiceView {
    /// The product kind, e.g. `realtime`.
    pub kind: String,
    /// The section's name.
    pub name: String,
    /// Its status and metrics.
    pub report: Arc<dyn Report>,
}

impl std::fmt::Debug for ServiceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceView({}:{})", self.kind, self.name)
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
    /// What the configuration in force shows.
    fn snapshot(&self) -> Arc<Snapshot>;
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
    fn streams(&self) -> Vec<hopline_proxy::layer4::StreamInfo>;
}
