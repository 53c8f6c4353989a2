//! The shared engine: channels whose order and history live in Redis Streams, so that
//! several `hopline serve` nodes on one Redis serve the same channels — a subscriber on
//! node A receives what was published on node B, and a client that reconnects to another
//! node resumes from its position without loss.
//!
//! Per channel `C` of hub `H`, three keys in one cluster slot (`{H:C}`):
//! - `hopline:rt:{H:C}:s` — the stream; entry ID `0-OFFSET`, fields `d` (data), `t`
//!   (publication time, ms) and `e` (epoch); trimmed with `MAXLEN ~ history`;
//! - `hopline:rt:{H:C}:e` — the epoch, made by the first node that needs it;
//! - `hopline:rt:{H:C}:n` — the last offset (`INCR` orders publications).
//!
//! A publication is one Lua script (epoch, `INCR`, `XADD`), so offsets are gapless and
//! shared. Each node follows its channels with one `XREAD BLOCK` over all of them and
//! appends what it reads to its local log, from which every transport serves.
//!
//! A deletion removes the channel's three keys (one script) and adds `(channel, epoch)` to
//! the hub's deletions stream `hopline:rt:{H}:deleted` (trimmed to ~1000), which every
//! node's follower reads in the same `XREAD`: each lets go of its subscribers of that
//! epoch of the channel. The next publication starts the channel again under a new epoch.
//!
//! Faults: every Redis call has a timeout; when Redis is unreachable, publish answers 503,
//! subscribers are told (SSE comment, WebSocket close 1011), and following resumes from
//! the last offsets read once Redis is back — nothing hangs, nothing is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use crate::channel::Channel;
use crate::channel_log::{ChannelLog, Position, Retention, new_epoch, now_ms};
use crate::engine::{ChannelRegistry, DeletedHistory, Engine, EngineError};

const PUBLISH: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[3])
end
local offset = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-' .. offset, 'd', ARGV[3], 't', ARGV[4], 'e', epoch)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
return {epoch, offset}
"#;

const LOAD: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch, 'PX', ARGV[2])
  redis.call('DEL', KEYS[1], KEYS[3])
end
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
return {epoch, last}
"#;

const DELETE: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then return false end
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {epoch, last, n}
"#;

/// How many deletions the hub's deletions stream keeps (a node that was away longer than
/// that many deletions finds its stale channels by their epochs instead).
const DELETIONS_KEPT: u64 = 1000;

/// How long a Redis call may take before the engine counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one `XREAD` blocks (channels followed since are included at the next round).
const BLOCK_MS: u64 = 500;
/// How often a follower checks that the epochs it follows are still Redis's.
const EPOCH_CHECK: Duration = Duration::from_secs(2);

/// The Redis engine of one hub.
pub struct RedisEngine {
    client: redis::Client,
    hub: String,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    /// Channels followed and the offset read up to.
    followed: parking_lot::Mutex<HashMap<Arc<str>, u64>>,
    publish: redis::Script,
    load: redis::Script,
    delete: redis::Script,
    /// The deletions stream's ID read up to (set before the first channel is loaded, so
    /// that no deletion after a load goes unseen).
    deletions_from: parking_lot::Mutex<Option<String>>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("hub", &self.hub)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

impl RedisEngine {
    /// An engine for `url`; connects on first use.
    pub fn new(url: &str, hub: &str) -> Result<Arc<RedisEngine>, EngineError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Ok(Arc::new(RedisEngine {
            client,
            hub: hub.to_string(),
            conn: tokio::sync::Mutex::new(None),
            up: AtomicBool::new(true),
            followed: parking_lot::Mutex::new(HashMap::new()),
            publish: redis::Script::new(PUBLISH),
            load: redis::Script::new(LOAD),
            delete: redis::Script::new(DELETE),
            deletions_from: parking_lot::Mutex::new(None),
        }))
    }

    fn keys(&self, channel: &str) -> [String; 3] {
        let tag = format!("hopline:rt:{{{}:{}}}", self.hub, channel);
        [format!("{tag}:s"), format!("{tag}:e"), format!("{tag}:n")]
    }

