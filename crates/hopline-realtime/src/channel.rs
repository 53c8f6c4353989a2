//! One channel: its log, the signal that wakes its subscribers when the log grows, and
//! the sockets its publishers write to directly ([`crate::direct`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::channel_log::{Behind, ChannelLog, Event, Position, Read, Retention, Start, now_ms};
use crate::direct::{Kind, Shared};
use crate::frames::{sse_chunk, ws_frame};
use crate::metrics::Metrics;

/// One channel: its log, its wake-up signal and its directly written sockets.
#[derive(Debug)]
pub struct Channel {
    /// The channel's name.
    pub name: Arc<str>,
    log: Mutex<ChannelLog>,
    /// The last offset, sent each time the log grows.
    tick: watch::Sender<u64>,
    /// Connections (WebSocket, SSE) its publishers write to directly ([`crate::direct`]).
    direct: Mutex<slab::Slab<Arc<Shared>>>,
    /// The hub's counters (direct writes count there).
    metrics: Arc<Metrics>,
    /// Set when the channel was deleted: its subscribers are told and let go.
    gone: AtomicBool,
    /// Set while the shared engine deletes it: a publication that starts the channel
    /// again meanwhile (a new epoch) is not taken into this log (its subscribers are told
    /// of the deletion, not of a lost position).
    deleting: AtomicBool,
    /// Who is subscribed here (WebSocket subscriptions, SSE streams), when the hub keeps
    /// presence.
    presence: Mutex<Members>,
}

/// A channel's members, and how many of them each `sub` has (counts read in O(1)).
#[derive(Debug, Default)]
struct Members {
    all: slab::Slab<Member>,
    users: std::collections::HashMap<String, u32, foldhash::fast::RandomState>,
}

/// One subscriber of a channel, as presence shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    /// The connection's id (one per WebSocket connection or SSE stream).
    #[serde(serialize_with = "as_str")]
    pub client: Arc<str>,
    /// The token's `sub` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The token's `info` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// `websocket` or `sse`.
    pub transport: &'static str,
    /// When it subscribed (Unix ms).
    pub since_ms: u64,
}

fn as_str<S: serde::Serializer>(s: &Arc<str>, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(s)
}

/// A member's place in its channel's presence: it leaves when this is dropped.
pub struct Presence {
    ch: Arc<Channel>,
    key: usize,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut p = self.ch.presence.lock();
        let Some(m) = p.all.try_remove(self.key) else {
            return;
        };
        if let Some(sub) = m.sub
            && let Some(n) = p.users.get_mut(&sub)
        {
            *n -= 1;
            if *n == 0 {
                p.users.remove(&sub);
            }
        }
    }
}

impl Channel {
    /// `member` joins the channel's presence until the returned guard is dropped.
    pub fn join(self: &Arc<Self>, member: Member) -> Presence {
        let mut p = self.presence.lock();
        if let Some(sub) = &member.sub {
            *p.users.entry(sub.clone()).or_default() += 1;
        }
        let key = p.all.insert(member);
        Presence {
            ch: self.clone(),
            key,
        }
    }

    /// Who is subscribed now.
    pub fn members(&self) -> Vec<Member> {
        self.presence
            .lock()
            .all
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// (subscribers, distinct `sub`s among them).
    pub fn presence_counts(&self) -> (usize, usize) {
        let p = self.presence.lock();
        (p.all.len(), p.users.len())
    }
}

impl Channel {
    pub(crate) fn new(name: &str, log: ChannelLog, metrics: Arc<Metrics>) -> Channel {
        let last = log.position().offset;
        Channel {
            name: name.into(),
            log: Mutex::new(log),
            tick: watch::channel(last).0,
            direct: Mutex::new(slab::Slab::new()),
            metrics,
            gone: AtomicBool::new(false),
            deleting: AtomicBool::new(false),
            presence: Mutex::default(),
        }
    }

    /// The channel was deleted (`DELETE /live/CHANNEL`): a subscriber still holding it
    /// takes what is left in its log, then is told and lets go.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Mark the channel deleted and wake every subscriber to see it.
    pub(crate) fn mark_gone(&self) {
        if !self.gone.swap(true, Ordering::AcqRel) {
            self.metrics
                .channels_deleted
                .fetch_add(1, Ordering::Relaxed);
        }
        self.wake();
    }

