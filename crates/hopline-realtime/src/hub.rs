//! The hub: the channels of one `[realtime.NAME]`, each a [`Channel`] (a log with a
//! wake-up signal), and the engine that orders publications — in this process (`memory`)
//! or in Redis Streams shared by several nodes (`redis://…`), see [`crate::engine`].
//!
//! Subscribers hold no queue of their own: they hold a position in the channel's log and
//! are woken (a `watch` per channel, one registration per subscriber) when it grows; the
//! bytes between their position and the head are their backlog. Each event's frames
//! (WebSocket, SSE, JSON) are encoded once and shared by every subscriber.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::channel::Channel;
use crate::channel_log::{ChannelLog, Position, Retention};
use crate::config::RealtimeConfig;
use crate::engine::memory::MemoryEngine;
use crate::engine::redis::RedisEngine;
use crate::engine::{ChannelRegistry, DeletedHistory, Engine, EngineError};
use crate::metrics::{HubState, Metrics};

/// Unix time in milliseconds (what [`crate::channel_log::now_ms`] says).
pub use crate::channel_log::now_ms;

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

/// The engine a hub runs (static dispatch: the publish path pays no indirection).
#[derive(Debug)]
pub(crate) enum HubEngine {
    /// In this process.
    Memory(MemoryEngine),
    /// Redis Streams, shared by every node on the same Redis.
    Redis(Arc<RedisEngine>),
}

impl HubEngine {
    /// The engine `config` names (a Redis engine connects lazily and reconnects by
    /// itself).
    fn open(config: &RealtimeConfig, hub: &str) -> Result<HubEngine, EngineError> {
        Ok(if config.engine == "memory" {
            HubEngine::Memory(MemoryEngine)
        } else {
            HubEngine::Redis(RedisEngine::new(&config.engine, hub)?)
        })
    }

    /// Start following what other nodes do to `hub`'s channels (a shared engine).
    fn start(&self, hub: Weak<dyn ChannelRegistry>) {
        if let HubEngine::Redis(r) = self {
            r.start(hub);
        }
    }
}

impl Engine for HubEngine {
    async fn load(&self, channel: &str, retention: Retention) -> Result<ChannelLog, EngineError> {
        match self {
            HubEngine::Memory(m) => m.load(channel, retention).await,
            HubEngine::Redis(r) => r.load(channel, retention).await,
        }
    }

    fn follow(&self, ch: &Arc<Channel>) {
        match self {
            HubEngine::Memory(m) => m.follow(ch),
            HubEngine::Redis(r) => r.follow(ch),
        }
    }

    fn unfollow(&self, channel: &str) {
        match self {
            HubEngine::Memory(m) => m.unfollow(channel),
            HubEngine::Redis(r) => r.unfollow(channel),
        }
    }

    async fn publish(&self, ch: &Channel, data: Bytes) -> Result<Position, EngineError> {
        match self {
            HubEngine::Memory(m) => m.publish(ch, data).await,
            HubEngine::Redis(r) => r.publish(ch, data).await,
        }
    }

    async fn delete(
        &self,
        channel: &str,
        local_epoch: Option<&str>,
    ) -> Result<Option<DeletedHistory>, EngineError> {
        match self {
            HubEngine::Memory(m) => m.delete(channel, local_epoch).await,
            HubEngine::Redis(r) => r.delete(channel, local_epoch).await,
        }
    }

    fn is_up(&self) -> bool {
        match self {
            HubEngine::Memory(m) => m.is_up(),
            HubEngine::Redis(r) => r.is_up(),
        }
    }
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
    engine: HubEngine,
    /// Set when the server shuts down: long-lived subscribers end.
    closing: watch::Sender<bool>,
    /// The client of the app hooks.
    hooks: crate::hooks::HookClient,
}

