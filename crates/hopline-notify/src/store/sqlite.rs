//! The embedded store: SQLite in WAL mode. One writer thread owns the only writing
//! connection and commits whatever arrived meanwhile in one transaction (group commit:
//! many concurrent POSTs share one fsync); a message's 202 is sent only after the commit
//! that holds it (`synchronous = FULL`), so it survives kill -9 and power loss from then
//! on. Readers use their own connections and never block the writer.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::events::{EventTasks, Events};
use crate::model::{NewMessage, Priority, Status, message_id, random_token};
use crate::store::engine::Engine;
use crate::store::records::{
    Accepted, AnalyticsRow, App, Attempt, Change, ClaimAnswer, Claimed, Message, NewApp, Outcome,
    Purged, StoreError, new_app_secrets,
};

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

enum Op {
    Accept {
        app: String,
        msg: NewMessage,
        idempotency: Option<(String, String)>,
        now_ms: u64,
        reply: oneshot::Sender<Result<Accepted, StoreError>>,
    },
    Claim {
        now_ms: u64,
        limit: usize,
        reply: oneshot::Sender<Result<ClaimAnswer, StoreError>>,
    },
    Record {
        id: String,
        outcome: Outcome,
        now_ms: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Replay {
        app: String,
        id: String,
        now_ms: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Cancel {
        app: String,
        id: String,
        now_ms: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Enable {
        url: String,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Callback {
        id: String,
        channel: String,
        status: Status,
        now_ms: u64,
        reply: oneshot::Sender<Result<String, StoreError>>,
    },
    Purge {
        before_ms: u64,
        idempotency_before_ms: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Purged, StoreError>>,
    },
}

/// The earliest `next_ms` of a queued message: one index probe per priority (a plain
/// `MIN(next_ms) WHERE status = 'queued'` reads every queued row, scheduled ones too).
const NEXT_DUE: &str = "SELECT MIN(m) FROM (\
    SELECT MIN(next_ms) AS m FROM messages WHERE status = 'queued' AND priority = 0 UNION ALL \
    SELECT MIN(next_ms) FROM messages WHERE status = 'queued' AND priority = 1 UNION ALL \
    SELECT MIN(next_ms) FROM messages WHERE status = 'queued' AND priority = 2)";

/// Queued messages past their ttl, through the partial index of those that have one.
const EXPIRE: &str = "UPDATE messages INDEXED BY messages_expiry SET status = 'expired', updated_ms = ?1 \
    WHERE status = 'queued' AND expires_ms IS NOT NULL AND expires_ms < ?1 RETURNING id";

/// Up to ?3 due messages of priority ?2, oldest due first, marked sending.
const CLAIM: &str = "UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_ms = ?1 \
    WHERE id IN (SELECT id FROM messages WHERE status = 'queued' AND priority = ?2 AND next_ms <= ?1 \
    ORDER BY next_ms LIMIT ?3) RETURNING ";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS apps (
  key TEXT PRIMARY KEY, name TEXT NOT NULL, secrets TEXT NOT NULL, webhook_secret TEXT NOT NULL,
  channels TEXT, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY, app TEXT NOT NULL, channel TEXT NOT NULL, recipient TEXT NOT NULL,
  subject TEXT, body TEXT NOT NULL, priority INTEGER NOT NULL, status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL, expires_ms INTEGER,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, sent_ms INTEGER, delivered_ms INTEGER,
  metadata TEXT);
CREATE INDEX IF NOT EXISTS messages_due ON messages(status, priority, next_ms);
CREATE INDEX IF NOT EXISTS messages_app ON messages(app, created_ms);
CREATE INDEX IF NOT EXISTS messages_expiry ON messages(expires_ms)
  WHERE status = 'queued' AND expires_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
  message TEXT NOT NULL, n INTEGER NOT NULL, at_ms INTEGER NOT NULL, provider TEXT NOT NULL,
  result TEXT NOT NULL, http_status INTEGER, latency_ms REAL NOT NULL, error TEXT,
  PRIMARY KEY (message, n));
CREATE TABLE IF NOT EXISTS history (message TEXT NOT NULL, status TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS history_message ON history(message);
CREATE TABLE IF NOT EXISTS idempotency (
  app TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL, message TEXT NOT NULL,
  created_ms INTEGER NOT NULL, PRIMARY KEY (app, key));
CREATE TABLE IF NOT EXISTS disabled_endpoints (url TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);
"#;

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.set_prepared_statement_cache_capacity(64);
    Ok(c)
}

/// The embedded SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::SyncSender<Op>,
    readers: parking_lot::Mutex<Vec<Connection>>,
    /// Disabled webhook endpoints (the table's copy: only this process's writer adds to
    /// it), asked before every webhook attempt without a trip to a reader thread.
    disabled: parking_lot::RwLock<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (or make) the database at `path`. Messages a crashed process left `sending`
    /// go back to `queued` (at-least-once: they are sent again, with the same id).
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, None)
    }

