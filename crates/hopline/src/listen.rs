//! `hopline publish` and `hopline listen`: the client side of real-time channels — publish
//! an event, subscribe by short polling, long polling, SSE or WebSocket, and `--compare`
//! the four side by side on live traffic (latency, requests, bytes on the wire, missed
//! events), the comparison the seed notes make in words.
//!
//! Every connection is counted at the socket (headers, framing and TLS records
//! included), so "bytes per event" is what really crossed the wire.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Where and how to reach a channel URL.
#[derive(Debug, Clone, clap::Args)]
pub struct Reach {
    /// Trust this CA (PEM) too, e.g. hopline's local CA (default for .test names: the
    /// running `hopline up`'s).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Resolve names with this resolver (IP or IP:PORT) (default for .test names: the
    /// running `hopline up`'s; otherwise /etc/hosts and /etc/resolv.conf).
    #[arg(long)]
    pub resolver: Option<String>,
}

/// Publish one event on a channel.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hopline publish http://127.0.0.1:8080/live/orders '{\"id\": 42}' --secret \"$SECRET\"
  hopline publish https://www.shop.test:8443/live/orders 'hello' --token \"$JWT\" --json
  hopline publish http://127.0.0.1:8080/live/orders --presence --secret \"$SECRET\"   # who is subscribed")]
pub struct PublishArgs {
    /// The channel URL (`…/PREFIX/CHANNEL`).
    pub url: String,
    /// The event's data (`-` reads standard input).
    #[arg(required_unless_present_any = ["info", "delete", "presence"])]
    pub data: Option<String>,
    /// Publish nothing: show the channel's state (position, history, subscribers on that
    /// node), as a publisher may see it.
    #[arg(long, conflicts_with = "data")]
    pub info: bool,
    /// Publish nothing: delete the channel (its history goes; its subscribers, on every
    /// node, are told and let go; the next publication starts it under a new epoch).
    #[arg(long, conflicts_with_all = ["data", "info"])]
    pub delete: bool,
    /// Publish nothing: show who is subscribed on that node (WebSocket and SSE; the
    /// hub needs `presence = true`), with their token's sub and info.
    #[arg(long, conflicts_with_all = ["data", "info", "delete"])]
    pub presence: bool,
    /// A channel token (HS256 JWT) to send as `Authorization: Bearer`.
    #[arg(long, conflicts_with = "secret")]
    pub token: Option<String>,
    /// The hub's jwt_secret: a token for this channel is made and sent.
    #[arg(long, env = "HOPLINE_REALTIME_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub reach: Reach,
}

/// How `listen` subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// Ask every --interval (short polling).
    Poll,
    /// Ask and let the server hold the answer until an event (long polling).
    LongPoll,
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    Ws,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Poll => "poll",
            Via::LongPoll => "long-poll",
            Via::Sse => "sse",
            Via::Ws => "ws",
        }
    }
}

