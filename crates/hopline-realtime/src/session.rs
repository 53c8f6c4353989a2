//! One WebSocket connection to a hub: the opening handshake (HTTP/1.1 `Upgrade` or an
//! HTTP/2 extended CONNECT), then a loop that reads client frames strictly
//! ([`crate::ws::Decoder`]), writes each channel's new events (shared pre-encoded frames,
//! or compressed per connection with permessage-deflate), pings, and closes with the
//! right code. The connection holds positions, not queues: a subscriber further behind
//! than `client_queue` bytes is cut (close 4008) and never slows the channel. While it
//! has one subscription and no compression, publishers write its events themselves
//! ([`crate::direct`]); the task takes over whenever that cannot go on.
//!
//! Client → server JSON messages:
//! `{"type":"subscribe","channel":"C","since":"EPOCH:OFFSET"?}` (or `"last":N`),
//! `{"type":"unsubscribe","channel":"C"}`,
//! `{"type":"publish","channel":"C","data":"…"}`, `{"type":"ping"}`.
//! Server → client: events `{"channel","offset","epoch","data"}`, and
//! `{"type":"subscribed"|"unsubscribed"|"published"|"pong"|"error",…}`, and
//! `{"type":"deleted","channel":"C"}` when a publisher deleted a subscribed channel (the
//! subscription ends; the connection stays).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hopline_edge::body::{Body, RequestBody};
use hopline_edge::service::Upgraded;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio::sync::watch;

use crate::channel::{Channel, Registration};
use crate::channel_log::{Behind, Event, Position, Start};
use crate::direct::{Kind, Shared, Stopped, Watch};
use crate::frames::ws_frame;
use crate::hooks::{self, Ask, Verdict};
use crate::hub::{Hub, Settings};
use crate::request::{Query, authorize, bearer, check_last, valid_channel};
use crate::ws::{self, Decoder, Deflate, Deflater, Message, Opcode, code};

fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    let body = format!("{} {message}\n", status.as_u16());
    let mut r = Response::new(Body::full(body.clone()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

/// Where a `{"type":"subscribe"}` message starts: after `"since":"EPOCH:OFFSET"`, with
/// the latest `"last":N` (at most `history`), or from now; as `?since=` and `?last=`.
fn subscribe_start(v: &serde_json::Value, history: usize) -> Result<Start, String> {
    let since = v
        .get("since")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty());
    match (since, v.get("last")) {
        (Some(_), Some(_)) => Err("since and last cannot go together".into()),
        (Some(t), None) => crate::request::position(t).map(Start::After),
        (None, Some(n)) => {
            let n = n
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("bad last {n}: expected a number of events from 1"))?;
            check_last(n, history)?;
            Ok(Start::Latest(n))
        }
        (None, None) => Ok(Start::Now),
    }
}

/// Who is at the other end, for the application's hooks.
#[derive(Debug, Clone)]
pub struct Client {
    pub peer: std::net::SocketAddr,
    /// The handshake's fields the hooks pass on.
    pub hook_headers: Vec<(String, String)>,
}