    /// [`Store::open`] with a size quota in bytes (SQLite's `max_page_count`).
    pub fn open_with(path: &Path, max_size: Option<u64>) -> Result<SqliteStore, StoreError> {
        let w = open(path).map_err(sql_err)?;
        w.execute_batch(SCHEMA).map_err(sql_err)?;
        if let Some(max) = max_size {
            let page: i64 = w
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(sql_err)?;
            w.pragma_update(None, "max_page_count", (max as i64 / page.max(512)).max(16))
                .map_err(sql_err)?;
        }
        w.execute(
            "UPDATE messages SET status = 'queued' WHERE status = 'sending'",
            [],
        )
        .map_err(sql_err)?;
        let mut disabled = std::collections::HashSet::new();
        {
            let mut st = w
                .prepare("SELECT url FROM disabled_endpoints")
                .map_err(sql_err)?;
            for url in st
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql_err)?
            {
                disabled.insert(url.map_err(sql_err)?);
            }
        }
        let (tx, rx) = mpsc::sync_channel::<Op>(65_536);
        std::thread::Builder::new()
            .name("notify-writer".into())
            .spawn(move || writer(w, rx))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            tx,
            readers: parking_lot::Mutex::new(Vec::new()),
            disabled: parking_lot::RwLock::new(disabled),
        })
    }

    /// Run `f` on a reader connection (off the async threads).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => open(&self.path).map_err(sql_err)?,
        };
        let (conn, r) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut pool = self.readers.lock();
        if pool.len() < 8 {
            pool.push(conn);
        }
        r.map_err(sql_err)
    }

    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(op(reply))
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }
}

impl Engine for SqliteStore {
    fn is_shared(&self) -> bool {
        false
    }

    /// Store a validated message durably (the answer comes after its commit).
    async fn accept(
        &self,
        app: &str,
        msg: NewMessage,
        idempotency: Option<(String, String)>,
        now_ms: u64,
    ) -> Result<Accepted, StoreError> {
        let app = app.to_string();
        self.call(|reply| Op::Accept {
            app,
            msg,
            idempotency,
            now_ms,
            reply,
        })
        .await
    }

    /// Hand up to `limit` due messages to workers (status `sending`), high priority
    /// first but with a share for each priority so that low is never starved; messages
    /// past their ttl become `expired`.
    /// The answer also says when the next queued message is due (Unix ms), so the
    /// dispatcher knows how long it may sleep without asking again.
    async fn claim(&self, now_ms: u64, limit: usize) -> Result<ClaimAnswer, StoreError> {
        self.call(|reply| Op::Claim {
            now_ms,
            limit,
            reply,
        })
        .await
    }

    /// Record an attempt and the message's next status.
    async fn record(&self, id: &str, outcome: Outcome, now_ms: u64) -> Result<(), StoreError> {
        let id = id.to_string();
        let disable = outcome.disable_endpoint.clone();
        self.call(|reply| Op::Record {
            id,
            outcome,
            now_ms,
            reply,
        })
        .await?;
        if let Some(url) = disable {
            // (after the commit)
            self.disabled.write().insert(url);
        }
        Ok(())
    }

    /// Queue a dead (or failed) message again.
    async fn replay(&self, app: &str, id: &str, now_ms: u64) -> Result<(), StoreError> {
        let (app, id) = (app.to_string(), id.to_string());
        self.call(|reply| Op::Replay {
            app,
            id,
            now_ms,
            reply,
        })
        .await
    }

    /// Cancel a message not sent yet.
    async fn cancel(&self, app: &str, id: &str, now_ms: u64) -> Result<(), StoreError> {
        let (app, id) = (app.to_string(), id.to_string());
        self.call(|reply| Op::Cancel {
            app,
            id,
            now_ms,
            reply,
        })
        .await
    }

    /// A provider's delivery report for a message of `channel` it was sent through:
    /// `delivered`, `failed` or `bounced`. Answers the message's app.
    async fn callback(
        &self,
        id: &str,
        channel: &str,
        status: Status,
        now_ms: u64,
    ) -> Result<String, StoreError> {
        let (id, channel) = (id.to_string(), channel.to_string());
        self.call(|reply| Op::Callback {
            id,
            channel,
            status,
            now_ms,
            reply,
        })
        .await
    }

