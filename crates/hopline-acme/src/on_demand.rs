//! On-demand TLS (Caddy's): a handshake for a name without a certificate obtains one while
//! it waits. What Caddy's users learned to ask for is built in: the `ask` URL must allow
//! the name first (`GET ask?domain=NAME` → 2xx), its answers are cached; a name whose
//! certificate is already stored is never asked about; new certificates are rate limited
//! (per minute, default 10) and a name has at most one order in flight; a handshake that
//! cannot get one fails at once with a log line saying why.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::challenges::Http01;
use crate::config::AcmeConfig;
use crate::manager::{Managed, Status};
use hopline_engine::tls::{AlpnChallenges, OnDemandCerts, OnDemandTls};

/// One section's on-demand certificates.
#[derive(Debug)]
pub struct OnDemand {
    section: String,
    config: AcmeConfig,
    storage: PathBuf,
    /// The site's `hosts` patterns, if it has some: other names are refused unasked.
    patterns: Option<Vec<String>>,
    /// What the listeners serve.
    pub certs: Arc<OnDemandCerts>,
    managed: parking_lot::Mutex<HashMap<String, Arc<Managed>>>,
    asks: moka::future::Cache<String, bool>,
    orders: parking_lot::Mutex<VecDeque<tokio::time::Instant>>,
    asked: AtomicU64,
    refused: AtomicU64,
    http01: Arc<Http01>,
    tls_alpn: Arc<AlpnChallenges>,
}

impl OnDemand {
    /// On-demand certificates from `section` for names matching `patterns` (any name:
    /// `None`), kept in `storage`.
    pub fn new(
        section: &str,
        config: AcmeConfig,
        storage: PathBuf,
        patterns: Option<Vec<String>>,
        http01: Arc<Http01>,
        tls_alpn: Arc<AlpnChallenges>,
    ) -> OnDemand {
        let ttl = Duration::from_millis(config.ask_cache_ms.unwrap_or(300_000).max(1));
        OnDemand {
            section: section.to_string(),
            config,
            storage,
            patterns,
            certs: Arc::default(),
            managed: parking_lot::Mutex::new(HashMap::new()),
            asks: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            orders: parking_lot::Mutex::new(VecDeque::new()),
            asked: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            http01,
            tls_alpn,
        }
    }

    /// Whether a reload may keep this one (and its certificates).
    pub fn same_setup(&self, config: &AcmeConfig, patterns: &Option<Vec<String>>) -> bool {
        self.patterns == *patterns
            && self.config.directory.get_ref() == config.directory.get_ref()
            && self.config.ask.as_ref().map(|a| a.get_ref())
                == config.ask.as_ref().map(|a| a.get_ref())
            && self.config.ask_cache_ms == config.ask_cache_ms
            && self.config.on_demand_per_minute == config.on_demand_per_minute
            && self.config.challenge() == config.challenge()
    }

    /// The state of every certificate it holds, and its counters.
    pub fn statuses(&self) -> Vec<Status> {
        self.managed.lock().values().map(|m| m.status()).collect()
    }

