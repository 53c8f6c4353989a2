//! Layer-4 load balancing (`[[stream]]`): TCP connections and UDP sessions spread over a
//! pool with its algorithm, failing over from a server that refuses, in front of real
//! peers — Redis over TCP, NSD answering `dig` over UDP.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use hopline_testkit::{Redis, free_port, peer_installed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server with only `[[stream]]` listeners (and maybe an admin one).
struct T {
    server: hopline_edge::Server,
    _dir: tempfile::TempDir,
}

async fn start(toml: &str) -> T {
    hopline_edge::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopline.toml");
    std::fs::write(&path, toml).unwrap();
    let config = hopline_edge::Config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
    let server = hopline_edge::Server::start(config)
        .await
        .expect("server starts");
    T { server, _dir: dir }
}

/// A TCP server that greets with its name, then echoes.
async fn tcp_named(name: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A UDP server that answers each datagram with its name and the datagram.
async fn udp_named(name: &'static str) -> SocketAddr {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, peer)) = s.recv_from(&mut buf).await else {
                return;
            };
            let mut out = format!("{name}:").into_bytes();
            out.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&out, peer).await;
        }
    });
    addr
}

/// A port on 127.0.0.1 where nothing listens (TCP and UDP).
fn dead_port() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

async fn greeting(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("a greeting")
        .unwrap();
    // and the bytes come back through the proxy
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");
    String::from_utf8_lossy(&buf[..n]).trim().to_string()
}

#[tokio::test]
async fn tcp_connections_are_balanced_and_fail_over() {
    let (a, b, dead) = (tcp_named("a").await, tcp_named("b").await, dead_port());
    let t = start(&format!(
        r#"
access_log = "off"
[admin]
listen = "127.0.0.1:0"
[upstream.app]
servers = ["{a}", "{b}", "{dead}"]
[[stream]]
listen = "127.0.0.1:0"
proxy = "app"
"#
    ))
    .await;
    let front = t.server.stream_addrs()[0];
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(greeting(front).await);
    }
    // round robin over a, b and the dead one: every connection still reaches a live one
    // (the dead one's turns go on to the next server, then it is ejected)
    assert!(
        seen.iter().all(|s| s == "a" || s == "b")
            && seen.iter().any(|s| s == "a")
            && seen.iter().any(|s| s == "b"),
        "{seen:?}"
    );
    // the pool's status counts the refusals against the dead server
    let status = common::status(&t.server).await;
    let servers = status["upstreams"]["app"]["servers"].as_array().unwrap();
    let dead_row = servers
        .iter()
        .find(|s| s["id"] == dead.to_string())
        .unwrap();
    assert!(dead_row["errors"].as_u64().unwrap() >= 1, "{status}");
}

#[tokio::test]
async fn least_connections_counts_open_tcp_connections() {
    let (a, b) = (tcp_named("a").await, tcp_named("b").await);
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.app]
balance = "least_connections"
servers = ["{a}", "{b}"]
[[stream]]
listen = "127.0.0.1:0"
proxy = "app"
"#
    ))
    .await;
    let front = t.server.stream_addrs()[0];
    // six long connections opened one after the other and held: each goes to the server
    // with fewer open ones, so they end three and three
    let mut held = Vec::new();
    let mut names = Vec::new();
    for _ in 0..6 {
        let mut c = tokio::net::TcpStream::connect(front).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        names.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        held.push(c);
    }
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 3, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "b").count(), 3, "{names:?}");
}

#[tokio::test]
async fn tcp_to_a_real_redis_through_the_stream_proxy() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.redis]
servers = ["127.0.0.1:{}"]
[[stream]]
listen = "127.0.0.1:0"
proxy = "redis"
"#,
        redis.port
    ))
    .await;
    let front = t.server.stream_addrs()[0];
    let mut s = tokio::net::TcpStream::connect(front).await.unwrap();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"hello\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("redis answers through the proxy")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n$5\r\nhello\r\n");
}

