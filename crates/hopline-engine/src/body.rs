//! The response body every handler returns: empty, one in-memory chunk, or a stream
//! (files, compression, proxied bodies). One concrete type, so the hot path does not box.
//! It also carries the request's access-log record, written when the body ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use std::future::Future;

use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;

use crate::access_log::LogRecord;

pub use crate::error::BoxError;

/// A body read from another server that [`Body::relayed`] carries without a further box.
pub trait RelayedBody:
    HttpBody<Data = Bytes, Error = BoxError> + Send + Sync + Unpin + 'static
{
}

impl<T> RelayedBody for T where
    T: HttpBody<Data = Bytes, Error = BoxError> + Send + Sync + Unpin + 'static
{
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Stream(BoxBody<Bytes, BoxError>),
    /// A body another server sends, read by a client above the engine (the proxy's
    /// HTTP/1.1 origin client): boxed, so that every response of the edge moves an enum
    /// the size of a file range.
    Relayed(Box<dyn RelayedBody>),
    /// A byte range of an open file: sent by `sendfile` on plain HTTP/1.1, else from
    /// the bytes in memory when the file cache holds them, else read in chunks.
    File {
        range: FileRange,
        mem: Option<Bytes>,
        reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
    },
}

/// A byte range of an open file.
#[derive(Debug, Clone)]
pub struct FileRange {
    /// The open file (shared with the open-file cache).
    pub file: Arc<std::fs::File>,
    /// First byte.
    pub start: u64,
    /// Bytes to send.
    pub len: u64,
}

/// Chunk size when a file body is read rather than sent by `sendfile`.
const FILE_CHUNK: u64 = 64 * 1024;

/// A response body.
pub struct Body {
    kind: Kind,
    log: Option<Box<LogRecord>>,
    /// Header lines already encoded for HTTP/1.1, written after the response's own
    /// fields: a static file's fixed headers (made once per file, not once per request)
    /// or an origin's response fields relayed as they came.
    lines: Option<Lines>,
}

/// Header lines encoded for HTTP/1.1 (`name: value\r\n` each): a response's framing is
/// in them (its `content-length`, unless the response has no body).
#[derive(Debug, Clone)]
pub struct Lines {
    pub bytes: Bytes,
    /// An origin's fields relayed by the proxy: any name may be among them (a static
    /// file's are a fixed, known set), so whoever edits the head expands them first.
    pub relayed: bool,
    /// A `Date` is among them (the writer then adds none).
    pub has_date: bool,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Body")
    }
}

impl Body {
    /// No body.
    pub fn empty() -> Body {
        Body {
            kind: Kind::Empty,
            log: None,
            lines: None,
        }
    }

    /// One in-memory chunk.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let b = bytes.into();
        Body {
            kind: if b.is_empty() {
                Kind::Empty
            } else {
                Kind::Full(Some(b))
            },
            log: None,
            lines: None,
        }
    }

    /// Any other body (streams of files, compressors, upstream responses).
    pub fn stream<B>(body: B) -> Body
    where
        B: HttpBody<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Body {
            kind: Kind::Stream(body.map_err(Into::into).boxed()),
            log: None,
            lines: None,
        }
    }

    /// A `text/event-stream` response (server-sent events) with this body: not cached,
    /// and marked so that reverse proxies (nginx) do not buffer it.
    pub fn event_stream(self) -> http::Response<Body> {
        use http::header::{self, HeaderValue};
        let mut r = http::Response::new(self);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        r
    }

    /// Frames as a task sends them (server-sent events); the body ends when the sender
    /// is dropped, and the sender sees `closed()` when the client goes away.
    pub fn feed(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
        Body::stream(Feed { rx })
    }

    /// Another server's response body, read as the client connection asks for it.
    pub fn relayed(body: impl RelayedBody) -> Body {
        Body {
            kind: Kind::Relayed(Box::new(body)),
            log: None,
            lines: None,
        }
    }

    /// `len` bytes of `file` from `start`; `mem` is the same bytes when already in memory.
    pub fn file(file: Arc<std::fs::File>, start: u64, len: u64, mem: Option<Bytes>) -> Body {
        Body {
            kind: if len == 0 {
                Kind::Empty
            } else {
                Kind::File {
                    range: FileRange { file, start, len },
                    mem,
                    reading: None,
                }
            },
            log: None,
            lines: None,
        }
    }

    /// Whether this is a byte range of an open file (a `sendfile` candidate).
    pub fn is_file(&self) -> bool {
        matches!(self.kind, Kind::File { .. })
    }

    /// A file body of at least `min` bytes, taken out to be sent by `sendfile` (counted
    /// in the access log as sent); the body is empty afterwards.
    pub fn take_sendfile(&mut self, min: u64) -> Option<FileRange> {
        match &self.kind {
            Kind::File {
                range,
                reading: None,
                ..
            } if range.len >= min => {}
            _ => return None,
        }
        let Kind::File { range, .. } = std::mem::replace(&mut self.kind, Kind::Empty) else {
            return None;
        };
        if let Some(log) = &mut self.log {
            log.bytes += range.len;
        }
        Some(range)
    }

    /// Attach a static file's header lines encoded for HTTP/1.1; they must include
    /// `content-length`, and no `Date`.
    pub fn with_lines(mut self, lines: Bytes) -> Body {
        self.lines = Some(Lines {
            bytes: lines,
            relayed: false,
            has_date: false,
        });
        self
    }

    /// Attach an origin's relayed header lines.
    pub fn with_relayed_lines(mut self, lines: Bytes, has_date: bool) -> Body {
        self.lines = Some(Lines {
            bytes: lines,
            relayed: true,
            has_date,
        });
        self
    }

    /// Whether the head is partly in relayed origin lines (edit it only after
    /// [`expand_lines`]).
    pub fn has_relayed_lines(&self) -> bool {
        self.lines.as_ref().is_some_and(|l| l.relayed)
    }

    /// Take the encoded header lines, if any.
    pub fn take_lines(&mut self) -> Option<Lines> {
        self.lines.take()
    }

    /// Attach the access-log record, written when the body is done (or dropped).
    pub fn with_log(mut self, log: Box<LogRecord>) -> Body {
        self.log = Some(log);
        self
    }
}

