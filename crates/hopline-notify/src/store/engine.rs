//! What a store engine does — the operations of a notification service's store — as one
//! trait, implemented by the embedded SQLite store and by the Redis store shared by
//! several nodes.

use std::time::Duration;

use crate::events::{EventTasks, Events};
use crate::model::{NewMessage, Status};
use crate::store::records::{
    Accepted, AnalyticsRow, App, Attempt, Change, ClaimAnswer, Message, Outcome, Purged, StoreError,
};

/// The operations of a notification service's store.
pub(crate) trait Engine {
    /// Several nodes share it (replay protection must then be shared too).
    fn is_shared(&self) -> bool;

    /// Store a validated message durably (the answer comes once it is stored).
    async fn accept(
        &self,
        app: &str,
        msg: NewMessage,
        idempotency: Option<(String, String)>,
        now_ms: u64,
    ) -> Result<Accepted, StoreError>;

    /// Hand up to `limit` due messages to workers (status `sending`), high priority first
    /// but with a share for each priority so that low is never starved; messages past
    /// their ttl become `expired`. The answer also says when the next queued message is
    /// due (Unix ms), so the dispatcher knows how long it may sleep without asking again.
    async fn claim(&self, now_ms: u64, limit: usize) -> Result<ClaimAnswer, StoreError>;

    /// Record an attempt and the message's next status.
    async fn record(&self, id: &str, outcome: Outcome, now_ms: u64) -> Result<(), StoreError>;

    /// Queue a dead (or failed, or expired) message again.
    async fn replay(&self, app: &str, id: &str, now_ms: u64) -> Result<(), StoreError>;

    /// Cancel a message not sent yet.
    async fn cancel(&self, app: &str, id: &str, now_ms: u64) -> Result<(), StoreError>;

    /// A provider's delivery report for a message of `channel` it was sent through:
    /// `delivered`, `failed` or `bounced`. Answers the message's app.
    async fn callback(
        &self,
        id: &str,
        channel: &str,
        status: Status,
        now_ms: u64,
    ) -> Result<String, StoreError>;

    /// A message of `app` with its attempts and status changes.
    async fn get(
        &self,
        app: &str,
        id: &str,
    ) -> Result<(Message, Vec<Attempt>, Vec<Change>), StoreError>;

    /// A page of `app`'s messages, newest first.
    async fn list(
        &self,
        app: &str,
        status: Option<String>,
        channel: Option<String>,
        since_ms: Option<u64>,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// Per channel and status: counts, and latencies accepted→sent and sent→delivered
    /// (ms, as lists for percentiles), of `app`'s messages accepted in `[from, to)`.
    async fn analytics(
        &self,
        app: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<AnalyticsRow>, StoreError>;

    /// The app with this key.
    async fn app(&self, key: &str) -> Result<Option<App>, StoreError>;

    /// The earliest time a queued message is due (Unix ms).
    async fn next_due(&self) -> Result<Option<u64>, StoreError>;

    /// Is `url` a disabled webhook endpoint?
    async fn disabled(&self, url: &str) -> Result<bool, StoreError>;

    /// Enable a disabled webhook endpoint again; whether it was disabled.
    async fn enable(&self, url: &str) -> Result<bool, StoreError>;

    /// Remove up to `limit` finished messages accepted before `before_ms` and idempotency
    /// keys older than `idempotency_before_ms`.
    async fn purge(
        &self,
        before_ms: u64,
        idempotency_before_ms: u64,
        limit: usize,
    ) -> Result<Purged, StoreError>;

    /// A reload's retention of finished messages.
    fn set_retention(&self, retention: Option<Duration>);

    /// Was this nonce of `app` seen inside `ttl_s` (and remember it)? `None` when the
    /// store does not keep nonces (the node's own cache does).
    async fn nonce_seen(
        &self,
        app: &str,
        nonce: &str,
        ttl_s: u64,
    ) -> Option<Result<bool, StoreError>>;

    /// The feed of status changes.
    fn events(&self) -> (Events, EventTasks);
}