    /// A message of `app` with its attempts and status changes.
    async fn get(
        &self,
        app: &str,
        id: &str,
    ) -> Result<(Message, Vec<Attempt>, Vec<Change>), StoreError> {
        let (app, id) = (app.to_string(), id.to_string());
        let found = self
            .read(move |c| {
                let m = c
                    .query_row(
                        &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1 AND app = ?2"),
                        params![id, app],
                        message_row,
                    )
                    .optional()?;
                let Some(m) = m else { return Ok(None) };
                let mut st = c.prepare("SELECT n, at_ms, provider, result, http_status, latency_ms, error FROM attempts WHERE message = ?1 ORDER BY n")?;
                let attempts = st
                    .query_map(params![m.id], |r| {
                        Ok(Attempt {
                            n: r.get(0)?,
                            at_ms: r.get::<_, i64>(1)? as u64,
                            provider: r.get(2)?,
                            result: r.get(3)?,
                            http_status: r.get::<_, Option<i64>>(4)?.map(|s| s as u16),
                            latency_ms: r.get(5)?,
                            error: r.get(6)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut st = c.prepare("SELECT status, at_ms FROM history WHERE message = ?1 ORDER BY rowid")?;
                let changes = st
                    .query_map(params![m.id], |r| {
                        Ok(Change {
                            status: r.get(0)?,
                            at_ms: r.get::<_, i64>(1)? as u64,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(Some((m, attempts, changes)))
            })
            .await?;
        found.ok_or(StoreError::NotFound)
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
        let app = app.to_string();
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE app = ?1 \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR channel = ?3) \
                 AND (?4 IS NULL OR created_ms >= ?4) AND (?5 IS NULL OR id < ?5) \
                 ORDER BY id DESC LIMIT ?6"
            ))?;
            st.query_map(
                params![
                    app,
                    status,
                    channel,
                    since_ms.map(|s| s as i64),
                    before,
                    limit as i64
                ],
                message_row,
            )?
            .collect()
        })
        .await
    }

    /// Per channel and status: counts, and latencies accepted→sent and sent→delivered
    /// (ms, as lists for percentiles), of `app`'s messages accepted in `[from, to)`.
    async fn analytics(
        &self,
        app: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<AnalyticsRow>, StoreError> {
        let app = app.to_string();
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT channel, status, created_ms, sent_ms, delivered_ms FROM messages \
                 WHERE app = ?1 AND created_ms >= ?2 AND created_ms < ?3",
            )?;
            let mut groups: Groups = Default::default();
            let rows = st.query_map(params![app, from_ms as i64, to_ms as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?;
            for row in rows {
                let (ch, status, created, sent, delivered) = row?;
                let g = groups.entry((ch, status)).or_default();
                g.0 += 1;
                if let Some(s) = sent {
                    g.1.push((s - created) as f64);
                    if let Some(d) = delivered {
                        g.2.push((d - s) as f64);
                    }
                }
            }
            Ok(groups
                .into_iter()
                .map(|((c, s), (n, a, b))| (c, s, n, a, b))
                .collect())
        })
        .await
    }

    /// The app with this key.
    async fn app(&self, key: &str) -> Result<Option<App>, StoreError> {
        let key = key.to_string();
        self.read(move |c| app_by_key(c, &key)).await
    }

    /// The earliest time a queued message is due (Unix ms).
    async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            c.query_row(NEXT_DUE, [], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.map(|v| v.max(0) as u64))
        })
        .await
    }

    /// Is `url` a disabled webhook endpoint?
    async fn disabled(&self, url: &str) -> Result<bool, StoreError> {
        Ok(self.disabled.read().contains(url))
    }

    /// Enable a disabled webhook endpoint again; whether it was disabled.
    async fn enable(&self, url: &str) -> Result<bool, StoreError> {
        let u = url.to_string();
        let was = self.call(|reply| Op::Enable { url: u, reply }).await?;
        // (after the commit)
        self.disabled.write().remove(url);
        Ok(was)
    }

    /// Remove up to `limit` finished messages accepted before `before_ms` and idempotency
    /// keys older than `idempotency_before_ms` (one writer batch; see [`purge`]).
    async fn purge(
        &self,
        before_ms: u64,
        idempotency_before_ms: u64,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        self.call(|reply| Op::Purge {
            before_ms,
            idempotency_before_ms,
            limit,
            reply,
        })
        .await
    }

    /// (The purge loop is told by the service.)
    fn set_retention(&self, _retention: Option<std::time::Duration>) {}

    /// (Nonces are kept by the node's own cache.)
    async fn nonce_seen(
        &self,
        _app: &str,
        _nonce: &str,
        _ttl_s: u64,
    ) -> Option<Result<bool, StoreError>> {
        None
    }

    /// Within this process.
    fn events(&self) -> (Events, EventTasks) {
        (Events::local(), Default::default())
    }
}

fn app_by_key(c: &Connection, key: &str) -> rusqlite::Result<Option<App>> {
    c.query_row(
        "SELECT key, name, secrets, webhook_secret, channels, created_ms FROM apps WHERE key = ?1",
        params![key],
        |r| {
            let secrets: String = r.get(2)?;
            let channels: Option<String> = r.get(4)?;
            Ok(App {
                key: r.get(0)?,
                name: r.get(1)?,
                secrets: serde_json::from_str(&secrets).unwrap_or_default(),
                webhook_secret: r.get(3)?,
                channels: channels.and_then(|c| serde_json::from_str(&c).ok()),
                created_ms: r.get::<_, i64>(5)? as u64,
            })
        },
    )
    .optional()
}