/// Move a response's encoded header lines into its header map (for HTTP/2, or before
/// anything edits the headers).
pub fn expand_lines(resp: &mut http::Response<Body>) {
    let Some(lines) = resp.body_mut().take_lines() else {
        return;
    };
    for line in lines.bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_maybe_shared(lines.bytes.slice_ref(value)),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.finish();
        }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(s) => Pin::new(s).poll_frame(cx),
            Kind::Relayed(o) => Pin::new(&mut **o).poll_frame(cx),
            Kind::File {
                range,
                mem,
                reading,
            } => poll_file(range, mem, reading, cx),
        };
        if let (Some(log), Poll::Ready(Some(Ok(frame)))) = (&mut this.log, &polled)
            && let Some(d) = frame.data_ref()
        {
            log.bytes += d.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Stream(s) => s.is_end_stream(),
            Kind::Relayed(o) => o.is_end_stream(),
            Kind::File { range, .. } => range.len == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(s) => s.size_hint(),
            Kind::Relayed(o) => o.size_hint(),
            Kind::File { range, .. } => SizeHint::with_exact(range.len),
        }
    }
}

fn poll_file(
    range: &mut FileRange,
    mem: &mut Option<Bytes>,
    reading: &mut Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if range.len == 0 {
        return Poll::Ready(None);
    }
    if let Some(b) = mem.take() {
        range.len = 0;
        return Poll::Ready(Some(Ok(Frame::data(b))));
    }
    let task = reading.get_or_insert_with(|| {
        let file = range.file.clone();
        let (at, n) = (range.start, range.len.min(FILE_CHUNK) as usize);
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut v = vec![0u8; n];
            let mut got = 0;
            while got < n {
                match file.read_at(&mut v[got..], at + got as u64)? {
                    0 => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the file shrank while it was read",
                        ));
                    }
                    k => got += k,
                }
            }
            Ok(Bytes::from(v))
        })
    });
    let res = match Pin::new(task).poll(cx) {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(r) => r,
    };
    *reading = None;
    match res {
        Ok(Ok(b)) => {
            range.start += b.len() as u64;
            range.len -= b.len() as u64;
            Poll::Ready(Some(Ok(Frame::data(b))))
        }
        Ok(Err(e)) => {
            range.len = 0;
            Poll::Ready(Some(Err(Box::new(e))))
        }
        Err(e) => {
            range.len = 0;
            Poll::Ready(Some(Err(Box::new(e))))
        }
    }
}

/// A request body: read by hopline's HTTP/1.1 engine, or by hyper (HTTP/2).
pub enum RequestBody {
    /// No body.
    Empty,
    /// An HTTP/2 stream's body.
    Hyper(hyper::body::Incoming),
    /// An HTTP/1.1 body, read by the connection as the handler asks.
    H1(crate::h1::request_body::H1RequestBody),
    /// An HTTP/3 stream's body.
    H3(Box<crate::h3::request_body::H3RequestBody>),
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestBody")
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::H1(b) => b.poll_frame(cx),
            RequestBody::H3(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::H1(b) => b.is_end_stream(),
            RequestBody::H3(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::H1(b) => b.size_hint(),
            RequestBody::H3(_) => SizeHint::default(),
        }
    }
}

/// The body of [`Body::feed`].
struct Feed {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl HttpBody for Feed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|f| f.map(|b| Ok(http_body::Frame::data(b))))
    }
}