/// Subscribe to a channel and print events as they come, or compare the four ways.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hopline listen http://127.0.0.1:8080/live/orders --via sse
  hopline listen http://127.0.0.1:8080/live/orders --via ws --since Ab3dEf9hIj0K:41 --json
  hopline listen http://127.0.0.1:8080/live/orders --via long-poll --last 10 --count 10
      (the latest 10 events still in the channel's history first, then new ones)
  hopline listen http://127.0.0.1:8080/live/orders --compare --rate 10/s --for 30s --secret \"$SECRET\"

--compare publishes at --rate (a timestamp in each payload) while one subscriber of each
kind listens, then prints per kind: delivery latency p50/p99, requests made, bytes on
the wire per event (up and down, headers included), connections opened, events missed.")]
pub struct ListenArgs {
    /// The channel URL (`…/PREFIX/CHANNEL`).
    pub url: String,
    /// How to subscribe.
    #[arg(long, value_enum, default_value = "sse")]
    pub via: Via,
    /// Start after this position (EPOCH:OFFSET, as printed with each event).
    #[arg(long)]
    pub since: Option<String>,
    /// Start with the latest N events still in the channel's history, then go on with new
    /// ones (at most the hub's `history`; instead of --since).
    #[arg(long, value_name = "N", conflicts_with_all = ["since", "compare"], value_parser = parse_last)]
    pub last: Option<u64>,
    /// Short polling's interval, e.g. 1s or 500ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// A channel token for subscribing (Authorization: Bearer / ?token= for WebSocket).
    #[arg(long)]
    pub token: Option<String>,
    /// The hub's jwt_secret: tokens are made for subscribing and (with --compare) publishing.
    #[arg(long, env = "HOPLINE_REALTIME_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Print each event (or the comparison) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Compare poll, long-poll, SSE and WebSocket on live traffic published at --rate.
    #[arg(long)]
    pub compare: bool,
    /// --compare: publications per second, e.g. 10/s.
    #[arg(long, default_value = "10/s", value_parser = parse_rate)]
    pub rate: f64,
    /// --compare: how long to publish, e.g. 30s.
    #[arg(long = "for", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub reach: Reach,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = n
        .parse()
        .map_err(|_| format!("expected a duration like 1s or 500ms, found {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (ms, s, m)")),
    };
    if !(secs > 0.0 && secs < 86_400.0) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_last(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a number of events from 1, e.g. --last 10, found {s:?}"
        )),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches("/s");
    let r: f64 = n
        .parse()
        .map_err(|_| format!("expected a rate like 10/s, found {s:?}"))?;
    if !(r > 0.0 && r <= 10_000.0) {
        return Err(format!("rate {s:?} must be between 0 and 10000 per second"));
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------
// counted connections

/// Bytes that crossed one kind's sockets.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
    requests: AtomicU64,
}

/// A stream that counts what it reads and writes.
struct Counted<S> {
    inner: S,
    wire: Arc<Wire>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.wire.down.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.wire.up.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A byte stream, plain or TLS (TCP counted underneath, so TLS overhead counts too).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How to open connections to a URL's server.
#[derive(Clone)]
pub(crate) struct Dialer {
    url: url::Url,
    addr: SocketAddr,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    authority: String,
}

impl Dialer {
    pub(crate) async fn new(url_text: &str, reach: &Reach) -> anyhow::Result<Dialer> {
        let url = url::Url::parse(url_text).map_err(|e| {
            anyhow!("bad URL {url_text:?}: {e} (expected e.g. http://127.0.0.1:8080/live/orders)")
        })?;
        let https = match url.scheme() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            s => bail!("bad URL {url_text:?}: scheme {s:?} (use http or https)"),
        };
        let host = url
            .host_str()
            .ok_or_else(|| anyhow!("bad URL {url_text:?}: no host"))?
            .to_string();
        let port = url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        // a running `hopline up` lends its resolver and CA to names under .test
        let mut ca = reach.ca.clone();
        let mut resolver = reach.resolver.clone();
        if resolver.is_none()
            && host.ends_with(".test")
            && let Some(state) = crate::instances::find(None, Some(port))?
        {
            resolver = Some(state.resolver);
            if ca.is_none() {
                ca = Some(state.ca);
            }
        }
        let mut b = hopline_dns::Resolver::builder();
        if let Some(r) = &resolver {
            let addr: SocketAddr = r
                .parse()
                .or_else(|_| {
                    r.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| anyhow!("--resolver {r:?}: expected IP or IP:PORT"))?;
            b = b.forward(vec![addr]);
        }
        let no_up = resolver.is_none() && host.ends_with(".test");
        let lookup = b.build()?.lookup_ip(&host).await.map_err(|e| {
            if no_up {
                anyhow!(
                    "cannot resolve {host}: {e}\nhint: {}",
                    crate::instances::no_up_hint()
                )
            } else {
                anyhow!("cannot resolve {host}: {e}")
            }
        })?;
        let ip = *lookup
            .addrs
            .first()
            .ok_or_else(|| anyhow!("{host} has no address"))?;
        let tls = if https {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(ca) = &ca {
                use rustls_pki_types::pem::PemObject;
                for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("--ca {}", ca.display()))?
                {
                    roots.add(c.with_context(|| format!("--ca {}", ca.display()))?)?;
                }
            }
            let mut cfg = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls_pki_types::ServerName::try_from(host.clone())?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Ok(Dialer {
            url,
            addr: SocketAddr::new(ip, port),
            tls,
            authority,
        })
    }

