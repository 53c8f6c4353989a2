//! Purges shared by the PoPs of one CDN: a Redis stream per cache (`shared_purge`).
//!
//! A purge made at any PoP (its admin API, `hopline purge`) is applied there and added to
//! the stream (`XADD … MAXLEN ~ keep`: node, target, soft); every PoP follows the stream
//! (`XREAD BLOCK`) from the last entry it applied and applies the others' purges — they
//! are idempotent, so applying one twice is harmless. A purge made while Redis is away is
//! kept and sent when it is back. A PoP that comes back after an absence replays what it
//! missed from its last entry; when the stream no longer holds that entry (trimmed past
//! it, or Redis restarted without it), the PoP cannot vouch for anything it holds and
//! marks everything stale — served stale while it revalidates — and says so in its
//! status (`gaps`).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use hopline_cache::config::SharedPurge;
use hopline_cache::store::{HttpCache, PurgeBroadcast, PurgeTarget};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

/// How long one `XREAD` blocks.
const BLOCK_MS: u64 = 2000;
/// A call's time limit (besides the blocking read).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    connected: bool,
    /// The last entry applied (or skipped as this node's own).
    last_id: Option<String>,
    since: Option<SystemTime>,
    published: u64,
    applied: u64,
    gaps: u64,
    last_gap: Option<SystemTime>,
    last_error: Option<String>,
    /// Purges made here and not sent yet (Redis away).
    pending: VecDeque<(PurgeTarget, bool)>,
}

/// One cache's share of the CDN's purge stream.
pub struct PurgeChannel {
    client: redis::Client,
    stream: String,
    keep: u64,
    node: String,
    state: parking_lot::Mutex<State>,
    wake: tokio::sync::Notify,
}

fn unix(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

impl PurgeBroadcast for PurgeChannel {
    fn publish(&self, target: &PurgeTarget, soft: bool) {
        self.state.lock().pending.push_back((target.clone(), soft));
        self.wake.notify_one();
    }

    fn status(&self) -> serde_json::Value {
        let s = self.state.lock();
        serde_json::json!({
            "stream": self.stream,
            "node": self.node,
            "connected": s.connected,
            "since": unix(s.since),
            "last_id": s.last_id,
            "published": s.published,
            "applied": s.applied,
            "pending": s.pending.len(),
            "gaps": s.gaps,
            "last_gap": unix(s.last_gap),
            "last_error": s.last_error,
        })
    }
}

/// Share `cache`'s purges as `cfg` says: its channel is attached and its two tasks (the
/// follower, the publisher) started; they end when the cache is dropped. Needs a tokio
/// runtime (without one — a config check — nothing starts).
pub fn attach(name: &str, cache: &Arc<HttpCache>, cfg: &SharedPurge) -> Result<(), String> {
    let client = redis::Client::open(cfg.redis.as_str())
        .map_err(|e| format!("cache {name}: shared_purge redis {:?}: {e}", cfg.redis))?;
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Ok(());
    };
    let channel = Arc::new(PurgeChannel {
        client,
        stream: cfg
            .stream
            .clone()
            .unwrap_or_else(|| format!("hopline:purge:{name}")),
        keep: cfg.keep.unwrap_or(100_000).max(1),
        node: format!("{:016x}", rand::random::<u64>()),
        state: Default::default(),
        wake: tokio::sync::Notify::new(),
    });
    cache.set_broadcast(channel.clone());
    let weak = Arc::downgrade(cache);
    rt.spawn(follow(channel.clone(), weak.clone()));
    rt.spawn(publish(channel, weak));
    Ok(())
}

