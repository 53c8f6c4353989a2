//! The HTTP/1.1 connection loop: read a request head, hand the request to the service,
//! stream its body through a small channel, write the answer, keep alive or close;
//! timeouts, graceful shutdown and the lingering close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::body::{Body, RequestBody};
use crate::clock;
use crate::h1::codec::BadChunk;
use crate::h1::codec::Decoder;
use crate::h1::codec::Head;
use crate::h1::codec::Reject;
use crate::h1::codec::Seen;
use crate::h1::codec::parse_head;
use crate::h1::interim::Interim;
use crate::h1::interim::with_interim;
use crate::h1::request_body::H1RequestBody;
use crate::h1::transport::Transport;
use crate::h1::upgrade::Rewind;
use crate::h1::upgrade::TakeOverSlot;
use crate::h1::upgrade::UpgradeSlot;
use crate::h1::upgrade::Upgraded;
use crate::h1::write::Connection;
use crate::h1::write::Framing;
use crate::h1::write::HOLD_MAX;
use crate::h1::write::encode_head;
use crate::h1::write::flush_pending;
use crate::h1::write::next_head_here;
use crate::h1::write::sent_within;
use crate::h1::write::write_error;
use crate::h1::write::write_response;

/// The HTTP/2 connection preface a prior-knowledge client starts with.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest wait between two reads of a request body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// After an unread request body, how long and how much the connection keeps reading
/// (and discarding) after the response, so the client reads the answer before the close.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
pub const LINGER_BYTES: usize = 1024 * 1024;

/// What the engine serves each request with.
pub trait Service: Send + Sync {
    /// Answer one request; `interim` (HTTP/1.1 clients) takes 1xx responses to send
    /// before the final one.
    fn call<'a>(
        &'a self,
        req: Request<RequestBody>,
        interim: Option<&'a Interim>,
    ) -> impl Future<Output = Response<Body>> + Send + 'a;

    /// The engine answered a request itself, refusing its head (it broke the protocol,
    /// or was too large) before any request reached [`Service::call`]: called once the
    /// answer is written, so the refusal is logged and counted like any answer.
    fn refused(&self, refusal: Refusal);
}

/// A request the engine refused at its head, as [`Service::refused`] gets it.
#[derive(Debug)]
pub struct Refusal {
    /// The status the engine answered with (400, 405, 431).
    pub status: StatusCode,
    /// Body bytes of the answer that went out (0 if the write failed).
    pub bytes: u64,
    /// When the head was refused.
    pub start: Instant,
    /// What the head showed before it broke.
    pub seen: Box<Seen>,
}

/// The engine's settings (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_header_bytes: usize,
    /// A response write that makes no progress this long closes the connection.
    pub send_timeout: Duration,
}

/// The server's "finish up and close" signal, as connections watch it: a flag to read
/// and a notification to wait on (one registration per connection, no per-request cost).
#[derive(Debug, Default)]
pub struct Closing {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Closing {
    /// Ask every connection to finish its request and close; idle ones close at once.
    pub fn start(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Closing has started.
    pub fn is_set(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once closing has started (at once if it already has).
    pub async fn started(&self) {
        let notified = self.notify.notified();
        if self.is_set() {
            return;
        }
        notified.await
    }
}

/// How a connection's HTTP/1.1 life ended.
pub enum Outcome<T> {
    /// Closed (by either side, a timeout, an error or shutdown).
    Closed,
    /// The client spoke HTTP/2 prior knowledge: serve it with these bytes first.
    Http2(Rewind<T>),
}

/// Serve HTTP/1.1 on `io` until the connection ends.
pub async fn serve<T: Transport, S: Service>(
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
pub struct Timer<'a> {
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
pub enum Next {
    KeepAlive,
    Close,
    /// A 101 went out: hand the connection over.
    Upgrade(oneshot::Sender<Upgraded>),
}

/// Read the rest of a request head (within the header timeout), then serve it.
#[allow(clippy::too_many_arguments)]
pub async fn cycle<T: Transport, S: Service>(
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
        Err(Reject(status, why, seen)) => {
            let start = Instant::now();
            let _ = sent_within(opts.send_timeout, flush_pending(io, pending)).await;
            let sent = write_error(io, status, why).await.is_ok();
            // logged before the lingering close, as an answered request is once its
            // body is done
            service.refused(Refusal {
                status,
                bytes: if sent { why.len() as u64 } else { 0 },
                start,
                seen,
            });
            linger(io).await;
            Next::Close
        }
    }
}

/// One request: call the service (reading the body as it asks), write the response.
pub async fn exchange<T: Transport, S: Service>(
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
pub async fn read_more<T: Transport>(
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
pub fn read_tcp(tcp: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
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

/// Read the request body into the handler's channel, once the handler asks for it.
/// Returns false when the body broke its framing or the client went away.
pub async fn pump_body<T: Transport>(
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
pub async fn linger<T: Transport>(io: &mut T) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::codec::Chunk;
    use crate::h1::codec::MAX_CHUNK_LINE;
    use crate::h1::write::chunk_size_line;
    use crate::h1::write::encode_head_with;
    use bytes::BufMut;
    use http::header::{self, HeaderValue};

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
            Err(Reject(s, _, _)) => Some(s),
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

    fn seen(raw: &[u8]) -> Seen {
        match head(raw) {
            Err(Reject(_, _, seen)) => *seen,
            _ => panic!("not refused: {}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn a_refused_head_keeps_what_it_showed() {
        // the whole head parsed: its line, Host (port and all) and User-Agent
        let s = seen(
            b"POST /a?b=1 HTTP/1.1\r\nHost: x.test:8080\r\nUser-Agent: u/1\r\n\
              Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(
            s.line,
            Some((Method::POST, "/a?b=1".to_string(), Version::HTTP_11))
        );
        assert_eq!(s.host.as_deref(), Some("x.test:8080"));
        assert_eq!(s.user_agent.as_deref(), Some("u/1"));
        // absolute form: the target's authority is the host
        let s = seen(b"CONNECT http://o.test:81/ HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(s.host.as_deref(), Some("o.test:81"));
        // a broken field line: the line and the fields before it
        let s = seen(b"GET /p HTTP/1.0\nHost: h\nbroken line\n\n");
        assert_eq!(
            s.line,
            Some((Method::GET, "/p".to_string(), Version::HTTP_10))
        );
        assert_eq!(s.host.as_deref(), Some("h"));
        assert_eq!(s.user_agent, None);
        // not a request line: nothing
        for raw in [
            &b"BLAH\x01 / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            let s = seen(raw);
            assert!(
                s.line.is_none(),
                "{:?}: {s:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // a head over the limit: what came whole before the cut
        let mut big = b"GET /big HTTP/1.1\r\nHost: h\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 40_000));
        let s = seen(&big);
        assert_eq!(s.line.map(|l| l.1).as_deref(), Some("/big"));
        assert_eq!(s.host.as_deref(), Some("h"));
        // a request line cut by the limit: nothing
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 40_000));
        assert!(seen(&long).line.is_none());
        // odd bytes anywhere never panic
        for raw in [
            &b"\n"[..],
            b"\r",
            b":\r\n\r\n",
            b"GET / HTTP/1.1\r\n:\r\nHost:\r\nHost: \x01\r\n\r\n",
            b"GET / HTTP/1.1\r\nUser-Agent: \xff\r\n\r",
        ] {
            let _ = Seen::of(raw);
        }
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
            Some(&crate::body::Lines {
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
            Some(&crate::body::Lines {
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
