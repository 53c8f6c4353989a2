//! The reverse proxy and load balancer through real sockets: real origin servers on
//! loopback (in-process hyper servers that can be slowed, failed and killed), the real
//! proxy, real clients.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::origin::Origin;
use common::{TestServer, client, raw, start};
use reqwest::StatusCode;

fn pool_toml(balance: &str, servers: &[String], extra: &str) -> String {
    format!(
        r#"
access_log = "off"
[admin]
listen = "127.0.0.1:0"
[upstream.app]
balance = "{balance}"
servers = [{}]
connect_timeout_ms = 300
read_timeout_ms = 1500
{extra}
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  proxy = "app"
"#,
        servers.join(", ")
    )
}

fn plain(o: &Origin) -> String {
    format!("\"{}\"", o.addr)
}

async fn spread(t: &TestServer, n: usize, path: &str) -> HashMap<String, usize> {
    let c = client();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = c.get(t.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        *seen.entry(r.text().await.unwrap()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn round_robin_takes_each_server_in_turn() {
    let (a, b, c) = (
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    );
    let t = start(&pool_toml(
        "round_robin",
        &[plain(&a), plain(&b), plain(&c)],
        "",
    ))
    .await;
    let seen = spread(&t, 300, "/").await;
    assert_eq!(seen.get("a"), Some(&100), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&100), "{seen:?}");
    assert_eq!(seen.get("c"), Some(&100), "{seen:?}");
}

#[tokio::test]
async fn weighted_round_robin_follows_weights() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let servers = [
        format!("{{ addr = \"{}\", weight = 3 }}", a.addr),
        plain(&b),
    ];
    let t = start(&pool_toml("weighted_round_robin", &servers, "")).await;
    let seen = spread(&t, 400, "/").await;
    assert_eq!(seen.get("a"), Some(&300), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&100), "{seen:?}");
}

async fn concurrent_spread(t: &TestServer, n: usize, concurrency: usize) -> HashMap<String, usize> {
    // closed-loop load: `concurrency` clients, each sending its next request when the
    // previous one is answered (a fast server frees its clients sooner)
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let url = t.url("/");
            tokio::spawn(async move {
                let c = client();
                let mut seen: HashMap<String, usize> = HashMap::new();
                for _ in 0..n / concurrency {
                    let r = c.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), StatusCode::OK);
                    *seen.entry(r.text().await.unwrap()).or_insert(0) += 1;
                }
                seen
            })
        })
        .collect();
    let mut seen = HashMap::new();
    for w in workers {
        for (k, v) in w.await.unwrap() {
            *seen.entry(k).or_insert(0) += v;
        }
    }
    seen
}

#[tokio::test]
async fn least_connections_and_fastest_avoid_the_slow_server() {
    for balance in ["least_connections", "fastest", "dynamic_round_robin"] {
        let (fast, slow) = (Origin::start("fast").await, Origin::start("slow").await);
        slow.ctl.delay_ms.store(150, Ordering::Relaxed);
        let t = start(&pool_toml(balance, &[plain(&fast), plain(&slow)], "")).await;
        let seen = concurrent_spread(&t, 120, 8).await;
        let f = *seen.get("fast").unwrap_or(&0);
        let s = *seen.get("slow").unwrap_or(&0);
        assert!(f > 3 * s, "{balance}: fast {f} vs slow {s}");
        assert!(
            s > 0 || balance == "least_connections",
            "{balance}: slow server never tried ({seen:?})"
        );
    }
}

#[tokio::test]
async fn a_killed_origin_costs_no_failed_get_and_is_marked_down() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let mut c3 = Origin::start("c").await;
    let t = start(&pool_toml(
        "round_robin",
        &[plain(&a), plain(&b), plain(&c3)],
        "retries = 1\nmax_fails = 1",
    ))
    .await;
    let cl = client();
    let mut failed = 0;
    for i in 0..300 {
        if i == 60 {
            c3.kill();
        }
        let r = cl.get(t.url("/")).send().await.unwrap();
        if r.status() != StatusCode::OK {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "GETs failed after an origin died");
    let status = t.status().await;
    let servers = status["upstreams"]["app"]["servers"]
        .as_array()
        .unwrap()
        .clone();
    let dead = servers
        .iter()
        .find(|s| s["id"] == c3.addr.to_string())
        .unwrap();
    assert_eq!(dead["up"], false, "{dead}");
}

