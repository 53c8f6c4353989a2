//! A proxy route with a cache in front: the CDN point of presence's request path.
//! GET/HEAD: fresh hit → answered here; stale → served while one background refresh
//! runs (`stale-while-revalidate`), or revalidated with the origin, or served when the
//! origin fails (`stale-if-error`); miss → one origin request for all concurrent misses
//! of the key, its response streamed to the client while stored. Unsafe methods go to
//! the origin and invalidate what they touch. Every answer carries `Cache-Status`.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::request::files::{RangeOutcome, evaluate_range};
use hopline_cache::freshness;
use hopline_cache::store::{self as cache, Admission, Ask, HttpCache, Lookup};
use hopline_cache::stored::Stored;
use hopline_cache::tee::TeeBody;
use hopline_engine::body::Body;
use hopline_proxy::error::ProxyError;
use hopline_proxy::forward::{self as proxy, Downstream};
use hopline_proxy::origin::HeadForm;
use hopline_proxy::pool::UpstreamPool;

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Serve a request on a cached proxy route; the answer carries the PoP's own
/// `Server-Timing` entry (what the cache did, and how long the PoP took).
pub async fn serve(
    cache: &Arc<HttpCache>,
    up: &Arc<UpstreamPool>,
    req: Request<hopline_engine::body::RequestBody>,
    down: Downstream<'_>,
) -> Response<Body> {
    let started = tokio::time::Instant::now();
    let mut resp = serve_inner(cache, up, req, down).await;
    let what = resp
        .headers()
        .get(&CACHE_STATUS)
        .and_then(|v| v.to_str().ok())
        .map(|cs| {
            if cs.contains("; hit") {
                "hit"
            } else if cs.contains("fwd=stale") {
                "stale"
            } else {
                "miss"
            }
        })
        .unwrap_or("bypass");
    let entry = format!(
        "hopline-cache;dur={:.3};desc=\"{} {what}\"",
        started.elapsed().as_secs_f64() * 1000.0,
        cache.name
    );
    if let Ok(v) = HeaderValue::from_str(&entry) {
        resp.headers_mut()
            .append(HeaderName::from_static("server-timing"), v);
    }
    resp
}

async fn serve_inner(
    cache: &Arc<HttpCache>,
    up: &Arc<UpstreamPool>,
    req: Request<hopline_engine::body::RequestBody>,
    down: Downstream<'_>,
) -> Response<Body> {
    let method = req.method().clone();
    // every method but the safe ones — unknown ones too (M-SEARCH, PURGE-like
    // extensions) — may change the target: it is invalidated (RFC 9111 §4.4)
    if !matches!(
        method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let key = cache::key(down.tls, down.host, &target);
        let resp = proxy::forward(up, req, down).await;
        if resp.status().is_success() || resp.status().is_redirection() {
            invalidate_after_unsafe(cache, &key, &resp, down);
        }
        return resp;
    }
    if method != Method::GET && method != Method::HEAD {
        return proxy::forward(up, req, down).await;
    }
    let (mut parts, _body) = req.into_parts();
    let (ask, found) = cache.find(down.tls, down.host, &mut parts).await;
    let Ask { key, as_get } = ask;
    match found {
        Lookup::Fresh(stored, head) => {
            let head = freshness::hit_head(&stored, head, &cache.name, None);
            from_store(&parts, &stored, head)
        }
        Lookup::StaleWhileRevalidate(stored, head) => {
            if cache.begin_background(&key) {
                spawn_refresh(cache.clone(), up.clone(), key.clone(), as_get.clone(), down);
            }
            let head =
                freshness::hit_head(&stored, head, &cache.name, Some("stale-while-revalidate"));
            from_store(&parts, &stored, head)
        }
        Lookup::Revalidate(stored, conditional) => {
            revalidate(cache, up, &key, &parts, stored, conditional, down).await
        }
        Lookup::Miss(lead) => fetch(cache, up, &key, parts, as_get, lead, "fwd=miss", down).await,
    }
}

/// A stored response's head as of now, with `status` (what the cache did).
fn stored_head(
    stored: &Stored,
    head: http::response::Parts,
    status: HeaderValue,
) -> http::response::Parts {
    let mut head = freshness::response_head(stored, head);
    head.headers.insert(CACHE_STATUS.clone(), status);
    head
}

