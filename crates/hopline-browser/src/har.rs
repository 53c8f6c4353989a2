//! HAR 1.2 (the format browser devtools import): the navigation's entries with their
//! timings, headers and sizes.

use serde_json::{Value, json};

use crate::timeline::Navigation;

/// Build a HAR 1.2 document.
pub fn har(nav: &Navigation) -> Value {
    let started = time::OffsetDateTime::now_utc();
    let iso = |offset_ms: f64| {
        let t = started - time::Duration::milliseconds((nav.page.load - offset_ms).max(0.0) as i64);
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let headers = |h: &[(String, String)]| {
        h.iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect::<Vec<_>>()
    };
    let entries: Vec<Value> = nav
        .entries
        .iter()
        .map(|e| {
            let p = &e.phases;
            let opt = |v: Option<f64>| v.unwrap_or(-1.0);
            json!({
                "pageref": "page_1",
                "startedDateTime": iso(e.start),
                "time": p.total(),
                "request": {
                    "method": e.method,
                    "url": e.url,
                    "httpVersion": if e.http_version.is_empty() { "HTTP/1.1" } else { &e.http_version },
                    "cookies": [],
                    "headers": headers(&e.request_headers),
                    "queryString": [],
                    "headersSize": -1,
                    "bodySize": 0
                },
                "response": {
                    "status": e.status,
                    "statusText": "",
                    "httpVersion": if e.http_version.is_empty() { "HTTP/1.1" } else { &e.http_version },
                    "cookies": [],
                    "headers": headers(&e.response_headers),
                    "content": {
                        "size": e.body_bytes,
                        "mimeType": e.content_type.clone().unwrap_or_else(|| "x-unknown".into())
                    },
                    "redirectURL": e.redirect_to.clone().unwrap_or_default(),
                    "headersSize": -1,
                    "bodySize": e.transfer_bytes,
                    "_error": e.error
                },
                "cache": {},
                "timings": {
                    "blocked": p.blocked,
                    "dns": opt(p.dns),
                    "connect": opt(p.connect.map(|c| c + p.tls.unwrap_or(0.0))),
                    "ssl": opt(p.tls),
                    "send": p.send,
                    "wait": p.wait,
                    "receive": p.receive
                },
                "serverIPAddress": e.server.as_deref().and_then(|s| s.rsplit_once(':').map(|(ip, _)| ip.trim_matches(['[', ']']).to_string())),
                "connection": e.connection.map(|c| c.to_string()),
                "_kind": e.kind,
                "_serverTiming": e.server_timing,
                "_cacheStatus": e.cache_status
            })
        })
        .collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "hopline", "version": env!("CARGO_PKG_VERSION")},
            "pages": [{
                "startedDateTime": iso(0.0),
                "id": "page_1",
                "title": nav.final_url,
                "pageTimings": {"onContentLoad": nav.page.dom_content_loaded, "onLoad": nav.page.load}
            }],
            "entries": entries
        }
    })
}