    /// The hub's deletions stream.
    fn deletions_key(&self) -> String {
        format!("hopline:rt:{{{}}}:deleted", self.hub)
    }

    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, EngineError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(response_timeout);
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(unavailable)
    }

    async fn conn(&self) -> Result<MultiplexedConnection, EngineError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect(CALL_TIMEOUT).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn failed(&self, e: impl std::fmt::Display) -> EngineError {
        *self.conn.lock().await = None;
        self.up.store(false, Ordering::Release);
        unavailable(e)
    }

    fn expiry_ms(retention: Retention) -> u64 {
        (retention.ttl.as_millis() as u64).saturating_mul(2) + 60_000
    }

    /// The follower's own connection (its `XREAD` blocks), reading deletions from where
    /// they were read up to.
    async fn connect_follower(&self) -> Result<MultiplexedConnection, EngineError> {
        let mut c = self
            .connect(Duration::from_millis(BLOCK_MS) + CALL_TIMEOUT)
            .await?;
        self.mark_deletions(&mut c).await.map_err(unavailable)?;
        Ok(c)
    }

    /// Start reading deletions from the stream's current end, unless already reading.
    async fn mark_deletions(&self, c: &mut MultiplexedConnection) -> Result<(), redis::RedisError> {
        if self.deletions_from.lock().is_some() {
            return Ok(());
        }
        let last: Value = redis::cmd("XREVRANGE")
            .arg(self.deletions_key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(c)
            .await?;
        let id = parse_deletions(&last)
            .pop()
            .map_or_else(|| "0-0".to_string(), |d| d.0);
        self.deletions_from.lock().get_or_insert(id);
        Ok(())
    }

    /// Start the follower task (it ends when the hub is dropped or shuts down).
    pub(crate) fn start(self: &Arc<Self>, hub: Weak<dyn ChannelRegistry>) {
        let engine = self.clone();
        tokio::spawn(async move { engine.run(hub).await });
    }

    /// The follower: one `XREAD` over the streams of every followed channel and the
    /// deletions stream at a time, appending what it reads to the channels' logs;
    /// reconnects with a backoff, and checks the epochs now and then.
    async fn run(self: Arc<Self>, hub: Weak<dyn ChannelRegistry>) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut backoff = Duration::from_millis(100);
        let mut epochs_checked = tokio::time::Instant::now();
        let mut check_epochs = false;
        loop {
            let Some(h) = hub.upgrade() else { return };
            if h.is_closing() {
                return;
            }
            drop(h);
            let followed: Vec<(Arc<str>, u64)> = self
                .followed
                .lock()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            if followed.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self.connect_follower().await {
                    Ok(c) => {
                        check_epochs = true;
                        conn.insert(c)
                    }
                    Err(e) => {
                        self.set_down(&hub, &e.to_string());
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            if check_epochs || epochs_checked.elapsed() > EPOCH_CHECK {
                check_epochs = false;
                epochs_checked = tokio::time::Instant::now();
                self.check_epochs(c, &followed, &hub).await;
                continue;
            }
            match self.read_followed(c, &followed).await {
                Ok(v) => {
                    backoff = Duration::from_millis(100);
                    let was_down = !self.up.swap(true, Ordering::AcqRel);
                    check_epochs |= was_down;
                    let Some(h) = hub.upgrade() else { return };
                    self.take_reply(&v, &followed, &*h);
                    if was_down {
                        // subscribers waiting for the engine to come back
                        for ch in h.channels() {
                            ch.wake();
                        }
                    }
                }
                Err(e) => {
                    conn = None;
                    self.set_down(&hub, &e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// A history lost in Redis (restarted empty, keys expired) starts again at offset 1
    /// under a new epoch: a followed channel whose epoch is no longer Redis's is followed
    /// from the start.
    async fn check_epochs(
        &self,
        c: &mut MultiplexedConnection,
        followed: &[(Arc<str>, u64)],
        hub: &Weak<dyn ChannelRegistry>,
    ) {
        let mut mget = redis::cmd("MGET");
        for (name, _) in followed {
            mget.arg(&self.keys(name)[1]);
        }
        let epochs: Result<Vec<Option<String>>, _> = mget.query_async(c).await;
        let (Ok(epochs), Some(h)) = (epochs, hub.upgrade()) else {
            return;
        };
        for ((name, _), epoch) in followed.iter().zip(epochs) {
            let (Some(epoch), Some(ch)) = (epoch, h.existing(name)) else {
                continue;
            };
            if *ch.position().epoch != *epoch
                && let Some(o) = self.followed.lock().get_mut(name)
            {
                *o = 0;
            }
        }
    }

    /// One blocking `XREAD` of the followed channels' streams after their offsets, and of
    /// the deletions stream after what was read of it.
    async fn read_followed(
        &self,
        c: &mut MultiplexedConnection,
        followed: &[(Arc<str>, u64)],
    ) -> redis::RedisResult<Value> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS");
        for (name, _) in followed {
            cmd.arg(&self.keys(name)[0]);
        }
        cmd.arg(self.deletions_key());
        for (_, offset) in followed {
            cmd.arg(format!("0-{offset}"));
        }
        let from = self.deletions_from.lock().clone();
        cmd.arg(from.as_deref().unwrap_or("0-0"));
        cmd.query_async(c).await
    }

    /// What an `XREAD` brought: deletions first (a channel deleted and started again
    /// under a new epoch, both in this reply, ends its old subscribers as deleted, not as
    /// lost), then each channel's new entries, appended to its log.
    fn take_reply(&self, reply: &Value, followed: &[(Arc<str>, u64)], hub: &dyn ChannelRegistry) {
        let deletions_key = self.deletions_key();
        let streams = parse_streams(reply);
        for (_, entries) in streams.iter().filter(|(k, _)| *k == deletions_key) {
            for (id, deleted) in parse_deletions(entries) {
                if let Some((channel, epoch)) = deleted {
                    hub.deleted_elsewhere(&channel, &epoch);
                }
                // (past every entry, even one not ours: no busy loop on it)
                *self.deletions_from.lock() = Some(id);
            }
        }
        for (key, entries) in streams {
            if key == deletions_key {
                continue;
            }
            let Some((name, _)) = followed.iter().find(|(n, _)| self.keys(n)[0] == key) else {
                continue;
            };
            let Some(ch) = hub.existing(name) else {
                continue;
            };
            let mut last = None;
            for e in parse_entries(entries) {
                let epoch = e
                    .epoch
                    .clone()
                    .unwrap_or_else(|| ch.position().epoch.to_string());
                ch.append_shared(&epoch, e.offset, e.data, e.published_ms);
                last = Some(e.offset);
            }
            if let Some(last) = last
                && let Some(o) = self.followed.lock().get_mut(name)
            {
                *o = (*o).max(last);
            }
        }
    }

    fn set_down(&self, hub: &Weak<dyn ChannelRegistry>, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(target: "hopline::realtime", "hub {}: Redis unavailable: {why}", self.hub);
            if let Some(h) = hub.upgrade() {
                for ch in h.channels() {
                    ch.wake();
                }
            }
        }
    }
}

impl Engine for RedisEngine {
    /// The channel's history as Redis has it.
    async fn load(&self, channel: &str, retention: Retention) -> Result<ChannelLog, EngineError> {
        let keys = self.keys(channel);
        let mut c = self.conn().await?;
        if let Err(e) = self.mark_deletions(&mut c).await {
            return Err(self.failed(e).await);
        }
        let answer: Result<(String, u64), _> = self
            .load
            .key(&keys[0])
            .key(&keys[1])
            .key(&keys[2])
            .arg(&*new_epoch())
            .arg(Self::expiry_ms(retention))
            .invoke_async(&mut c)
            .await;
        let (epoch, last) = match answer {
            Ok(a) => a,
            Err(e) => return Err(self.failed(e).await),
        };
        let entries: Result<Value, _> = redis::cmd("XREVRANGE")
            .arg(&keys[0])
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(retention.history)
            .query_async(&mut c)
            .await;
        let entries = match entries {
            Ok(v) => parse_entries(&v),
            Err(e) => return Err(self.failed(e).await),
        };
        self.up.store(true, Ordering::Release);
        let first = entries.last().map_or(last + 1, |e| e.offset);
        let mut log = ChannelLog::with_epoch(epoch.as_str().into(), first - 1, retention);
        for e in entries.into_iter().rev() {
            if e.epoch.as_deref().is_none_or(|ep| ep == epoch) {
                log.append_at(
                    e.offset,
                    e.data,
                    tokio::time::Instant::now(),
                    e.published_ms,
                );
            }
        }
        if log.position().offset < last {
            // (an entry trimmed between the two calls: the offset still moves on)
            let mut l2 = ChannelLog::with_epoch(epoch.as_str().into(), last, retention);
            std::mem::swap(&mut log, &mut l2);
        }
        Ok(log)
    }

    /// Follow `ch` from its current offset.
    fn follow(&self, ch: &Arc<Channel>) {
        // (from this channel's own position: an offset left by an earlier channel of the
        // name — swept, or deleted and started again under another epoch — must not hide
        // the first offsets of this one)
        let offset = ch.position().offset;
        self.followed.lock().insert(ch.name.clone(), offset);
    }

    /// Stop following a channel (deleted here).
    fn unfollow(&self, channel: &str) {
        self.followed.lock().remove(channel);
    }

    /// Publish through Redis; the local log learns of it from the follower (or here, at
    /// once, so that the publisher's own node does not wait a round trip more).
    async fn publish(&self, ch: &Channel, data: Bytes) -> Result<Position, EngineError> {
        let keys = self.keys(&ch.name);
        let retention = ch.retention();
        let published_ms = now_ms();
        let mut c = self.conn().await?;
        let answer: Result<(String, u64), _> = timed(
            self.publish
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(&*new_epoch())
                .arg(retention.history)
                .arg(&data[..])
                .arg(published_ms)
                .arg(Self::expiry_ms(retention))
                .invoke_async(&mut c),
        )
        .await;
        let (epoch, offset) = match answer {
            Ok(a) => a,
            Err(e) => return Err(self.failed(e).await),
        };
        self.up.store(true, Ordering::Release);
        let here = ch.position();
        if *here.epoch == *epoch && here.offset + 1 < offset {
            // publications of other nodes this one has not read yet come first: fetch
            // them now rather than leave a gap (the follower would bring them later)
            let missing: Result<Value, _> = redis::cmd("XRANGE")
                .arg(&keys[0])
                .arg(format!("0-{}", here.offset + 1))
                .arg(format!("0-{}", offset - 1))
                .query_async(&mut c)
                .await;
            if let Ok(v) = missing {
                for e in parse_entries(&v) {
                    let ep = e.epoch.clone().unwrap_or_else(|| epoch.clone());
                    ch.append_shared(&ep, e.offset, e.data, e.published_ms);
                }
            }
        }
        ch.append_shared(&epoch, offset, data, published_ms);
        Ok(Position {
            epoch: epoch.as_str().into(),
            offset,
        })
    }

    /// Delete a channel's shared history and tell every node (of Redis's epoch, or of
    /// `local_epoch` when Redis had no such channel): `(epoch, last offset, entries in
    /// history)`, or None when Redis has no such channel.
    async fn delete(
        &self,
        channel: &str,
        local_epoch: Option<&str>,
    ) -> Result<Option<DeletedHistory>, EngineError> {
        let keys = self.keys(channel);
        let mut c = self.conn().await?;
        let answer: Result<Option<DeletedHistory>, _> = timed(
            self.delete
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .invoke_async(&mut c),
        )
        .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return Err(self.failed(e).await),
        };
        if let Some(epoch) = answer.as_ref().map(|a| a.0.as_str()).or(local_epoch) {
            // (its own command, not in the script: the stream is the hub's, in another slot)
            let told: Result<Value, _> = timed(
                redis::cmd("XADD")
                    .arg(self.deletions_key())
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(DELETIONS_KEPT)
                    .arg("*")
                    .arg("c")
                    .arg(channel)
                    .arg("e")
                    .arg(epoch)
                    .query_async(&mut c),
            )
            .await;
            if let Err(e) = told {
                return Err(self.failed(e).await);
            }
        }
        self.up.store(true, Ordering::Release);
        Ok(answer)
    }

    /// Redis answered the last call.
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
}

/// A Redis call bounded by [`CALL_TIMEOUT`] (past it: an I/O error, "timed out").
async fn timed<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "timed out",
            )))
        })
}

