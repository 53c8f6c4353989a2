//! The proxy's own HTTP/1.1 client for bodiless requests (GET, HEAD, OPTIONS): the
//! request's connection task writes the request on a pooled keep-alive connection to
//! the origin and reads the answer itself — no connection task, no channel between
//! them, the way nginx's event loop does it. The response body streams from the
//! origin's socket as the client connection asks for it; when it ends cleanly the
//! connection goes back to its server's idle pool.
//!
//! A pooled connection the origin closed meanwhile shows up as an error or EOF before
//! the first response byte: the request is then sent once more on a fresh connection
//! (safe: only idempotent, bodiless requests come here). Requests with bodies,
//! upgrades and HTTP/2 upstreams go through hyper's client.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderMap;
use http::{Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use hopline_engine::body::BoxError;
use hopline_engine::h1::codec::Decoder;
use hopline_engine::h1::codec::FieldOffsets;

/// Most header fields in a response head (within the request side's limit, so
/// [`FieldOffsets`] holds them all).
const MAX_HEADERS: usize = 64;
const _: () = assert!(MAX_HEADERS <= hopline_engine::h1::codec::MAX_HEADERS);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Read size for response bodies.
const READ_CHUNK: usize = 64 * 1024;
/// Most read at once for a body of known length.
const MAX_READ: usize = 256 * 1024;
/// Read buffer for a response head (and a small body after it).
const HEAD_BUFFER: usize = 8 * 1024;
/// Largest read buffer an idle connection keeps: the next answer of up to about this
/// size is then read whole in one call, into memory already there (nginx reads its
/// upstream answers into per-request buffers of the size configured; this is the same
/// work without the allocation). All of a server's kept buffers stay within its pool's
/// `idle_buffers`.
const KEEP_BUFFER: usize = 128 * 1024;

/// One server's idle keep-alive connections (most recently used first out), each with
/// when it went idle (coarse clock, ms) and its read buffer (the next exchange reads into
/// it: no allocation per request), within a byte budget for all the buffers kept.
#[derive(Debug)]
pub struct IdlePool {
    idle: parking_lot::Mutex<Idle>,
    max: usize,
    idle_timeout_ms: u64,
    buffer_budget: usize,
}

#[derive(Debug, Default)]
struct Idle {
    /// (connection, idle since, its buffer, the bytes that buffer may hold)
    conns: Vec<(TcpStream, u64, BytesMut, usize)>,
    /// The sum of those bytes.
    buffered: usize,
}

impl IdlePool {
    /// A pool keeping at most `max` idle connections for at most `idle_timeout`, and
    /// read buffers of at most `buffer_budget` bytes in all.
    pub fn new(max: usize, idle_timeout: Duration, buffer_budget: usize) -> IdlePool {
        IdlePool {
            idle: parking_lot::Mutex::new(Idle::default()),
            max,
            idle_timeout_ms: idle_timeout.as_millis().try_into().unwrap_or(u64::MAX),
            buffer_budget,
        }
    }

    fn take(&self) -> Option<(TcpStream, BytesMut)> {
        let now = hopline_engine::clock::mono_ms();
        let mut idle = self.idle.lock();
        while let Some((c, since, buf, size)) = idle.conns.pop() {
            idle.buffered -= size;
            if now.saturating_sub(since) < self.idle_timeout_ms {
                return Some((c, buf));
            }
            // too old: the origin may be about to close it; the rest are older still
            idle.conns.clear();
            idle.buffered = 0;
        }
        None
    }

    /// Keep `c` (whose last answer was read to its end: `buf` is empty). `reserved` is
    /// the most `buf` was grown to for it: the buffer stays with the connection when it
    /// is at most [`KEEP_BUFFER`] and the pool's budget has room for it.
    fn put(&self, c: TcpStream, buf: BytesMut, reserved: usize) {
        let mut idle = self.idle.lock();
        if idle.conns.len() >= self.max {
            return;
        }
        let (buf, size) =
            if reserved <= KEEP_BUFFER && idle.buffered + reserved <= self.buffer_budget {
                (buf, reserved)
            } else {
                (BytesMut::new(), 0)
            };
        idle.buffered += size;
        idle.conns
            .push((c, hopline_engine::clock::mono_ms(), buf, size));
    }

    /// Idle connections, and the bytes their buffers may hold.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let idle = self.idle.lock();
        (idle.conns.len(), idle.buffered)
    }
}

