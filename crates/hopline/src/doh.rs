//! DNS over HTTPS (RFC 8484) as a product on the edge's routes: `[doh.NAME]` names the
//! DNS resolver it relays to, and a route `service = "doh:NAME"` (by convention
//! `/dns-query`) answers `GET ?dns=` (base64url) and `POST application/dns-message` over
//! HTTP/1.1, HTTP/2 and HTTP/3 — the edge's engine, not a second HTTP server. The DNS
//! message goes to the resolver as it came (DO/CD/AD kept): directly when the resolver
//! runs in this process, else over UDP, then TCP when truncated; the answer comes back
//! with a `Cache-Control` max-age of its smallest TTL.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use hickory_proto::op::{Message, MessageType};
use hopline_edge::Body;
use hopline_edge::Services;
use hopline_edge::config::ConfigError;
use hopline_edge::engine::body::RequestBody;
use hopline_edge::engine::error::BoxError;
use hopline_edge::request::service::Product;
use hopline_edge::service::{BoxFuture, RouteService, ServiceContext};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The kind of `[doh.NAME]` sections and `service = "doh:NAME"` routes.
pub const KIND: &str = "doh";

/// The largest DNS message (RFC 8484 §6: a request body beyond it is refused, 413).
const MAX_MESSAGE: usize = 65_535;

/// `[doh.NAME]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DohConfig {
    /// The DNS resolver the questions go to, `IP:PORT` (e.g. a `[[dns.resolver]]`).
    pub resolver: String,
}

/// Read every `[doh.NAME]` section of a config file's text.
fn load(text: &str, file: &Path) -> Result<BTreeMap<String, SocketAddr>, ConfigError> {
    #[derive(Deserialize)]
    struct Sections {
        #[serde(default)]
        doh: BTreeMap<String, DohConfig>,
    }
    let sections: Sections =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(file, text, "[doh]", &e))?;
    let mut out = BTreeMap::new();
    for (name, c) in sections.doh {
        let header = format!("[doh.{name}]");
        let at = text.find(&header).map(|i| i..i + header.len());
        let addr = c.resolver.parse::<SocketAddr>().map_err(|_| {
            ConfigError::at(
                file,
                text,
                at,
                format!(
                    "{header}: resolver {:?}: expected IP:PORT, e.g. \"127.0.0.1:5300\"",
                    c.resolver
                ),
            )
        })?;
        out.insert(name, addr);
    }
    Ok(out)
}

/// The DNS-over-HTTPS relays of a running server.
#[derive(Debug, Default)]
pub struct Relays {
    running: parking_lot::Mutex<BTreeMap<String, Arc<Relay>>>,
}

impl Product for Relays {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, text: &str, file: &Path) -> Result<(), BoxError> {
        load(text, file)?;
        Ok(())
    }

    fn apply(&self, text: &str, file: &Path, services: &mut Services) -> Result<(), BoxError> {
        let sections = load(text, file)?;
        let mut running = self.running.lock();
        let mut next = BTreeMap::new();
        for (name, resolver) in sections {
            let relay = match running.get(&name) {
                Some(r) if r.resolver == resolver => r.clone(),
                _ => Arc::new(Relay {
                    resolver,
                    answered: AtomicU64::new(0),
                    refused: AtomicU64::new(0),
                }),
            };
            services.insert(KIND, &name, Arc::new(DohService(relay.clone())));
            next.insert(name, relay);
        }
        *running = next;
        Ok(())
    }

    fn shutdown(&self) {
        self.running.lock().clear();
    }
}

