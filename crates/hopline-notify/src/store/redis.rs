//! The Redis Streams engine (`engine = "redis://HOST:PORT"`): several `hopline serve`
//! nodes share one notification service — its apps, messages, queues and history live in
//! Redis, not in the node.
//!
//! - A message is a hash (`…:m:ID`), its attempts and status changes are lists, and an
//!   app's messages are a sorted set ordered by id (ids begin with their time, so the set
//!   pages newest-first and answers time ranges).
//! - The queues are **streams**, one per channel and priority (`…:q:webhook:0` …), read by
//!   the consumer group `workers` with `XREADGROUP`; every node is a consumer. A message
//!   due later (`send_at`, a retry's delay) waits in the sorted set `…:due` and is moved
//!   into its stream when due, by whichever node gets there first (a Lua script, so
//!   never twice).
//! - An entry stays in the group's pending list until its attempt is recorded (`XACK`,
//!   then `XDEL`). Entries a node took and never finished — it was killed — are taken over
//!   by the other nodes with `XAUTOCLAIM` once idle for `claim_idle_ms`: at-least-once, and
//!   every attempt carries the message id so receivers drop duplicates.
//! - Every change of a message is one Lua script, so a message is never half-updated and
//!   two nodes never both take it from `queued`.
//!
//! Durability is Redis's: a 202 means Redis has the message; run Redis with
//! `appendonly yes` (and `appendfsync always` for the SQLite engine's promise).

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Script};

use crate::clock::now_ms;
use crate::events::{EventTasks, Events};
use crate::model::{ID_TIME_LEN, NewMessage, Priority, Status, message_id, random_token};
use crate::store::engine::Engine;
use crate::store::records::{
    Accepted, AnalyticsRow, App, Attempt, Change, ClaimAnswer, Claimed, Message, NewApp, Outcome,
    Purged, StoreError, new_app_secrets,
};

/// A queue entry of a message: (stream, entry id, message id).
type Entry = (String, String, String);

/// The consumer group every node reads the queues through.
const GROUP: &str = "workers";
/// Channels with a queue.
const CHANNELS: [&str; 4] = ["webhook", "email", "sms", "push"];
/// The longest a claim blocks waiting for a new entry (a due retry is moved at most this
/// late).
const MAX_BLOCK_MS: u64 = 200;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

const ACCEPT: &str = r#"
-- KEYS: 1 idempotency, 2 message, 3 history, 4 app index, 5 stream, 6 due
-- ARGV: 1 request hash ('' = no key), 2 id, 3 now, 4 send_at, 5 due now (1/0), 6.. fields
if ARGV[1] ~= '' then
  local seen = redis.call('GET', KEYS[1])
  if seen then
    local sp = string.find(seen, ' ', 1, true)
    if string.sub(seen, 1, sp - 1) == ARGV[1] then return {'again', string.sub(seen, sp + 1)} end
    return {'mismatch', ''}
  end
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('RPUSH', KEYS[3], 'queued ' .. ARGV[3])
redis.call('ZADD', KEYS[4], 0, ARGV[2])
if ARGV[5] == '1' then
  redis.call('XADD', KEYS[5], '*', 'id', ARGV[2])
else
  redis.call('ZADD', KEYS[6], ARGV[4], ARGV[2])
end
if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', 86400) end
return {'new', ARGV[2]}
"#;

const MOVE_DUE: &str = r#"
-- KEYS: 1 due; ARGV: 1 now, 2 at most, 3 key prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local m = redis.call('HMGET', ARGV[3] .. ':m:' .. id, 'status', 'channel', 'priority')
  if m[1] == 'queued' then
    redis.call('XADD', ARGV[3] .. ':q:' .. m[2] .. ':' .. m[3], '*', 'id', id)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then return first[2] end
return false
"#;

/// Prepended to the scripts that finish a message (`keep(…)` sets its keys' expiry).
const KEEP: &str = r#"
-- a finished message (and its attempts and history) lives until its acceptance time
-- plus the retention (ARGV given as ms, '' = for ever); an unfinished one for ever
local function keep(m, a, h, status, ret)
  if ret == '' then return end
  if status == 'queued' or status == 'sending' then
    redis.call('PERSIST', m); redis.call('PERSIST', a); redis.call('PERSIST', h)
  else
    local at = tonumber(redis.call('HGET', m, 'created_ms') or '0') + tonumber(ret)
    redis.call('PEXPIREAT', m, at); redis.call('PEXPIREAT', a, at); redis.call('PEXPIREAT', h, at)
  end
end
"#;

