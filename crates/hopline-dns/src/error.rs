//! The errors of the DNS services (configuration, zones, sockets) and of a resolution.

use std::path::PathBuf;

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

/// Why a name could not be resolved — named after the hop that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name does not exist (NXDOMAIN).
    #[error("DNS NXDOMAIN: {name} does not exist")]
    NxDomain {
        /// The name asked.
        name: String,
    },
    /// The name exists but has no record of that type (NODATA).
    #[error("DNS NODATA: {name} has no {rtype} record")]
    NoData {
        /// The name asked.
        name: String,
        /// The type asked.
        rtype: String,
    },
    /// No server answered in time.
    #[error("DNS timeout: {server} did not answer")]
    Timeout {
        /// The server(s) asked.
        server: String,
    },
    /// A server refused the question.
    #[error("DNS REFUSED by {server}")]
    Refused {
        /// The server.
        server: String,
    },
    /// A server failed (SERVFAIL, lame delegation, nonsense answer).
    #[error("DNS SERVFAIL for {name}: {reason}")]
    ServFail {
        /// The name asked.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// DNSSEC validation failed: the answer is not the one the zone's owner signed.
    #[error("{name}: DNSSEC bogus: {reason}")]
    Bogus {
        /// The name asked.
        name: String,
        /// The Extended DNS Error code (RFC 8914).
        ede: u16,
        /// What failed.
        reason: String,
    },
    /// A CNAME chain or referral chain went on too long (a loop).
    #[error("DNS loop: {0}")]
    Loop(String),
    /// The name itself is not a valid DNS name.
    #[error("not a valid DNS name: {0}")]
    BadName(String),
    /// Resolver configuration problem (hints file, hosts file).
    #[error("resolver configuration: {0}")]
    Config(String),
    /// Socket error.
    #[error("network error: {0}")]
    Io(String),
}
