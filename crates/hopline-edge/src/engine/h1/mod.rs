//! The HTTP/1.1 connection: hopline's own, because the edge's speed and memory are
//! decided here. One task per connection reads request heads (httparse), hands each
//! request to the edge's service, and writes the response:
//!
//! - **idle connections hold no buffers**: between requests a plain TCP connection
//!   waits for readability with nothing allocated (nginx frees its header buffer the same
//!   way), so ten thousand idle keep-alive clients cost little memory;
//! - **files leave by `sendfile`** on plain TCP (head written on its own, body from the
//!   page cache, no copy through user space); small bodies go out with the head in one
//!   write. The head is not held back for the body (`MSG_MORE`, nginx's `tcp_nopush`):
//!   measured on loopback (BENCHMARKS.md) holding it made a 100 KiB response cost the
//!   server 14.1 µs of CPU instead of 10.5, and its p99 60 % longer, for 9 % more req/s
//!   from a load generator that woke up once less per response;
//! - **strict framing** (RFC 9112 §6): `Transfer-Encoding` with `Content-Length`,
//!   differing `Content-Length`s, a coding list not ending in `chunked`, or
//!   `Transfer-Encoding` in HTTP/1.0 are answered 400 and the connection closed — a
//!   smuggled request is never read;
//! - request bodies stream to the handler through a small channel, read only once the
//!   handler asks (`Expect: 100-continue` answered then); a body the handler did not
//!   read closes the connection after the response, with a lingering read so the
//!   client still sees the answer;
//! - timeouts: the header section must complete within `header_timeout` of its first
//!   byte (of the accept for a first request), an idle keep-alive connection closes
//!   after `keepalive_timeout`; graceful shutdown closes idle connections at once and
//!   busy ones after their response;
//! - `Upgrade` (WebSocket): after a 101 the raw connection (with any bytes already
//!   read) is handed to whoever asked through [`on_upgrade`];
//! - HTTP/2 prior knowledge on a plain listener is recognised by its preface and handed
//!   to hyper, which serves HTTP/2 (and HTTPS with ALPN `h2`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::engine::body::{Body, BoxError, RequestBody};
use crate::engine::clock;

/// The HTTP/2 connection preface a prior-knowledge client starts with.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Most header fields in one request head.
pub(crate) const MAX_HEADERS: usize = 100;
/// Bodies at least this large leave by `sendfile` when the connection is plain TCP.
pub(crate) const SENDFILE_MIN: u64 = 16 * 1024;
/// A first body chunk up to this size is written together with the head.
const COALESCE_MAX: usize = 64 * 1024;
/// Longest wait between two reads of a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// After an unread request body, how long and how much the connection keeps reading
/// (and discarding) after the response, so the client reads the answer before the close.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// A connection the HTTP/1.1 engine can run on.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath, when there is nothing between it and HTTP
    /// (enables buffer-free idle waits and `sendfile`).
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Transport for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {}

/// What the engine serves each request with.
pub(crate) trait Service: Send + Sync {
    /// Answer one request; `interim` (HTTP/1.1 clients) takes 1xx responses to send
    /// before the final one.
    fn call<'a>(
        &'a self,
        req: Request<RequestBody>,
        interim: Option<&'a Interim>,
    ) -> impl Future<Output = Response<Body>> + Send + 'a;
}

/// Interim (1xx) responses a handler relays to an HTTP/1.1 client before its final
/// response (RFC 9110 §15.2) — e.g. an origin's `103 Early Hints`. It lives in the
/// request's own future: nothing is allocated unless a 1xx arrives.
#[derive(Debug, Default)]
pub struct Interim {
    queue: parking_lot::Mutex<Vec<(StatusCode, Bytes)>>,
    ready: tokio::sync::Notify,
    /// On an HTTP/2 stream: hyper's queue of the stream, which sends them itself.
    h2: Option<hyper::ext::Http2Informational>,
}

impl Interim {
    /// Interim responses for an HTTP/2 stream of hyper's server.
    pub(crate) fn http2(queue: hyper::ext::Http2Informational) -> Interim {
        Interim {
            h2: Some(queue),
            ..Default::default()
        }
    }

    /// The queued 1xx heads, encoded for HTTP/1.1 one after the other (and taken).
    pub(crate) fn take_heads(&self) -> Vec<u8> {
        let heads = std::mem::take(&mut *self.queue.lock());
        let mut out = Vec::new();
        for (status, lines) in heads {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(status.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&lines);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Queue a 1xx head: its status and its field lines (`name: value\r\n` each).
    pub fn send(&self, status: StatusCode, lines: Bytes) {
        if !status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        let Some(h2) = &self.h2 else {
            self.queue.lock().push((status, lines));
            self.ready.notify_one();
            return;
        };
        // HTTP/2: the lines as fields, without the connection-specific ones it forbids
        let mut r = Response::new(());
        *r.status_mut() = status;
        for line in lines.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(trim_ows(&line[..colon])),
                HeaderValue::from_bytes(trim_ows(&line[colon + 1..])),
            ) else {
                continue;
            };
            if !matches!(
                name.as_str(),
                "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
            ) {
                r.headers_mut().append(name, value);
            }
        }
        h2.send(r);
    }
}

/// Await the handler's response, writing the 1xx heads it relays meanwhile.
async fn with_interim<T: Transport, F: Future<Output = Response<Body>>>(
    io: &mut T,
    mut fut: std::pin::Pin<&mut F>,
    interim: Option<&Interim>,
    send_timeout: Duration,
) -> Response<Body> {
    let Some(interim) = interim else {
        return fut.await;
    };
    let mut broken = false;
    loop {
        tokio::select! {
            biased;
            r = fut.as_mut() => {
                // 1xx heads queued in the same turn as the answer still go before it
                let heads = interim.take_heads();
                if !broken && !heads.is_empty() {
                    let _ = sent_within(send_timeout, io.write_all(&heads)).await;
                }
                return r;
            }
            _ = interim.ready.notified(), if !broken => {
                let heads = interim.take_heads();
                let sent = sent_within(send_timeout, async {
                    io.write_all(&heads).await?;
                    io.flush().await
                })
                .await;
                broken = sent.is_err();
            }
        }
    }
}

/// The engine's settings (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_header_bytes: usize,
    /// A response write that makes no progress this long closes the connection.
    pub send_timeout: Duration,
}