const TAKE: &str = r#"
-- KEYS: message and history of each message, in pairs; ARGV: 1 now, 2 key prefix,
-- 3 retention ms ('' = for ever)
-- Answers one reply per message: {'take', webhook secret, message fields} or {what else}.
local out = {}
for i = 1, #KEYS, 2 do
  local m, h = KEYS[i], KEYS[i + 1]
  local st = redis.call('HGET', m, 'status')
  if not st then
    out[#out + 1] = {'gone'}
  elseif st ~= 'queued' and st ~= 'sending' then
    out[#out + 1] = {'skip'}
  else
    local exp = redis.call('HGET', m, 'expires_ms')
    if exp and tonumber(exp) < tonumber(ARGV[1]) then
      redis.call('HSET', m, 'status', 'expired', 'updated_ms', ARGV[1])
      redis.call('RPUSH', h, 'expired ' .. ARGV[1])
      keep(m, ARGV[2] .. ':a:' .. string.sub(m, #ARGV[2] + 4), h, 'expired', ARGV[3])
      out[#out + 1] = {'expired'}
    else
      redis.call('HSET', m, 'status', 'sending', 'updated_ms', ARGV[1])
      redis.call('HINCRBY', m, 'attempts', 1)
      redis.call('RPUSH', h, 'sending ' .. ARGV[1])
      local app = redis.call('HGET', m, 'app')
      local secret = redis.call('HGET', ARGV[2] .. ':app:' .. app, 'webhook_secret') or ''
      out[#out + 1] = {'take', secret, redis.call('HGETALL', m)}
    end
  end
end
return out
"#;

const RECORD: &str = r#"
-- KEYS: 1 message, 2 attempts, 3 history, 4 due, 5 disabled endpoints, 6 stream
-- ARGV: 1 id, 2 status, 3 next_ms, 4 now, 5 attempt json, 6 attempt time, 7 url to disable, 8 entry,
-- 9 retention ms ('' = for ever)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local status = ARGV[2]
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'status', status, 'updated_ms', ARGV[4])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'next_ms', ARGV[3]) end
if status == 'sent' or status == 'delivered' then redis.call('HSETNX', KEYS[1], 'sent_ms', ARGV[6]) end
if status == 'delivered' then
  redis.call('HSET', KEYS[1], 'delivered_ms', ARGV[4])
  redis.call('RPUSH', KEYS[3], 'sent ' .. ARGV[6])
end
redis.call('RPUSH', KEYS[3], status .. ' ' .. ARGV[4])
if status == 'queued' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1]) end
if ARGV[7] ~= '' then redis.call('SADD', KEYS[5], ARGV[7]) end
if ARGV[8] ~= '' then
  redis.call('XACK', KEYS[6], 'workers', ARGV[8])
  redis.call('XDEL', KEYS[6], ARGV[8])
end
keep(KEYS[1], KEYS[2], KEYS[3], status, ARGV[9])
return 1
"#;

const CHANGE: &str = r#"
-- KEYS: 1 message, 2 history, 3 due, 4 attempts
-- ARGV: 1 id, 2 app ('' any), 3 channel ('' any), 4 allowed statuses ",a,b,", 5 new status, 6 now, 7 kind,
-- 8 retention ms ('' = for ever)
local m = redis.call('HMGET', KEYS[1], 'app', 'status', 'channel')
if not m[1] then return {'notfound', ''} end
if ARGV[2] ~= '' and m[1] ~= ARGV[2] then return {'notfound', ''} end
if ARGV[3] ~= '' and m[3] ~= ARGV[3] then return {'notfound', ''} end
if not string.find(ARGV[4], ',' .. m[2] .. ',', 1, true) then return {'conflict', m[2]} end
if ARGV[7] == 'replay' then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0, 'next_ms', ARGV[6], 'updated_ms', ARGV[6])
  redis.call('HDEL', KEYS[1], 'expires_ms')
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
elseif ARGV[7] == 'cancel' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated_ms', ARGV[6])
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'status', ARGV[5], 'updated_ms', ARGV[6])
  if ARGV[5] == 'delivered' then redis.call('HSET', KEYS[1], 'delivered_ms', ARGV[6]) end
end
redis.call('RPUSH', KEYS[2], ARGV[5] .. ' ' .. ARGV[6])
keep(KEYS[1], KEYS[4], KEYS[2], ARGV[5], ARGV[8])
return {'ok', m[1]}
"#;