#[tokio::test]
async fn health_checks_eject_and_restore_and_backups_wait() {
    let (a, b, backup) = (
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("backup").await,
    );
    let servers = [
        plain(&a),
        plain(&b),
        format!("{{ addr = \"{}\", backup = true }}", backup.addr),
    ];
    let t = start(&pool_toml(
        "round_robin",
        &servers,
        "health = { path = \"/healthz\", interval_ms = 50, timeout_ms = 200, fails = 2, passes = 2 }",
    ))
    .await;
    let seen = spread(&t, 40, "/").await;
    assert!(
        !seen.contains_key("backup"),
        "backup used while primaries are up: {seen:?}"
    );
    a.ctl.unhealthy.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = spread(&t, 30, "/").await;
    assert_eq!(seen.get("b"), Some(&30), "a should be ejected: {seen:?}");
    b.ctl.unhealthy.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = spread(&t, 10, "/").await;
    assert_eq!(
        seen.get("backup"),
        Some(&10),
        "backup should take over: {seen:?}"
    );
    a.ctl.unhealthy.store(false, Ordering::Relaxed);
    b.ctl.unhealthy.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = spread(&t, 20, "/").await;
    assert_eq!(seen.get("a"), Some(&10), "a restored: {seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "b restored: {seen:?}");
    assert!(a.ctl.health_hits.load(Ordering::Relaxed) >= 4);
    // all down: no 503 wall — the pool panics and tries them anyway, and says so
    a.ctl.unhealthy.store(true, Ordering::Relaxed);
    b.ctl.unhealthy.store(true, Ordering::Relaxed);
    backup.ctl.unhealthy.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = spread(&t, 10, "/").await;
    assert!(
        !seen.contains_key("backup"),
        "panic picks primaries first: {seen:?}"
    );
    let admin = t.server.admin_addr().unwrap();
    let status = t.status().await;
    assert_eq!(status["upstreams"]["app"]["panic"], true, "{status}");
    assert!(status["upstreams"]["app"]["panic_picks"].as_u64().unwrap() >= 10);
    let metrics = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hopline_upstream_panic{upstream=\"app\"} 1"),
        "{metrics}"
    );
}

/// A chunked body that breaks its framing, in each of the ways a hostile client can.
const BAD_CHUNKS: [&[u8]; 3] = [
    b"5\nhello\r\n0\r\n\r\n",                    // bare LF after the size
    b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", // 18 hex digits
    b"10000000000000000\r\nx\r\n0\r\n\r\n",      // overflows u64
];

#[tokio::test]
async fn a_clients_bad_body_is_a_400_and_never_ejects_the_origin() {
    let a = Origin::start("a").await;
    // the defaults: three failures in a row would eject the only server
    let t = start(&pool_toml("round_robin", &[plain(&a)], "")).await;
    for round in 0..3 {
        for bad in BAD_CHUNKS {
            let mut req = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
            req.extend_from_slice(bad);
            let (answer, _) = raw(t.addr, &req, Duration::from_secs(3)).await;
            assert!(
                answer.starts_with("HTTP/1.1 400"),
                "round {round}, {:?}: {answer}",
                String::from_utf8_lossy(bad)
            );
        }
    }
    let r = client().get(t.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the origin was blamed");
    let status = t.status().await;
    let server = &status["upstreams"]["app"]["servers"][0];
    assert_eq!(server["up"], true, "{status}");
    assert_eq!(
        server["errors"], 0,
        "client errors counted against the server: {status}"
    );
}

#[tokio::test]
async fn a_body_cut_short_by_the_client_is_logged_as_the_clients() {
    let a = Origin::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = pool_toml("round_robin", &[plain(&a)], "").replace(
        "access_log = \"off\"",
        &format!("access_log = {:?}", log.display().to_string()),
    );
    let t = common::start_in(dir, &toml).await;
    let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let mut line = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if line.contains("/echo") {
            break;
        }
    }
    assert!(line.contains("\" 499 "), "{line}");
    let status = t.status().await;
    assert_eq!(
        status["upstreams"]["app"]["servers"][0]["errors"], 0,
        "{status}"
    );
}

