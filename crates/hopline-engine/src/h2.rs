//! HTTP/2 beside the engine's own HTTP/1.1: hyper serves it; the engine reads the client's
//! connection preface first (so a wrong one gets GOAWAY), and asks a connection to close
//! gracefully (GOAWAY) when the server starts closing.

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;

use crate::h1::connection::{Closing, H2_PREFACE};
use crate::h1::upgrade::Rewind;

/// Reads the client's connection preface (RFC 9113 §3.4) before hyper does: a client
/// that chose HTTP/2 and then sends something else gets the server's SETTINGS and
/// GOAWAY(PROTOCOL_ERROR), as the RFC asks, instead of a silent close.
pub async fn h2_preface<I>(mut io: I, timeout: Duration) -> Option<Rewind<I>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let want = H2_PREFACE;
    let mut got = Vec::with_capacity(want.len());
    let read = async {
        while got.len() < want.len() && want.starts_with(&got) {
            let mut chunk = [0u8; 24];
            let n = io.read(&mut chunk[..want.len() - got.len()]).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(timeout, read).await.ok()??;
    if got == want {
        return Some(Rewind::new(Bytes::from(got), io));
    }
    // an empty SETTINGS, then GOAWAY(last stream 0, PROTOCOL_ERROR, "invalid preface")
    let mut out = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let debug = b"invalid connection preface";
    out.extend_from_slice(&((8 + debug.len()) as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(debug);
    let _ = tokio::time::timeout(timeout, async {
        io.write_all(&out).await?;
        io.shutdown().await
    })
    .await;
    None
}
/// Drive a connection; when the server starts closing, ask it to finish its in-flight
/// requests and close (HTTP/1.1: after the current response; HTTP/2: GOAWAY).
pub async fn until_closing<C, E>(conn: C, closing: &Closing) -> Result<(), E>
where
    C: std::future::Future<Output = Result<(), E>> + GracefulConn,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = closing.started() => conn.as_mut().begin_close(),
    }
    conn.await
}

/// A connection that can be asked to close gracefully.
pub trait GracefulConn {
    fn begin_close(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> GracefulConn for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn begin_close(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
