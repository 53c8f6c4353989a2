//! The body that stores a response while it streams to the client: collected on the way,
//! stored whole at its end (if it fits), waking the requests that waited on the key.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_cache_semantics::CachePolicy;

use crate::store::{FetchLead, HttpCache};

/// A response body streamed to the client and collected on the way; at its end the
/// whole response is stored and the requests waiting on it are woken.
pub struct TeeBody<B> {
    inner: B,
    buf: BytesMut,
    store: Option<PendingStore>,
}

struct PendingStore {
    cache: Arc<HttpCache>,
    key: String,
    req: http::request::Parts,
    res: http::response::Parts,
    policy: CachePolicy,
    _lead: Option<FetchLead>,
}

impl<B> TeeBody<B> {
    /// Stream `inner`, storing it under `key` at the end if it fits.
    pub fn new(
        inner: B,
        cache: Arc<HttpCache>,
        key: String,
        req: http::request::Parts,
        res: http::response::Parts,
        policy: CachePolicy,
        lead: Option<FetchLead>,
    ) -> TeeBody<B> {
        TeeBody {
            inner,
            buf: BytesMut::new(),
            store: Some(PendingStore {
                cache,
                key,
                req,
                res,
                policy,
                _lead: lead,
            }),
        }
    }
}

impl<B> http_body::Body for TeeBody<B>
where
    B: http_body::Body<Data = Bytes, Error = hopline_engine::body::BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = hopline_engine::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hopline_engine::body::BoxError>>>
    {
        use std::task::Poll;
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(st)) = (frame.data_ref(), &this.store) {
                    if (this.buf.len() + data.len()) as u64 > st.cache.max_object {
                        this.store = None; // too large: pass through, wake waiters
                        this.buf = BytesMut::new();
                    } else {
                        this.buf.extend_from_slice(data);
                    }
                }
                // hyper stops polling once the body says it has ended: store now
                if this.inner.is_end_stream()
                    && let Some(st) = this.store.take()
                {
                    let body = std::mem::take(&mut this.buf).freeze();
                    st.cache.store(&st.key, &st.req, &st.res, st.policy, body);
                }
            }
            Poll::Ready(None) => {
                if let Some(st) = this.store.take() {
                    let body = std::mem::take(&mut this.buf).freeze();
                    st.cache.store(&st.key, &st.req, &st.res, st.policy, body);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.store = None;
            }
            Poll::Pending => {}
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
