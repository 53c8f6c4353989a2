//! The edge's error type: what failed while starting, reloading or serving.

use std::net::SocketAddr;

use crate::config::error::ConfigError;

/// Errors of the edge library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// The config file was refused (file, line, column and what was expected).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be bound (taken, not local, no permission).
    #[error(
        "cannot listen on {addr} ({role}): {}",
        hopline_dns::bind_reason(reason, addr, if role.to_ascii_lowercase().contains("udp") { "u" } else { "" })
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What would have listened there.
        role: String,
        /// Why the OS refused (said once, with what to do; not repeated as a source).
        reason: std::io::Error,
    },
    /// A certificate, key or TLS setting could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Two parts of a config that cannot work together on one listener.
    #[error("{0}")]
    Conflict(String),
    /// An I/O error outside a request (e.g. opening the access log).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A DNS service (resolver or authoritative server) failed to start or reload.
    #[error("DNS: {0}")]
    Dns(String),
}

impl From<hopline_engine::error::EngineError> for EdgeError {
    fn from(e: hopline_engine::error::EngineError) -> Self {
        use hopline_engine::error::EngineError;
        match e {
            EngineError::Tls(msg) => EdgeError::Tls(msg),
            EngineError::Io { what, source } => EdgeError::Io { what, source },
        }
    }
}
