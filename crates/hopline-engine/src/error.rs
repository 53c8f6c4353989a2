//! What the engine reports when it cannot start a piece of itself: a certificate, a key or
//! a TLS setting it cannot use, or a file it cannot open. The edge's own error wraps it.

/// Error type of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error of the HTTP engine outside a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A certificate, key or TLS setting could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// An I/O error outside a request (e.g. opening the access log).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}