impl Hub {
    /// A hub for `config` (a Redis engine connects lazily and reconnects by itself).
    pub fn new(name: &str, config: &RealtimeConfig) -> Result<Arc<Hub>, EngineError> {
        let engine = HubEngine::open(config, name)?;
        let hub = Arc::new(Hub {
            name: name.to_string(),
            settings: RwLock::new(Arc::new(Settings::from_config(config))),
            channels: RwLock::new(HashMap::default()),
            metrics: Arc::default(),
            engine,
            closing: watch::channel(false).0,
            hooks: Default::default(),
        });
        let registry: Weak<dyn ChannelRegistry> = Arc::downgrade(&hub) as _;
        hub.engine.start(registry);
        Ok(hub)
    }

    /// Ask the application's hook for `ask.event` (allowed at once when there is none).
    pub async fn hook(
        &self,
        settings: &Settings,
        ask: crate::hooks::Ask<'_>,
    ) -> crate::hooks::Verdict {
        match &settings.config.hooks {
            None => crate::hooks::Verdict::Allow(None),
            Some(hooks) => self.hooks.ask(&self.name, hooks, &self.metrics, ask).await,
        }
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
        let log = self.engine.load(name, self.settings().retention).await?;
        let mut map = self.channels.write();
        let ch = map
            .entry(Arc::from(name))
            .or_insert_with(|| Arc::new(Channel::new(name, log, self.metrics.clone())))
            .clone();
        drop(map);
        self.engine.follow(&ch);
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

    /// The hub as its status page and `/metrics` show it.
    pub fn state(&self) -> HubState {
        HubState {
            name: self.name.clone(),
            engine: self.settings().config.engine.clone(),
            engine_up: self.engine_up(),
            channels: self.channels.read().len(),
        }
    }

    /// Publish `data` on `channel`; the answer is its position and who waited for it.
    pub async fn publish(&self, channel: &str, data: Bytes) -> Result<Published, EngineError> {
        let ch = self.channel(channel).await?;
        let position = self.engine.publish(&ch, data).await?;
        self.metrics.publications.fetch_add(1, Ordering::Relaxed);
        Ok(Published {
            position,
            subscribers: ch.subscribers(),
        })
    }

    /// The shared engine is reachable (always true in memory).
    pub fn engine_up(&self) -> bool {
        self.engine.is_up()
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
        let here = self.existing(channel);
        if let Some(ch) = &here {
            ch.set_deleting(true);
        }
        // (this node's epoch tells the other nodes even when the shared engine had lost
        // the channel already, e.g. a first try failed after its keys were deleted)
        let epoch = here.as_ref().map(|c| c.position().epoch.to_string());
        let shared = match self.engine.delete(channel, epoch.as_deref()).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(ch) = &here {
                    ch.set_deleting(false);
                }
                return Err(e);
            }
        };
        let local = self.channels.write().remove(channel);
        let subscribers = local.as_ref().map_or(0, |c| c.subscribers());
        let deleted = match (shared, &local) {
            // the shared engine's view: its history, whether this node had it or not
            (Some((epoch, offset, messages)), _) => Some(Deleted {
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
        self.engine.unfollow(channel);
        if let Some(ch) = local {
            ch.mark_gone();
        }
    }

    /// A deletion made on another node (the shared engine's deletions stream): the local
    /// channel goes if it is the one deleted (same epoch), not one started since.
    fn deleted_elsewhere(&self, channel: &str, epoch: &str) {
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
            ch.trim(now);
            ch.subscribers() > 0 || ch.len() > 0
        });
    }
}

impl ChannelRegistry for Hub {
    fn existing(&self, name: &str) -> Option<Arc<Channel>> {
        Hub::existing(self, name)
    }

    fn channels(&self) -> Vec<Arc<Channel>> {
        Hub::channels(self)
    }

    fn deleted_elsewhere(&self, channel: &str, epoch: &str) {
        Hub::deleted_elsewhere(self, channel, epoch)
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
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
