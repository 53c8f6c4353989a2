//! A hub's counters as the admin listener shows them: `/.hopline/status` (JSON) and
//! `/metrics` (Prometheus text).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::hub::Hub;

/// The hub's part of the status JSON.
pub fn status(hub: &Hub) -> serde_json::Value {
    let m = &hub.metrics;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let channels = hub.channels();
    serde_json::json!({
        "kind": "realtime",
        "engine": hub.settings().config.engine,
        "engine_up": hub.engine_up(),
        "channels": channels.len(),
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
    })
}

/// The hub's Prometheus lines.
pub fn prometheus(hub: &Hub, out: &mut String) {
    let m = &hub.metrics;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
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
        u8::from(hub.engine_up())
    );
}
