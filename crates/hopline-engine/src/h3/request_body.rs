//! The body of a request that came over HTTP/3, read from its stream as the handler asks.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame};

use crate::error::BoxError;

/// A request body read from an HTTP/3 stream as the handler asks: DATA frames, then the
/// trailers if any.
pub struct H3RequestBody {
    stream: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>,
    state: BodyState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Data,
    Trailers,
    Done,
}

impl H3RequestBody {
    pub(crate) fn new(stream: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>) -> Self {
        H3RequestBody {
            stream,
            state: BodyState::Data,
        }
    }
}

impl Drop for H3RequestBody {
    fn drop(&mut self) {
        if self.state != BodyState::Done {
            // the answer does not need the rest (RFC 9114 §4.1.1): say so with
            // H3_NO_ERROR rather than the transport's bare 0 when the stream drops
            self.stream.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

impl HttpBody for H3RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.state == BodyState::Data {
            match ready!(this.stream.poll_recv_data(cx)) {
                Ok(Some(mut buf)) => {
                    return Poll::Ready(Some(Ok(Frame::data(buf.copy_to_bytes(buf.remaining())))));
                }
                Ok(None) => this.state = BodyState::Trailers,
                Err(e) => {
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
        if this.state == BodyState::Trailers {
            let got = ready!(this.stream.poll_recv_trailers(cx));
            this.state = BodyState::Done;
            return Poll::Ready(match got {
                Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
                Ok(None) => None,
                Err(e) => Some(Err(e.into())),
            });
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.state == BodyState::Done
    }
}