/// The server's "finish up and close" signal, as connections watch it: a flag to read
/// and a notification to wait on (one registration per connection, no per-request cost).
#[derive(Debug, Default)]
pub(crate) struct Closing {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Closing {
    /// Ask every connection to finish its request and close; idle ones close at once.
    pub(crate) fn start(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Closing has started.
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once closing has started (at once if it already has).
    pub(crate) async fn started(&self) {
        let notified = self.notify.notified();
        if self.is_set() {
            return;
        }
        notified.await
    }
}

/// How a connection's HTTP/1.1 life ended.
pub(crate) enum Outcome<T> {
    /// Closed (by either side, a timeout, an error or shutdown).
    Closed,
    /// The client spoke HTTP/2 prior knowledge: serve it with these bytes first.
    Http2(Rewind<T>),
}

// ---------------------------------------------------------------------------------
// request bodies

/// The receiving end of a request body read by the connection task.
pub struct H1RequestBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    want: Option<oneshot::Sender<()>>,
    remaining: Option<u64>,
    done: bool,
}

impl H1RequestBody {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(want) = self.want.take() {
            let _ = want.send(());
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                if let Some(r) = &mut self.remaining {
                    *r = r.saturating_sub(b.len() as u64);
                }
                Poll::Ready(Some(Ok(http_body::Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.done || self.remaining == Some(0)
    }

    pub(crate) fn size_hint(&self) -> http_body::SizeHint {
        match self.remaining {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

/// How a message body is framed on the wire, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Everything until the connection closes (responses without a length only).
    UntilClose,
    /// The body is complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data: this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// A body that breaks its framing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadChunk(pub(crate) &'static str);

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;

impl Decoder {
    /// A chunked body, before its first chunk.
    pub(crate) fn chunked() -> Decoder {
        Decoder::Chunked(Chunk::Size)
    }

    /// Take the next piece of body from `buf`: `Ok(Some(bytes))` data, `Ok(None)` need
    /// more input (or done: see `self`). Consumes framing bytes as it goes.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, BadChunk> {
        loop {
            match *self {
                Decoder::Done => return Ok(None),
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Decoder::Length(0) => {
                    *self = Decoder::Done;
                    return Ok(None);
                }
                Decoder::Length(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (n.min(buf.len() as u64)) as usize;
                    *self = Decoder::Length(n - take as u64);
                    return Ok(Some(buf.split_to(take).freeze()));
                }
                Decoder::Chunked(Chunk::Size) => {
                    let Some(eol) = find_crlf(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(BadChunk("chunk-size line too long"));
                        }
                        return Ok(None);
                    };
                    let line = buf.split_to(eol + 2);
                    let line = &line[..eol];
                    let size_part = match line.iter().position(|&b| b == b';') {
                        Some(i) => &line[..i],
                        None => line,
                    };
                    let size_part = trim_ows(size_part);
                    if size_part.is_empty() || size_part.len() > 16 {
                        return Err(BadChunk("bad chunk size"));
                    }
                    let mut size: u64 = 0;
                    for &b in size_part {
                        let d = (b as char).to_digit(16).ok_or(BadChunk("bad chunk size"))?;
                        size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d as u64))
                            .ok_or(BadChunk("chunk size overflows"))?;
                    }
                    *self = if size == 0 {
                        Decoder::Chunked(Chunk::Trailers)
                    } else {
                        Decoder::Chunked(Chunk::Data(size))
                    };
                }
                Decoder::Chunked(Chunk::Data(n)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (n.min(buf.len() as u64)) as usize;
                    let left = n - take as u64;
                    *self = if left == 0 {
                        Decoder::Chunked(Chunk::DataEnd)
                    } else {
                        Decoder::Chunked(Chunk::Data(left))
                    };
                    return Ok(Some(buf.split_to(take).freeze()));
                }
                Decoder::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BadChunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Trailers) => {
                    // Trailer fields are read and dropped; the section ends with an empty line.
                    let Some(eol) = find_crlf(buf) else {
                        if buf.len() > MAX_TRAILERS {
                            return Err(BadChunk("trailer section too long"));
                        }
                        return Ok(None);
                    };
                    buf.advance(eol + 2);
                    if eol == 0 {
                        *self = Decoder::Done;
                        return Ok(None);
                    }
                }
            }
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

// ---------------------------------------------------------------------------------
// upgrades

/// The client side of an upgraded connection (after `101 Switching Protocols`): the raw
/// connection, with any bytes the server had already read in front.
pub type Upgraded = Rewind<Box<dyn Transport>>;

impl<T: ?Sized + Transport> Transport for Box<T> {
    fn tcp(&self) -> Option<&TcpStream> {
        (**self).tcp()
    }
}

impl<T: Transport> Rewind<T> {
    /// The TCP socket underneath, when nothing sits between it and the caller (writes
    /// may go straight to it: the bytes read ahead in front only concern reads).
    pub fn tcp(&self) -> Option<&TcpStream> {
        self.inner.tcp()
    }
}

/// Stored in a request's extensions when it asks for an upgrade; resolves to the raw
/// connection once a 101 answer has been written (an error for any other answer).
#[derive(Debug)]
pub struct OnUpgrade(oneshot::Receiver<Upgraded>);

impl Future for OnUpgrade {
    type Output = io::Result<Upgraded>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.map_err(|_| io::Error::other("the connection was not upgraded (no 101 answer)"))
        })
    }
}

/// What a request's extensions carry (extensions must be `Clone`; the receiver is
/// taken out once).
#[derive(Clone)]
struct UpgradeSlot(Arc<parking_lot::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// Put on a response (by [`take_over`]): once its head is written with chunked framing,
/// the connection is handed to whoever holds the receiver instead of the body being
/// sent; the connection is not reused afterwards.
#[derive(Clone)]
pub(crate) struct TakeOverSlot(Arc<parking_lot::Mutex<Option<oneshot::Sender<Upgraded>>>>);

/// Ask for the raw connection of an HTTP/1.1 response once its head has gone out (e.g. a
/// stream of events written straight to the socket). Resolves to an error if the
/// response was sent another way (HTTP/2, HTTP/1.0, HEAD, an error answer instead).
pub fn take_over<B>(resp: &mut Response<B>) -> OnUpgrade {
    let (tx, rx) = oneshot::channel();
    resp.extensions_mut()
        .insert(TakeOverSlot(Arc::new(parking_lot::Mutex::new(Some(tx)))));
    OnUpgrade(rx)
}

/// Take the upgrade handle of a request that asked for one.
pub fn on_upgrade<B>(req: &mut Request<B>) -> Option<OnUpgrade> {
    let slot = req.extensions_mut().remove::<UpgradeSlot>()?;
    let rx = slot.0.lock().take()?;
    Some(OnUpgrade(rx))
}

/// A stream with some bytes already read from it put back in front.
pub struct Rewind<T> {
    pre: Option<Bytes>,
    inner: T,
}

impl<T> std::fmt::Debug for Rewind<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewind")
            .field("pre", &self.pre.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl<T> Rewind<T> {
    pub(crate) fn new(pre: Bytes, inner: T) -> Rewind<T> {
        Rewind {
            pre: (!pre.is_empty()).then_some(pre),
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut pre) = self.pre.take() {
            let n = pre.len().min(buf.remaining());
            buf.put_slice(&pre[..n]);
            pre.advance(n);
            if !pre.is_empty() {
                self.pre = Some(pre);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------
// the connection

/// A request head that cannot be served, and the status that says why.
struct Reject(StatusCode, &'static str);

/// What a parsed head tells the connection.
struct Head {
    req: Request<()>,
    decoder: Decoder,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
}

/// Serve HTTP/1.1 on `io` until the connection ends.
pub(crate) async fn serve<T: Transport, S: Service>(
    mut io: T,
    opts: &Options,
    service: &S,
    closing: &Closing,
) -> Outcome<T> {
    let mut buf = BytesMut::new();
    let mut first = true;
    // registered once for the connection's life, not once per request
    let closed = closing.started();
    tokio::pin!(closed);
    // one timer for the connection's whole life, moved lazily as it goes
    let sleep = tokio::time::sleep(opts.header_timeout);
    tokio::pin!(sleep);
    let mut timer = Timer::new(sleep.as_mut(), opts.header_timeout);
    // responses held back while more pipelined requests are already here (one write
    // for all of them); empty whenever the connection waits for the client
    let mut pending = Vec::new();
    loop {
        // ---- wait for a request head
        if buf.is_empty() {
            // idle: hold no buffer while waiting
            buf = BytesMut::new();
            if !first {
                timer.set(opts.keepalive_timeout);
            }
            let ready = tokio::select! {
                biased;
                r = read_more(&mut io, &mut buf, 4096) => r,
                _ = timer.expired() => return Outcome::Closed,
                _ = &mut closed => return Outcome::Closed,
            };
            match ready {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(_) => {}
            }
        }
        if first && buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            // could be HTTP/2 prior knowledge: read until we know
            while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
                let n = tokio::select! {
                    r = read_more(&mut io, &mut buf, 64) => r,
                    _ = timer.expired() => return Outcome::Closed,
                };
                if !matches!(n, Ok(n) if n > 0) {
                    return Outcome::Closed;
                }
            }
        }
        // the preface's first line announces HTTP/2: what follows is HTTP/2's to judge (a
        // bad rest of the preface gets GOAWAY(PROTOCOL_ERROR), not an HTTP/1.1 page)
        if first && buf.starts_with(&H2_PREFACE[..16]) {
            return Outcome::Http2(Rewind::new(buf.freeze(), io));
        }
        // the first request's header time runs from the accept; a later one's from
        // when its head turns out not to be complete yet (in `cycle`)
        let header_time_running = first;
        first = false;
        // ---- the request and its response, in one boxed future: a connection waiting
        // for its next request then holds only the small state above
        let next = Box::pin(cycle(
            &mut io,
            &mut buf,
            &mut pending,
            opts,
            service,
            closing,
            &mut timer,
            header_time_running,
        ))
        .await;
        match next {
            Next::KeepAlive => {}
            Next::Close => return Outcome::Closed,
            Next::Upgrade(tx) => {
                let pre = buf.split().freeze();
                let _ = tx.send(Rewind::new(pre, Box::new(io) as Box<dyn Transport>));
                return Outcome::Closed;
            }
        }
    }
}

/// The connection's one timer, moved lazily: a request only notes its new deadline (a
/// coarse clock read); the tokio timer is re-armed only when it fires before that
/// deadline, or when a deadline comes sooner than the one it is armed for.
struct Timer<'a> {
    sleep: Pin<&'a mut tokio::time::Sleep>,
    /// When the connection times out, in [`clock::mono_ms`].
    at: u64,
    /// When `sleep` is armed to fire, in [`clock::mono_ms`].
    armed: u64,
}

impl<'a> Timer<'a> {
    /// `sleep` must be armed for `after` from now.
    fn new(sleep: Pin<&'a mut tokio::time::Sleep>, after: Duration) -> Timer<'a> {
        let at = clock::mono_ms() + after.as_millis() as u64;
        Timer {
            sleep,
            at,
            armed: at,
        }
    }

    /// Time out `after` from now (replacing the deadline before).
    fn set(&mut self, after: Duration) {
        self.at = clock::mono_ms() + after.as_millis() as u64;
        if self.at < self.armed {
            self.sleep.as_mut().reset(Instant::now() + after);
            self.armed = self.at;
        }
    }

    /// Completes when the deadline has passed.
    async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            let now = clock::mono_ms();
            if now >= self.at {
                return;
            }
            self.sleep
                .as_mut()
                .reset(Instant::now() + Duration::from_millis(self.at - now));
            self.armed = self.at;
        }
    }
}

/// What the connection does after an exchange.
enum Next {
    KeepAlive,
    Close,
    /// A 101 went out: hand the connection over.
    Upgrade(oneshot::Sender<Upgraded>),
}

/// Read the rest of a request head (within the header timeout), then serve it.
#[allow(clippy::too_many_arguments)]
async fn cycle<T: Transport, S: Service>(
    io: &mut T,
    buf: &mut BytesMut,
    pending: &mut Vec<u8>,
    opts: &Options,
    service: &S,
    closing: &Closing,
    timer: &mut Timer<'_>,
    mut header_time_running: bool,
) -> Next {
    let parsed = loop {
        match parse_head(buf, opts.max_header_bytes) {
            Ok(Some(h)) => break Ok(h),
            Ok(None) => {}
            Err(r) => break Err(r),
        }
        // about to wait for the client: what was held back goes out first
        if sent_within(opts.send_timeout, flush_pending(io, pending))
            .await
            .is_err()
        {
            return Next::Close;
        }
        if !header_time_running {
            timer.set(opts.header_timeout);
            header_time_running = true;
        }
        let n = tokio::select! {
            r = read_more(io, buf, 4096) => r,
            _ = timer.expired() => return Next::Close,
        };
        match n {
            Ok(0) | Err(_) => return Next::Close,
            Ok(_) => {}
        }
    };
    match parsed {
        Ok(head) => exchange(io, buf, pending, head, service, closing, opts.send_timeout).await,
        Err(Reject(status, why)) => {
            let _ = sent_within(opts.send_timeout, flush_pending(io, pending)).await;
            let _ = write_error(io, status, why).await;
            linger(io).await;
            Next::Close
        }
    }
}

/// One request: call the service (reading the body as it asks), write the response.
async fn exchange<T: Transport, S: Service>(
    io: &mut T,
    buf: &mut BytesMut,
    pending: &mut Vec<u8>,
    head: Head,
    service: &S,
    closing: &Closing,
    send_timeout: Duration,
) -> Next {
    let Head {
        req,
        mut decoder,
        mut keep_alive,
        expect_continue,
        upgrade,
    } = head;
    let is_head = req.method() == Method::HEAD;
    let version = req.version();
    // a request that writes on its own (100-continue, a body to pump, an upgrade) sends
    // what was held back first, so that the answers keep their order
    let plain = decoder.is_done() && !expect_continue && !upgrade;
    if !plain
        && sent_within(send_timeout, flush_pending(io, pending))
            .await
            .is_err()
    {
        return Next::Close;
    }
    let (mut parts, ()) = req.into_parts();
    let mut upgrade_tx = None;
    if upgrade {
        let (tx, rx) = oneshot::channel();
        parts
            .extensions
            .insert(UpgradeSlot(Arc::new(parking_lot::Mutex::new(Some(rx)))));
        upgrade_tx = Some(tx);
    }
    let mut pump = None;
    let body = if decoder.is_done() {
        RequestBody::Empty
    } else {
        let (tx, rx) = mpsc::channel(2);
        let (want_tx, want_rx) = oneshot::channel();
        pump = Some((tx, want_rx));
        RequestBody::H1(H1RequestBody {
            rx,
            want: Some(want_tx),
            remaining: match decoder {
                Decoder::Length(n) => Some(n),
                _ => None,
            },
            done: false,
        })
    };
    // the service's future and the body pump end before the response is written, so
    // their storage is shared with the writer's in this future
    // 1xx heads go to HTTP/1.1 clients only (RFC 9110 §15.2)
    let interim = Interim::default();
    let interim = (version == http::Version::HTTP_11).then_some(&interim);
    let (mut resp, body_error) = {
        let fut = service.call(Request::from_parts(parts, body), interim);
        tokio::pin!(fut);
        let mut body_error = false;
        // while the body is read, the handler's 1xx heads wait; once it is read (or
        // there is none) they are written as they come
        let early = match pump {
            None => None,
            Some((tx, want_rx)) => {
                let pumping = pump_body(io, buf, &mut decoder, tx, want_rx, expect_continue);
                tokio::pin!(pumping);
                tokio::select! {
                    r = &mut fut => Some(r),
                    ok = &mut pumping => {
                        body_error = !ok;
                        None
                    }
                }
            }
        };
        let resp = match early {
            Some(r) => r,
            // answers held back: this one joins them if it is ready at once (a cache
            // hit, a file); one that must wait lets them go first
            None if !pending.is_empty() => match futures_util::poll!(fut.as_mut()) {
                std::task::Poll::Ready(r) => {
                    // 1xx heads it queued on the way go before it
                    if let Some(i) = interim {
                        pending.extend_from_slice(&i.take_heads());
                    }
                    r
                }
                std::task::Poll::Pending => {
                    if sent_within(send_timeout, flush_pending(io, pending))
                        .await
                        .is_err()
                    {
                        return Next::Close;
                    }
                    with_interim(io, fut.as_mut(), interim, send_timeout).await
                }
            },
            None => with_interim(io, fut.as_mut(), interim, send_timeout).await,
        };
        (resp, body_error)
    };
    if body_error || !decoder.is_done() || closing.is_set() {
        keep_alive = false;
    }

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(tx) = upgrade_tx.take()
    {
        let (parts, _) = resp.into_parts();
        let mut head = Vec::with_capacity(256);
        encode_head(&mut head, &parts, Framing::None, Connection::Upgrade);
        if io.write_all(&head).await.is_err() || io.flush().await.is_err() {
            return Next::Close;
        }
        return Next::Upgrade(tx);
    }
    drop(upgrade_tx);
    let taker = match resp.extensions_mut().remove::<TakeOverSlot>() {
        Some(slot) if version == Version::HTTP_11 && !is_head => slot.0.lock().take(),
        _ => None,
    };
    if let Some(tx) = taker {
        // the body is the taker's: the head (chunked) goes out, then the connection
        let (parts, _) = resp.into_parts();
        let mut head = Vec::with_capacity(256);
        encode_head(&mut head, &parts, Framing::Chunked, Connection::Close);
        let sent = sent_within(send_timeout, async {
            flush_pending(io, pending).await?;
            io.write_all(&head).await?;
            io.flush().await
        });
        if sent.await.is_err() {
            return Next::Close;
        }
        return Next::Upgrade(tx);
    }
    // the next pipelined request is already here whole: hold this answer back to go out
    // with the next ones in one write (up to 64 KiB of them)
    let hold = plain && keep_alive && pending.len() < HOLD_MAX && next_head_here(buf);
    if write_response(
        io,
        resp,
        version,
        is_head,
        &mut keep_alive,
        send_timeout,
        pending,
        hold,
    )
    .await
    .is_err()
    {
        return Next::Close;
    }
    if !keep_alive {
        // Plain TCP with nothing left unread: closing the socket sends the FIN after the
        // response (no `shutdown` call, as nginx). TLS sends its close_notify; a body
        // left unread is drained for a while, so the close does not reset the response.
        if io.tcp().is_none() || !decoder.is_done() || !buf.is_empty() {
            let _ = io.shutdown().await;
            if !decoder.is_done() {
                linger(io).await;
            }
        }
        return Next::Close;
    }
    Next::KeepAlive
}

/// Read what the connection has into `buf` (waiting for it). On plain TCP the bytes
/// land in a per-thread scratch buffer first, so nothing is allocated while waiting.
async fn read_more<T: Transport>(
    io: &mut T,
    buf: &mut BytesMut,
    at_least: usize,
) -> io::Result<usize> {
    if let Some(tcp) = io.tcp() {
        loop {
            tcp.readable().await?;
            match read_tcp(tcp, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }
    if buf.capacity() - buf.len() < at_least {
        buf.reserve(at_least.max(4096));
    }
    io.read_buf(buf).await
}

thread_local! {
    /// Where plain-TCP reads land before the bytes are copied to the connection's own
    /// (exactly sized) buffer: an idle or small-request connection holds no 4 KiB block.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; 16 * 1024].into_boxed_slice());
}

/// One read from a plain TCP socket. A short read drained the socket, so the socket is
/// marked not-readable at once (what nginx does with `rev->ready = 0`): the next wait
/// goes straight to epoll instead of costing a `recv` that returns `EAGAIN`. Data that
/// arrives later raises a new edge, so nothing is missed.
fn read_tcp(tcp: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let mut got = None;
    let r = tcp.try_io(tokio::io::Interest::READABLE, || {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (n, _) = rustix::net::recv(tcp, &mut s[..], rustix::net::RecvFlags::empty())
                .map_err(io::Error::from)?;
            buf.extend_from_slice(&s[..n]);
            if n > 0 && n < s.len() {
                got = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        })
    });
    match (r, got) {
        (_, Some(n)) => Ok(n),
        (r, None) => r,
    }
}

/// A `Content-Length` value (or one item of a list of them): digits only (RFC 9110
/// §8.6), within u64. Shared by the request parser and the proxy's response parser.
pub(crate) fn length_digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Where each header field's name and value sit in a parsed head, so that once the head
/// is frozen into `Bytes` the values share its bytes instead of being copied. Used for
/// request heads here and response heads by [`crate::proxy::origin`].
pub(crate) struct FieldOffsets {
    // (offsets fit u32: a head is at most max_header_bytes, itself far below 4 GiB)
    at: [(u32, u32, u32, u32); MAX_HEADERS],
    n: usize,
}

impl FieldOffsets {
    /// The fields httparse found in `buf` (at most [`MAX_HEADERS`]).
    pub(crate) fn of(buf: &[u8], headers: &[httparse::Header<'_>]) -> FieldOffsets {
        let base = buf.as_ptr() as usize;
        let mut at = [(0, 0, 0, 0); MAX_HEADERS];
        for (slot, h) in at.iter_mut().zip(headers) {
            *slot = (
                (h.name.as_ptr() as usize - base) as u32,
                h.name.len() as u32,
                (h.value.as_ptr() as usize - base) as u32,
                h.value.len() as u32,
            );
        }
        FieldOffsets {
            at,
            n: headers.len().min(MAX_HEADERS),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// Field `i`, its value sharing `head` (the same bytes `of` saw, frozen).
    pub(crate) fn field(
        &self,
        head: &Bytes,
        i: usize,
    ) -> Result<(HeaderName, HeaderValue), &'static str> {
        let (na, nl, va, vl) = self.at[i];
        let (na, nl, va, vl) = (na as usize, nl as usize, va as usize, vl as usize);
        let name = HeaderName::from_bytes(&head[na..na + nl]).map_err(|_| "bad header name\n")?;
        let value = HeaderValue::from_maybe_shared(head.slice(va..va + vl))
            .map_err(|_| "bad header value\n")?;
        Ok((name, value))
    }
}

/// Parse a complete head at the front of `buf` (consuming it), `Ok(None)` if more bytes
/// are needed.
fn parse_head(buf: &mut BytesMut, max_header_bytes: usize) -> Result<Option<Head>, Reject> {
    // RFC 9112 §2.2: ignore empty lines before a request line
    while buf.starts_with(b"\r\n") {
        buf.advance(2);
    }
    while buf.starts_with(b"\n") {
        buf.advance(1);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_header_bytes {
                return Err(Reject(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request header section too large\n",
                ));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many request header fields\n",
            ));
        }
        Err(_) => return Err(Reject(StatusCode::BAD_REQUEST, "malformed request\n")),
    };
    if len > max_header_bytes {
        return Err(Reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request header section too large\n",
        ));
    }
    let bad = |why| Reject(StatusCode::BAD_REQUEST, why);
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("bad method\n"))?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(bad("unsupported HTTP version\n")),
    };
    let path = parsed.path.unwrap_or("");
    let path_at = path.as_ptr() as usize - buf.as_ptr() as usize;
    let path_len = path.len();
    let fields = FieldOffsets::of(buf, parsed.headers);
    let head = buf.split_to(len).freeze();
    let uri = http::Uri::from_maybe_shared(head.slice(path_at..path_at + path_len))
        .map_err(|_| bad("bad request target\n"))?;
    let mut map = HeaderMap::with_capacity(fields.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_upgrade = false;
    let mut has_upgrade = false;
    let mut expect_continue = false;
    let mut hosts = 0u32;
    for i in 0..fields.len() {
        let (name, value) = fields.field(&head, i).map_err(bad)?;
        if name == header::HOST {
            hosts += 1;
            if hosts > 1 {
                // RFC 9112 §3.2: more than one Host is a bad request
                return Err(bad("more than one Host field\n"));
            }
        } else if name == header::CONTENT_LENGTH {
            for part in value.as_bytes().split(|&b| b == b',') {
                let v = length_digits(trim_ows(part)).ok_or_else(|| bad("bad Content-Length\n"))?;
                match content_length {
                    Some(prev) if prev != v => return Err(bad("conflicting Content-Length\n")),
                    _ => content_length = Some(v),
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            has_te = true;
            // the last coding must be chunked (RFC 9112 §6.3 rule 4)
            let last = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .map(trim_ows)
                .find(|c| !c.is_empty());
            chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for t in value.as_bytes().split(|&b| b == b',').map(trim_ows) {
                if t.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    conn_upgrade = true;
                }
            }
        } else if name == header::UPGRADE {
            has_upgrade = true;
        } else if name == header::EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        map.append(name, value);
    }
    let decoder = if has_te {
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding is not allowed in HTTP/1.0\n"));
        }
        if content_length.is_some() {
            return Err(bad(
                "both Transfer-Encoding and Content-Length: refused (request smuggling)\n",
            ));
        }
        if !chunked {
            return Err(bad("the last transfer coding must be chunked\n"));
        }
        Decoder::Chunked(Chunk::Size)
    } else {
        match content_length {
            Some(0) | None => Decoder::Done,
            Some(n) => Decoder::Length(n),
        }
    };
    let keep_alive = match version {
        Version::HTTP_11 => !conn_close,
        _ => conn_keep_alive && !conn_close,
    };
    if method == Method::CONNECT {
        return Err(Reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported\n",
        ));
    }
    if let Some(authority) = uri.authority() {
        // absolute form (RFC 9112 §3.2.2): the target's authority replaces any Host
        let v =
            HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad request target\n"))?;
        map.insert(header::HOST, v);
    } else if version == Version::HTTP_11
        && map
            .get(header::HOST)
            .is_none_or(|h| h.as_bytes().trim_ascii().is_empty())
    {
        // RFC 9112 §3.2: an HTTP/1.1 request without a (non-empty) Host is a bad request
        return Err(bad("an HTTP/1.1 request needs a Host field\n"));
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = map;
    Ok(Some(Head {
        req,
        decoder,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
        upgrade: conn_upgrade && has_upgrade && version == Version::HTTP_11,
    }))
}

/// Read the request body into the handler's channel, once the handler asks for it.
/// Returns false when the body broke its framing or the client went away.
async fn pump_body<T: Transport>(
    io: &mut T,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
    tx: mpsc::Sender<io::Result<Bytes>>,
    want: oneshot::Receiver<()>,
    expect_continue: bool,
) -> bool {
    if want.await.is_err() {
        // the handler dropped the body unread
        std::future::pending::<()>().await;
    }
    if expect_continue
        && buf.is_empty()
        && io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return false;
    }
    loop {
        match decoder.decode(buf) {
            Ok(Some(chunk)) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            }
            Ok(None) if decoder.is_done() => return true,
            Ok(None) => {}
            Err(BadChunk(why)) => {
                let _ = tx
                    .send(Err(io::Error::new(io::ErrorKind::InvalidData, why)))
                    .await;
                return false;
            }
        }
        let read = tokio::time::timeout(BODY_READ_TIMEOUT, read_more(io, buf, 16 * 1024)).await;
        let failure = match read {
            Ok(Ok(n)) if n > 0 => continue,
            Ok(Ok(_)) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before the end of the body",
            ),
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, "request body read timed out"),
        };
        let _ = tx.send(Err(failure)).await;
        return false;
    }
}

