//! A hub's counters, and how the admin listener shows them: `/.hopline/status` (JSON)
//! and `/metrics` (Prometheus text).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for `/metrics` and the status page.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub ws_open: AtomicU64,
    /// Open SSE streams.
    pub sse_open: AtomicU64,
    /// Long polls held now.
    pub long_polls_held: AtomicU64,
    /// Short polls answered.
    pub polls: AtomicU64,
    /// Long polls answered.
    pub long_polls: AtomicU64,
    /// Publications accepted.
    pub publications: AtomicU64,
    /// Events delivered to subscribers (every transport).
    pub deliveries: AtomicU64,
    /// Of those, WebSocket deliveries written by the publisher itself (the fast path:
    /// the subscriber's task was not woken).
    pub deliveries_direct: AtomicU64,
    /// Reads that could not recover (position lost): the subscriber was told.
    pub drops: AtomicU64,
    /// Subscribers cut because they fell behind (slow consumers).
    pub slow_consumers: AtomicU64,
    /// WebSocket connections closed for a protocol violation.
    pub ws_violations: AtomicU64,
    /// Channels of this node let go because they were deleted (here or, with the shared
    /// engine, on another node); their subscribers were told.
    pub channels_deleted: AtomicU64,
    /// App hooks that allowed (or rewrote).
    pub hooks_allowed: AtomicU64,
    /// App hooks that denied.
    pub hooks_denied: AtomicU64,
    /// App hooks that failed (timeout, refused, 5xx, not JSON): `on_error` decided.
    pub hooks_failed: AtomicU64,
}

/// What the hub says of itself beside its counters.
#[derive(Debug, Clone)]
pub struct HubState {
    /// The hub's name.
    pub name: String,
    /// Its engine as configured (`memory` or a Redis URL).
    pub engine: String,
    /// Whether the engine answers.
    pub engine_up: bool,
    /// Channels on this node.
    pub channels: usize,
}

/// The hub's part of the status JSON.
pub fn status(hub: &HubState, m: &Metrics) -> serde_json::Value {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    serde_json::json!({
        "kind": "realtime",
        "engine": hub.engine,
        "engine_up": hub.engine_up,
        "channels": hub.channels,
        "connections": {
            "websocket": n(&m.ws_open),
            "sse": n(&m.sse_open),
            "long_poll": n(&m.long_polls_held),
        },
        "polls": n(&m.polls),
        "long_polls": n(&m.long_polls),
        "publications": n(&m.publications),
        "deliveries": n(&m.deliveries),
        "deliveries_direct": n(&m.deliveries_direct),
        "drops": n(&m.drops),
        "slow_consumers_cut": n(&m.slow_consumers),
        "websocket_violations": n(&m.ws_violations),
        "channels_deleted": n(&m.channels_deleted),
        "hooks": {
            "allowed": n(&m.hooks_allowed),
            "denied": n(&m.hooks_denied),
            "failed": n(&m.hooks_failed),
        },
    })
}

/// The hub's Prometheus lines.
pub fn prometheus(hub: &HubState, m: &Metrics, out: &mut String) {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let h = hub.name.replace('"', "'");
    out.push_str("# HELP hopline_realtime_connections Subscribers connected now, per transport.\n# TYPE hopline_realtime_connections gauge\n");
    for (t, v) in [
        ("websocket", n(&m.ws_open)),
        ("sse", n(&m.sse_open)),
        ("long_poll", n(&m.long_polls_held)),
    ] {
        let _ = writeln!(
            out,
            "hopline_realtime_connections{{hub=\"{h}\",transport=\"{t}\"}} {v}"
        );
    }
    for (name, help, v) in [
        ("polls_total", "Short polls answered.", n(&m.polls)),
        ("long_polls_total", "Long polls answered.", n(&m.long_polls)),
        (
            "publications_total",
            "Publications accepted.",
            n(&m.publications),
        ),
        (
            "deliveries_total",
            "Events delivered to subscribers.",
            n(&m.deliveries),
        ),
        (
            "deliveries_direct_total",
            "WebSocket deliveries written by the publisher (the subscriber's task not woken).",
            n(&m.deliveries_direct),
        ),
        (
            "drops_total",
            "Reads whose position could not be recovered (the subscriber was told).",
            n(&m.drops),
        ),
        (
            "slow_consumers_total",
            "Subscribers cut for falling behind.",
            n(&m.slow_consumers),
        ),
        (
            "websocket_violations_total",
            "WebSocket connections closed for a protocol violation.",
            n(&m.ws_violations),
        ),
        (
            "channels_deleted_total",
            "Channels let go because they were deleted (their subscribers told).",
            n(&m.channels_deleted),
        ),
        (
            "hooks_allowed_total",
            "App hook answers that allowed (or rewrote).",
            n(&m.hooks_allowed),
        ),
        (
            "hooks_denied_total",
            "App hook answers that denied.",
            n(&m.hooks_denied),
        ),
        (
            "hooks_failed_total",
            "App hooks that failed (timeout, refused, 5xx, not JSON); on_error decided.",
            n(&m.hooks_failed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP hopline_realtime_{name} {help}\n# TYPE hopline_realtime_{name} counter"
        );
        let _ = writeln!(out, "hopline_realtime_{name}{{hub=\"{h}\"}} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP hopline_realtime_engine_up Whether the hub's engine answers (1).\n# TYPE hopline_realtime_engine_up gauge"
    );
    let _ = writeln!(
        out,
        "hopline_realtime_engine_up{{hub=\"{h}\"}} {}",
        u8::from(hub.engine_up)
    );
}