    async fn dial(&self, wire: &Arc<Wire>) -> anyhow::Result<Box<dyn Io>> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.addr))
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", self.addr))?
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        wire.connections.fetch_add(1, Ordering::Relaxed);
        let counted = Counted {
            inner: tcp,
            wire: wire.clone(),
        };
        Ok(match &self.tls {
            None => Box::new(counted),
            Some((c, name)) => Box::new(
                c.connect(name.clone(), counted)
                    .await
                    .context("TLS handshake")?,
            ),
        })
    }

    fn path_with(&self, query: &[(&str, String)]) -> String {
        let mut u = self.url.clone();
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        let mut s = u.path().to_string();
        if let Some(q) = u.query().filter(|q| !q.is_empty()) {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

/// One keep-alive HTTP/1.1 connection that reopens itself when the server closes it.
pub(crate) struct Http {
    dialer: Dialer,
    wire: Arc<Wire>,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Http {
    pub(crate) fn new(dialer: Dialer, wire: Arc<Wire>) -> Http {
        Http {
            dialer,
            wire,
            sender: None,
        }
    }

    pub(crate) async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<(http::StatusCode, hyper::body::Incoming)> {
        let (parts, body) = self
            .send_for_head(method, path, headers, body, timeout)
            .await?;
        Ok((parts.status, body))
    }

    /// [`Http::send`], answering the response's whole head (status and headers).
    async fn send_for_head(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<(http::response::Parts, hyper::body::Incoming)> {
        for attempt in 0..2 {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                let io = self.dialer.dial(&self.wire).await?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                self.sender = Some(sender);
            }
            let sender = self.sender.as_mut().expect("just set");
            sender.ready().await.ok();
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(path)
                .header(http::header::HOST, &self.dialer.authority);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let req = req.body(Full::new(body.clone()))?;
            self.wire.requests.fetch_add(1, Ordering::Relaxed);
            match tokio::time::timeout(timeout, sender.send_request(req)).await {
                Ok(Ok(resp)) => return Ok(resp.into_parts()),
                Ok(Err(e)) if attempt == 0 => {
                    tracing::debug!("request failed, reconnecting: {e}");
                    self.sender = None;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => bail!("no answer within {} s", timeout.as_secs()),
            }
        }
        bail!("the server closed the connection twice")
    }
}

/// One event as a subscriber received it.
#[derive(Debug, Clone, serde::Serialize)]
struct Received {
    channel: String,
    position: String,
    offset: u64,
    data: String,
}

fn subscribe_token(args: &ListenArgs, channel: &str) -> Option<String> {
    args.token.clone().or_else(|| {
        args.secret.as_ref().map(|s| {
            hopline_realtime::token::sign(
                &hopline_realtime::token::Claims {
                    channels: vec![channel.to_string()],
                    exp: None,
                    sub: Some("hopline listen".into()),
                    info: None,
                },
                s,
            )
        })
    })
}

fn channel_of(url: &url::Url) -> String {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("")
        .to_string()
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    /// With what is published from now on.
    Now,
    /// After a position (`EPOCH:OFFSET`, as every answer gives).
    After(String),
    /// With the latest N events still in the channel's history (`?last=N`).
    Last(u64),
}

impl Start {
    /// The query pair that asks for this start (SSE sends a position as `Last-Event-ID`).
    fn query(&self) -> Option<(&'static str, String)> {
        match self {
            Start::Now => None,
            Start::After(p) => Some(("since", p.clone())),
            Start::Last(n) => Some(("last", n.to_string())),
        }
    }
}

/// A refused subscription said plainly: the status and (the start of) what the server
/// said, without the status repeated when the body begins with it.
fn refusal(status: http::StatusCode, body: &[u8]) -> anyhow::Error {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let text = text
        .strip_prefix(status.as_str())
        .map_or(text, str::trim_start);
    let text: String = text.chars().take(300).collect();
    if text.is_empty() {
        anyhow!("the server answered {status}")
    } else {
        anyhow!("the server answered {status}: {text}")
    }
}

async fn refused(status: http::StatusCode, body: hyper::body::Incoming) -> anyhow::Error {
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    refusal(status, &body)
}

/// Subscribe with `via`, call `on_ready` once the subscription stands (SSE: the event
/// stream's head came; WebSocket: the server confirmed it; polling: the first request was
/// answered — a long poll's first is asked without `wait`, so it answers at once), and hand
/// each event to `on_event` until it returns false. An error before `on_ready` means the
/// subscription never stood.
#[allow(clippy::too_many_arguments)]
async fn subscribe(
    dialer: &Dialer,
    via: Via,
    start: Start,
    interval: Duration,
    token: Option<String>,
    wire: Arc<Wire>,
    on_ready: impl FnOnce(),
    mut on_event: impl FnMut(Received) -> bool,
) -> anyhow::Result<()> {
    let channel = channel_of(&dialer.url);
    let auth: Vec<(&str, String)> = token
        .iter()
        .map(|t| ("authorization", format!("Bearer {t}")))
        .collect();
    let mut on_ready = Some(on_ready);
    match via {
        Via::Poll | Via::LongPoll => {
            let mut http = Http::new(dialer.clone(), wire);
            let mut asked = start;
            loop {
                let first = on_ready.is_some();
                let mut q: Vec<(&str, String)> = asked.query().into_iter().collect();
                if via == Via::LongPoll && !first {
                    q.push(("wait", "1".into()));
                }
                let (status, body) = http
                    .send(
                        http::Method::GET,
                        &dialer.path_with(&q),
                        &auth,
                        Bytes::new(),
                        Duration::from_secs(if first { 10 } else { 90 }),
                    )
                    .await?;
                if status == http::StatusCode::GONE && !first {
                    eprintln!("hopline: channel {channel} was deleted by a publisher");
                    return Ok(());
                }
                if !status.is_success() {
                    return Err(refused(status, body).await);
                }
                let body = body.collect().await?.to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
                    format!(
                        "the answer ({status}) is not a realtime channel's JSON: is {} a channel URL?",
                        dialer.url
                    )
                })?;
                if let Some(ready) = on_ready.take() {
                    ready();
                }
                if v["recovered"] == false
                    && let Start::After(p) = &asked
                {
                    eprintln!(
                        "hopline: position {p} could not be recovered; continuing from {}",
                        v["position"].as_str().unwrap_or("?")
                    );
                }
                let epoch = v["epoch"].as_str().unwrap_or("").to_string();
                for e in v["events"].as_array().into_iter().flatten() {
                    let offset = e["offset"].as_u64().unwrap_or(0);
                    if !on_event(Received {
                        channel: channel.clone(),
                        position: format!("{epoch}:{offset}"),
                        offset,
                        data: e["data"].as_str().unwrap_or("").to_string(),
                    }) {
                        return Ok(());
                    }
                }
                asked = match v["position"].as_str() {
                    Some(p) => Start::After(p.to_string()),
                    None => Start::Now,
                };
                if via == Via::Poll {
                    tokio::time::sleep(interval).await;
                }
            }
        }
        Via::Sse => {
            let mut http = Http::new(dialer.clone(), wire);
            let mut headers = auth.clone();
            headers.push(("accept", "text/event-stream".into()));
            let mut q = Vec::new();
            match &start {
                Start::Now => {}
                Start::After(p) => headers.push(("last-event-id", p.clone())),
                Start::Last(n) => q.push(("last", n.to_string())),
            }
            let (head, mut body) = http
                .send_for_head(
                    http::Method::GET,
                    &dialer.path_with(&q),
                    &headers,
                    Bytes::new(),
                    Duration::from_secs(10),
                )
                .await?;
            if !head.status.is_success() {
                return Err(refused(head.status, body).await);
            }
            let kind = head
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !kind.starts_with("text/event-stream") {
                bail!(
                    "the server answered {} with {} rather than an event stream: is {} a channel URL?",
                    head.status,
                    if kind.is_empty() {
                        "no Content-Type"
                    } else {
                        kind
                    },
                    dialer.url
                );
            }
            if let Some(ready) = on_ready.take() {
                ready();
            }
            let mut text = String::new();
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                let Some(chunk) = frame.data_ref() else {
                    continue;
                };
                text.push_str(&String::from_utf8_lossy(chunk));
                while let Some(i) = text.find("\n\n") {
                    let block = text[..i].to_string();
                    text.drain(..i + 2);
                    let (mut id, mut data, mut event) = (None, Vec::new(), None);
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id: ") {
                            id = Some(v.to_string());
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data.push(v.to_string());
                        } else if let Some(v) = line.strip_prefix("event: ") {
                            event = Some(v.to_string());
                        }
                    }
                    if event.as_deref() == Some("deleted") {
                        eprintln!("hopline: channel {channel} was deleted by a publisher");
                        return Ok(());
                    }
                    if event.as_deref() == Some("gap") {
                        eprintln!(
                            "hopline: position could not be recovered: {}",
                            data.join("")
                        );
                        continue;
                    }
                    let Some(id) = id else { continue };
                    let offset = id
                        .rsplit(':')
                        .next()
                        .and_then(|o| o.parse().ok())
                        .unwrap_or(0);
                    if !on_event(Received {
                        channel: channel.clone(),
                        position: id,
                        offset,
                        data: data.join("\n"),
                    }) {
                        return Ok(());
                    }
                }
            }
            bail!("the server ended the stream")
        }
        Via::Ws => {
            use tokio_tungstenite::tungstenite::{Error as WsError, Message};
            let io = dialer.dial(&wire).await?;
            let scheme = if dialer.tls.is_some() { "wss" } else { "ws" };
            let mut q: Vec<(&str, String)> = start.query().into_iter().collect();
            if let Some(t) = &token {
                q.push(("token", t.clone()));
            }
            let url = format!("{scheme}://{}{}", dialer.authority, dialer.path_with(&q));
            wire.requests.fetch_add(1, Ordering::Relaxed);
            let mut ws = match tokio_tungstenite::client_async(url, io).await {
                Ok((ws, _)) => ws,
                Err(WsError::Http(answer)) => {
                    return Err(refusal(
                        answer.status(),
                        answer.body().as_deref().unwrap_or_default(),
                    )
                    .context("WebSocket handshake"));
                }
                Err(e) => return Err(anyhow::Error::new(e).context("WebSocket handshake")),
            };
            while let Some(m) = ws.next().await {
                match m? {
                    Message::Text(t) => {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                        match v["type"].as_str() {
                            Some("deleted") => {
                                eprintln!("hopline: channel {channel} was deleted by a publisher");
                                let _ = ws.close(None).await;
                                return Ok(());
                            }
                            Some("subscribed") => {
                                if let Some(ready) = on_ready.take() {
                                    ready();
                                }
                                if v["recovered"] == false {
                                    eprintln!(
                                        "hopline: position could not be recovered; continuing from {}:{}",
                                        v["epoch"].as_str().unwrap_or(""),
                                        v["offset"]
                                    );
                                }
                                continue;
                            }
                            Some("error") => {
                                let message = v["message"].as_str().unwrap_or("(no message)");
                                if on_ready.is_some() {
                                    let _ = ws.close(None).await;
                                    bail!("the server refused the subscription: {message}");
                                }
                                eprintln!("hopline: the server said: {message}");
                                continue;
                            }
                            Some(_) => continue,
                            None => {}
                        }
                        // an event before any confirmation: a server that does not confirm
                        if let Some(ready) = on_ready.take() {
                            ready();
                        }
                        let offset = v["offset"].as_u64().unwrap_or(0);
                        let r = Received {
                            channel: v["channel"].as_str().unwrap_or("").to_string(),
                            position: format!("{}:{offset}", v["epoch"].as_str().unwrap_or("")),
                            offset,
                            data: v["data"].as_str().unwrap_or("").to_string(),
                        };
                        if !on_event(r) {
                            let _ = ws.close(None).await;
                            return Ok(());
                        }
                    }
                    Message::Close(f) => {
                        bail!(
                            "the server closed the WebSocket: {}",
                            f.map(|f| format!("{} {}", u16::from(f.code), f.reason))
                                .unwrap_or_default()
                        )
                    }
                    _ => {}
                }
            }
            bail!("the WebSocket ended")
        }
    }
}

