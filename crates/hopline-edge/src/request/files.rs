//! Static files, done the way nginx does them: GET/HEAD, index files, MIME types,
//! `ETag`/`Last-Modified` with conditional requests, single byte ranges, per-route
//! `Cache-Control`, compression, and no path ever escaping the root.
//!
//! Speed comes from an open-file cache (like nginx's `open_file_cache`): a file's
//! metadata, its response headers and — for small files — its bytes and compressed
//! variants are kept for `valid_ms` before the file is looked at again. Larger files
//! stream from disk in 64 KiB chunks without being read into memory.

use std::ffi::OsStr;
use std::io::SeekFrom;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::config::FileCacheConfig;
use crate::request::compress::{self, Encoding, Variants};
use hopline_engine::body::Body;

/// Why a request path cannot name a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `..` segments, NUL bytes or bad percent-encoding: 400.
    BadRequest,
}

/// Map a URL path (still percent-encoded) to a path under `root`. `..` anywhere (raw or
/// encoded) and NUL are refused; `.` and empty segments are dropped. Returns the path
/// and whether the URL ended with '/'.
pub fn resolve_path(root: &Path, url_path: &str) -> Result<(PathBuf, bool), PathError> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(url_path).collect();
    if decoded.contains(&0) {
        return Err(PathError::BadRequest);
    }
    let trailing = decoded.last() == Some(&b'/');
    let mut out = root.to_path_buf();
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => return Err(PathError::BadRequest),
            s => out.push(OsStr::from_bytes(s)),
        }
    }
    Ok((out, trailing))
}

/// What the cache knows of one path.
#[derive(Debug)]
// every Kind lives in an `Arc<Cached>`: boxing the large variant would only add a hop
#[allow(clippy::large_enum_variant)]
pub enum Kind {
    /// A regular file inside the root.
    File(FileMeta),
    /// A folder.
    Dir,
    /// Nothing there (or outside the root through a symlink, or unreadable).
    Missing,
}

/// A cached lookup and when it was made.
#[derive(Debug)]
pub struct Cached {
    /// What is there.
    pub kind: Kind,
    /// When, in [`hopline_engine::clock::mono_ms`].
    checked: u64,
}

impl Cached {
    /// Still within its validity (`valid` from when it was checked)?
    fn fresh(&self, valid: Duration) -> bool {
        u128::from(hopline_engine::clock::mono_ms().saturating_sub(self.checked))
            < valid.as_millis()
    }
}

/// A file's metadata and ready-made header values.
#[derive(Debug)]
pub struct FileMeta {
    path: PathBuf,
    len: u64,
    mtime: SystemTime,
    etag: HeaderValue,
    last_modified: HeaderValue,
    content_type: HeaderValue,
    /// The fixed header lines of a whole-file 200, encoded once for HTTP/1.1; the second
    /// with `vary: Accept-Encoding`.
    lines: [Bytes; 2],
    compressible: bool,
    /// The bytes, for files up to the cache's `max_file`.
    body: Option<Arc<Variants>>,
    /// The open file, for files large enough to leave by `sendfile` (nginx's
    /// `open_file_cache` keeps descriptors the same way).
    file: Option<Arc<std::fs::File>>,
}

impl FileMeta {
    /// The body for `start..start+len`: the open file (sent by `sendfile` where the
    /// connection allows), with the cached bytes alongside when there are any.
    fn body(&self, start: u64, len: u64) -> Option<Body> {
        let mem = self
            .body
            .as_ref()
            .map(|v| v.raw.slice(start as usize..(start + len) as usize));
        match (&self.file, mem) {
            (Some(f), mem) => Some(Body::file(f.clone(), start, len, mem)),
            (None, Some(mem)) => Some(Body::full(mem)),
            (None, None) => None,
        }
    }
}

/// The open-file cache.
pub struct FileCache {
    entries: moka::sync::Cache<PathBuf, Arc<Cached>>,
    /// Disk lookups under way: concurrent misses of one path share one (a cold start
    /// under load would otherwise take a blocking thread per waiting request).
    inflight: parking_lot::Mutex<std::collections::HashMap<PathBuf, Lookup>>,
    valid: Duration,
    max_file: u64,
}

