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

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
use http::{Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::BoxError;
use crate::h1::{Decoder, FieldOffsets};

/// Most header fields in a response head (within the request side's limit, so
/// [`FieldOffsets`] holds them all).
const MAX_HEADERS: usize = 64;
const _: () = assert!(MAX_HEADERS <= crate::h1::MAX_HEADERS);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Read size for response bodies.
const READ_CHUNK: usize = 64 * 1024;

/// One server's idle keep-alive connections (most recently used first out), each with
/// when it went idle (coarse clock, ms).
#[derive(Debug)]
pub struct IdlePool {
    conns: parking_lot::Mutex<Vec<(TcpStream, u64)>>,
    max: usize,
    idle_timeout_ms: u64,
}

impl IdlePool {
    /// A pool keeping at most `max` idle connections for at most `idle_timeout`.
    pub fn new(max: usize, idle_timeout: Duration) -> IdlePool {
        IdlePool {
            conns: parking_lot::Mutex::new(Vec::new()),
            max,
            idle_timeout_ms: idle_timeout.as_millis().try_into().unwrap_or(u64::MAX),
        }
    }

    fn take(&self) -> Option<TcpStream> {
        let now = crate::clock::mono_ms();
        let mut conns = self.conns.lock();
        while let Some((c, since)) = conns.pop() {
            if now.saturating_sub(since) < self.idle_timeout_ms {
                return Some(c);
            }
            // too old: the origin may be about to close it; the rest are older still
            conns.clear();
        }
        None
    }

    fn put(&self, c: TcpStream) {
        let mut conns = self.conns.lock();
        if conns.len() < self.max {
            conns.push((c, crate::clock::mono_ms()));
        }
    }
}

/// Why an exchange failed; the proxy turns it into a [`crate::proxy::ProxyError`].
#[derive(Debug)]
pub enum ExchangeError {
    /// The TCP connect failed or did not finish in time (why): nothing was sent.
    Connect(String),
    /// No response head in time.
    Timeout,
    /// The connection broke or the answer was not HTTP.
    Broken(String),
}

/// Send `head` (a complete, bodiless request head) to `addr` and read the response head
/// by `deadline`. The response comes without hop-by-hop fields (RFC 9110 §7.6.1: those
/// [`crate::proxy::is_hop_by_hop`] names, and the names its `Connection` lists).
pub async fn exchange(
    pool: &std::sync::Arc<IdlePool>,
    addr: SocketAddr,
    head: &[u8],
    is_head: bool,
    connect_timeout: Duration,
    deadline: Instant,
) -> Result<Response<H1Body>, ExchangeError> {
    // a pooled connection first; if it turns out dead before any answer, a fresh one
    if let Some(conn) = pool.take() {
        match attempt(conn, head, is_head, deadline).await {
            Ok((resp, conn, buf, decoder, reusable)) => {
                return Ok(finish(resp, conn, buf, decoder, reusable, pool));
            }
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
    match attempt(conn, head, is_head, deadline).await {
        Ok((resp, conn, buf, decoder, reusable)) => {
            Ok(finish(resp, conn, buf, decoder, reusable, pool))
        }
        Err(Attempt::Stale) => Err(ExchangeError::Broken(
            "the server closed the connection without an answer".into(),
        )),
        Err(Attempt::Failed(e)) => Err(e),
    }
}

fn finish(
    resp: Response<()>,
    conn: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    reusable: bool,
    pool: &std::sync::Arc<IdlePool>,
) -> Response<H1Body> {
    let mut body = H1Body {
        conn: Some(conn),
        buf,
        decoder,
        reusable,
        pool: pool.clone(),
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

type Answer = (Response<()>, TcpStream, BytesMut, Decoder, bool);

async fn attempt(
    mut conn: TcpStream,
    head: &[u8],
    is_head: bool,
    deadline: Instant,
) -> Result<Answer, Attempt> {
    if conn.write_all(head).await.is_err() {
        return Err(Attempt::Stale);
    }
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut got_any = false;
    loop {
        match parse_response(&mut buf, is_head) {
            Ok(Some((resp, decoder, reusable))) => {
                if resp.status().is_informational() {
                    continue; // 100 Continue and friends: the real answer follows
                }
                return Ok((resp, conn, buf, decoder, reusable));
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
            buf.reserve(8 * 1024);
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

/// A parsed response head, how its body is framed, and whether the connection can be
/// used again after it.
type ParsedHead = (Response<()>, Decoder, bool);

/// Parse a response head at the front of `buf` (consuming it).
fn parse_response(buf: &mut BytesMut, is_head: bool) -> Result<Option<ParsedHead>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(buf) {
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
    let fields = FieldOffsets::of(buf, parsed.headers);
    let head = buf.split_to(len).freeze();
    let mut map = HeaderMap::with_capacity(fields.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = version == Version::HTTP_10;
    // names a Connection field lists besides close / keep-alive: hop-by-hop too (rare)
    let mut listed: Vec<HeaderName> = Vec::new();
    for i in 0..fields.len() {
        let (name, value) = fields
            .field(&head, i)
            .map_err(|_| "the server sent an invalid header field")?;
        if name == header::CONTENT_LENGTH {
            let v: u64 = value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or("the server sent an invalid Content-Length")?;
            if length.is_some_and(|l| l != v) {
                return Err("the server sent conflicting Content-Lengths");
            }
            length = Some(v);
        } else if name == header::TRANSFER_ENCODING {
            chunked = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .map(|c| c.trim_ascii())
                .find(|c| !c.is_empty())
                .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for t in value
                .as_bytes()
                .split(|&b| b == b',')
                .map(|t| t.trim_ascii())
            {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else if let Ok(n) = HeaderName::from_bytes(t) {
                    listed.push(n);
                }
            }
        }
        if crate::proxy::is_hop_by_hop(&name) {
            continue; // the framing above is all they say to this hop
        }
        map.append(name, value);
    }
    for name in &listed {
        map.remove(name);
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
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = map;
    Ok(Some((resp, decoder, !close)))
}

/// A response body read from an origin connection by whoever polls it.
pub struct H1Body {
    conn: Option<TcpStream>,
    buf: BytesMut,
    decoder: Decoder,
    reusable: bool,
    pool: std::sync::Arc<IdlePool>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H1Body")
    }
}

impl H1Body {
    /// The body ended cleanly: the connection goes back to the pool if it can.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && self.buf.is_empty()
        {
            self.pool.put(conn);
        }
    }
}

impl http_body::Body for H1Body {
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
pub type UpstreamBody = http_body_util::Either<hyper::body::Incoming, H1Body>;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], is_head: bool) -> Option<(Response<()>, Decoder, bool, usize)> {
        let mut b = BytesMut::from(raw);
        let (r, d, k) = parse_response(&mut b, is_head).ok()??;
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
        assert!(parse_response(&mut b, false).is_err());
        let mut b = BytesMut::from(&b"SSH-2.0-OpenSSH\r\n\r\n"[..]);
        assert!(parse_response(&mut b, false).is_err());
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
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "0");
    }
}
