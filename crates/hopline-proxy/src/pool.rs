//! A named pool of origin servers: its members and their balancer (`hopline-balance`),
//! the idle connections kept per server, and its settings, built from `[upstream.NAME]`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hopline_balance::{Algorithm, Pool, PoolOptions, ServerSpec};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::client_body::ProxyBody;
use crate::config::{HealthConfig, Upstream};

/// One upstream server.
#[derive(Debug, Clone)]
pub struct ServerAddr {
    /// Where to connect.
    pub addr: SocketAddr,
    /// How it was written in the config (a hostname stays visible).
    pub id: String,
    /// Idle keep-alive connections of hopline's own HTTP/1.1 client to it.
    pub idle: Arc<crate::origin::IdlePool>,
    /// `;desc="POOL SERVER via ALGORITHM"` of its `Server-Timing` entry, made once.
    pub timing_desc: Box<str>,
}

/// The servers of a pool right now and their balancer (replaced whole when a server
/// name resolves to other addresses).
pub struct Members {
    /// The balancer state.
    pub pool: Pool,
    /// Servers, index-aligned with the balancer's.
    pub servers: Vec<ServerAddr>,
}

/// A named pool with its balancer, connection pool and settings.
pub struct UpstreamPool {
    /// The `[upstream.NAME]` name.
    pub name: String,
    pub members: arc_swap::ArcSwap<Members>,
    pub entries: Vec<(String, u32, bool)>,
    pub opts: PoolOptions,
    /// Algorithm (for status and Server-Timing).
    pub algorithm: Algorithm,
    pub client: Client<HttpConnector, ProxyBody>,
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub health: Option<HealthConfig>,
    /// Speaks HTTP/2 to its servers (hyper's client does all of its requests).
    pub http2: bool,
    /// Idle connections per server, and how long they stay.
    pub idle: IdleLimits,
    /// What a hashing balancer hashes (set for ring_hash and maglev).
    pub hash_key: Option<crate::config::HashKey>,
    /// Sticky sessions.
    pub sticky: Option<crate::config::Sticky>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.name)
            .field("servers", &self.members.load().servers)
            .finish()
    }
}

/// Is this server entry a name (to be resolved) rather than an address?
pub fn is_name(text: &str) -> bool {
    text.parse::<SocketAddr>().is_err()
}

/// What each server's idle pool may keep (the same for every server of a pool).
#[derive(Debug, Clone, Copy)]
pub struct IdleLimits {
    /// Connections.
    max: usize,
    /// How long one stays.
    timeout: Duration,
    /// Read buffer bytes, in all.
    buffers: usize,
}

/// The pool's members for a set of resolved addresses per entry.
pub fn members_of(
    pool_name: &str,
    algorithm: Algorithm,
    entries: &[(String, u32, bool)],
    resolved: &[Vec<SocketAddr>],
    opts: &PoolOptions,
    idle: IdleLimits,
) -> Members {
    let mut servers = Vec::new();
    let mut specs = Vec::new();
    for ((text, weight, backup), addrs) in entries.iter().zip(resolved) {
        for addr in addrs {
            let id = if is_name(text) {
                format!("{text} ({addr})")
            } else {
                addr.to_string()
            };
            specs.push(ServerSpec {
                id: id.clone(),
                weight: *weight,
                backup: *backup,
            });
            servers.push(ServerAddr {
                addr: *addr,
                timing_desc: format!(";desc=\"{}\"", timing_text(pool_name, &id, algorithm)).into(),
                id,
                idle: Arc::new(crate::origin::IdlePool::new(
                    idle.max,
                    idle.timeout,
                    idle.buffers,
                )),
            });
        }
    }
    Members {
        pool: Pool::new(algorithm, specs, opts.clone()),
        servers,
    }
}

/// Build a pool from its config. Host names are resolved now; [`spawn_resolution`]
/// keeps them current, respecting the answers' TTL.
pub fn build_pool(name: &str, cfg: &Upstream) -> Result<UpstreamPool, String> {
    let entries: Vec<(String, u32, bool)> = cfg
        .servers
        .get_ref()
        .iter()
        .map(|e| {
            let (t, w, b) = e.get_ref().parts();
            (t.to_string(), w, b)
        })
        .collect();
    let mut resolved = Vec::new();
    for (text, _, _) in &entries {
        let addrs: Vec<SocketAddr> = match text.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(text.as_str())
                .map_err(|e| format!("upstream {name}: cannot resolve {text}: {e}"))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("upstream {name}: {text} has no addresses"));
        }
        resolved.push(addrs);
    }
    if cfg.hash_key.is_some() && !cfg.balance.is_hash() {
        return Err(format!(
            "upstream {name}: hash_key is for balance = \"ring_hash\" or \"maglev\" (balance is {:?})",
            cfg.balance.as_str()
        ));
    }
    let mut opts = PoolOptions::default();
    if let Some(h) = &cfg.health {
        opts.fails = h.fails;
        opts.passes = h.passes;
    }
    opts.outlier_consecutive_errors = cfg.max_fails.max(1);
    opts.outlier_base_ejection = Duration::from_millis(cfg.fail_timeout_ms);
    opts.outlier_max_ejection = Duration::from_millis(cfg.fail_timeout_ms.saturating_mul(6));
    let idle = IdleLimits {
        max: cfg.max_idle_per_server,
        timeout: Duration::from_millis(cfg.idle_timeout_ms),
        buffers: usize::try_from(cfg.idle_buffers.0).unwrap_or(usize::MAX),
    };
    let members = members_of(name, cfg.balance, &entries, &resolved, &opts, idle);

    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(cfg.idle_timeout_ms))
        .pool_max_idle_per_host(cfg.max_idle_per_server)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(cfg.http2)
        .retry_canceled_requests(true)
        .set_host(false)
        .build(connector);
    Ok(UpstreamPool {
        name: name.to_string(),
        members: arc_swap::ArcSwap::from_pointee(members),
        entries,
        opts,
        algorithm: cfg.balance,
        client,
        read_timeout: Duration::from_millis(cfg.read_timeout_ms),
        connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        retries: cfg.retries,
        health: cfg.health.clone(),
        http2: cfg.http2,
        idle,
        hash_key: cfg.balance.is_hash().then(|| {
            cfg.hash_key
                .clone()
                .unwrap_or(crate::config::HashKey::ClientIp)
        }),
        sticky: cfg.sticky.clone(),
    })
}

impl UpstreamPool {
    /// The current members (servers and balancer).
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }
}

/// A server's `Server-Timing` description: it goes into response heads as it is, so
/// only printable ASCII, no quote or backslash (a pool's name may hold anything).
fn timing_text(pool: &str, id: &str, algorithm: Algorithm) -> String {
    format!("{pool} {id} via {}", algorithm.as_str())
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}