/// After a response that left request bytes unread: read and drop what the client still
/// sends (bounded), so the close does not reset the connection under the answer.
async fn linger<T: Transport>(io: &mut T) {
    let _ = io.shutdown().await;
    let mut scratch = vec![0u8; 4096];
    let mut total = 0;
    let deadline = Instant::now() + LINGER_TIME;
    while total < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, io.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304) or it has a `Content-Length`.
    None,
    Length,
    Chunked,
    /// HTTP/1.0 without a length: the close ends it.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    Close,
    KeepAlive10,
    Default,
    Upgrade,
}

async fn write_error<T: Transport>(
    io: &mut T,
    status: StatusCode,
    why: &'static str,
) -> io::Result<()> {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("hopline"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(why.len()));
    let (parts, ()) = resp.into_parts();
    let mut out = Vec::with_capacity(256);
    encode_head(&mut out, &parts, Framing::Length, Connection::Close);
    out.extend_from_slice(why.as_bytes());
    io.write_all(&out).await?;
    io.flush().await
}

/// Write a response. The common cases (no body, or a body already in memory) are
/// encoded here in one buffer and leave in one write; files and streamed bodies take
/// the boxed path, so the per-request future stays small.
#[allow(clippy::too_many_arguments)]
async fn write_response<T: Transport>(
    io: &mut T,
    resp: Response<Body>,
    version: Version,
    is_head: bool,
    keep_alive: &mut bool,
    send_timeout: Duration,
    pending: &mut Vec<u8>,
    hold: bool,
) -> io::Result<()> {
    match start_response(resp, version, is_head, keep_alive) {
        // a whole answer in memory, and more requests to answer: keep it for one write
        Started::Done(out) if hold && *keep_alive => {
            pending.extend_from_slice(&out);
            Ok(())
        }
        Started::Done(out) if !pending.is_empty() => {
            pending.extend_from_slice(&out);
            sent_within(send_timeout, flush_pending(io, pending)).await
        }
        Started::Done(out) => {
            sent_within(send_timeout, async {
                io.write_all(&out).await?;
                io.flush().await
            })
            .await
        }
        Started::More(rest) => {
            sent_within(send_timeout, flush_pending(io, pending)).await?;
            Box::pin(write_rest(io, *rest, keep_alive, send_timeout)).await
        }
    }
}

