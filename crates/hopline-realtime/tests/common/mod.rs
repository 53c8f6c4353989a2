//! A real edge on 127.0.0.1:0 with realtime hubs mounted, and small clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SECRET: &str = "a-test-secret-of-enough-length";

#[allow(unused_imports)]
pub use hopline_testkit::edge::{TestServer, client, raw};

/// A running edge (its address, `url`, `server` through `Deref`) and the realtime hubs
/// mounted on it.
pub struct Edge {
    pub edge: TestServer,
    pub hubs: hopline_realtime::Hubs,
}

impl std::ops::Deref for Edge {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.edge
    }
}

/// Start an edge whose file is `toml` with the realtime hubs it names mounted.
pub async fn start(toml: &str) -> Edge {
    let sections = hopline_realtime::config::load(toml, Path::new("hopline.toml")).unwrap();
    let hubs = hopline_realtime::Hubs::new();
    let mut services = hopline_edge::Services::new();
    hubs.apply(&sections, &mut services).unwrap();
    let edge =
        hopline_testkit::edge::start_with(tempfile::tempdir().unwrap(), toml, services).await;
    Edge { edge, hubs }
}

/// A hub section plus a site mounting it at /live/.
pub fn hub_toml(extra: &str) -> String {
    format!(
        r#"
access_log = "off"
[admin]
listen = "127.0.0.1:0"
[realtime.live]
history = 100
long_poll_ms = 1500
ping_ms = 20000
publish = {{ jwt_secret = "{SECRET}" }}
{extra}
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/live/"
  realtime = "live"
"#
    )
}

pub fn token(channels: &[&str]) -> String {
    hopline_realtime::token::sign(
        &hopline_realtime::token::Claims {
            channels: channels.iter().map(|c| c.to_string()).collect(),
            exp: None,
            sub: None,
            info: None,
        },
        SECRET,
    )
}

pub async fn publish(edge: &Edge, channel: &str, data: &str) -> serde_json::Value {
    let r = client()
        .post(edge.url(&format!("/live/{channel}")))
        .bearer_auth(token(&["*"]))
        .body(data.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "publish");
    r.json().await.unwrap()
}

/// A raw WebSocket handshake on `path`; returns the stream after the 101 head and
/// whatever followed the head in the same read.
pub async fn ws_raw(
    addr: SocketAddr,
    path: &str,
    extra_headers: &str,
) -> (TcpStream, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("handshake answer")
            .unwrap();
        assert!(
            n > 0,
            "closed during the handshake: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i + 4]).into_owned();
            let rest = got[i + 4..].to_vec();
            return (s, head, rest);
        }
    }
}

/// Read one server frame (unmasked) from `s` with `pending` bytes already read.
pub async fn read_frame(s: &mut TcpStream, pending: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let mut buf = [0u8; 8192];
    loop {
        if pending.len() >= 2 {
            let (len, at) = match pending[1] & 0x7f {
                126 if pending.len() >= 4 => {
                    (u16::from_be_bytes([pending[2], pending[3]]) as usize, 4)
                }
                127 if pending.len() >= 10 => (
                    u64::from_be_bytes(pending[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => (usize::MAX, 0),
                n => (n as usize, 2),
            };
            if len != usize::MAX && pending.len() >= at + len {
                let b0 = pending[0];
                let payload = pending[at..at + len].to_vec();
                pending.drain(..at + len);
                return Some((b0, payload));
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A masked client frame.
pub fn client_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    hopline_realtime::ws::client_frame(fin, rsv1, opcode, [1, 2, 3, 4], payload)
}

/// Next JSON text frame of a WebSocket (5 s at most).
pub async fn next_json<S>(ws: &mut S) -> serde_json::Value
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(ws))
            .await
            .expect("a frame within 5 s")
            .expect("the connection is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Wait (2 s at most) until `channel` of the `live` hub has `n` subscribers on this node.
pub async fn wait_subscribers(edge: &Edge, channel: &str, n: usize) {
    let hub = edge.hubs.get("live").unwrap();
    let count = || hub.existing(channel).map_or(0, |c| c.subscribers());
    for _ in 0..100 {
        if count() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(), n, "subscribers of {channel}");
}

/// A counter of the `live` hub's metrics.
pub fn hub_counter(
    edge: &Edge,
    counter: impl Fn(&hopline_realtime::metrics::Metrics) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    let hub = edge.hubs.get("live").unwrap();
    counter(&hub.metrics).load(std::sync::atomic::Ordering::Relaxed)
}

/// The next WebSocket message, as JSON (5 s at most).
pub async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    serde_json::from_str::<serde_json::Value>(m.to_text().unwrap()).unwrap()
}
