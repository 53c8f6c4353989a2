//! The protocol side of the edge through real sockets: keep-alive, limits with the right
//! status, HTTP/2 (h2c prior knowledge and TLS ALPN), TLS with SNI, Host routing,
//! redirects and fixed responses, the access log, reload and graceful shutdown.

mod common;

use std::time::Duration;

use common::{client, raw, read_until_close, start, start_in, tls_client};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HELLO: &str = r#"
access_log = "off"
[limits]
header_timeout_ms = 700
max_connections = 3
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  respond = { body = "hello\n" }
  [[site.route]]
  path = "/upload/"
  respond = { body = "ok\n" }
  max_body = "1KiB"
  [[site.route]]
  path = "/old/"
  redirect = "https://shop.test/new/"
  [[site.route]]
  path = "/moved"
  redirect = "/elsewhere"
  status = 308
  [[site.route]]
  path = "/teapot"
  respond = { status = 418, body = "{\"tea\":true}", content_type = "application/json" }
  headers = { "X-Frame-Options" = "DENY" }
"#;

#[tokio::test]
async fn keep_alive_and_connection_close() {
    let t = start(HELLO).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let resp = String::from_utf8_lossy(&buf[..n]);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.ends_with("hello\n"), "{resp}");
    }
    // Connection: close is honoured: the server closes after the response
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        closed,
        "server kept the connection open after Connection: close"
    );
}