/// Answer from a stored response with its finished `head`: the client's own condition
/// met → 304; Range served from the full body; HEAD without body.
fn from_store(
    req: &http::request::Parts,
    stored: &Stored,
    mut head: http::response::Parts,
) -> Response<Body> {
    if head.status == StatusCode::OK && client_condition_met(req, &head.headers) {
        // RFC 9111 §4.3.2: a cache answers a client's own conditional request from a
        // stored response — 304 with the stored validators, no body
        head.status = StatusCode::NOT_MODIFIED;
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
        ] {
            head.headers.remove(name);
        }
        return Response::from_parts(head, Body::empty());
    }
    let mut body = ranged(req, &mut head, stored.body.clone());
    if req.method == Method::HEAD {
        body = Body::empty();
    }
    Response::from_parts(head, body)
}

/// The body of a 200 `head` for `req`: the whole `full`, or the client's `Range` of it
/// (206, or 416 when it cannot be satisfied).
fn ranged(
    req: &http::request::Parts,
    head: &mut http::response::Parts,
    full: bytes::Bytes,
) -> Body {
    let len = full.len() as u64;
    let mut body = Body::full(full.clone());
    if head.status == StatusCode::OK
        && let Some(range) = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok())
    {
        head.headers
            .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        match evaluate_range(range, len) {
            RangeOutcome::Partial(r) => {
                head.status = StatusCode::PARTIAL_CONTENT;
                head.headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes {}-{}/{len}", r.start, r.end - 1))
                        .expect("ascii"),
                );
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
                body = Body::full(full.slice(r.start as usize..r.end as usize));
            }
            RangeOutcome::Unsatisfiable => {
                head.status = StatusCode::RANGE_NOT_SATISFIABLE;
                head.headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
                );
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                body = Body::empty();
            }
            RangeOutcome::Full => {}
        }
    }
    body
}

/// Does the client's own condition say it has this response already? `If-None-Match`
/// (weak comparison, `*` for any) first; `If-Modified-Since` only without it (RFC 9110
/// §13.2.2), against the stored `Last-Modified`.
fn client_condition_met(req: &http::request::Parts, stored: &http::HeaderMap) -> bool {
    if !matches!(req.method, Method::GET | Method::HEAD) {
        return false;
    }
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if let Some(inm) = req
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return inm.trim() == "*";
        };
        let etag = weak(etag);
        return inm.split(',').any(|t| t.trim() == "*" || weak(t) == etag);
    }
    let (Some(ims), Some(lm)) = (
        req.headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
        stored
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
    ) else {
        return false;
    };
    lm <= ims
}

/// Forward to the origin; store what may be stored while streaming it to the client.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    cache: &Arc<HttpCache>,
    up: &Arc<UpstreamPool>,
    key: &str,
    parts: http::request::Parts,
    as_get: http::request::Parts,
    lead: Option<cache::FetchLead>,
    what: &str,
    down: Downstream<'_>,
) -> Response<Body> {
    let head_only = parts.method == Method::HEAD;
    // always fetch with GET so the body can be stored; HEAD gets the head only
    let resp = match proxy::send(up, as_get.clone(), None, down, None, HeadForm::Map).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = e.response();
            r.headers_mut().insert(
                CACHE_STATUS.clone(),
                freshness::cache_status(&cache.name, what, None, Some("origin-error")),
            );
            return r;
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    // (a field targeted at this cache decides for it; clients see the origin's own)
    let Admission {
        stored: stored_parts,
        policy,
    } = cache.admit(&as_get, &mut rparts);
    let stored = policy.is_some();
    rparts.headers.insert(
        CACHE_STATUS.clone(),
        HeaderValue::from_str(&format!(
            "{}; {what}; fwd-status={}{}",
            cache.name,
            rparts.status.as_u16(),
            if stored { "; stored" } else { "" }
        ))
        .unwrap_or(HeaderValue::from_static("hopline")),
    );
    let body = match policy {
        Some(policy) => {
            use http_body::Body as _;
            if rbody.is_end_stream() {
                cache.store(key, &as_get, &rparts, policy, bytes::Bytes::new());
                drop(lead);
                Body::empty()
            } else {
                Body::stream(TeeBody::new(
                    rbody,
                    cache.clone(),
                    key.to_string(),
                    as_get,
                    stored_parts,
                    policy,
                    lead,
                ))
            }
        }
        None => {
            drop(lead);
            Body::stream(rbody)
        }
    };
    if head_only {
        // the GET body still flows into the cache in the background
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            let _ = body.collect().await;
        });
        return Response::from_parts(rparts, Body::empty());
    }
    if stored && rparts.status == StatusCode::OK && parts.headers.contains_key(header::RANGE) {
        // a range on a miss: the whole object comes in (and is stored), then the client
        // gets its range of it — as nginx's proxy_cache without its slice module
        use http_body_util::BodyExt;
        return match body.collect().await {
            Ok(full) => {
                let body = ranged(&parts, &mut rparts, full.to_bytes());
                Response::from_parts(rparts, body)
            }
            Err(_) => ProxyError::Upstream {
                server: up.name.clone(),
                reason: "the response body broke off".into(),
            }
            .response(),
        };
    }
    Response::from_parts(rparts, body)
}

