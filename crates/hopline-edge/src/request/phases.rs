//! The request path, phase by phase, in one place. Each request of every listener (HTTP/1.1
//! through the engine's connection, HTTP/2 through hyper) goes through [`handle`]:
//!
//! 1. **route**: host → site, path → route ([`crate::request::router`]);
//! 2. **watch**: the trace it carries (or one sampled here) and its access-log record;
//! 3. **limits**: body size, then the route's rate limit ([`hopline_limits`]);
//! 4. **answer** by the route's handler: a static file, a redirect, a fixed response, a
//!    product's route service, or the proxy — where a cached route takes the cache phase
//!    ([`crate::request::cached`]: cache lookup → pick → forward → store) and an uncached
//!    one goes straight to the pool ([`hopline_proxy::forward`]: pick → forward);
//! 5. **filter** the response: the route's headers, `Cache-Control`, the limiter's
//!    `RateLimit` fields, `Server-Timing`, `Server`, `Connection`;
//! 6. **log**: counters, the site's stats, the trace hop, the access-log line (written
//!    when the body ends).
//!
//! A request goes down through the layers once and comes back here: no layer below calls
//! up into this file. A request the HTTP/1.1 engine refuses at its head (400, 405, 431)
//! never gets this far; the engine reports it once answered, and [`refused`] logs and
//! counts it like any other answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use crate::request::compress;
use crate::request::files::{self, FileCache};
use crate::request::router::{Handler, ListenerTable, Route, SiteTable, Table};
use hopline_admin::counters::{Metrics, Sampler, TraceHop, TraceLog};
use hopline_engine::access_log::{AccessLog, LogRecord, LogText};
use hopline_engine::body::{Body, RequestBody};
use hopline_engine::h1::codec::Seen;
use hopline_engine::h1::connection::Refusal;
use hopline_engine::h1::interim::Interim;
use hopline_limits::gcra::Decision;
use hopline_limits::limiter::Limiter;

static SERVER: HeaderValue = HeaderValue::from_static("hopline");
/// W3C trace context: a request carrying it is remembered for `hopline trace`.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// What the request path reads, shared by every connection of a server.
pub(crate) struct PathState {
    /// The compiled table in force (swapped whole on reload).
    pub(crate) table: ArcSwap<Table>,
    /// Open files and their metadata, shared by static routes.
    pub(crate) files: FileCache,
    /// Where access-log lines go (none: off).
    pub(crate) access_log: ArcSwapOption<AccessLog>,
    /// Counters of the request path.
    pub(crate) metrics: Metrics,
    /// Recent traced requests.
    pub(crate) traces: TraceLog,
    /// Traces started here for requests that came without one (`[admin] sample` per second).
    pub(crate) sampler: Sampler,
}

/// What a request knows of its connection.
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    /// The peer's IP address as text, made by the first forwarded request.
    pub(crate) client: std::sync::OnceLock<Box<str>>,
    pub(crate) listener: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) requests: AtomicU64,
    /// The listener's sites when the connection opened: a connection whose listener a
    /// reload removed finishes its requests with them, then closes.
    pub(crate) initial: Arc<ListenerTable>,
}