#[tokio::test]
async fn a_revived_origin_is_probed_back_within_one_window() {
    let b = Origin::start("b").await;
    let mut a = Origin::start("a").await;
    let a_addr = a.addr;
    let t = start(&pool_toml(
        "round_robin",
        &[plain(&a), plain(&b)],
        "max_fails = 1\nfail_timeout_ms = 400\nretries = 1",
    ))
    .await;
    a.kill();
    // dead for three windows: every GET is still answered (retried on b)
    let cl = client();
    let dead_until = tokio::time::Instant::now() + Duration::from_millis(1300);
    while tokio::time::Instant::now() < dead_until {
        let r = cl.get(t.url("/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _a = Origin::start_on(a_addr, "a").await;
    let revived = tokio::time::Instant::now();
    loop {
        let r = cl.get(t.url("/")).send().await.unwrap();
        if r.text().await.unwrap() == "a" {
            break;
        }
        assert!(
            revived.elapsed() < Duration::from_millis(1000),
            "a revived origin was not used again within one window (400 ms) and a bit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn gateway_errors_say_which() {
    // refused: nothing listens there
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = proxy_to(dead).await;
    let r = client().get(t.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.text().await.unwrap().contains("could not connect"));
    // slow: 504 after the read timeout
    let slow = Origin::start("slow").await;
    slow.ctl.delay_ms.store(3000, Ordering::Relaxed);
    let t = start(&pool_toml("round_robin", &[plain(&slow)], "")).await;
    let started = tokio::time::Instant::now();
    let r = client().get(t.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(r.text().await.unwrap().contains("did not answer within"));
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn post_is_not_retried_but_get_is() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let a = Origin::start("a").await;
    let t = start(&pool_toml(
        "round_robin",
        &[format!("\"{dead}\""), plain(&a)],
        "retries = 1\nmax_fails = 100",
    ))
    .await;
    let c = client();
    let mut post_502 = 0;
    for _ in 0..4 {
        let r = c.get(t.url("/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = c.post(t.url("/")).body("data").send().await.unwrap();
        if r.status() == StatusCode::BAD_GATEWAY {
            post_502 += 1;
        }
    }
    assert!(
        post_502 > 0,
        "a POST with a body was retried on another server"
    );
}

#[tokio::test]
async fn forwarding_headers_and_hop_by_hop() {
    let a = Origin::start("a").await;
    let t = start(&pool_toml("round_robin", &[plain(&a)], "")).await;
    let r = client()
        .get(t.url("/echo"))
        .header("Host", "shop.test:8080")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("Connection", "keep-alive, X-Private")
        .header("X-Private", "secret")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("x-hop").is_none(),
        "response hop-by-hop header leaked"
    );
    assert!(r.headers()["via"].to_str().unwrap().contains("hopline"));
    assert!(
        r.headers()["server-timing"]
            .to_str()
            .unwrap()
            .contains("hopline-proxy;dur=")
    );
    let v: serde_json::Value = r.json().await.unwrap();
    let h = &v["headers"];
    assert_eq!(h["host"], "shop.test:8080");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.test");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http;host=shop.test");
    assert_eq!(h["via"], "1.1 hopline");
    assert_eq!(
        h["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert!(
        h.get("x-private").is_none(),
        "a header named in Connection was forwarded"
    );
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let a = Origin::start("a").await;
    let t = start(&pool_toml("round_robin", &[plain(&a)], "").replace(
        "access_log = \"off\"",
        "access_log = \"off\"\n[limits]\nmax_body = \"64MiB\"",
    ))
    .await;
    // upload 6 MB chunked
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..60)
        .map(|i| Ok(vec![(i % 200) as u8; 100_000]))
        .collect();
    let all: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.as_ref().unwrap().clone())
        .collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let v: serde_json::Value = client()
        .post(t.url("/echo"))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["body_len"], all.len());
    use sha2::Digest;
    assert_eq!(v["sha256"], format!("{:x}", sha2::Sha256::digest(&all)));
    let big = client()
        .get(t.url("/big"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(big.len(), 5_000_000);
    assert!(big.iter().enumerate().all(|(i, b)| *b == (i % 241) as u8));
}

#[tokio::test]
async fn server_sent_events_flow_as_they_are_sent() {
    let a = Origin::start("a").await;
    let t = start(
        &pool_toml("round_robin", &[plain(&a)], "read_timeout_ms = 300")
            .replace("read_timeout_ms = 1500\n", ""),
    )
    .await;
    let mut r = client()
        .get(t.url("/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(r.headers().get("content-encoding").is_none());
    let started = tokio::time::Instant::now();
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: event 0"));
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "first event held back"
    );
    let mut rest = String::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(rest.contains("data: event 2"), "{rest}");
    // the stream lasted longer than the read timeout and was not cut
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let a = Origin::start("a").await;
    websocket_echo(&start(&pool_toml("round_robin", &[plain(&a)], "")).await).await;
    // also where the route has a cache (a CDN PoP): an upgrade is a tunnel, not a lookup
    let cached = pool_toml("round_robin", &[plain(&a)], "")
        .replace("proxy = \"app\"", "proxy = \"app\"\n  cache = \"pop\"")
        + "[cache.pop]\nmemory = \"1MiB\"\n";
    websocket_echo(&start(&cached).await).await;
}

async fn websocket_echo(t: &TestServer) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", t.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().as_ref(),
        &[1u8, 2, 3]
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn smuggling_attempts_are_refused_or_neutralised() {
    let a = Origin::start("a").await;
    let t = start(&pool_toml("round_robin", &[plain(&a)], "")).await;
    // Both framings (RFC 9112 §6.3): refused with 400 and the connection closed, so
    // the smuggled second request is never read, let alone forwarded.
    let req = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let (resp, closed) = raw(t.addr, req, Duration::from_secs(3)).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(closed, "connection kept open after a CL+TE request");
    assert_eq!(
        resp.matches("HTTP/1.1 ").count(),
        1,
        "the smuggled request was served: {resp}"
    );
    assert_eq!(a.hits(), 0, "a CL+TE request reached the origin");
    // conflicting lengths: 400, nothing forwarded
    let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde";
    let (resp, _) = raw(t.addr, req, Duration::from_secs(3)).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // a transfer coding that does not end in chunked: 400
    let req =
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n";
    let (resp, _) = raw(t.addr, req, Duration::from_secs(3)).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // Transfer-Encoding in HTTP/1.0: 400
    let req = b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (resp, _) = raw(t.addr, req, Duration::from_secs(3)).await;
    assert!(
        resp.starts_with("HTTP/1.1 400") || resp.starts_with("HTTP/1.0 400"),
        "{resp}"
    );
    assert_eq!(a.hits(), 0, "a malformed request reached the origin");
    // a chunked body that breaks its framing never reaches the origin whole, and the
    // bytes after it are not read as a request
    let req = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdXX\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let (resp, closed) = raw(t.addr, req, Duration::from_secs(3)).await;
    assert!(closed, "connection kept open after a broken chunked body");
    assert!(
        resp.matches("HTTP/1.1 ").count() <= 1 && !resp.contains("/admin"),
        "the smuggled request was served: {resp}"
    );
}

#[tokio::test]
async fn admin_status_and_metrics() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let t = start(&pool_toml("least_connections", &[plain(&a), plain(&b)], "")).await;
    spread(&t, 10, "/").await;
    let admin = t.server.admin_addr().unwrap();
    let c = client();
    let v = t.status().await;
    let servers = v["upstreams"]["app"]["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    let total: u64 = servers
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 10, "{v}");
    assert!(
        servers.iter().all(|s| s["up"] == true
            && s.get("in_flight").is_some()
            && s.get("ewma_ms").is_some()
            && s.get("effective_weight").is_some()),
        "{v}"
    );
    let m = c
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("hopline_responses_total{class=\"2xx\"} 10"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "hopline_upstream_up{{upstream=\"app\",server=\"{}\"}} 1",
            a.addr
        )),
        "{m}"
    );
    assert!(m.contains("# TYPE hopline_upstream_requests_total counter"));
}

#[tokio::test]
async fn http2_upstreams() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let t = start(&pool_toml(
        "round_robin",
        &[plain(&a), plain(&b)],
        "http2 = true",
    ))
    .await;
    let seen = spread(&t, 20, "/").await;
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    let v: serde_json::Value = client()
        .get(t.url("/echo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(
        v["version"], "HTTP/2.0",
        "the proxy should speak h2c to the origin"
    );
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn a_server_may_be_a_host_name() {
    let a = Origin::start("a").await;
    let t = start(&pool_toml(
        "round_robin",
        &[format!("\"localhost:{}\"", a.addr.port())],
        "retries = 2",
    ))
    .await;
    let seen = spread(&t, 10, "/").await;
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    let v = t.status().await;
    let ids: Vec<String> = v["upstreams"]["app"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.iter()
            .any(|id| id == &format!("localhost:{} (127.0.0.1:{})", a.addr.port(), a.addr.port())),
        "{ids:?}"
    );
}

/// A hand-written origin: each connection gets `answers` in turn (one per request read),
/// then the origin closes it after `linger`. Counts the connections it accepted.
async fn scripted_origin(
    answers: Vec<&'static [u8]>,
    linger: Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let answers = answers.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for a in answers {
                    // read one request head
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if s.write_all(a).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(linger).await;
            });
        }
    });
    (addr, accepted)
}

/// A proxy in front of one scripted origin, without retries.
async fn proxy_to(origin: std::net::SocketAddr) -> TestServer {
    start(&pool_toml(
        "round_robin",
        &[format!("\"{origin}\"")],
        "retries = 0",
    ))
    .await
}

#[tokio::test]
async fn pooled_connections_the_origin_closed_are_replaced_unseen() {
    // every origin connection answers once with keep-alive, then closes after 20 ms:
    // the proxy's pooled connection is dead when the next request comes
    let (addr, accepted) = scripted_origin(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        Duration::from_millis(20),
    )
    .await;
    let t = proxy_to(addr).await;
    let c = client();
    for i in 0..5 {
        let r = c.get(t.url("/x")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        5,
        "one fresh connection per request"
    );
}

#[tokio::test]
async fn origin_connections_are_reused_and_every_framing_is_relayed() {
    let (addr, accepted) = scripted_origin(
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3;x=1\r\nond\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nuntil the close",
        ],
        Duration::from_millis(10),
    )
    .await;
    let t = proxy_to(addr).await;
    let c = client();
    let r = c.get(t.url("/1")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "first");
    let r = c.get(t.url("/2")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "second");
    let r = c.get(t.url("/3")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.get(t.url("/4")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "until the close");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the four requests shared one origin connection"
    );
    // an origin answering garbage: 502 that says so, never a hang
    let (bad, _) = scripted_origin(vec![b"SSH-2.0-OpenSSH_9.2\r\n\r\n"], Duration::ZERO).await;
    let t = proxy_to(bad).await;
    let r = c.get(t.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.text().await.unwrap().contains("not valid HTTP"));
}

#[tokio::test]
async fn origin_fields_are_relayed_once_each_on_every_client_path() {
    // the origin's head: its own Server and Date, hop-by-hop fields (one only named in
    // Connection), an end-to-end field, and a Via of an earlier hop
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: origin/1.0\r\n\
Date: Mon, 23 Nov 2026 23:00:00 GMT\r\nConnection: keep-alive, X-Hop\r\n\
Keep-Alive: timeout=5\r\nX-Hop: 1\r\nX-Custom: kept\r\nVia: 1.0 cdn\r\n\
Cache-Control: max-age=5\r\nContent-Length: 2\r\n\r\nok";
    let (addr, _) = scripted_origin(vec![HEAD; 8], Duration::from_millis(10)).await;
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.app]
servers = ["{addr}"]
retries = 0
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/plain"
  proxy = "app"
  [[site.route]]
  path = "/cc"
  proxy = "app"
  cache_control = "no-store"
  [[site.route]]
  path = "/hdr"
  proxy = "app"
  headers = {{ "x-custom" = "replaced" }}
"#
    ))
    .await;
    let check = |r: &reqwest::Response, what: &str| {
        let h = r.headers();
        let all = |n: &str| -> Vec<String> {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(r.status(), StatusCode::OK, "{what}");
        assert_eq!(
            all("server"),
            ["hopline"],
            "{what}: the edge names itself once"
        );
        assert_eq!(
            all("date"),
            ["Mon, 23 Nov 2026 23:00:00 GMT"],
            "{what}: the origin's Date, once"
        );
        assert!(
            h.get("x-hop").is_none(),
            "{what}: a field named in Connection leaked"
        );
        assert!(h.get("keep-alive").is_none(), "{what}: Keep-Alive leaked");
        let via = all("via").join(", ");
        assert_eq!(via, "1.0 cdn, 1.1 hopline", "{what}");
        let timing = all("server-timing").join(", ");
        assert!(timing.contains("hopline-proxy;dur="), "{what}: {timing}");
        assert_eq!(all("content-length"), ["2"], "{what}");
    };
    let h1 = client();
    let r = h1.get(t.url("/plain")).send().await.unwrap();
    check(&r, "HTTP/1.1");
    assert_eq!(r.headers()["x-custom"], "kept");
    assert_eq!(r.headers()["cache-control"], "max-age=5");
    assert_eq!(r.text().await.unwrap(), "ok");

    let r = h1.get(t.url("/cc")).send().await.unwrap();
    check(&r, "route cache_control");
    let cc: Vec<_> = r.headers().get_all("cache-control").iter().collect();
    assert_eq!(
        cc,
        ["no-store"],
        "the route's Cache-Control replaces the origin's"
    );

    let r = h1.get(t.url("/hdr")).send().await.unwrap();
    check(&r, "route headers");
    let custom: Vec<_> = r.headers().get_all("x-custom").iter().collect();
    assert_eq!(custom, ["replaced"]);

    // a HEAD: the origin's length, no body
    let r = h1.head(t.url("/plain")).send().await.unwrap();
    assert_eq!(r.headers()["content-length"], "2");

    let h2 = common::h2c_client();
    let r = h2.get(t.url("/plain")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    check(&r, "HTTP/2");
    assert_eq!(r.headers()["x-custom"], "kept");
    assert_eq!(r.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn a_known_length_body_is_relayed_as_it_arrives() {
    // the origin sends the head and half the body, then waits before the rest: the
    // client must get the first half before the origin sends the second
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let first = vec![b'a'; 20_000];
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&first).await.unwrap();
        let _ = go_rx.await; // the rest only once the client has seen the first half
        s.write_all(&vec![b'b'; 20_000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let t = proxy_to(addr).await;
    let mut c = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    c.write_all(b"GET /piece HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let body_start = loop {
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
            .await
            .expect("the first half came without the second")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() - (p + 4) >= 20_000
        {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..body_start]).to_lowercase();
    assert!(head.contains("content-length: 40000"), "{head}");
    go_tx.send(()).unwrap();
    while got.len() - body_start < 40_000 {
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the body ended early");
        got.extend_from_slice(&buf[..n]);
    }
    let body = &got[body_start..];
    assert_eq!(body.len(), 40_000);
    assert!(body[..20_000].iter().all(|&b| b == b'a'));
    assert!(body[20_000..].iter().all(|&b| b == b'b'));
}

#[tokio::test]
async fn host_is_checked_and_the_absolute_form_reaches_the_origin() {
    let a = Origin::start("a").await;
    let t = start(&pool_toml("round_robin", &[plain(&a)], "")).await;
    for bad in [
        &b"GET /obj/h HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /obj/h HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    ] {
        let (answer, _) = raw(t.addr, bad, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert_eq!(a.hits(), 0, "a bad Host reached the origin");
    let (answer, _) = raw(
        t.addr,
        b"GET http://shop.example/obj/h HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = a.ctl.last_headers.lock().clone();
    let get = |n: &str| -> Vec<String> {
        seen.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(get("host"), ["shop.example"], "{seen:?}");
    assert_eq!(get("x-forwarded-host"), ["shop.example"], "{seen:?}");
    // HTTP/1.0 without Host: the origin still gets one (the pool's name, as nginx)
    let (answer, _) = raw(
        t.addr,
        b"GET /obj/h HTTP/1.0\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        a.ctl
            .last_headers
            .lock()
            .iter()
            .filter(|(k, _)| k == "host")
            .count(),
        1
    );
}

/// An origin that answers every request with `103 Early Hints` at once and the final
/// `200` only after `release` fires (so the client can see the 103 arrive first).
async fn early_hints_origin() -> (std::net::SocketAddr, tokio::sync::mpsc::Sender<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(16);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    got.clear();
                    let _ = s
                        .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n")
                        .await;
                    rx.lock().await.recv().await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\nfinal")
                        .await;
                }
            });
        }
    });
    (addr, tx)
}

#[tokio::test]
async fn early_hints_are_relayed_to_http11_clients_before_the_answer_and_never_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (origin, release) = early_hints_origin().await;
    let t = start(&format!(
        r#"
access_log = "off"
[cache.pop]
memory = "1MiB"
[upstream.app]
servers = ["{origin}"]
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/cached/"
  proxy = "app"
  cache = "pop"
  [[site.route]]
  path = "/"
  proxy = "app"
"#
    ))
    .await;
    for path in ["/page", "/cached/page"] {
        let mut c = tokio::net::TcpStream::connect(t.addr).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // the 103 arrives while the origin still holds its answer
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
            .await
            .expect("the 103 comes before the answer")
            .unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            first.starts_with("HTTP/1.1 103 Early Hints\r\n")
                && first.contains("</app.css>; rel=preload; as=style")
                && first.ends_with("\r\n\r\n")
                && !first.contains("200"),
            "{path}: {first:?}"
        );
        release.send(()).await.unwrap();
        let (rest, _) = common::read_until_close(&mut c, Duration::from_millis(500)).await;
        assert!(
            rest.starts_with("HTTP/1.1 200 OK\r\n") && rest.ends_with("final"),
            "{rest:?}"
        );
    }
    // a cache hit has no 103: interim responses are never stored
    let (hit, _) = raw(
        t.addr,
        b"GET /cached/page HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(hit.starts_with("HTTP/1.1 200 OK\r\n"), "{hit:?}");
    assert!(
        hit.to_ascii_lowercase().contains("cache-status: pop; hit"),
        "{hit}"
    );
    // an HTTP/1.0 client never gets a 1xx (RFC 9110 §15.2)
    let mut c = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    c.write_all(b"GET /page HTTP/1.0\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send(()).await.unwrap();
    let (old, _) = common::read_until_close(&mut c, Duration::from_secs(3)).await;
    assert!(old.starts_with("HTTP/1.1 200 OK\r\n"), "{old:?}");
    assert!(!old.contains("HTTP/1.1 103"), "{old:?}");
}

#[tokio::test]
async fn early_hints_reach_http2_clients_before_the_answer() {
    let (origin, release) = early_hints_origin().await;
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.app]
servers = ["{origin}"]
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  proxy = "app"
"#
    ))
    .await;
    // HTTP/2 with prior knowledge on the plain listener
    let tcp = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("http://{}/page", t.addr))
        .body(())
        .unwrap();
    let (mut resp, _) = client.send_request(req, true).unwrap();
    // the 103 arrives on the stream while the origin still holds its answer
    let info = tokio::time::timeout(
        Duration::from_secs(3),
        std::future::poll_fn(|cx| resp.poll_informational(cx)),
    )
    .await
    .expect("the 103 comes before the answer")
    .expect("an interim response")
    .unwrap();
    assert_eq!(info.status(), 103);
    assert_eq!(
        info.headers()["link"],
        "</app.css>; rel=preload; as=style",
        "{info:?}"
    );
    release.send(()).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(3), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"final");
}

