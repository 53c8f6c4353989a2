//! Publisher-side writes to subscribers' sockets.
//!
//! A WebSocket connection subscribed to one channel without compression, or a
//! Server-Sent Events stream over HTTP/1.1 ([`crate::sse`]: the edge sends the head and
//! hands the connection over), registers its socket with the channel. A publication then
//! writes the event's shared frame to every registered socket that can take it at once,
//! from the publisher's side, instead of waking every subscriber's task to do the same
//! write (in a fan-out, waking and polling a task per subscriber costs more user-space
//! time than the write, which is the kernel's). Whatever cannot go that way — the socket
//! is full, a frame is half written, the subscriber is behind, the task is busy with its
//! own writes — falls back to the task, which is woken and delivers from the channel's
//! log; a slow consumer is cut by the task's rules, never by a publisher.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use hopline_edge::service::Upgraded;
use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

use crate::channel_log::Position;

/// A WebSocket connection's socket, shared by its task and the publishers of its channel.
pub(crate) struct Shared {
    /// What the socket carries (which encoding of an event it gets).
    pub(crate) kind: Kind,
    pub(crate) state: Mutex<State>,
    /// Wakes the task: a publisher left it something to do.
    pub(crate) wake: Notify,
}

/// What a connection's task watches while one of its writes waits.
pub(crate) trait Watch {
    /// Resolves when the connection is woken (new events, or a publisher left it work).
    fn woken(&mut self) -> impl std::future::Future<Output = ()> + Send;
    /// Bytes of events the subscriber has not been given yet.
    fn behind(&self) -> u64;
}

/// Why a connection's writes stopped.
pub(crate) enum Stopped {
    /// The peer closed, or the socket failed.
    Gone,
    /// A slow consumer: too far behind, or no write done within the write timeout.
    Slow,
}

/// The stream a directly written socket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// WebSocket text frames.
    WebSocket,
    /// A Server-Sent Events body in HTTP/1.1 chunks.
    Sse,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("direct::Shared")
    }
}

pub(crate) struct State {
    /// The connection. When it is a plain TCP socket (nothing between it and the
    /// service), a publisher writes to the socket with one `send`, without the walk
    /// through the runtime's readiness state.
    io: Upgraded,
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

impl State {
    /// Write what a plain TCP socket takes of `buf` now, without waiting (None: not a
    /// plain TCP socket). The runtime's idea of the socket's readiness is left as it is:
    /// a would-block here only means the task's next write finds it out itself.
    /// `NOSIGNAL`: a closed peer is an `EPIPE`, not a signal.
    fn send_now(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        // (borrowed from the socket `io` owns, for as long as the state is)
        let tcp = self.io.tcp()?;
        let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
        Some(rustix::net::send(tcp, buf, flags).map_err(io::Error::from))
    }
}

impl Shared {
    pub(crate) fn new(io: Upgraded, kind: Kind) -> Arc<Shared> {
        Arc::new(Shared {
            kind,
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
        // a plain TCP socket takes the bytes straight (no flush to do); anything else
        // (TLS, HTTP/2) through its writer
        let (written, plain) = match st.send_now(frame) {
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => (Poll::Pending, true),
            Some(r) => (Poll::Ready(r), true),
            None => (Pin::new(&mut st.io).poll_write(&mut cx, frame), false),
        };
        let given = match written {
            Poll::Ready(Ok(n)) if n == frame.len() => {
                st.offset = offset;
                if plain {
                    return true;
                }
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

    /// Take the socket back from the publishers (they write no more until
    /// [`Shared::hand_over`]): the end of a frame one of them began, which must go first;
    /// whether one left a flush to do; and `pos` moved to where they got.
    pub(crate) fn take_back(&self, pos: Option<&mut Position>) -> (Option<Bytes>, bool) {
        let mut st = self.state.lock();
        st.open = false;
        if let Some(pos) = pos
            && st.epoch == pos.epoch
            && st.offset > pos.offset
        {
            pos.offset = st.offset;
        }
        (st.tail.take(), std::mem::take(&mut st.flush))
    }

    /// Let publishers write to the socket again, from the event after `pos`.
    pub(crate) fn hand_over(&self, pos: &Position) {
        let mut st = self.state.lock();
        if !Arc::ptr_eq(&st.epoch, &pos.epoch) {
            st.epoch = pos.epoch.clone();
        }
        st.offset = pos.offset;
        st.open = true;
    }

    /// The task's writes: `frames` in order (left empty), then a flush when asked or
    /// anything was written. While a write waits, `watch` says when the connection is
    /// woken (new events) and how far behind the subscriber is then; past
    /// `client_queue` (with what is still unsent) it is a slow consumer. Ok(true) when
    /// it was woken meanwhile (events may be waiting).
    pub(crate) async fn write_frames(
        &self,
        frames: &mut SmallVec<[Bytes; 4]>,
        flush: bool,
        timeout: Duration,
        client_queue: u64,
        watch: &mut impl Watch,
    ) -> Result<bool, Stopped> {
        let mut deadline = None;
        let mut woke = false;
        let mut unsent: u64 = frames.iter().map(|f| f.len() as u64).sum();
        let flush = flush || unsent > 0;
        for frame in frames.drain(..) {
            let mut written = 0;
            while written < frame.len() {
                // (most writes complete at once: no timer unless one waits)
                let r = match self.write(&frame[written..]).now_or_never() {
                    Some(r) => r,
                    None => {
                        let deadline =
                            *deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
                        tokio::select! {
                            biased;
                            r = self.write(&frame[written..]) => r,
                            _ = watch.woken() => {
                                woke = true;
                                if unsent + watch.behind() > client_queue {
                                    return Err(Stopped::Slow);
                                }
                                continue;
                            }
                            _ = tokio::time::sleep_until(deadline) => return Err(Stopped::Slow),
                        }
                    }
                };
                match r {
                    Ok(0) | Err(_) => return Err(Stopped::Gone),
                    Ok(n) => {
                        written += n;
                        unsent -= n as u64;
                    }
                }
            }
        }
        if flush && self.flush().now_or_never().is_none() {
            let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + timeout);
            match tokio::time::timeout_at(deadline, self.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Stopped::Gone),
                Err(_) => return Err(Stopped::Slow),
            }
        }
        Ok(woke)
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
