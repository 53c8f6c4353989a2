//! What the admin side reads of a running edge: the [`AdminView`] a server implements,
//! and the boxes from outside the edge (DNS) the dashboard shows.

use crate::admin::counters::Metrics;
use crate::admin::counters::TraceHop;
use crate::request::router::Table;
use std::sync::Arc;

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
