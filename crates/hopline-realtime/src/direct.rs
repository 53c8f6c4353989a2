//! Publisher-side writes to WebSocket subscribers.
//!
//! A WebSocket connection subscribed to one channel without compression registers its
//! socket with the channel. A publication then writes the event's shared frame to every
//! registered socket that can take it at once, from the publisher's side, instead of
//! waking every subscriber's task to do the same write (the wake-up and the task's poll
//! were most of hopline's user-space time in a fan-out; the write itself is the kernel's).
//! Whatever cannot go that way — the socket is full, a frame is half written, the
//! subscriber is behind, the task is busy with its own writes — falls back to the task,
//! which is woken and delivers from the channel's log as before; a slow consumer is cut
//! by the task's rules, never by a publisher.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use hopline_edge::service::Upgraded;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

/// A WebSocket connection's socket, shared by its task and the publishers of its channel.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes the task: a publisher left it something to do.
    pub(crate) wake: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("direct::Shared")
    }
}

pub(crate) struct State {
    pub(crate) io: Upgraded,
    /// Publishers may write: the task has nothing half written and nothing queued.
    pub(crate) open: bool,
    /// The position the socket has been given up to (events fully written, or begun by
    /// a publisher with the rest in `tail`).
    pub(crate) epoch: Arc<str>,
    pub(crate) offset: u64,
    /// The unwritten end of a frame a publisher began.
    pub(crate) tail: Option<Bytes>,
    /// A publisher's write left bytes to flush (e.g. TLS records).
    pub(crate) flush: bool,
}

impl Shared {
    pub(crate) fn new(io: Upgraded) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                io,
                open: false,
                epoch: Arc::from(""),
                offset: 0,
                tail: None,
                flush: false,
            }),
            wake: Notify::new(),
        })
    }

    /// Offer the event at `(epoch, offset)` (its frame `frame`): written now if the
    /// socket takes it; otherwise the task is woken to deliver it from the log. True when
    /// the event was given to the socket (fully, or begun with the rest left to the task).
    pub(crate) fn offer(&self, epoch: &Arc<str>, offset: u64, frame: &Bytes) -> bool {
        let Some(mut st) = self.state.try_lock() else {
            // the task is in the middle of a poll of its socket: it will look again
            self.wake.notify_one();
            return false;
        };
        if !st.open || st.offset.wrapping_add(1) != offset || st.epoch != *epoch {
            drop(st);
            self.wake.notify_one();
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let io = Pin::new(&mut st.io);
        let given = match io.poll_write(&mut cx, frame) {
            Poll::Ready(Ok(n)) if n == frame.len() => {
                st.offset = offset;
                match Pin::new(&mut st.io).poll_flush(&mut cx) {
                    Poll::Ready(Ok(())) => return true,
                    _ => st.flush = true,
                }
                true
            }
            Poll::Ready(Ok(n)) if n > 0 => {
                st.offset = offset;
                st.tail = Some(frame.slice(n..));
                true
            }
            // full (the noop waker registered here is replaced by the task's own when it
            // writes), closed or failed: the task writes it from the log and sees why
            _ => false,
        };
        st.open = false;
        drop(st);
        self.wake.notify_one();
        given
    }

    /// Write some of `buf` (the task's own writes).
    pub(crate) async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| Pin::new(&mut self.state.lock().io).poll_write(cx, buf)).await
    }

    pub(crate) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }

    pub(crate) async fn flush(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut self.state.lock().io).poll_flush(cx)).await
    }

    pub(crate) async fn shutdown(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut self.state.lock().io).poll_shutdown(cx)).await
    }

    /// Read what the peer sent into `buf`.
    pub(crate) async fn read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            tokio_util::io::poll_read_buf(Pin::new(&mut self.state.lock().io), cx, buf)
        })
        .await
    }
}

/// A registration of a connection with its channel's publishers; dropping it ends them.
pub(crate) struct Registration {
    pub(crate) channel: Arc<crate::hub::Channel>,
    pub(crate) key: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.channel.unregister(self.key);
    }
}
