//! The access log: one line per request (client, method, path, status, bytes, duration),
//! requests the engine refused at their head included (`"-"` for a request line it could
//! not read, as nginx), written when the response body is done — the way nginx's
//! `access_log … buffer=64k` does it: each worker thread appends its lines to a buffer of
//! its own (no lock shared with other threads, no allocation per line, the date formatted
//! once a second), and the buffer goes to the file in one `write` when it passes 64 KiB,
//! or within a second by the flusher, or when the server stops (no line is lost on
//! SIGTERM). `reopen` (SIGUSR1 in `hopline serve`) opens the path again, for logrotate.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::error::EngineError;

/// A thread's buffer is written out past this size.
const FLUSH_AT: usize = 64 * 1024;

enum Target {
    Stderr,
    File {
        path: PathBuf,
        file: Mutex<std::fs::File>,
    },
}

/// Where lines go.
pub struct AccessLog {
    target: Target,
    /// Every thread's buffer, for the flusher and for `flush`.
    buffers: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    id: u64,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl AccessLog {
    /// "stderr", "off" (→ None) or a file path (appended to).
    pub fn open(setting: Option<&str>) -> Result<Option<Arc<AccessLog>>, EngineError> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let target = match setting.unwrap_or("stderr") {
            "off" => return Ok(None),
            "stderr" => Target::Stderr,
            path => {
                let path = PathBuf::from(path);
                let f = open_append(&path).map_err(|e| EngineError::Io {
                    what: format!("cannot open access log {}", path.display()),
                    source: e,
                })?;
                Target::File {
                    path,
                    file: Mutex::new(f),
                }
            }
        };
        let log = Arc::new(AccessLog {
            target,
            buffers: Mutex::new(Vec::new()),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        // the flusher: what the threads buffered reaches the file within a second
        let weak: Weak<AccessLog> = Arc::downgrade(&log);
        let _ = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    match weak.upgrade() {
                        Some(log) => log.flush(),
                        None => return,
                    }
                }
            });
        Ok(Some(log))
    }

    fn write_out(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match &self.target {
            Target::Stderr => {
                let _ = std::io::stderr().lock().write_all(data);
            }
            Target::File { file, .. } => {
                let _ = file.lock().write_all(data);
            }
        }
    }

    /// Write every thread's buffered lines now (the flusher does it each second; the
    /// server does it when it stops).
    pub fn flush(&self) {
        let buffers: Vec<Arc<Mutex<Vec<u8>>>> = self.buffers.lock().clone();
        for b in buffers {
            let data = std::mem::take(&mut *b.lock());
            self.write_out(&data);
        }
    }

    /// Open the file again by its path (after logrotate moved it away); buffered lines
    /// go to the old file first.
    pub fn reopen(&self) -> std::io::Result<()> {
        self.flush();
        if let Target::File { path, file } = &self.target {
            *file.lock() = open_append(path)?;
        }
        Ok(())
    }

    /// Append one line through the calling thread's buffer.
    fn append(self: &Arc<Self>, line: impl FnOnce(&mut Vec<u8>)) {
        thread_local! {
            static BUFFER: std::cell::RefCell<Option<(u64, SharedBuf)>> =
                const { std::cell::RefCell::new(None) };
        }
        let buf = BUFFER.with(|cell| {
            let mut cell = cell.borrow_mut();
            match &*cell {
                Some((id, b)) if *id == self.id => b.clone(),
                _ => {
                    let b = Arc::new(Mutex::new(Vec::with_capacity(FLUSH_AT + 1024)));
                    self.buffers.lock().push(b.clone());
                    *cell = Some((self.id, b.clone()));
                    b
                }
            }
        });
        let mut b = buf.lock();
        line(&mut b);
        if b.len() >= FLUSH_AT {
            let data = std::mem::replace(&mut *b, Vec::with_capacity(FLUSH_AT + 1024));
            drop(b);
            self.write_out(&data);
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A thread's buffer of lines, shared with the flusher.
type SharedBuf = Arc<Mutex<Vec<u8>>>;

/// A text field of a log line, held the cheapest way the request allows: its target
/// and fields share the request's own bytes (a reference count, no copy), a refused
/// head's are copied, an absent one is `-`.
#[derive(Debug, Clone, Default)]
pub enum LogText {
    #[default]
    Dash,
    Owned(Box<str>),
    Header(http::HeaderValue),
    Path(http::uri::PathAndQuery),
    Authority(http::uri::Authority),
}

impl LogText {
    fn as_bytes(&self) -> &[u8] {
        match self {
            LogText::Dash => b"-",
            LogText::Owned(s) => s.as_bytes(),
            LogText::Header(v) => v.as_bytes(),
            LogText::Path(p) => p.as_str().as_bytes(),
            LogText::Authority(a) => a.as_str().as_bytes(),
        }
    }
}

impl From<Option<String>> for LogText {
    fn from(s: Option<String>) -> LogText {
        s.map_or(LogText::Dash, |s| LogText::Owned(s.into_boxed_str()))
    }
}

/// One request's line, filled as the request goes and written at the end.
pub struct LogRecord {
    pub log: Arc<AccessLog>,
    pub client: SocketAddr,
    /// `None`: the request line could not be read; the line shows `"-"` in place of
    /// `"METHOD target VERSION"` (nginx's `$request` for such a request).
    pub method: Option<http::Method>,
    pub target: LogText,
    pub version: http::Version,
    /// The Host (or the target's authority); its port is left out of the line.
    pub host: LogText,
    pub status: u16,
    pub bytes: u64,
    pub start: Instant,
    pub user_agent: LogText,
    /// The site's name, set when the response is known (`None`: `-`).
    pub site: Option<std::sync::Arc<str>>,
    /// The W3C trace id of the request's `traceparent`, if it had one.
    pub trace: Option<String>,
}

/// The log's date, formatted once a second per thread.
fn with_date(f: impl FnOnce(&str)) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        f(&d.1);
    });
}