/// How many bytes of answers a connection holds back for pipelined requests.
const HOLD_MAX: usize = 64 * 1024;

/// Whether `buf` (what follows the request just read) holds a whole request head.
fn next_head_here(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Write the answers held back, if any (and free their buffer: an idle connection
/// holds none).
async fn flush_pending<T: Transport>(io: &mut T, pending: &mut Vec<u8>) -> io::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let out = std::mem::take(pending);
    io.write_all(&out).await?;
    io.flush().await
}

/// A write that makes no progress for `limit` fails (like nginx's `send_timeout`): a
/// client that stops reading — a stalled download, a slow consumer of a stream — is cut
/// instead of holding its connection and its response forever.
async fn sent_within<F: Future<Output = io::Result<()>>>(limit: Duration, f: F) -> io::Result<()> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client accepted no data within the send timeout",
        )),
    }
}

/// What [`start_response`] could not finish by itself.
struct Rest {
    head: Vec<u8>,
    body: Body,
    framing: Framing,
    /// A frame already taken from the body (polled once while starting).
    first: Option<Option<Result<http_body::Frame<Bytes>, BoxError>>>,
}

enum Started {
    /// Everything to send, head and body.
    Done(Vec<u8>),
    /// The head, and a body still to send.
    More(Box<Rest>),
}