/// Apps, managed directly in the database file (also while a server runs: WAL).
pub mod apps {
    use super::*;

    /// Make an app.
    pub fn create(
        db: &Path,
        name: &str,
        channels: Option<Vec<String>>,
    ) -> Result<NewApp, StoreError> {
        let c = open(db).map_err(sql_err)?;
        c.execute_batch(SCHEMA).map_err(sql_err)?;
        let NewApp {
            key,
            secret,
            webhook_secret,
        } = new_app_secrets();
        c.execute(
            "INSERT INTO apps (key, name, secrets, webhook_secret, channels, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                key,
                name,
                serde_json::to_string(&[&secret]).unwrap_or_default(),
                webhook_secret,
                channels.map(|c| serde_json::to_string(&c).unwrap_or_default()),
                now_ms() as i64
            ],
        )
        .map_err(sql_err)?;
        Ok(NewApp {
            key,
            secret,
            webhook_secret,
        })
    }

    /// Every app.
    pub fn list(db: &Path) -> Result<Vec<App>, StoreError> {
        let c = open(db).map_err(sql_err)?;
        c.execute_batch(SCHEMA).map_err(sql_err)?;
        let mut st = c
            .prepare("SELECT key FROM apps ORDER BY created_ms")
            .map_err(sql_err)?;
        let keys: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(sql_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_err)?;
        keys.iter()
            .filter_map(|k| app_by_key(&c, k).transpose())
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_err)
    }

    /// A new secret for the app; the newest two stay active (the older one is dropped).
    pub fn rotate(db: &Path, key: &str) -> Result<String, StoreError> {
        let c = open(db).map_err(sql_err)?;
        let app = app_by_key(&c, key)
            .map_err(sql_err)?
            .ok_or(StoreError::NotFound)?;
        let secret = format!("sk_{}", random_token(32));
        let mut secrets = vec![secret.clone()];
        secrets.extend(app.secrets.into_iter().take(1));
        c.execute(
            "UPDATE apps SET secrets = ?1 WHERE key = ?2",
            params![serde_json::to_string(&secrets).unwrap_or_default(), key],
        )
        .map_err(sql_err)?;
        Ok(secret)
    }
}

const MESSAGE_COLUMNS: &str = "id, app, channel, recipient, subject, body, priority, status, attempts, next_ms, expires_ms, created_ms, sent_ms, delivered_ms, metadata";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let metadata: Option<String> = r.get(14)?;
    Ok(Message {
        id: r.get(0)?,
        app: r.get(1)?,
        channel: r.get(2)?,
        to: r.get(3)?,
        subject: r.get(4)?,
        body: r.get(5)?,
        priority: Priority::from_i64(r.get(6)?).as_str().to_string(),
        status: r.get(7)?,
        attempts: r.get(8)?,
        next_ms: r.get::<_, i64>(9)? as u64,
        expires_ms: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        created_ms: r.get::<_, i64>(11)? as u64,
        sent_ms: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        delivered_ms: r.get::<_, Option<i64>>(13)?.map(|v| v as u64),
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
    })
}

/// Run a statement through the connection's statement cache (parsed once, not per row).
fn exec(c: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

fn query_row<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(params, f)
}

fn history(tx: &Connection, id: &str, status: Status, at_ms: u64) -> rusqlite::Result<()> {
    exec(
        tx,
        "INSERT INTO history (message, status, at_ms) VALUES (?1, ?2, ?3)",
        params![id, status.as_str(), at_ms as i64],
    )
    .map(|_| ())
}

