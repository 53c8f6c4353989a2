//! Upgrades: after a `101` the raw connection, with any bytes already read in front, is
//! handed to whoever asked ([`on_upgrade`], [`take_over`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::h1::transport::Transport;

/// The client side of an upgraded connection (after `101 Switching Protocols`): the raw
/// connection, with any bytes the server had already read in front.
pub type Upgraded = Rewind<Box<dyn Transport>>;

impl<T: ?Sized + Transport> Transport for Box<T> {
    fn tcp(&self) -> Option<&TcpStream> {
        (**self).tcp()
    }
}

impl<T: Transport> Rewind<T> {
    /// The TCP socket underneath, when nothing sits between it and the caller (writes
    /// may go straight to it: the bytes read ahead in front only concern reads).
    pub fn tcp(&self) -> Option<&TcpStream> {
        self.inner.tcp()
    }
}

/// Stored in a request's extensions when it asks for an upgrade; resolves to the raw
/// connection once a 101 answer has been written (an error for any other answer).
#[derive(Debug)]
pub struct OnUpgrade(oneshot::Receiver<Upgraded>);

impl Future for OnUpgrade {
    type Output = io::Result<Upgraded>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.map_err(|_| io::Error::other("the connection was not upgraded (no 101 answer)"))
        })
    }
}

/// What a request's extensions carry (extensions must be `Clone`; the receiver is
/// taken out once).
#[derive(Clone)]
pub struct UpgradeSlot(pub Arc<parking_lot::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// Put on a response (by [`take_over`]): once its head is written with chunked framing,
/// the connection is handed to whoever holds the receiver instead of the body being
/// sent; the connection is not reused afterwards.
#[derive(Clone)]
pub struct TakeOverSlot(pub Arc<parking_lot::Mutex<Option<oneshot::Sender<Upgraded>>>>);

/// Ask for the raw connection of an HTTP/1.1 response once its head has gone out (e.g. a
/// stream of events written straight to the socket). Resolves to an error if the
/// response was sent another way (HTTP/2, HTTP/1.0, HEAD, an error answer instead).
pub fn take_over<B>(resp: &mut Response<B>) -> OnUpgrade {
    let (tx, rx) = oneshot::channel();
    resp.extensions_mut()
        .insert(TakeOverSlot(Arc::new(parking_lot::Mutex::new(Some(tx)))));
    OnUpgrade(rx)
}

/// Take the upgrade handle of a request that asked for one.
pub fn on_upgrade<B>(req: &mut Request<B>) -> Option<OnUpgrade> {
    let slot = req.extensions_mut().remove::<UpgradeSlot>()?;
    let rx = slot.0.lock().take()?;
    Some(OnUpgrade(rx))
}

/// A stream with some bytes already read from it put back in front.
pub struct Rewind<T> {
    pre: Option<Bytes>,
    inner: T,
}

impl<T> std::fmt::Debug for Rewind<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewind")
            .field("pre", &self.pre.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl<T> Rewind<T> {
    pub fn new(pre: Bytes, inner: T) -> Rewind<T> {
        Rewind {
            pre: (!pre.is_empty()).then_some(pre),
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut pre) = self.pre.take() {
            let n = pre.len().min(buf.remaining());
            buf.put_slice(&pre[..n]);
            pre.advance(n);
            if !pre.is_empty() {
                self.pre = Some(pre);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------
// the connection
