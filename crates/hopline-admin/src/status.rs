//! `GET /.hopline/status`: every site, pool and server as JSON (up/down, in flight,
//! requests, errors, EWMA latency, effective weight), caches and listeners.

use crate::view::AdminView;
use std::sync::atomic::{AtomicU64, Ordering};

/// The JSON of `/.hopline/status`.
pub fn status_json(view: &dyn AdminView) -> serde_json::Value {
    let table = view.snapshot();
    let mut pools = serde_json::Map::new();
    for (name, up) in &table.upstreams {
        let members = up.members();
        let servers = members.pool.snapshot();
        pools.insert(
            name.clone(),
            serde_json::json!({
                "balance": up.algorithm,
                // no server is eligible: requests go to all of them anyway
                "panic": members.pool.panicking(),
                "panic_picks": members.pool.panic_picks(),
                "servers": servers,
            }),
        );
    }
    let m = view.metrics();
    serde_json::json!({
        "server": "hopline",
        "version": env!("CARGO_PKG_VERSION"),
        "connections": {
            "open": view.open_connections(),
            "accepted": m.connections_accepted.load(Ordering::Relaxed),
            "refused": m.connections_refused.load(Ordering::Relaxed),
        },
        "responses": {
            "1xx": m.responses[1].load(Ordering::Relaxed),
            "2xx": m.responses[2].load(Ordering::Relaxed),
            "3xx": m.responses[3].load(Ordering::Relaxed),
            "4xx": m.responses[4].load(Ordering::Relaxed),
            "5xx": m.responses[5].load(Ordering::Relaxed),
        },
        "upstreams": pools,
        "caches": table.caches.iter().map(|(name, c)| (name.clone(), cache_json(c))).collect::<serde_json::Map<_, _>>(),
        "services": table.services.iter().map(|s| (format!("{}.{}", s.kind, s.name), s.report.status())).collect::<serde_json::Map<_, _>>(),
        "certificates": certificates(&table),
        "on_demand": table.on_demand.iter().map(|(key, od)| {
            let (asked, refused) = od.counters();
            (key.clone(), serde_json::json!({"asked": asked, "refused": refused, "held": od.statuses().len()}))
        }).collect::<serde_json::Map<_, _>>(),
    })
}

/// Every certificate obtained by ACME (for sites, and on demand), by `SECTION:names`.
fn certificates(table: &crate::view::Snapshot) -> serde_json::Map<String, serde_json::Value> {
    let mut out: serde_json::Map<String, serde_json::Value> = table
        .certificates
        .iter()
        .map(|(key, m)| {
            (
                key.clone(),
                serde_json::to_value(m.status()).unwrap_or_default(),
            )
        })
        .collect();
    for od in table.on_demand.values() {
        for st in od.statuses() {
            out.insert(
                format!("{}:{}", st.acme, st.names.join(",")),
                serde_json::to_value(st).unwrap_or_default(),
            );
        }
    }
    out
}

pub fn cache_json(c: &hopline_cache::store::HttpCache) -> serde_json::Value {
    let st = &c.stats;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    serde_json::json!({
        "entries": c.entries(),
        "hits": n(&st.hits),
        "misses": n(&st.misses),
        "stale": n(&st.stale),
        "revalidated": n(&st.revalidated),
        "stored": n(&st.stored),
        "coalesced": n(&st.coalesced),
        "disk_hits": n(&st.disk_hits),
        "disk_corrupt": n(&st.disk_corrupt),
        "purged": n(&st.purged),
        "shared_purge": c.broadcast_status(),
    })
}