/// One purge round: up to `limit` finished messages accepted before `before_ms` (their
/// ids begin with their acceptance time, so the primary key finds them in order) with
/// their history and attempts, and up to `limit` idempotency keys older than
/// `idempotency_before_ms` (oldest first, in insertion order).
fn purge(
    tx: &Connection,
    before_ms: u64,
    idempotency_before_ms: u64,
    limit: usize,
) -> rusqlite::Result<Purged> {
    let bound = crate::model::message_id_bound(before_ms);
    let ids: Vec<String> = {
        let mut st = tx.prepare_cached(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE id < ?1 \
             AND status NOT IN ('queued', 'sending') ORDER BY id LIMIT ?2) RETURNING id",
        )?;
        st.query_map(params![bound, limit as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    for id in &ids {
        exec(tx, "DELETE FROM history WHERE message = ?1", params![id])?;
        exec(tx, "DELETE FROM attempts WHERE message = ?1", params![id])?;
    }
    let old: Vec<i64> = {
        let mut st =
            tx.prepare_cached("SELECT rowid, created_ms FROM idempotency ORDER BY rowid LIMIT ?1")?;
        let rows = st.query_map(params![limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut old = Vec::new();
        for row in rows {
            let (rowid, created) = row?;
            if created >= idempotency_before_ms as i64 {
                break;
            }
            old.push(rowid);
        }
        old
    };
    for rowid in &old {
        exec(
            tx,
            "DELETE FROM idempotency WHERE rowid = ?1",
            params![rowid],
        )?;
    }
    Ok(Purged {
        messages: ids.len(),
        idempotency_keys: old.len(),
    })
}

/// Sends an operation's answer once its batch's commit is known (the commit's error, if
/// it failed, replaces the answer).
type Answer = Box<dyn FnOnce(Option<&StoreError>)>;

/// Per (channel, status): count, accepted→sent ms, sent→delivered ms.
type Groups = std::collections::BTreeMap<(String, String), (u64, Vec<f64>, Vec<f64>)>;

/// The writer thread: batches of operations, one transaction each.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < 1024 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut replies: Vec<Answer> = Vec::with_capacity(ops.len());
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let e = sql_err(e);
                for op in ops {
                    fail(op, &e);
                }
                continue;
            }
        };
        for op in ops {
            replies.push(apply(&tx, op));
        }
        let committed = tx.commit().map_err(sql_err);
        for r in replies {
            r(committed.as_ref().err());
        }
    }
}

fn fail(op: Op, e: &StoreError) {
    match op {
        Op::Accept { reply, .. } => drop(reply.send(Err(e.clone()))),
        Op::Claim { reply, .. } => drop(reply.send(Err(e.clone()))),
        Op::Record { reply, .. } | Op::Replay { reply, .. } | Op::Cancel { reply, .. } => {
            drop(reply.send(Err(e.clone())))
        }
        Op::Callback { reply, .. } => drop(reply.send(Err(e.clone()))),
        Op::Purge { reply, .. } => drop(reply.send(Err(e.clone()))),
        Op::Enable { reply, .. } => drop(reply.send(Err(e.clone()))),
    }
}

/// Apply one operation inside the batch's transaction; the returned closure answers
/// once the commit is known (an answer before the commit would promise too much).
fn apply(tx: &rusqlite::Transaction<'_>, op: Op) -> Answer {
    match op {
        Op::Accept {
            app,
            msg,
            idempotency,
            now_ms,
            reply,
        } => answer(reply, accept(tx, &app, &msg, idempotency.as_ref(), now_ms)),
        Op::Claim {
            now_ms,
            limit,
            reply,
        } => answer(reply, claim(tx, now_ms, limit)),
        Op::Record {
            id,
            outcome,
            now_ms,
            reply,
        } => answer(reply, record(tx, &id, &outcome, now_ms)),
        Op::Replay {
            app,
            id,
            now_ms,
            reply,
        } => {
            let r = change_status(
                tx,
                (&app, &id, now_ms),
                &["dead", "failed", "expired"],
                Status::Queued,
                "UPDATE messages SET status = 'queued', attempts = 0, next_ms = ?2, expires_ms = NULL, updated_ms = ?2 WHERE id = ?1",
                "replayed (only dead, failed or expired ones)",
            );
            answer(reply, r)
        }
        Op::Enable { url, reply } => {
            let r = tx
                .execute("DELETE FROM disabled_endpoints WHERE url = ?1", [&url])
                .map(|n| n > 0)
                .map_err(sql_err);
            answer(reply, r)
        }
        Op::Purge {
            before_ms,
            idempotency_before_ms,
            limit,
            reply,
        } => {
            let r = purge(tx, before_ms, idempotency_before_ms, limit).map_err(sql_err);
            answer(reply, r)
        }
        Op::Cancel {
            app,
            id,
            now_ms,
            reply,
        } => {
            let r = change_status(
                tx,
                (&app, &id, now_ms),
                &["queued"],
                Status::Cancelled,
                "UPDATE messages SET status = 'cancelled', updated_ms = ?2 WHERE id = ?1",
                "cancelled (only queued ones)",
            );
            answer(reply, r)
        }
        Op::Callback {
            id,
            channel,
            status,
            now_ms,
            reply,
        } => answer(reply, callback(tx, &id, &channel, status, now_ms)),
    }
}

/// The answer to an operation whose result is `r`, sent once the commit is known (the
/// commit's error, if it failed, replaces `r`).
fn answer<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, StoreError>>,
    r: Result<T, StoreError>,
) -> Answer {
    Box::new(move |commit_error| {
        let _ = reply.send(match commit_error {
            Some(e) => Err(e.clone()),
            None => r,
        });
    })
}

/// Accept a message (in a savepoint: a failed accept leaves nothing behind in the
/// batch).
fn accept(
    tx: &Connection,
    app: &str,
    msg: &NewMessage,
    idempotency: Option<&(String, String)>,
    now_ms: u64,
) -> Result<Accepted, StoreError> {
    let _ = tx.execute_batch("SAVEPOINT accept");
    let r = insert_message(tx, app, msg, idempotency, now_ms);
    if r.is_err() {
        let _ = tx.execute_batch("ROLLBACK TO accept");
    }
    let _ = tx.execute_batch("RELEASE accept");
    r
}

