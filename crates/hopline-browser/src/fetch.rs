//! One request the way a browser's network stack makes it, timed phase by phase: DNS
//! with hopline's resolver, TCP connect, TLS (rustls; version, cipher, ALPN, the certificate
//! chain, resumption), then HTTP/1.1 or HTTP/2 over hyper's connection API so every phase is
//! visible; or, for an origin that advertised HTTP/3 (`Alt-Svc`) or with `Force::Http3`,
//! one QUIC handshake (quinn: transport and TLS 1.3 together) and HTTP/3 (h3).
//! Connections are pooled per origin: up to N HTTP/1.1 connections (the browser's
//! per-host limit), or one multiplexed HTTP/2 or HTTP/3 connection. When QUIC does not get
//! through (UDP blocked: no answer within the timeout) and HTTP/3 was not forced, the
//! request falls back to TCP, as browsers do, and the entry says so.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;
use url::Url;

use crate::timeline::{DnsInfo, Entry, Phases, TlsInfo, parse_server_timing};

/// Which HTTP version to insist on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    /// Whatever ALPN picks.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (TLS with ALPN h2, or h2c prior knowledge on http://).
    Http2,
    /// HTTP/3 only (QUIC), from the first request, with no fall-back.
    Http3,
}

/// Client settings.
#[derive(Clone)]
pub struct ClientOptions {
    /// The resolver for host names.
    pub resolver: hopline_dns::Resolver,
    /// Extra trusted CA (PEM), e.g. hopline's local CA.
    pub extra_ca: Option<std::path::PathBuf>,
    /// HTTP/1.1 connections per host.
    pub max_per_host: usize,
    /// Protocol choice.
    pub force: Force,
    /// Per-phase timeout.
    pub timeout: Duration,
    /// W3C trace id for `traceparent` (32 hex digits).
    pub trace_id: String,
    /// The private HTTP cache (None: no cache).
    pub cache: Option<crate::cache::DiskCache>,
    /// Resolve host names over DNS over HTTPS (RFC 8484) at this URL, as a browser with
    /// DoH on does: each question is a request of its own in the timeline. The DoH
    /// server's own name is looked up with `resolver` (the bootstrap).
    pub doh: Option<Url>,
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
    H3(H3Send),
}

type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// A response body from any of the three protocols.
type RespBody = http_body_util::combinators::BoxBody<Bytes, String>;

struct Conn {
    id: usize,
    server: SocketAddr,
    sender: Sender,
}

/// The origin's multiplexed HTTP/2 connection: (connection id, server, sender).
type SharedH2 = (usize, SocketAddr, http2::SendRequest<Empty<Bytes>>);

/// Sees the decoded body as it arrives.
pub type ChunkSink<'a> = Option<&'a mut (dyn FnMut(&[u8]) + Send)>;

/// The origin's multiplexed HTTP/3 connection: (connection id, server, sender).
type SharedH3 = (usize, SocketAddr, H3Send);

#[derive(Default)]
struct OriginPool {
    idle: parking_lot::Mutex<Vec<Conn>>,
    h2: parking_lot::Mutex<Option<SharedH2>>,
    h3: parking_lot::Mutex<Option<SharedH3>>,
    known: AtomicBool,
    first: tokio::sync::Mutex<()>,
    slots: Option<Arc<tokio::sync::Semaphore>>,
}

