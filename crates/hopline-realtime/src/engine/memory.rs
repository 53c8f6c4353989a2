//! The memory engine: publications ordered in this process, history in the channels'
//! logs alone.

use std::sync::Arc;

use bytes::Bytes;

use crate::channel::Channel;
use crate::channel_log::{ChannelLog, Position, Retention};
use crate::engine::{DeletedHistory, Engine, EngineError};

/// Orders publications in this process: the next offset of the channel's log.
#[derive(Debug, Default)]
pub struct MemoryEngine;

impl Engine for MemoryEngine {
    async fn load(&self, _channel: &str, retention: Retention) -> Result<ChannelLog, EngineError> {
        Ok(ChannelLog::new(retention))
    }

    fn follow(&self, _ch: &Arc<Channel>) {}

    fn unfollow(&self, _channel: &str) {}

    async fn publish(&self, ch: &Channel, data: Bytes) -> Result<Position, EngineError> {
        Ok(ch.publish_local(data))
    }

    async fn delete(
        &self,
        _channel: &str,
        _local_epoch: Option<&str>,
    ) -> Result<Option<DeletedHistory>, EngineError> {
        Ok(None)
    }

    fn is_up(&self) -> bool {
        true
    }
}
