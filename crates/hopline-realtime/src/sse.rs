//! Server-Sent Events: a subscriber holds a position in the channel's log, not a queue.
//! Over HTTP/1.1 the stream is written straight to the socket once the edge has sent
//! the head (`Transfer-Encoding: chunked`) and handed the connection over — by the
//! publishers when they can ([`crate::direct`]), by the stream's task otherwise; over
//! HTTP/2 and HTTP/1.0 it is a response body that reads the log when polled.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hopline_edge::body::Body;
use hopline_edge::service::Upgraded;
use http::Response;
use http::header::{self, HeaderValue};
use http_body::Frame;
use smallvec::SmallVec;
use tokio::sync::watch;
use tokio_util::sync::ReusableBoxFuture;

use crate::channel::Channel;
use crate::channel_log::Position;
use crate::direct::{Kind, Shared, Stopped, Watch};
use crate::frames::{chunk, json_string, sse_chunk, sse_deleted, sse_frame};
use crate::hub::Hub;

/// The answer to an SSE subscription from `since` (None: from now): `retry:`, a gap
/// event when the position could not be recovered, then the events. Over HTTP/1.1 the
/// stream is handed to [`socket_stream`] once the edge has sent the head; otherwise the
/// body streams it.
pub(crate) fn respond(
    hub: Arc<Hub>,
    ch: Arc<Channel>,
    since: Option<Position>,
    version: http::Version,
    send_timeout: Duration,
    presence: Option<crate::channel::Presence>,
) -> Response<Body> {
    let settings = hub.settings();
    let read = ch.read(since.as_ref(), 0);
    let mut first = format!("retry: {}\n", settings.sse_retry_ms);
    let pos = if since.is_some() && !read.recovered {
        // the position could not be recovered: say so, then go on from what is there
        hub.metrics.drops.fetch_add(1, Ordering::Relaxed);
        let p = read.position.clone();
        first.push_str(&format!(
            "event: gap\nid: {p}\ndata: {{\"recovered\":false,\"epoch\":{},\"offset\":{}}}\n\n",
            json_string(p.epoch.as_bytes()),
            p.offset
        ));
        p
    } else {
        since.unwrap_or(read.position)
    };
    first.push_str(": ok\n\n");
    let first = Bytes::from(first);
    // over HTTP/1.1 the stream is written straight to the socket, by the publishers
    // when they can (crate::direct); the body below serves HTTP/2 and HTTP/1.0
    let direct = (version == http::Version::HTTP_11)
        .then(|| (first.clone(), pos.clone(), hub.clone(), ch.clone()));
    // the stream's place in presence lives as long as whichever writes the stream
    let (body_presence, task_presence) = if direct.is_some() {
        (None, presence)
    } else {
        (presence, None)
    };
    hub.metrics.sse_open.fetch_add(1, Ordering::Relaxed);
    let rx = ch.subscribe();
    let closing = hub.closing();
    let body = SseBody {
        first: Some(first),
        pos,
        wait: ReusableBoxFuture::new(changed(rx.clone())),
        closing: ReusableBoxFuture::new(closed(closing)),
        ping: Box::pin(tokio::time::sleep(settings.ping)),
        ping_every: settings.ping,
        client_queue: settings.client_queue,
        ended: false,
        ch,
        hub,
        was_up: true,
        _presence: body_presence,
    };
    let mut r = Body::stream(body).event_stream();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if let Some((first, pos, hub, ch)) = direct {
        let taken = hopline_edge::service::take_over(&mut r);
        tokio::spawn(async move {
            if let Ok(io) = taken.await {
                socket_stream(io, hub, ch, pos, first, send_timeout).await;
            }
            drop(task_presence);
        });
    }
    r
}

async fn changed(mut rx: watch::Receiver<u64>) -> (watch::Receiver<u64>, bool) {
    let ok = rx.changed().await.is_ok();
    (rx, ok)
}

async fn closed(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A Server-Sent Events stream: no queue of its own, a position in the channel's log.
struct SseBody {
    first: Option<Bytes>,
    ch: Arc<Channel>,
    hub: Arc<Hub>,
    pos: Position,
    wait: ReusableBoxFuture<'static, (watch::Receiver<u64>, bool)>,
    closing: ReusableBoxFuture<'static, ()>,
    ping: Pin<Box<tokio::time::Sleep>>,
    ping_every: std::time::Duration,
    client_queue: u64,
    ended: bool,
    was_up: bool,
    _presence: Option<crate::channel::Presence>,
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.hub.metrics.sse_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.closing.poll(cx).is_ready() {
            this.ended = true;
            return Poll::Ready(None);
        }
        loop {
            // what is there to send?
            if this.ch.backlog(this.pos.offset) > this.client_queue {
                // a slow consumer: cut, never slowing the channel down
                this.hub
                    .metrics
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                this.ended = true;
                return Poll::Ready(None);
            }
            let read = this.ch.read(Some(&this.pos), 256);
            if !read.recovered && !this.ch.is_gone() {
                // fell out of history while the client was slow: cut (it resumes from
                // its Last-Event-ID and is told of the gap)
                this.hub
                    .metrics
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                this.ended = true;
                return Poll::Ready(None);
            }
            if !read.events.is_empty() {
                let mut out = BytesMut::new();
                for e in &read.events {
                    out.extend_from_slice(&sse_frame(&read.position.epoch, e));
                }
                this.hub
                    .metrics
                    .deliveries
                    .fetch_add(read.events.len() as u64, Ordering::Relaxed);
                this.pos = read.position;
                let deadline = tokio::time::Instant::now() + this.ping_every;
                this.ping.as_mut().reset(deadline);
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
            if this.ch.is_gone() {
                // deleted: everything published before went out above
                this.ended = true;
                return Poll::Ready(Some(Ok(Frame::data(sse_deleted(&this.ch.name)))));
            }
            let up = this.hub.engine_up();
            if up != this.was_up {
                this.was_up = up;
                let note: &'static [u8] = if up {
                    b": engine back\n\n"
                } else {
                    b": engine unavailable; events resume when it is back\n\n"
                };
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(note)))));
            }
            match this.wait.poll(cx) {
                Poll::Ready((rx, ok)) => {
                    if !ok {
                        this.ended = true;
                        return Poll::Ready(None);
                    }
                    this.wait.set(changed(rx));
                    continue;
                }
                Poll::Pending => {}
            }
            if this.ping.as_mut().poll(cx).is_ready() {
                let deadline = tokio::time::Instant::now() + this.ping_every;
                this.ping.as_mut().reset(deadline);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b": ping\n\n")))));
            }
            return Poll::Pending;
        }
    }
}

