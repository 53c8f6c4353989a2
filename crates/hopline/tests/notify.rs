//! The notification service's promise under kill -9: `hopline serve` is killed at random
//! moments while clients send signed messages; every message that got a 202 is delivered
//! to the webhook sink at least once (duplicates only for attempts in flight at a kill).

use std::collections::HashSet;
use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(config: &std::path::Path) -> Serve {
    Serve(
        Command::new(BIN)
            .args(["serve"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_message_is_delivered_across_kill_9() {
    const ACCEPTED: u64 = 5000;
    const KILLS: u32 = 20;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // the webhook sink: distinct message ids, and all deliveries
    let seen: Arc<parking_lot::Mutex<HashSet<String>>> = Arc::default();
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
                                if let Some(id) = req
                                    .headers()
                                    .get("webhook-id")
                                    .and_then(|v| v.to_str().ok())
                                {
                                    seen.lock().insert(id.to_string());
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("hopline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
access_log = "off"
[notify.main]
database = "notify.db"
retry = ["0s", "200ms", "500ms", "1s", "1s", "1s", "1s", "1s"]
allow_private_targets = true
[[site]]
listen = ["127.0.0.1:{port}"]
  [[site.route]]
  path = "/"
  notify = "main"
"#
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["notify", "app", "create", "load", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (key, secret) = (
        app["key"].as_str().unwrap().to_string(),
        app["secret"].as_str().unwrap().to_string(),
    );

    let mut server = serve(&config);
    let accepted: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (accepted, stop, key, secret) =
            (accepted.clone(), stop.clone(), key.clone(), secret.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = serde_json::json!({"channel": "webhook", "to": format!("http://{sink_addr}/hook"), "body": format!("client {c} message {n}")}).to_string();
                let ts = (hopline_notify::now_ms() / 1000).to_string();
                let nonce = hopline_notify::model::random_token(9);
                let canonical = hopline_notify::model::canonical("POST", "/v1/messages", None, &ts, &nonce, body.as_bytes());
                let r = http
                    .post(format!("http://127.0.0.1:{port}/v1/messages"))
                    .header("x-app-key", &key)
                    .header("x-timestamp", ts)
                    .header("x-nonce", nonce)
                    .header("x-signature", hopline_notify::model::sign(&secret, &canonical))
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        if let Some(id) = v["id"].as_str() {
                            accepted.lock().push(id.to_string());
                        }
                    }
                    // refused or cut by a kill: not accepted, nothing promised
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    // kill -9 at random moments, restarting each time
    let per_kill = ACCEPTED / (KILLS as u64 + 1);
    for k in 0..KILLS {
        let target = per_kill * (k as u64 + 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while (accepted.lock().len() as u64) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress: {} accepted",
                accepted.lock().len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 50)).await;
        let _ = server.0.kill(); // SIGKILL
        let _ = server.0.wait();
        server = serve(&config);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (accepted.lock().len() as u64) < ACCEPTED {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let accepted: Vec<String> = accepted.lock().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<&String> = {
            let seen = seen.lock();
            accepted.iter().filter(|id| !seen.contains(*id)).collect()
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
    let distinct = seen.lock().len();
    let total = deliveries.load(Ordering::Relaxed);
    eprintln!(
        "{} accepted across {KILLS} kill -9; {distinct} distinct delivered, {total} deliveries ({} duplicates)",
        accepted.len(),
        total - distinct as u64
    );
    // (a message committed just before a kill whose 202 never left is delivered too:
    // the sink may see more ids than the clients were told of, never fewer)
    assert!(distinct >= accepted.len());
    drop(server);
}