struct Entry {
    offset: u64,
    data: Bytes,
    published_ms: u64,
    epoch: Option<String>,
}

fn as_items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().collect(),
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The `(field, value)` pairs of a stream entry's flat field list (pairs that are not
/// two strings are skipped).
fn field_pairs<'a>(fields: &'a [&'a Value]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    fields
        .chunks(2)
        .filter_map(|kv| Some((as_bytes(kv.first()?)?, as_bytes(kv.get(1)?)?)))
}

/// Entries of an `XRANGE`/`XREVRANGE` reply.
fn parse_entries(v: &Value) -> Vec<Entry> {
    as_items(v)
        .into_iter()
        .filter_map(|entry| {
            let parts = as_items(entry);
            let id = std::str::from_utf8(as_bytes(parts.first()?)?).ok()?;
            let offset: u64 = id.strip_prefix("0-")?.parse().ok()?;
            let fields = as_items(parts.get(1)?);
            let mut e = Entry {
                offset,
                data: Bytes::new(),
                published_ms: 0,
                epoch: None,
            };
            for (k, v) in field_pairs(&fields) {
                match k {
                    b"d" => e.data = Bytes::copy_from_slice(v),
                    b"t" => {
                        e.published_ms = std::str::from_utf8(v)
                            .ok()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0)
                    }
                    b"e" => e.epoch = std::str::from_utf8(v).ok().map(str::to_string),
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

/// `(id, (channel, epoch))` of the deletions stream's entries (None for an entry without
/// both fields).
fn parse_deletions(v: &Value) -> Vec<(String, Option<(String, String)>)> {
    as_items(v)
        .into_iter()
        .filter_map(|entry| {
            let parts = as_items(entry);
            let id = String::from_utf8_lossy(as_bytes(parts.first()?)?).into_owned();
            let (mut channel, mut epoch) = (None, None);
            let fields = parts.get(1).map(|f| as_items(f)).unwrap_or_default();
            for (k, v) in field_pairs(&fields) {
                match k {
                    b"c" => channel = Some(String::from_utf8_lossy(v).into_owned()),
                    b"e" => epoch = Some(String::from_utf8_lossy(v).into_owned()),
                    _ => {}
                }
            }
            Some((id, channel.zip(epoch)))
        })
        .collect()
}

/// `(stream key, entries)` of an `XREAD` reply (RESP2 arrays or RESP3 maps).
fn parse_streams(v: &Value) -> Vec<(String, &Value)> {
    let items = as_items(v);
    let mut out = Vec::new();
    if matches!(v, Value::Map(_)) {
        for kv in items.chunks(2) {
            if let (Some(k), Some(entries)) = (kv.first().and_then(|k| as_bytes(k)), kv.get(1)) {
                out.push((String::from_utf8_lossy(k).into_owned(), *entries));
            }
        }
    } else {
        for stream in items {
            let parts = as_items(stream);
            if let (Some(k), Some(entries)) =
                (parts.first().and_then(|k| as_bytes(k)), parts.get(1))
            {
                out.push((String::from_utf8_lossy(k).into_owned(), *entries));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// Every entry of the deletions stream moves the reader on, also one that is not a
    /// deletion (without both fields): it is read once, not again at every XREAD.
    #[test]
    fn deletions_parse_with_every_id() {
        let entries = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("c"), bulk("orders"), bulk("e"), bulk("E1")]),
            ]),
            Value::Array(vec![bulk("2-0"), Value::Array(vec![bulk("x"), bulk("y")])]),
            Value::Array(vec![bulk("3-0")]),
        ]);
        let d = parse_deletions(&entries);
        assert_eq!(
            d,
            vec![
                (
                    "1-0".to_string(),
                    Some(("orders".to_string(), "E1".to_string()))
                ),
                ("2-0".to_string(), None),
                ("3-0".to_string(), None),
            ]
        );
    }
}