/// One notification service's state in Redis.
pub struct RedisStore {
    client: redis::Client,
    /// `hopline:notify:{NAME}` — one hash tag, so every key of a service is in one slot.
    prefix: String,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Only for the blocking `XREADGROUP` of claims (a blocked read would hold up every
    /// other command queued behind it on a shared connection).
    reader: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// This node's name in the consumer group.
    consumer: String,
    /// Entries pending this long on a consumer are taken over by another.
    claim_idle_ms: u64,
    /// How long a finished message is kept after its acceptance, in ms (0 = for ever).
    retention_ms: std::sync::atomic::AtomicU64,
    last_autoclaim: parking_lot::Mutex<u64>,
    /// Message id → (stream, entry) of what this node holds.
    held: parking_lot::Mutex<HashMap<String, (String, String)>>,
    accept: Script,
    move_due: Script,
    take: Script,
    record: Script,
    change: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// The key prefix of the service `name`.
fn prefix_of(name: &str) -> String {
    format!("hopline:notify:{{{name}}}")
}

fn stream_key(prefix: &str, channel: &str, priority: i64) -> String {
    format!("{prefix}:q:{channel}:{priority}")
}

/// The streams, high priority first.
fn streams(prefix: &str) -> Vec<String> {
    (0..3)
        .flat_map(|p| CHANNELS.iter().map(move |c| stream_key(prefix, c, p)))
        .collect()
}

impl RedisStore {
    /// The store of service `name` at `url`; checks that Redis answers and makes the
    /// consumer group of every queue (a short blocking call, at start and reload).
    pub fn open(
        url: &str,
        name: &str,
        claim_idle_ms: u64,
        retention: Option<Duration>,
    ) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let mut sync = client
            .get_connection_with_timeout(CALL_TIMEOUT)
            .map_err(unavailable)?;
        let _ = sync.set_read_timeout(Some(CALL_TIMEOUT));
        let prefix = prefix_of(name);
        for s in streams(&prefix) {
            // from the stream's start: nothing added before the group existed is lost
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&s)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query(&mut sync);
            if let Err(e) = r
                && e.code() != Some("BUSYGROUP")
            {
                return Err(unavailable(e));
            }
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        Ok(RedisStore {
            client,
            prefix,
            conn: tokio::sync::Mutex::new(None),
            reader: tokio::sync::Mutex::new(None),
            consumer: format!("{host}-{}-{}", std::process::id(), random_token(6)),
            claim_idle_ms: claim_idle_ms.max(100),
            retention_ms: std::sync::atomic::AtomicU64::new(
                retention.map_or(0, |r| r.as_millis() as u64),
            ),
            last_autoclaim: parking_lot::Mutex::new(0),
            held: parking_lot::Mutex::new(HashMap::new()),
            accept: Script::new(ACCEPT),
            move_due: Script::new(MOVE_DUE),
            take: Script::new(&format!("{KEEP}{TAKE}")),
            record: Script::new(&format!("{KEEP}{RECORD}")),
            change: Script::new(&format!("{KEEP}{CHANGE}")),
        })
    }

    /// The retention as the scripts take it ("" = for ever).
    fn retention_arg(&self) -> String {
        match self.retention_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => String::new(),
            ms => ms.to_string(),
        }
    }