/// Why an exchange failed; the proxy turns it into a [`crate::error::ProxyError`].
#[derive(Debug)]
pub enum ExchangeError {
    /// The TCP connect failed or did not finish in time (why): nothing was sent.
    Connect(String),
    /// No response head in time.
    Timeout,
    /// The connection broke or the answer was not HTTP.
    Broken(String),
}

/// How [`exchange`] hands over the response's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadForm {
    /// In the response's header map.
    Map,
    /// As the origin's lines ([`Relayed`], taken from the body) when its framing allows
    /// (a `Content-Length`, or no body); else in the map.
    Lines,
}

/// An origin's end-to-end response fields as HTTP/1.1 lines (`name: value\r\n`), as it
/// sent them: no header map is built and none encoded again. Its `Server` is left out
/// (the edge names itself, as nginx does).
#[derive(Debug)]
pub struct Relayed {
    /// The lines (with room for the proxy's own few).
    pub lines: BytesMut,
    /// A `Date` is among them.
    pub has_date: bool,
}

/// One bodiless request for [`exchange`].
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The complete request head.
    pub head: &'a [u8],
    /// A HEAD request (the response has no body whatever it says).
    pub is_head: bool,
    /// Where the response's fields go.
    pub form: HeadForm,
    /// Where 1xx responses go (an HTTP/1.1 client), if anywhere.
    pub interim: Option<&'a hopline_engine::h1::interim::Interim>,
}