pub fn run_publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let rt = crate::runtime::runtime(1)?;
    rt.block_on(async move {
        let dialer = Dialer::new(&args.url, &args.reach).await?;
        let data = match args.data.as_deref() {
            Some("-") => {
                let mut s = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)?;
                Bytes::from(s)
            }
            Some(d) => Bytes::from(d.to_string()),
            None => Bytes::new(),
        };
        let channel = channel_of(&dialer.url);
        let token = args.token.clone().or_else(|| {
            args.secret.as_ref().map(|s| {
                hopline_realtime::token::sign(
                    &hopline_realtime::token::Claims {
                        channels: vec![channel.clone()],
                        exp: None,
                        sub: Some("hopline publish".into()),
                        info: None,
                    },
                    s,
                )
            })
        });
        let headers: Vec<(&str, String)> = token
            .iter()
            .map(|t| ("authorization", format!("Bearer {t}")))
            .collect();
        let mut http = Http::new(dialer.clone(), Arc::default());
        let (method, path) = if args.info {
            (http::Method::GET, dialer.path_with(&[("info", "1".into())]))
        } else if args.presence {
            (http::Method::GET, dialer.path_with(&[("presence", "1".into())]))
        } else if args.delete {
            (http::Method::DELETE, dialer.path_with(&[]))
        } else {
            (http::Method::POST, dialer.path_with(&[]))
        };
        let (status, body) = http
            .send(method, &path, &headers, data, Duration::from_secs(10))
            .await?;
        let body = body.collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&body).trim());
        }
        if args.info && !args.json {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let last = v["last_published_ms"].as_u64().map_or("never".to_string(), |t| {
                let ago = hopline_realtime::hub::now_ms().saturating_sub(t);
                format!("{:.1} s ago", ago as f64 / 1000.0)
            });
            println!(
                "{channel}: at {}, {} publication(s) in history from offset {}, last published {last}, {} subscriber(s) on that node",
                v["position"].as_str().unwrap_or("?"),
                v["messages"],
                v["oldest_offset"],
                v["subscribers"],
            );
        } else if args.presence && !args.json {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            println!(
                "{channel}: {} subscriber(s) on that node, {} distinct user(s)",
                v["members"], v["users"]
            );
            for m in v["clients"].as_array().into_iter().flatten() {
                let since = m["since_ms"].as_u64().map_or(String::new(), |t| {
                    let ago = hopline_realtime::hub::now_ms().saturating_sub(t);
                    format!(", for {:.1} s", ago as f64 / 1000.0)
                });
                println!(
                    "  {}  {}  sub={}{}{}",
                    m["client"].as_str().unwrap_or("?"),
                    m["transport"].as_str().unwrap_or("?"),
                    m["sub"].as_str().unwrap_or("-"),
                    m.get("info").map(|i| format!(" info={i}")).unwrap_or_default(),
                    since
                );
            }
        } else if args.delete && !args.json {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            println!(
                "deleted {channel} at {} ({} publication(s) in history; {} subscriber(s) on that node told)",
                v["position"].as_str().unwrap_or("?"),
                v["messages"],
                v["subscribers"],
            );
        } else if args.json {
            println!("{}", String::from_utf8_lossy(&body));
        } else {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            println!(
                "published on {channel} at {} ({} subscriber(s) on that node)",
                v["position"].as_str().unwrap_or("?"),
                v["subscribers"]
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let rt = crate::runtime::runtime(2)?;
    rt.block_on(async move {
        let dialer = Dialer::new(&args.url, &args.reach).await?;
        if args.compare {
            return compare(&args, dialer).await;
        }
        let channel = channel_of(&dialer.url);
        let token = subscribe_token(&args, &channel);
        let mut seen = 0u64;
        let count = args.count;
        let json = args.json;
        let start = match (&args.since, args.last) {
            (Some(p), _) => Start::After(p.clone()),
            (None, Some(n)) => Start::Last(n),
            (None, None) => Start::Now,
        };
        // "listening" is said once the subscription stands, never before (stderr, and not
        // with --json: stdout carries only events)
        let ready = std::cell::Cell::new(false);
        let result = subscribe(
            &dialer,
            args.via,
            start,
            args.interval,
            token,
            Arc::default(),
            || {
                ready.set(true);
                if !json {
                    eprintln!(
                        "hopline: listening on {} via {} (Ctrl-C stops)",
                        args.url,
                        args.via.name()
                    );
                }
            },
            |e| {
                if json {
                    println!("{}", serde_json::to_string(&e).unwrap_or_default());
                } else {
                    println!("{}  {}", e.position, e.data);
                }
                seen += 1;
                count.is_none_or(|c| seen < c)
            },
        )
        .await;
        result.map_err(|e| {
            if ready.get() {
                e
            } else {
                e.context(format!(
                    "cannot listen on {} via {}",
                    args.url,
                    args.via.name()
                ))
            }
        })?;
        Ok(ExitCode::SUCCESS)
    })
}

/// One kind's measured figures.
#[derive(Debug, serde::Serialize)]
struct KindReport {
    via: &'static str,
    events: u64,
    missed: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    requests: u64,
    connections: u64,
    bytes_up_per_event: f64,
    bytes_down_per_event: f64,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

async fn compare(args: &ListenArgs, dialer: Dialer) -> anyhow::Result<ExitCode> {
    let channel = channel_of(&dialer.url);
    let sub_token = subscribe_token(args, &channel);
    let pub_token = args.token.clone().or_else(|| {
        args.secret.as_ref().map(|s| {
            hopline_realtime::token::sign(
                &hopline_realtime::token::Claims {
                    channels: vec![channel.clone()],
                    exp: None,
                    sub: Some("hopline listen --compare".into()),
                    info: None,
                },
                s,
            )
        })
    });
    // the position to start from: now
    let mut probe = Http::new(dialer.clone(), Arc::default());
    let (status, body) = probe
        .send(
            http::Method::GET,
            &dialer.path_with(&[]),
            &sub_token
                .iter()
                .map(|t| ("authorization", format!("Bearer {t}")))
                .collect::<Vec<_>>(),
            Bytes::new(),
            Duration::from_secs(10),
        )
        .await?;
    let body = body.collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "subscribing failed: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let start: serde_json::Value = serde_json::from_slice(&body)?;
    let since = start["position"].as_str().map(str::to_string);
    let kinds = [Via::Poll, Via::LongPoll, Via::Sse, Via::Ws];
    let total = ((args.duration.as_secs_f64() * args.rate).round() as u64).max(1);
    type Samples = Arc<parking_lot::Mutex<Vec<(u64, f64)>>>;
    type Subscriber = (
        Via,
        Arc<Wire>,
        Samples,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    );
    let mut subs: Vec<Subscriber> = Vec::new();
    for via in kinds {
        let wire = Arc::new(Wire::default());
        let samples: Samples = Arc::default();
        let (d, s, t, w, sm) = (
            dialer.clone(),
            since.clone(),
            sub_token.clone(),
            wire.clone(),
            samples.clone(),
        );
        let interval = args.interval;
        let task = tokio::spawn(async move {
            let from = s.map_or(Start::Now, Start::After);
            subscribe(
                &d,
                via,
                from,
                interval,
                t,
                w,
                || {},
                move |e| {
                    let v: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
                    if let (Some(seq), Some(t)) = (v["seq"].as_u64(), v["t_us"].as_u64()) {
                        let ms = now_us().saturating_sub(t) as f64 / 1000.0;
                        sm.lock().push((seq, ms));
                        seq + 1 < total
                    } else {
                        true
                    }
                },
            )
            .await
        });
        subs.push((via, wire, samples, task));
    }
    // let every subscriber get going before the first publication
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut publisher = Http::new(dialer.clone(), Arc::default());
    let pub_headers: Vec<(&str, String)> = pub_token
        .iter()
        .map(|t| ("authorization", format!("Bearer {t}")))
        .collect();
    let every = Duration::from_secs_f64(1.0 / args.rate);
    let started = tokio::time::Instant::now();
    let show = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    for seq in 0..total {
        tokio::time::sleep_until(started + every.mul_f64(seq as f64)).await;
        let payload = format!("{{\"seq\":{seq},\"t_us\":{}}}", now_us());
        let (status, body) = publisher
            .send(
                http::Method::POST,
                &dialer.path_with(&[]),
                &pub_headers,
                Bytes::from(payload),
                Duration::from_secs(10),
            )
            .await?;
        let body = body.collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "publishing failed: {status}: {} (give --secret or --token)",
                String::from_utf8_lossy(&body).trim()
            );
        }
        if show && (seq % (args.rate.ceil() as u64).max(1) == 0) {
            eprint!("\rhopline: published {}/{total}", seq + 1);
        }
    }
    if show {
        eprintln!("\rhopline: published {total}/{total}");
    }
    // the slowest kind (short polling) needs one more interval to catch up
    let grace = args.interval + Duration::from_secs(2);
    let mut reports = Vec::new();
    for (via, wire, samples, task) in subs {
        let deadline = tokio::time::Instant::now() + grace;
        while samples.lock().len() < total as usize && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let got = samples.lock().clone();
        let mut seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut lat: Vec<f64> = got.iter().map(|(_, l)| *l).collect();
        lat.sort_by(f64::total_cmp);
        let events = seqs.len() as u64;
        let per = |n: u64| {
            if events == 0 {
                0.0
            } else {
                n as f64 / events as f64
            }
        };
        reports.push(KindReport {
            via: via.name(),
            events,
            missed: total - events.min(total),
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
            requests: wire.requests.load(Ordering::Relaxed),
            connections: wire.connections.load(Ordering::Relaxed),
            bytes_up_per_event: per(wire.up.load(Ordering::Relaxed)),
            bytes_down_per_event: per(wire.down.load(Ordering::Relaxed)),
        });
    }
    let missed: u64 = reports.iter().map(|r| r.missed).sum();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "url": args.url,
                "published": total,
                "rate_per_s": args.rate,
                "poll_interval_ms": args.interval.as_millis() as u64,
                "kinds": reports,
            }))?
        );
    } else {
        println!(
            "{total} events published at {}/s on {} (short polling every {} ms)\n",
            args.rate,
            args.url,
            args.interval.as_millis()
        );
        println!(
            "{:<10} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>6} {:>9} {:>9}",
            "via",
            "events",
            "missed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "requests",
            "conns",
            "B up/ev",
            "B down/ev"
        );
        for r in &reports {
            println!(
                "{:<10} {:>7} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>6} {:>9.0} {:>9.0}",
                r.via,
                r.events,
                r.missed,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.requests,
                r.connections,
                r.bytes_up_per_event,
                r.bytes_down_per_event
            );
        }
        println!(
            "\nShort polling's latency follows its interval and it asks even when nothing is new; long polling answers at once but pays a request per event; SSE and WebSocket hold one connection and pay only framing per event."
        );
    }
    Ok(if missed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