/// A disk lookup that several requests may wait for.
type Lookup = futures_util::future::Shared<futures_util::future::BoxFuture<'static, Arc<Cached>>>;

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl FileCache {
    /// A cache with the config's limits.
    pub fn new(cfg: &FileCacheConfig) -> FileCache {
        let entries = moka::sync::Cache::builder()
            .max_capacity(cfg.size.0.max(1))
            .weigher(|k: &PathBuf, v: &Arc<Cached>| -> u32 {
                // an open descriptor weighs 16 KiB, which bounds how many stay open
                let body = match &v.kind {
                    Kind::File(m) => {
                        m.body.as_ref().map(|b| b.raw.len()).unwrap_or(0)
                            + if m.file.is_some() { 16 * 1024 } else { 0 }
                    }
                    _ => 0,
                };
                (body + k.as_os_str().len() + 256).min(u32::MAX as usize) as u32
            })
            .build();
        FileCache {
            entries,
            inflight: Default::default(),
            valid: Duration::from_millis(cfg.valid_ms),
            max_file: cfg.max_file.0,
        }
    }

    /// Look a path up, from the cache while it is valid, else from the disk.
    pub async fn lookup(&self, path: PathBuf, root_canon: &Arc<PathBuf>) -> Arc<Cached> {
        let prev = self.entries.get(&path);
        if let Some(c) = &prev
            && c.fresh(self.valid)
        {
            return c.clone();
        }
        // boxed: the disk path is the rare one, and keeps its state out of every request's
        Box::pin(self.refresh(path, root_canon.clone(), prev)).await
    }

    async fn refresh(
        &self,
        path: PathBuf,
        root: Arc<PathBuf>,
        prev: Option<Arc<Cached>>,
    ) -> Arc<Cached> {
        use futures_util::FutureExt;
        let max_file = self.max_file;
        let lookup = {
            let mut inflight = self.inflight.lock();
            match inflight.get(&path) {
                Some(l) => l.clone(),
                None => {
                    let p = path.clone();
                    let blocking =
                        tokio::task::spawn_blocking(move || stat(&p, &root, max_file, prev));
                    let l = async move {
                        blocking.await.unwrap_or_else(|_| {
                            Arc::new(Cached {
                                kind: Kind::Missing,
                                checked: hopline_engine::clock::mono_ms(),
                            })
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(path.clone(), l.clone());
                    l
                }
            }
        };
        let fresh = lookup.clone().await;
        // the first waiter to finish files the result (later ones find it gone)
        let mut inflight = self.inflight.lock();
        if inflight.get(&path).is_some_and(|l| l.ptr_eq(&lookup)) {
            inflight.remove(&path);
            if !self.valid.is_zero() {
                self.entries.insert(path, fresh.clone());
            }
        }
        fresh
    }
}

/// Look at the disk (blocking). Reuses the previous entry's bytes when the file did not
/// change, so a revalidation costs one `stat`.
fn stat(path: &Path, root_canon: &Path, max_file: u64, prev: Option<Arc<Cached>>) -> Arc<Cached> {
    let now = hopline_engine::clock::mono_ms();
    let missing = || {
        Arc::new(Cached {
            kind: Kind::Missing,
            checked: now,
        })
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return missing(),
    };
    if meta.is_dir() {
        // A folder reached through a symlink out of the root is refused too.
        return match std::fs::canonicalize(path) {
            Ok(c) if c.starts_with(root_canon) => Arc::new(Cached {
                kind: Kind::Dir,
                checked: now,
            }),
            _ => missing(),
        };
    }
    if !meta.is_file() {
        return missing();
    }
    let len = meta.len();
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if let Some(prev) = prev
        && let Kind::File(m) = &prev.kind
        && m.len == len
        && m.mtime == mtime
    {
        // unchanged: same headers, same bytes, new check time
        return Arc::new(Cached {
            kind: Kind::File(FileMeta {
                path: m.path.clone(),
                len,
                mtime,
                etag: m.etag.clone(),
                last_modified: m.last_modified.clone(),
                content_type: m.content_type.clone(),
                lines: m.lines.clone(),
                compressible: m.compressible,
                body: m.body.clone(),
                file: m.file.clone(),
            }),
            checked: now,
        });
    }
    match std::fs::canonicalize(path) {
        Ok(c) if c.starts_with(root_canon) => {}
        _ => return missing(),
    }
    let secs = mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let etag =
        HeaderValue::from_str(&format!("\"{secs:x}-{len:x}\"")).expect("hex is a valid header");
    let last_modified =
        HeaderValue::from_str(&httpdate::fmt_http_date(mtime)).expect("date is ascii");
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let ct_string = if mime.type_() == mime_guess::mime::TEXT
        || mime.essence_str() == "application/javascript"
        || mime.essence_str() == "application/json"
    {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_string()
    };
    let compressible = compress::compressible(&ct_string);
    let content_type = HeaderValue::from_str(&ct_string)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let Ok(mut opened) = std::fs::File::open(path) else {
        return missing();
    };
    let body = if len <= max_file {
        use std::io::Read;
        let mut bytes = Vec::with_capacity(len as usize);
        match opened.read_to_end(&mut bytes) {
            Ok(_) if bytes.len() as u64 == len => Some(Arc::new(Variants::new(Bytes::from(bytes)))),
            Ok(_) => return missing(), // changed while read: look again next time
            Err(_) => return missing(),
        }
    } else {
        None
    };
    let file = (len >= hopline_engine::h1::write::SENDFILE_MIN).then(|| Arc::new(opened));
    let lines = |vary: bool| {
        let mut l = Vec::with_capacity(192);
        for (name, value) in [
            ("etag", etag.as_bytes()),
            ("last-modified", last_modified.as_bytes()),
            ("content-type", content_type.as_bytes()),
            ("accept-ranges", b"bytes"),
            ("content-length", itoa::Buffer::new().format(len).as_bytes()),
        ] {
            l.extend_from_slice(name.as_bytes());
            l.extend_from_slice(b": ");
            l.extend_from_slice(value);
            l.extend_from_slice(b"\r\n");
        }
        if vary {
            l.extend_from_slice(b"vary: Accept-Encoding\r\n");
        }
        Bytes::from(l)
    };
    let lines = [lines(false), lines(true)];
    Arc::new(Cached {
        kind: Kind::File(FileMeta {
            path: path.to_path_buf(),
            len,
            mtime,
            etag,
            last_modified,
            content_type,
            lines,
            compressible,
            body,
            file,
        }),
        checked: now,
    })
}

/// A byte range to send, inclusive start, exclusive end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The outcome of a `Range` header against a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable single range: send the whole representation (200).
    Full,
    /// Send this part (206).
    Partial(ByteRange),
    /// No range overlaps the representation (416).
    Unsatisfiable,
}

/// Evaluate a `Range` header (RFC 9110 §14). Only a single `bytes=` range is served
/// as 206; several ranges are answered with the full representation.
pub fn evaluate_range(value: &str, len: u64) -> RangeOutcome {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // suffix: last N bytes
        let Ok(n) = b.parse::<u64>() else {
            return RangeOutcome::Full;
        };
        if n == 0 || len == 0 {
            return RangeOutcome::Unsatisfiable;
        }
        let n = n.min(len);
        return RangeOutcome::Partial(ByteRange {
            start: len - n,
            end: len,
        });
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeOutcome::Full;
    };
    let end_incl = if b.is_empty() {
        None
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => Some(e),
            _ => return RangeOutcome::Full, // invalid: ignore the header
        }
    };
    if start >= len {
        return RangeOutcome::Unsatisfiable;
    }
    let end = end_incl.map(|e| (e + 1).min(len)).unwrap_or(len);
    RangeOutcome::Partial(ByteRange { start, end })
}

