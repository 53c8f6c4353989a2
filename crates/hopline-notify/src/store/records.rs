//! What a store keeps and answers, whichever engine runs it: apps, messages, attempts,
//! status changes, what a claim hands to the workers, and the store's errors.

use serde::{Deserialize, Serialize};

use crate::model::{Channel, Status, random_token};

/// Why the store could not do something.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be written (disk full, read-only, …): nothing was accepted.
    #[error("the message store cannot write: {0}")]
    Unavailable(String),
    /// No such message (for this app).
    #[error("no such message")]
    NotFound,
    /// The message is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The same Idempotency-Key was used with another request.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
}

/// An app: its key, its active secrets (at most two, for rotation without downtime),
/// the `whsec_` secret its webhooks are signed with, and the channels it may use.
#[derive(Debug, Clone, Serialize)]
pub struct App {
    /// Public key (`X-App-Key`).
    pub key: String,
    /// Name.
    pub name: String,
    /// Active secrets, newest first.
    #[serde(skip)]
    pub secrets: Vec<String>,
    /// Signs this app's webhooks.
    #[serde(skip)]
    pub webhook_secret: String,
    /// Channels allowed (`None`: all).
    pub channels: Option<Vec<String>>,
    /// Created, Unix ms.
    pub created_ms: u64,
}

/// A message as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// Id.
    pub id: String,
    /// The app's key.
    pub app: String,
    /// Channel.
    pub channel: String,
    /// Recipient.
    pub to: String,
    /// Subject.
    pub subject: Option<String>,
    /// Text.
    pub body: String,
    /// Priority.
    pub priority: String,
    /// Status now.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Next attempt (Unix ms) while queued.
    pub next_ms: u64,
    /// Give up after (Unix ms).
    pub expires_ms: Option<u64>,
    /// Accepted (Unix ms).
    pub created_ms: u64,
    /// Sent (Unix ms).
    pub sent_ms: Option<u64>,
    /// Delivered (Unix ms).
    pub delivered_ms: Option<u64>,
    /// Free JSON.
    pub metadata: Option<serde_json::Value>,
}

/// One attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based.
    pub n: u32,
    /// When (Unix ms).
    pub at_ms: u64,
    /// Provider.
    pub provider: String,
    /// delivered | retry | failed | gone
    pub result: String,
    /// HTTP status, if an answer came.
    pub http_status: Option<u16>,
    /// Time to the answer.
    pub latency_ms: f64,
    /// Error text, if any.
    pub error: Option<String>,
}

/// A status change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The status entered.
    pub status: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// What accepting a message gave.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// Stored now, with this id.
    New(String),
    /// The Idempotency-Key was seen with the same request: the first message's id.
    Again(String),
}

/// One row of the analytics: channel, status, count, and the latencies (ms) accepted →
/// sent and sent → delivered.
pub type AnalyticsRow = (String, String, u64, Vec<f64>, Vec<f64>);

/// What a claim gives: the messages, and when the next queued one is due (Unix ms).
pub type ClaimAnswer = (Vec<Claimed>, Option<u64>);

/// A message handed to a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The message.
    pub message: Message,
    /// The attempt this is (1-based).
    pub attempt: u32,
    /// The app's webhook secret.
    pub webhook_secret: String,
}

/// The result of an attempt, to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The attempt.
    pub attempt: Attempt,
    /// The message's next status.
    pub status: Status,
    /// Next attempt (Unix ms) when queued again.
    pub next_ms: Option<u64>,
    /// Disable this webhook endpoint (410).
    pub disable_endpoint: Option<String>,
}

/// What one purge round removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Finished messages (with their history and attempts).
    pub messages: usize,
    /// Idempotency keys past their 24 h.
    pub idempotency_keys: usize,
}

/// What `hopline notify app create` prints once.
#[derive(Debug, Clone, Serialize)]
pub struct NewApp {
    /// The app's key.
    pub key: String,
    /// Its first secret (shown once).
    pub secret: String,
    /// The `whsec_` secret its webhooks are signed with.
    pub webhook_secret: String,
}

/// A new app's key, first secret and `whsec_` webhook secret.
pub fn new_app_secrets() -> NewApp {
    use base64::Engine;
    let mut raw = [0u8; 24];
    rand::Rng::fill(&mut rand::rng(), &mut raw[..]);
    NewApp {
        key: format!("app_{}", random_token(12)),
        secret: format!("sk_{}", random_token(32)),
        webhook_secret: format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ),
    }
}

/// Channels as stored names (for filters).
pub fn channel_name(c: Channel) -> &'static str {
    c.as_str()
}