/// Store a new message with its first status change and its idempotency key, unless the
/// key was seen within 24 h: then the first message's id (same request) or a mismatch.
fn insert_message(
    tx: &Connection,
    app: &str,
    msg: &NewMessage,
    idempotency: Option<&(String, String)>,
    now_ms: u64,
) -> Result<Accepted, StoreError> {
    if let Some((key, hash)) = idempotency {
        let seen: Option<(String, String)> = query_row(
            tx,
            "SELECT request_hash, message FROM idempotency WHERE app = ?1 AND key = ?2 AND created_ms > ?3",
            params![app, key, now_ms as i64 - 86_400_000],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql_err)?;
        if let Some((h, id)) = seen {
            return if &h == hash {
                Ok(Accepted::Again(id))
            } else {
                Err(StoreError::IdempotencyMismatch)
            };
        }
    }
    let id = message_id(now_ms);
    exec(tx,
        "INSERT INTO messages (id, app, channel, recipient, subject, body, priority, status, attempts, next_ms, expires_ms, created_ms, updated_ms, metadata) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', 0, ?8, ?9, ?10, ?10, ?11)",
        params![
            id,
            app,
            msg.channel.as_str(),
            msg.to,
            msg.subject,
            msg.body,
            msg.priority as i64,
            msg.send_at_ms as i64,
            msg.expires_ms.map(|e| e as i64),
            now_ms as i64,
            msg.metadata.as_ref().map(|m| m.to_string()),
        ],
    )
    .map_err(sql_err)?;
    history(tx, &id, Status::Queued, now_ms).map_err(sql_err)?;
    if let Some((key, hash)) = idempotency {
        exec(tx,
            "INSERT OR REPLACE INTO idempotency (app, key, request_hash, message, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![app, key, hash, id, now_ms as i64],
        )
        .map_err(sql_err)?;
    }
    Ok(Accepted::New(id))
}

/// Expire the queued messages past their ttl, then claim up to `limit` due ones: shares
/// per priority (6:3:1), then whatever is left in priority order.
fn claim(tx: &Connection, now_ms: u64, limit: usize) -> Result<ClaimAnswer, StoreError> {
    let now = now_ms as i64;
    // past their ttl: expired, never sent
    let mut st = tx.prepare_cached(EXPIRE).map_err(sql_err)?;
    let expired: Vec<String> = st
        .query_map(params![now], |r| r.get(0))
        .map_err(sql_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql_err)?;
    for id in expired {
        history(tx, &id, Status::Expired, now_ms).map_err(sql_err)?;
    }
    let shares = [limit * 6 / 10, limit * 3 / 10, (limit / 10).max(1)];
    let mut out = Vec::new();
    for (p, n) in shares.iter().enumerate() {
        claim_priority(tx, now_ms, p as i64, *n, &mut out)?;
    }
    // what the shares left, in priority order
    for p in 0..3 {
        let left = limit.saturating_sub(out.len());
        claim_priority(tx, now_ms, p, left, &mut out)?;
    }
    let next: Option<i64> = query_row(tx, NEXT_DUE, [], |r| r.get(0)).map_err(sql_err)?;
    Ok((out, next.map(|n| n.max(0) as u64)))
}

/// Claim up to `n` due messages of priority `prio` (marked sending), with their apps'
/// webhook secrets, into `out`.
fn claim_priority(
    tx: &Connection,
    now_ms: u64,
    prio: i64,
    n: usize,
    out: &mut Vec<Claimed>,
) -> Result<(), StoreError> {
    if n == 0 {
        return Ok(());
    }
    let mut st = tx
        .prepare_cached(&format!("{CLAIM}{MESSAGE_COLUMNS}"))
        .map_err(sql_err)?;
    let rows: Vec<Message> = st
        .query_map(params![now_ms as i64, prio, n as i64], message_row)
        .map_err(sql_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql_err)?;
    for m in rows {
        history(tx, &m.id, Status::Sending, now_ms).map_err(sql_err)?;
        let webhook_secret: String = query_row(
            tx,
            "SELECT webhook_secret FROM apps WHERE key = ?1",
            params![m.app],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)?
        .unwrap_or_default();
        out.push(Claimed {
            attempt: m.attempts,
            message: m,
            webhook_secret,
        });
    }
    Ok(())
}

