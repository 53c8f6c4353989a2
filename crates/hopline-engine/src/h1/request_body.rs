//! The receiving end of a request body that the connection task reads for the handler.

use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::error::BoxError;

// ---------------------------------------------------------------------------------
// request bodies

/// The receiving end of a request body read by the connection task.
pub struct H1RequestBody {
    pub rx: mpsc::Receiver<io::Result<Bytes>>,
    pub want: Option<oneshot::Sender<()>>,
    pub remaining: Option<u64>,
    pub done: bool,
}

impl H1RequestBody {
    pub fn poll_frame(
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

    pub fn is_end_stream(&self) -> bool {
        self.done || self.remaining == Some(0)
    }

    pub fn size_hint(&self) -> http_body::SizeHint {
        match self.remaining {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}
