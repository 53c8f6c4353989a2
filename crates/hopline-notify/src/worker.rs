//! Workers: a dispatcher claims due messages from the store (woken at once by a new
//! message, or when the next retry is due), and hands each to its channel's provider
//! under a per-channel concurrency limit; the answer decides the next status (delivered,
//! a retry on the schedule — never before a `Retry-After` —, failed, or dead after the
//! last attempt). Delivery is at-least-once: a message in flight when the process dies is
//! sent again after a restart, with the same id, so receivers can drop duplicates.
//!
//! The webhook provider POSTs the message, signed per Standard Webhooks (`webhook-id` is
//! the message id on every attempt), with a 15 s timeout, no redirects followed, and — unless
//! `allow_private_targets` — never to a loopback, private, link-local or otherwise
//! non-public address (checked on the resolved address it then connects to, so DNS cannot
//! swap it afterwards).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, Semaphore};

use crate::clock::{http_date_ms, now_ms};
use crate::events::StatusChange;
use crate::model::{Schedule, Status, Verdict, judge, next_step, webhook_signature};
use crate::store::Store;
use crate::store::records::{Attempt, Claimed, Outcome};

/// What the workers run with.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Retry delays.
    pub schedule: Schedule,
    /// Webhooks to loopback/private addresses allowed (tests, local setups).
    pub allow_private_targets: bool,
    /// A webhook attempt's timeout.
    pub webhook_timeout: Duration,
    /// Attempts in flight per channel.
    pub concurrency: usize,
    /// Status changes, for the `GET /v1/events` feed.
    pub events: crate::events::Events,
    /// The SMS gateway, if configured.
    pub sms: Option<crate::config::SmsProvider>,
    /// The push provider, if configured.
    pub push: Option<crate::config::PushProvider>,
    /// The SMTP relay, if configured (a pooled transport, built once).
    pub email: Option<Arc<Mailer>>,
}

/// The SMTP relay: its transport (connections pooled) and From address.
pub struct Mailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for the configured relay.
    pub fn new(p: &crate::config::EmailProvider, timeout: Duration) -> Result<Mailer, String> {
        use lettre::AsyncSmtpTransport as T;
        let builder = match p.tls.as_str() {
            "tls" => T::<lettre::Tokio1Executor>::relay(&p.host)
                .map_err(|e| e.to_string())?
                .port(p.port.unwrap_or(465)),
            "none" => {
                T::<lettre::Tokio1Executor>::builder_dangerous(&p.host).port(p.port.unwrap_or(25))
            }
            _ => T::<lettre::Tokio1Executor>::starttls_relay(&p.host)
                .map_err(|e| e.to_string())?
                .port(p.port.unwrap_or(587)),
        };
        let builder = match (&p.user, &p.password) {
            (Some(u), Some(pw)) => builder.credentials(
                lettre::transport::smtp::authentication::Credentials::new(u.clone(), pw.clone()),
            ),
            _ => builder,
        };
        Ok(Mailer {
            transport: builder.timeout(Some(timeout)).build(),
            from: p.from.parse().map_err(|e| format!("from: {e}"))?,
        })
    }
}

/// An email through the relay. A 2xx from the relay: sent; a 4xx (transient): retry; a
/// 5xx (permanent): failed.
async fn email(mailer: &Mailer, c: &Claimed) -> Result<(u16, Option<Duration>), Refused> {
    use lettre::AsyncTransport;
    let m = &c.message;
    let to: lettre::message::Mailbox =
        m.to.parse()
            .map_err(|e| Refused::Never(format!("to: {e}")))?;
    let domain = mailer.from.email.domain().to_string();
    let message = lettre::Message::builder()
        .from(mailer.from.clone())
        .to(to)
        .subject(m.subject.clone().unwrap_or_default())
        .message_id(Some(format!("<{}@{domain}>", m.id)))
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(m.body.clone())
        .map_err(|e| Refused::Never(e.to_string()))?;
    match mailer.transport.send(message).await {
        Ok(r) => Ok((if r.is_positive() { 200 } else { 500 }, None)),
        Err(e) if e.is_permanent() => Ok((400, None)),
        Err(e) => Err(Refused::Retry(format!("SMTP: {e}"))),
    }
}

/// Is `ip` an address a webhook may reach from the public side?
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

/// The workers' settings, replaced whole on reload (each attempt reads the current ones).
pub type LiveSettings = Arc<parking_lot::RwLock<Arc<WorkerSettings>>>;

