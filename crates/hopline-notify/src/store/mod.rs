//! The store of a notification service, behind one trait ([`engine`]): the embedded
//! SQLite file ([`sqlite`]), or Redis shared by several nodes ([`redis`]). What either
//! keeps and answers is in [`records`].

mod engine;
pub mod records;
pub mod redis;
pub mod sqlite;

use std::path::Path;
use std::time::Duration;

pub use records::{
    Accepted, AnalyticsRow, App, Attempt, Change, ClaimAnswer, Claimed, Message, NewApp, Outcome,
    Purged, StoreError, channel_name, new_app_secrets,
};
/// The apps of the embedded store (`hopline notify app …`).
pub use sqlite::apps;

use self::engine::Engine;
use self::redis::RedisStore;
use self::sqlite::SqliteStore;
use crate::events::{EventTasks, Events};
use crate::model::{NewMessage, Status};

/// The store of one notification service: the embedded SQLite file, or Redis shared by
/// several nodes.
pub struct Store {
    engine: AnyEngine,
}

/// The engine a store runs (static dispatch: a call costs a match, not an allocation).
enum AnyEngine {
    Sqlite(SqliteStore),
    Redis(Box<RedisStore>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.engine {
            AnyEngine::Sqlite(s) => s.fmt(f),
            AnyEngine::Redis(s) => s.fmt(f),
        }
    }
}

/// The same call on whichever engine runs.
macro_rules! on_engine {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.engine {
            AnyEngine::Sqlite($s) => $e,
            AnyEngine::Redis($s) => $e,
        }
    };
}

impl Store {
    /// The embedded store in the file `path` (`max_size`: a quota in bytes).
    pub fn sqlite(path: &Path, max_size: Option<u64>) -> Result<Store, StoreError> {
        Ok(Store {
            engine: AnyEngine::Sqlite(SqliteStore::open_with(path, max_size)?),
        })
    }

    /// The store of service `name` in Redis at `url`.
    pub fn redis(
        url: &str,
        name: &str,
        claim_idle_ms: u64,
        retention: Option<Duration>,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            engine: AnyEngine::Redis(Box::new(RedisStore::open(
                url,
                name,
                claim_idle_ms,
                retention,
            )?)),
        })
    }

    /// Several nodes share it (replay protection must then be shared too).
    pub fn is_shared(&self) -> bool {
        on_engine!(self, s => s.is_shared())
    }

    /// Store a validated message durably (the answer comes once it is stored: after the
    /// commit that holds it, with SQLite).
    pub async fn accept(
        &self,
        app: &str,
        msg: NewMessage,
        idempotency: Option<(String, String)>,
        now_ms: u64,
    ) -> Result<Accepted, StoreError> {
        on_engine!(self, s => s.accept(app, msg, idempotency, now_ms).await)
    }

    /// Hand up to `limit` due messages to workers; the answer also says when the next
    /// queued message is due (Unix ms).
    pub async fn claim(&self, now_ms: u64, limit: usize) -> Result<ClaimAnswer, StoreError> {
        on_engine!(self, s => s.claim(now_ms, limit).await)
    }

    /// A reload's retention (the Redis engine's scripts take it; the embedded engine's
    /// purge loop is told by the service).
    pub fn set_retention(&self, retention: Option<Duration>) {
        on_engine!(self, s => s.set_retention(retention))
    }

    /// Remove up to `limit` finished messages accepted before `before_ms` and idempotency
    /// keys older than `idempotency_before_ms` (the embedded engine; with Redis, finished
    /// messages expire by themselves).
    pub async fn purge(
        &self,
        before_ms: u64,
        idempotency_before_ms: u64,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        on_engine!(self, s => s.purge(before_ms, idempotency_before_ms, limit).await)
    }

    /// Record an attempt and the message's next status.
    pub async fn record(&self, id: &str, outcome: Outcome, now_ms: u64) -> Result<(), StoreError> {
        on_engine!(self, s => s.record(id, outcome, now_ms).await)
    }

    /// Queue a dead (or failed, or expired) message again.
    pub async fn replay(&self, app: &str, id: &str, now_ms: u64) -> Result<(), StoreError> {
        on_engine!(self, s => s.replay(app, id, now_ms).await)
    }

    /// Cancel a message not sent yet.
    pub async fn cancel(&self, app: &str, id: &str, now_ms: u64) -> Result<(), StoreError> {
        on_engine!(self, s => s.cancel(app, id, now_ms).await)
    }

    /// A provider's delivery report for a message of `channel`; answers the message's
    /// app.
    pub async fn callback(
        &self,
        id: &str,
        channel: &str,
        status: Status,
        now_ms: u64,
    ) -> Result<String, StoreError> {
        on_engine!(self, s => s.callback(id, channel, status, now_ms).await)
    }

    /// A message of `app` with its attempts and status changes.
    pub async fn get(
        &self,
        app: &str,
        id: &str,
    ) -> Result<(Message, Vec<Attempt>, Vec<Change>), StoreError> {
        on_engine!(self, s => s.get(app, id).await)
    }

    /// The feed of status changes: within this process for SQLite, through Redis pub/sub
    /// (shared by every node) for Redis.
    pub fn events(&self) -> (Events, EventTasks) {
        on_engine!(self, s => s.events())
    }

    /// A page of `app`'s messages, newest first.
    pub async fn list(
        &self,
        app: &str,
        status: Option<String>,
        channel: Option<String>,
        since_ms: Option<u64>,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        on_engine!(self, s => s.list(app, status, channel, since_ms, before, limit).await)
    }

    /// Per channel and status: counts and latencies of `app`'s messages accepted in
    /// `[from, to)`.
    pub async fn analytics(
        &self,
        app: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<AnalyticsRow>, StoreError> {
        on_engine!(self, s => s.analytics(app, from_ms, to_ms).await)
    }

    /// The app with this key.
    pub async fn app(&self, key: &str) -> Result<Option<App>, StoreError> {
        on_engine!(self, s => s.app(key).await)
    }

    /// The earliest time a queued message is due (Unix ms).
    pub async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        on_engine!(self, s => s.next_due().await)
    }

    /// Is `url` a disabled webhook endpoint?
    pub async fn disabled(&self, url: &str) -> Result<bool, StoreError> {
        on_engine!(self, s => s.disabled(url).await)
    }

    /// Enable a disabled webhook endpoint again (after its owner fixed it); whether it
    /// was disabled.
    pub async fn enable(&self, url: &str) -> Result<bool, StoreError> {
        on_engine!(self, s => s.enable(url).await)
    }

    /// With a shared engine: was this nonce seen by any node (and remember it)? `None`
    /// when the store does not keep nonces (the node's own cache does).
    pub async fn nonce_seen(
        &self,
        app: &str,
        nonce: &str,
        ttl_s: u64,
    ) -> Option<Result<bool, StoreError>> {
        on_engine!(self, s => s.nonce_seen(app, nonce, ttl_s).await)
    }
}
