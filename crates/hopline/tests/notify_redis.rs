//! The notification service on the Redis Streams engine: two `hopline serve` nodes on one
//! Redis (Debian's `redis-server`, started here) share apps, messages and queues. Clients
//! send to both; one node is killed with SIGKILL while it holds attempts in flight; the
//! other takes its unfinished messages over (XAUTOCLAIM) and every accepted message is
//! delivered. Idempotency keys and nonces hold across nodes.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

use hopline_testkit::{Proc, Redis, free_port};

fn node(config: &std::path::Path) -> Proc {
    Proc(
        Command::new(BIN)
            .arg("serve")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("port {port} never opened");
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    key: String,
    secret: String,
}

impl Client {
    async fn call(
        &self,
        port: u16,
        method: &str,
        path: &str,
        body: &str,
        extra: &[(&str, &str)],
        nonce: Option<&str>,
    ) -> reqwest::Result<(u16, serde_json::Value)> {
        let ts = (hopline_notify::now_ms() / 1000).to_string();
        let nonce = nonce
            .map(str::to_string)
            .unwrap_or_else(|| hopline_notify::model::random_token(9));
        let (p, q) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let canonical =
            hopline_notify::model::canonical(method, p, q, &ts, &nonce, body.as_bytes());
        let mut r = self
            .http
            .request(
                method.parse().unwrap(),
                format!("http://127.0.0.1:{port}{path}"),
            )
            .header("x-app-key", &self.key)
            .header("x-timestamp", ts)
            .header("x-nonce", nonce)
            .header(
                "x-signature",
                hopline_notify::model::sign(&self.secret, &canonical),
            )
            .body(body.to_string());
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        let r = r.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or_default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_queues_and_survive_one_killed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(redis) = Redis::start() else {
        return;
    };
    let redis_port = redis.port;
    // the webhook sink answers each delivery after 300 ms, so that a node always holds
    // attempts in flight
    let seen: Arc<parking_lot::Mutex<HashMap<String, u32>>> = Arc::default();
    let deliveries = Arc::new(AtomicU64::new(0));
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    {
        let (seen, deliveries) = (seen.clone(), deliveries.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = sink.accept().await else {
                    continue;
                };
                let (seen, deliveries) = (seen.clone(), deliveries.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (seen, deliveries) = (seen.clone(), deliveries.clone());
                            async move {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                if let Some(id) = req
                                    .headers()
                                    .get("webhook-id")
                                    .and_then(|v| v.to_str().ok())
                                {
                                    *seen.lock().entry(id.to_string()).or_default() += 1;
                                    deliveries.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok::<_, Infallible>(http::Response::new(Full::new(
                                    Bytes::from_static(b"ok"),
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let configs: Vec<std::path::PathBuf> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let path = dir.path().join(format!("node{i}.toml"));
            std::fs::write(
                &path,
                format!(
                    r#"
access_log = "off"
[notify.main]
engine = "redis://127.0.0.1:{redis_port}"
retry = ["0s", "200ms", "500ms", "1s", "1s", "1s", "1s", "1s"]
allow_private_targets = true
webhook_timeout_ms = 1000
claim_idle_ms = 2000
concurrency = 16
[[site]]
listen = ["127.0.0.1:{port}"]
  [[site.route]]
  path = "/"
  notify = "main"
"#
                ),
            )
            .unwrap();
            path
        })
        .collect();
    // the app is made once, in Redis, and both nodes know it
    let out = Command::new(BIN)
        .args(["notify", "app", "create", "shop", "--json", "--config"])
        .arg(&configs[0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = Command::new(BIN)
        .args(["notify", "app", "list", "--json", "--config"])
        .arg(&configs[1])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(app["key"].as_str().unwrap()),
        "the other node's config lists the app: {}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let client = Client {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        key: app["key"].as_str().unwrap().to_string(),
        secret: app["secret"].as_str().unwrap().to_string(),
    };
    let mut a = node(&configs[0]);
    let _b = node(&configs[1]);
    wait_port(ports[0]).await;
    wait_port(ports[1]).await;

    // idempotency and nonces are shared: same key on the other node → same message;
    // a nonce used on one node is a replay on the other
    let body = format!(r#"{{"channel":"webhook","to":"http://{sink_addr}/hook","body":"once"}}"#);
    let (s1, v1) = client
        .call(
            ports[0],
            "POST",
            "/v1/messages",
            &body,
            &[("idempotency-key", "order-1")],
            None,
        )
        .await
        .unwrap();
    let (s2, v2) = client
        .call(
            ports[1],
            "POST",
            "/v1/messages",
            &body,
            &[("idempotency-key", "order-1")],
            None,
        )
        .await
        .unwrap();
    assert_eq!((s1, s2), (202, 202), "{v1} {v2}");
    assert_eq!(v1["id"], v2["id"], "one message for one Idempotency-Key");
    let (s, _) = client
        .call(
            ports[0],
            "GET",
            "/v1/messages?limit=1",
            "",
            &[],
            Some("nonce-1"),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let (s, v) = client
        .call(
            ports[1],
            "GET",
            "/v1/messages?limit=1",
            "",
            &[],
            Some("nonce-1"),
        )
        .await
        .unwrap();
    assert_eq!(s, 401, "a nonce replayed to the other node: {v}");

    // load on both nodes
    let accepted: Arc<parking_lot::Mutex<Vec<(usize, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let a_dead = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8usize {
        let (accepted, stop, a_dead, client) = (
            accepted.clone(),
            stop.clone(),
            a_dead.clone(),
            client.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let which = if a_dead.load(Ordering::Relaxed) {
                    1
                } else {
                    (c + n) % 2
                };
                let body = format!(
                    r#"{{"channel":"webhook","to":"http://{sink_addr}/hook","body":"client {c} message {n}"}}"#
                );
                match client
                    .call(ports[which], "POST", "/v1/messages", &body, &[], None)
                    .await
                {
                    Ok((202, v)) => {
                        if let Some(id) = v["id"].as_str() {
                            accepted.lock().push((which, id.to_string()));
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while accepted.lock().len() < 1500 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // stop the clients, then kill node A at once: it holds attempts in flight
    stop.store(true, Ordering::Relaxed);
    a_dead.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let _ = a.0.kill();
    let _ = a.0.wait();
    // more work for the survivor, after the kill
    for i in 0..50 {
        let body =
            format!(r#"{{"channel":"webhook","to":"http://{sink_addr}/hook","body":"late {i}"}}"#);
        let (s, v) = client
            .call(ports[1], "POST", "/v1/messages", &body, &[], None)
            .await
            .unwrap();
        assert_eq!(s, 202, "{v}");
        accepted
            .lock()
            .push((1, v["id"].as_str().unwrap().to_string()));
    }
    let accepted = accepted.lock().clone();
    let by_a = accepted.iter().filter(|(w, _)| *w == 0).count();
    assert!(by_a > 100, "node A accepted {by_a}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<String> = {
            let seen = seen.lock();
            accepted
                .iter()
                .filter(|(_, id)| !seen.contains_key(id))
                .map(|(_, id)| id.clone())
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} accepted messages never reached the sink, e.g. {:?}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // every message ends delivered, as the surviving node tells it; those the killed
    // node had taken and never finished show it: taken twice (two `sending` in the
    // timeline, the attempt counter ahead of the attempts recorded)
    let mut taken_over = 0;
    for (_, id) in &accepted {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (s, v) = client
                .call(
                    ports[1],
                    "GET",
                    &format!("/v1/messages/{id}"),
                    "",
                    &[],
                    None,
                )
                .await
                .unwrap();
            assert_eq!(s, 200, "{v}");
            if v["message"]["status"] == "delivered" {
                let sending = v["timeline"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["status"] == "sending")
                    .count();
                let recorded = v["attempts"].as_array().unwrap().len() as u64;
                if sending >= 2 && v["message"]["attempts"].as_u64().unwrap() > recorded {
                    taken_over += 1;
                }
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} not delivered: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        taken_over > 0,
        "no message was taken over from the killed node: the take-over is not tested"
    );
    let distinct: HashSet<&String> = accepted.iter().map(|(_, id)| id).collect();
    eprintln!(
        "{} accepted ({by_a} by the node killed), {taken_over} taken over, {} deliveries for {} messages",
        accepted.len(),
        deliveries.load(Ordering::Relaxed),
        distinct.len()
    );
}
