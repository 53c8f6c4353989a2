//! The HTTP face of a hub, as a route service of the edge: on `PREFIX/CHANNEL`,
//! - `GET ?since=EPOCH:OFFSET` — short poll: the events after the position, at once;
//! - `GET ?since=…&wait=1` — long poll: held until an event arrives or `long_poll_ms`;
//! - `?last=N` instead of `since` (any of the four) — start with the latest N events
//!   still in history: a first read that does not miss what was just published;
//! - `GET` with `Accept: text/event-stream` — Server-Sent Events, resumable by
//!   `Last-Event-ID`;
//! - `GET` with `Upgrade: websocket` (HTTP/1.1) or an extended CONNECT (HTTP/2) — a
//!   WebSocket subscribed to the channel (see [`crate::session`]);
//! - `POST` — publish the body.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use hopline_edge::body::{Body, RequestBody};
use hopline_edge::service::{BoxFuture, RouteService, ServiceContext};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::channel::Channel;
use crate::channel_log::{Read, Start};
use crate::frames::{json_string, poll_json};
use crate::hooks::{Ask, Event, Verdict, pick_headers};
use crate::hub::Hub;
use crate::request::{MAX_CHANNEL, Query, authorize, bearer, parse_query, valid_channel};

/// Most events in one poll answer (the reply's offset says where to continue).
const MAX_EVENTS_PER_ANSWER: usize = 1000;

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let body = body.into();
    let mut r = Response::new(Body::full(body.clone()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

fn unauthorized(status: StatusCode, message: String) -> Response<Body> {
    let mut r = text(status, format!("{} {message}\n", status.as_u16()));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"hopline\""),
        );
    }
    r
}

/// The route service of one hub.
#[derive(Debug, Clone)]
pub struct RealtimeService {
    hub: Arc<Hub>,
}

impl RealtimeService {
    /// Serve `hub`.
    pub fn new(hub: Arc<Hub>) -> RealtimeService {
        RealtimeService { hub }
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl RouteService for RealtimeService {
    fn call(&self, req: Request<RequestBody>, ctx: ServiceContext) -> BoxFuture<Response<Body>> {
        let hub = self.hub.clone();
        Box::pin(async move { handle(hub, req, ctx).await })
    }

    fn status(&self) -> serde_json::Value {
        crate::metrics::status(&self.hub.state(), &self.hub.metrics)
    }

    fn metrics(&self, out: &mut String) {
        crate::metrics::prometheus(&self.hub.state(), &self.hub.metrics, out);
    }

    fn shutdown(&self) {
        self.hub.shutdown();
    }
}

fn is_websocket(req: &Request<RequestBody>) -> bool {
    let h = req.headers();
    let upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        });
    upgrade
        || hopline_edge::service::connect_protocol(req)
            .is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
}

