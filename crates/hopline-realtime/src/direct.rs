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
//! by the task's rules, never by a publisher. Server-Sent Events streams over HTTP/1.1
//! go the same way ([`sse`]): the edge sends the head and hands the connection over.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use hopline_edge::service::Upgraded;
use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

use crate::hub::{Channel, Hub};
use crate::log::Position;
use crate::service::{chunk, sse_chunk};

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
    io: Upgraded,
    /// `io`'s socket when it is plain TCP (nothing between it and the service): a
    /// publisher writes to it with one `send`, without the walk through the boxed
    /// layers and the runtime's readiness state to the socket (at thousands of sockets
    /// per publication those are cache misses each).
    fd: Option<RawFd>,
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
    #[allow(unsafe_code)]
    fn send_now(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        let fd = self.fd?;
        // SAFETY: `fd` belongs to `self.io`, which owns it, never changes, and is alive
        // while `self` is borrowed (the lock on the state is held); `buf` is a live slice
        // of `buf.len()` bytes. MSG_NOSIGNAL: a closed peer is an EPIPE, not a signal.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        Some(if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        })
    }
}

impl Shared {
    pub(crate) fn new(io: Upgraded, kind: Kind) -> Arc<Shared> {
        let fd = io.tcp().map(|tcp| tcp.as_raw_fd());
        Arc::new(Shared {
            kind,
            state: Mutex::new(State {
                io,
                fd,
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

/// A Server-Sent Events stream over HTTP/1.1, written straight to its socket once the
/// edge has sent the head (`Transfer-Encoding: chunked`) and handed the connection over:
/// events by the publishers when they can, by this task otherwise; a comment every ping
/// interval; cut (last chunk, then close) when the subscriber falls more than
/// `client_queue` behind or out of history, the channel is deleted (after an `event:
/// deleted`), or the server shuts down; closed without a
/// last chunk when no write makes progress for `write_timeout` (the edge's send timeout).
pub(crate) async fn sse(
    io: Upgraded,
    hub: Arc<Hub>,
    ch: Arc<Channel>,
    mut pos: Position,
    first: Bytes,
    write_timeout: Duration,
) {
    let settings = hub.settings();
    hub.metrics.sse_open.fetch_add(1, Ordering::Relaxed);
    // (a subscriber as the channel counts them: it is not swept away)
    let _rx = ch.subscribe();
    let shared = Shared::new(io, Kind::Sse);
    let registration = ch.register(shared.clone());
    let mut closing = hub.closing();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + settings.ping, settings.ping);
    let mut frames: SmallVec<[Bytes; 4]> = smallvec::smallvec![chunk(&first)];
    let mut was_up = true;
    let mut sink = BytesMut::new();
    let last_chunk = 'stream: loop {
        // take the socket back from the publishers
        let (tail, flush) = shared.take_back(Some(&mut pos));
        if let Some(tail) = tail {
            frames.insert(0, tail);
        }
        if ch.backlog(pos.offset) > settings.client_queue {
            hub.metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
            break 'stream true;
        }
        let read = ch.read(Some(&pos), 256);
        if !read.recovered && !ch.is_gone() {
            // fell out of history: cut (it resumes from its Last-Event-ID and is told
            // of the gap)
            hub.metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
            break 'stream true;
        }
        // (a full read: more may be there already)
        let more = read.events.len() == 256;
        if !read.events.is_empty() {
            for e in &read.events {
                frames.push(sse_chunk(&read.position.epoch, e));
            }
            hub.metrics
                .deliveries
                .fetch_add(read.events.len() as u64, Ordering::Relaxed);
            pos = read.position;
        }
        // deleted: what was published before goes out, then the client is told
        let deleted = !more && ch.is_gone();
        if deleted {
            frames.push(chunk(&crate::service::sse_deleted(&ch.name)));
        }
        let up = hub.engine_up();
        if up != was_up {
            was_up = up;
            frames.push(chunk(if up {
                b": engine back\n\n"
            } else {
                b": engine unavailable; events resume when it is back\n\n"
            }));
        }
        // write, and keep an eye on how far behind the subscriber gets
        let mut watch = SseWatch {
            shared: &shared,
            ch: &ch,
            offset: pos.offset,
        };
        let written = shared
            .write_frames(
                &mut frames,
                flush,
                write_timeout,
                settings.client_queue,
                &mut watch,
            )
            .await;
        let woke = match written {
            Ok(woke) => woke || more,
            Err(why) => {
                if matches!(why, Stopped::Slow) {
                    hub.metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
                }
                break 'stream false;
            }
        };
        if deleted {
            break 'stream true;
        }
        shared.hand_over(&pos);
        if woke {
            continue;
        }
        tokio::select! {
            r = shared.read_buf(&mut sink) => match r {
                // (an SSE client sends nothing more; what it sends is dropped)
                Ok(n) if n > 0 => sink.clear(),
                _ => break 'stream false,
            },
            _ = shared.wake.notified() => {}
            _ = ping.tick() => frames.push(chunk(b": ping\n\n")),
            _ = closing.changed() => break 'stream true,
        }
    };
    // publishers stop before the stream ends
    drop(registration);
    if last_chunk {
        let (tail, _) = shared.take_back(None);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if let Some(t) = tail {
                shared.write_all(&t).await?;
            }
            shared.write_all(b"0\r\n\r\n").await?;
            shared.flush().await?;
            shared.shutdown().await
        })
        .await;
    }
    hub.metrics.sse_open.fetch_sub(1, Ordering::Relaxed);
}

/// An SSE stream's [`Watch`]: its publishers' wake-ups and its one channel.
struct SseWatch<'a> {
    shared: &'a Shared,
    ch: &'a Channel,
    offset: u64,
}

impl Watch for SseWatch<'_> {
    fn woken(&mut self) -> impl std::future::Future<Output = ()> + Send {
        self.shared.wake.notified()
    }

    fn behind(&self) -> u64 {
        self.ch.backlog(self.offset)
    }
}