/// Record an attempt, the message's next status (and when it was sent and delivered),
/// and a webhook endpoint to disable.
fn record(tx: &Connection, id: &str, outcome: &Outcome, now_ms: u64) -> Result<(), StoreError> {
    let a = &outcome.attempt;
    exec(tx,
        "INSERT OR REPLACE INTO attempts (message, n, at_ms, provider, result, http_status, latency_ms, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![id, a.n, a.at_ms as i64, a.provider, a.result, a.http_status.map(i64::from), a.latency_ms, a.error],
    )
    .map_err(sql_err)?;
    let delivered = outcome.status == Status::Delivered;
    let sent = delivered || outcome.status == Status::Sent;
    exec(
        tx,
        "UPDATE messages SET status = ?2, next_ms = COALESCE(?3, next_ms), updated_ms = ?4, \
         sent_ms = CASE WHEN ?5 THEN COALESCE(sent_ms, ?6) ELSE sent_ms END, \
         delivered_ms = CASE WHEN ?7 THEN ?4 ELSE delivered_ms END WHERE id = ?1",
        params![
            id,
            outcome.status.as_str(),
            outcome.next_ms.map(|n| n as i64),
            now_ms as i64,
            sent,
            a.at_ms as i64,
            delivered
        ],
    )
    .map_err(sql_err)?;
    if delivered {
        history(tx, id, Status::Sent, a.at_ms).map_err(sql_err)?;
    }
    history(tx, id, outcome.status, now_ms).map_err(sql_err)?;
    if let Some(url) = &outcome.disable_endpoint {
        exec(
            tx,
            "INSERT OR REPLACE INTO disabled_endpoints (url, at_ms) VALUES (?1, ?2)",
            params![url, now_ms as i64],
        )
        .map_err(sql_err)?;
    }
    Ok(())
}