/// A Server-Sent Events stream over HTTP/1.1, written straight to its socket once the
/// edge has sent the head (`Transfer-Encoding: chunked`) and handed the connection over:
/// events by the publishers when they can, by this task otherwise; a comment every ping
/// interval; cut (last chunk, then close) when the subscriber falls more than
/// `client_queue` behind or out of history, the channel is deleted (after an `event:
/// deleted`), or the server shuts down; closed without a
/// last chunk when no write makes progress for `write_timeout` (the edge's send timeout).
async fn socket_stream(
    io: Upgraded,
    hub: Arc<Hub>,
    ch: Arc<Channel>,
    mut pos: Position,
    first: Bytes,
    write_timeout: Duration,
) {
    let settings = hub.settings();
    hub.metrics.sse_open.fetch_add(1, Ordering::Relaxed);
    // (a subscriber as the channel counts them: it is not swept away)
    let _rx = ch.subscribe();
    let shared = Shared::new(io, Kind::Sse);
    let registration = ch.register(shared.clone());
    let mut closing = hub.closing();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + settings.ping, settings.ping);
    let mut frames: SmallVec<[Bytes; 4]> = smallvec::smallvec![chunk(&first)];
    let mut was_up = true;
    let mut sink = BytesMut::new();
    let last_chunk = 'stream: loop {
        // take the socket back from the publishers
        let (tail, flush) = shared.take_back(Some(&mut pos));
        if let Some(tail) = tail {
            frames.insert(0, tail);
        }
        if ch.backlog(pos.offset) > settings.client_queue {
            hub.metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
            break 'stream true;
        }
        let read = ch.read(Some(&pos), 256);
        if !read.recovered && !ch.is_gone() {
            // fell out of history: cut (it resumes from its Last-Event-ID and is told
            // of the gap)
            hub.metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
            break 'stream true;
        }
        // (a full read: more may be there already)
        let more = read.events.len() == 256;
        if !read.events.is_empty() {
            for e in &read.events {
                frames.push(sse_chunk(&read.position.epoch, e));
            }
            hub.metrics
                .deliveries
                .fetch_add(read.events.len() as u64, Ordering::Relaxed);
            pos = read.position;
        }
        // deleted: what was published before goes out, then the client is told
        let deleted = !more && ch.is_gone();
        if deleted {
            frames.push(chunk(&sse_deleted(&ch.name)));
        }
        let up = hub.engine_up();
        if up != was_up {
            was_up = up;
            frames.push(chunk(if up {
                b": engine back\n\n"
            } else {
                b": engine unavailable; events resume when it is back\n\n"
            }));
        }
        // write, and keep an eye on how far behind the subscriber gets
        let mut watch = SseWatch {
            shared: &shared,
            ch: &ch,
            offset: pos.offset,
        };
        let written = shared
            .write_frames(
                &mut frames,
                flush,
                write_timeout,
                settings.client_queue,
                &mut watch,
            )
            .await;
        let woke = match written {
            Ok(woke) => woke || more,
            Err(why) => {
                if matches!(why, Stopped::Slow) {
                    hub.metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
                }
                break 'stream false;
            }
        };
        if deleted {
            break 'stream true;
        }
        shared.hand_over(&pos);
        if woke {
            continue;
        }
        tokio::select! {
            r = shared.read_buf(&mut sink) => match r {
                // (an SSE client sends nothing more; what it sends is dropped)
                Ok(n) if n > 0 => sink.clear(),
                _ => break 'stream false,
            },
            _ = shared.wake.notified() => {}
            _ = ping.tick() => frames.push(chunk(b": ping\n\n")),
            _ = closing.changed() => break 'stream true,
        }
    };
    // publishers stop before the stream ends
    drop(registration);
    if last_chunk {
        let (tail, _) = shared.take_back(None);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if let Some(t) = tail {
                shared.write_all(&t).await?;
            }
            shared.write_all(b"0\r\n\r\n").await?;
            shared.flush().await?;
            shared.shutdown().await
        })
        .await;
    }
    hub.metrics.sse_open.fetch_sub(1, Ordering::Relaxed);
}

/// An SSE stream's [`Watch`]: its publishers' wake-ups and its one channel.
struct SseWatch<'a> {
    shared: &'a Shared,
    ch: &'a Channel,
    offset: u64,
}

impl Watch for SseWatch<'_> {
    fn woken(&mut self) -> impl std::future::Future<Output = ()> + Send {
        self.shared.wake.notified()
    }

    fn behind(&self) -> u64 {
        self.ch.backlog(self.offset)
    }
}
