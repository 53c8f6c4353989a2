//! The admin listener: `GET /.hopline/status` (JSON: every pool and server — up/down,
//! in-flight, requests, errors, EWMA latency, effective weight) and `GET /metrics`
//! (Prometheus text). Kept off the public listeners.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::prometheus::metrics_text;
use crate::status::status_json;
use crate::view::AdminView;
use hopline_engine::body::Body;

fn reply(status: StatusCode, ct: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("hopline"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `PURGE /path` (Host header names the site) or `PURGE http://host/path`: drop that URL
/// from every cache; a path ending in `*` drops every URL with that prefix.
fn purge(view: &dyn AdminView, req: &Request<Incoming>) -> Response<Body> {
    let uri = req.uri();
    let (host, target) = match uri.authority() {
        Some(a) => (
            a.host().to_string(),
            uri.path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string(),
        ),
        None => (
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| hopline_engine::host::without_port(h).to_string())
                .unwrap_or_default(),
            uri.path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string(),
        ),
    };
    let table = view.snapshot();
    let mut purged = 0;
    for cache in table.caches.values() {
        for tls in [false, true] {
            let key = hopline_cache::store::key(tls, &host, target.trim_end_matches('*'));
            let what = if target.ends_with('*') {
                hopline_cache::store::PurgeTarget::Prefix(key)
            } else {
                hopline_cache::store::PurgeTarget::Url(key)
            };
            purged += cache.purge_everywhere(&what, false);
        }
    }
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::json!({"purged": purged, "host": host, "target": target}).to_string() + "\n",
    )
}

/// What `POST /.hopline/purge` takes: one of `url` (absolute), `prefix` (absolute),
/// `host`, `tag`, `all`; and `soft`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
    host: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    soft: bool,
}

/// The cache keys a purge request names (a host: both schemes).
fn purge_targets(p: &PurgeRequest) -> Result<Vec<hopline_cache::store::PurgeTarget>, String> {
    use hopline_cache::store::PurgeTarget;
    let absolute = |u: &str, what: &str| -> Result<String, String> {
        let uri: http::Uri = u.parse().map_err(|_| {
            format!("{what} {u:?}: expected an absolute URL, e.g. https://shop.test/app.css")
        })?;
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Err(format!(
                "{what} {u:?}: expected an absolute URL, e.g. https://shop.test/app.css"
            ));
        };
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(hopline_cache::store::key(scheme == "https", host, target))
    };
    let named = [
        p.url.is_some(),
        p.prefix.is_some(),
        p.host.is_some(),
        p.tag.is_some(),
        p.all,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if named != 1 {
        return Err("expected exactly one of url, prefix, host, tag, all".into());
    }
    Ok(if let Some(u) = &p.url {
        vec![PurgeTarget::Url(absolute(u, "url")?)]
    } else if let Some(u) = &p.prefix {
        vec![PurgeTarget::Prefix(absolute(u, "prefix")?)]
    } else if let Some(h) = &p.host {
        if h.is_empty() || h.contains(['/', ' ']) {
            return Err(format!("host {h:?}: expected a host name, e.g. shop.test"));
        }
        vec![
            PurgeTarget::Prefix(hopline_cache::store::key(false, h, "/")),
            PurgeTarget::Prefix(hopline_cache::store::key(true, h, "/")),
        ]
    } else if let Some(t) = &p.tag {
        if t.is_empty() || t.len() > hopline_cache::tags::MAX_TAG_LEN || t.contains([' ', ',']) {
            return Err(format!(
                "tag {t:?}: expected one surrogate key (no spaces or commas)"
            ));
        }
        vec![PurgeTarget::Tag(t.clone())]
    } else {
        vec![PurgeTarget::All]
    })
}

/// `POST /.hopline/purge` with a JSON body: purge every cache of this node; the answer
/// says how many objects each dropped (or marked stale).
async fn purge_json(view: &dyn AdminView, req: Request<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt;
    let bad = |why: String| {
        reply(
            StatusCode::BAD_REQUEST,
            "application/json",
            serde_json::json!({"error": why}).to_string() + "\n",
        )
    };
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad("the body is over 64 KiB or broken".into()),
    };
    let p: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return bad(format!(
                "{e} (expected e.g. {{\"tag\": \"product-42\", \"soft\": true}})"
            ));
        }
    };
    let targets = match purge_targets(&p) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    let table = view.snapshot();
    let mut caches = serde_json::Map::new();
    let mut total = 0;
    for (name, cache) in &table.caches {
        let n: u64 = targets
            .iter()
            .map(|t| cache.purge_everywhere(t, p.soft))
            .sum();
        total += n;
        caches.insert(name.clone(), n.into());
    }
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::json!({"purged": total, "soft": p.soft, "caches": caches}).to_string() + "\n",
    )
}

async fn answer(
    view: Arc<dyn AdminView>,
    req: Request<Incoming>,
    stop: watch::Receiver<bool>,
) -> Response<Body> {
    let table = view.snapshot();
    if let Some(refused) = crate::auth::check_token(table.admin_token.as_deref(), &req) {
        return refused;
    }
    drop(table);
    if req.method() == Method::GET {
        match req.uri().path() {
            "/" | "/index.html" => return crate::dashboard::page(),
            "/.hopline/events" => return crate::dashboard::events(view, stop),
            _ => {}
        }
    }
    if req.method().as_str() == "PURGE" {
        return purge(&*view, &req);
    }
    if req.method() == Method::POST && req.uri().path() == "/.hopline/purge" {
        return purge_json(&*view, req).await;
    }
    if req.method() == Method::GET
        && let Some(id) = req.uri().path().strip_prefix("/.hopline/trace/")
    {
        let hops = view.trace(id);
        return reply(
            if hops.is_empty() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            },
            "application/json",
            serde_json::json!({"trace": id, "hops": hops}).to_string() + "\n",
        );
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/.hopline/status") => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&status_json(&*view)).unwrap_or_default() + "\n",
        ),
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(&*view),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "admin endpoints: GET / (the dashboard), GET /.hopline/events (its snapshots, server-sent events), GET /.hopline/status, GET /metrics, GET /.hopline/trace/TRACE_ID, PURGE /path (or /prefix*), POST /.hopline/purge {\"tag\"|\"url\"|\"prefix\"|\"host\"|\"all\", \"soft\"}\n"
                .into(),
        ),
    }
}

/// Serve the admin endpoints until `stop` turns true.
pub async fn run(listener: TcpListener, view: Arc<dyn AdminView>, mut stop: watch::Receiver<bool>) {
    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let view = view.clone();
        let http = http.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let view = view.clone();
                let stop = stop.clone();
                async move { Ok::<_, Infallible>(answer(view, req, stop).await) }
            });
            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