#[tokio::test]
async fn limits_answer_with_the_right_status() {
    let t = start(HELLO).await;
    // header section too large -> 431
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let (resp, _) = raw(t.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // malformed request -> 400
    let (resp, _) = raw(
        t.addr,
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let (resp, _) = raw(
        t.addr,
        b"BLAH\x01 / HTTP/1.1\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // body over the route's limit -> 413 (declared length)
    let c = client();
    let r = c
        .post(t.url("/upload/x"))
        .body(vec![b'x'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = c
        .post(t.url("/upload/x"))
        .body(vec![b'x'; 500])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn slowloris_is_cut_off_at_the_header_timeout() {
    let t = start(HELLO).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    // keep dribbling header bytes; the server must still close within the timeout
    let mut closed = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(b"X-A: b\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "slow header kept the connection open for 3 s");
    assert!(started.elapsed() < Duration::from_millis(2500));
    // an idle keep-alive connection is closed too
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "idle connection not closed");
}

#[tokio::test]
async fn too_many_connections_are_refused_without_harming_open_ones() {
    let t = start(HELLO).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        open.push(s);
    }
    // the fourth is closed at once, with no response
    let (resp, closed) = raw(
        t.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(closed && resp.is_empty(), "4th connection got {resp:?}");
    // the open ones still work
    for s in &mut open {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    drop(open);
    // and once they close, new connections are served again
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = client().get(t.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn redirects_fixed_responses_and_route_headers() {
    let t = start(HELLO).await;
    let c = client();
    let r = c.get(t.url("/old/page")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], "https://shop.test/new/");
    let r = c.get(t.url("/moved")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/elsewhere");
    let r = c.get(t.url("/teapot")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 418);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.text().await.unwrap(), "{\"tea\":true}");
}

#[tokio::test]
async fn h2c_prior_knowledge_on_plain_listeners() {
    let t = start(HELLO).await;
    let c = common::h2c_client();
    let r = c.get(t.url("/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert!(r.headers().contains_key("date"));
    assert_eq!(r.text().await.unwrap(), "hello\n");
}

#[tokio::test]
async fn hosts_pick_the_site() {
    let t = start(
        r#"
access_log = "off"
[[site]]
listen = ["127.0.0.1:0"]
hosts = ["shop.test", "*.shop.test"]
  [[site.route]]
  path = "/"
  respond = { body = "shop" }
[[site]]
listen = ["127.0.0.1:0"]
hosts = ["blog.test"]
  [[site.route]]
  path = "/"
  respond = { body = "blog" }
"#,
    )
    .await;
    for (host, want) in [
        ("shop.test", "shop"),
        ("www.shop.test:80", "shop"),
        ("blog.test", "blog"),
        ("BLOG.test", "blog"),
        ("other.test", "shop"),
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (resp, _) = raw(t.addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(resp.ends_with(want), "{host}: {resp}");
    }
}

#[tokio::test]
async fn tls_with_a_local_ca_alpn_and_sni() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    hopline_edge::tls::ca::issue(&certs, &["shop.test".into(), "*.shop.test".into()]).unwrap();
    hopline_edge::tls::ca::issue(&certs, &["blog.test".into()]).unwrap();
    let t = start_in(
        dir,
        r#"
access_log = "off"
[[site]]
listen = ["127.0.0.1:0"]
hosts = ["shop.test", "*.shop.test"]
tls = { cert = "certs/shop.test.pem", key = "certs/shop.test-key.pem" }
  [[site.route]]
  path = "/"
  respond = { body = "shop over tls" }
[[site]]
listen = ["127.0.0.1:0"]
hosts = ["blog.test"]
tls = { cert = "certs/blog.test.pem", key = "certs/blog.test-key.pem" }
  [[site.route]]
  path = "/"
  respond = { body = "blog over tls" }
"#,
    )
    .await;
    let ca = t.dir.path().join("certs/ca.pem");
    let port = t.addr.port();
    let c = tls_client(&ca, &[("www.shop.test", t.addr), ("blog.test", t.addr)]);
    let r = c
        .get(format!("https://www.shop.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN should pick h2");
    assert_eq!(r.text().await.unwrap(), "shop over tls");
    // SNI blog.test gets the blog certificate (verification would fail otherwise)
    let r = c
        .get(format!("https://blog.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "blog over tls");
    // HTTP/1.1 over TLS when the client offers only that
    let c1 = {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_file(&ca).unwrap())
            .unwrap();
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .no_proxy()
            .tls_backend_preconfigured(cfg)
            .resolve("shop.test", t.addr)
            .build()
            .unwrap()
    };
    let r = c1
        .get(format!("https://shop.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    // a client that does not trust the CA is refused
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
        .resolve("shop.test", t.addr)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("https://shop.test:{port}/"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn access_log_lines_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_in(
        dir,
        r#"
access_log = "access.log"
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  respond = { body = "0123456789" }
  [[site.route]]
  path = "/healthz"
  respond = { body = "ok" }
  log = false
"#,
    )
    .await;
    let c = client();
    // a route with `log = false` (health checks) writes no line
    for _ in 0..3 {
        c.get(t.url("/healthz")).send().await.unwrap();
    }
    c.get(t.url("/a?x=1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.head(t.url("/b")).send().await.unwrap();
    let path = t.dir.path().join("access.log");
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("\"GET /a?x=1 HTTP/1.1\" 200 10 "),
        "{}",
        lines[0]
    );
    assert!(lines[0].starts_with("127.0.0.1 "), "{}", lines[0]);
    assert!(lines[0].contains("ms "), "{}", lines[0]);
    assert!(
        lines[1].contains("\"HEAD /b HTTP/1.1\" 200 0 "),
        "{}",
        lines[1]
    );
}

/// Requests the engine refuses at their head (before any route) are answered, logged and
/// counted like any other: one line each, with what the head showed (`"-"` for a request
/// line that could not be read, as nginx), in the site its Host picked, else the
/// listener's default site.
#[tokio::test]
async fn refused_requests_get_one_access_log_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_in(
        dir,
        r#"
access_log = "access.log"
[admin]
listen = "127.0.0.1:0"
[[site]]
listen = ["127.0.0.1:0"]
hosts = ["shop.test"]
  [[site.route]]
  path = "/"
  respond = { body = "shop" }
[[site]]
listen = ["127.0.0.1:0"]
hosts = ["blog.test"]
  [[site.route]]
  path = "/"
  respond = { body = "blog" }
"#,
    )
    .await;
    let wait = Duration::from_secs(5);
    // (a) Content-Length with Transfer-Encoding: 400, the request line and fields known
    let (resp, _) = raw(
        t.addr,
        b"POST /upload?x=1 HTTP/1.1\r\nHost: blog.test:80\r\nUser-Agent: smuggler/1\r\n\
          Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        wait,
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // (b) a request line that is not one: 400, nothing known
    let (resp, _) = raw(t.addr, b"BLAH\x01 / HTTP/1.1\r\n\r\n", wait).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // (c) a header section over the limit: 431, the line and the Host before it known
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: blog.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let (resp, _) = raw(t.addr, big.as_bytes(), wait).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // and an ordinary request, logged as before
    let (resp, _) = raw(
        t.addr,
        b"GET /ok HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // the admin counters count them by status class
    let status = t.status().await;
    assert_eq!(status["responses"]["4xx"], 3, "{status}");

    // shutting down writes every buffered line: the file then holds all there is
    let common::TestServer { server, dir, .. } = t;
    server.shutdown(wait).await;
    let text = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let line = |needle: &str| {
        let found: Vec<&&str> = lines.iter().filter(|l| l.contains(needle)).collect();
        assert_eq!(found.len(), 1, "{needle:?} in {text}");
        *found[0]
    };
    let a = line("\"POST /upload?x=1 HTTP/1.1\" 400 ");
    assert!(a.starts_with("127.0.0.1 ["), "{a}");
    assert!(
        a.contains("ms host=blog.test site=blog.test trace=- ua=\"smuggler/1\""),
        "{a}"
    );
    let b = line("\"-\" 400 ");
    assert!(
        b.contains("ms host=- site=shop.test trace=- ua=\"-\""),
        "{b}"
    );
    let c = line("\"GET /big HTTP/1.1\" 431 ");
    assert!(c.contains("host=blog.test site=blog.test "), "{c}");
    let ok = line("\"GET /ok HTTP/1.1\" 200 4 ");
    assert!(ok.contains("host=shop.test site=shop.test "), "{ok}");
}

#[tokio::test]
async fn reload_swaps_config_and_keeps_connections() {
    let t = start(HELLO).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("hello\n"));

    let path = t.dir.path().join("hopline.toml");
    // listen on the port we got, so the listener is kept
    let new = HELLO
        .replace("127.0.0.1:0", &t.addr.to_string())
        .replace("hello\\n", "reloaded\\n");
    std::fs::write(&path, &new).unwrap();
    // a fresh server's config for 127.0.0.1:0 maps to the same listener key
    let cfg = hopline_edge::Config::load(&path).unwrap();
    let cfg0 = hopline_edge::Config::from_str_at(
        &HELLO.replace("hello\\n", "reloaded\\n"),
        &path,
        t.dir.path(),
    )
    .unwrap();
    drop(cfg);
    t.server.reload(cfg0).await.unwrap();
    // the same open connection sees the new config on its next request
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(resp.ends_with("reloaded\n"), "{resp}");
    assert_eq!(t.server.bound().len(), 1);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    let big: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("public/big.bin"), &big).unwrap();
    let t = start_in(
        dir,
        r#"
access_log = "off"
file_cache = { max_file = "64KiB" }
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  root = "public"
"#,
    )
    .await;
    let addr = t.addr;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(n > 0);
    // shut down while the body is still flowing
    let shutdown = tokio::spawn(async move { t.server.shutdown(Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // new connections are refused now
    assert!(TcpStream::connect(addr).await.is_err());
    let mut all = first[..n].to_vec();
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(k)) => all.extend_from_slice(&buf[..k]),
            other => panic!("read during drain: {other:?}"),
        }
    }
    let header_len = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&all[header_len..], &big[..], "the in-flight body was cut");
    assert_eq!(shutdown.await.unwrap(), hopline_edge::Shutdown::Drained);
}

#[tokio::test]
async fn header_and_keep_alive_timeouts_are_separate_limits() {
    // long idle allowed, short header time: a connection idle for 1 s still serves, but a
    // request head that dribbles in is cut at the header timeout
    let t = start(
        &HELLO
            .replace(
                "header_timeout_ms = 700",
                "header_timeout_ms = 400\nkeepalive_timeout_ms = 5000",
            )
            .replace("max_connections = 3", "max_connections = 10"),
    )
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "idle 1 s under a 5 s keep-alive timeout: the connection must still serve"
    );
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "an unfinished head was not cut");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // short idle allowed: an idle keep-alive connection closes at the keep-alive timeout
    let t = start(
        &HELLO
            .replace(
                "header_timeout_ms = 700",
                "header_timeout_ms = 5000\nkeepalive_timeout_ms = 300",
            )
            .replace("max_connections = 3", "max_connections = 10"),
    )
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "idle connection not closed");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let t = start(&HELLO.replace("max_connections = 3", "max_connections = 10")).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    // three requests in one write, the last one closing the connection
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /upload/x HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let (resp, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 3, "{resp}");
    let hello = resp.find("hello\n").unwrap();
    let ok = resp.find("ok\n").unwrap();
    assert!(hello < ok, "answers out of order: {resp}");
    assert!(
        resp.ends_with("\r\n\r\n"),
        "the HEAD answer carries no body: {resp}"
    );
}