/// One request, start to response head.
pub(crate) async fn handle(
    path: &PathState,
    conn: &ConnInfo,
    req: Request<RequestBody>,
    interim: Option<&Interim>,
) -> Response<Body> {
    let table = path.table.load_full();
    let n = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let version = req.version();
    path.metrics.count_protocol(version);

    // 1. route
    let host = hopline_engine::host::without_port(raw_host(&req));
    let current = table.listeners.get(&conn.listener);
    let removed = current.is_none();
    let listener = current.unwrap_or(&conn.initial);
    let site = listener.site(host).clone();
    let route = req
        .uri()
        .path()
        .starts_with('/')
        .then(|| site.route(req.uri().path()))
        .flatten();

    // 2. watch: trace and access-log record
    let (watch, sampled) = Watch::begin(path, conn, route, &req);
    let mut req = req;
    if let Some(traceparent) = sampled {
        req.headers_mut().insert(TRACEPARENT.clone(), traceparent);
    }

    // 3–4. limits, then the handler's answer
    let shared_token = if table.http01.may_share(req.uri().path()) {
        // another edge's order (its token in the shared store), the CA's request here
        table.http01.answer_shared(req.uri().path()).await
    } else {
        None
    };
    let mut resp =
        if let Some(key_authorization) = table.http01.answer(req.uri().path()).or(shared_token) {
            // an ACME CA validating a name (HTTP-01): before any route, on every listener
            files::text(StatusCode::OK, key_authorization)
        } else if !req.uri().path().starts_with('/') {
            files::status_only(StatusCode::BAD_REQUEST, "bad request target\n")
        } else {
            match route {
                None => files::status_only(StatusCode::NOT_FOUND, "not found\n"),
                Some(route) => match check_limits(route, conn, &req).await {
                    Err(refused) => refused,
                    Ok(limited) => {
                        let resp = answer(path, conn, route, req, interim).await;
                        // 5. the route's own response filters
                        filter_route(route, limited, resp)
                    }
                },
            }
        };

    // 5. the edge's response filters
    if watch.traced.is_some() {
        // the hop's record reads fields an origin's relayed lines may hold
        hopline_engine::body::expand_lines(&mut resp);
    }
    if site.server_timing {
        let entry = format!(
            "hopline;dur={:.3};desc=\"{}\"",
            watch.start.elapsed().as_secs_f64() * 1000.0,
            site.name
        );
        if let Ok(v) = HeaderValue::from_str(&entry) {
            resp.headers_mut().append(SERVER_TIMING.clone(), v);
        }
    }
    let h = resp.headers_mut();
    // HTTP/1.1's writer adds `server: hopline` itself when the map has none; an
    // origin's own `Server` is replaced, as nginx does
    if version >= http::Version::HTTP_2 || h.contains_key(header::SERVER) {
        h.insert(header::SERVER, SERVER.clone());
    }
    if site.http3
        && version != http::Version::HTTP_3
        && let Some(alt_svc) = listener.alt_svc.get()
    {
        h.insert(header::ALT_SVC, alt_svc.clone());
    }
    if version == http::Version::HTTP_11 && (n >= table.limits.keepalive_requests || removed) {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    // 6. log
    watch.finish(path, &site, resp)
}

/// The request's host as the client wrote it (URI authority, else `Host`), port included.
fn raw_host(req: &Request<RequestBody>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// Phase 2 and 6: what is known of a request for its trace hop and its log line, from
/// its start to its response head.
struct Watch {
    start: Instant,
    /// (trace id, span, "METHOD path") when the request is traced.
    traced: Option<(String, String, String)>,
    record: Option<Box<LogRecord>>,
}

impl Watch {
    /// Reads the request's `traceparent` (or samples a new trace, whose `traceparent` it
    /// returns for the request to carry on to the next hops) and starts its access-log
    /// record.
    fn begin(
        path: &PathState,
        conn: &ConnInfo,
        route: Option<&Route>,
        req: &Request<RequestBody>,
    ) -> (Watch, Option<HeaderValue>) {
        // `VERSION-TRACEID-SPAN-FLAGS`: the trace id (logged) and the span after it
        let trace_parts: Option<(&str, Option<&str>)> = req
            .headers()
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let mut parts = v.split('-');
                let _version = parts.next()?;
                let id = parts.next().filter(|id| id.len() == 32)?;
                Some((id, parts.next()))
            });
        // a route may keep its requests out of the log (health checks)
        let log = path
            .access_log
            .load_full()
            .filter(|_| route.is_none_or(|r| r.log));
        // a request that came without a trace may start one here (a few per second, for
        // the dashboard's recent requests)
        let sampled: Option<(String, String)> = (trace_parts.is_none()
            && route.is_some_and(|r| r.log)
            && path.sampler.take())
        .then(|| {
            (
                format!("{:032x}", rand::random::<u128>() | 1),
                format!("{:016x}", rand::random::<u64>() | 1),
            )
        });
        let traced: Option<(String, String, String)> = sampled
            .clone()
            .or_else(|| {
                trace_parts.and_then(|(id, span)| Some((id.to_string(), span?.to_string())))
            })
            .map(|(id, span)| (id, span, format!("{} {}", req.method(), req.uri().path())));
        let start = Instant::now();
        let record = log.map(|log| {
            Box::new(LogRecord {
                log,
                client: conn.peer,
                method: Some(req.method().clone()),
                // the request's own bytes, shared (no copy per request)
                target: req
                    .uri()
                    .path_and_query()
                    .map_or(LogText::Owned("/".into()), |p| LogText::Path(p.clone())),
                version: req.version(),
                host: match (req.uri().authority(), req.headers().get(header::HOST)) {
                    (Some(a), _) => LogText::Authority(a.clone()),
                    (None, Some(h)) if h.to_str().is_ok() => LogText::Header(h.clone()),
                    _ => LogText::Dash,
                },
                status: 0,
                bytes: 0,
                start,
                user_agent: match req.headers().get(header::USER_AGENT) {
                    Some(v) if v.to_str().is_ok() => LogText::Header(v.clone()),
                    _ => LogText::Dash,
                },
                site: None,
                trace: traced.as_ref().map(|(id, _, _)| id.clone()),
            })
        });
        let traceparent = sampled
            .and_then(|(id, span)| HeaderValue::from_str(&format!("00-{id}-{span}-01")).ok());
        (
            Watch {
                start,
                traced,
                record,
            },
            traceparent,
        )
    }

    /// Phase 6: counters, the site's stats, the trace hop; the log record rides on the
    /// body and is written when it ends.
    fn finish(self, path: &PathState, site: &SiteTable, resp: Response<Body>) -> Response<Body> {
        path.metrics.count(resp.status());
        site.stats.record(resp.status(), self.start.elapsed());
        if let Some((id, span, request)) = self.traced {
            let get = |n: &str| {
                let all: Vec<&str> = resp
                    .headers()
                    .get_all(n)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!all.is_empty()).then(|| all.join(", "))
            };
            path.traces.record(
                &id,
                TraceHop {
                    site: site.name.to_string(),
                    request,
                    status: resp.status().as_u16(),
                    ms: self.start.elapsed().as_secs_f64() * 1000.0,
                    at_us: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros())
                        .unwrap_or(0)
                        .saturating_sub(self.start.elapsed().as_micros()),
                    span,
                    cache_status: get("cache-status"),
                    server_timing: get("server-timing"),
                },
            );
        }
        match self.record {
            None => resp,
            Some(mut record) => {
                record.status = resp.status().as_u16();
                record.site = Some(site.name.clone());
                let (parts, body) = resp.into_parts();
                Response::from_parts(parts, body.with_log(record))
            }
        }
    }
}

