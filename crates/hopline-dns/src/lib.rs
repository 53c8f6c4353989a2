//! hopline-dns: the naming hop of a request. A caching resolver (hosts file, cache,
//! forwarding or iterative resolution from the root with a hop-by-hop trace) that the
//! browser and the proxy use as a library, and an authoritative server (RFC 1035 zones,
//! referrals, negative answers, DNS-based load balancing over health-checked pools),
//! both servable over UDP and TCP by `hopline serve`.

pub mod authority;
pub mod config;
mod escapes;
pub mod hints;
pub mod resolver;
pub mod service;
pub mod wire;
pub mod zone;

use std::path::PathBuf;

pub use hickory_proto::rr::RecordType;
pub use hints::RootHints;
pub use resolver::{
    Answered, Lookup, RecordView, ResolveError, Resolver, ResolverBuilder, TraceStep,
};

/// Errors of the DNS services (configuration, zones, sockets).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A zone file could not be used.
    #[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Zone {
        /// The zone file.
        file: PathBuf,
        /// 1-based line of the first problem, when known.
        line: Option<usize>,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({role}): {}", bind_reason(reason, addr, "u"))]
    Bind {
        /// Address asked for.
        addr: std::net::SocketAddr,
        /// DNS resolver or authoritative server.
        role: String,
        /// The OS error (said once, with what to do about it; not repeated as a source).
        reason: std::io::Error,
    },
    /// Something in the `[dns]` config is inconsistent.
    #[error("{0}")]
    Config(String),
}

/// Why a listener could not be bound, in words that say what to do: who may hold the port
/// (`ss` with `proto` "t" for TCP, "u" for UDP and TCP), a foreign address, a privileged
/// port.
pub fn bind_reason(e: &std::io::Error, addr: &std::net::SocketAddr, proto: &str) -> String {
    let port = addr.port();
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "port {port} is taken by another program (see who holds it: ss -l{proto}tnp 'sport = :{port}'); stop it or choose another port"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine (loopback 127.0.0.0/8 always is)",
            addr.ip()
        ),
        std::io::ErrorKind::PermissionDenied if port < 1024 => format!(
            "port {port} is privileged: run as root, grant CAP_NET_BIND_SERVICE, or use a port from 1024 up"
        ),
        _ => e.to_string(),
    }
}