/// Encode the head and, when the body is already in memory, the body with it.
fn start_response(
    resp: Response<Body>,
    version: Version,
    is_head: bool,
    keep_alive: &mut bool,
) -> Started {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status.as_u16();
    let bodiless_status = (100..200).contains(&status) || status == 204 || status == 304;
    if parts
        .headers
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    {
        *keep_alive = false;
    }
    // encoded lines always carry the length
    let lines = body.take_lines();
    let has_length = lines.is_some() || parts.headers.contains_key(header::CONTENT_LENGTH);
    let mut add_length = None;
    let framing = if bodiless_status {
        Framing::None
    } else if has_length {
        Framing::Length
    } else if let Some(n) = body.size_hint().exact() {
        if !is_head {
            add_length = Some(n);
        }
        Framing::Length
    } else if is_head {
        Framing::None
    } else if version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        *keep_alive = false;
        Framing::Close
    };
    let conn = if !*keep_alive {
        Connection::Close
    } else if version == Version::HTTP_10 {
        Connection::KeepAlive10
    } else {
        Connection::Default
    };
    let mut head = Vec::with_capacity(256 + lines.as_ref().map_or(0, |l| l.bytes.len()));
    encode_head_with(&mut head, &parts, lines.as_ref(), framing, conn, add_length);
    drop(parts);
    let no_body = is_head || bodiless_status;
    if no_body || body.is_end_stream() {
        if !no_body {
            push_chunk(&mut head, framing, &[], true);
        }
        return Started::Done(head);
    }
    if framing == Framing::Length && body.is_file() {
        return Started::More(Box::new(Rest {
            head,
            body,
            framing,
            first: None,
        }));
    }
    // a body already in memory goes out with the head
    use futures_util::FutureExt;
    let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).now_or_never();
    match first {
        Some(None) => {
            push_chunk(&mut head, framing, &[], true);
            Started::Done(head)
        }
        Some(Some(Ok(frame)))
            if body.is_end_stream()
                && frame.data_ref().is_some_and(|d| d.len() <= COALESCE_MAX) =>
        {
            let data = frame.into_data().unwrap_or_default();
            push_chunk(&mut head, framing, &data, true);
            Started::Done(head)
        }
        first => Started::More(Box::new(Rest {
            head,
            body,
            framing,
            first,
        })),
    }
}