/// Check the handshake, answer 101 (or 200 to an HTTP/2 extended CONNECT) and start the
/// connection's task once the edge hands the raw stream over.
pub(crate) fn upgrade(
    hub: Arc<Hub>,
    req: &mut Request<RequestBody>,
    channel: String,
    query: Query,
    settings: Arc<Settings>,
    client: Option<Box<Client>>,
) -> Response<Body> {
    let h2 = req.version() == http::Version::HTTP_2;
    let headers = req.headers();
    if !h2 && req.method() != http::Method::GET {
        return refuse(StatusCode::BAD_REQUEST, "a WebSocket handshake is a GET");
    }
    if !h2
        && !headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
    {
        return refuse(StatusCode::BAD_REQUEST, "Connection: Upgrade is missing");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        != Some("13")
    {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version 13 is required",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let accept = if h2 {
        None
    } else {
        match headers
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
        {
            Some(k) if ws::valid_key(k) => Some(ws::accept_key(k)),
            _ => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "Sec-WebSocket-Key must be 16 bytes in base64",
                );
            }
        }
    };
    let token = bearer(headers, &query).map(str::to_string);
    let start = match query.start(settings.retention.history) {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
    };
    if !channel.is_empty()
        && let Err((s, m)) = authorize(
            &settings.config.subscribe,
            token.as_deref(),
            &channel,
            "subscribe",
        )
    {
        return refuse(s, &m);
    }
    let deflate = ws::negotiate_deflate(
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let Some(on_upgrade) = hopline_edge::service::on_upgrade(req) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded",
        );
    };
    let first = (!channel.is_empty()).then_some((channel, start));
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => run(io, hub, settings, deflate, token, first, client).await,
            Err(e) => tracing::debug!(target: "hopline::realtime", "WebSocket upgrade failed: {e}"),
        }
    });
    // HTTP/2 extended CONNECT: 200; HTTP/1.1: 101 with the accept key
    let mut r = Response::new(Body::empty());
    if let Some(accept) = accept {
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
    }
    if let Some(d) = deflate
        && let Ok(v) = HeaderValue::from_str(&d.response())
    {
        r.headers_mut().insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    r
}

struct Sub {
    ch: Arc<Channel>,
    pos: Position,
    rx: watch::Receiver<u64>,
    /// Its place in the channel's presence (when the hub keeps it): left when dropped.
    _presence: Option<crate::channel::Presence>,
}

/// Why a connection ends.
enum End {
    /// The peer closed or vanished.
    Gone,
    /// Send this close frame, then close.
    Close(u16, String),
}

struct Conn {
    hub: Arc<Hub>,
    settings: Arc<Settings>,
    token: Option<String>,
    /// Who the peer is, kept only when the hub has hooks (a connection stays small).
    client: Option<Box<Client>>,
    /// The connection's id in presence (made at its first subscription, when kept).
    presence_id: Option<Arc<str>>,
    subs: Vec<Sub>,
    deflater: Option<Deflater>,
    /// Bytes to send that were made for this connection (replies, compressed frames).
    out: BytesMut,
    /// Frames to send in order: shared event frames and pieces of `out`.
    frames: smallvec::SmallVec<[Bytes; 4]>,
    /// The socket, shared with the publishers of `direct`'s channel.
    shared: Arc<Shared>,
    /// Set while publishers write to this connection (one subscription, no compression).
    direct: Option<Registration>,
    /// A publisher's write left bytes to flush.
    flush: bool,
}

impl Conn {
    /// Take the socket back from the publishers: what they began is finished first, and
    /// the subscription's position is where they left it.
    fn take_over(&mut self) {
        let Some(reg) = &self.direct else { return };
        let sub = self
            .subs
            .iter_mut()
            .find(|s| Arc::ptr_eq(&s.ch, &reg.channel));
        let (tail, flush) = self.shared.take_back(sub.map(|s| &mut s.pos));
        if let Some(tail) = tail {
            self.frames.push(tail);
        }
        self.flush |= flush;
    }

