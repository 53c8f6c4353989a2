//! The response body every handler returns: empty, one in-memory chunk, or a stream
//! (files, compression, proxied bodies). One concrete type, so the hot path does not box.
//! It also carries the request's access-log record, written when the body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;

use crate::access_log::LogRecord;

/// Error type of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Stream(BoxBody<Bytes, BoxError>),
}

/// A response body.
pub struct Body {
    kind: Kind,
    log: Option<Box<LogRecord>>,
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
        }
    }

    /// Attach the access-log record, written when the body is done (or dropped).
    pub(crate) fn with_log(mut self, log: Box<LogRecord>) -> Body {
        self.log = Some(log);
        self
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(s) => s.size_hint(),
        }
    }
}
