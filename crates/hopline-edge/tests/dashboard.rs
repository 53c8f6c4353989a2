//! The admin listener's dashboard over HTTP: the token guards every admin endpoint, the
//! page is self-contained, `/.hopline/events` streams snapshots whose numbers follow the
//! traffic (per-site req/s and latency, limit rejections), and requests that came
//! without a trace are sampled into the recent list at the configured rate.

mod common;

use std::time::Duration;

use common::{client, start};

const TOKEN: &str = "0123456789abcdef-test";

/// The next `data:` line of an event stream, as JSON.
async fn next_snapshot(resp: &mut reqwest::Response, buf: &mut String) -> serde_json::Value {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(data).expect("a JSON snapshot");
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .expect("a snapshot every second")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

fn node<'a>(snap: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    snap["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {snap}"))
}

#[tokio::test]
async fn the_dashboard_guards_itself_and_follows_the_traffic() {
    let t = start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
sample = 3

[limit.tight]
rate = "1/m"
burst = 1

[[site]]
name = "front"
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/limited"
  respond = {{ body = "ok" }}
  limit = "tight"
  [[site.route]]
  path = "/"
  respond = {{ body = "hello" }}
"#
    ))
    .await;
    let admin = t.server.admin_addr().unwrap();
    let c = client();

    // no token: every admin endpoint says 401, and how to get in
    for path in ["/", "/.hopline/status", "/.hopline/events", "/metrics"] {
        let r = c.get(format!("http://{admin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    let r = c
        .get(format!("http://{admin}/.hopline/status"))
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // the browser way: ?token= once sets the cookie, then the page loads with it
    let r = c
        .get(format!("http://{admin}/?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = c
        .get(format!("http://{admin}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("EventSource(\"/.hopline/events\")"));
    assert!(
        !html.contains("://"),
        "the page loads nothing from elsewhere"
    );

    // the live feed: a snapshot at once, then one a second
    let mut events = c
        .get(format!("http://{admin}/.hopline/events"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let first = next_snapshot(&mut events, &mut buf).await;
    assert_eq!(node(&first, "site:front")["role"], "origin");
    assert_eq!(node(&first, "site:front")["requests"], 0);

    // traffic: 300 requests and 3 refused by the limit
    for _ in 0..300 {
        assert_eq!(c.get(t.url("/")).send().await.unwrap().status(), 200);
    }
    let mut limited = 0;
    for _ in 0..4 {
        if c.get(t.url("/limited")).send().await.unwrap().status() == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 3);
    // the next snapshots count them: req/s over the last second, latency, rejections
    let mut seen = 0.0;
    let mut snap = serde_json::Value::Null;
    for _ in 0..3 {
        snap = next_snapshot(&mut events, &mut buf).await;
        seen += node(&snap, "site:front")["rps"].as_f64().unwrap()
            * snap["interval_s"].as_f64().unwrap();
        if node(&snap, "site:front")["requests"] == 304 {
            break;
        }
    }
    let front = node(&snap, "site:front");
    assert_eq!(front["requests"], 304, "{front}");
    assert!(seen > 0.0, "req/s moved: {snap}");
    assert_eq!(front["limits"][0]["name"], "tight");
    assert_eq!(front["limits"][0]["rejected"], 3);
    assert!(front["connections"].as_u64().is_some());
    // sampled traces: at most `sample` a second started here, listed with their hop
    let recent = snap["recent"].as_array().unwrap();
    assert!(!recent.is_empty(), "{snap}");
    assert!(recent.len() <= 9, "at most 3 a second: {}", recent.len());
    let id = recent[0]["trace"].as_str().unwrap();
    assert_eq!(recent[0]["hops"][0], "front");
    let trace: serde_json::Value = c
        .get(format!("http://{admin}/.hopline/trace/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trace["hops"][0]["site"], "front", "{trace}");
}

#[tokio::test]
async fn streams_are_boxes_of_the_dashboard() {
    use tokio::io::AsyncWriteExt;
    // an upstream that accepts and closes
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.shutdown().await;
        }
    });
    let t = start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[upstream.db]
servers = ["{up}"]
[[stream]]
listen = "127.0.0.1:0"
proxy = "db"
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  respond = {{ body = "x" }}
"#
    ))
    .await;
    let front = t.server.stream_addrs()[0];
    let mut events = client()
        .get(format!(
            "http://{}/.hopline/events",
            t.server.admin_addr().unwrap()
        ))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let _ = next_snapshot(&mut events, &mut buf).await;
    let c = tokio::net::TcpStream::connect(front).await.unwrap();
    drop(c);
    let id = format!("stream:tcp:{front}");
    let mut snap = next_snapshot(&mut events, &mut buf).await;
    for _ in 0..3 {
        if node(&snap, &id)["requests"] == 1 {
            break;
        }
        snap = next_snapshot(&mut events, &mut buf).await;
    }
    let st = node(&snap, &id);
    assert_eq!(st["requests"], 1, "{st}");
    assert_eq!(st["pools"][0]["name"], "db");
    assert_eq!(st["pools"][0]["servers"][0]["id"], up.to_string());
    assert_eq!(st["pools"][0]["servers"][0]["state"], "up");
}
