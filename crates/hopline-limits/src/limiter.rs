//! Rate limits: the GCRA (generic cell rate algorithm — a token bucket computed from one
//! timestamp per key) in front of what the edge protects. Over the limit → 429 with
//! `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy` headers.
//!
//! Keys live in a bounded cache that forgets a key once its bucket is full again, so a
//! flood of distinct keys cannot grow memory without bound. With `store = "redis://…"`
//! the same arithmetic runs as one atomic Lua script in Redis, so every hopline process
//! using that Redis enforces one combined limit; when Redis is unreachable the limiter
//! falls back to local limits (and says so in the log) instead of failing requests.
//!
//! The maths (no I/O, see [`Gcra`]): with emission interval `T = period / rate` and burst
//! `b`, a key's state is its theoretical arrival time `TAT`. A request at `t` is allowed
//! iff `max(TAT, t) − t ≤ (b − 1)·T`; then `TAT = max(TAT, t) + T`. Exactly `b` requests
//! pass at once from a full bucket, then one every `T`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::LimitConfig;
use crate::config::Rate;
use crate::gcra::Decision;
use crate::gcra::Gcra;
use http::{HeaderMap, HeaderValue};

/// The Redis script: the same arithmetic, atomically, with the key expiring when full.
/// Times are microseconds since the Unix epoch (exact in Lua's doubles).
const SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, string.format('%.0f', tat)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, string.format('%.0f', new_tat)}
"#;

/// A named limit, ready to decide.
pub struct Limiter {
    /// Name (for headers and logs).
    pub name: String,
    rate: Rate,
    gcra: Gcra,
    key: KeyBy,
    local: moka::sync::Cache<String, Arc<parking_lot::Mutex<u64>>>,
    redis: Option<RedisStore>,
    epoch: tokio::time::Instant,
    /// Requests this limit turned away (429), for status and the dashboard.
    pub rejected: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("name", &self.name).finish()
    }
}

enum KeyBy {
    ClientIp,
    Header(http::HeaderName),
}

