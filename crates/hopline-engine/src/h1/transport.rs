//! What an HTTP/1.1 connection runs over: plain TCP or TLS, and the boxed form an
//! upgraded connection takes.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A connection the HTTP/1.1 engine can run on.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath, when there is nothing between it and HTTP
    /// (enables buffer-free idle waits and `sendfile`).
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Transport for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {}