/// Phase 6 for a request the engine refused at its head (it broke the protocol or was
/// too large): the counters, a site's stats and the access-log line, as for any answer.
///
/// Which site: nginx logs such a request in the virtual server its Host chose when the
/// Host field was read before the head broke, else in the listen socket's default
/// server. The same here: the site the listener gives the Host it showed (the target's
/// authority in absolute form), else the listener's default site. The access log is the
/// edge's one log; the site is its `site=` field. Routes are not looked at (there is no
/// usable request to route), so a route's `log = false` does not apply.
pub(crate) fn refused(path: &PathState, conn: &ConnInfo, refusal: Refusal) {
    let Refusal {
        status,
        bytes,
        start,
        seen,
    } = refusal;
    let Seen {
        line,
        host: seen_host,
        user_agent,
    } = *seen;
    let host = seen_host
        .as_deref()
        .map(hopline_engine::host::without_port)
        .unwrap_or("");
    let table = path.table.load();
    let site = table
        .listeners
        .get(&conn.listener)
        .unwrap_or(&conn.initial)
        .site(host);
    path.metrics.count(status);
    site.stats.record(status, start.elapsed());
    let Some(log) = path.access_log.load_full() else {
        return;
    };
    let (method, target, version) = match line {
        Some((method, target, version)) => (Some(method), target, version),
        None => (None, String::new(), http::Version::HTTP_11),
    };
    LogRecord {
        log,
        client: conn.peer,
        method,
        target: LogText::Owned(target.into_boxed_str()),
        version,
        host: if host.is_empty() {
            LogText::Dash
        } else {
            LogText::Owned(host.into())
        },
        status: status.as_u16(),
        bytes,
        start,
        user_agent: user_agent.into(),
        site: Some(site.name.clone()),
        trace: None,
    }
    .finish();
}

/// Phase 3: the body-size limit, then the route's rate limit. `Err` is the refusal
/// (413, 429); `Ok` carries the limiter's decision for the response's `RateLimit` fields.
async fn check_limits(
    route: &Route,
    conn: &ConnInfo,
    req: &Request<RequestBody>,
) -> Result<Option<(Arc<Limiter>, Decision)>, Response<Body>> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > route.max_body
    {
        let mut r = files::status_only(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Err(r);
    }
    let Some(limit) = &route.limit else {
        return Ok(None);
    };
    let Some(d) = limit.check_request(conn.peer.ip(), req.headers()).await else {
        return Ok(None);
    };
    if d.allowed {
        return Ok(Some((limit.clone(), d)));
    }
    limit.rejected.fetch_add(1, Ordering::Relaxed);
    let body = format!(
        "429 rate limit {:?} exceeded; retry after {} s\n",
        limit.name,
        d.retry_after.as_secs_f64().ceil().max(1.0)
    );
    let mut r = Response::new(Body::full(body.clone()));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    limit.headers(&d, r.headers_mut());
    Err(r)
}