/// Run the dispatcher until the process ends.
pub fn spawn(
    store: Arc<Store>,
    live: LiveSettings,
    wake: Arc<Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // (the number of attempts in flight is fixed at start)
        let in_flight = live.read().concurrency.max(1) * 4;
        let slots = Arc::new(Semaphore::new(in_flight));
        let tls = tls_config();
        // (as many idle connections per endpoint as attempts can be in flight: fewer
        // would close and reopen connections to a busy endpoint all the time)
        let pool = Arc::new(ConnPool::new(in_flight));
        loop {
            let free = slots.available_permits();
            let (claimed, next_due) = if free > 0 {
                match store.claim(now_ms(), free.min(512)).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(target: "hopline::notify", "claiming messages failed: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            } else {
                (Vec::new(), Some(0))
            };
            let got = claimed.len();
            for c in claimed {
                let permit = slots.clone().acquire_owned().await.expect("never closed");
                let (store, settings, tls, wake, pool) = (
                    store.clone(),
                    live.read().clone(),
                    tls.clone(),
                    wake.clone(),
                    pool.clone(),
                );
                tokio::spawn(async move {
                    attempt(&store, &settings, &tls, &pool, c).await;
                    drop(permit);
                    // a finished attempt may leave a retry due, and frees a slot
                    wake.notify_one();
                });
            }
            if got > 0 && slots.available_permits() > 0 {
                // more may be due: claim again after a moment, so that the messages
                // arriving meanwhile are claimed together (one transaction, not many)
                tokio::time::sleep(CLAIM_BATCH_WAIT).await;
                continue;
            }
            // sleep until something is due, a new message arrives, or a slot frees up
            let wait = match next_due {
                Some(at) => {
                    Duration::from_millis(at.saturating_sub(now_ms())).min(Duration::from_secs(1))
                }
                None => Duration::from_secs(1),
            };
            if !wait.is_zero() || slots.available_permits() == 0 {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
                }
            }
            tokio::time::sleep(CLAIM_BATCH_WAIT).await;
        }
    })
}

/// How long the dispatcher lets due messages gather before it claims them: a little
/// latency (well under the 100 ms budget from accept to first attempt) for far fewer
/// transactions under load.
const CLAIM_BATCH_WAIT: Duration = Duration::from_millis(2);

fn tls_config() -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// One attempt of one message, recorded.
async fn attempt(
    store: &Store,
    settings: &WorkerSettings,
    tls: &Arc<rustls::ClientConfig>,
    pool: &ConnPool,
    c: Claimed,
) {
    let m = &c.message;
    let started = tokio::time::Instant::now();
    let at_ms = now_ms();
    let (status, retry_after, error, disable) = match m.channel.as_str() {
        "webhook" => match store.disabled(&m.to).await {
            Ok(true) => (
                None,
                None,
                Some("endpoint disabled (it answered 410 Gone)".to_string()),
                None,
            ),
            _ => {
                let r = webhook(settings, tls, pool, &c).await;
                match r {
                    Ok((s, ra)) => (Some(s), ra, None, (s == 410).then(|| m.to.clone())),
                    Err(Refused::Retry(e)) => (None, None, Some(e), None),
                    Err(Refused::Never(e)) => (Some(0), None, Some(e), None),
                }
            }
        },
        channel => {
            let r = match (channel, &settings.sms, &settings.push, &settings.email) {
                ("sms", Some(p), _, _) => Some(sms(settings, tls, pool, p, &c).await),
                ("push", _, Some(p), _) => Some(push(settings, tls, pool, p, &c).await),
                ("email", _, _, Some(mailer)) => Some(email(mailer, &c).await),
                _ => None,
            };
            match r {
                Some(Ok((s, ra))) => (Some(s), ra, None, None),
                Some(Err(Refused::Retry(e))) => (None, None, Some(e), None),
                Some(Err(Refused::Never(e))) => (Some(0), None, Some(e), None),
                None => (
                    Some(0),
                    None,
                    Some(format!("no provider configured for channel {channel}")),
                    None,
                ),
            }
        }
    };
    let verdict = match (status, &error) {
        // (0: refused before sending, for good)
        (Some(0), _) => Verdict::Failed,
        (None, Some(e)) if e.starts_with("endpoint disabled") => Verdict::Failed,
        _ => judge(status, retry_after),
    };
    let jitter: f64 = rand::random::<f64>() * 2.0 - 1.0;
    let now = now_ms();
    let (mut next, next_ms) = next_step(&settings.schedule, c.attempt, verdict, now, jitter);
    if next == Status::Delivered && m.channel != "webhook" {
        // a provider that took it has sent it; delivery is what its callback reports
        next = Status::Sent;
    }
    let result = match verdict {
        Verdict::Delivered if next == Status::Sent => "sent",
        Verdict::Delivered => "delivered",
        Verdict::Retry { .. } if next == Status::Dead => "dead",
        Verdict::Retry { .. } => "retry",
        Verdict::Failed => "failed",
        Verdict::Gone => "gone",
    };
    let outcome = Outcome {
        attempt: Attempt {
            n: c.attempt,
            at_ms,
            provider: m.channel.clone(),
            result: result.into(),
            http_status: status.filter(|s| *s != 0),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error,
        },
        status: next,
        next_ms,
        disable_endpoint: disable,
    };
    let status = outcome.status;
    if let Err(e) = store.record(&m.id, outcome, now).await {
        tracing::error!(target: "hopline::notify", "recording attempt {} of {} failed: {e}", c.attempt, m.id);
    } else {
        settings.events.send(StatusChange {
            app: m.app.clone(),
            id: m.id.clone(),
            status: status.as_str(),
            attempt: c.attempt,
            at_ms: now,
        });
    }
}

