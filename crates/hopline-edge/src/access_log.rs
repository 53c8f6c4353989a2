//! The access log: one line per request (client, method, path, status, bytes, duration),
//! written when the response body is done, through a non-blocking writer so a slow disk
//! never stalls a request.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use tokio::time::Instant;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};

use crate::error::EdgeError;

/// Where lines go.
pub struct AccessLog {
    writer: NonBlocking,
    _guard: WorkerGuard,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

impl AccessLog {
    /// "stderr", "off" (→ None) or a file path (appended to).
    pub fn open(setting: Option<&str>) -> Result<Option<std::sync::Arc<AccessLog>>, EdgeError> {
        let (writer, guard) = match setting.unwrap_or("stderr") {
            "off" => return Ok(None),
            "stderr" => tracing_appender::non_blocking(std::io::stderr()),
            path => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(path))
                    .map_err(|e| EdgeError::Io {
                        what: format!("cannot open access log {path}"),
                        source: e,
                    })?;
                tracing_appender::non_blocking(f)
            }
        };
        Ok(Some(std::sync::Arc::new(AccessLog {
            writer,
            _guard: guard,
        })))
    }
}

/// One request's line, filled as the request goes and written at the end.
pub struct LogRecord {
    pub(crate) log: std::sync::Arc<AccessLog>,
    pub(crate) client: SocketAddr,
    pub(crate) method: http::Method,
    pub(crate) target: String,
    pub(crate) version: http::Version,
    pub(crate) host: String,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) start: Instant,
    pub(crate) user_agent: String,
    pub(crate) site: std::sync::Arc<str>,
    /// The W3C trace id of the request's `traceparent`, if it had one.
    pub(crate) trace: Option<String>,
}

impl LogRecord {
    pub(crate) fn finish(&self) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        let line = format!(
            "{} [{}] \"{} {} {:?}\" {} {} {:.3}ms host={} site={} trace={} ua={:?}\n",
            self.client.ip(),
            now,
            self.method,
            self.target,
            self.version,
            self.status,
            self.bytes,
            ms,
            if self.host.is_empty() {
                "-"
            } else {
                &self.host
            },
            self.site,
            self.trace.as_deref().unwrap_or("-"),
            self.user_agent,
        );
        let mut w = self.log.writer.clone();
        let _ = w.write_all(line.as_bytes());
    }
}