    /// Hand the socket to the publishers again when nothing of the task's is left to
    /// write; (re)register or unregister with the channel as the subscriptions allow.
    fn give_back(&mut self) {
        let eligible = self.deflater.is_none() && self.subs.len() == 1;
        if !eligible {
            self.direct = None;
            return;
        }
        let sub = &self.subs[0];
        if !self
            .direct
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(&r.channel, &sub.ch))
        {
            self.direct = Some(sub.ch.register(self.shared.clone()));
        }
        self.shared.hand_over(&sub.pos);
        // a publication since the task last read the log may have found the socket not
        // yet registered (or taken back) and offered it to nobody: the task looks again
        if sub.rx.has_changed().unwrap_or(false) {
            self.shared.wake.notify_one();
        }
    }

    fn reply(&mut self, value: serde_json::Value) {
        let text = value.to_string();
        self.send_text(text.as_bytes());
    }

    fn send_text(&mut self, payload: &[u8]) {
        match self.deflater.as_mut() {
            Some(d) => d.encode(&mut self.out, Opcode::Text, payload),
            None => ws::encode_frame(&mut self.out, true, false, Opcode::Text, payload),
        }
    }

    async fn subscribe(&mut self, channel: &str, start: Start) -> Result<(), End> {
        if self.subs.iter().any(|s| &*s.ch.name == channel) {
            self.reply(serde_json::json!({"type": "error", "channel": channel, "message": "already subscribed"}));
            return Ok(());
        }
        if self.subs.len() >= self.settings.max_subscriptions {
            self.reply(serde_json::json!({"type": "error", "channel": channel,
                "message": format!("at most {} subscriptions per connection", self.settings.max_subscriptions)}));
            return Ok(());
        }
        let ch = self
            .hub
            .channel(channel)
            .await
            .map_err(|e| End::Close(code::INTERNAL, e.to_string()))?;
        let rx = ch.subscribe();
        let since = ch.resolve(&start);
        let read = ch.read(since.as_ref(), 0);
        let recovered = since.is_none() || read.recovered;
        if !recovered {
            self.hub.metrics.drops.fetch_add(1, Ordering::Relaxed);
        }
        let pos = match since {
            Some(p) if read.recovered => p,
            _ => read.position,
        };
        self.reply(serde_json::json!({"type": "subscribed", "channel": channel,
            "epoch": &*pos.epoch, "offset": pos.offset, "recovered": recovered}));
        let presence = self.settings.config.presence.then(|| {
            // one id for the connection, its token's sub and info
            let client = self
                .presence_id
                .get_or_insert_with(crate::request::new_client_id)
                .clone();
            let claims = crate::request::token_claims(
                &self.settings.config.subscribe,
                self.token.as_deref(),
            );
            ch.join(crate::channel::Member {
                client,
                sub: claims.as_ref().and_then(|c| c.sub.clone()),
                info: claims.and_then(|c| c.info),
                transport: "websocket",
                since_ms: crate::channel_log::now_ms(),
            })
        });
        self.subs.push(Sub {
            ch,
            pos,
            rx,
            _presence: presence,
        });
        Ok(())
    }

    /// Queue every subscription's new events (shared frames, not copied, unless
    /// compressed); cut a slow consumer.
    fn deliver(&mut self) -> Result<(), End> {
        let mut batch: smallvec::SmallVec<[Arc<Event>; 4]> = smallvec::SmallVec::new();
        let mut i = 0;
        while i < self.subs.len() {
            loop {
                let sub = &mut self.subs[i];
                sub.rx.borrow_and_update();
                batch.clear();
                let read = sub
                    .ch
                    .next_batch(&sub.pos, 256, self.settings.client_queue, &mut batch);
                if matches!(read, Err(Behind::Lost)) && sub.ch.is_gone() {
                    // (deleted: told below, not cut)
                    break;
                }
                if let Err(why) = read {
                    self.hub
                        .metrics
                        .slow_consumers
                        .fetch_add(1, Ordering::Relaxed);
                    let reason = match why {
                        Behind::Queue => "slow consumer: send queue full",
                        Behind::Lost => "slow consumer: fell out of history",
                    };
                    return Err(End::Close(code::SLOW_CONSUMER, reason.into()));
                }
                let Some(last) = batch.last() else { break };
                sub.pos.offset = last.offset;
                let n = batch.len();
                for e in &batch {
                    let frame = ws_frame(&sub.ch.name, &sub.pos.epoch, e);
                    match self.deflater.as_mut() {
                        None => {
                            if !self.out.is_empty() {
                                // keep the order: what was queued before goes first
                                let before = std::mem::take(&mut self.out).freeze();
                                self.frames.push(before);
                            }
                            self.frames.push(frame);
                        }
                        Some(d) => d.encode(&mut self.out, Opcode::Text, frame_payload(&frame)),
                    }
                }
                self.hub
                    .metrics
                    .deliveries
                    .fetch_add(n as u64, Ordering::Relaxed);
                if n < 256 {
                    break;
                }
            }
            if self.subs[i].ch.is_gone() {
                // deleted: what was published before went out above; the client is told
                // and the subscription ends (the connection stays for its others)
                let sub = self.subs.remove(i);
                self.reply(serde_json::json!({"type": "deleted", "channel": &*sub.ch.name}));
                continue;
            }
            i += 1;
        }
        Ok(())
    }

    /// The application's hook for a command of this connection (allowed when none).
    async fn ask(
        &self,
        event: hooks::Event,
        channel: &str,
        claims: Option<&crate::token::Claims>,
        data: Option<&[u8]>,
    ) -> Verdict {
        let Some(client) = &self.client else {
            return Verdict::Allow(None);
        };
        self.hub
            .hook(
                &self.settings,
                Ask {
                    event,
                    channel,
                    transport: "websocket",
                    client: Some(client.peer),
                    claims,
                    headers: &client.hook_headers,
                    data,
                },
            )
            .await
    }

    async fn command(&mut self, text: &[u8]) -> Result<(), End> {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(text) else {
            self.reply(serde_json::json!({"type": "error", "message": "expected a JSON object with a \"type\""}));
            return Ok(());
        };
        let kind = v["type"].as_str().unwrap_or("");
        let channel = v["channel"].as_str().unwrap_or("").to_string();
        let needs_channel = matches!(kind, "subscribe" | "unsubscribe" | "publish" | "presence");
        if needs_channel && !valid_channel(&channel) {
            self.reply(
                serde_json::json!({"type": "error", "message": "bad or missing channel name"}),
            );
            return Ok(());
        }
        match kind {
            "ping" => self.reply(serde_json::json!({"type": "pong"})),
            "subscribe" => {
                let claims = match authorize(&self.settings.config.subscribe, self.token.as_deref(), &channel, "subscribe") {
                    Ok(c) => c,
                    Err((_, m)) => {
                        self.reply(serde_json::json!({"type": "error", "channel": channel, "message": m}));
                        return Ok(());
                    }
                };
                if let Verdict::Deny(_, m) = self.ask(hooks::Event::Subscribe, &channel, claims.as_ref(), None).await {
                    self.reply(serde_json::json!({"type": "error", "channel": channel, "message": m}));
                    return Ok(());
                }
                let start = match subscribe_start(&v, self.settings.retention.history) {
                    Ok(s) => s,
                    Err(m) => {
                        self.reply(serde_json::json!({"type": "error", "channel": channel, "message": m}));
                        return Ok(());
                    }
                };
                self.take_over();
                self.subscribe(&channel, start).await?;
            }
            "presence" => {
                // subscribers' access to the channel, as for subscribing
                if let Err((_, m)) = authorize(&self.settings.config.subscribe, self.token.as_deref(), &channel, "subscribe") {
                    self.reply(serde_json::json!({"type": "error", "channel": channel, "message": m}));
                    return Ok(());
                }
                if !self.settings.config.presence {
                    self.reply(serde_json::json!({"type": "error", "channel": channel, "message": "this hub keeps no presence"}));
                    return Ok(());
                }
                let mut v = crate::request::presence_view(&channel, self.hub.existing(&channel).as_deref(), true);
                v["type"] = "presence".into();
                self.reply(v);
            }
            "unsubscribe" => {
                self.take_over();
                self.subs.retain(|s| *s.ch.name != *channel);
                self.reply(serde_json::json!({"type": "unsubscribed", "channel": channel}));
            }
            "publish" => {
                let claims = match authorize(&self.settings.config.publish, self.token.as_deref(), &channel, "publish") {
                    Ok(c) => c,
                    Err((_, m)) => {
                        self.reply(serde_json::json!({"type": "error", "channel": channel, "message": m}));
                        return Ok(());
                    }
                };
                let data = match &v["data"] {
                    serde_json::Value::String(s) => Bytes::from(s.clone()),
                    serde_json::Value::Null => Bytes::new(),
                    other => Bytes::from(other.to_string()),
                };
                if data.len() > self.settings.max_message {
                    return Err(End::Close(code::TOO_BIG, "publication over max_message".into()));
                }
                let data = match self.ask(hooks::Event::Publish, &channel, claims.as_ref(), Some(&data)).await {
                    Verdict::Allow(Some(other)) => other,
                    Verdict::Allow(None) => data,
                    Verdict::Deny(_, m) => {
                        self.reply(serde_json::json!({"type": "error", "channel": channel, "message": m}));
                        return Ok(());
                    }
                };
                match self.hub.publish(&channel, data).await {
                    Ok(p) => self.reply(serde_json::json!({"type": "published", "channel": channel, "epoch": &*p.position.epoch, "offset": p.position.offset})),
                    Err(e) => self.reply(serde_json::json!({"type": "error", "channel": channel, "message": e.to_string()})),
                }
            }
            _ => self.reply(serde_json::json!({"type": "error", "message": "unknown type (subscribe, unsubscribe, publish, presence, ping)"})),
        }
        Ok(())
    }
}