    /// Let publishers write to `conn` directly (see [`crate::direct`]).
    pub(crate) fn register(self: &Arc<Self>, conn: Arc<Shared>) -> Registration {
        let key = self.direct.lock().insert(conn);
        Registration {
            channel: self.clone(),
            key,
        }
    }

    pub(crate) fn unregister(&self, key: usize) {
        self.direct.lock().try_remove(key);
    }

    /// Offer a new event to the directly written connections.
    ///
    /// The registry's lock is let go every [`DIRECT_CHUNK`] sockets, so that a
    /// subscriber registering or leaving on another worker waits for one chunk of writes,
    /// not for a whole fan-out (~25 ms at 5,000 sockets). One registered meanwhile in a
    /// slot already passed is not offered this event; it learns of it from the channel's
    /// tick when it hands its socket over (see the session's `give_back`).
    fn write_direct(&self, epoch: &Arc<str>, e: &Event) {
        let ws = std::cell::OnceCell::new();
        let sse = std::cell::OnceCell::new();
        let mut given = 0;
        let mut start = 0;
        loop {
            let conns = self.direct.lock();
            let end = conns.capacity();
            if start >= end || conns.is_empty() {
                break;
            }
            let stop = end.min(start + DIRECT_CHUNK);
            // outside tokio's cooperative budget: the publisher's task would run out of
            // it after ~128 sockets, and every later write would be refused as "not ready"
            let offer_all = std::future::poll_fn(|_| {
                std::task::Poll::Ready(
                    (start..stop)
                        .filter_map(|key| conns.get(key))
                        .filter(|c| {
                            let frame = match c.kind {
                                Kind::WebSocket => {
                                    ws.get_or_init(|| ws_frame(&self.name, epoch, e))
                                }
                                Kind::Sse => sse.get_or_init(|| sse_chunk(epoch, e)),
                            };
                            c.offer(epoch, e.offset, frame)
                        })
                        .count(),
                )
            });
            given += tokio::task::unconstrained(offer_all)
                .now_or_never()
                .unwrap_or(0);
            drop(conns);
            start = stop;
        }
        if given == 0 {
            return;
        }
        self.metrics
            .deliveries
            .fetch_add(given as u64, Ordering::Relaxed);
        self.metrics
            .deliveries_direct
            .fetch_add(given as u64, Ordering::Relaxed);
    }

    /// Read from a position (`None`: from now).
    pub fn read(&self, since: Option<&Position>, max: usize) -> Read {
        self.log.lock().read(since, Instant::now(), max)
    }

    /// The position a reader starting at `start` reads after (`None`: from now); see
    /// [`ChannelLog::resolve`].
    pub fn resolve(&self, start: &Start) -> Option<Position> {
        self.log.lock().resolve(start, Instant::now())
    }

    /// Read from `start` (one hold of the log: the latest `n` are the ones there now).
    pub fn read_from(&self, start: &Start, max: usize) -> Read {
        let now = Instant::now();
        let mut log = self.log.lock();
        let since = log.resolve(start, now);
        log.read(since.as_ref(), now, max)
    }

    /// Something to answer a poll from `since` at once: events after it, or a position
    /// it cannot be recovered from (another epoch, a future offset).
    pub fn moved_from(&self, since: &Position) -> bool {
        let log = self.log.lock();
        **log.epoch() != *since.epoch || log.last() != since.offset
    }

    /// The current position.
    pub fn position(&self) -> Position {
        self.log.lock().position()
    }

    /// The next events for a subscriber at `pos` (one lock; see [`ChannelLog::next_batch`]).
    /// An epoch other than the channel's counts as lost.
    pub fn next_batch(
        &self,
        pos: &Position,
        max: usize,
        queue: u64,
        out: &mut smallvec::SmallVec<[Arc<Event>; 4]>,
    ) -> Result<(), Behind> {
        let log = self.log.lock();
        if *log.epoch() != pos.epoch {
            return Err(Behind::Lost);
        }
        log.next_batch(pos.offset, max, queue, out)
    }

    /// Bytes a subscriber at `offset` is behind the head.
    pub fn backlog(&self, offset: u64) -> u64 {
        let log = self.log.lock();
        log.total_bytes() - log.bytes_at(offset)
    }

    /// A wake-up receiver: `changed()` resolves when the log grows.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// Subscribers waiting on this channel now.
    pub fn subscribers(&self) -> usize {
        self.tick.receiver_count()
    }

