//! The feed of status changes behind `GET /v1/events`. In one process it is a broadcast
//! channel. With the Redis engine every node publishes its changes to one Redis pub/sub
//! channel (in pipelined batches, off the request path) and feeds its own subscribers
//! from that channel, so a client connected to any node sees the changes made by all.
//! The feed is best-effort, like any SSE feed: a slow client is told how many changes it
//! skipped, and `GET /v1/messages` has them all.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};

/// A message's status changed (fed to `GET /v1/events`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusChange {
    /// The app's key (the feed shows an app its own messages only).
    #[serde(skip)]
    pub app: String,
    /// The message.
    pub id: String,
    /// Its new status.
    pub status: &'static str,
    /// The attempt that led to it (0: not an attempt, e.g. accepted).
    pub attempt: u32,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// A shared status change.
pub type StatusEvent = Arc<StatusChange>;

/// Where status changes go.
#[derive(Debug, Clone)]
pub struct Events {
    local: broadcast::Sender<StatusEvent>,
    /// With Redis: changes go to the publisher task, and come back through Redis.
    relay: Option<mpsc::UnboundedSender<StatusEvent>>,
    /// With Redis: whether this node's subscription is live.
    live: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The tasks of a Redis-backed feed; they stop when this is dropped.
#[derive(Debug, Default)]
pub struct EventTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for EventTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A change as it travels through Redis.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire<'a> {
    app: &'a str,
    id: &'a str,
    status: &'a str,
    attempt: u32,
    at_ms: u64,
}

fn encode(e: &StatusChange) -> String {
    serde_json::to_string(&Wire {
        app: &e.app,
        id: &e.id,
        status: e.status,
        attempt: e.attempt,
        at_ms: e.at_ms,
    })
    .unwrap_or_default()
}

fn decode(payload: &str) -> Option<StatusChange> {
    let w: Wire<'_> = serde_json::from_str(payload).ok()?;
    Some(StatusChange {
        app: w.app.to_string(),
        id: w.id.to_string(),
        status: crate::model::Status::parse(w.status)?.as_str(),
        attempt: w.attempt,
        at_ms: w.at_ms,
    })
}

impl Events {
    /// A feed within this process.
    pub fn local() -> Events {
        Events {
            local: broadcast::channel(4096).0,
            relay: None,
            live: None,
        }
    }

    /// A feed shared by every node on the Redis at `client`, through the pub/sub
    /// `channel`.
    pub fn redis(client: redis::Client, channel: String) -> (Events, EventTasks) {
        let local = broadcast::channel(4096).0;
        let (tx, rx) = mpsc::unbounded_channel();
        let publisher = tokio::spawn(publish(client.clone(), channel.clone(), rx, local.clone()));
        let (live_tx, live) = tokio::sync::watch::channel(false);
        let subscriber = tokio::spawn(subscribe(client, channel, local.clone(), live_tx));
        (
            Events {
                local,
                relay: Some(tx),
                live: Some(live),
            },
            EventTasks(vec![publisher, subscriber]),
        )
    }

    /// Announce a change.
    pub fn send(&self, change: StatusChange) {
        let e = Arc::new(change);
        match &self.relay {
            Some(r) => {
                if let Err(mpsc::error::SendError(e)) = r.send(e) {
                    let _ = self.local.send(e);
                }
            }
            None => {
                let _ = self.local.send(e);
            }
        }
    }

    /// A receiver of every change from now on. With Redis it waits (up to a second)
    /// until this node's subscription is live, so that a feed that has answered misses
    /// nothing published after.
    pub async fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        if let Some(mut live) = self.live.clone() {
            let _ = tokio::time::timeout(Duration::from_secs(1), live.wait_for(|l| *l)).await;
        }
        self.local.subscribe()
    }
}

/// Publishes what this node changes, up to 256 changes per round trip. While Redis is
/// away the changes go to this node's own subscribers directly.
async fn publish(
    client: redis::Client,
    channel: String,
    mut rx: mpsc::UnboundedReceiver<StatusEvent>,
    local: broadcast::Sender<StatusEvent>,
) {
    let mut conn = None;
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        if conn.is_none() {
            conn = client.get_multiplexed_async_connection().await.ok();
        }
        let sent = match conn.as_mut() {
            Some(c) => {
                let mut pipe = redis::pipe();
                for e in &batch {
                    pipe.publish(&channel, encode(e)).ignore();
                }
                pipe.query_async::<()>(c).await.is_ok()
            }
            None => false,
        };
        if !sent {
            conn = None;
            for e in batch.drain(..) {
                let _ = local.send(e);
            }
        }
        batch.clear();
    }
}

/// Feeds this node's subscribers from Redis; reconnects (every second) when it is away.
async fn subscribe(
    client: redis::Client,
    channel: String,
    local: broadcast::Sender<StatusEvent>,
    live: tokio::sync::watch::Sender<bool>,
) {
    let mut warned = false;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut ps) => {
                if ps.subscribe(&channel).await.is_ok() {
                    warned = false;
                    live.send_replace(true);
                    let mut messages = std::pin::pin!(ps.on_message());
                    while let Some(m) = messages.next().await {
                        let payload: String = match m.get_payload() {
                            Ok(p) => p,
                            Err(_) => continue,
                        };
                        if let Some(e) = decode(&payload) {
                            let _ = local.send(Arc::new(e));
                        }
                    }
                    live.send_replace(false);
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(target: "hopline::notify", "the event feed lost Redis ({e}); retrying every second");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_travel_through_redis_unchanged() {
        let e = StatusChange {
            app: "ak_1".into(),
            id: "msg_2".into(),
            status: "delivered",
            attempt: 3,
            at_ms: 42,
        };
        let d = decode(&encode(&e)).unwrap();
        assert_eq!(
            (d.app.as_str(), d.id.as_str(), d.status, d.attempt, d.at_ms),
            ("ak_1", "msg_2", "delivered", 3, 42)
        );
        assert!(
            decode("{\"app\":\"a\",\"id\":\"b\",\"status\":\"nope\",\"attempt\":0,\"at_ms\":1}")
                .is_none()
        );
        assert!(decode("not json").is_none());
    }
}