/// Send `ask.head` (a complete, bodiless request head) to `addr` and read the response
/// head by `deadline`. The response comes without hop-by-hop fields (RFC 9110 §7.6.1:
/// those [`crate::hop_by_hop::is_hop_by_hop`] names, and the names its `Connection` lists).
pub async fn exchange(
    pool: &std::sync::Arc<IdlePool>,
    addr: SocketAddr,
    ask: Ask<'_>,
    connect_timeout: Duration,
    deadline: Instant,
) -> Result<Response<OriginBody>, ExchangeError> {
    let Ask {
        head,
        is_head,
        form,
        interim,
    } = ask;
    // a pooled connection first; if it turns out dead before any answer, a fresh one
    if let Some((conn, buf)) = pool.take() {
        match attempt(conn, buf, head, is_head, form, deadline, interim).await {
            Ok(answer) => return Ok(finish(answer, pool)),
            Err(Attempt::Stale) => {}
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    let conn = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(ExchangeError::Connect(e.to_string())),
        Err(_) => {
            return Err(ExchangeError::Connect(format!(
                "no connection within {} ms",
                connect_timeout.as_millis()
            )));
        }
    };
    let _ = conn.set_nodelay(true);
    match attempt(
        conn,
        BytesMut::new(),
        head,
        is_head,
        form,
        deadline,
        interim,
    )
    .await
    {
        Ok(answer) => Ok(finish(answer, pool)),
        Err(Attempt::Stale) => Err(ExchangeError::Broken(
            "the server closed the connection without an answer".into(),
        )),
        Err(Attempt::Failed(e)) => Err(e),
    }
}

fn finish(answer: Answer, pool: &std::sync::Arc<IdlePool>) -> Response<OriginBody> {
    let Answer {
        head: (resp, decoder, reusable, relayed),
        conn,
        buf,
    } = answer;
    let mut body = OriginBody {
        conn: Some(conn),
        buf,
        decoder,
        reusable,
        pool: pool.clone(),
        relayed,
        reserved: HEAD_BUFFER,
    };
    if matches!(body.decoder, Decoder::Done) {
        body.release();
    }
    resp.map(|()| body)
}

enum Attempt {
    /// Nothing came back on a reused connection: try a fresh one.
    Stale,
    Failed(ExchangeError),
}

/// A response head read from `conn`, and what follows it in `buf`.
struct Answer {
    head: ParsedHead,
    conn: TcpStream,
    buf: BytesMut,
}

async fn attempt(
    mut conn: TcpStream,
    mut buf: BytesMut,
    head: &[u8],
    is_head: bool,
    form: HeadForm,
    deadline: Instant,
    interim: Option<&hopline_engine::h1::interim::Interim>,
) -> Result<Answer, Attempt> {
    if conn.write_all(head).await.is_err() {
        return Err(Attempt::Stale);
    }
    if buf.capacity() < 4096 {
        buf.reserve(HEAD_BUFFER);
    }
    let mut got_any = false;
    loop {
        match parse_response(&mut buf, is_head, form) {
            Ok(Some(parsed)) => {
                let status = parsed.0.status();
                if status.is_informational() {
                    // the real answer follows; a 1xx other than 100 Continue (ours to
                    // answer) goes on to an HTTP/1.1 client as it came — never stored
                    if let Some(sink) = interim
                        && status != http::StatusCode::CONTINUE
                    {
                        let lines = match &parsed.3 {
                            Some(r) => r.lines.clone().freeze(),
                            None => {
                                let mut l = BytesMut::new();
                                for (n, v) in parsed.0.headers() {
                                    l.extend_from_slice(n.as_str().as_bytes());
                                    l.extend_from_slice(b": ");
                                    l.extend_from_slice(v.as_bytes());
                                    l.extend_from_slice(b"\r\n");
                                }
                                l.freeze()
                            }
                        };
                        sink.send(status, lines);
                    }
                    continue;
                }
                return Ok(Answer {
                    head: parsed,
                    conn,
                    buf,
                });
            }
            Ok(None) => {}
            Err(why) => return Err(Attempt::Failed(ExchangeError::Broken(why.into()))),
        }
        if buf.len() > MAX_HEAD {
            return Err(Attempt::Failed(ExchangeError::Broken(
                "response head too large".into(),
            )));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(HEAD_BUFFER);
        }
        let read = tokio::time::timeout_at(
            deadline,
            tokio::io::AsyncReadExt::read_buf(&mut conn, &mut buf),
        )
        .await;
        match read {
            Err(_) => return Err(Attempt::Failed(ExchangeError::Timeout)),
            Ok(Ok(0)) | Ok(Err(_)) if !got_any => return Err(Attempt::Stale),
            Ok(Ok(0)) => {
                return Err(Attempt::Failed(ExchangeError::Broken(
                    "the server closed the connection in the middle of the response head".into(),
                )));
            }
            Ok(Err(e)) => return Err(Attempt::Failed(ExchangeError::Broken(e.to_string()))),
            Ok(Ok(_)) => got_any = true,
        }
    }
}

/// A parsed response head, how its body is framed, whether the connection can be used
/// again after it, and its fields as lines when they were relayed.
type ParsedHead = (Response<()>, Decoder, bool, Option<Relayed>);

/// Parse a response head at the front of `buf` (consuming it).
fn parse_response(
    buf: &mut BytesMut,
    is_head: bool,
    form: HeadForm,
) -> Result<Option<ParsedHead>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("the server's answer is not valid HTTP/1.1"),
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
        .map_err(|_| "the server answered with an invalid status")?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // what the fields say to this hop: the body's framing, and whether to keep the
    // connection
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = version == Version::HTTP_10;
    // names a Connection field lists besides close / keep-alive: hop-by-hop too (rare)
    let mut listed: Vec<&[u8]> = Vec::new();
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = hopline_engine::h1::codec::length_digits(h.value.trim_ascii())
                .ok_or("the server sent an invalid Content-Length")?;
            if length.is_some_and(|l| l != v) {
                return Err("the server sent conflicting Content-Lengths");
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .map(|c| c.trim_ascii())
                .find(|c| !c.is_empty())
                .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in h.value.split(|&b| b == b',').map(|t| t.trim_ascii()) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else if !t.is_empty() {
                    listed.push(t);
                }
            }
        }
    }
    let code = status.as_u16();
    let decoder = if is_head || code == 204 || code == 304 || status.is_informational() {
        Decoder::Done
    } else if chunked {
        Decoder::chunked()
    } else if let Some(n) = length {
        Decoder::Length(n)
    } else {
        // delimited by the close
        close = true;
        Decoder::UntilClose
    };
    let end_to_end = |name: &[u8]| {
        !crate::hop_by_hop::is_hop_by_hop_name(name)
            && !listed.iter().any(|l| l.eq_ignore_ascii_case(name))
    };
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    // relayed lines carry the framing only as a Content-Length (or when there is no body)
    if form == HeadForm::Lines && matches!(decoder, Decoder::Length(_) | Decoder::Done) {
        let mut lines = BytesMut::with_capacity(len + 128);
        let mut has_date = false;
        for h in parsed.headers.iter() {
            let name = h.name.as_bytes();
            if !end_to_end(name) || name.eq_ignore_ascii_case(b"server") {
                continue;
            }
            has_date |= name.eq_ignore_ascii_case(b"date");
            lines.extend_from_slice(name);
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(h.value);
            lines.extend_from_slice(b"\r\n");
        }
        buf.advance(len);
        return Ok(Some((
            resp,
            decoder,
            !close,
            Some(Relayed { lines, has_date }),
        )));
    }
    let fields = FieldOffsets::of(buf, parsed.headers);
    let keep: [bool; MAX_HEADERS] = std::array::from_fn(|i| {
        parsed
            .headers
            .get(i)
            .is_some_and(|h| end_to_end(h.name.as_bytes()))
    });
    let head = buf.split_to(len).freeze();
    let mut map = HeaderMap::with_capacity(fields.len());
    for (i, keep) in keep.iter().enumerate().take(fields.len()) {
        if !keep {
            continue; // the framing above is all they say to this hop
        }
        let (name, value) = fields
            .field(&head, i)
            .map_err(|_| "the server sent an invalid header field")?;
        map.append(name, value);
    }
    *resp.headers_mut() = map;
    Ok(Some((resp, decoder, !close, None)))
}