    /// Append with the next local offset (memory engine).
    pub(crate) fn publish_local(&self, data: Bytes) -> Position {
        let mut log = self.log.lock();
        let e = log.publish(data, Instant::now(), now_ms());
        let p = Position {
            epoch: log.epoch().clone(),
            offset: e.offset,
        };
        drop(log);
        self.tick.send_replace(p.offset);
        self.write_direct(&p.epoch, &e);
        p
    }

    /// Append a publication ordered elsewhere (shared engine). A different epoch
    /// replaces the local history (the shared one was lost and restarted).
    pub(crate) fn append_shared(&self, epoch: &str, offset: u64, data: Bytes, published_ms: u64) {
        let mut log = self.log.lock();
        if &**log.epoch() != epoch {
            if self.deleting.load(Ordering::Acquire) || self.is_gone() {
                return;
            }
            let retention = log.retention();
            *log = ChannelLog::with_epoch(epoch.into(), offset.saturating_sub(1), retention);
        }
        if let Some(e) = log.append_at(offset, data, Instant::now(), published_ms) {
            let epoch = log.epoch().clone();
            drop(log);
            self.tick.send_replace(offset);
            self.write_direct(&epoch, &e);
        }
    }

    /// Wake every subscriber without a publication (e.g. the engine came back, or the
    /// hub is shutting down).
    pub(crate) fn wake(&self) {
        self.tick.send_modify(|_| {});
        for (_, c) in self.direct.lock().iter() {
            c.wake.notify_one();
        }
    }

    pub(crate) fn retention(&self) -> Retention {
        self.log.lock().retention()
    }

    pub(crate) fn set_retention(&self, r: Retention) {
        self.log.lock().set_retention(r);
    }

    pub(crate) fn len(&self) -> usize {
        self.log.lock().len()
    }

    /// Drop what history no longer keeps.
    pub(crate) fn trim(&self, now: Instant) {
        self.log.lock().trim(now);
    }

    /// Mark (or unmark) the channel as being deleted by the shared engine: until then, a
    /// publication under another epoch is not taken into its log.
    pub(crate) fn set_deleting(&self, deleting: bool) {
        self.deleting.store(deleting, Ordering::Release);
    }

    /// The channel as an operator sees it (`GET /live/CHANNEL?info`).
    pub fn info(&self) -> ChannelInfo {
        let mut log = self.log.lock();
        let (messages, oldest_offset, last_published_ms) = log.kept(Instant::now());
        ChannelInfo {
            position: log.position(),
            messages,
            oldest_offset,
            last_published_ms,
            bytes_published: log.total_bytes(),
            subscribers: self.subscribers(),
        }
    }
}

/// A channel's state: where its log is, what history holds, who listens (on this node).
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    /// The epoch and the last offset.
    pub position: Position,
    /// Publications still in history.
    pub messages: usize,
    /// The oldest of them (`offset + 1` when history is empty).
    pub oldest_offset: u64,
    /// When the newest was published (Unix ms).
    pub last_published_ms: Option<u64>,
    /// Bytes published since this node's log began (its history or not).
    pub bytes_published: u64,
    /// Subscribers waiting on the channel here: WebSocket subscriptions, SSE streams and
    /// held long polls.
    pub subscribers: usize,
}

/// Directly written sockets offered an event per hold of a channel's registry lock.
const DIRECT_CHUNK: usize = 512;

/// A registration of a connection with its channel's publishers; dropping it ends them.
pub(crate) struct Registration {
    pub(crate) channel: Arc<Channel>,
    pub(crate) key: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.channel.unregister(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_distinct_users_are_counted_as_they_come_and_go() {
        let log = ChannelLog::new(crate::channel_log::Retention {
            history: 10,
            ttl: std::time::Duration::from_secs(60),
        });
        let ch = Arc::new(Channel::new("room", log, Arc::default()));
        let member = |sub: Option<&str>| Member {
            client: "c".into(),
            sub: sub.map(str::to_string),
            info: None,
            transport: "websocket",
            since_ms: 0,
        };
        let a1 = ch.join(member(Some("ada")));
        let a2 = ch.join(member(Some("ada")));
        let anon = ch.join(member(None));
        let b = ch.join(member(Some("bob")));
        assert_eq!(ch.presence_counts(), (4, 2));
        drop(a1);
        assert_eq!(ch.presence_counts(), (3, 2), "ada is still there once");
        drop(a2);
        assert_eq!(ch.presence_counts(), (2, 1));
        drop((anon, b));
        assert_eq!(ch.presence_counts(), (0, 0));
        assert!(ch.members().is_empty());
    }
}
