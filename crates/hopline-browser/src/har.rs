//! HAR 1.2 (the format browser devtools import): the navigation's entries with their
//! timings, headers and sizes.

use serde_json::{Value, json};

use crate::timeline::Navigation;

/// ISO 8601 / RFC 3339 in UTC with microseconds, from microseconds since the epoch.
pub fn iso_us(unix_us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_us as i128 * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// Build a HAR 1.2 document of one navigation.
pub fn har(nav: &Navigation) -> Value {
    har_of(std::slice::from_ref(nav))
}

/// Build a HAR 1.2 document of several navigations (`--repeat`): one page each.
pub fn har_of(navs: &[Navigation]) -> Value {
    let mut pages = Vec::new();
    let mut entries = Vec::new();
    for (i, nav) in navs.iter().enumerate() {
        let id = format!("page_{}", i + 1);
        let (p, e) = page(nav, &id);
        pages.push(p);
        entries.extend(e);
    }
    json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "hopline", "version": env!("CARGO_PKG_VERSION")},
            "pages": pages,
            "entries": entries
        }
    })
}

fn page(nav: &Navigation, id: &str) -> (Value, Vec<Value>) {
    // each request's start: the navigation's wall clock plus its offset (µs precision)
    let iso = |offset_ms: f64| iso_us(nav.started_unix_us + (offset_ms * 1000.0).round() as i64);
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
            let mut entry = json!({
                "pageref": id,
                "startedDateTime": iso(e.start),
                "time": p.total(),
                "request": {
                    "method": e.method,
                    "url": e.url,
                    "httpVersion": har_version(&e.http_version),
                    "cookies": [],
                    "headers": headers(&e.request_headers),
                    "queryString": [],
                    "headersSize": -1,
                    "bodySize": 0
                },
                "response": {
                    "status": e.status,
                    "statusText": "",
                    "httpVersion": har_version(&e.http_version),
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
                "_kind": e.kind,
                "_serverTiming": e.server_timing,
                "_cacheStatus": e.cache_status
            });
            // optional fields are strings or absent in HAR 1.2, never null
            if let Some(ip) = e.server.as_deref().and_then(|s| {
                s.rsplit_once(':')
                    .map(|(ip, _)| ip.trim_matches(['[', ']']).to_string())
            }) {
                entry["serverIPAddress"] = json!(ip);
            }
            if let Some(c) = e.connection {
                entry["connection"] = json!(c.to_string());
            }
            entry
        })
        .collect();
    // a page whose document failed has no load event: -1 (HAR: "not applicable")
    let doc_ok = nav
        .entries
        .iter()
        .find(|e| e.kind == "document")
        .is_some_and(|d| d.error.is_none());
    let timing = |t: f64| if doc_ok { t } else { -1.0 };
    let page = json!({
        "startedDateTime": iso(0.0),
        "id": id,
        "title": nav.final_url,
        "pageTimings": {"onContentLoad": timing(nav.page.dom_content_loaded), "onLoad": timing(nav.page.load)}
    });
    (page, entries)
}

/// HAR's `httpVersion` as browsers write it (`h3` for HTTP/3).
fn har_version(v: &str) -> &str {
    match v {
        "" => "HTTP/1.1",
        "HTTP/3" => "h3",
        other => other,
    }
}