struct RedisStore {
    url: String,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    script: redis::Script,
    degraded: AtomicBool,
    retry_at: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl Limiter {
    /// Build from config (validated: rate and key parse).
    pub fn new(name: &str, cfg: &LimitConfig) -> Result<Limiter, String> {
        let rate = Rate::parse(&cfg.rate)?;
        let burst = cfg.burst.unwrap_or(rate.count).max(1);
        let gcra = Gcra::new(rate, burst);
        let key = if cfg.key == "client_ip" {
            KeyBy::ClientIp
        } else if let Some(h) = cfg.key.strip_prefix("header:") {
            KeyBy::Header(
                http::HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| format!("bad header name in key {:?}", cfg.key))?,
            )
        } else {
            return Err(format!(
                "unknown limit key {:?}: expected \"client_ip\" or \"header:NAME\"",
                cfg.key
            ));
        };
        // A key is forgotten once its bucket would be full again.
        let idle =
            Duration::from_nanos(gcra.tolerance + gcra.interval).max(Duration::from_millis(10));
        let local = moka::sync::Cache::builder()
            .max_capacity(cfg.max_keys.max(1))
            .time_to_idle(idle)
            .build();
        let redis = match &cfg.store {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| format!("bad store URL {url:?}: {e}"))?;
                Some(RedisStore {
                    url: url.clone(),
                    client,
                    conn: tokio::sync::Mutex::new(None),
                    script: redis::Script::new(SCRIPT),
                    degraded: AtomicBool::new(false),
                    retry_at: parking_lot::Mutex::new(None),
                })
            }
        };
        Ok(Limiter {
            name: name.to_string(),
            rate,
            gcra,
            key,
            local,
            redis,
            epoch: tokio::time::Instant::now(),
            rejected: Default::default(),
        })
    }

    /// The decision for one request: its client's key, then [`Limiter::check`]; `None`
    /// when the keying header is absent (not limited).
    pub async fn check_request(&self, peer: IpAddr, headers: &HeaderMap) -> Option<Decision> {
        let key = self.key_of(peer, headers)?;
        Some(Box::pin(self.check(&key)).await)
    }

    /// The client's key for this limit; `None` when the keying header is absent (not limited).
    pub fn key_of(&self, peer: IpAddr, headers: &HeaderMap) -> Option<String> {
        match &self.key {
            KeyBy::ClientIp => Some(peer.to_string()),
            KeyBy::Header(h) => headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.to_string()),
        }
    }

    /// Decide one request for `key`.
    pub async fn check(&self, key: &str) -> Decision {
        if let Some(r) = &self.redis
            && let Some(d) = Box::pin(self.check_redis(r, key)).await
        {
            return d;
        }
        let now = self.epoch.elapsed().as_nanos() as u64 + 1;
        let cell = self
            .local
            .get_with_by_ref(key, || Arc::new(parking_lot::Mutex::new(0)));
        let mut tat = cell.lock();
        let d = self.gcra.decide(*tat, now);
        *tat = d.tat;
        d
    }

    async fn check_redis(&self, r: &RedisStore, key: &str) -> Option<Decision> {
        if let Some(at) = *r.retry_at.lock()
            && tokio::time::Instant::now() < at
        {
            return None;
        }
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_micros() as u64;
        let (interval_us, tolerance_us) = (
            self.gcra.interval.div_ceil(1000),
            self.gcra.tolerance / 1000,
        );
        let attempt = async {
            let mut guard = r.conn.lock().await;
            if guard.is_none() {
                *guard = Some(r.client.get_multiplexed_async_connection().await?);
            }
            let conn = guard.as_mut().expect("just set");
            let (ok, tat): (i64, String) = r
                .script
                .key(format!("hopline:limit:{}:{key}", self.name))
                .arg(now_us)
                .arg(interval_us)
                .arg(tolerance_us)
                .invoke_async(conn)
                .await?;
            Ok::<_, redis::RedisError>((ok, tat))
        };
        match tokio::time::timeout(Duration::from_millis(250), attempt).await {
            Ok(Ok((ok, tat))) => {
                if r.degraded.swap(false, Ordering::Relaxed) {
                    tracing::warn!(target: "hopline::limit", "limit {}: {} is reachable again; shared limits restored", self.name, r.url);
                }
                let now = now_us * 1000;
                let tat: u64 = tat.parse::<u64>().unwrap_or(now_us) * 1000;
                let d = if ok == 1 {
                    // recompute the view from the stored TAT
                    let used = tat.saturating_sub(now);
                    Decision {
                        allowed: true,
                        remaining: ((self.gcra.tolerance + self.gcra.interval).saturating_sub(used)
                            / self.gcra.interval) as u32,
                        reset: Duration::from_nanos(used),
                        retry_after: Duration::ZERO,
                        tat,
                    }
                } else {
                    Decision {
                        allowed: false,
                        remaining: 0,
                        reset: Duration::from_nanos(tat.saturating_sub(now)),
                        retry_after: Duration::from_nanos(
                            tat.saturating_sub(now).saturating_sub(self.gcra.tolerance),
                        ),
                        tat,
                    }
                };
                Some(d)
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                *r.conn.lock().await = None;
                *r.retry_at.lock() = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                if !r.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "hopline::limit",
                        "limit {}: store {} unreachable ({why}); falling back to local limits",
                        self.name,
                        r.url
                    );
                }
                None
            }
        }
    }

    /// Set `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    pub fn headers(&self, d: &Decision, h: &mut HeaderMap) {
        let w = self.rate.period.as_secs().max(1);
        if let Ok(v) = HeaderValue::from_str(&format!(
            "\"{}\";q={};w={w};burst={}",
            self.name, self.rate.count, self.gcra.burst
        )) {
            h.insert("ratelimit-policy", v);
        }
        let t = d.reset.as_secs_f64().ceil() as u64;
        if let Ok(v) = HeaderValue::from_str(&format!("\"{}\";r={};t={t}", self.name, d.remaining))
        {
            h.insert("ratelimit", v);
        }
        if !d.allowed {
            let secs = d.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }

    /// Keys remembered locally right now.
    pub fn local_keys(&self) -> u64 {
        self.local.run_pending_tasks();
        self.local.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitConfig;
    use crate::config::Rate;
    use crate::gcra::Gcra;

    const MS: u64 = 1_000_000;

    #[test]
    fn rates_parse() {
        assert_eq!(
            Rate::parse("100/s").unwrap(),
            Rate {
                count: 100,
                period: Duration::from_secs(1)
            }
        );
        assert_eq!(Rate::parse("5/m").unwrap().period, Duration::from_secs(60));
        assert_eq!(
            Rate::parse("10/500ms").unwrap().period,
            Duration::from_millis(500)
        );
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("100").is_err());
        assert!(Rate::parse("100/fortnight").is_err());
    }

    #[test]
    fn exact_burst_then_one_per_interval() {
        let g = Gcra::new(Rate::parse("10/s").unwrap(), 5); // T = 100 ms
        let mut tat = 0;
        let now = 1_000 * MS;
        for i in 0..5 {
            let d = g.decide(tat, now);
            assert!(d.allowed, "request {i} of the burst refused");
            assert_eq!(d.remaining, 4 - i);
            tat = d.tat;
        }
        let d = g.decide(tat, now);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));
        // honest Retry-After: 1 ns early is still refused, on time is allowed
        assert!(!g.decide(tat, now + 100 * MS - 1).allowed);
        let d = g.decide(tat, now + 100 * MS);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        // after a long pause the bucket is full again, never more
        let d = g.decide(d.tat, now + 10_000 * MS);
        assert!(d.allowed);
        assert_eq!(d.remaining, 4);
    }

    #[test]
    fn sustained_rate_matches() {
        let g = Gcra::new(Rate::parse("100/s").unwrap(), 1);
        let (mut tat, mut allowed) = (0, 0);
        // 1000 requests spread over one second: exactly 100 pass (one per 10 ms)
        for i in 0..1000u64 {
            let d = g.decide(tat, 1 + i * MS);
            if d.allowed {
                allowed += 1;
                tat = d.tat;
            }
        }
        assert_eq!(allowed, 100);
    }

    #[tokio::test]
    async fn local_limiter_bounds_keys_and_forgets_full_buckets() {
        let l = Limiter::new(
            "api",
            &LimitConfig {
                key: "client_ip".into(),
                rate: "1000/s".into(),
                burst: Some(2),
                store: None,
                max_keys: 100,
            },
        )
        .unwrap();
        for i in 0..5000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let key = l.key_of(ip, &HeaderMap::new()).unwrap();
            assert!(l.check(&key).await.allowed);
        }
        assert!(l.local_keys() <= 100, "{} keys kept", l.local_keys());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(l.local_keys(), 0, "full buckets are not forgotten");
    }

    #[tokio::test]
    async fn header_keys_and_headers() {
        let l = Limiter::new(
            "api",
            &LimitConfig {
                key: "header:X-App-Key".into(),
                rate: "2/s".into(),
                burst: None,
                store: None,
                max_keys: 10,
            },
        )
        .unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(l.key_of("127.0.0.1".parse().unwrap(), &h), None);
        h.insert("x-app-key", HeaderValue::from_static("k1"));
        let key = l.key_of("127.0.0.1".parse().unwrap(), &h).unwrap();
        assert!(l.check(&key).await.allowed);
        assert!(l.check(&key).await.allowed);
        let d = l.check(&key).await;
        assert!(!d.allowed);
        let mut out = HeaderMap::new();
        l.headers(&d, &mut out);
        assert_eq!(out["ratelimit-policy"], "\"api\";q=2;w=1;burst=2");
        assert!(
            out["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with("\"api\";r=0;t=")
        );
        assert_eq!(out["retry-after"], "1");
    }
}