/// Revalidate a stale entry with the origin: 304 refreshes it, a new response replaces
/// it, a failure serves it if `stale-if-error` allows.
async fn revalidate(
    cache: &Arc<HttpCache>,
    up: &Arc<UpstreamPool>,
    key: &str,
    parts: &http::request::Parts,
    stored: Arc<Stored>,
    conditional: http::request::Parts,
    down: Downstream<'_>,
) -> Response<Body> {
    let result = proxy::send(up, conditional.clone(), None, down, None, HeadForm::Map).await;
    let failed_status = match &result {
        Ok(r) if r.status().is_server_error() => Some(r.status().as_u16()),
        Ok(_) => None,
        Err(e) => Some(e.status().as_u16()),
    };
    if let Some(code) = failed_status {
        if let Some(head) = cache.usable_on_error(&stored) {
            cache
                .stats
                .stale
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let status = HeaderValue::from_str(&format!(
                "{}; fwd=stale; fwd-status={code}; ttl={}; detail=stale-if-error",
                cache.name,
                freshness::ttl_secs(&stored)
            ))
            .unwrap_or(HeaderValue::from_static("hopline"));
            return from_store(parts, &stored, stored_head(&stored, head, status));
        }
        return match result {
            Ok(r) => {
                let (mut p, b) = r.into_parts();
                p.headers.insert(
                    CACHE_STATUS.clone(),
                    HeaderValue::from_str(&format!("{}; fwd=stale; fwd-status={code}", cache.name))
                        .unwrap_or(HeaderValue::from_static("hopline")),
                );
                Response::from_parts(p, Body::stream(b))
            }
            Err(e) => e.response(),
        };
    }
    let resp = result.expect("not failed");
    let (mut rparts, rbody) = resp.into_parts();
    let mut as_get = parts.clone();
    as_get.method = Method::GET;
    let Admission {
        stored: stored_parts,
        policy,
    } = cache.admit(&as_get, &mut rparts);
    if rparts.status == StatusCode::NOT_MODIFIED
        && let Some((fresh, head)) = cache.refreshed(key, &stored, &conditional, &rparts)
    {
        let status = HeaderValue::from_str(&format!(
            "{}; fwd=stale; fwd-status=304; ttl={}",
            cache.name,
            freshness::ttl_secs(&fresh)
        ))
        .unwrap_or(HeaderValue::from_static("hopline"));
        return from_store(parts, &fresh, stored_head(&fresh, head, status));
    }
    if rparts.status == StatusCode::NOT_MODIFIED {
        // a 304 to our own conditional request that http-cache-semantics does not match
        // (e.g. a bare one, with no validator): RFC 9111 §4.3.4 selects the one stored
        // response we revalidated. Its fields are updated from the 304 (§3.2) and it is
        // stored again (fresh from now), and the client — who asked no condition of its
        // own — gets the stored response, never the 304.
        let mut merged = stored.head();
        for (name, value) in &rparts.headers {
            if !matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "content-encoding" | "content-range"
            ) {
                merged.insert(name.clone(), value.clone());
            }
        }
        let (mut updated, ()) = http::Response::new(()).into_parts();
        updated.status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        updated.headers = merged;
        if let Some(policy) = cache.storable(&as_get, &updated) {
            cache.store(key, &as_get, &updated, policy, stored.body.clone());
            if let cache::Lookup::Fresh(fresh, head) = cache.lookup(key, parts) {
                let status = HeaderValue::from_str(&format!(
                    "{}; fwd=stale; fwd-status=304; ttl={}",
                    cache.name,
                    freshness::ttl_secs(&fresh)
                ))
                .unwrap_or(HeaderValue::from_static("hopline"));
                return from_store(parts, &fresh, stored_head(&fresh, head, status));
            }
        }
        let status = HeaderValue::from_str(&format!("{}; fwd=stale; fwd-status=304", cache.name))
            .unwrap_or(HeaderValue::from_static("hopline"));
        let head = cache
            .usable_on_error(&stored)
            .unwrap_or_else(|| freshness::stale_head(&stored));
        return from_store(parts, &stored, stored_head(&stored, head, status));
    }
    // a new representation: store it like a miss would
    cache
        .stats
        .misses
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    rparts.headers.insert(
        CACHE_STATUS.clone(),
        HeaderValue::from_str(&format!(
            "{}; fwd=stale; fwd-status={}{}",
            cache.name,
            rparts.status.as_u16(),
            if policy.is_some() { "; stored" } else { "" }
        ))
        .unwrap_or(HeaderValue::from_static("hopline")),
    );
    let body = match policy {
        Some(policy) => Body::stream(TeeBody::new(
            rbody,
            cache.clone(),
            key.to_string(),
            as_get,
            stored_parts,
            policy,
            None,
        )),
        None => Body::stream(rbody),
    };
    if parts.method == Method::HEAD {
        return Response::from_parts(rparts, Body::empty());
    }
    Response::from_parts(rparts, body)
}