/// Send the head and a body that is a file or still arriving.
async fn write_rest<T: Transport>(
    io: &mut T,
    rest: Rest,
    keep_alive: &mut bool,
    send_timeout: Duration,
) -> io::Result<()> {
    let t = send_timeout;
    let Rest {
        head,
        mut body,
        framing,
        mut first,
    } = rest;
    // A file on plain TCP: the head, then sendfile from the page cache.
    if framing == Framing::Length
        && let Some(tcp) = io.tcp()
        && let Some(file) = body.take_sendfile(SENDFILE_MIN)
    {
        sent_within(t, send_all(tcp, &head)).await?;
        return sendfile_all(tcp, &file.file, file.start, file.len, t).await;
    }
    // Coalesce the first chunk with the head when it is already there.
    use futures_util::FutureExt;
    if first.is_none() {
        first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).now_or_never();
    }
    let mut pending_head = Some(head);
    loop {
        let frame = match first.take() {
            Some(f) => f,
            None => {
                if let Some(h) = pending_head.take() {
                    sent_within(t, io.write_all(&h)).await?;
                }
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => {
                // end of body
                let mut out = pending_head.take().unwrap_or_default();
                push_chunk(&mut out, framing, &[], true);
                if !out.is_empty() {
                    sent_within(t, io.write_all(&out)).await?;
                }
                return sent_within(t, io.flush()).await;
            }
            Some(Err(e)) => {
                tracing::debug!(target: "hopline::edge", "response body failed: {e}");
                *keep_alive = false;
                return Err(io::Error::other(e));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers are not sent on HTTP/1.1
            },
        };
        if data.is_empty() {
            continue;
        }
        let end = body.is_end_stream();
        match pending_head.take() {
            Some(mut h) if data.len() <= COALESCE_MAX => {
                push_chunk(&mut h, framing, &data, end);
                sent_within(t, io.write_all(&h)).await?;
            }
            h => {
                let h = h.unwrap_or_default();
                let mut size_line = [0u8; 20];
                let (size_line, tail) = chunk_frame(&mut size_line, framing, data.len(), end);
                sent_within(t, write_all_vectored(io, &[&h, size_line, &data, tail])).await?;
            }
        }
        if end {
            return sent_within(t, io.flush()).await;
        }
    }
}