async fn handle(
    hub: Arc<Hub>,
    mut req: Request<RequestBody>,
    ctx: ServiceContext,
) -> Response<Body> {
    let path = req.uri().path();
    let channel = path.strip_prefix(&*ctx.prefix).unwrap_or("").to_string();
    let query = match parse_query(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("400 {e}\n")),
    };
    let settings = hub.settings();
    let hook_headers = pick_headers(settings.config.hooks.as_ref(), req.headers());
    if is_websocket(&req) {
        if !channel.is_empty() && !valid_channel(&channel) {
            return text(StatusCode::BAD_REQUEST, bad_channel(&channel));
        }
        if settings.config.hooks.is_some() {
            // the application's say on the connection, and on the channel in its URL
            let token = bearer(req.headers(), &query);
            let claims = crate::request::token_claims(&settings.config.subscribe, token);
            let mut events = vec![Event::Connect];
            if !channel.is_empty() {
                events.push(Event::Subscribe);
            }
            for event in events {
                let ask = Ask {
                    event,
                    channel: &channel,
                    transport: "websocket",
                    client: Some(ctx.peer),
                    claims: claims.as_ref(),
                    headers: &hook_headers,
                    data: None,
                };
                if let Verdict::Deny(s, m) = hub.hook(&settings, ask).await {
                    return text(s, format!("{} {m}\n", s.as_u16()));
                }
            }
        }
        // (kept by the connection only when the hub has hooks to ask)
        let client = settings.config.hooks.is_some().then(|| {
            Box::new(crate::session::Client {
                peer: ctx.peer,
                hook_headers,
            })
        });
        return crate::session::upgrade(hub, &mut req, channel, query, settings, client);
    }
    if !valid_channel(&channel) {
        return text(StatusCode::BAD_REQUEST, bad_channel(&channel));
    }
    match *req.method() {
        Method::POST => publish(hub, req, channel, query, ctx.peer, hook_headers).await,
        Method::GET | Method::HEAD if query.info => channel_info(&hub, &req, &channel, &query),
        Method::GET | Method::HEAD if query.presence.is_some() => {
            presence(&hub, &req, &channel, &query)
        }
        Method::DELETE => delete(&hub, &req, &channel, &query).await,
        Method::GET | Method::HEAD => {
            let token = bearer(req.headers(), &query);
            let claims = match authorize(&settings.config.subscribe, token, &channel, "subscribe") {
                Ok(c) => c,
                Err((s, m)) => return unauthorized(s, m),
            };
            let wants_sse = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/event-stream"));
            let ask = Ask {
                event: Event::Subscribe,
                channel: &channel,
                transport: match (wants_sse, query.wait) {
                    (true, _) => "sse",
                    (false, true) => "long_poll",
                    (false, false) => "poll",
                },
                client: Some(ctx.peer),
                claims: claims.as_ref(),
                headers: &hook_headers,
                data: None,
            };
            if let Verdict::Deny(s, m) = hub.hook(&settings, ask).await {
                return text(s, format!("{} {m}\n", s.as_u16()));
            }
            // Last-Event-ID (what browsers send when they reconnect, to the same URL)
            // before ?since= or ?last=
            let last_event_id = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| wants_sse && !v.is_empty());
            let start = match last_event_id {
                Some(t) => crate::request::position(t).map(Start::After),
                None => query.start(settings.retention.history),
            };
            let start = match start {
                Ok(s) => s,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("400 {e}\n")),
            };
            let ch = match hub.channel(&channel).await {
                Ok(c) => c,
                Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("503 {e}\n")),
            };
            if wants_sse {
                let since = ch.resolve(&start);
                let member = settings.config.presence.then(|| {
                    ch.join(crate::channel::Member {
                        client: crate::request::new_client_id(),
                        sub: claims.as_ref().and_then(|c| c.sub.clone()),
                        info: claims.as_ref().and_then(|c| c.info.clone()),
                        transport: "sse",
                        since_ms: crate::channel_log::now_ms(),
                    })
                });
                crate::sse::respond(hub, ch, since, req.version(), ctx.send_timeout, member)
            } else if query.wait {
                long_poll(hub, ch, start).await
            } else {
                hub.metrics.polls.fetch_add(1, Ordering::Relaxed);
                poll_answer(&hub, ch.read_from(&start, MAX_EVENTS_PER_ANSWER))
            }
        }
        _ => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 use GET to subscribe, POST to publish, DELETE to delete the channel\n",
            );
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, DELETE"),
            );
            r
        }
    }
}

