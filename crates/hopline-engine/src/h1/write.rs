//! The write path: a response head encoded once, small bodies in the same write, files by
//! `sendfile` on plain TCP, chunked framing, and the `Date` header cached per second.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};
use crate::h1::transport::Transport;

/// A first body chunk up to this size is written together with the head.
pub const COALESCE_MAX: usize = 64 * 1024;

/// Bodies at least this large leave by `sendfile` when the connection is plain TCP.
pub const SENDFILE_MIN: u64 = 16 * 1024;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304) or it has a `Content-Length`.
    None,
    Length,
    Chunked,
    /// HTTP/1.0 without a length: the close ends it.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    Close,
    KeepAlive10,
    Default,
    Upgrade,
}

pub async fn write_error<T: Transport>(
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
pub async fn write_response<T: Transport>(
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
pub const HOLD_MAX: usize = 64 * 1024;

/// Whether `buf` (what follows the request just read) holds a whole request head.
pub fn next_head_here(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Write the answers held back, if any (and free their buffer: an idle connection
/// holds none).
pub async fn flush_pending<T: Transport>(io: &mut T, pending: &mut Vec<u8>) -> io::Result<()> {
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
pub async fn sent_within<F: Future<Output = io::Result<()>>>(
    limit: Duration,
    f: F,
) -> io::Result<()> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client accepted no data within the send timeout",
        )),
    }
}

/// What [`start_response`] could not finish by itself.
pub struct Rest {
    head: Vec<u8>,
    body: Body,
    framing: Framing,
    /// A frame already taken from the body (polled once while starting).
    first: Option<Option<Result<http_body::Frame<Bytes>, BoxError>>>,
}

pub enum Started {
    /// Everything to send, head and body.
    Done(Vec<u8>),
    /// The head, and a body still to send.
    More(Box<Rest>),
}

/// Encode the head and, when the body is already in memory, the body with it.
pub fn start_response(
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
pub async fn write_rest<T: Transport>(
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
pub fn push_chunk(out: &mut Vec<u8>, framing: Framing, data: &[u8], end: bool) {
    let mut size_line = [0u8; 20];
    let (size_line, tail) = chunk_frame(&mut size_line, framing, data.len(), end);
    out.extend_from_slice(size_line);
    out.extend_from_slice(data);
    out.extend_from_slice(tail);
}

/// What goes before and after `len` bytes of body under `framing`: for chunked, the
/// chunk's size line (written into `scratch`) and its CRLF (with `end`, the terminating
/// chunk too; an empty chunk is only the terminator); for other framings, nothing.
pub fn chunk_frame(
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
pub fn chunk_size_line(out: &mut [u8; 20], n: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = ((usize::BITS - n.leading_zeros()).div_ceil(4)).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(n >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

pub async fn write_all_vectored<T: AsyncWrite + Unpin>(
    io: &mut T,
    parts: &[&[u8]],
) -> io::Result<()> {
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
pub async fn send_all(tcp: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
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

pub async fn sendfile_all(
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
pub fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    framing: Framing,
    conn: Connection,
) {
    encode_head_with(out, parts, None, framing, conn, None)
}

pub fn encode_head_with(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    lines: Option<&crate::body::Lines>,
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
pub mod date {
    use std::cell::RefCell;
    use std::time::{Duration, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }

    pub(super) fn with(f: impl FnOnce(&[u8])) {
        let secs = crate::clock::unix_secs();
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
