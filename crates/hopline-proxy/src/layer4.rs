//! Layer-4 load balancing, as nginx's `stream` module does it: TCP connections and UDP
//! datagrams that are not HTTP (a database, DNS, anything) forwarded to an
//! `[upstream.NAME]` pool — the same five algorithms, active health checks and passive
//! ejection as the HTTP proxy, the pool looked up in the table in force for each
//! connection or session (a reload changes the servers; the listeners stay).
//!
//! ```toml
//! [[stream]]
//! listen = "127.0.0.1:6380"     # TCP: each connection to one server, bytes both ways
//! proxy = "redis"
//! [[stream]]
//! listen = "127.0.0.1:5353"
//! protocol = "udp"              # UDP: a session per client address
//! proxy = "dns"
//! ```
//!
//! TCP: a server that refuses or does not answer within `connect_timeout_ms` counts as a
//! failure and the next one is tried; a connection counts as in flight to its server
//! for its whole life (least connections balances open connections); it ends when both
//! sides have closed or nothing moved for `idle_timeout_ms` (default 10 minutes, nginx's
//! `proxy_timeout`). UDP: the first datagram of a client picks a server for a session;
//! the server's datagrams go back to that client; a server that answers with ICMP
//! "port unreachable" before any reply counts as a failure and the datagram goes to the
//! next one; a session ends after `idle_timeout_ms` without traffic (default 30 s).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hopline_balance::Outcome;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use toml::Spanned;

use crate::pool::UpstreamPool;

/// One `[[stream]]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Where to listen, IP:PORT.
    pub listen: Spanned<String>,
    /// The `[upstream.NAME]` pool to forward to.
    pub proxy: Spanned<String>,
    /// "tcp" (default) or "udp".
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    /// How long a connection (TCP) or session (UDP) may see no traffic.
    pub idle_timeout_ms: Option<u64>,
    /// How long connecting to one server may take before the next is tried (TCP).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

fn default_connect_timeout() -> u64 {
    3000
}

impl StreamConfig {
    /// Whether it forwards UDP.
    pub fn udp(&self) -> bool {
        self.protocol
            .as_ref()
            .is_some_and(|p| p.get_ref().eq_ignore_ascii_case("udp"))
    }

    /// The idle timeout in force.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.unwrap_or(if self.udp() {
            30_000
        } else {
            600_000
        }))
    }
}

/// What one `[[stream]]` listener has done (for status and the dashboard).
#[derive(Debug, Default)]
pub struct StreamStats {
    /// TCP connections accepted, or UDP sessions begun.
    pub connections: std::sync::atomic::AtomicU64,
    /// Of those, open now.
    pub open: std::sync::atomic::AtomicU64,
}

/// One running `[[stream]]` listener.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Where it listens.
    pub bound: SocketAddr,
    /// UDP (else TCP).
    pub udp: bool,
    /// Its pool's name.
    pub pool: String,
    /// Its counters.
    pub stats: Arc<StreamStats>,
}

/// Counts a connection or session as open until dropped.
struct Open(Arc<StreamStats>);