async fn udp_ask(front: SocketAddr, what: &[u8]) -> String {
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(what, front).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(3), c.recv_from(&mut buf))
        .await
        .expect("an answer through the UDP proxy")
        .unwrap();
    assert_eq!(from, front, "answers come back from the proxy's address");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn udp_sessions_are_balanced_and_fail_over() {
    let (a, b, dead) = (udp_named("a").await, udp_named("b").await, dead_port());
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.app]
servers = ["{a}", "{dead}", "{b}"]
[[stream]]
listen = "127.0.0.1:0"
protocol = "udp"
proxy = "app"
"#
    ))
    .await;
    let front = t.server.stream_addrs()[0];
    let mut seen = Vec::new();
    for i in 0..6 {
        // each client socket is its own session
        let answer = udp_ask(front, format!("q{i}").as_bytes()).await;
        let (name, echo) = answer.split_once(':').unwrap();
        assert_eq!(echo, format!("q{i}"));
        seen.push(name.to_string());
    }
    // the dead server refuses (ICMP): its datagrams go on to the next server
    assert!(
        seen.iter().any(|s| s == "a") && seen.iter().any(|s| s == "b"),
        "{seen:?}"
    );
    // a session keeps its server
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut names = Vec::new();
    for i in 0..3 {
        c.send_to(format!("s{i}").as_bytes(), front).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), c.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        names.push(
            String::from_utf8_lossy(&buf[..n])
                .split(':')
                .next()
                .unwrap()
                .to_string(),
        );
    }
    assert!(names.windows(2).all(|w| w[0] == w[1]), "{names:?}");
}

#[tokio::test]
async fn dig_through_the_udp_proxy_to_nsd() {
    if !peer_installed("nsd", "-v", "nsd") || !peer_installed("dig", "-v", "dnsutils") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("s.zone"),
        "$ORIGIN stream.test.\n$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 30\n@ IN NS ns\nns IN A 127.0.0.1\nwww IN A 192.0.2.7\n",
    )
    .unwrap();
    let port = free_port();
    let _nsd = hopline_testkit::nsd(d, "127.0.0.1", port, "stream.test.", "s.zone");
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.dns]
servers = ["127.0.0.1:{port}"]
[[stream]]
listen = "127.0.0.1:0"
protocol = "udp"
proxy = "dns"
"#
    ))
    .await;
    let front = t.server.stream_addrs()[0];
    let mut answer = String::new();
    for _ in 0..50 {
        let out = tokio::task::spawn_blocking(move || {
            Command::new("dig")
                .args([
                    &format!("@{}", front.ip()),
                    "-p",
                    &front.port().to_string(),
                    "www.stream.test",
                    "A",
                    "+short",
                    "+time=1",
                    "+tries=1",
                ])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if answer == "192.0.2.7" {
            break;
        }
        // NSD may still be starting
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, "192.0.2.7");
}

#[tokio::test]
async fn a_server_that_writes_before_reading_does_not_deadlock_the_relay() {
    // the server sends 8 MiB before it reads; the client sends 8 MiB while it reads
    const SIZE: usize = 8 << 20;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        w.write_all(&vec![7u8; SIZE]).await.unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        while got < SIZE {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
        }
        let _ = w.shutdown().await;
    });
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.app]
servers = ["{up}"]
[[stream]]
listen = "127.0.0.1:0"
proxy = "app"
idle_timeout_ms = 5000
"#
    ))
    .await;
    let c = tokio::net::TcpStream::connect(t.server.stream_addrs()[0])
        .await
        .unwrap();
    let (mut r, mut w) = c.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&vec![9u8; SIZE]).await.unwrap();
        w
    });
    let reading = async {
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                return got;
            }
            got += n;
        }
    };
    let got = tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("both directions moved: no deadlock");
    assert_eq!(got, SIZE);
    let _ = writer.await.unwrap();
}

#[tokio::test]
async fn a_quiet_tcp_connection_ends_after_the_idle_timeout() {
    // a server that accepts and says nothing, holding the connection open
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.app]
servers = ["{up}"]
[[stream]]
listen = "127.0.0.1:0"
proxy = "app"
idle_timeout_ms = 300
"#
    ))
    .await;
    let mut c = tokio::net::TcpStream::connect(t.server.stream_addrs()[0])
        .await
        .unwrap();
    // traffic keeps it open past the timeout…
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.write_all(b"x").await.unwrap();
    }
    // …then quiet ends it
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("closed by the proxy");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
}
