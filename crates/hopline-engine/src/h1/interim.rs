//! Interim (1xx) responses a handler sends before its final answer: `100 Continue`
//! and `103 Early Hints`.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::body::Body;
use crate::h1::codec::trim_ows;
use crate::h1::transport::Transport;
use crate::h1::write::sent_within;

/// Interim (1xx) responses a handler relays to an HTTP/1.1 client before its final
/// response (RFC 9110 §15.2) — e.g. an origin's `103 Early Hints`. It lives in the
/// request's own future: nothing is allocated unless a 1xx arrives.
#[derive(Debug, Default)]
pub struct Interim {
    queue: parking_lot::Mutex<Vec<(StatusCode, Bytes)>>,
    ready: tokio::sync::Notify,
    /// On an HTTP/2 stream: hyper's queue of the stream, which sends them itself.
    h2: Option<hyper::ext::Http2Informational>,
}

impl Interim {
    /// Interim responses for an HTTP/2 stream of hyper's server.
    pub fn http2(queue: hyper::ext::Http2Informational) -> Interim {
        Interim {
            h2: Some(queue),
            ..Default::default()
        }
    }

    /// The queued 1xx heads, encoded for HTTP/1.1 one after the other (and taken).
    pub fn take_heads(&self) -> Vec<u8> {
        let heads = std::mem::take(&mut *self.queue.lock());
        let mut out = Vec::new();
        for (status, lines) in heads {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(status.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&lines);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Queue a 1xx head: its status and its field lines (`name: value\r\n` each).
    pub fn send(&self, status: StatusCode, lines: Bytes) {
        if !status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        let Some(h2) = &self.h2 else {
            self.queue.lock().push((status, lines));
            self.ready.notify_one();
            return;
        };
        // HTTP/2: the lines as fields, without the connection-specific ones it forbids
        let mut r = Response::new(());
        *r.status_mut() = status;
        for line in lines.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(trim_ows(&line[..colon])),
                HeaderValue::from_bytes(trim_ows(&line[colon + 1..])),
            ) else {
                continue;
            };
            if !matches!(
                name.as_str(),
                "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
            ) {
                r.headers_mut().append(name, value);
            }
        }
        h2.send(r);
    }
}

/// Await the handler's response, writing the 1xx heads it relays meanwhile.
pub async fn with_interim<T: Transport, F: Future<Output = Response<Body>>>(
    io: &mut T,
    mut fut: std::pin::Pin<&mut F>,
    interim: Option<&Interim>,
    send_timeout: Duration,
) -> Response<Body> {
    let Some(interim) = interim else {
        return fut.await;
    };
    let mut broken = false;
    loop {
        tokio::select! {
            biased;
            r = fut.as_mut() => {
                // 1xx heads queued in the same turn as the answer still go before it
                let heads = interim.take_heads();
                if !broken && !heads.is_empty() {
                    let _ = sent_within(send_timeout, io.write_all(&heads)).await;
                }
                return r;
            }
            _ = interim.ready.notified(), if !broken => {
                let heads = interim.take_heads();
                let sent = sent_within(send_timeout, async {
                    io.write_all(&heads).await?;
                    io.flush().await
                })
                .await;
                broken = sent.is_err();
            }
        }
    }
}
