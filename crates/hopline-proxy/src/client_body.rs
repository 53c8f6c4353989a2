//! The client's request body on its way to an origin, watched so that a failure on the
//! client's side is told apart from the server's; and the body type the pool's hyper
//! client sends.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Empty};

use crate::error::ProxyError;
use hopline_engine::body::RequestBody;

pub type ProxyBody = Either<ClientBody, Empty<Bytes>>;

/// The client's request body on its way to the origin, watched: when it breaks (bad
/// chunk framing, the client closing early, a client too slow), the failure is the
/// client's — it is answered 400/408/499 and never counted against the server.
pub struct ClientBody {
    pub inner: RequestBody,
    pub failed: Arc<std::sync::OnceLock<ProxyError>>,
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = hopline_engine::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(e))) = &polled {
            let _ = self.failed.set(ProxyError::client_body(e.as_ref()));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