/// A name's answer in the client's own host cache: (addresses, TTL, DNSSEC, until).
type HostCached = (Vec<IpAddr>, u64, &'static str, Instant);

/// The page loader's HTTP client.
pub struct Client {
    opts: ClientOptions,
    tls: Arc<rustls::ClientConfig>,
    /// The same trust for QUIC (ALPN h3).
    quic: quinn::ClientConfig,
    /// Origins that advertised HTTP/3 (`Alt-Svc: h3=":PORT"; ma=SECS`): origin → (UDP
    /// port, expiry in seconds since the epoch); kept in the private cache's folder.
    alt_svc: parking_lot::Mutex<HashMap<String, (u16, u64)>>,
    /// Origins whose QUIC handshake failed: TCP from then on.
    quic_failed: parking_lot::Mutex<std::collections::HashSet<String>>,
    pools: parking_lot::Mutex<HashMap<String, Arc<OriginPool>>>,
    next_conn: AtomicUsize,
    /// Time zero of the timeline.
    pub epoch: Instant,
    next_span: AtomicUsize,
    /// Ids of the timeline's entries (a navigation starts them at 0).
    ids: AtomicUsize,
    /// Requests the client made on its own (DNS over HTTPS), for the timeline.
    side: parking_lot::Mutex<Vec<Entry>>,
    /// Answers learned over DoH: name → (addresses, TTL, DNSSEC, until), the browser's
    /// own host cache (the system resolver's cache is not asked in DoH mode).
    host_cache: parking_lot::Mutex<HashMap<String, HostCached>>,
}

/// A finished request: its timeline entry and decoded body.
pub struct Fetched {
    /// The entry.
    pub entry: Entry,
    /// Decoded body (empty on error).
    pub body: Bytes,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Client {
    /// Build a client (rustls with the web PKI roots plus `extra_ca`; session resumption on).
    pub fn new(opts: ClientOptions) -> Result<Client, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &opts.extra_ca {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            }
        }
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.resumption = rustls::client::Resumption::in_memory_sessions(256);
        let mut quic_tls = cfg.clone();
        quic_tls.alpn_protocols = vec![b"h3".to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(quic_tls)
            .map_err(|e| format!("QUIC: {e}"))?;
        let quic = quinn::ClientConfig::new(Arc::new(quic));
        cfg.alpn_protocols = match opts.force {
            Force::Http1 => vec![b"http/1.1".to_vec()],
            Force::Http2 => vec![b"h2".to_vec()],
            Force::Auto | Force::Http3 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        let remembered = opts.cache.as_ref().map(|c| c.alt_svc()).unwrap_or_default();
        Ok(Client {
            opts,
            tls: Arc::new(cfg),
            quic,
            alt_svc: parking_lot::Mutex::new(remembered),
            quic_failed: parking_lot::Mutex::new(std::collections::HashSet::new()),
            pools: parking_lot::Mutex::new(HashMap::new()),
            next_conn: AtomicUsize::new(0),
            epoch: Instant::now(),
            next_span: AtomicUsize::new(1),
            ids: AtomicUsize::new(0),
            side: parking_lot::Mutex::new(Vec::new()),
            host_cache: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// The next timeline id.
    pub fn next_id(&self) -> usize {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Timeline ids start again from 0 (a new navigation), and the requests the client
    /// made on its own so far are dropped.
    pub fn restart_ids(&self) {
        self.ids.store(0, Ordering::Relaxed);
        self.side.lock().clear();
    }

    /// The requests the client made on its own (DoH questions) since the last call.
    pub fn take_side_entries(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.side.lock())
    }

    fn new_entry(&self, id: usize, url: &Url, kind: &str, initiator: Option<usize>) -> Entry {
        Entry {
            id,
            url: url.to_string(),
            method: "GET".into(),
            kind: kind.into(),
            initiator,
            status: 0,
            http_version: String::new(),
            server: None,
            connection: None,
            reused: false,
            start: ms(Instant::now() - self.epoch),
            phases: Phases::default(),
            dns: None,
            tls: None,
            server_timing: vec![],
            cache_status: None,
            content_type: None,
            content_encoding: None,
            transfer_bytes: 0,
            body_bytes: 0,
            redirect_to: None,
            from_cache: None,
            response_headers: vec![],
            request_headers: vec![],
            error: None,
            note: None,
        }
    }

    /// One question over DNS over HTTPS (RFC 8484: GET with `?dns=`, ID 0, the AD bit
    /// asked for), made as a request of its own: its timeline entry (kind "dns") and the
    /// answer. `initiator`: the entry whose lookup needed it.
    pub async fn doh_query(
        &self,
        name: &str,
        rtype: hickory_proto::rr::RecordType,
        initiator: Option<usize>,
    ) -> (Result<hickory_proto::op::Message, String>, Entry) {
        use base64::Engine;
        use hickory_proto::op::{Message, Query};
        let Some(doh) = &self.opts.doh else {
            let u = Url::parse("https://invalid./").expect("a URL");
            return (
                Err("no DoH URL".into()),
                self.new_entry(self.next_id(), &u, "dns", initiator),
            );
        };
        let mut url = doh.clone();
        let wire = hickory_proto::rr::Name::from_utf8(name)
            .map_err(|e| format!("bad name {name:?}: {e}"))
            .and_then(|n| {
                let mut m = Message::query();
                m.metadata.id = 0;
                m.metadata.recursion_desired = true;
                m.metadata.authentic_data = true;
                m.add_query(Query::query(n, rtype));
                m.to_vec().map_err(|e| e.to_string())
            });
        if let Ok(w) = &wire {
            url.query_pairs_mut().append_pair(
                "dns",
                &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(w),
            );
        }
        let mut entry = self.new_entry(self.next_id(), &url, "dns", initiator);
        entry.note = Some(format!("DNS over HTTPS: {name} {rtype}"));
        let start = Instant::now();
        if let Err(e) = wire {
            entry.error = Some(e.clone());
            return (Err(e), entry);
        }
        // boxed: the DoH server's own connection goes through `resolve` again
        let body = Box::pin(self.get_inner(
            &url,
            &mut entry,
            start,
            &mut None,
            "application/dns-message",
            false,
        ))
        .await;
        let r = body.and_then(|body| {
            if entry.status != 200 {
                return Err(format!("DoH server answered HTTP {}", entry.status));
            }
            let ct = entry.content_type.as_deref().unwrap_or("");
            if !ct.starts_with("application/dns-message") {
                return Err(format!(
                    "DoH server answered {ct:?}, not application/dns-message"
                ));
            }
            Message::from_vec(&body).map_err(|e| format!("DoH answer: {e}"))
        });
        if let Err(e) = &r {
            entry.error = Some(e.clone());
        }
        (r, entry)
    }

    /// A name's addresses over DoH (A and AAAA asked at once, as browsers do), through
    /// the client's host cache.
    async fn resolve_doh(
        &self,
        host: &str,
        doh: &Url,
        entry: &mut Entry,
    ) -> Result<Vec<IpAddr>, String> {
        use hickory_proto::op::ResponseCode;
        use hickory_proto::rr::{RData, RecordType};
        let key = host.to_ascii_lowercase();
        let cached = self
            .host_cache
            .lock()
            .get(&key)
            .filter(|c| c.3 > Instant::now())
            .cloned();
        if let Some((addrs, _, dnssec, until)) = cached {
            entry.dns = Some(DnsInfo {
                answered_by: "cache".into(),
                addrs: addrs.iter().map(|a| a.to_string()).collect(),
                ttl: until.saturating_duration_since(Instant::now()).as_secs(),
                steps: 0,
                dnssec,
                doh: vec![],
            });
            return Ok(addrs);
        }
        let (a, aaaa) = tokio::join!(
            self.doh_query(host, RecordType::A, Some(entry.id)),
            self.doh_query(host, RecordType::AAAA, Some(entry.id))
        );
        let mut addrs = Vec::new();
        let mut ttl = u32::MAX;
        let mut secure = true;
        let mut errors = Vec::new();
        let mut nxdomain = false;
        let mut ids = Vec::new();
        for (r, e) in [a, aaaa] {
            ids.push(e.id);
            self.side.lock().push(e);
            match r {
                Ok(m) => {
                    match m.metadata.response_code {
                        ResponseCode::NoError => {}
                        ResponseCode::NXDomain => nxdomain = true,
                        rc => errors.push(format!("{rc}")),
                    }
                    secure &= m.metadata.authentic_data;
                    for rec in &m.answers {
                        let ip = match &rec.data {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(a) => IpAddr::V6(a.0),
                            _ => continue,
                        };
                        ttl = ttl.min(rec.ttl);
                        addrs.push(ip);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let dnssec = if secure && !addrs.is_empty() {
            "secure"
        } else {
            "unchecked"
        };
        if addrs.is_empty() {
            return Err(if nxdomain {
                format!("{host}: NXDOMAIN (DNS over HTTPS, {doh})")
            } else if errors.is_empty() {
                format!("{host}: no address (DNS over HTTPS, {doh})")
            } else {
                format!("{host}: {} (DNS over HTTPS, {doh})", errors.join("; "))
            });
        }
        let ttl = if ttl == u32::MAX { 0 } else { ttl };
        self.host_cache.lock().insert(
            key,
            (
                addrs.clone(),
                ttl as u64,
                dnssec,
                Instant::now() + Duration::from_secs(ttl as u64),
            ),
        );
        entry.dns = Some(DnsInfo {
            answered_by: format!("doh {doh}"),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            ttl: ttl as u64,
            steps: ids.len(),
            dnssec,
            doh: ids,
        });
        Ok(addrs)
    }

    /// Connections opened so far.
    pub fn connections(&self) -> usize {
        self.next_conn.load(Ordering::Relaxed)
    }

    fn pool(&self, origin: &str) -> Arc<OriginPool> {
        self.pools
            .lock()
            .entry(origin.to_string())
            .or_insert_with(|| {
                Arc::new(OriginPool {
                    slots: Some(Arc::new(tokio::sync::Semaphore::new(
                        self.opts.max_per_host.max(1),
                    ))),
                    ..Default::default()
                })
            })
            .clone()
    }

    /// GET a URL; `on_chunk` sees the decoded body as it arrives (for streaming HTML).
    pub async fn get(
        &self,
        id: usize,
        url: &Url,
        kind: &str,
        initiator: Option<usize>,
        mut on_chunk: ChunkSink<'_>,
    ) -> Fetched {
        let start = Instant::now();
        let mut entry = self.new_entry(id, url, kind, initiator);
        match self
            .get_inner(url, &mut entry, start, &mut on_chunk, "*/*", true)
            .await
        {
            Ok(body) => Fetched { entry, body },
            Err(e) => {
                entry.error = Some(e);
                Fetched {
                    entry,
                    body: Bytes::new(),
                }
            }
        }
    }

    async fn get_inner(
        &self,
        url: &Url,
        entry: &mut Entry,
        start: Instant,
        on_chunk: &mut ChunkSink<'_>,
        accept: &'static str,
        use_cache: bool,
    ) -> Result<Bytes, String> {
        let host = url.host_str().ok_or("URL has no host")?.to_string();
        let port = url.port_or_known_default().ok_or("URL has no port")?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            s => return Err(format!("unsupported scheme {s}")),
        };
        // the HTTP cache first: a fresh entry needs no network at all
        let (cache_req, ()) = hyper::Request::get(url.as_str())
            .header("accept-encoding", "gzip, br, zstd")
            .body(())
            .map_err(|e| e.to_string())?
            .into_parts();
        let mut revalidating = None;
        let mut conditional: Vec<(String, String)> = Vec::new();
        if let Some(cache) = self.opts.cache.as_ref().filter(|_| use_cache) {
            match cache.before(&cache_req) {
                crate::cache::Before::Fresh(stored) => {
                    entry.from_cache = Some("hit".into());
                    entry.status = stored.status;
                    entry.http_version = "cache".into();
                    entry.content_type = stored
                        .headers
                        .iter()
                        .find(|(k, _)| k == "content-type")
                        .map(|(_, v)| v.clone());
                    entry.response_headers = stored.headers.clone();
                    entry.body_bytes = stored.body.len() as u64;
                    if let Some(cb) = on_chunk.as_mut() {
                        cb(&stored.body);
                    }
                    entry.phases.receive = ms(start.elapsed());
                    return Ok(stored.body);
                }
                crate::cache::Before::Revalidate(stored, extra) => {
                    revalidating = Some(stored);
                    conditional = extra;
                }
                crate::cache::Before::Miss => {}
            }
        }
        let origin = format!("{}://{}:{port}", url.scheme(), host);
        let pool = self.pool(&origin);
        // the first request to an origin opens the connection alone, so HTTP/2 is
        // known before others dial (one multiplexed connection)
        let first_guard = if pool.known.load(Ordering::Acquire) {
            None
        } else {
            Some(pool.first.lock().await)
        };
        // HTTP/3 when forced, or when the origin advertised it and QUIC got through before
        let h3_port = if !tls {
            None
        } else if self.opts.force == Force::Http3 {
            Some(port)
        } else if self.opts.force == Force::Auto && !self.quic_failed.lock().contains(&origin) {
            self.alt_svc
                .lock()
                .get(&origin)
                .filter(|(_, until)| *until > now_secs())
                .map(|(port, _)| *port)
        } else {
            None
        };
        let mut quic = None;
        if let Some(udp) = h3_port
            && pool.h3.lock().is_none()
            && pool.h2.lock().is_none()
        {
            let tried = Instant::now();
            match self.dial_quic(&host, udp, entry).await {
                Ok(c) => {
                    if let Sender::H3(s) = &c.sender {
                        *pool.h3.lock() = Some((c.id, c.server, s.clone()));
                    }
                    quic = Some(c);
                }
                Err(e) if self.opts.force == Force::Http3 => return Err(e),
                Err(e) => {
                    // as browsers do: TCP, and no more QUIC for this origin
                    self.quic_failed.lock().insert(origin.clone());
                    entry.note = Some(format!(
                        "HTTP/3 to {host}:{udp} failed ({e}): fell back to TCP"
                    ));
                    entry.phases = Default::default();
                    entry.phases.blocked = ms(tried.elapsed());
                    entry.tls = None;
                }
            }
        }
        // an HTTP/1.1 connection slot, held until this request's body is read
        let mut _slot: Option<tokio::sync::OwnedSemaphorePermit> = None;
        let conn = if let Some(c) = quic {
            c
        } else if let Some((cid, server, send)) = pool.h3.lock().clone() {
            entry.reused = true;
            Conn {
                id: cid,
                server,
                sender: Sender::H3(send),
            }
        } else if let Some((cid, server, send)) = pool.h2.lock().clone() {
            entry.reused = true;
            Conn {
                id: cid,
                server,
                sender: Sender::H2(send),
            }
        } else {
            let permit = pool
                .slots
                .as_ref()
                .expect("slots")
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            entry.phases.blocked = ms(start.elapsed());
            let idle = {
                let mut idle = pool.idle.lock();
                let mut found = None;
                while let Some(c) = idle.pop() {
                    if let Sender::H1(s) = &c.sender
                        && !s.is_closed()
                    {
                        found = Some(c);
                        break;
                    }
                }
                found
            };
            let c = match idle {
                Some(c) => {
                    entry.reused = true;
                    c
                }
                None => self.dial(&host, port, tls, entry).await?,
            };
            if let Sender::H2(s) = &c.sender {
                *pool.h2.lock() = Some((c.id, c.server, s.clone()));
                drop(permit);
            } else {
                _slot = Some(permit);
            }
            c
        };
        pool.known.store(true, Ordering::Release);
        drop(first_guard);
        entry.connection = Some(conn.id);
        entry.server = Some(conn.server.to_string());

        let span = self.next_span.fetch_add(1, Ordering::Relaxed);
        let traceparent = format!(
            "00-{}-{:016x}-01",
            self.opts.trace_id,
            span as u64 | 0x1000_0000_0000_0000
        );
        let path = url[url::Position::BeforePath..url::Position::AfterQuery].to_string();
        let authority = if url.port().is_some() {
            format!("{host}:{port}")
        } else {
            host.clone()
        };
        let is_h2 = matches!(conn.sender, Sender::H2(_) | Sender::H3(_));
        let uri = if is_h2 { url.to_string() } else { path };
        let mut req = hyper::Request::get(uri)
            .header("host", authority)
            .header(
                "user-agent",
                concat!("hopline-visit/", env!("CARGO_PKG_VERSION")),
            )
            .header("accept", accept)
            .header("accept-encoding", "gzip, br, zstd")
            .header("traceparent", traceparent)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        if is_h2 {
            req.headers_mut().remove("host");
        }
        for (k, v) in &conditional {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                req.headers_mut().insert(k, v);
            }
        }
        entry.request_headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let sent = Instant::now();
        let resp = match conn.sender {
            Sender::H1(mut s) => {
                entry.http_version = "HTTP/1.1".into();
                let r = tokio::time::timeout(self.opts.timeout, s.send_request(req)).await;
                let r = r.map_err(|_| {
                    format!(
                        "timeout: no response from {} within {:?}",
                        conn.server, self.opts.timeout
                    )
                })?;
                let r = r.map_err(|e| format!("HTTP: {e}"))?;
                // back to the pool once the body is read (done below)
                (
                    r.map(|b| b.map_err(|e| e.to_string()).boxed()),
                    Some((conn.id, conn.server, s)),
                )
            }
            Sender::H2(mut s) => {
                entry.http_version = "HTTP/2".into();
                let r = tokio::time::timeout(self.opts.timeout, s.send_request(req)).await;
                let r = r.map_err(|_| {
                    format!(
                        "timeout: no response from {} within {:?}",
                        conn.server, self.opts.timeout
                    )
                })?;
                let r = r.map_err(|e| format!("HTTP/2: {e}"))?;
                (r.map(|b| b.map_err(|e| e.to_string()).boxed()), None)
            }
            Sender::H3(mut s) => {
                entry.http_version = "HTTP/3".into();
                let (parts, _) = req.into_parts();
                let exchange = async {
                    let mut stream = s
                        .send_request(http::Request::from_parts(parts, ()))
                        .await
                        .map_err(|e| format!("HTTP/3: {e}"))?;
                    stream.finish().await.map_err(|e| format!("HTTP/3: {e}"))?;
                    let resp = stream
                        .recv_response()
                        .await
                        .map_err(|e| format!("HTTP/3: {e}"))?;
                    Ok::<_, String>((resp, stream))
                };
                let (resp, stream) = tokio::time::timeout(self.opts.timeout, exchange)
                    .await
                    .map_err(|_| {
                        format!(
                            "timeout: no response from {} within {:?}",
                            conn.server, self.opts.timeout
                        )
                    })??;
                let frames = futures_util::stream::unfold(Some(stream), |stream| async move {
                    let mut stream = stream?;
                    match stream.recv_data().await {
                        Ok(Some(mut chunk)) => {
                            use bytes::Buf;
                            let data = chunk.copy_to_bytes(chunk.remaining());
                            Some((Ok(http_body::Frame::data(data)), Some(stream)))
                        }
                        Ok(None) => None,
                        Err(e) => Some((Err(format!("HTTP/3: {e}")), None)),
                    }
                });
                let body: RespBody = http_body_util::StreamBody::new(frames).boxed();
                (resp.map(|()| body), None)
            }
        };
        let (resp, h1_back) = resp;
        let head = Instant::now();
        entry.phases.send = 0.0;
        entry.phases.wait = ms(head - sent);
        entry.status = resp.status().as_u16();
        let h = resp.headers();
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.to_string())
        };
        entry.content_type = get("content-type");
        entry.content_encoding = get("content-encoding");
        entry.cache_status = get("cache-status");
        entry.server_timing = h
            .get_all("server-timing")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_server_timing)
            .collect();
        if resp.status().is_redirection()
            && let Some(loc) = get("location")
        {
            entry.redirect_to = url.join(&loc).ok().map(|u| u.to_string());
        }
        entry.response_headers = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        if tls && entry.http_version != "HTTP/3" {
            self.remember_alt_svc(&origin, &host, h);
        }
        let mut decoder = Decoder::new(entry.content_encoding.as_deref());
        let (resp_parts, mut body) = resp.into_parts();
        let mut decoded = Vec::new();
        loop {
            let frame = match tokio::time::timeout(self.opts.timeout, body.frame()).await {
                Err(_) => return Err("timeout while receiving the body".into()),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(format!("body: {e}")),
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                entry.transfer_bytes += data.len() as u64;
                let chunk = decoder.feed(&data)?;
                if let Some(cb) = on_chunk.as_mut() {
                    cb(&chunk);
                }
                decoded.extend_from_slice(&chunk);
            }
        }
        let tail = decoder.finish()?;
        if let Some(cb) = on_chunk.as_mut()
            && !tail.is_empty()
        {
            cb(&tail);
        }
        decoded.extend_from_slice(&tail);
        entry.phases.receive = ms(head.elapsed());
        entry.body_bytes = decoded.len() as u64;
        let mut decoded = Bytes::from(decoded);
        if let Some(cache) = self.opts.cache.as_ref().filter(|_| use_cache)
            && let Some(fresh) = cache.after(&cache_req, &resp_parts, &decoded, revalidating)
        {
            // 304: the stored body is the answer
            entry.from_cache = Some("revalidated".into());
            entry.body_bytes = fresh.body.len() as u64;
            if let Some(cb) = on_chunk.as_mut() {
                cb(&fresh.body);
            }
            decoded = fresh.body;
        }

        if let Some((id, server, s)) = h1_back
            && !s.is_closed()
        {
            {
                pool.idle.lock().push(Conn {
                    id,
                    server,
                    sender: Sender::H1(s),
                });
            }
        }
        Ok(decoded)
    }

    /// What an `Alt-Svc` field says of HTTP/3 for this origin (RFC 7838: `h3=":PORT"`,
    /// or `h3="HOST:PORT"` naming this same host; `clear` forgets it).
    fn remember_alt_svc(&self, origin: &str, host: &str, headers: &http::HeaderMap) {
        for value in headers.get_all("alt-svc") {
            let Ok(value) = value.to_str() else { continue };
            if value.trim() == "clear" {
                self.alt_svc.lock().remove(origin);
                self.save_alt_svc();
                return;
            }
            for alt in value.split(',') {
                let mut params = alt.split(';');
                let Some(authority) = params.next().and_then(|a| a.trim().strip_prefix("h3=\""))
                else {
                    continue;
                };
                let authority = authority.split('"').next().unwrap_or("");
                let Some((alt_host, alt_port)) = authority.rsplit_once(':') else {
                    continue;
                };
                // RFC 7838 §3.1: ma (max-age) defaults to 24 hours
                let max_age = params
                    .filter_map(|p| p.trim().strip_prefix("ma="))
                    .find_map(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(86_400);
                if (alt_host.is_empty() || alt_host.eq_ignore_ascii_case(host))
                    && let Ok(p) = alt_port.parse::<u16>()
                {
                    let entry = (p, now_secs() + max_age);
                    let changed = self
                        .alt_svc
                        .lock()
                        .insert(origin.to_string(), entry)
                        .is_none_or(|(old, _)| old != p);
                    if changed {
                        self.save_alt_svc();
                    }
                    return;
                }
            }
        }
    }

    fn save_alt_svc(&self) {
        if let Some(cache) = &self.opts.cache {
            cache.save_alt_svc(&self.alt_svc.lock());
        }
    }

    /// DNS, then one QUIC handshake (transport and TLS 1.3 together, timed as the
    /// connect phase), then HTTP/3's control streams.
    async fn dial_quic(&self, host: &str, port: u16, entry: &mut Entry) -> Result<Conn, String> {
        let addrs = self.resolve(host, entry).await?;
        let t1 = Instant::now();
        let mut last = String::from("no address");
        let mut found = None;
        for ip in &addrs {
            let sa = SocketAddr::new(*ip, port);
            let local: SocketAddr = if ip.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let mut endpoint = quinn::Endpoint::client(local).map_err(|e| format!("QUIC: {e}"))?;
            endpoint.set_default_client_config(self.quic.clone());
            let connecting = endpoint
                .connect(sa, host)
                .map_err(|e| format!("QUIC: {e}"))?;
            match tokio::time::timeout(self.opts.timeout, connecting).await {
                Ok(Ok(c)) => {
                    found = Some((c, sa, endpoint));
                    break;
                }
                Ok(Err(e)) => last = format!("QUIC: {e} ({sa})"),
                Err(_) => {
                    last = format!(
                        "QUIC: no answer within {:?} ({sa}); is UDP blocked?",
                        self.opts.timeout
                    )
                }
            }
        }
        let (c, server, endpoint) = found.ok_or(last)?;
        entry.phases.connect = Some(ms(t1.elapsed()));
        let chain = c
            .peer_identity()
            .and_then(|i| {
                i.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .map(|certs| crate::certificate::chain(&certs))
            .unwrap_or_default();
        let (subject, issuer) = chain
            .first()
            .map(|leaf| (leaf.subject.clone(), leaf.issuer.clone()))
            .unwrap_or_default();
        entry.tls = Some(TlsInfo {
            version: "TLSv1_3".into(),
            cipher: "(not exposed by quinn)".into(),
            alpn: Some("h3".into()),
            subject,
            issuer,
            resumed: false,
            chain,
        });
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(c))
            .await
            .map_err(|e| format!("HTTP/3: {e}"))?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            drop(endpoint);
        });
        Ok(Conn {
            id,
            server,
            sender: Sender::H3(send),
        })
    }

    /// The name's addresses (the DNS phase), or the literal IP.
    async fn resolve(&self, host: &str, entry: &mut Entry) -> Result<Vec<IpAddr>, String> {
        let t0 = Instant::now();
        let addrs: Vec<IpAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => {
                entry.dns = Some(DnsInfo {
                    answered_by: "literal".into(),
                    addrs: vec![ip.to_string()],
                    ttl: 0,
                    steps: 0,
                    dnssec: "unchecked",
                    doh: vec![],
                });
                vec![ip]
            }
            Err(_)
                if self
                    .opts
                    .doh
                    .as_ref()
                    .is_some_and(|d| d.host_str() != Some(host)) =>
            {
                let doh = self.opts.doh.clone().expect("DoH URL");
                let r = self.resolve_doh(host, &doh, entry).await;
                entry.phases.dns = Some(ms(t0.elapsed()));
                return r;
            }
            Err(_) => {
                let l = match self.opts.resolver.lookup_ip(host).await {
                    Ok(l) => l,
                    Err(e) => {
                        // the time a failed lookup took is still the DNS phase
                        entry.phases.dns = Some(ms(t0.elapsed()));
                        return Err(e.to_string());
                    }
                };
                entry.dns = Some(DnsInfo {
                    answered_by: match &l.answered_by {
                        hopline_dns::Answered::Cache => "cache".into(),
                        hopline_dns::Answered::HostsFile => "hosts_file".into(),
                        hopline_dns::Answered::Forwarder(a) => format!("resolver {a}"),
                        hopline_dns::Answered::Recursive => "recursive".into(),
                    },
                    addrs: l.addrs.iter().map(|a| a.to_string()).collect(),
                    ttl: l.ttl.as_secs(),
                    steps: l.steps.len(),
                    dnssec: match l.security {
                        hopline_dns::Security::Secure => "secure",
                        hopline_dns::Security::Insecure => "insecure",
                        hopline_dns::Security::Unchecked => "unchecked",
                    },
                    doh: vec![],
                });
                l.addrs
            }
        };
        entry.phases.dns = Some(ms(t0.elapsed()));
        Ok(addrs)
    }

    /// DNS, TCP, TLS and the HTTP handshake of a new connection.
    async fn dial(
        &self,
        host: &str,
        port: u16,
        tls: bool,
        entry: &mut Entry,
    ) -> Result<Conn, String> {
        let addrs = self.resolve(host, entry).await?;
        let t1 = Instant::now();
        let mut last = String::from("no address");
        let mut stream = None;
        for ip in &addrs {
            let sa = SocketAddr::new(*ip, port);
            match tokio::time::timeout(self.opts.timeout, TcpStream::connect(sa)).await {
                Ok(Ok(s)) => {
                    stream = Some((s, sa));
                    break;
                }
                Ok(Err(e)) => last = format!("connect: {e} ({sa})"),
                Err(_) => last = format!("connect: timeout ({sa})"),
            }
        }
        let (stream, server) = stream.ok_or(last)?;
        let _ = stream.set_nodelay(true);
        entry.phases.connect = Some(ms(t1.elapsed()));
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        if tls {
            let t2 = Instant::now();
            let name = rustls_pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("TLS: {e}"))?;
            let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
            let s = tokio::time::timeout(self.opts.timeout, connector.connect(name, stream))
                .await
                .map_err(|_| "TLS: handshake timeout".to_string())?
                .map_err(|e| format!("TLS: {e}"))?;
            entry.phases.tls = Some(ms(t2.elapsed()));
            let c = s.get_ref().1;
            let alpn = c
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let chain = c
                .peer_certificates()
                .map(crate::certificate::chain)
                .unwrap_or_default();
            let (subject, issuer) = chain
                .first()
                .map(|leaf| (leaf.subject.clone(), leaf.issuer.clone()))
                .unwrap_or_default();
            entry.tls = Some(TlsInfo {
                version: c
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                cipher: c
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default(),
                alpn: alpn.clone(),
                subject,
                issuer,
                resumed: matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
                chain,
            });
            let h2 = alpn.as_deref() == Some("h2");
            self.handshake(TokioIo::new(s), h2, id, server).await
        } else {
            self.handshake(
                TokioIo::new(stream),
                self.opts.force == Force::Http2,
                id,
                server,
            )
            .await
        }
    }

    async fn handshake<I>(
        &self,
        io: I,
        h2: bool,
        id: usize,
        server: SocketAddr,
    ) -> Result<Conn, String>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        if h2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn {
                id,
                server,
                sender: Sender::H2(send),
            })
        } else {
            let (send, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn {
                id,
                server,
                sender: Sender::H1(send),
            })
        }
    }
}