/// The payload of an unmasked server frame made by [`ws::frame`].
fn frame_payload(frame: &[u8]) -> &[u8] {
    let at = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(at..).unwrap_or(&[])
}

/// Resolves when any subscription's channel grew (never when there are none).
async fn any_changed(subs: &mut [Sub]) {
    match subs {
        [] => std::future::pending().await,
        [one] => {
            if one.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        many => {
            let waits = many
                .iter_mut()
                .map(|s| Box::pin(async move { s.rx.changed().await }));
            let _ = futures_util::future::select_all(waits).await;
        }
    }
}

/// Resolves when the connection has something new to send: a publisher left it work
/// (direct mode) or a subscribed channel grew.
async fn changed(direct: bool, shared: &Shared, subs: &mut [Sub]) {
    if direct {
        shared.wake.notified().await
    } else {
        any_changed(subs).await
    }
}

/// A WebSocket connection's [`Watch`]: its publishers' wake-ups (direct) or its
/// channels' (otherwise), and the furthest it is behind in any of them.
struct WsWatch<'a> {
    direct: bool,
    shared: &'a Shared,
    subs: &'a mut [Sub],
}

impl Watch for WsWatch<'_> {
    fn woken(&mut self) -> impl std::future::Future<Output = ()> + Send {
        changed(self.direct, self.shared, self.subs)
    }

    fn behind(&self) -> u64 {
        self.subs
            .iter()
            .map(|s| s.ch.backlog(s.pos.offset))
            .max()
            .unwrap_or(0)
    }
}

