//! Several edges, one set of certificates: with `redis = "redis://…"` in `[acme.NAME]`,
//! certificates live in Redis as well as on each node's disk, a lock per name lets one
//! node order while the others wait for its result, and HTTP-01 tokens are published in
//! Redis so that whichever node the CA's request reaches can answer it (Caddy's cluster
//! storage, on an engine everybody runs).

use std::time::Duration;

/// One section's view of the shared store.
#[derive(Debug)]
pub struct Shared {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    prefix: String,
    /// Who holds locks taken here (one per process and section).
    holder: String,
}

/// Where HTTP-01 tokens are, for every section and node.
const TOKENS: &str = "hopline:acme:http01:";

impl Shared {
    /// A store for section `section` at `url`.
    pub fn new(url: &str, section: &str) -> Result<Shared, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis {url}: {e}"))?;
        Ok(Shared {
            client,
            conn: tokio::sync::Mutex::new(None),
            prefix: format!("hopline:acme:{section}:"),
            holder: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
        })
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let mut c = self.conn.lock().await;
        if let Some(c) = c.as_ref() {
            return Ok(c.clone());
        }
        let made = tokio::time::timeout(
            Duration::from_secs(3),
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| "redis: no connection within 3 s".to_string())?
        .map_err(|e| format!("redis: {e}"))?;
        *c = Some(made.clone());
        Ok(made)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut c = self.conn().await?;
        match cmd.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                // a broken connection is made again next time
                *self.conn.lock().await = None;
                Err(format!("redis: {e}"))
            }
        }
    }

    fn key(&self, what: &str, names: &[String]) -> String {
        format!("{}{what}:{}", self.prefix, names.join(","))
    }

    /// The certificate chain and key stored for `names`.
    pub async fn get_cert(&self, names: &[String]) -> Result<Option<(String, String)>, String> {
        let v: Vec<Option<String>> = self
            .run(
                redis::cmd("MGET")
                    .arg(self.key("cert", names))
                    .arg(self.key("key", names)),
            )
            .await?;
        Ok(match v.as_slice() {
            [Some(c), Some(k)] => Some((c.clone(), k.clone())),
            _ => None,
        })
    }

    /// Store a new certificate for `names`.
    pub async fn put_cert(&self, names: &[String], chain: &str, key: &str) -> Result<(), String> {
        self.run::<()>(
            redis::cmd("MSET")
                .arg(self.key("cert", names))
                .arg(chain)
                .arg(self.key("key", names))
                .arg(key),
        )
        .await
    }

    /// Take the lock of `names` for `ttl`: true when this node may order.
    pub async fn lock(&self, names: &[String], ttl: Duration) -> Result<bool, String> {
        let r: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.key("lock", names))
                    .arg(&self.holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        Ok(r.is_some())
    }

    /// Give the lock of `names` back, if this node still holds it.
    pub async fn unlock(&self, names: &[String]) {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        if let Ok(mut c) = self.conn().await {
            let _: Result<i64, _> = script
                .key(self.key("lock", names))
                .arg(&self.holder)
                .invoke_async(&mut c)
                .await;
        }
    }

    /// Publish an HTTP-01 answer for every node (expires by itself after `ttl`).
    pub async fn put_token(
        &self,
        token: &str,
        key_authorization: &str,
        ttl: Duration,
    ) -> Result<(), String> {
        self.run::<()>(
            redis::cmd("SET")
                .arg(format!("{TOKENS}{token}"))
                .arg(key_authorization)
                .arg("PX")
                .arg(ttl.as_millis() as u64),
        )
        .await
    }

    /// Withdraw an HTTP-01 answer.
    pub async fn del_token(&self, token: &str) {
        let _ = self
            .run::<i64>(redis::cmd("DEL").arg(format!("{TOKENS}{token}")))
            .await;
    }

    /// The HTTP-01 answer another node published.
    pub async fn get_token(&self, token: &str) -> Option<String> {
        if token.is_empty()
            || token.len() > 256
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        self.run::<Option<String>>(redis::cmd("GET").arg(format!("{TOKENS}{token}")))
            .await
            .ok()
            .flatten()
    }
}
