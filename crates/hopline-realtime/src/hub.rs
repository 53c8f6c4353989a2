//! The hub: the channels of one `[realtime.NAME]`, each a [`ChannelLog`] with a wake-up
//! signal, and the engine that orders publications — in this process (`memory`) or in
//! Redis Streams shared by several nodes (`redis://…`, see [`crate::redis_engine`]).
//!
//! Subscribers hold no queue of their own: they hold a position in the channel's log and
//! are woken (a `watch` per channel, one registration per subscriber) when it grows; the
//! bytes between their position and the head are their backlog. Each event's frames
//! (WebSocket, SSE, JSON) are encoded once and shared by every subscriber.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::RealtimeConfig;
use crate::log::{ChannelLog, Position, Read, Retention};

/// Settings a hub runs with (replaced on reload).
#[derive(Debug, Clone)]
pub struct Settings {
    /// History bounds.
    pub retention: Retention,
    /// Largest publication.
    pub max_message: usize,
    /// How long a long poll is held.
    pub long_poll: Duration,
    /// Keep-alive interval (SSE comment, WebSocket ping).
    pub ping: Duration,
    /// Backlog in bytes past which a subscriber is cut.
    pub client_queue: u64,
    /// Channels per WebSocket connection.
    pub max_subscriptions: usize,
    /// SSE `retry:` in ms.
    pub sse_retry_ms: u64,
    /// The config as written.
    pub config: RealtimeConfig,
}

impl Settings {
    /// Settings from a config section.
    pub fn from_config(c: &RealtimeConfig) -> Settings {
        Settings {
            retention: Retention {
                history: c.history,
                ttl: c.history_ttl.0,
            },
            max_message: c.max_message.0 as usize,
            long_poll: Duration::from_millis(c.long_poll_ms.max(1)),
            ping: Duration::from_millis(c.ping_ms.max(100)),
            client_queue: c.client_queue.0,
            max_subscriptions: c.max_subscriptions.max(1),
            sse_retry_ms: c.sse_retry_ms,
            config: c.clone(),
        }
    }
}

/// Counters for `/metrics` and the status page.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub ws_open: AtomicU64,
    /// Open SSE streams.
    pub sse_open: AtomicU64,
    /// Long polls held now.
    pub long_polls_held: AtomicU64,
    /// Short polls answered.
    pub polls: AtomicU64,
    /// Long polls answered.
    pub long_polls: AtomicU64,
    /// Publications accepted.
    pub publications: AtomicU64,
    /// Events delivered to subscribers (every transport).
    pub deliveries: AtomicU64,
    /// Of those, WebSocket deliveries written by the publisher itself (the fast path:
    /// the subscriber's task was not woken).
    pub deliveries_direct: AtomicU64,
    /// Reads that could not recover (position lost): the subscriber was told.
    pub drops: AtomicU64,
    /// Subscribers cut because they fell behind (slow consumers).
    pub slow_consumers: AtomicU64,
    /// WebSocket connections closed for a protocol violation.
    pub ws_violations: AtomicU64,
    /// Channels of this node let go because they were deleted (here or, with the shared
    /// engine, on another node); their subscribers were told.
    pub channels_deleted: AtomicU64,
}

/// Why a publication or a subscription failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The shared engine (Redis) cannot be reached: publish answers 503.
    #[error("the channel engine is unavailable: {0}")]
    Unavailable(String),
}

/// One channel: its log and its wake-up signal.
#[derive(Debug)]
pub struct Channel {
    /// The channel's name.
    pub name: Arc<str>,
    log: Mutex<ChannelLog>,
    /// The last offset, sent each time the log grows.
    tick: watch::Sender<u64>,
    /// WebSocket connections its publishers write to directly ([`crate::direct`]).
    direct: Mutex<slab::Slab<Arc<crate::direct::Shared>>>,
    /// The hub's counters (direct writes count there).
    metrics: Arc<Metrics>,
    /// Set when the channel was deleted: its subscribers are told and let go.
    gone: AtomicBool,
    /// Set while the shared engine deletes it: a publication that starts the channel
    /// again meanwhile (a new epoch) is not taken into this log (its subscribers are told
    /// of the deletion, not of a lost position).
    deleting: AtomicBool,
}