/// `GET /live/CHANNEL?info` (as Nchan's channel info): the channel's position, what its
/// history holds and how many subscribers wait on it on this node. Publishers' access (it
/// is an operator's view); 404 for a channel this node does not have.
fn channel_info(
    hub: &Hub,
    req: &Request<RequestBody>,
    channel: &str,
    query: &Query,
) -> Response<Body> {
    if let Some(refused) = not_a_publisher(hub, req, channel, query) {
        return refused;
    }
    let Some(ch) = hub.existing(channel) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("404 no channel {channel:?} on this node (nothing published or subscribed)\n"),
        );
    };
    let i = ch.info();
    let body = serde_json::json!({
        "channel": channel,
        "epoch": &*i.position.epoch,
        "offset": i.position.offset,
        "position": i.position.to_string(),
        "messages": i.messages,
        "oldest_offset": i.oldest_offset,
        "last_published_ms": i.last_published_ms,
        "bytes_published": i.bytes_published,
        "subscribers": i.subscribers,
    });
    let mut r = json(StatusCode::OK, Bytes::from(body.to_string()));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `DELETE /live/CHANNEL` (as Nchan's): the channel's history goes and its subscribers
/// are told — WebSocket `{"type":"deleted"}`, SSE `event: deleted` then the end of the
/// stream, a held long poll 410 — on every node with the shared engine. Publishers'
/// access; 200 with what the channel was, 404 when there was no such channel.
async fn delete(
    hub: &Hub,
    req: &Request<RequestBody>,
    channel: &str,
    query: &Query,
) -> Response<Body> {
    if let Some(refused) = not_a_publisher(hub, req, channel, query) {
        return refused;
    }
    match hub.delete(channel).await {
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("503 {e}\n")),
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            format!("404 no channel {channel:?} (nothing published or subscribed)\n"),
        ),
        Ok(Some(d)) => {
            let body = serde_json::json!({
                "channel": channel,
                "deleted": true,
                "epoch": &*d.position.epoch,
                "offset": d.position.offset,
                "position": d.position.to_string(),
                "messages": d.messages,
                "subscribers": d.subscribers,
            });
            json(StatusCode::OK, Bytes::from(body.to_string()))
        }
    }
}

/// `GET /live/CHANNEL?presence` (who is subscribed on this node: WebSocket subscriptions
/// and SSE streams, with their token's `sub` and `info`) or `?presence=stats` (how many,
/// and how many distinct `sub`s). Publishers' access; 404 when the hub keeps no presence.
fn presence(hub: &Hub, req: &Request<RequestBody>, channel: &str, query: &Query) -> Response<Body> {
    if let Some(refused) = not_a_publisher(hub, req, channel, query) {
        return refused;
    }
    if !hub.settings().config.presence {
        return text(
            StatusCode::NOT_FOUND,
            "404 this hub keeps no presence (set presence = true in its section)\n",
        );
    }
    let body = crate::request::presence_view(
        channel,
        hub.existing(channel).as_deref(),
        query.presence == Some(crate::request::PresenceAsk::Members),
    );
    json(StatusCode::OK, Bytes::from(body.to_string()))
}

/// The refusal for a request that needs a publisher's access to `channel` and has not
/// got it (401/403), or None.
fn not_a_publisher(
    hub: &Hub,
    req: &Request<RequestBody>,
    channel: &str,
    query: &Query,
) -> Option<Response<Body>> {
    let settings = hub.settings();
    let token = bearer(req.headers(), query);
    authorize(&settings.config.publish, token, channel, "publish")
        .err()
        .map(|(s, m)| unauthorized(s, m))
}

fn bad_channel(name: &str) -> String {
    format!(
        "400 bad channel name {:?}: 1 to {MAX_CHANNEL} characters of A-Z a-z 0-9 _ - . :\n",
        name.chars().take(MAX_CHANNEL + 8).collect::<String>()
    )
}

/// The JSON answer of a poll.
fn poll_answer(hub: &Hub, read: Read) -> Response<Body> {
    if !read.recovered {
        hub.metrics.drops.fetch_add(1, Ordering::Relaxed);
    }
    hub.metrics
        .deliveries
        .fetch_add(read.events.len() as u64, Ordering::Relaxed);
    let mut out = BytesMut::with_capacity(96 + read.events.len() * 64);
    out.extend_from_slice(b"{\"epoch\":");
    out.extend_from_slice(json_string(read.position.epoch.as_bytes()).as_bytes());
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(read.position.offset).as_bytes());
    out.extend_from_slice(b",\"position\":\"");
    out.extend_from_slice(read.position.to_string().as_bytes());
    out.extend_from_slice(if read.recovered {
        b"\",\"recovered\":true,\"events\":["
    } else {
        b"\",\"recovered\":false,\"events\":["
    });
    for (i, e) in read.events.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(&poll_json(e));
    }
    out.extend_from_slice(b"]}");
    json(StatusCode::OK, out.freeze())
}