/// A WebSocket connection's task, from the upgrade to the close.
async fn run(
    io: Upgraded,
    hub: Arc<Hub>,
    settings: Arc<Settings>,
    deflate: Option<Deflate>,
    token: Option<String>,
    first: Option<(String, Start)>,
    client: Option<Box<Client>>,
) {
    hub.metrics.ws_open.fetch_add(1, Ordering::Relaxed);
    let shared = Shared::new(io, Kind::WebSocket);
    let mut conn = Conn {
        hub: hub.clone(),
        settings,
        token,
        client,
        presence_id: None,
        subs: Vec::new(),
        deflater: deflate.map(Deflater::new),
        out: BytesMut::new(),
        frames: smallvec::SmallVec::new(),
        shared,
        direct: None,
        flush: false,
    };
    let end = conn.serve(deflate, first).await;
    conn.close(end).await;
    hub.metrics.ws_open.fetch_sub(1, Ordering::Relaxed);
}

impl Conn {
    /// The connection's life: subscribe to `first`, then, turn by turn, deliver new
    /// events, write, hand the socket to the publishers, and wait for the peer, a
    /// publication, the ping interval or the server's shutdown. What ends it.
    async fn serve(&mut self, deflate: Option<Deflate>, first: Option<(String, Start)>) -> End {
        let mut decoder = Decoder::new(self.settings.max_message, deflate);
        let mut inbuf = BytesMut::new();
        let mut closing = self.hub.closing();
        let ping_every = self.settings.ping;
        let write_timeout = ping_every.max(Duration::from_secs(5));
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut pings_unanswered = 0u32;
        let mut was_up = self.hub.engine_up();
        // (boxed: the engine's futures are large and an idle connection should not carry
        // their space for its whole life)
        if let Some((channel, start)) = first
            && let Err(e) = Box::pin(self.subscribe(&channel, start)).await
        {
            return e;
        }
        loop {
            self.take_over();
            if let Err(e) = self.deliver() {
                return e;
            }
            // write, but keep watching the channels: a client that does not read is cut
            // once what it has not taken passes client_queue
            let woke = match self.write_queued(write_timeout).await {
                Ok(woke) => woke,
                Err(e) => return e,
            };
            let up = self.hub.engine_up();
            if was_up && !up && !self.subs.is_empty() {
                return End::Close(
                    code::INTERNAL,
                    "channel engine unavailable; reconnect with your position".into(),
                );
            }
            was_up = up;
            self.give_back();
            if woke {
                // events may have come while it wrote
                continue;
            }
            let direct = self.direct.is_some();
            tokio::select! {
                r = self.shared.read_buf(&mut inbuf) => {
                    match r {
                        Ok(0) | Err(_) => return End::Gone,
                        Ok(_) => {}
                    }
                    if let Err(e) = self.take_input(&mut decoder, &mut inbuf, &mut pings_unanswered).await {
                        return e;
                    }
                }
                _ = changed(direct, &self.shared, &mut self.subs) => {}
                _ = ping.tick() => {
                    if pings_unanswered >= 2 {
                        return End::Close(code::POLICY, "no pong to two pings".into());
                    }
                    pings_unanswered += 1;
                    ws::encode_frame(&mut self.out, true, false, Opcode::Ping, b"");
                }
                _ = closing.changed() => {
                    return End::Close(code::GOING_AWAY, "server shutting down".into());
                }
            }
        }
    }