/// `host[:port]` or `[v6]:port` without the port (bytes of a field, as
/// [`crate::host::without_port`] on text).
fn without_port(h: &[u8]) -> &[u8] {
    match std::str::from_utf8(h) {
        Ok(s) => crate::host::without_port(s).as_bytes(),
        Err(_) => h,
    }
}

/// `"text"` escaped as Rust's `{:?}` does (the line's format since the start), without
/// the formatting machinery when there is nothing to escape (nearly every User-Agent).
fn quoted(out: &mut Vec<u8>, text: &[u8]) {
    if text
        .iter()
        .all(|&b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
    } else {
        let _ = write!(out, "{:?}", String::from_utf8_lossy(text));
    }
}

impl LogRecord {
    pub fn finish(&self) {
        let us = self.start.elapsed().as_micros().min(u64::MAX as u128) as u64;
        self.log.append(|out| {
            let mut n = itoa::Buffer::new();
            match self.client.ip() {
                // the common case without the formatting machinery
                std::net::IpAddr::V4(ip) => {
                    for (i, o) in ip.octets().iter().enumerate() {
                        if i > 0 {
                            out.push(b'.');
                        }
                        out.extend_from_slice(n.format(*o).as_bytes());
                    }
                }
                ip => {
                    let _ = write!(out, "{ip}");
                }
            }
            out.extend_from_slice(b" [");
            with_date(|d| out.extend_from_slice(d.as_bytes()));
            out.extend_from_slice(b"] \"");
            match &self.method {
                Some(method) => {
                    out.extend_from_slice(method.as_str().as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(self.target.as_bytes());
                    out.extend_from_slice(match self.version {
                        http::Version::HTTP_10 => b" HTTP/1.0\" ",
                        http::Version::HTTP_2 => b" HTTP/2.0\" ",
                        http::Version::HTTP_3 => b" HTTP/3.0\" ",
                        _ => b" HTTP/1.1\" ",
                    });
                }
                None => out.extend_from_slice(b"-\" "),
            }
            out.extend_from_slice(n.format(self.status).as_bytes());
            out.push(b' ');
            out.extend_from_slice(n.format(self.bytes).as_bytes());
            out.push(b' ');
            // milliseconds with three decimals, without formatting a float
            out.extend_from_slice(n.format(us / 1000).as_bytes());
            out.push(b'.');
            let frac = us % 1000;
            if frac < 100 {
                out.push(b'0');
            }
            if frac < 10 {
                out.push(b'0');
            }
            out.extend_from_slice(n.format(frac).as_bytes());
            out.extend_from_slice(b"ms host=");
            let host = without_port(self.host.as_bytes());
            out.extend_from_slice(if host.is_empty() { b"-" } else { host });
            out.extend_from_slice(b" site=");
            out.extend_from_slice(self.site.as_deref().unwrap_or("-").as_bytes());
            out.extend_from_slice(b" trace=");
            out.extend_from_slice(self.trace.as_deref().unwrap_or("-").as_bytes());
            out.extend_from_slice(b" ua=");
            quoted(out, self.user_agent.as_bytes());
            out.push(b'\n');
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(log: &Arc<AccessLog>, target: &str) -> LogRecord {
        LogRecord {
            log: log.clone(),
            client: "127.0.0.1:5000".parse().unwrap(),
            method: Some(http::Method::GET),
            target: LogText::Owned(target.into()),
            version: http::Version::HTTP_11,
            host: LogText::Header(http::HeaderValue::from_static("shop.test:8443")),
            status: 200,
            bytes: 13,
            start: Instant::now(),
            user_agent: LogText::Header(http::HeaderValue::from_static("curl/8")),
            site: Some("s".into()),
            trace: None,
        }
    }

    #[test]
    fn lines_are_buffered_flushed_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(Some(path.to_str().unwrap()))
            .unwrap()
            .unwrap();
        record(&log, "/a").finish();
        // buffered, not yet written
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("127.0.0.1 ["), "{text}");
        assert!(text.contains("] \"GET /a HTTP/1.1\" 200 13 "), "{text}");
        assert!(
            text.contains("ms host=shop.test site=s trace=- ua=\"curl/8\"\n"),
            "{text}"
        );
        // logrotate: the file is moved away, SIGUSR1 reopens the path
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        record(&log, "/before-reopen").finish();
        log.reopen().unwrap();
        record(&log, "/after-reopen").finish();
        drop(log); // the server stopping: nothing buffered is lost
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains("/before-reopen"), "{old}");
        assert!(
            new.contains("/after-reopen") && !new.contains("/before"),
            "{new}"
        );
    }

    #[test]
    fn fields_are_escaped_and_v6_clients_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(Some(path.to_str().unwrap()))
            .unwrap()
            .unwrap();
        let mut r = record(&log, "/q?a=1");
        r.client = "[::1]:5000".parse().unwrap();
        r.user_agent = LogText::Owned("say \"hi\" \\o/".into());
        r.host = LogText::Authority("[::1]:8443".parse().unwrap());
        r.finish();
        let mut r = record(&log, "/");
        r.client = "10.200.3.45:1".parse().unwrap();
        r.finish();
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("::1 ["), "{text}");
        assert!(lines[0].contains("\"GET /q?a=1 HTTP/1.1\""), "{text}");
        assert!(
            lines[0].ends_with("host=[::1] site=s trace=- ua=\"say \\\"hi\\\" \\\\o/\""),
            "{text}"
        );
        assert!(lines[1].starts_with("10.200.3.45 ["), "{text}");
    }

    #[test]
    fn a_request_line_never_read_is_a_dash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(Some(path.to_str().unwrap()))
            .unwrap()
            .unwrap();
        let mut r = record(&log, "");
        r.method = None;
        r.status = 400;
        r.host = LogText::Dash;
        r.user_agent = LogText::Dash;
        r.finish();
        drop(r);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("] \"-\" 400 13 "), "{text}");
        assert!(
            text.contains("ms host=- site=s trace=- ua=\"-\"\n"),
            "{text}"
        );
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(Some(path.to_str().unwrap()))
            .unwrap()
            .unwrap();
        let long = format!("/{}", "x".repeat(1000));
        for _ in 0..80 {
            record(&log, &long).finish();
        }
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(
            written.lines().count() >= 50,
            "{} lines",
            written.lines().count()
        );
    }
}