/// A long poll from `start`: answered at once when there are events after it (with
/// `?last=N`, when history holds any), else held until one is published.
async fn long_poll(hub: Arc<Hub>, ch: Arc<Channel>, start: Start) -> Response<Body> {
    let settings = hub.settings();
    // no position: wait for the next publication
    let since = ch.resolve(&start).unwrap_or_else(|| ch.position());
    let mut rx = ch.subscribe();
    // (shutdown wakes the channel: a held poll registers with its channel only)
    let closing = hub.closing();
    struct Held<'a>(&'a Hub);
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            self.0
                .metrics
                .long_polls_held
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
    hub.metrics.long_polls_held.fetch_add(1, Ordering::Relaxed);
    let held = Held(&hub);
    let deadline = tokio::time::Instant::now() + settings.long_poll;
    let timeout = tokio::time::sleep_until(deadline);
    tokio::pin!(timeout);
    loop {
        rx.borrow_and_update();
        if ch.moved_from(&since) || *closing.borrow() || ch.is_gone() {
            break;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = &mut timeout => break,
        }
    }
    drop(held);
    hub.metrics.long_polls.fetch_add(1, Ordering::Relaxed);
    if ch.is_gone() && ch.read(Some(&since), 1).events.is_empty() {
        // deleted while held (what was published before it is answered first)
        let body = serde_json::json!({"error": "channel deleted", "channel": &*ch.name});
        return json(StatusCode::GONE, Bytes::from(body.to_string()));
    }
    poll_answer(&hub, ch.read(Some(&since), MAX_EVENTS_PER_ANSWER))
}

async fn publish(
    hub: Arc<Hub>,
    req: Request<RequestBody>,
    channel: String,
    query: Query,
    peer: std::net::SocketAddr,
    hook_headers: Vec<(String, String)>,
) -> Response<Body> {
    use http_body_util::BodyExt;
    let settings = hub.settings();
    let token = bearer(req.headers(), &query).map(str::to_string);
    let claims = match authorize(
        &settings.config.publish,
        token.as_deref(),
        &channel,
        "publish",
    ) {
        Ok(c) => c,
        Err((s, m)) => return unauthorized(s, m),
    };
    let max = settings.max_message;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("413 a publication is at most {max} bytes (max_message)\n"),
        );
    }
    let limited = http_body_util::Limited::new(req.into_body(), max);
    let data = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("413 a publication is at most {max} bytes (max_message)\n"),
            );
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("400 request body: {e}\n")),
    };
    let ask = Ask {
        event: Event::Publish,
        channel: &channel,
        transport: "http",
        client: Some(peer),
        claims: claims.as_ref(),
        headers: &hook_headers,
        data: Some(&data),
    };
    let data = match hub.hook(&settings, ask).await {
        Verdict::Allow(Some(other)) => other,
        Verdict::Allow(None) => data,
        Verdict::Deny(s, m) => return text(s, format!("{} {m}\n", s.as_u16())),
    };
    match hub.publish(&channel, data).await {
        Ok(p) => json(
            StatusCode::OK,
            Bytes::from(format!(
                "{{\"channel\":{},\"epoch\":{},\"offset\":{},\"position\":\"{}\",\"subscribers\":{}}}",
                json_string(channel.as_bytes()),
                json_string(p.position.epoch.as_bytes()),
                p.position.offset,
                p.position,
                p.subscribers
            )),
        ),
        Err(e) => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("503 {e}\n"));
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}
