// hopline: interim (1xx) responses from a server's handler on an HTTP/2 stream.

use std::sync::{Arc, Mutex};
use std::task::Waker;

/// hopline: a request extension of hyper's HTTP/2 server: interim (1xx) responses the
/// handler wants sent on the request's stream before its final response (e.g. an
/// origin's `103 Early Hints` relayed by a proxy). Each goes out as a HEADERS frame
/// with its status as soon as the stream's task runs again; none after the final
/// response. 101 and non-1xx statuses are refused by h2 and dropped.
#[derive(Clone, Debug, Default)]
pub struct Http2Informational(Arc<Mutex<Queue>>);

#[derive(Debug, Default)]
struct Queue {
    responses: Vec<http::Response<()>>,
    waker: Option<Waker>,
}

impl Http2Informational {
    /// Queue an interim response and wake the stream's task.
    pub fn send(&self, response: http::Response<()>) {
        let waker = {
            let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
            q.responses.push(response);
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// What is queued; `waker` is woken by the next [`send`](Self::send).
    pub(crate) fn take(&self, waker: &Waker) -> Vec<http::Response<()>> {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !q.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            q.waker = Some(waker.clone());
        }
        std::mem::take(&mut q.responses)
    }
}