    /// This node's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    async fn connect(&self, response: Duration) -> Result<MultiplexedConnection, StoreError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(response);
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(unavailable)
    }

    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect(CALL_TIMEOUT).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A call failed: connect anew next time.
    async fn failed(&self, e: redis::RedisError) -> StoreError {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            *self.conn.lock().await = None;
        }
        unavailable(e)
    }

    fn key(&self, what: &str, id: &str) -> String {
        format!("{}:{what}:{id}", self.prefix)
    }

    /// Move what became due (scheduled messages, retries) into the streams, by whichever
    /// node gets there first; when the next scheduled message is due.
    async fn move_due(
        &self,
        c: &mut MultiplexedConnection,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let next: Option<String> = match self
            .move_due
            .key(format!("{}:due", self.prefix))
            .arg(now_ms)
            .arg(1000)
            .arg(&self.prefix)
            .invoke_async(c)
            .await
        {
            Ok(n) => n,
            Err(e) => return Err(self.failed(e).await),
        };
        Ok(next.and_then(|s| s.parse::<f64>().ok()).map(|f| f as u64))
    }

    /// Entries other nodes took and left unfinished for `claim_idle_ms` (they died),
    /// taken over by this one — at most every `claim_idle_ms / 2`; the consumers of
    /// nodes gone for good are forgotten meanwhile. `(stream, entry, message id)` each.
    async fn take_over_idle(
        &self,
        c: &mut MultiplexedConnection,
        names: &[String],
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        {
            let mut last = self.last_autoclaim.lock();
            if now_ms < *last + self.claim_idle_ms / 2 {
                return Ok(entries);
            }
            *last = now_ms;
        }
        for s in names {
            let r: StreamAutoClaimReply = match redis::cmd("XAUTOCLAIM")
                .arg(s)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(self.claim_idle_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(limit.max(1))
                .query_async(c)
                .await
            {
                Ok(r) => r,
                Err(e) => return Err(self.failed(e).await),
            };
            for e in r.claimed {
                if let Some(id) = e.get::<String>("id") {
                    entries.push((s.clone(), e.id, id));
                }
            }
            for gone in r.deleted_ids {
                let _: redis::RedisResult<()> = redis::cmd("XACK")
                    .arg(s)
                    .arg(GROUP)
                    .arg(gone)
                    .query_async(c)
                    .await;
            }
        }
        if !entries.is_empty() {
            tracing::info!(target: "hopline::notify", "took over {} message(s) another node left unfinished", entries.len());
        }
        self.forget_dead_consumers(c, names).await;
        Ok(entries)
    }

    /// New entries of the streams for this node (`XREADGROUP`, blocking up to `block` ms
    /// on the reader's own connection). `(stream, entry, message id)` each.
    async fn read_new(
        &self,
        names: &[String],
        limit: usize,
        block: u64,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut reader = {
            let mut slot = self.reader.lock().await;
            match slot.as_ref() {
                Some(r) => r.clone(),
                None => {
                    let r = self
                        .connect(Duration::from_millis(MAX_BLOCK_MS) + CALL_TIMEOUT)
                        .await?;
                    *slot = Some(r.clone());
                    r
                }
            }
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(limit.max(1))
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(names);
        for _ in names {
            cmd.arg(">");
        }
        let r: Option<StreamReadReply> = match cmd.query_async(&mut reader).await {
            Ok(r) => r,
            Err(e) => {
                *self.reader.lock().await = None;
                return Err(unavailable(e));
            }
        };
        let mut entries = Vec::new();
        for k in r.map(|r| r.keys).unwrap_or_default() {
            for e in k.ids {
                if let Some(id) = e.get::<String>("id") {
                    entries.push((k.key.clone(), e.id, id));
                }
            }
        }
        Ok(entries)
    }

    /// Take the messages of `entries` for this node's workers (one script, one round
    /// trip: each `sending` now, or found cancelled, expired or gone — then its entry is
    /// done and goes).
    async fn take(
        &self,
        c: &mut MultiplexedConnection,
        entries: Vec<Entry>,
        now_ms: u64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut out = Vec::with_capacity(entries.len());
        let mut done: Vec<(String, String)> = Vec::new();
        let replies: Vec<redis::Value> = if entries.is_empty() {
            Vec::new()
        } else {
            let mut take = self.take.prepare_invoke();
            for (_, _, id) in &entries {
                take.key(self.key("m", id)).key(self.key("h", id));
            }
            match take
                .arg(now_ms)
                .arg(&self.prefix)
                .arg(self.retention_arg())
                .invoke_async(c)
                .await
            {
                Ok(r) => r,
                Err(e) => return Err(self.failed(e).await),
            }
        };
        for ((stream, entry, id), r) in entries.into_iter().zip(replies) {
            let redis::Value::Array(parts) = r else {
                continue;
            };
            let what: String = parts
                .first()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            if what != "take" || parts.len() < 3 {
                // cancelled, expired or gone: the entry is done
                done.push((stream, entry));
                continue;
            }
            let webhook_secret: String = redis::from_redis_value(&parts[1]).unwrap_or_default();
            let fields: HashMap<String, String> =
                redis::from_redis_value(&parts[2]).map_err(unavailable)?;
            let message = message_of(&fields);
            self.held.lock().insert(id, (stream, entry));
            out.push(Claimed {
                attempt: message.attempts,
                message,
                webhook_secret,
            });
        }
        if !done.is_empty() {
            let mut pipe = redis::pipe();
            for (stream, entry) in &done {
                pipe.cmd("XACK").arg(stream).arg(GROUP).arg(entry).ignore();
                pipe.cmd("XDEL").arg(stream).arg(entry).ignore();
            }
            let _: redis::RedisResult<()> = pipe.query_async(c).await;
        }
        Ok(out)
    }

    /// Was this nonce of `app` seen inside `ttl_s`? (Remembers it: every node refuses a
    /// replay, whichever node the first request reached.)
    async fn remember_nonce(&self, app: &str, nonce: &str, ttl_s: u64) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.key("nonce", &format!("{app}:{nonce}")))
            .arg("1")
            .arg("NX")
            .arg("EX")
            .arg(ttl_s.max(1))
            .query_async(&mut c)
            .await;
        match r {
            Ok(v) => Ok(v.is_none()),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// Remove from each group the consumers of nodes gone for good: nothing pending
    /// (taken over already) and idle for 10 × `claim_idle_ms` (a restarted node is a new
    /// consumer; without this the group lists every node that ever ran).
    async fn forget_dead_consumers(&self, c: &mut MultiplexedConnection, streams: &[String]) {
        let idle_limit = self.claim_idle_ms.saturating_mul(10);
        for s in streams {
            let info: redis::RedisResult<Vec<HashMap<String, redis::Value>>> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(s)
                .arg(GROUP)
                .query_async(c)
                .await;
            let Ok(consumers) = info else { continue };
            for consumer in consumers {
                let field = |k: &str| {
                    consumer
                        .get(k)
                        .and_then(|v| redis::from_redis_value::<i64>(v).ok())
                };
                let name: Option<String> = consumer
                    .get("name")
                    .and_then(|v| redis::from_redis_value(v).ok());
                let (Some(name), Some(pending), Some(idle)) =
                    (name, field("pending"), field("idle"))
                else {
                    continue;
                };
                if name != self.consumer && pending == 0 && idle as u64 > idle_limit {
                    let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(s)
                        .arg(GROUP)
                        .arg(&name)
                        .query_async(c)
                        .await;
                }
            }
        }
    }

    async fn change(
        &self,
        (app, channel, id): (&str, &str, &str),
        from: &[&str],
        to: Status,
        kind: &str,
        now_ms: u64,
    ) -> Result<(String, String), StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<(String, String)> = self
            .change
            .key(self.key("m", id))
            .key(self.key("h", id))
            .key(format!("{}:due", self.prefix))
            .key(self.key("a", id))
            .arg(id)
            .arg(app)
            .arg(channel)
            .arg(format!(",{},", from.join(",")))
            .arg(to.as_str())
            .arg(now_ms)
            .arg(kind)
            .arg(self.retention_arg())
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(r) => Ok(r),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// Ids of `app` newest first, between `min` and `max` (ZRANGE BYLEX bounds), a chunk.
    async fn ids(
        &self,
        c: &mut MultiplexedConnection,
        app: &str,
        max: &str,
        min: &str,
        n: usize,
    ) -> Result<Vec<String>, StoreError> {
        let r: redis::RedisResult<Vec<String>> = redis::cmd("ZRANGE")
            .arg(self.key("ix", app))
            .arg(max)
            .arg(min)
            .arg("BYLEX")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(n)
            .query_async(c)
            .await;
        match r {
            Ok(r) => Ok(r),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// The messages of `app` with these ids; ids whose message is gone (past the
    /// retention) leave the app's index.
    async fn messages(
        &self,
        c: &mut MultiplexedConnection,
        app: &str,
        ids: &[String],
    ) -> Result<Vec<Message>, StoreError> {
        let mut p = redis::pipe();
        for id in ids {
            p.hgetall(self.key("m", id));
        }
        let r: redis::RedisResult<Vec<HashMap<String, String>>> = p.query_async(c).await;
        match r {
            Ok(r) => {
                let gone: Vec<&String> = ids
                    .iter()
                    .zip(&r)
                    .filter(|(_, f)| f.is_empty())
                    .map(|(id, _)| id)
                    .collect();
                if !gone.is_empty() {
                    let _: redis::RedisResult<()> = redis::cmd("ZREM")
                        .arg(self.key("ix", app))
                        .arg(&gone)
                        .query_async(c)
                        .await;
                }
                Ok(r.iter().filter(|f| !f.is_empty()).map(message_of).collect())
            }
            Err(e) => Err(self.failed(e).await),
        }
    }
}

impl Engine for RedisStore {
    fn is_shared(&self) -> bool {
        true
    }

    /// Store a validated message (the answer comes after Redis has it).
    async fn accept(
        &self,
        app: &str,
        msg: NewMessage,
        idempotency: Option<(String, String)>,
        now_ms: u64,
    ) -> Result<Accepted, StoreError> {
        let id = message_id(now_ms);
        let (idem_key, hash) = match &idempotency {
            Some((k, h)) => (self.key("idem", &format!("{app}:{k}")), h.as_str()),
            None => (self.key("idem", "-"), ""),
        };
        let priority = msg.priority as i64;
        let due_now = msg.send_at_ms <= now_ms;
        let mut inv = self.accept.prepare_invoke();
        inv.key(idem_key)
            .key(self.key("m", &id))
            .key(self.key("h", &id))
            .key(self.key("ix", app))
            .key(stream_key(&self.prefix, msg.channel.as_str(), priority))
            .key(format!("{}:due", self.prefix))
            .arg(hash)
            .arg(&id)
            .arg(now_ms)
            .arg(msg.send_at_ms)
            .arg(if due_now { "1" } else { "0" });
        let fields: [(&str, Option<String>); 14] = [
            ("id", Some(id.clone())),
            ("app", Some(app.to_string())),
            ("channel", Some(msg.channel.as_str().to_string())),
            ("to", Some(msg.to)),
            ("subject", msg.subject),
            ("body", Some(msg.body)),
            ("priority", Some(priority.to_string())),
            ("status", Some("queued".into())),
            ("attempts", Some("0".into())),
            ("next_ms", Some(msg.send_at_ms.to_string())),
            ("expires_ms", msg.expires_ms.map(|e| e.to_string())),
            ("created_ms", Some(now_ms.to_string())),
            ("updated_ms", Some(now_ms.to_string())),
            ("metadata", msg.metadata.map(|m| m.to_string())),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                inv.arg(k).arg(v);
            }
        }
        let mut c = self.conn().await?;
        let r: (String, String) = match inv.invoke_async(&mut c).await {
            Ok(r) => r,
            Err(e) => return Err(self.failed(e).await),
        };
        match r.0.as_str() {
            "new" => Ok(Accepted::New(r.1)),
            "again" => Ok(Accepted::Again(r.1)),
            _ => Err(StoreError::IdempotencyMismatch),
        }
    }

    /// Hand due messages to this node's workers: move what became due into the streams,
    /// take over entries of dead nodes, then read new entries (blocking briefly, so an
    /// `XADD` by any node wakes the read at once).
    async fn claim(&self, now_ms: u64, limit: usize) -> Result<ClaimAnswer, StoreError> {
        let mut c = self.conn().await?;
        let next_due = self.move_due(&mut c, now_ms).await?;
        let names = streams(&self.prefix);
        let mut entries = self.take_over_idle(&mut c, &names, now_ms, limit).await?;
        if entries.is_empty() {
            let block = next_due
                .map(|d| d.saturating_sub(now_ms))
                .unwrap_or(MAX_BLOCK_MS)
                .clamp(1, MAX_BLOCK_MS);
            entries = self.read_new(&names, limit, block).await?;
        }
        let mut out = self.take(&mut c, entries, now_ms).await?;
        out.sort_by_key(|c| match c.message.priority.as_str() {
            "high" => 0,
            "low" => 2,
            _ => 1,
        });
        // nothing got: ask again at once (the next read blocks until something comes)
        Ok((out, Some(now_ms)))
    }

    /// Record an attempt and the message's next status; the queue entry is done.
    async fn record(&self, id: &str, outcome: Outcome, now_ms: u64) -> Result<(), StoreError> {
        let held = self.held.lock().remove(id);
        let (stream, entry) = held.unwrap_or_else(|| (self.key("q", "none"), String::new()));
        let attempt = serde_json::to_string(&outcome.attempt).map_err(unavailable)?;
        let mut c = self.conn().await?;
        let r: redis::RedisResult<i64> = self
            .record
            .key(self.key("m", id))
            .key(self.key("a", id))
            .key(self.key("h", id))
            .key(format!("{}:due", self.prefix))
            .key(format!("{}:disabled", self.prefix))
            .key(stream)
            .arg(id)
            .arg(outcome.status.as_str())
            .arg(outcome.next_ms.map(|n| n.to_string()).unwrap_or_default())
            .arg(now_ms)
            .arg(attempt)
            .arg(outcome.attempt.at_ms)
            .arg(outcome.disable_endpoint.unwrap_or_default())
            .arg(entry)
            .arg(self.retention_arg())
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// Queue a dead (or failed, or expired) message again.
    async fn replay(&self, app: &str, id: &str, now_ms: u64) -> Result<(), StoreError> {
        let (what, s) = self
            .change(
                (app, "", id),
                &["dead", "failed", "expired"],
                Status::Queued,
                "replay",
                now_ms,
            )
            .await?;
        answer(&what, &s, "replayed (only dead, failed or expired ones)").map(|_| ())
    }

    /// Cancel a message not sent yet.
    async fn cancel(&self, app: &str, id: &str, now_ms: u64) -> Result<(), StoreError> {
        let (what, s) = self
            .change(
                (app, "", id),
                &["queued"],
                Status::Cancelled,
                "cancel",
                now_ms,
            )
            .await?;
        answer(&what, &s, "cancelled (only queued ones)").map(|_| ())
    }

    /// A provider's delivery report; answers the message's app.
    async fn callback(
        &self,
        id: &str,
        channel: &str,
        status: Status,
        now_ms: u64,
    ) -> Result<String, StoreError> {
        let (what, s) = self
            .change(
                ("", channel, id),
                &["sent", "sending", "delivered"],
                status,
                "callback",
                now_ms,
            )
            .await?;
        if what == "conflict" {
            return Err(StoreError::Conflict(format!(
                "a {s} message takes no delivery report"
            )));
        }
        answer(&what, &s, "")
    }

    /// A message of `app` with its attempts and status changes.
    async fn get(
        &self,
        app: &str,
        id: &str,
    ) -> Result<(Message, Vec<Attempt>, Vec<Change>), StoreError> {
        let mut c = self.conn().await?;
        type Raw = (HashMap<String, String>, Vec<String>, Vec<String>);
        let r: redis::RedisResult<Raw> = redis::pipe()
            .hgetall(self.key("m", id))
            .lrange(self.key("a", id), 0, -1)
            .lrange(self.key("h", id), 0, -1)
            .query_async(&mut c)
            .await;
        let (fields, attempts, history) = match r {
            Ok(r) => r,
            Err(e) => return Err(self.failed(e).await),
        };
        if fields.get("app").map(String::as_str) != Some(app) {
            return Err(StoreError::NotFound);
        }
        let attempts = attempts
            .iter()
            .filter_map(|a| serde_json::from_str::<Attempt>(a).ok())
            .collect();
        let changes = history
            .iter()
            .filter_map(|h| {
                let (s, at) = h.split_once(' ')?;
                Some(Change {
                    status: s.to_string(),
                    at_ms: at.parse().ok()?,
                })
            })
            .collect();
        Ok((message_of(&fields), attempts, changes))
    }

    /// A page of `app`'s messages, newest first.
    async fn list(
        &self,
        app: &str,
        status: Option<String>,
        channel: Option<String>,
        since_ms: Option<u64>,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let mut c = self.conn().await?;
        let min = since_ms.map_or("-".to_string(), |s| {
            format!("[{}", &message_id(s)[..ID_TIME_LEN])
        });
        let mut max = before.map_or("+".to_string(), |b| format!("({b}"));
        let mut out = Vec::new();
        while out.len() < limit {
            let ids = self.ids(&mut c, app, &max, &min, 500).await?;
            let Some(last) = ids.last() else { break };
            max = format!("({last}");
            for m in self.messages(&mut c, app, &ids).await? {
                if status.as_deref().is_none_or(|s| s == m.status)
                    && channel.as_deref().is_none_or(|ch| ch == m.channel)
                    && out.len() < limit
                {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// Per channel and status: counts and latencies of `app`'s messages accepted in
    /// `[from, to)`.
    async fn analytics(
        &self,
        app: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<AnalyticsRow>, StoreError> {
        let mut c = self.conn().await?;
        let min = format!("[{}", &message_id(from_ms)[..ID_TIME_LEN]);
        let mut max = format!("({}", &message_id(to_ms)[..ID_TIME_LEN]);
        type Groups = std::collections::BTreeMap<(String, String), (u64, Vec<f64>, Vec<f64>)>;
        let mut groups: Groups = Default::default();
        loop {
            let ids = self.ids(&mut c, app, &max, &min, 1000).await?;
            let Some(last) = ids.last() else { break };
            max = format!("({last}");
            for m in self.messages(&mut c, app, &ids).await? {
                if m.created_ms < from_ms || m.created_ms >= to_ms {
                    continue;
                }
                let g = groups.entry((m.channel, m.status)).or_default();
                g.0 += 1;
                if let Some(s) = m.sent_ms {
                    g.1.push(s.saturating_sub(m.created_ms) as f64);
                    if let Some(d) = m.delivered_ms {
                        g.2.push(d.saturating_sub(s) as f64);
                    }
                }
            }
        }
        Ok(groups
            .into_iter()
            .map(|((c, s), (n, a, b))| (c, s, n, a, b))
            .collect())
    }

    /// The app with this key.
    async fn app(&self, key: &str) -> Result<Option<App>, StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<HashMap<String, String>> = redis::cmd("HGETALL")
            .arg(self.key("app", key))
            .query_async(&mut c)
            .await;
        match r {
            Ok(f) if f.is_empty() => Ok(None),
            Ok(f) => Ok(Some(app_of(key, &f))),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// The earliest time a scheduled message is due (Unix ms).
    async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<Vec<(String, f64)>> = redis::cmd("ZRANGE")
            .arg(format!("{}:due", self.prefix))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await;
        match r {
            Ok(v) => Ok(v.first().map(|(_, s)| *s as u64)),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// Enable a disabled webhook endpoint again; whether it was disabled.
    async fn enable(&self, url: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<u64> = redis::cmd("SREM")
            .arg(format!("{}:disabled", self.prefix))
            .arg(url)
            .query_async(&mut c)
            .await;
        match r {
            Ok(n) => Ok(n > 0),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// Is `url` a disabled webhook endpoint?
    async fn disabled(&self, url: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<bool> = redis::cmd("SISMEMBER")
            .arg(format!("{}:disabled", self.prefix))
            .arg(url)
            .query_async(&mut c)
            .await;
        match r {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// (Finished messages expire by themselves.)
    async fn purge(
        &self,
        _before_ms: u64,
        _idempotency_before_ms: u64,
        _limit: usize,
    ) -> Result<Purged, StoreError> {
        Ok(Purged::default())
    }

    /// A reload's retention.
    fn set_retention(&self, retention: Option<Duration>) {
        self.retention_ms.store(
            retention.map_or(0, |r| r.as_millis() as u64),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Was this nonce of `app` seen by any node inside `ttl_s`? (Remembers it: every
    /// node refuses a replay, whichever node the first request reached.)
    async fn nonce_seen(
        &self,
        app: &str,
        nonce: &str,
        ttl_s: u64,
    ) -> Option<Result<bool, StoreError>> {
        Some(self.remember_nonce(app, nonce, ttl_s).await)
    }

    /// The feed of status changes shared by every node, on the pub/sub channel
    /// `hopline:notify:{NAME}:events`.
    fn events(&self) -> (Events, EventTasks) {
        Events::redis(self.client.clone(), format!("{}:events", self.prefix))
    }
}

fn answer(what: &str, status: &str, cannot_be: &str) -> Result<String, StoreError> {
    match what {
        "ok" => Ok(status.to_string()),
        "conflict" => Err(StoreError::Conflict(format!(
            "a {status} message cannot be {cannot_be}"
        ))),
        _ => Err(StoreError::NotFound),
    }
}

fn message_of(f: &HashMap<String, String>) -> Message {
    let s = |k: &str| f.get(k).cloned().unwrap_or_default();
    let n = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
    Message {
        id: s("id"),
        app: s("app"),
        channel: s("channel"),
        to: s("to"),
        subject: f.get("subject").cloned(),
        body: s("body"),
        priority: Priority::from_i64(n("priority").unwrap_or(1) as i64)
            .as_str()
            .to_string(),
        status: s("status"),
        attempts: n("attempts").unwrap_or(0) as u32,
        next_ms: n("next_ms").unwrap_or(0),
        expires_ms: n("expires_ms"),
        created_ms: n("created_ms").unwrap_or(0),
        sent_ms: n("sent_ms"),
        delivered_ms: n("delivered_ms"),
        metadata: f.get("metadata").and_then(|m| serde_json::from_str(m).ok()),
    }
}

fn app_of(key: &str, f: &HashMap<String, String>) -> App {
    App {
        key: key.to_string(),
        name: f.get("name").cloned().unwrap_or_default(),
        secrets: f
            .get("secrets")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
        webhook_secret: f.get("webhook_secret").cloned().unwrap_or_default(),
        channels: f.get("channels").and_then(|c| serde_json::from_str(c).ok()),
        created_ms: f
            .get("created_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// Apps of a service in Redis, for `hopline notify app …` (also while nodes run).
pub mod apps {
    use super::*;
    use redis::Commands;

    fn connect(url: &str) -> Result<redis::Connection, StoreError> {
        let c = redis::Client::open(url).map_err(unavailable)?;
        c.get_connection_with_timeout(CALL_TIMEOUT)
            .map_err(unavailable)
    }

    /// Make an app.
    pub fn create(
        url: &str,
        service: &str,
        name: &str,
        channels: Option<Vec<String>>,
    ) -> Result<NewApp, StoreError> {
        let mut c = connect(url)?;
        let new = new_app_secrets();
        let p = prefix_of(service);
        let mut fields = vec![
            ("name", name.to_string()),
            (
                "secrets",
                serde_json::to_string(&[&new.secret]).unwrap_or_default(),
            ),
            ("webhook_secret", new.webhook_secret.clone()),
            ("created_ms", now_ms().to_string()),
        ];
        if let Some(ch) = channels {
            fields.push(("channels", serde_json::to_string(&ch).unwrap_or_default()));
        }
        redis::pipe()
            .atomic()
            .hset_multiple(format!("{p}:app:{}", new.key), &fields)
            .ignore()
            .zadd(format!("{p}:apps"), &new.key, now_ms())
            .ignore()
            .query::<()>(&mut c)
            .map_err(unavailable)?;
        Ok(new)
    }

    /// Every app.
    pub fn list(url: &str, service: &str) -> Result<Vec<App>, StoreError> {
        let mut c = connect(url)?;
        let p = prefix_of(service);
        let keys: Vec<String> = c.zrange(format!("{p}:apps"), 0, -1).map_err(unavailable)?;
        let mut out = Vec::new();
        for k in keys {
            let f: HashMap<String, String> =
                c.hgetall(format!("{p}:app:{k}")).map_err(unavailable)?;
            if !f.is_empty() {
                out.push(app_of(&k, &f));
            }
        }
        Ok(out)
    }

    /// A new secret for the app; the newest two stay active.
    pub fn rotate(url: &str, service: &str, key: &str) -> Result<String, StoreError> {
        let mut c = connect(url)?;
        let p = prefix_of(service);
        let f: HashMap<String, String> =
            c.hgetall(format!("{p}:app:{key}")).map_err(unavailable)?;
        if f.is_empty() {
            return Err(StoreError::NotFound);
        }
        let app = app_of(key, &f);
        let secret = format!("sk_{}", random_token(32));
        let mut secrets = vec![secret.clone()];
        secrets.extend(app.secrets.into_iter().take(1));
        let _: () = c
            .hset(
                format!("{p}:app:{key}"),
                "secrets",
                serde_json::to_string(&secrets).unwrap_or_default(),
            )
            .map_err(unavailable)?;
        Ok(secret)
    }
}