/// Weak comparison of an entity tag against an `If-None-Match` list (RFC 9110 §13.1.2).
pub fn none_match(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let mine = strip(etag);
    if_none_match
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == mine)
}

/// Strong comparison for `If-Range` with an entity tag, or exact date match.
fn if_range_matches(if_range: &str, meta: &FileMeta) -> bool {
    let v = if_range.trim();
    if v.starts_with('"') {
        return meta.etag.to_str().map(|e| e == v).unwrap_or(false);
    }
    if v.starts_with("W/") {
        return false;
    }
    match httpdate::parse_http_date(v) {
        Ok(t) => {
            let secs = |s: SystemTime| {
                s.duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            };
            secs(t) == secs(meta.mtime)
        }
        Err(_) => false,
    }
}

/// What a static route needs at request time.
#[derive(Debug)]
pub struct StaticRoute {
    /// Unique among all routes this process ever built (keys the per-thread front cache).
    pub uid: u64,
    /// The root folder as configured (resolved against the config file).
    pub root: PathBuf,
    /// Its canonical form, for the symlink-escape check.
    pub root_canon: Arc<PathBuf>,
    /// Index file names for folders.
    pub index: Vec<String>,
    /// Compress by Accept-Encoding.
    pub compress: bool,
}

/// Serve `url_path` (percent-encoded, no query) from a static route.
pub async fn serve(
    version: Version,
    method: &Method,
    headers: &HeaderMap,
    url_path: &str,
    query: Option<&str>,
    route: &StaticRoute,
    cache: &FileCache,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = status_only(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Some(hit) = front::get(route.uid, url_path, cache.valid) {
        let Kind::File(meta) = &hit.kind else {
            unreachable!("only files are in the front cache")
        };
        return send_file(version, method, headers, meta, route).await;
    }
    let (path, trailing) = match resolve_path(&route.root, url_path) {
        Ok(p) => p,
        Err(PathError::BadRequest) => {
            return status_only(StatusCode::BAD_REQUEST, "bad request path\n");
        }
    };
    let found = cache.lookup(path.clone(), &route.root_canon).await;
    match &found.kind {
        Kind::File(meta) if !trailing => {
            front::put(route.uid, url_path, &found, cache.valid);
            send_file(version, method, headers, meta, route).await
        }
        Kind::File(_) => status_only(StatusCode::NOT_FOUND, "not found\n"),
        Kind::Dir => {
            if !trailing {
                let mut loc = format!("{url_path}/");
                if let Some(q) = query {
                    loc.push('?');
                    loc.push_str(q);
                }
                let mut r = status_only(StatusCode::MOVED_PERMANENTLY, "moved permanently\n");
                if let Ok(v) = HeaderValue::from_str(&loc) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                return r;
            }
            Box::pin(serve_index(version, method, headers, &path, route, cache)).await
        }
        Kind::Missing => status_only(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A small per-thread map in front of the shared cache, from a route and the URL path
/// as it came (a path that passed `resolve_path` when it was put here) to the file's
/// entry: a hit costs one short hash, no decoding, no allocation, no shared state.
/// Entries expire with their cache entry's validity; only small files are kept, and
/// the map is emptied when it fills, so it holds little memory the shared cache does
/// not already account for.
mod front {
    use super::{Cached, Kind};
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    /// Entries per thread.
    const ENTRIES: usize = 64;
    /// Largest cached body kept here.
    const MAX_BODY: usize = 16 * 1024;

    type Paths = HashMap<Box<str>, Arc<Cached>, foldhash::fast::RandomState>;

    thread_local! {
        static FRONT: RefCell<(usize, HashMap<u64, Paths, foldhash::fast::RandomState>)> =
            RefCell::new((0, HashMap::default()));
    }

    pub(super) fn get(route: u64, url_path: &str, valid: Duration) -> Option<Arc<Cached>> {
        FRONT.with(|f| {
            let f = f.borrow();
            let c = f.1.get(&route)?.get(url_path)?;
            c.fresh(valid).then(|| c.clone())
        })
    }

    pub(super) fn put(route: u64, url_path: &str, c: &Arc<Cached>, valid: Duration) {
        let Kind::File(meta) = &c.kind else { return };
        if meta.body.as_ref().is_none_or(|b| b.raw.len() > MAX_BODY) || !c.fresh(valid) {
            return;
        }
        FRONT.with(|f| {
            let mut f = f.borrow_mut();
            let (count, map) = &mut *f;
            if *count >= ENTRIES {
                map.clear();
                *count = 0;
            }
            let old = map
                .entry(route)
                .or_default()
                .insert(url_path.into(), c.clone());
            if old.is_none() {
                *count += 1;
            }
        })
    }
}

/// A folder's index file, if it has one.
async fn serve_index(
    version: Version,
    method: &Method,
    headers: &HeaderMap,
    path: &Path,
    route: &StaticRoute,
    cache: &FileCache,
) -> Response<Body> {
    for name in &route.index {
        let candidate = path.join(name);
        let c = cache.lookup(candidate, &route.root_canon).await;
        if let Kind::File(meta) = &c.kind {
            return send_file(version, method, headers, meta, route).await;
        }
    }
    status_only(StatusCode::FORBIDDEN, "directory listing is not enabled\n")
}

/// A short plain-text response.
pub fn status_only(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    r
}

/// A plain-text answer made at run time (an ACME key authorization).
pub fn text(status: StatusCode, text: String) -> Response<Body> {
    let len = text.len();
    let mut r = Response::new(Body::full(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

async fn send_file(
    version: Version,
    method: &Method,
    headers: &HeaderMap,
    meta: &FileMeta,
    route: &StaticRoute,
) -> Response<Body> {
    let vary = route.compress && meta.compressible && meta.len >= compress::MIN_SIZE;
    // The common case, a whole file to HTTP/1.1 with nothing to negotiate: the fixed
    // header lines made once for the file, an empty header map.
    if version < Version::HTTP_2
        && !headers.contains_key(header::IF_NONE_MATCH)
        && !headers.contains_key(header::IF_MODIFIED_SINCE)
        && !headers.contains_key(header::RANGE)
        && (!vary || compress::negotiate(headers.get(header::ACCEPT_ENCODING)).is_none())
        && let Some(body) = if method == Method::HEAD {
            Some(Body::empty())
        } else {
            meta.body(0, meta.len)
        }
    {
        return Response::new(body.with_lines(meta.lines[usize::from(vary)].clone()));
    }
    let mut r = Response::new(Body::empty());
    *r.headers_mut() = HeaderMap::with_capacity(12);
    let h = r.headers_mut();
    h.insert(header::ETAG, meta.etag.clone());
    h.insert(header::LAST_MODIFIED, meta.last_modified.clone());
    if vary {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }

    // Conditional requests (RFC 9110 §13.2.2): If-None-Match wins over If-Modified-Since.
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        if let Ok(inm) = inm.to_str()
            && none_match(inm, meta.etag.to_str().unwrap_or(""))
        {
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return r;
        }
    } else if let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        let secs = |s: SystemTime| {
            s.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        if secs(meta.mtime) <= secs(ims) {
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return r;
        }
    }

    h.insert(header::CONTENT_TYPE, meta.content_type.clone());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    // Range (only when If-Range, if any, matches).
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| {
            headers
                .get(header::IF_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|ir| if_range_matches(ir, meta))
        })
        .map(|v| evaluate_range(v, meta.len))
        .unwrap_or(RangeOutcome::Full);
    match range {
        RangeOutcome::Unsatisfiable => {
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let h = r.headers_mut();
            h.remove(header::CONTENT_TYPE);
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", meta.len)).expect("ascii"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            r
        }
        RangeOutcome::Partial(br) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {}-{}/{}", br.start, br.end - 1, meta.len))
                    .expect("ascii"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(br.end - br.start));
            if method == Method::HEAD {
                return r;
            }
            *r.body_mut() = match meta.body(br.start, br.end - br.start) {
                Some(b) => b,
                None => match Box::pin(stream_file(&meta.path, br.start, br.end - br.start, None))
                    .await
                {
                    Some(b) => b,
                    None => return status_only(StatusCode::NOT_FOUND, "not found\n"),
                },
            };
            r
        }
        RangeOutcome::Full => {
            let enc = if vary {
                compress::negotiate(headers.get(header::ACCEPT_ENCODING))
            } else {
                None
            };
            match (&meta.body, enc) {
                (Some(v), Some(enc)) => {
                    let variant = match v.ready(enc) {
                        Some(ready) => ready,
                        None => {
                            let v = v.clone();
                            Box::pin(tokio::task::spawn_blocking(move || v.get(enc)))
                                .await
                                .ok()
                                .flatten()
                        }
                    };
                    match variant {
                        Some(bytes) => {
                            let h = r.headers_mut();
                            h.insert(header::CONTENT_ENCODING, enc.header());
                            weaken_etag(h);
                            h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                            if method != Method::HEAD {
                                *r.body_mut() = Body::full(bytes);
                            }
                        }
                        None => {
                            r.headers_mut()
                                .insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len));
                            if method != Method::HEAD {
                                *r.body_mut() = meta
                                    .body(0, meta.len)
                                    .unwrap_or_else(|| Body::full(v.raw.clone()));
                            }
                        }
                    }
                    r
                }
                (Some(v), None) => {
                    r.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len));
                    if method != Method::HEAD {
                        *r.body_mut() = meta
                            .body(0, meta.len)
                            .unwrap_or_else(|| Body::full(v.raw.clone()));
                    }
                    r
                }
                (None, enc) => {
                    if let Some(enc) = enc {
                        let h = r.headers_mut();
                        h.insert(header::CONTENT_ENCODING, enc.header());
                        weaken_etag(h);
                    } else {
                        r.headers_mut()
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len));
                    }
                    if method == Method::HEAD {
                        return r;
                    }
                    if enc.is_none()
                        && let Some(b) = meta.body(0, meta.len)
                    {
                        *r.body_mut() = b;
                        return r;
                    }
                    match Box::pin(stream_file(&meta.path, 0, meta.len, enc)).await {
                        Some(b) => {
                            *r.body_mut() = b;
                            r
                        }
                        None => status_only(StatusCode::NOT_FOUND, "not found\n"),
                    }
                }
            }
        }
    }
}