impl Open {
    fn new(stats: &Arc<StreamStats>) -> Open {
        use std::sync::atomic::Ordering::Relaxed;
        stats.connections.fetch_add(1, Relaxed);
        stats.open.fetch_add(1, Relaxed);
        Open(stats.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a stream finds its pool: the table in force.
pub trait Pools: Send + Sync + 'static {
    /// The pool of that name now.
    fn pool(&self, name: &str) -> Option<Arc<UpstreamPool>>;
}

/// Accept TCP connections until `stop` and forward each.
pub async fn run_tcp(
    listener: TcpListener,
    cfg: StreamConfig,
    pools: Arc<dyn Pools>,
    stats: Arc<StreamStats>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    loop {
        let (client, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(target: "hopline::stream", "accept on {}: {e}", cfg.listen.get_ref());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (cfg, pools) = (cfg.clone(), pools.clone());
        let open = Open::new(&stats);
        tokio::spawn(async move {
            let _open = open;
            let _ = client.set_nodelay(true);
            tcp_connection(client, peer, &cfg, &*pools).await;
        });
    }
}

async fn tcp_connection(
    client: TcpStream,
    peer: SocketAddr,
    cfg: &StreamConfig,
    pools: &dyn Pools,
) {
    let name = cfg.proxy.get_ref();
    let Some(pool) = pools.pool(name) else {
        tracing::warn!(target: "hopline::stream", "{peer}: no upstream {name:?} any more; closing");
        return;
    };
    let members = pool.members();
    let mut tried = Vec::new();
    loop {
        let Some(pick) = members.pool.pick(&tried) else {
            tracing::warn!(target: "hopline::stream", "{peer}: no server of {name:?} could be reached; closing");
            return;
        };
        let index = pick.index();
        let addr = members.servers[index].addr;
        let started = Instant::now();
        match tokio::time::timeout(
            Duration::from_millis(cfg.connect_timeout_ms),
            TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(server)) => {
                let latency = started.elapsed();
                let _ = server.set_nodelay(true);
                // in flight for the connection's whole life
                relay(client, server, cfg.idle()).await;
                pick.finish(Outcome::Success { latency });
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(target: "hopline::stream", "{peer}: {addr}: {e}; trying the next server");
                pick.finish(Outcome::ConnectError);
            }
            Err(_) => {
                tracing::debug!(target: "hopline::stream", "{peer}: {addr}: connect timed out; trying the next server");
                pick.finish(Outcome::Timeout);
            }
        }
        tried.push(index);
    }
}

/// Bytes both ways until both sides have closed (each close passed on as a half-close),
/// or nothing moved either way for `idle`, or one side stops taking bytes for `idle`.
/// The two directions run on their own: one blocked on a write never stops the other.
async fn relay(a: TcpStream, b: TcpStream, idle: Duration) {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let last = std::sync::atomic::AtomicU64::new(hopline_engine::clock::mono_ms());
    let to_b = one_way(ar, bw, idle, &last);
    let to_a = one_way(br, aw, idle, &last);
    tokio::pin!(to_b, to_a);
    let (mut b_done, mut a_done) = (false, false);
    while !(b_done && a_done) {
        tokio::select! {
            ended = &mut to_b, if !b_done => {
                if !ended { return; }
                b_done = true;
            }
            ended = &mut to_a, if !a_done => {
                if !ended { return; }
                a_done = true;
            }
        }
    }
}

/// Copy `r` to `w` until `r` ends (true: then `w` is half-closed) or the connection is
/// to be dropped (false: an error, or no traffic either way — `last`, shared by both
/// directions — for `idle`, also while a write is stuck). One timer per direction, moved
/// only when it fires (not once per read).
async fn one_way(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    idle: Duration,
    last: &std::sync::atomic::AtomicU64,
) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let idle_ms = idle.as_millis() as u64;
    // when the timer fires: false if the connection has been idle that long, else re-arm
    // it for `idle` after the last traffic
    let still_alive = |sleep: std::pin::Pin<&mut tokio::time::Sleep>| {
        let quiet = hopline_engine::clock::mono_ms().saturating_sub(last.load(Relaxed));
        if quiet >= idle_ms {
            return false;
        }
        sleep.reset(Instant::now() + Duration::from_millis(idle_ms - quiet));
        true
    };
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            got = r.read(&mut buf) => match got {
                Ok(0) => {
                    let _ = w.shutdown().await;
                    return true;
                }
                Ok(n) => n,
                Err(_) => return false,
            },
            _ = &mut sleep => {
                if !still_alive(sleep.as_mut()) {
                    return false;
                }
                continue;
            }
        };
        last.store(hopline_engine::clock::mono_ms(), Relaxed);
        let write = w.write_all(&buf[..n]);
        tokio::pin!(write);
        loop {
            tokio::select! {
                done = &mut write => match done {
                    Ok(()) => break,
                    Err(_) => return false,
                },
                _ = &mut sleep => {
                    if !still_alive(sleep.as_mut()) {
                        return false;
                    }
                }
            }
        }
        last.store(hopline_engine::clock::mono_ms(), Relaxed);
    }
}

/// UDP sessions one listener keeps open at most (each is a socket and a task).
const MAX_SESSIONS: usize = 10_000;
/// Datagrams a session keeps to resend to the next server while none has answered.
const RESEND_MAX: usize = 16;