/// Phase 4: the route's handler answers.
async fn answer(
    path: &PathState,
    conn: &ConnInfo,
    route: &Route,
    req: Request<RequestBody>,
    interim: Option<&Interim>,
) -> Response<Body> {
    match &route.handler {
        Handler::Static(s) => {
            files::serve(
                req.version(),
                req.method(),
                req.headers(),
                req.uri().path(),
                req.uri().query(),
                s,
                &path.files,
            )
            .await
        }
        Handler::Redirect { location, status } => {
            let mut r = files::status_only(*status, "redirecting\n");
            r.headers_mut().insert(header::LOCATION, location.clone());
            r
        }
        Handler::Respond {
            status,
            content_type,
            body,
            compressible,
        } => {
            respond(
                &req,
                *status,
                content_type,
                body,
                *compressible && route.compress,
            )
            .await
        }
        Handler::Service {
            service, prefix, ..
        } => {
            let ctx = crate::request::service::ServiceContext {
                peer: conn.peer,
                tls: conn.tls,
                prefix: prefix.clone(),
                send_timeout: Duration::from_millis(
                    path.table.load().limits.send_timeout_ms.max(1),
                ),
            };
            service.call(req, ctx).await
        }
        Handler::Proxy(up) => {
            // the request moves into the proxy: its Host is kept by a shared handle (no
            // copy on HTTP/1.1), lowercased only when it is not already
            let authority_value = match req.uri().authority() {
                Some(a) => HeaderValue::from_str(a.as_str()).ok(),
                None => req.headers().get(header::HOST).cloned(),
            };
            let authority = authority_value
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let host = hopline_engine::host::without_port(authority);
            let host: std::borrow::Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                host.to_ascii_lowercase().into()
            } else {
                host.into()
            };
            let down = hopline_proxy::forward::Downstream {
                peer: conn.peer,
                client: conn
                    .client
                    .get_or_init(|| conn.peer.ip().to_string().into()),
                tls: conn.tls,
                host: &host,
                authority,
                interim,
            };
            // Boxed: the proxy/cache state machines are large; keeping them out of the
            // service future keeps the static-file path's future small.
            match &route.cache {
                // an upgrade (WebSocket) is a tunnel, never a cacheable exchange
                Some(cache) if !hopline_proxy::hop_by_hop::is_upgrade(req.headers()) => {
                    Box::pin(crate::request::cached::serve(cache, up, req, down)).await
                }
                _ => Box::pin(hopline_proxy::forward::forward(up, req, down)).await,
            }
        }
    }
}

/// Phase 5 (the route's part): its `Cache-Control` on success, its own headers, and the
/// limiter's `RateLimit` fields.
fn filter_route(
    route: &Route,
    limited: Option<(Arc<Limiter>, Decision)>,
    mut resp: Response<Body>,
) -> Response<Body> {
    let ok = resp.status().is_success();
    // the route's headers may replace fixed ones; an origin's relayed lines may hold
    // any field, so they are expanded before the route or the limiter sets one
    if !route.headers.is_empty()
        || (resp.body().has_relayed_lines()
            && ((ok && route.cache_control.is_some()) || limited.is_some()))
    {
        hopline_engine::body::expand_lines(&mut resp);
    }
    let h = resp.headers_mut();
    if let Some(cc) = &route.cache_control
        && ok
    {
        h.insert(header::CACHE_CONTROL, cc.clone());
    }
    for (k, v) in &route.headers {
        h.insert(k.clone(), v.clone());
    }
    if let Some((limit, d)) = limited {
        limit.headers(&d, h);
    }
    resp
}

/// A fixed response (`respond = …`), compressed when the client and the route allow.
async fn respond(
    req: &Request<RequestBody>,
    status: StatusCode,
    content_type: &HeaderValue,
    body: &Arc<compress::Variants>,
    compressible: bool,
) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type.clone());
    let mut bytes: Bytes = body.raw.clone();
    if compressible && bytes.len() as u64 >= compress::MIN_SIZE {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        if let Some(enc) = compress::negotiate(req.headers().get(header::ACCEPT_ENCODING)) {
            let variant = match body.ready(enc) {
                Some(v) => v,
                None => {
                    let b = body.clone();
                    Box::pin(tokio::task::spawn_blocking(move || b.get(enc)))
                        .await
                        .ok()
                        .flatten()
                }
            };
            if let Some(v) = variant {
                h.insert(header::CONTENT_ENCODING, enc.header());
                bytes = v;
            }
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    if req.method() != Method::HEAD {
        *r.body_mut() = Body::full(bytes);
    }
    r
}
