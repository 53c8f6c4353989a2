//! `GET /metrics`: the same counters in Prometheus text format.

use crate::status::cache_json;
use crate::view::AdminView;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// Prometheus text exposition of the same.
pub fn metrics_text(view: &dyn AdminView) -> String {
    let m = view.metrics();
    let mut out = String::new();
    out.push_str("# HELP hopline_connections_open Client connections open now.\n# TYPE hopline_connections_open gauge\n");
    let _ = writeln!(out, "hopline_connections_open {}", view.open_connections());
    out.push_str("# HELP hopline_connections_total Client connections accepted.\n# TYPE hopline_connections_total counter\n");
    let _ = writeln!(
        out,
        "hopline_connections_total {}",
        m.connections_accepted.load(Ordering::Relaxed)
    );
    out.push_str("# HELP hopline_connections_refused_total Connections closed at the connection limit.\n# TYPE hopline_connections_refused_total counter\n");
    let _ = writeln!(
        out,
        "hopline_connections_refused_total {}",
        m.connections_refused.load(Ordering::Relaxed)
    );
    out.push_str("# HELP hopline_requests_protocol_total Requests by protocol.\n# TYPE hopline_requests_protocol_total counter\n");
    for (i, p) in crate::counters::PROTOCOLS.iter().enumerate() {
        let _ = writeln!(
            out,
            "hopline_requests_protocol_total{{protocol=\"{p}\"}} {}",
            m.requests_by_protocol[i].load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP hopline_quic_retries_total QUIC connection attempts sent a Retry to prove their address.\n# TYPE hopline_quic_retries_total counter\n");
    let _ = writeln!(
        out,
        "hopline_quic_retries_total {}",
        m.quic_retries.load(Ordering::Relaxed)
    );
    out.push_str("# HELP hopline_responses_total Responses by status class.\n# TYPE hopline_responses_total counter\n");
    for class in 1..=5 {
        let _ = writeln!(
            out,
            "hopline_responses_total{{class=\"{class}xx\"}} {}",
            m.responses[class].load(Ordering::Relaxed)
        );
    }
    let table = view.snapshot();
    let mut lines = [
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ];
    out.push_str("# HELP hopline_upstream_panic Whether no server of a pool is eligible, so requests go to all of them anyway (1).\n# TYPE hopline_upstream_panic gauge\n");
    for (name, up) in &table.upstreams {
        let _ = writeln!(
            out,
            "hopline_upstream_panic{{upstream=\"{name}\"}} {}",
            u8::from(up.members().pool.panicking())
        );
    }
    out.push_str("# HELP hopline_upstream_panic_picks_total Picks made while no server of the pool was eligible.\n# TYPE hopline_upstream_panic_picks_total counter\n");
    for (name, up) in &table.upstreams {
        let _ = writeln!(
            out,
            "hopline_upstream_panic_picks_total{{upstream=\"{name}\"}} {}",
            up.members().pool.panic_picks()
        );
    }
    out.push_str("# HELP hopline_upstream_up Whether a server takes traffic (1) or is ejected (0).\n# TYPE hopline_upstream_up gauge\n");
    for (name, up) in &table.upstreams {
        for s in up.members().pool.snapshot() {
            let v = serde_json::to_value(&s).unwrap_or_default();
            let id = v["id"].as_str().unwrap_or("?").replace('"', "'");
            let labels = format!("upstream=\"{name}\",server=\"{id}\"");
            let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "hopline_upstream_up{{{labels}}} {}",
                if v["up"].as_bool().unwrap_or(false) {
                    1
                } else {
                    0
                }
            );
            let _ = writeln!(
                lines[0],
                "hopline_upstream_in_flight{{{labels}}} {}",
                num("in_flight")
            );
            let _ = writeln!(
                lines[1],
                "hopline_upstream_requests_total{{{labels}}} {}",
                num("requests")
            );
            let _ = writeln!(
                lines[2],
                "hopline_upstream_errors_total{{{labels}}} {}",
                num("errors")
            );
            let _ = writeln!(
                lines[3],
                "hopline_upstream_latency_ewma_ms{{{labels}}} {}",
                num("ewma_ms")
            );
            let _ = writeln!(
                lines[4],
                "hopline_upstream_effective_weight{{{labels}}} {}",
                num("effective_weight")
            );
        }
    }
    let heads = [
        (
            "hopline_upstream_in_flight",
            "gauge",
            "Requests in flight to a server.",
        ),
        (
            "hopline_upstream_requests_total",
            "counter",
            "Requests sent to a server.",
        ),
        (
            "hopline_upstream_errors_total",
            "counter",
            "Connect errors, timeouts and 5xx of a server.",
        ),
        (
            "hopline_upstream_latency_ewma_ms",
            "gauge",
            "Decaying average response time of a server.",
        ),
        (
            "hopline_upstream_effective_weight",
            "gauge",
            "Current effective weight of a server.",
        ),
    ];
    for (i, (name, kind, help)) in heads.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        out.push_str(&lines[i]);
    }
    out.push_str("# HELP hopline_cache_events_total Cache lookups and what came of them.\n# TYPE hopline_cache_events_total counter\n");
    for (name, c) in &table.caches {
        let v = cache_json(c);
        for ev in [
            "hits",
            "misses",
            "stale",
            "revalidated",
            "stored",
            "coalesced",
            "disk_hits",
            "disk_corrupt",
            "purged",
        ] {
            let _ = writeln!(
                out,
                "hopline_cache_events_total{{cache=\"{name}\",event=\"{ev}\"}} {}",
                v[ev]
            );
        }
    }
    out.push_str("# HELP hopline_cache_entries Keys in a cache's memory tier.\n# TYPE hopline_cache_entries gauge\n");
    for (name, c) in &table.caches {
        let _ = writeln!(
            out,
            "hopline_cache_entries{{cache=\"{name}\"}} {}",
            c.entries()
        );
    }
    if !table.certificates.is_empty() {
        out.push_str("# HELP hopline_certificate_expiry_seconds When a certificate obtained by ACME expires (Unix time; 0: none yet).\n# TYPE hopline_certificate_expiry_seconds gauge\n");
        for m in table.certificates.values() {
            let st = m.status();
            let _ = writeln!(
                out,
                "hopline_certificate_expiry_seconds{{acme=\"{}\",name=\"{}\"}} {}",
                st.acme,
                st.names.first().map(String::as_str).unwrap_or(""),
                st.not_after.unwrap_or(0)
            );
        }
        out.push_str("# HELP hopline_certificate_orders_total Certificates obtained by ACME orders (first ones and renewals).\n# TYPE hopline_certificate_orders_total counter\n");
        for m in table.certificates.values() {
            let st = m.status();
            let _ = writeln!(
                out,
                "hopline_certificate_orders_total{{acme=\"{}\",name=\"{}\"}} {}",
                st.acme,
                st.names.first().map(String::as_str).unwrap_or(""),
                st.orders
            );
        }
        out.push_str("# HELP hopline_certificate_failing Whether the last ACME attempt for a certificate failed (1).\n# TYPE hopline_certificate_failing gauge\n");
        for m in table.certificates.values() {
            let st = m.status();
            let _ = writeln!(
                out,
                "hopline_certificate_failing{{acme=\"{}\",name=\"{}\"}} {}",
                st.acme,
                st.names.first().map(String::as_str).unwrap_or(""),
                u8::from(st.last_error.is_some())
            );
        }
    }
    for service in &table.services {
        service.report.metrics(&mut out);
    }
    out
}