/// One background refresh for a key served stale-while-revalidate.
fn spawn_refresh(
    cache: Arc<HttpCache>,
    up: Arc<UpstreamPool>,
    key: String,
    as_get: http::request::Parts,
    down: Downstream<'_>,
) {
    let peer = down.peer;
    let client = down.client.to_string();
    let tls = down.tls;
    let host = down.host.to_string();
    let authority = down.authority.to_string();
    tokio::spawn(async move {
        let down = Downstream {
            peer,
            client: &client,
            tls,
            host: &host,
            authority: &authority,
            interim: None,
        };
        // revalidate with the stored validators when there is an entry
        let conditional = match cache.lookup(&key, &as_get) {
            Lookup::StaleWhileRevalidate(stored, _) | Lookup::Revalidate(stored, _) => {
                let mut c = as_get.clone();
                let head = stored.head();
                if let Some(etag) = head.get(header::ETAG) {
                    c.headers.insert(header::IF_NONE_MATCH, etag.clone());
                }
                if let Some(lm) = head.get(header::LAST_MODIFIED) {
                    c.headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
                }
                Some((stored, c))
            }
            _ => None,
        };
        match conditional {
            Some((stored, c)) => {
                let r = revalidate(&cache, &up, &key, &as_get, stored, c, down).await;
                use http_body_util::BodyExt;
                let _ = r.into_body().collect().await; // drive the store to its end
            }
            None => {
                let r = fetch(
                    &cache,
                    &up,
                    &key,
                    as_get.clone(),
                    as_get,
                    None,
                    "fwd=stale",
                    down,
                )
                .await;
                use http_body_util::BodyExt;
                let _ = r.into_body().collect().await;
            }
        }
        cache.end_background(&key);
    });
}

/// After a successful unsafe request, drop the target and the same-origin URLs named in
/// `Location` / `Content-Location` (RFC 9111 §4.4).
fn invalidate_after_unsafe(
    cache: &HttpCache,
    key: &str,
    resp: &Response<Body>,
    down: Downstream<'_>,
) {
    cache.invalidate(key);
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(v) = resp.headers().get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let target = if v.starts_with('/') {
            Some(v.to_string())
        } else {
            v.parse::<http::Uri>().ok().and_then(|u| {
                let same = u.host().is_some_and(|h| h.eq_ignore_ascii_case(down.host));
                same.then(|| {
                    u.path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "/".into())
                })
            })
        };
        if let Some(t) = target {
            cache.invalidate(&cache::key(down.tls, down.host, &t));
        }
    }
}