impl PurgeChannel {
    async fn connect(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(response_timeout);
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    fn down(&self, e: impl std::fmt::Display) {
        let mut s = self.state.lock();
        if s.connected {
            s.since = Some(SystemTime::now());
        }
        s.connected = false;
        s.last_error = Some(e.to_string());
    }
}

/// The publisher: sends the purges made here, in order, as Redis takes them.
async fn publish(ch: Arc<PurgeChannel>, cache: Weak<HttpCache>) {
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        if cache.strong_count() == 0 {
            return;
        }
        // what is waiting goes in one round trip (a pipeline of XADDs), in order
        let batch: Vec<(PurgeTarget, bool)> =
            ch.state.lock().pending.iter().take(512).cloned().collect();
        if batch.is_empty() {
            // (woken by a purge, or now and then to notice the cache is gone)
            let _ = tokio::time::timeout(Duration::from_secs(1), ch.wake.notified()).await;
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match ch.connect(CALL_TIMEOUT).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    ch.down(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let mut pipe = redis::pipe();
        for (target, soft) in &batch {
            let (kind, value) = match target {
                PurgeTarget::Url(v) => ("url", v.as_str()),
                PurgeTarget::Prefix(v) => ("prefix", v.as_str()),
                PurgeTarget::Tag(v) => ("tag", v.as_str()),
                PurgeTarget::All => ("all", ""),
            };
            let cmd = pipe.cmd("XADD").arg(&ch.stream).arg("MAXLEN");
            if ch.keep >= 1000 {
                // (trimmed by whole macro nodes: cheaper, and keeps at least `keep`)
                cmd.arg("~");
            }
            cmd.arg(ch.keep)
                .arg("*")
                .arg("n")
                .arg(&ch.node)
                .arg("k")
                .arg(kind)
                .arg("v")
                .arg(value)
                .arg("s")
                .arg(if *soft { "1" } else { "0" })
                .ignore();
        }
        let sent: redis::RedisResult<()> = pipe.query_async(c).await;
        match sent {
            Ok(()) => {
                let mut s = ch.state.lock();
                for _ in 0..batch.len() {
                    s.pending.pop_front();
                }
                s.published += batch.len() as u64;
            }
            Err(e) => {
                conn = None;
                ch.down(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The follower: applies the others' purges from the stream, from where it was.
async fn follow(ch: Arc<PurgeChannel>, cache: Weak<HttpCache>) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if cache.strong_count() == 0 {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect_follower(&ch, &cache).await {
                Ok(c) => {
                    backoff = Duration::from_millis(100);
                    conn.insert(c)
                }
                Err(e) => {
                    ch.down(e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        let from = ch
            .state
            .lock()
            .last_id
            .clone()
            .unwrap_or_else(|| "$".into());
        let read: redis::RedisResult<Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&ch.stream)
            .arg(&from)
            .query_async(c)
            .await;
        match read {
            Ok(v) => {
                let Some(cache) = cache.upgrade() else { return };
                for (id, fields) in entries(&v) {
                    apply(&ch, &cache, &fields);
                    ch.state.lock().last_id = Some(id);
                }
            }
            Err(e) => {
                conn = None;
                ch.down(e);
            }
        }
    }
}

/// A connection for the follower; on a reconnection, the check that the stream still
/// holds every purge after the last one applied (else everything is marked stale).
async fn connect_follower(
    ch: &PurgeChannel,
    cache: &Weak<HttpCache>,
) -> redis::RedisResult<MultiplexedConnection> {
    let mut c = ch
        .connect(Duration::from_millis(BLOCK_MS) + CALL_TIMEOUT)
        .await?;
    let last = ch.state.lock().last_id.clone();
    match last {
        // the first connection: purges from now on (what the cache holds is fresh)
        None => {
            let top: Value = redis::cmd("XREVRANGE")
                .arg(&ch.stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut c)
                .await?;
            let id = entry_list(&top)
                .first()
                .map(|(id, _)| id.clone())
                .unwrap_or_else(|| "0-0".into());
            ch.state.lock().last_id = Some(id);
        }
        Some(last) => {
            // trimming drops the oldest entries first: while the last entry applied is
            // still in the stream, so is everything after it; once it is gone, what came
            // after it may be gone too — missed for good
            let gap = if last == "0-0" {
                let info: redis::RedisResult<Value> = redis::cmd("XINFO")
                    .arg("STREAM")
                    .arg(&ch.stream)
                    .query_async(&mut c)
                    .await;
                let n = |name: &str| {
                    info.as_ref()
                        .ok()
                        .and_then(|v| field(v, name))
                        .and_then(|t| t.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                n("entries-added") > n("length")
            } else {
                let still: Value = redis::cmd("XRANGE")
                    .arg(&ch.stream)
                    .arg(&last)
                    .arg(&last)
                    .query_async(&mut c)
                    .await?;
                entry_list(&still).is_empty()
            };
            if gap && let Some(cache) = cache.upgrade() {
                cache.purge(&PurgeTarget::All, true);
                let mut s = ch.state.lock();
                s.gaps += 1;
                s.last_gap = Some(SystemTime::now());
                tracing::warn!(target: "hopline::cache", "shared purges: the stream {} no longer holds this node's last purge ({last}): it may have missed some, so every object is marked stale", ch.stream);
            }
        }
    }
    {
        let mut s = ch.state.lock();
        s.connected = true;
        s.since = Some(SystemTime::now());
        s.last_error = None;
    }
    ch.wake.notify_one();
    Ok(c)
}

/// Apply one entry of the stream (not this node's own: applied when it was made).
fn apply(ch: &PurgeChannel, cache: &HttpCache, fields: &[(String, String)]) {
    let get = |k: &str| {
        fields
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if get("n") == ch.node {
        return;
    }
    let v = get("v").to_string();
    let target = match get("k") {
        "url" => PurgeTarget::Url(v),
        "prefix" => PurgeTarget::Prefix(v),
        "tag" => PurgeTarget::Tag(v),
        "all" => PurgeTarget::All,
        _ => return,
    };
    cache.purge(&target, get("s") == "1");
    ch.state.lock().applied += 1;
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a.iter().collect(),
        Value::Map(m) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// A field of a flat reply (`XINFO STREAM`: name, value, name, value…).
fn field(v: &Value, name: &str) -> Option<String> {
    let it = items(v);
    it.chunks(2)
        .find(|kv| kv.first().and_then(|k| text(k)).as_deref() == Some(name))
        .and_then(|kv| kv.get(1).and_then(|v| text(v)))
}

/// Entries of a list of `[id, [field, value…]]`.
fn entry_list(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    items(v)
        .into_iter()
        .filter_map(|e| {
            let parts = items(e);
            let id = text(parts.first()?)?;
            let kv = parts.get(1).map(|f| items(f)).unwrap_or_default();
            let fields = kv
                .chunks(2)
                .filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// The entries of an `XREAD` reply of one stream (nil on timeout: none).
fn entries(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    match v {
        Value::Map(m) => m.first().map(|(_, e)| entry_list(e)).unwrap_or_default(),
        _ => items(v)
            .first()
            .and_then(|s| items(s).get(1).map(|e| entry_list(e)))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_in_both_protocols() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            b("1-1"),
            Value::Array(vec![b("k"), b("tag"), b("v"), b("x")]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            b("s"),
            Value::Array(vec![entry.clone()]),
        ])]);
        let resp3 = Value::Map(vec![(b("s"), Value::Array(vec![entry]))]);
        for v in [resp2, resp3] {
            let e = entries(&v);
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].0, "1-1");
            assert_eq!(
                e[0].1,
                vec![("k".into(), "tag".into()), ("v".into(), "x".into())]
            );
        }
        assert!(entries(&Value::Nil).is_empty());
        let info = Value::Array(vec![
            b("length"),
            Value::Int(3),
            b("max-deleted-entry-id"),
            b("9-0"),
        ]);
        assert_eq!(field(&info, "max-deleted-entry-id").as_deref(), Some("9-0"));
    }
}