    /// Write what is queued (then flush), watching the subscriptions meanwhile. Ok(true)
    /// when the connection was woken while it wrote (events may be waiting).
    async fn write_queued(&mut self, write_timeout: Duration) -> Result<bool, End> {
        if !self.out.is_empty() {
            // (taken whole: an idle connection keeps no write buffer)
            let out = std::mem::take(&mut self.out).freeze();
            self.frames.push(out);
        }
        let mut frames = std::mem::take(&mut self.frames);
        let flush = std::mem::take(&mut self.flush);
        // (boxed: kept out of an idle connection's future; skipped when there is nothing
        // to do)
        let written = if frames.is_empty() && !flush {
            Ok(false)
        } else {
            let client_queue = self.settings.client_queue;
            let mut watch = WsWatch {
                direct: self.direct.is_some(),
                shared: &self.shared,
                subs: &mut self.subs,
            };
            Box::pin(self.shared.write_frames(
                &mut frames,
                flush,
                write_timeout,
                client_queue,
                &mut watch,
            ))
            .await
        };
        // (the emptied vector goes back: no allocation next time)
        self.frames = frames;
        written.map_err(|why| {
            if matches!(why, Stopped::Slow) {
                self.hub
                    .metrics
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
            }
            End::Gone
        })
    }

    /// Act on the messages the peer sent (what `inbuf` holds of them): commands, pings,
    /// pongs, a close or a violation.
    async fn take_input(
        &mut self,
        decoder: &mut Decoder,
        inbuf: &mut BytesMut,
        pings_unanswered: &mut u32,
    ) -> Result<(), End> {
        loop {
            match decoder.decode(inbuf) {
                Ok(None) => break,
                Ok(Some(Message::Text(t))) => Box::pin(self.command(&t)).await?,
                Ok(Some(Message::Binary(_))) => {
                    self.reply(serde_json::json!({"type": "error", "message": "binary messages are not understood; send JSON text"}));
                }
                Ok(Some(Message::Ping(p))) => {
                    ws::encode_frame(&mut self.out, true, false, Opcode::Pong, &p);
                }
                Ok(Some(Message::Pong(_))) => *pings_unanswered = 0,
                Ok(Some(Message::Close(c))) => {
                    // echo the peer's code (RFC 6455 §5.5.1)
                    let code = c.map_or(code::NORMAL, |(code, _)| code);
                    return Err(End::Close(code, String::new()));
                }
                Err(v) => {
                    self.hub
                        .metrics
                        .ws_violations
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(End::Close(v.code, v.reason.into()));
                }
            }
        }
        if inbuf.is_empty() {
            // an idle connection keeps no read buffer (the next read reserves a little)
            *inbuf = BytesMut::new();
        } else if let Some(n) = Decoder::frame_len(inbuf) {
            // room for the rest of the frame under way (its length was checked against
            // max_message by the decoder already)
            inbuf.reserve(
                n.saturating_sub(inbuf.len())
                    .min(self.settings.max_message + 14),
            );
        }
        Ok(())
    }