/// A response body read from an origin connection by whoever polls it.
pub struct OriginBody {
    conn: Option<TcpStream>,
    buf: BytesMut,
    decoder: Decoder,
    reusable: bool,
    pool: std::sync::Arc<IdlePool>,
    /// The response's fields, when [`HeadForm::Lines`] relayed them.
    relayed: Option<Relayed>,
    /// The most `buf` was grown to while reading this body (for [`IdlePool::put`]).
    reserved: usize,
}

impl std::fmt::Debug for OriginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginBody")
    }
}

impl OriginBody {
    /// The response's fields as relayed lines, if they came that way.
    pub fn relayed_mut(&mut self) -> Option<&mut Relayed> {
        self.relayed.as_mut()
    }

    /// Take the relayed lines out (the body then carries only the bytes).
    pub fn take_relayed(&mut self) -> Option<Relayed> {
        self.relayed.take()
    }

    /// The body ended cleanly: the connection goes back to the pool if it can.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && self.buf.is_empty()
        {
            self.pool
                .put(conn, std::mem::take(&mut self.buf), self.reserved);
        }
    }
}

impl http_body::Body for OriginBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if matches!(this.decoder, Decoder::Done) {
                this.release();
                return Poll::Ready(None);
            }
            // A body of known length: what the socket already holds is read before the
            // buffer's bytes go out, so the client gets the body in fewer, larger writes
            // (a 100 KiB answer in one, as nginx's buffers do).
            if let Decoder::Length(rest) = this.decoder
                && let Some(conn) = this.conn.as_mut()
                && rest > this.buf.len() as u64
            {
                // (room for a little more than the rest: a read that gets the whole rest
                // is then short, which tells tokio the socket is drained — the next
                // response's first read waits for readiness instead of failing once)
                let room = (rest - this.buf.len() as u64).min(MAX_READ as u64) as usize + 1024;
                if this.buf.capacity() - this.buf.len() < room {
                    this.buf.reserve(room);
                    this.reserved = this.reserved.max(this.buf.len() + room);
                }
                match poll_read_buf(conn, cx, &mut this.buf) {
                    Poll::Pending if this.buf.is_empty() => return Poll::Pending,
                    // (an end of stream shows again at the read below)
                    Poll::Pending | Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
            }
            match this.decoder.decode(&mut this.buf) {
                Ok(Some(chunk)) => {
                    if this.decoder.is_done() {
                        this.decoder = Decoder::Done;
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Ok(None) if this.decoder.is_done() => {
                    this.decoder = Decoder::Done;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the server's response body: {}", e.0),
                    )
                    .into())));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(Some(Err(
                    io::Error::other("the server connection is gone").into()
                )));
            };
            if this.buf.capacity() - this.buf.len() < 4096 {
                this.buf.reserve(READ_CHUNK);
                this.reserved = this.reserved.max(this.buf.len() + READ_CHUNK);
            }
            let n = match poll_read_buf(conn, cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            };
            if n == 0 {
                this.conn = None;
                if matches!(this.decoder, Decoder::UntilClose) {
                    this.decoder = Decoder::Done; // the close was the end
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before the end of the body",
                )
                .into())));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decoder, Decoder::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

fn poll_read_buf(
    conn: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    tokio_util::io::poll_read_buf(Pin::new(conn), cx, buf)
}

