//! Keeping a pool current: active health checks of its servers, and re-resolving the
//! host names among them as their answers' TTLs run out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::pool::{UpstreamPool, is_name, members_of};

/// Run the pool's active health checks until the pool is dropped (reload replaces it):
/// every interval, every current server at once.
pub fn spawn_health_checks(pool: &Arc<UpstreamPool>) {
    let Some(h) = pool.health.clone() else {
        return;
    };
    let weak = Arc::downgrade(pool);
    tokio::spawn(async move {
        let interval = Duration::from_millis(h.interval_ms.max(10));
        let timeout = Duration::from_millis(h.timeout_ms.max(1));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            let members = pool.members();
            drop(pool);
            let checks = members
                .servers
                .iter()
                .map(|s| check_once(s.addr, &h.path, timeout));
            let results = futures_util::future::join_all(checks).await;
            for (i, ok) in results.into_iter().enumerate() {
                members.pool.report_health_check(i, ok);
            }
        }
    });
}

/// Keep host-name servers current: re-resolve each name when its answer's TTL runs
/// out (at least every second, at most every 5 minutes) with hopline's resolver; when
/// the addresses change, the pool's members are replaced.
pub fn spawn_resolution(pool: &Arc<UpstreamPool>) {
    if !pool.entries.iter().any(|(t, _, _)| is_name(t)) {
        return;
    }
    let weak = Arc::downgrade(pool);
    tokio::spawn(async move {
        let resolver = match hopline_dns::Resolver::builder().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: "hopline::proxy", "no resolver for upstream names: {e}");
                return;
            }
        };
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            let Some(pool) = weak.upgrade() else { return };
            let mut resolved = Vec::new();
            let mut ttl = Duration::from_secs(300);
            let mut failed = false;
            for (text, _, _) in &pool.entries {
                if !is_name(text) {
                    resolved.push(vec![text.parse::<SocketAddr>().expect("an address")]);
                    continue;
                }
                let (host, port) = text.rsplit_once(':').expect("validated host:port");
                let port: u16 = port.parse().expect("validated port");
                match resolver.lookup_ip(host.trim_matches(['[', ']'])).await {
                    Ok(l) => {
                        ttl = ttl.min(l.ttl);
                        resolved.push(
                            l.addrs
                                .iter()
                                .map(|ip| SocketAddr::new(*ip, port))
                                .collect(),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(target: "hopline::proxy", "{}: cannot resolve {text}: {e}; keeping the current servers", pool.name);
                        failed = true;
                        break;
                    }
                }
            }
            wait = ttl.clamp(Duration::from_secs(1), Duration::from_secs(300));
            if failed {
                continue;
            }
            let current: Vec<SocketAddr> = pool.members().servers.iter().map(|s| s.addr).collect();
            let fresh: Vec<SocketAddr> = resolved.iter().flatten().copied().collect();
            if current != fresh && !fresh.is_empty() {
                tracing::info!(target: "hopline::proxy", "{}: servers now {:?} (were {:?})", pool.name, fresh, current);
                let m = members_of(
                    &pool.name,
                    pool.algorithm,
                    &pool.entries,
                    &resolved,
                    &pool.opts,
                    pool.idle,
                );
                pool.members.store(Arc::new(m));
            }
        }
    });
}

/// One health check: a fresh connection, `GET path`, 2xx/3xx within the timeout.
async fn check_once(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let _ = s.set_nodelay(true);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hopline-health\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 32];
        let mut n = 0;
        while n < 12 {
            let k = s.read(&mut buf[n..]).await.ok()?;
            if k == 0 {
                break;
            }
            n += k;
        }
        let head = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