enum Refused {
    /// Try again later (network error, timeout).
    Retry(String),
    /// Never send (a private address without allow_private_targets, a bad URL).
    Never(String),
}

/// POST `body` to `url` (over a kept-alive connection when there is one); the status and
/// any `Retry-After`. With `guard`, a non-public address is refused unless
/// `allow_private_targets` (recipients' URLs; a configured provider's URL is trusted).
#[allow(clippy::too_many_arguments)]
async fn post(
    settings: &WorkerSettings,
    tls: &Arc<rustls::ClientConfig>,
    pool: &ConnPool,
    url: &str,
    guard: bool,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
) -> Result<(u16, Option<Duration>), Refused> {
    let url = url::Url::parse(url).map_err(|e| Refused::Never(format!("bad URL: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| Refused::Never("no host".into()))?
        .to_string();
    let https = url.scheme() == "https";
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let lookup_host = host.trim_matches(['[', ']']).to_string();
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        settings.webhook_timeout,
        tokio::net::lookup_host((lookup_host.as_str(), port)),
    )
    .await
    .map_err(|_| Refused::Retry(format!("resolving {host} timed out")))?
    .map_err(|e| Refused::Retry(format!("resolving {host}: {e}")))?
    .collect();
    let addr = addrs
        .iter()
        .copied()
        .find(|a| !guard || settings.allow_private_targets || is_public(a.ip()))
        .ok_or_else(|| {
            if addrs.is_empty() {
                Refused::Retry(format!("{host} has no address"))
            } else {
                Refused::Never(format!(
                    "{host} resolves to a non-public address ({}); set allow_private_targets = true to allow it",
                    addrs[0].ip()
                ))
            }
        })?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut req = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(
            http::header::USER_AGENT,
            concat!("hopline-notify/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| Refused::Never(e.to_string()))?;
    let key = (addr, https.then(|| lookup_host.clone()));
    let exchange = async {
        // a kept-alive connection to the same address (and TLS name) first
        let mut sender = None;
        while let Some(mut s) = pool.take(&key) {
            if s.ready().await.is_ok() {
                sender = Some(s);
                break;
            }
        }
        let mut sender = match sender {
            Some(s) => s,
            None => {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| Refused::Retry(format!("connect to {addr}: {e}")))?;
                let _ = tcp.set_nodelay(true);
                if https {
                    let name = rustls_pki_types::ServerName::try_from(lookup_host.clone())
                        .map_err(|e| Refused::Never(e.to_string()))?;
                    let stream = tokio_rustls::TlsConnector::from(tls.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| Refused::Retry(format!("TLS with {host}: {e}")))?;
                    handshake(stream).await?
                } else {
                    handshake(tcp).await?
                }
            }
        };
        let answer = send(&mut sender, req).await?;
        if !sender.is_closed() {
            pool.put(key, sender);
        }
        Ok::<_, Refused>(answer)
    };
    tokio::time::timeout(settings.webhook_timeout, exchange)
        .await
        .map_err(|_| {
            Refused::Retry(format!(
                "no answer within {} s",
                settings.webhook_timeout.as_secs()
            ))
        })?
}

/// The message to its URL, signed per Standard Webhooks.
async fn webhook(
    settings: &WorkerSettings,
    tls: &Arc<rustls::ClientConfig>,
    pool: &ConnPool,
    c: &Claimed,
) -> Result<(u16, Option<Duration>), Refused> {
    let m = &c.message;
    let body = serde_json::json!({
        "type": "notification",
        "id": m.id,
        "subject": m.subject,
        "body": m.body,
        "metadata": m.metadata,
        "created_at": m.created_ms / 1000,
        "attempt": c.attempt,
    })
    .to_string();
    let ts = now_ms() / 1000;
    let signature = webhook_signature(&c.webhook_secret, &m.id, ts, body.as_bytes())
        .ok_or_else(|| Refused::Never("the app has no valid webhook secret".into()))?;
    let headers = vec![
        ("webhook-id", m.id.clone()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", signature),
    ];
    post(
        settings,
        tls,
        pool,
        &m.to,
        true,
        "application/json",
        headers,
        Bytes::from(body),
    )
    .await
}

/// An SMS through the configured gateway: a form-encoded POST with basic auth, as common
/// SMS gateways take it (`To`, `From`, `Body`, `Reference` = the message id).
async fn sms(
    settings: &WorkerSettings,
    tls: &Arc<rustls::ClientConfig>,
    pool: &ConnPool,
    p: &crate::config::SmsProvider,
    c: &Claimed,
) -> Result<(u16, Option<Duration>), Refused> {
    use base64::Engine;
    let m = &c.message;
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("To", &m.to)
        .append_pair("From", &p.from)
        .append_pair("Body", &m.body)
        .append_pair("Reference", &m.id)
        .finish();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", p.user, p.password));
    let headers = vec![
        ("authorization", format!("Basic {auth}")),
        ("idempotency-key", m.id.clone()),
    ];
    post(
        settings,
        tls,
        pool,
        &p.url,
        false,
        "application/x-www-form-urlencoded",
        headers,
        Bytes::from(form),
    )
    .await
}

/// A push notification through the configured provider: a JSON POST with a bearer
/// token, shaped like FCM HTTP v1 (`message.token`, `notification`, `data.id`).
async fn push(
    settings: &WorkerSettings,
    tls: &Arc<rustls::ClientConfig>,
    pool: &ConnPool,
    p: &crate::config::PushProvider,
    c: &Claimed,
) -> Result<(u16, Option<Duration>), Refused> {
    let m = &c.message;
    let body = serde_json::json!({
        "message": {
            "token": m.to,
            "notification": {"title": m.subject, "body": m.body},
            "data": {"id": m.id},
        }
    })
    .to_string();
    let headers = vec![("authorization", format!("Bearer {}", p.token))];
    post(
        settings,
        tls,
        pool,
        &p.url,
        false,
        "application/json",
        headers,
        Bytes::from(body),
    )
    .await
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
/// (address, TLS name)
type PoolKey = (SocketAddr, Option<String>);

/// Idle webhook connections, by (address, TLS name): a busy endpoint is not connected to
/// again for every message.
pub struct ConnPool {
    idle: parking_lot::Mutex<std::collections::HashMap<PoolKey, Vec<Sender>>>,
    /// Idle connections kept per endpoint.
    max_idle: usize,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnPool")
    }
}

impl ConnPool {
    /// A pool keeping up to `max_idle` idle connections per endpoint.
    pub fn new(max_idle: usize) -> ConnPool {
        ConnPool {
            idle: parking_lot::Mutex::default(),
            max_idle,
        }
    }

    fn take(&self, key: &(SocketAddr, Option<String>)) -> Option<Sender> {
        self.idle.lock().get_mut(key)?.pop()
    }

    fn put(&self, key: (SocketAddr, Option<String>), s: Sender) {
        let mut idle = self.idle.lock();
        let v = idle.entry(key).or_default();
        if v.len() >= self.max_idle {
            v.retain(|s| !s.is_closed());
        }
        if v.len() < self.max_idle {
            v.push(s);
        }
    }
}

async fn handshake<S>(io: S) -> Result<Sender, Refused>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Refused::Retry(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send(
    sender: &mut Sender,
    req: http::Request<Full<Bytes>>,
) -> Result<(u16, Option<Duration>), Refused> {
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Refused::Retry(e.to_string()))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_secs)
                .ok()
                .or_else(|| {
                    let at = http_date_ms(v.trim())?;
                    Some(Duration::from_millis(at.saturating_sub(now_ms())))
                })
        });
    // read (and drop) a little of the body so the exchange completes cleanly
    let _ = tokio::time::timeout(Duration::from_secs(1), resp.into_body().collect()).await;
    Ok((status, retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