/// A proxied response body: hyper's client (left) or hopline's own HTTP/1.1 client
/// (right).
pub type UpstreamBody = http_body_util::Either<hyper::body::Incoming, OriginBody>;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], is_head: bool) -> Option<(Response<()>, Decoder, bool, usize)> {
        let mut b = BytesMut::from(raw);
        let (r, d, k, relayed) = parse_response(&mut b, is_head, HeadForm::Map).ok()??;
        assert!(relayed.is_none());
        Some((r, d, k, b.len()))
    }

    #[test]
    fn response_heads_give_framing_and_reuse() {
        let (r, d, keep, left) =
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(d, Decoder::Length(5));
        assert!(keep);
        assert_eq!(left, 5);
        let (_, d, keep, _) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(d, Decoder::chunked());
        assert!(keep);
        let (_, d, keep, _) = parse(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert_eq!(d, Decoder::UntilClose);
        assert!(!keep);
        let (_, d, _, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert_eq!(d, Decoder::Done, "HEAD has no body");
        let (_, d, _, _) = parse(b"HTTP/1.1 304 Not Modified\r\n\r\n", false).unwrap();
        assert_eq!(d, Decoder::Done);
        let (_, _, keep, _) =
            parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false).unwrap();
        assert!(!keep, "HTTP/1.0 closes unless it says keep-alive");
        let (_, _, keep, _) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
            false,
        )
        .unwrap();
        assert!(!keep);
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le", false).is_none());
        let mut b = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        );
        assert!(parse_response(&mut b, false, HeadForm::Map).is_err());
        let mut b = BytesMut::from(&b"SSH-2.0-OpenSSH\r\n\r\n"[..]);
        assert!(parse_response(&mut b, false, HeadForm::Map).is_err());
    }

    #[test]
    fn response_heads_lose_their_hop_by_hop_fields() {
        let (r, d, keep, _) = parse(
            b"HTTP/1.1 200 OK\r\nServer: o\r\nConnection: keep-alive, X-Hop\r\n\
Keep-Alive: timeout=5\r\nX-Hop: 1\r\nX-End: 2\r\nTransfer-Encoding: chunked\r\n\
Trailer: X-T\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTE: trailers\r\nVary: Accept\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(d, Decoder::chunked(), "framing is still read from them");
        assert!(keep);
        let mut names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["server", "vary", "x-end"]);
        // close is read, and leaves too
        let (r, _, keep, _) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!keep);
        assert_eq!(r.headers().len(), 1);
        assert_eq!(r.headers()[http::header::CONTENT_LENGTH], "0");
    }

    #[tokio::test]
    async fn idle_buffers_stay_within_the_budget() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conn = || TcpStream::connect(addr);
        let pool = IdlePool::new(8, Duration::from_secs(60), 200 * 1024);
        pool.put(
            conn().await.unwrap(),
            BytesMut::with_capacity(100 * 1024),
            100 * 1024,
        );
        pool.put(
            conn().await.unwrap(),
            BytesMut::with_capacity(90 * 1024),
            90 * 1024,
        );
        assert_eq!(pool.held(), (2, 190 * 1024));
        // over the budget: the connection stays, its buffer goes
        pool.put(
            conn().await.unwrap(),
            BytesMut::with_capacity(20 * 1024),
            20 * 1024,
        );
        assert_eq!(pool.held(), (3, 190 * 1024));
        // over the size one connection may keep
        pool.put(conn().await.unwrap(), BytesMut::new(), KEEP_BUFFER + 1);
        assert_eq!(pool.held(), (4, 190 * 1024));
        // taking a connection gives its buffer's share back
        let (_, buf) = pool.take().unwrap();
        assert_eq!(buf.capacity(), 0);
        let _ = pool.take().unwrap();
        let (_, buf) = pool.take().unwrap();
        assert!(buf.capacity() >= 90 * 1024);
        assert_eq!(pool.held(), (1, 100 * 1024));
        // no budget: no buffers
        let none = IdlePool::new(8, Duration::from_secs(60), 0);
        none.put(conn().await.unwrap(), BytesMut::with_capacity(4096), 4096);
        assert_eq!(none.held(), (1, 0));
    }

    fn relay(raw: &[u8], is_head: bool) -> (Response<()>, Decoder, bool, Option<Relayed>) {
        let mut b = BytesMut::from(raw);
        parse_response(&mut b, is_head, HeadForm::Lines)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn relayed_heads_keep_the_origins_end_to_end_lines() {
        let (r, d, keep, relayed) = relay(
            b"HTTP/1.1 200 OK\r\nServer: o\r\nDate: Mon, 23 Nov 2026 23:00:00 GMT\r\n\
Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nETag: \"a\"\r\n\
x-lower:  spaced \r\nContent-Length: 5\r\nVia: 1.0 cdn\r\n\r\nhello",
            false,
        );
        assert_eq!(d, Decoder::Length(5));
        assert!(keep);
        assert!(r.headers().is_empty(), "no header map is built");
        let relayed = relayed.expect("a Content-Length body is relayed as lines");
        assert!(relayed.has_date);
        assert_eq!(
            &relayed.lines[..],
            &b"Date: Mon, 23 Nov 2026 23:00:00 GMT\r\nETag: \"a\"\r\nx-lower: spaced\r\n\
Content-Length: 5\r\nVia: 1.0 cdn\r\n"[..],
            "hop-by-hop fields, the named ones and Server left out; the rest as sent"
        );
        // no body: lines too, with what framing they have
        let (_, d, _, relayed) = relay(b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n", false);
        assert_eq!(d, Decoder::Done);
        let relayed = relayed.unwrap();
        assert!(!relayed.has_date);
        assert_eq!(&relayed.lines[..], b"ETag: \"a\"\r\n");
        let (_, d, _, relayed) = relay(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert_eq!(d, Decoder::Done);
        assert_eq!(&relayed.unwrap().lines[..], b"Content-Length: 9\r\n");
        // chunked and close-delimited bodies: the writer frames them, from the map
        for raw in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n"[..],
        ] {
            let (r, _, _, relayed) = relay(raw, false);
            assert!(relayed.is_none());
            assert_eq!(r.headers()["x-a"], "1");
            assert!(r.headers().get(http::header::TRANSFER_ENCODING).is_none());
        }
        // the checks of the map form hold here too
        let mut b = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        );
        assert!(parse_response(&mut b, false, HeadForm::Lines).is_err());
        let mut b = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n"[..]);
        assert!(parse_response(&mut b, false, HeadForm::Lines).is_err());
    }

    proptest::proptest! {
        /// The two forms of a response head say the same: the relayed lines, read back
        /// the way the edge expands them, are the map's fields (less `Server`), with the
        /// same framing and reuse.
        #[test]
        fn relayed_lines_and_the_map_agree(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "Server", "Date", "ETag", "X-A", "x-b", "Vary", "Connection",
                        "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade",
                        "X-Hop", "via", "Server-Timing",
                    ]),
                    proptest::sample::select(vec![
                        "1", "a b", "keep-alive, X-Hop", "close", "x-a", "X-B, te",
                        "", "W/\"x\"", "gzip;q=1",
                    ]),
                ),
                0..12,
            ),
            version in proptest::sample::select(vec!["1.0", "1.1"]),
        ) {
            let mut raw = format!("HTTP/{version} 200 OK\r\n");
            for (n, v) in &fields {
                raw.push_str(&format!("{n}: {v}\r\n"));
            }
            raw.push_str("Content-Length: 3\r\n\r\nabc");
            let mut a = BytesMut::from(raw.as_bytes());
            let (map_resp, map_dec, map_keep, none) =
                parse_response(&mut a, false, HeadForm::Map).unwrap().unwrap();
            proptest::prop_assert!(none.is_none());
            let mut b = BytesMut::from(raw.as_bytes());
            let (_, dec, keep, relayed) =
                parse_response(&mut b, false, HeadForm::Lines).unwrap().unwrap();
            proptest::prop_assert_eq!(&a[..], &b[..], "the same bytes are left for the body");
            proptest::prop_assert_eq!(map_dec, dec);
            proptest::prop_assert_eq!(map_keep, keep);
            let relayed = relayed.unwrap();
            let text = std::str::from_utf8(&relayed.lines).unwrap();
            let mut from_lines: Vec<(String, String)> = text
                .split("\r\n")
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (n, v) = l.split_once(':').unwrap();
                    (n.to_ascii_lowercase(), v.trim().to_string())
                })
                .collect();
            let mut from_map: Vec<(String, String)> = map_resp
                .headers()
                .iter()
                .filter(|(n, _)| *n != http::header::SERVER)
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            from_lines.sort_by(|x, y| x.0.cmp(&y.0));
            from_map.sort_by(|x, y| x.0.cmp(&y.0));
            proptest::prop_assert_eq!(&from_lines, &from_map);
            proptest::prop_assert_eq!(
                relayed.has_date,
                from_map.iter().any(|(n, _)| n == "date")
            );
        }
    }
}