    /// End the connection: the publishers stop writing, then, for a close, what is
    /// queued and the close frame go (within a second).
    async fn close(&mut self, end: End) {
        self.take_over();
        self.direct = None;
        let End::Close(code, reason) = end else {
            return;
        };
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&ws::close_frame(code, &reason));
        let shared = &self.shared;
        let frames = &mut self.frames;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            for f in frames.drain(..) {
                shared.write_all(&f).await?;
            }
            shared.write_all(&out).await?;
            shared.flush().await?;
            shared.shutdown().await
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    /// An idle WebSocket connection costs its task's future (plus its socket): keep the
    /// engine's large futures boxed out of it (an idle subscriber costs ~2.3 KiB of RSS
    /// in all, bench/realtime.sh).
    #[test]
    fn an_idle_connection_future_stays_small() {
        let (a, _b) = tokio::io::duplex(64);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let size = rt.block_on(async {
            let hub = crate::hub::Hub::new("t", &crate::config::RealtimeConfig::default()).unwrap();
            let settings = hub.settings();
            let f = super::run(Box::new(a), hub, settings, None, None, None, None);
            std::mem::size_of_val(&f)
        });
        assert!(size <= 1400, "the session future grew to {size} bytes");
    }

    /// A publication between the task's last read of the log and its registration with
    /// the channel reaches no socket from the publisher's side: the task must be told to
    /// look again, or the event waits for the next publication (or forever).
    #[tokio::test]
    async fn an_event_published_before_registration_wakes_the_task() {
        use futures_util::FutureExt;
        let (a, _b) = tokio::io::duplex(1 << 16);
        let hub = crate::hub::Hub::new("t", &crate::config::RealtimeConfig::default()).unwrap();
        let shared = crate::direct::Shared::new(Box::new(a), crate::direct::Kind::WebSocket);
        let mut conn = super::Conn {
            hub: hub.clone(),
            settings: hub.settings(),
            token: None,
            client: None,
            presence_id: None,
            subs: Vec::new(),
            deflater: None,
            out: bytes::BytesMut::new(),
            frames: smallvec::SmallVec::new(),
            shared: shared.clone(),
            direct: None,
            flush: false,
        };
        assert!(
            conn.subscribe("orders", crate::channel_log::Start::Now)
                .await
                .is_ok()
        );
        conn.take_over();
        assert!(conn.deliver().is_ok());
        // nothing new: handing the socket over leaves no wake-up behind
        conn.give_back();
        assert!(conn.direct.is_some());
        assert!(shared.wake.notified().now_or_never().is_none());
        // taken back (the task writes), the channel is unregistered meanwhile (as before
        // its first registration): a publication offers the event to nobody
        conn.take_over();
        conn.direct = None;
        hub.publish("orders", bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert!(shared.wake.notified().now_or_never().is_none());
        conn.give_back();
        assert!(
            shared.wake.notified().now_or_never().is_some(),
            "the task was not told of the event it missed"
        );
        // woken, it delivers the event from the log
        conn.take_over();
        assert!(conn.deliver().is_ok());
        assert_eq!(conn.subs[0].pos.offset, 1);
        assert!(!conn.frames.is_empty());
    }
}