impl Channel {
    fn new(name: &str, log: ChannelLog, metrics: Arc<Metrics>) -> Channel {
        let last = log.position().offset;
        Channel {
            name: name.into(),
            log: Mutex::new(log),
            tick: watch::channel(last).0,
            direct: Mutex::new(slab::Slab::new()),
            metrics,
            gone: AtomicBool::new(false),
            deleting: AtomicBool::new(false),
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
    pub(crate) fn register(
        self: &Arc<Self>,
        conn: Arc<crate::direct::Shared>,
    ) -> crate::direct::Registration {
        let key = self.direct.lock().insert(conn);
        crate::direct::Registration {
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
    fn write_direct(&self, epoch: &Arc<str>, e: &crate::log::Event) {
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
                                crate::direct::Kind::WebSocket => ws
                                    .get_or_init(|| crate::service::ws_frame(&self.name, epoch, e)),
                                crate::direct::Kind::Sse => {
                                    sse.get_or_init(|| crate::service::sse_chunk(epoch, e))
                                }
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
        out: &mut smallvec::SmallVec<[Arc<crate::log::Event>; 4]>,
    ) -> Result<(), crate::log::Behind> {
        let log = self.log.lock();
        if *log.epoch() != pos.epoch {
            return Err(crate::log::Behind::Lost);
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

/// A publication's answer.
#[derive(Debug, Clone)]
pub struct Published {
    /// Its epoch and offset.
    pub position: Position,
    /// Subscribers waiting on the channel on this node (Nchan's "active subscribers").
    pub subscribers: usize,
}

/// What a deleted channel was.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// Its epoch and last offset.
    pub position: Position,
    /// Publications its history held.
    pub messages: usize,
    /// Subscribers it had on this node (told of the deletion).
    pub subscribers: usize,
}

/// Directly written sockets offered an event per hold of a channel's registry lock.
const DIRECT_CHUNK: usize = 512;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Which engine orders publications.
#[derive(Debug)]
pub(crate) enum Engine {
    /// In this process.
    Memory,
    /// Redis Streams, shared by every node on the same Redis.
    Redis(Arc<crate::redis_engine::RedisEngine>),
}

/// The channels of one `[realtime.NAME]`.
#[derive(Debug)]
pub struct Hub {
    /// The section's name.
    pub name: String,
    settings: RwLock<Arc<Settings>>,
    channels: RwLock<HashMap<Arc<str>, Arc<Channel>, foldhash::fast::RandomState>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    pub(crate) engine: Engine,
    /// Set when the server shuts down: long-lived subscribers end.
    pub(crate) closing: watch::Sender<bool>,
}

impl Hub {
    /// A hub for `config` (a Redis engine connects lazily and reconnects by itself).
    pub fn new(name: &str, config: &RealtimeConfig) -> Result<Arc<Hub>, EngineError> {
        let engine = if config.engine == "memory" {
            Engine::Memory
        } else {
            Engine::Redis(crate::redis_engine::RedisEngine::new(&config.engine, name)?)
        };
        let hub = Arc::new(Hub {
            name: name.to_string(),
            settings: RwLock::new(Arc::new(Settings::from_config(config))),
            channels: RwLock::new(HashMap::default()),
            metrics: Arc::default(),
            engine,
            closing: watch::channel(false).0,
        });
        if let Engine::Redis(r) = &hub.engine {
            r.start(Arc::downgrade(&hub));
        }
        Ok(hub)
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    /// Apply a reloaded section (history bounds, limits, auth); channels and their
    /// subscribers stay. The engine is not changed by a reload.
    pub fn reconfigure(&self, config: &RealtimeConfig) {
        let s = Arc::new(Settings::from_config(config));
        for ch in self.channels.read().values() {
            ch.set_retention(s.retention);
        }
        *self.settings.write() = s;
    }

    /// The channel `name`, made on first use (with the shared engine: its history is
    /// loaded from Redis first).
    pub async fn channel(&self, name: &str) -> Result<Arc<Channel>, EngineError> {
        if let Some(c) = self.channels.read().get(name) {
            return Ok(c.clone());
        }
        let log = match &self.engine {
            Engine::Memory => ChannelLog::new(self.settings().retention),
            Engine::Redis(r) => r.load(name, self.settings().retention).await?,
        };
        let mut map = self.channels.write();
        let ch = map
            .entry(Arc::from(name))
            .or_insert_with(|| Arc::new(Channel::new(name, log, self.metrics.clone())))
            .clone();
        drop(map);
        if let Engine::Redis(r) = &self.engine {
            r.follow(&ch);
        }
        Ok(ch)
    }

    /// A channel if it exists.
    pub fn existing(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.read().get(name).cloned()
    }

    /// Every channel (for the engine's follower and the status page).
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.channels.read().values().cloned().collect()
    }

    /// Publish `data` on `channel`; the answer is its position and who waited for it.
    pub async fn publish(&self, channel: &str, data: Bytes) -> Result<Published, EngineError> {
        let ch = self.channel(channel).await?;
        let position = match &self.engine {
            Engine::Memory => ch.publish_local(data),
            Engine::Redis(r) => r.publish(&ch, data).await?,
        };
        self.metrics.publications.fetch_add(1, Ordering::Relaxed);
        Ok(Published {
            position,
            subscribers: ch.subscribers(),
        })
    }

    /// The shared engine is reachable (always true in memory).
    pub fn engine_up(&self) -> bool {
        match &self.engine {
            Engine::Memory => true,
            Engine::Redis(r) => r.is_up(),
        }
    }

    /// A receiver that turns true when the server shuts down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// End long-lived subscribers (server shutdown).
    pub fn shutdown(&self) {
        self.closing.send_replace(true);
        // (held long polls wait on their channel only: woken here, they see the flag)
        for ch in self.channels() {
            ch.wake();
        }
    }

    /// Delete `channel` (as Nchan's `DELETE`): its history goes, its subscribers — on every
    /// node, with the shared engine — are told and let go, and the next use starts it
    /// again under a new epoch (an old position then reads `recovered: false`). What the
    /// channel was, or None when there was no such channel.
    pub async fn delete(&self, channel: &str) -> Result<Option<Deleted>, EngineError> {
        let shared = match &self.engine {
            Engine::Memory => None,
            Engine::Redis(r) => {
                let here = self.existing(channel);
                if let Some(ch) = &here {
                    ch.deleting.store(true, Ordering::Release);
                }
                // (this node's epoch tells the other nodes even when Redis had lost the
                // channel already, e.g. a first try failed after its keys were deleted)
                let epoch = here.as_ref().map(|c| c.position().epoch.to_string());
                match r.delete(channel, epoch.as_deref()).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        if let Some(ch) = &here {
                            ch.deleting.store(false, Ordering::Release);
                        }
                        return Err(e);
                    }
                }
            }
        };
        let local = self.channels.write().remove(channel);
        let subscribers = local.as_ref().map_or(0, |c| c.subscribers());
        let deleted = match (shared, &local) {
            // the shared engine's view: its history, whether this node had it or not
            (Some(Some((epoch, offset, messages))), _) => Some(Deleted {
                position: Position {
                    epoch: epoch.into(),
                    offset,
                },
                messages,
                subscribers,
            }),
            (_, Some(ch)) => {
                let i = ch.info();
                Some(Deleted {
                    position: i.position,
                    messages: i.messages,
                    subscribers,
                })
            }
            (_, None) => None,
        };
        self.let_go(channel, local);
        Ok(deleted)
    }

    /// After `channel` left the map: no more following it, and its subscribers here (of
    /// `local`, the channel that was in the map) told.
    fn let_go(&self, channel: &str, local: Option<Arc<Channel>>) {
        if let Engine::Redis(r) = &self.engine {
            r.unfollow(channel);
        }
        if let Some(ch) = local {
            ch.mark_gone();
        }
    }

    /// A deletion made on another node (the shared engine's deletions stream): the local
    /// channel goes if it is the one deleted (same epoch), not one started since.
    pub(crate) fn deleted_elsewhere(&self, channel: &str, epoch: &str) {
        let mut map = self.channels.write();
        let ours = match map.get(channel) {
            // a channel started since (another epoch) is not the one deleted
            Some(ch) if *ch.position().epoch != *epoch => return,
            Some(_) => map.remove(channel),
            None => None,
        };
        drop(map);
        self.let_go(channel, ours);
    }

    /// Drop channels nobody listens to whose history is empty (called periodically).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut map = self.channels.write();
        map.retain(|_, ch| {
            ch.log.lock().trim(now);
            ch.subscribers() > 0 || ch.len() > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publications_wake_subscribers_and_read_in_order() {
        let hub = Hub::new("t", &RealtimeConfig::default()).unwrap();
        let ch = hub.channel("orders").await.unwrap();
        let start = ch.position();
        let mut rx = ch.subscribe();
        let p = hub
            .publish("orders", Bytes::from_static(b"one"))
            .await
            .unwrap();
        assert_eq!(p.position.offset, 1);
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .unwrap()
            .unwrap();
        hub.publish("orders", Bytes::from_static(b"two"))
            .await
            .unwrap();
        let r = ch.read(Some(&start), 100);
        assert_eq!(
            r.events.iter().map(|e| &e.data[..]).collect::<Vec<_>>(),
            [&b"one"[..], b"two"]
        );
        assert_eq!(ch.backlog(start.offset), 6);
        assert_eq!(ch.backlog(2), 0);
        drop(rx);
        hub.sweep();
        assert!(hub.existing("orders").is_some(), "history keeps it");
    }
}