/// A compressed representation is a different one: its validator becomes weak
/// (what nginx does), so caches never mix it with the identity bytes.
fn weaken_etag(h: &mut HeaderMap) {
    if let Some(e) = h.get(header::ETAG).and_then(|v| v.to_str().ok())
        && !e.starts_with("W/")
        && let Ok(v) = HeaderValue::from_str(&format!("W/{e}"))
    {
        h.insert(header::ETAG, v);
    }
}

/// Stream `len` bytes of a file from `start`, optionally compressed on the fly.
async fn stream_file(path: &Path, start: u64, len: u64, enc: Option<Encoding>) -> Option<Body> {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
    use http_body_util::StreamBody;
    use tokio_util::io::ReaderStream;

    let mut f = tokio::fs::File::open(path).await.ok()?;
    if start > 0 {
        f.seek(SeekFrom::Start(start)).await.ok()?;
    }
    let reader = tokio::io::BufReader::with_capacity(64 * 1024, f.take(len));
    fn frames<R: tokio::io::AsyncRead + Send + Sync + 'static>(r: R) -> Body {
        use futures_util::StreamExt;
        let s = ReaderStream::with_capacity(r, 64 * 1024).map(|c| c.map(http_body::Frame::data));
        Body::stream(StreamBody::new(s))
    }
    Some(match enc {
        None => frames(reader),
        Some(Encoding::Gzip) => frames(GzipEncoder::new(reader)),
        Some(Encoding::Br) => frames(BrotliEncoder::with_quality(
            reader,
            async_compression::Level::Precise(5),
        )),
        Some(Encoding::Zstd) => frames(ZstdEncoder::new(reader)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent misses of one path share one disk lookup: with caching off
    /// (`valid_ms = 0`), only that sharing can hand every waiter the same entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_disk_lookup() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.txt"), "hello").unwrap();
        let root = Arc::new(std::fs::canonicalize(dir.path()).unwrap());
        let cache = FileCache::new(&FileCacheConfig {
            valid_ms: 0,
            ..Default::default()
        });
        let path = root.join("f.txt");
        // (30: join_all polls up to 30 futures all in each pass; with more it switches to
        // FuturesOrdered, which returns as soon as one is done — on a loaded machine the
        // first lookup then finished before most others had been polled once)
        let got =
            futures_util::future::join_all((0..30).map(|_| cache.lookup(path.clone(), &root)))
                .await;
        assert!(matches!(got[0].kind, Kind::File(_)));
        // (a lookup that finishes while the later requests are still being polled lets
        // those start one of their own: on an idle machine 1–4 lookups in all; on one
        // whose cores are both busy the polling thread is preempted mid-pass and up to
        // ~20 were seen — shared still, never one each)
        let mut distinct: Vec<&Arc<Cached>> = Vec::new();
        for c in &got {
            if !distinct.iter().any(|d| Arc::ptr_eq(d, c)) {
                distinct.push(c);
            }
        }
        assert!(
            distinct.len() < got.len() * 3 / 4,
            "{} disk lookups for 30 concurrent misses",
            distinct.len()
        );
        assert!(cache.inflight.lock().is_empty());
        // later lookups go to the disk again (nothing is cached with valid_ms = 0)
        let again = cache.lookup(path, &root).await;
        assert!(!got.iter().any(|c| Arc::ptr_eq(&again, c)));
    }

    #[test]
    fn paths_never_escape_the_root() {
        let root = Path::new("/srv/www");
        assert_eq!(
            resolve_path(root, "/a/b.txt").unwrap(),
            (PathBuf::from("/srv/www/a/b.txt"), false)
        );
        assert_eq!(
            resolve_path(root, "/a/./b/").unwrap(),
            (PathBuf::from("/srv/www/a/b"), true)
        );
        assert_eq!(
            resolve_path(root, "/a%20b.txt").unwrap().0,
            PathBuf::from("/srv/www/a b.txt")
        );
        for bad in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2fetc/passwd",
            "/a/..%2f..%2fetc",
            "/a%00.txt",
            "/..",
        ] {
            assert_eq!(resolve_path(root, bad), Err(PathError::BadRequest), "{bad}");
        }
        // "..." and "..a" are ordinary names
        assert!(resolve_path(root, "/.../x").is_ok());
        assert!(resolve_path(root, "/..a").is_ok());
    }

    #[test]
    fn ranges() {
        use RangeOutcome::*;
        assert_eq!(
            evaluate_range("bytes=0-9", 100),
            Partial(ByteRange { start: 0, end: 10 })
        );
        assert_eq!(
            evaluate_range("bytes=90-", 100),
            Partial(ByteRange {
                start: 90,
                end: 100
            })
        );
        assert_eq!(
            evaluate_range("bytes=-10", 100),
            Partial(ByteRange {
                start: 90,
                end: 100
            })
        );
        assert_eq!(
            evaluate_range("bytes=-1000", 100),
            Partial(ByteRange { start: 0, end: 100 })
        );
        assert_eq!(
            evaluate_range("bytes=50-5000", 100),
            Partial(ByteRange {
                start: 50,
                end: 100
            })
        );
        assert_eq!(evaluate_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(evaluate_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(evaluate_range("bytes=5-1", 100), Full);
        assert_eq!(evaluate_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(evaluate_range("items=0-1", 100), Full);
        assert_eq!(evaluate_range("bytes=x-1", 100), Full);
    }

    #[test]
    fn etag_matching() {
        assert!(none_match("\"a-1\"", "\"a-1\""));
        assert!(none_match("W/\"a-1\"", "\"a-1\""));
        assert!(none_match("\"x\", \"a-1\"", "\"a-1\""));
        assert!(none_match("*", "\"a-1\""));
        assert!(!none_match("\"a-2\"", "\"a-1\""));
    }
}
