//! One classified proxy failure: what failed, whose fault it is (client, server, edge)
//! and whether a retry may help; status codes, retries and log lines are decided from it.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use hopline_engine::body::Body;

/// Which side a failure belongs to (pingora's habit: decide from data, not strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Fault {
    /// The origin server (or the network to it).
    Upstream,
    /// The client.
    Downstream,
    /// hopline itself.
    Internal,
}

/// A classified proxy failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// No server of the pool is up.
    NoServer {
        /// Pool name.
        pool: String,
    },
    /// The TCP connect failed or timed out; nothing was sent.
    Connect {
        /// Server.
        server: String,
        /// Why.
        reason: String,
    },
    /// No response head within the read timeout.
    Timeout {
        /// Server.
        server: String,
        /// The timeout.
        after: Duration,
    },
    /// The server closed or broke the connection after the request was (partly) sent.
    Upstream {
        /// Server.
        server: String,
        /// Why.
        reason: String,
    },
    /// The client's request body failed on the way (bad framing: 400; too slow: 408;
    /// the client closed before its end: 499, as nginx logs it). Not the server's fault.
    Client {
        /// The status the client gets (and the log shows).
        status: StatusCode,
        /// Why.
        reason: String,
    },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoServer { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Client { status, .. } => *status,
        }
    }

    /// Whose fault.
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NoServer { .. } => Fault::Internal,
            ProxyError::Client { .. } => Fault::Downstream,
            _ => Fault::Upstream,
        }
    }

    /// The failure of a client's request body, classified by its I/O error kind.
    pub fn client_body(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ProxyError {
        let kind = e
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .unwrap_or(std::io::ErrorKind::Other);
        let status = match kind {
            std::io::ErrorKind::InvalidData => StatusCode::BAD_REQUEST,
            std::io::ErrorKind::TimedOut => StatusCode::REQUEST_TIMEOUT,
            // 499: nginx's "client closed request"; the client is gone, the log shows it
            _ => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        };
        ProxyError::Client {
            status,
            reason: e.to_string(),
        }
    }

    /// May another server be tried? Only when nothing reached the origin.
    pub fn retryable(&self) -> bool {
        matches!(self, ProxyError::Connect { .. })
    }

    /// The body the client reads: says which failure.
    pub fn body(&self) -> String {
        match self {
            ProxyError::NoServer { pool } => {
                format!(
                    "503 no server of upstream {pool:?} is up (all failed their health checks)\n"
                )
            }
            ProxyError::Connect { server, reason } => {
                format!("502 could not connect to upstream server {server}: {reason}\n")
            }
            ProxyError::Timeout { server, after } => format!(
                "504 upstream server {server} did not answer within {} ms\n",
                after.as_millis()
            ),
            ProxyError::Upstream { server, reason } => {
                format!("502 upstream server {server} failed: {reason}\n")
            }
            ProxyError::Client { status, reason } => {
                format!("{} bad request body: {reason}\n", status.as_u16())
            }
        }
    }

    /// The response the client gets.
    pub fn response(&self) -> Response<Body> {
        let text = self.body();
        let mut r = Response::new(Body::full(text.clone()));
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        r
    }
}
