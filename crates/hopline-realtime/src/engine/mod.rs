//! The engines that order a hub's publications, behind one trait: [`memory`] orders them
//! in this process; [`redis`] in Redis Streams shared by several nodes, so that every
//! node serves the same channels. The hub runs one, chosen by its config's `engine`.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use bytes::Bytes;

use crate::channel::Channel;
use crate::channel_log::{ChannelLog, Position, Retention};

/// Why a publication or a subscription failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The shared engine (Redis) cannot be reached: publish answers 503.
    #[error("the channel engine is unavailable: {0}")]
    Unavailable(String),
}

/// A deleted channel as the engine had it: its epoch, its last offset and the
/// publications its history held.
pub type DeletedHistory = (String, u64, usize);

/// What orders a hub's publications and keeps their history.
pub(crate) trait Engine {
    /// The log of a channel this node starts to serve (with a shared engine: the history
    /// the other nodes made).
    async fn load(&self, channel: &str, retention: Retention) -> Result<ChannelLog, EngineError>;

    /// Keep `ch`'s log up with what other nodes publish on it, from its current offset.
    fn follow(&self, ch: &Arc<Channel>);

    /// Stop keeping `channel`'s log up (it left the hub).
    fn unfollow(&self, channel: &str);

    /// Publish `data` on `ch`: its position, the event appended to `ch`'s log.
    async fn publish(&self, ch: &Channel, data: Bytes) -> Result<Position, EngineError>;

    /// Delete `channel`'s history where the engine keeps it and tell every node (of the
    /// engine's epoch, or of `local_epoch` when it had no such channel): what the
    /// channel was there, or None when the engine keeps no history of its own.
    async fn delete(
        &self,
        channel: &str,
        local_epoch: Option<&str>,
    ) -> Result<Option<DeletedHistory>, EngineError>;

    /// The engine answers (always, in memory).
    fn is_up(&self) -> bool;
}

/// The hub an engine serves, as the engine's follower sees it: the follower appends what
/// other nodes publish to the hub's channels and lets go of those deleted elsewhere.
pub(crate) trait ChannelRegistry: Send + Sync {
    /// The channel `name` if this node has it.
    fn existing(&self, name: &str) -> Option<Arc<Channel>>;

    /// Every channel of this node.
    fn channels(&self) -> Vec<Arc<Channel>>;

    /// `channel` was deleted on another node, under `epoch`: let it go here.
    fn deleted_elsewhere(&self, channel: &str, epoch: &str);

    /// The hub is shutting down.
    fn is_closing(&self) -> bool;
}