/// A provider's delivery report on a message of `channel` that was sent (or is being
/// sent, or was delivered already): its new status. Answers the message's app.
fn callback(
    tx: &Connection,
    id: &str,
    channel: &str,
    status: Status,
    now_ms: u64,
) -> Result<String, StoreError> {
    let found: Option<(String, String, String)> = query_row(
        tx,
        "SELECT app, status, channel FROM messages WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
    .map_err(sql_err)?;
    let Some((app, current, ch)) = found else {
        return Err(StoreError::NotFound);
    };
    if ch != channel {
        return Err(StoreError::NotFound);
    }
    if !matches!(current.as_str(), "sent" | "sending" | "delivered") {
        return Err(StoreError::Conflict(format!(
            "a {current} message takes no delivery report"
        )));
    }
    exec(
        tx,
        "UPDATE messages SET status = ?2, updated_ms = ?3, \
         delivered_ms = CASE WHEN ?4 THEN ?3 ELSE delivered_ms END WHERE id = ?1",
        params![
            id,
            status.as_str(),
            now_ms as i64,
            status == Status::Delivered
        ],
    )
    .map_err(sql_err)?;
    history(tx, id, status, now_ms).map_err(sql_err)?;
    Ok(app)
}

/// Move an app's message from one of the `from` statuses to `to` with `update` (`?1` the
/// id, `?2` the time); `NotFound` or a `Conflict` saying what `cannot_be` otherwise.
fn change_status(
    tx: &Connection,
    (app, id, now_ms): (&str, &str, u64),
    from: &[&str],
    to: Status,
    update: &str,
    cannot_be: &str,
) -> Result<(), StoreError> {
    let status: Option<String> = query_row(
        tx,
        "SELECT status FROM messages WHERE id = ?1 AND app = ?2",
        params![id, app],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql_err)?;
    match status.as_deref() {
        None => Err(StoreError::NotFound),
        Some(s) if from.contains(&s) => {
            exec(tx, update, params![id, now_ms as i64]).map_err(sql_err)?;
            history(tx, id, to, now_ms).map_err(sql_err)?;
            Ok(())
        }
        Some(s) => Err(StoreError::Conflict(format!(
            "a {s} message cannot be {cannot_be}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Channel;

    /// The queries a worker round runs read the due messages through an index, never
    /// every queued row: a backlog of messages scheduled for later (or of one priority)
    /// must not make each round cost the size of the queue.
    #[test]
    fn worker_queries_use_their_indexes() {
        let c = open(Path::new(":memory:")).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let plan = |sql: &str, n: usize| -> String {
            let args: Vec<i64> = (1..=n as i64).collect();
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join(" | ")
        };
        let claim = plan(&format!("{CLAIM}{MESSAGE_COLUMNS}"), 3);
        assert!(
            claim.contains("messages_due (status=? AND priority=? AND next_ms<?)"),
            "{claim}"
        );
        let due = plan(NEXT_DUE, 0);
        assert_eq!(
            due.matches("COVERING INDEX messages_due (status=? AND priority=?)")
                .count(),
            3,
            "{due}"
        );
        let expire = plan(EXPIRE, 1);
        assert!(expire.contains("INDEX messages_expiry"), "{expire}");
        for p in [claim, due, expire] {
            assert!(!p.contains("SCAN"), "{p}");
        }
    }

    /// A 410 disables its endpoint at once (no reader thread asked) and for good: the
    /// list is the table's, read again when the store opens.
    #[tokio::test]
    async fn finished_messages_past_retention_are_purged_with_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        let s = SqliteStore::open(&path).unwrap();
        let msg = |send_at_ms| NewMessage {
            channel: Channel::Webhook,
            to: "http://127.0.0.1:9/hook".into(),
            subject: None,
            body: "x".into(),
            priority: Priority::Normal,
            send_at_ms,
            expires_ms: None,
            metadata: None,
        };
        let accept = |m, key: Option<&str>, at| {
            let idem = key.map(|k| (k.to_string(), "hash".to_string()));
            let s = &s;
            async move {
                match s.accept("app", m, idem, at).await.unwrap() {
                    Accepted::New(id) => id,
                    Accepted::Again(_) => panic!("not new"),
                }
            }
        };
        let finish = |id: String, status, at: u64| {
            let s = &s;
            async move {
                let outcome = Outcome {
                    attempt: Attempt {
                        n: 1,
                        at_ms: at,
                        provider: "webhook".into(),
                        result: "ok".into(),
                        http_status: Some(200),
                        latency_ms: 1.0,
                        error: None,
                    },
                    status,
                    next_ms: None,
                    disable_endpoint: None,
                };
                s.record(&id, outcome, at).await.unwrap();
            }
        };
        // accepted long ago: two finished, one still scheduled; and one recent
        let old1 = accept(msg(0), Some("k1"), 1_000).await;
        let old2 = accept(msg(0), None, 1_001).await;
        let old3 = accept(msg(1_000_000_000_000), None, 1_002).await;
        let new1 = accept(msg(0), Some("k2"), 100_000).await;
        finish(old1.clone(), Status::Delivered, 2_000).await;
        finish(old2.clone(), Status::Dead, 2_000).await;
        finish(new1.clone(), Status::Delivered, 100_001).await;
        // a batch at a time
        let p = s.purge(50_000, 50_000, 1).await.unwrap();
        assert_eq!(
            p,
            Purged {
                messages: 1,
                idempotency_keys: 1
            }
        );
        let p = s.purge(50_000, 50_000, 100).await.unwrap();
        assert_eq!(
            p,
            Purged {
                messages: 1,
                idempotency_keys: 0
            }
        );
        assert_eq!(
            s.purge(50_000, 50_000, 100).await.unwrap(),
            Purged::default()
        );
        let c = Connection::open(&path).unwrap();
        let count =
            |sql: &str, id: &str| -> i64 { c.query_row(sql, params![id], |r| r.get(0)).unwrap() };
        for gone in [&old1, &old2] {
            assert_eq!(
                count("SELECT COUNT(*) FROM messages WHERE id = ?1", gone),
                0
            );
            assert_eq!(
                count("SELECT COUNT(*) FROM history WHERE message = ?1", gone),
                0
            );
            assert_eq!(
                count("SELECT COUNT(*) FROM attempts WHERE message = ?1", gone),
                0
            );
        }
        // the scheduled one stays however old; the recent one and its key stay
        for kept in [&old3, &new1] {
            assert_eq!(
                count("SELECT COUNT(*) FROM messages WHERE id = ?1", kept),
                1
            );
            assert!(count("SELECT COUNT(*) FROM history WHERE message = ?1", kept) >= 1);
        }
        assert_eq!(
            count("SELECT COUNT(*) FROM idempotency WHERE key = ?1", "k1"),
            0
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM idempotency WHERE key = ?1", "k2"),
            1
        );
    }

    #[tokio::test]
    async fn a_disabled_endpoint_stays_disabled_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        let gone = "http://127.0.0.1:9/gone".to_string();
        {
            let s = SqliteStore::open(&path).unwrap();
            let msg = NewMessage {
                channel: Channel::Webhook,
                to: gone.clone(),
                subject: None,
                body: "x".into(),
                priority: Priority::Normal,
                send_at_ms: 0,
                expires_ms: None,
                metadata: None,
            };
            let Accepted::New(id) = s.accept("app", msg, None, 1).await.unwrap() else {
                panic!("not stored")
            };
            assert!(!s.disabled(&gone).await.unwrap());
            let outcome = Outcome {
                attempt: Attempt {
                    n: 1,
                    at_ms: 2,
                    provider: "webhook".into(),
                    result: "gone".into(),
                    http_status: Some(410),
                    latency_ms: 1.0,
                    error: None,
                },
                status: Status::Failed,
                next_ms: None,
                disable_endpoint: Some(gone.clone()),
            };
            s.record(&id, outcome, 2).await.unwrap();
            assert!(s.disabled(&gone).await.unwrap());
            assert!(!s.disabled("http://127.0.0.1:9/other").await.unwrap());
        }
        let s = SqliteStore::open(&path).unwrap();
        assert!(
            s.disabled(&gone).await.unwrap(),
            "forgotten after a restart"
        );
    }
}