/// Append `data` framed for `framing` (a chunk when chunked); with `end`, the chunked
/// body's terminator too.
fn push_chunk(out: &mut Vec<u8>, framing: Framing, data: &[u8], end: bool) {
    let mut size_line = [0u8; 20];
    let (size_line, tail) = chunk_frame(&mut size_line, framing, data.len(), end);
    out.extend_from_slice(size_line);
    out.extend_from_slice(data);
    out.extend_from_slice(tail);
}

/// What goes before and after `len` bytes of body under `framing`: for chunked, the
/// chunk's size line (written into `scratch`) and its CRLF (with `end`, the terminating
/// chunk too; an empty chunk is only the terminator); for other framings, nothing.
fn chunk_frame(
    scratch: &mut [u8; 20],
    framing: Framing,
    len: usize,
    end: bool,
) -> (&[u8], &'static [u8]) {
    if framing != Framing::Chunked {
        return (&[], &[]);
    }
    if len == 0 {
        return (&[], if end { b"0\r\n\r\n" } else { b"" });
    }
    let n = chunk_size_line(scratch, len);
    (&scratch[..n], if end { b"\r\n0\r\n\r\n" } else { b"\r\n" })
}

/// `{n:x}\r\n` into `out`, without allocating; returns its length.
fn chunk_size_line(out: &mut [u8; 20], n: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = ((usize::BITS - n.leading_zeros()).div_ceil(4)).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(n >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

async fn write_all_vectored<T: AsyncWrite + Unpin>(io: &mut T, parts: &[&[u8]]) -> io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < parts.len() {
        if parts[idx].len() == off {
            idx += 1;
            off = 0;
            continue;
        }
        let mut slices: [io::IoSlice<'_>; 4] = [
            io::IoSlice::new(&[]),
            io::IoSlice::new(&[]),
            io::IoSlice::new(&[]),
            io::IoSlice::new(&[]),
        ];
        let mut k = 0;
        for (j, p) in parts[idx..].iter().enumerate() {
            let p = if j == 0 { &p[off..] } else { p };
            if !p.is_empty() && k < slices.len() {
                slices[k] = io::IoSlice::new(p);
                k += 1;
            }
        }
        let mut n = io.write_vectored(&slices[..k]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 && idx < parts.len() {
            let left = parts[idx].len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// Write all of `buf` to `tcp`.
async fn send_all(tcp: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn sendfile_all(
    tcp: &TcpStream,
    file: &std::fs::File,
    start: u64,
    len: u64,
    send_timeout: Duration,
) -> io::Result<()> {
    let mut offset = start;
    let end = start + len;
    while offset < end {
        let want = ((end - offset).min(1 << 30)) as usize;
        match tcp.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::fs::sendfile(tcp, file, Some(&mut offset), want).map_err(io::Error::from)
        }) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was sent",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sent_within(send_timeout, async { tcp.writable().await }).await?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A head with no pre-encoded lines and no added length.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    framing: Framing,
    conn: Connection,
) {
    encode_head_with(out, parts, None, framing, conn, None)
}

fn encode_head_with(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    lines: Option<&crate::engine::body::Lines>,
    framing: Framing,
    conn: Connection,
    add_length: Option<u64>,
) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    let (mut has_date, mut has_server) = (lines.is_some_and(|l| l.has_date), false);
    for (name, value) in &parts.headers {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
            continue; // decided here
        }
        if name == header::DATE {
            has_date = true;
        } else if name == header::SERVER {
            has_server = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(lines) = lines {
        out.extend_from_slice(&lines.bytes);
    }
    if !has_server {
        out.extend_from_slice(b"server: hopline\r\n");
    }
    if let Some(n) = add_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    match conn {
        Connection::Close => out.extend_from_slice(b"connection: close\r\n"),
        Connection::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Connection::Upgrade => {
            if let Some(v) = parts.headers.get(header::CONNECTION) {
                out.extend_from_slice(b"connection: ");
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        Connection::Default => {}
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        date::with(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Date` header value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{Duration, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }

    pub(super) fn with(f: impl FnOnce(&[u8])) {
        let secs = crate::engine::clock::unix_secs();
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                let s = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
                let b = s.as_bytes();
                if b.len() == 29 {
                    c.1.copy_from_slice(b);
                    c.0 = secs;
                }
            }
            f(&c.1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, Decoder, usize), BadChunk> {
        let mut d = Decoder::Chunked(Chunk::Size);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // feed one byte at a time: framing must survive any split
        for &b in input {
            buf.put_u8(b);
            while let Some(chunk) = d.decode(&mut buf)? {
                out.extend_from_slice(&chunk);
            }
        }
        Ok((out, d, buf.len()))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let (out, d, left) =
            decode_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET").unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(d, Decoder::Done);
        assert_eq!(left, 3, "bytes after the body stay for the next request");
        let (out, d, _) = decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(out, b"0123456789");
        assert_eq!(d, Decoder::Done);
    }

    #[test]
    fn broken_chunked_framing_is_refused() {
        assert!(decode_all(b"zz\r\nhello\r\n").is_err());
        assert!(decode_all(b"5\r\nhelloXX0\r\n\r\n").is_err());
        assert!(decode_all(b"fffffffffffffffff\r\n").is_err());
        assert!(decode_all(b"\r\n").is_err());
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_all(&long).is_err());
    }

    fn head(raw: &[u8]) -> Result<Option<Head>, Reject> {
        let mut b = BytesMut::from(raw);
        parse_head(&mut b, 32 * 1024)
    }

    fn status(raw: &[u8]) -> Option<StatusCode> {
        match head(raw) {
            Err(Reject(s, _)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn host_is_required_once_and_the_absolute_form_wins() {
        let bad = Some(StatusCode::BAD_REQUEST);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\n\r\n"),
            bad,
            "no Host in HTTP/1.1"
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
            bad,
            "empty Host"
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            bad,
            "two Host fields"
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            bad,
            "two Host fields, even equal"
        );
        // HTTP/1.0 may leave it out
        assert!(head(b"GET / HTTP/1.0\r\n\r\n").is_ok_and(|h| h.is_some()));
        // absolute form: the target's authority replaces Host (RFC 9112 §3.2.2)
        let h = head(b"GET http://other.example:8080/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(h.req.headers()[header::HOST], "other.example:8080");
        assert_eq!(h.req.headers().get_all(header::HOST).iter().count(), 1);
        assert_eq!(h.req.uri().path(), "/p");
    }

    #[test]
    fn heads_parse_with_framing_and_connection() {
        let h = head(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\n")
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(h.req.uri().path(), "/a");
        assert_eq!(h.req.uri().query(), Some("b=1"));
        assert_eq!(h.req.headers().get_all("x-a").iter().count(), 2);
        assert!(h.keep_alive);
        assert_eq!(h.decoder, Decoder::Done);
        let h = head(b"POST / HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n")
            .ok()
            .flatten()
            .unwrap();
        assert!(h.keep_alive);
        assert_eq!(h.decoder, Decoder::Length(5));
        let h = head(b"GET / HTTP/1.0\r\n\r\n").ok().flatten().unwrap();
        assert!(!h.keep_alive);
        let h =
            head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .ok()
                .flatten()
                .unwrap();
        assert!(h.upgrade);
        assert!(
            head(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .ok()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn smuggling_shapes_are_400() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(bad)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"),
            Some(bad)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 4, 5\r\n\r\n"),
            Some(bad)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n"),
            Some(bad)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
            Some(bad)
        );
        assert_eq!(
            status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(bad)
        );
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost a\r\n\r\n"), Some(bad));
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), Some(bad));
        // the same length twice is one length
        let h =
            head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n")
                .ok()
                .flatten()
                .unwrap();
        assert_eq!(h.decoder, Decoder::Length(4));
    }

    #[test]
    fn oversized_heads_are_431() {
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 40_000));
        assert_eq!(
            status(&big),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("X-{i}: a\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            status(&many),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        for n in [
            0usize,
            1,
            9,
            10,
            15,
            16,
            255,
            4096,
            65535,
            1 << 40,
            usize::MAX,
        ] {
            let mut b = [0u8; 20];
            let k = chunk_size_line(&mut b, n);
            assert_eq!(&b[..k], format!("{n:x}\r\n").as_bytes());
        }
    }

    #[test]
    fn heads_encode_with_date_and_framing() {
        let mut r = Response::new(());
        r.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static("hopline"));
        let (parts, ()) = r.into_parts();
        let mut out = Vec::new();
        encode_head_with(
            &mut out,
            &parts,
            None,
            Framing::Length,
            Connection::Close,
            Some(13),
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\nserver: hopline\r\ncontent-length: 13\r\nconnection: close\r\ndate: "), "{s}");
        assert!(s.ends_with(" GMT\r\n\r\n"), "{s}");

        // encoded lines follow the map's fields; a missing Server is added once
        let mut r = Response::new(());
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        let (parts, ()) = r.into_parts();
        let mut out = Vec::new();
        encode_head_with(
            &mut out,
            &parts,
            Some(&crate::engine::body::Lines {
                bytes: Bytes::from_static(b"etag: \"1-d\"\r\ncontent-length: 13\r\n"),
                relayed: false,
                has_date: false,
            }),
            Framing::Length,
            Connection::Default,
            None,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\netag: \"1-d\"\r\ncontent-length: 13\r\nserver: hopline\r\ndate: "),
            "{s}"
        );
        assert_eq!(s.matches("server:").count(), 1, "{s}");

        // an origin's relayed lines keep its Date: the writer adds none
        let (parts, ()) = Response::new(()).into_parts();
        let mut out = Vec::new();
        encode_head_with(
            &mut out,
            &parts,
            Some(&crate::engine::body::Lines {
                bytes: Bytes::from_static(
                    b"Date: Mon, 23 Nov 2026 23:00:00 GMT\r\nContent-Length: 2\r\n",
                ),
                relayed: true,
                has_date: true,
            }),
            Framing::Length,
            Connection::Default,
            None,
        );
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\nDate: Mon, 23 Nov 2026 23:00:00 GMT\r\nContent-Length: 2\r\nserver: hopline\r\n\r\n"
        );
    }
}