/// Pipelined requests: answers ready at once go out together, but one that must wait
/// for its origin never holds back the answers before it.
#[tokio::test]
async fn a_slow_pipelined_request_does_not_hold_back_the_answers_before_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = Origin::start("slow").await;
    o.ctl.delay_ms.store(800, Ordering::Relaxed);
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.app]
servers = ["{}"]
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/fast"
  respond = {{ body = "fast\n" }}
  [[site.route]]
  path = "/"
  proxy = "app"
"#,
        o.addr
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    s.write_all(
        b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\nGET /fast HTTP/1.1\r\nHost: a\r\n\r\nGET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /fast HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // the two fast answers arrive long before the slow origin answers
    while String::from_utf8_lossy(&got).matches("fast\n").count() < 2 {
        let n = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf))
            .await
            .expect("the answers before the slow one are not held back")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(!String::from_utf8_lossy(&got).contains("slow"));
    // then the slow one and the last fast one, in order
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 4, "{text}");
    let slow = text.find("slow").expect("the origin's answer");
    assert!(text[slow..].contains("fast\n"), "in order: {text}");
    assert!(started.elapsed() >= Duration::from_millis(800));
}

/// A 103 that arrives in the same packet as the final answer still reaches an HTTP/1.1
/// client, before it.
#[tokio::test]
async fn early_hints_in_the_same_packet_as_the_answer_are_not_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        got.clear();
                        let _ = s
                            .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    let t = start(&format!(
        r#"
access_log = "off"
[upstream.app]
servers = ["{origin}"]
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  proxy = "app"
"#
    ))
    .await;
    for _ in 0..5 {
        let (resp, _) = raw(
            t.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(3),
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 103 Early Hints\r\n")
                && resp.contains("\r\n\r\nHTTP/1.1 200 OK\r\n"),
            "{resp:?}"
        );
    }
}

/// A client that sends pipelined batches and never reads their answers is cut off by the
/// send timeout (the held answers' writes are bounded like every other).
#[tokio::test]
async fn a_pipelining_client_that_never_reads_is_cut_off_by_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // answers larger than the kernel's buffers can take (a few MiB on loopback)
    let body = "x".repeat(16000);
    let t = start(&format!(
        r#"
access_log = "off"
[limits]
send_timeout_ms = 1000
header_timeout_ms = 60000
keepalive_timeout_ms = 60000
keepalive_requests = 1000000
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  respond = {{ body = "{body}" }}
  compress = false
"#
    ))
    .await;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&t.addr.into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut c = tokio::net::TcpStream::from_std(sock.into()).unwrap();
    // batches of 40 pipelined GETs, each ending with an empty line: the answers are held
    // while the next "head" seems there, then must be flushed to a client that reads nothing
    let mut batch = Vec::new();
    for _ in 0..40 {
        batch.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }
    batch.extend_from_slice(b"\r\n\r\n");
    for _ in 0..50 {
        if tokio::time::timeout(Duration::from_millis(200), c.write_all(&batch))
            .await
            .is_err()
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // the server gave up on us: reading drains what it sent, then the connection ends
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server still holds the connection");
}