/// Streaming content decoding (gzip, br, zstd, identity).
enum Decoder {
    Identity,
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Br(Box<brotli::DecompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl Decoder {
    fn new(enc: Option<&str>) -> Decoder {
        match enc.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
            Some("gzip") | Some("x-gzip") => {
                Decoder::Gzip(flate2::write::GzDecoder::new(Vec::new()))
            }
            Some("br") => Decoder::Br(Box::new(brotli::DecompressorWriter::new(Vec::new(), 8192))),
            Some("zstd") => zstd::stream::write::Decoder::new(Vec::new())
                .map(Decoder::Zstd)
                .unwrap_or(Decoder::Identity),
            _ => Decoder::Identity,
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<Vec<u8>, String> {
        use std::io::Write;
        let err = |e: std::io::Error| format!("content decoding: {e}");
        match self {
            Decoder::Identity => Ok(data.to_vec()),
            Decoder::Gzip(d) => {
                d.write_all(data).map_err(err)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Br(d) => {
                d.write_all(data).map_err(err)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Zstd(d) => {
                d.write_all(data).map_err(err)?;
                d.flush().map_err(err)?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }

    fn finish(self) -> Result<Vec<u8>, String> {
        let err = |e: std::io::Error| format!("content decoding: {e}");
        match self {
            Decoder::Identity => Ok(Vec::new()),
            Decoder::Gzip(d) => d.finish().map_err(err),
            Decoder::Br(d) => d
                .into_inner()
                .map_err(|_| "content decoding: brotli stream incomplete".to_string()),
            Decoder::Zstd(mut d) => {
                use std::io::Write;
                d.flush().map_err(err)?;
                Ok(d.into_inner())
            }
        }
    }
}