    /// `ask` requests made and handshakes refused.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.asked.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    fn allowed_by_patterns(&self, name: &str) -> bool {
        self.patterns.as_ref().is_none_or(|ps| {
            ps.iter().any(|p| match p.strip_prefix("*.") {
                Some(suffix) => name
                    .strip_suffix(suffix)
                    .and_then(|head| head.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.contains('.')),
                None => p == name,
            })
        })
    }

    /// A new order may start now (rate limit over the last minute).
    fn take_order_slot(&self) -> bool {
        let per_minute = self.config.on_demand_per_minute.unwrap_or(10) as usize;
        let now = tokio::time::Instant::now();
        let mut q = self.orders.lock();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= per_minute {
            return false;
        }
        q.push_back(now);
        true
    }

    /// Ask the `ask` URL about `name` (cached).
    async fn ask(&self, name: &str) -> Result<(), String> {
        let Some(url) = self.config.ask.as_ref().map(|a| a.get_ref().clone()) else {
            return Err("on-demand TLS needs an ask URL".to_string());
        };
        // one question per name at a time: handshakes arriving together for a new name
        // wait for the first one's answer (moka runs one init per key); a failure is not
        // remembered (the endpoint may come back)
        let answer = self
            .asks
            .try_get_with(name.to_string(), async {
                self.asked.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout(Duration::from_secs(3), ask_once(&url, name)).await {
                    Ok(Ok(status)) => Ok((200..300).contains(&status)),
                    Ok(Err(e)) => Err(format!("{name}: the ask endpoint {url} failed: {e}")),
                    Err(_) => Err(format!("{name}: the ask endpoint {url} took over 3 s")),
                }
            })
            .await
            .map_err(|e: std::sync::Arc<String>| (*e).clone())?;
        if answer {
            Ok(())
        } else {
            Err(format!("{name}: the ask endpoint refused it"))
        }
    }

    /// Whether the ask endpoint's refusal of `name` is remembered (then nothing else is
    /// looked at: no file, no question).
    async fn known_denied(&self, name: &str) -> bool {
        self.asks.get(name).await == Some(false)
    }

    async fn obtain(&self, name: &str) -> Result<(), String> {
        if self.certs.get(name).is_some() {
            return Ok(());
        }
        if !valid_name(name) {
            return Err(format!("{name:?} is not a DNS name"));
        }
        if !self.allowed_by_patterns(name) {
            return Err(format!("{name}: not among the site's hosts"));
        }
        if self.known_denied(name).await {
            return Err(format!("{name}: the ask endpoint refused it (cached)"));
        }
        // one order in flight per name: later handshakes wait for the same one
        let existing = self.managed.lock().get(name).cloned();
        let managed = match existing {
            Some(m) => m,
            None => {
                let names = vec![name.to_string()];
                let stored = matches!(
                    crate::storage::load(&self.storage, &names),
                    Ok(Some(s)) if s.covers(&names) && s.not_after > std::time::SystemTime::now()
                );
                if !stored {
                    self.ask(name).await?;
                    if !self.take_order_slot() {
                        return Err(format!(
                            "{name}: on-demand issuance rate limited ({} a minute)",
                            self.config.on_demand_per_minute.unwrap_or(10)
                        ));
                    }
                }
                let mut map = self.managed.lock();
                map.entry(name.to_string())
                    .or_insert_with(|| {
                        let m = Arc::new(Managed::new(
                            &self.section,
                            self.config.clone(),
                            self.storage.clone(),
                            names,
                        ));
                        self.certs.insert(name, m.live.clone());
                        m.start(self.http01.clone(), self.tls_alpn.clone());
                        m
                    })
                    .clone()
            }
        };
        match managed.first().await {
            Ok(()) => Ok(()),
            Err(e) => {
                // forget it: its task stops, the next handshake may try again (rate limited)
                self.managed.lock().remove(name);
                self.certs.remove(name);
                Err(e)
            }
        }
    }
}

impl OnDemandTls for OnDemand {
    fn ensure<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let r = self.obtain(name).await;
            if r.is_err() {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
            r
        })
    }
}

/// A host name a certificate may be ordered for: letters, digits, dashes, dots; 1–253.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `GET URL?domain=NAME` over plain HTTP/1.1: the status.
async fn ask_once(url: &str, name: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// ask URLs".to_string())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let target = format!(
        "{path}{sep}domain={}",
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    );
    let mut s = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting to {authority}: {e}"))?;
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: hopline-on-demand\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut head[n..]).await.map_err(|e| e.to_string())?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let line = std::str::from_utf8(&head[..n]).unwrap_or("");
    line.strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_worth_an_order() {
        for ok in ["www.a.test", "a-b.c.test", "x1.y2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.b",
            "a_b.c",
            "a.b/c",
            "é.test",
            "a.b.",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