/// Receive UDP datagrams until `stop` and forward each client's to its session.
pub async fn run_udp(
    sock: UdpSocket,
    cfg: StreamConfig,
    pools: Arc<dyn Pools>,
    stats: Arc<StreamStats>,
    mut stop: watch::Receiver<bool>,
) {
    let sock = Arc::new(sock);
    let cfg = Arc::new(cfg);
    let mut sessions: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut refused_at = 0u64;
    let mut buf = vec![0u8; 65536];
    let mut since_sweep = 0u32;
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = sock.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
        };
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        // an open session takes it; a full one drops it (UDP may lose datagrams)
        if let Some(tx) = sessions.get(&peer)
            && !tx.is_closed()
        {
            let _ = tx.try_send(datagram);
            continue;
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, tx| !tx.is_closed());
            if sessions.len() >= MAX_SESSIONS {
                // a flood of new sources: no new session until some end (said once a minute)
                let now = hopline_engine::clock::mono_ms();
                if now.saturating_sub(refused_at) > 60_000 {
                    refused_at = now;
                    tracing::warn!(target: "hopline::stream", "{}: {MAX_SESSIONS} UDP sessions open; datagrams from new clients are dropped", cfg.listen.get_ref());
                }
                continue;
            }
        }
        let (tx, rx) = mpsc::channel(64);
        let _ = tx.try_send(datagram);
        sessions.insert(peer, tx);
        let (sock, cfg, pools) = (sock.clone(), cfg.clone(), pools.clone());
        let open = Open::new(&stats);
        tokio::spawn(async move {
            let _open = open;
            udp_session(sock, peer, rx, &cfg, &*pools).await
        });
        // forget ended sessions now and then
        since_sweep += 1;
        if since_sweep >= 256 {
            since_sweep = 0;
            sessions.retain(|_, tx| !tx.is_closed());
        }
    }
}

async fn udp_session(
    listener: Arc<UdpSocket>,
    peer: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    cfg: &StreamConfig,
    pools: &dyn Pools,
) {
    let name = cfg.proxy.get_ref();
    let Some(pool) = pools.pool(name) else {
        tracing::warn!(target: "hopline::stream", "{peer}: no upstream {name:?} any more");
        return;
    };
    let members = pool.members();
    let idle = cfg.idle();
    // the datagrams sent before the first reply: resent to the next server on a refusal
    let mut unanswered: Vec<Bytes> = Vec::new();
    let mut tried = Vec::new();
    let mut buf = vec![0u8; 65536];
    'servers: loop {
        let Some(pick) = members.pool.pick(&tried) else {
            tracing::warn!(target: "hopline::stream", "{peer}: no server of {name:?} answers");
            return;
        };
        let index = pick.index();
        let addr = members.servers[index].addr;
        let bind: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let up = match UdpSocket::bind(bind).await {
            Ok(s) => s,
            Err(_) => return,
        };
        if up.connect(addr).await.is_err() {
            pick.finish(Outcome::ConnectError);
            tried.push(index);
            continue;
        }
        for d in &unanswered {
            let _ = up.send(d).await;
        }
        let started = Instant::now();
        let mut answered = false;
        let mut first_reply = Duration::ZERO;
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                d = rx.recv() => match d {
                    Some(d) => {
                        let sent = up.send(&d).await;
                        if !answered && unanswered.len() < RESEND_MAX {
                            unanswered.push(d);
                        }
                        // a refusal (ICMP) may surface on the send instead of the receive
                        if !answered
                            && sent.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
                        {
                            pick.finish(Outcome::ConnectError);
                            tried.push(index);
                            continue 'servers;
                        }
                    }
                    None => break,
                },
                r = up.recv(&mut buf) => match r {
                    Ok(n) => {
                        if !answered {
                            answered = true;
                            first_reply = started.elapsed();
                            unanswered.clear();
                        }
                        let _ = listener.send_to(&buf[..n], peer).await;
                    }
                    // ICMP port unreachable: this server is not there
                    Err(_) if !answered => {
                        pick.finish(Outcome::ConnectError);
                        tried.push(index);
                        continue 'servers;
                    }
                    Err(_) => {}
                },
                _ = &mut sleep => break,
            }
            sleep.as_mut().reset(Instant::now() + idle);
        }
        // a session that never got a reply proves nothing (one-way protocols: syslog,
        // statsd): the pick is dropped unfinished, neither success nor failure
        if answered {
            pick.finish(Outcome::Success {
                latency: first_reply,
            });
        }
        return;
    }
}