/// One `[doh.NAME]`: the resolver it relays to, and its counters.
#[derive(Debug)]
pub struct Relay {
    resolver: SocketAddr,
    answered: AtomicU64,
    refused: AtomicU64,
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Relay {
    /// The DNS question in `req`, or the HTTP answer refusing it.
    async fn question(req: Request<RequestBody>) -> Result<Vec<u8>, Response<Body>> {
        match *req.method() {
            Method::GET | Method::HEAD => {
                let dns = req
                    .uri()
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("dns="))
                    .ok_or_else(|| plain(StatusCode::BAD_REQUEST, "no dns= parameter"))?;
                if dns.len() > MAX_MESSAGE * 4 / 3 + 4 {
                    return Err(plain(StatusCode::URI_TOO_LONG, "dns= is too long"));
                }
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(dns.trim_end_matches('='))
                    .map_err(|_| plain(StatusCode::BAD_REQUEST, "dns= is not base64url"))
            }
            Method::POST => {
                let content_type = req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !content_type.eq_ignore_ascii_case("application/dns-message") {
                    // read what was sent first: an HTTP/2 client still sending its body
                    // would see the stream reset instead of the answer
                    let _ = http_body_util::Limited::new(req.into_body(), MAX_MESSAGE)
                        .collect()
                        .await;
                    return Err(plain(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "expected Content-Type: application/dns-message",
                    ));
                }
                match http_body_util::Limited::new(req.into_body(), MAX_MESSAGE)
                    .collect()
                    .await
                {
                    Ok(b) => Ok(b.to_bytes().to_vec()),
                    Err(_) => Err(plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "a DNS message is at most 65,535 bytes",
                    )),
                }
            }
            _ => Err(plain(StatusCode::METHOD_NOT_ALLOWED, "GET or POST")),
        }
    }

    /// Ask the resolver: UDP, then TCP when the answer is truncated.
    async fn ask(&self, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let bind: SocketAddr = if self.resolver.is_ipv4() {
            "0.0.0.0:0".parse().expect("addr")
        } else {
            "[::]:0".parse().expect("addr")
        };
        let sock = tokio::net::UdpSocket::bind(bind).await?;
        sock.send_to(query, self.resolver).await?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("the resolver did not answer in 5 s"))??;
        buf.truncate(n);
        // TC: the whole answer over TCP
        if buf.len() > 2 && buf[2] & 0x02 != 0 {
            let mut tcp = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(self.resolver),
            )
            .await
            .map_err(|_| std::io::Error::other("no TCP connection to the resolver in 5 s"))??;
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            tcp.write_all(&framed).await?;
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).await?;
            buf = vec![0u8; u16::from_be_bytes(len) as usize];
            tcp.read_exact(&mut buf).await?;
        }
        Ok(buf)
    }

    async fn handle(&self, req: Request<RequestBody>) -> Response<Body> {
        let head_only = req.method() == Method::HEAD;
        let query = match Self::question(req).await {
            Ok(q) => q,
            Err(refused) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return refused;
            }
        };
        // a DNS query it must be (RFC 8484 §4.1: malformed → 400)
        let q = match Message::from_vec(&query) {
            Ok(m) if m.metadata.message_type == MessageType::Query && m.queries.len() == 1 => m,
            _ => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return plain(StatusCode::BAD_REQUEST, "not a DNS query");
            }
        };
        // RFC 8484 §5.1: freshness is the smallest TTL of the answer
        let min_ttl = |m: &Message| {
            m.answers
                .iter()
                .chain(&m.authorities)
                .map(|r| r.ttl)
                .min()
                .unwrap_or(0)
        };
        let (answer, ttl) = match hopline_dns::service::local_resolver(self.resolver) {
            // the resolver runs in this process: asked directly, no socket in between
            Some(resolver) => {
                let m = if q.metadata.recursion_desired {
                    resolver.answer(&q).await
                } else {
                    resolver.answer_cached(&q).unwrap_or_else(|| {
                        hopline_dns::wire::response_for(
                            &q,
                            hickory_proto::op::ResponseCode::Refused,
                        )
                    })
                };
                (m.to_vec().unwrap_or_default(), min_ttl(&m))
            }
            None => match self.ask(&query).await {
                Ok(a) => {
                    let ttl = Message::from_vec(&a).map(|m| min_ttl(&m)).unwrap_or(0);
                    (a, ttl)
                }
                Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("resolver: {e}")),
            },
        };
        self.answered.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(if head_only {
            Body::empty()
        } else {
            Body::full(answer)
        });
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/dns-message"),
        );
        if let Ok(v) = header::HeaderValue::from_str(&format!("max-age={ttl}")) {
            h.insert(header::CACHE_CONTROL, v);
        }
        r
    }
}

/// A relay as the edge serves it on its routes.
struct DohService(Arc<Relay>);

impl RouteService for DohService {
    fn call(&self, req: Request<RequestBody>, _ctx: ServiceContext) -> BoxFuture<Response<Body>> {
        let relay = self.0.clone();
        Box::pin(async move { relay.handle(req).await })
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "resolver": self.0.resolver.to_string(),
            "answered": self.0.answered.load(Ordering::Relaxed),
            "refused": self.0.refused.load(Ordering::Relaxed),
        })
    }
}
