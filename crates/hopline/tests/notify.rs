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

/// A `hopline serve` with one notification service (`retry` its schedule), and an app.
struct Service {
    _dir: tempfile::TempDir,
    _server: Serve,
    port: u16,
    key: String,
    secret: String,
}

impl Service {
    fn start(retry: &str) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let port = hopline_testkit::free_port();
        let config = dir.path().join("hopline.toml");
        std::fs::write(
            &config,
            format!(
                r#"
access_log = "off"
[notify.main]
database = "notify.db"
retry = {retry}
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
            .args(["notify", "app", "create", "cli", "--json", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let server = serve(&config);
        assert!(
            hopline_testkit::wait_for_port(port, Duration::from_secs(20)),
            "hopline serve never listened on {port}"
        );
        Service {
            _dir: dir,
            _server: server,
            port,
            key: app["key"].as_str().unwrap().to_string(),
            secret: app["secret"].as_str().unwrap().to_string(),
        }
    }

    /// `hopline notify ARGS… --url … --app … --secret …`, with its standard output
    /// (killed, and the test failed, after 30 s).
    fn notify(&self, args: &[&str]) -> String {
        let mut child = Command::new(BIN)
            .arg("notify")
            .args(args)
            .args(["--url", &format!("http://127.0.0.1:{}", self.port)])
            .args(["--app", &self.key, "--secret", &self.secret])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "notify {args:?} still running after 30 s; it printed:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "notify {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sends a webhook to `to`; its message id.
    fn send(&self, to: &str) -> String {
        let out = self.notify(&["send", "--to", to, "--body", "hi", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["id"].as_str().unwrap().to_string()
    }
}

/// A webhook endpoint on loopback answering 200 to every request.
async fn sink() -> std::net::SocketAddr {
    sink_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
}

/// The same endpoint on a listener of the caller's.
fn sink_on(sink: tokio::net::TcpListener) -> std::net::SocketAddr {
    let addr = sink.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = sink.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |_req: http::Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// `status --follow` prints the message's block once, then only what changed: each new
/// attempt once, and a status it moved to; an attempt that got no HTTP answer says why
/// (never a raw JSON `null`).
#[test]
fn status_follow_prints_the_block_once_then_only_changes() {
    // four attempts about a second apart, then dead: several polls of --follow
    let service = Service::start(r#"["0s", "1s", "1s", "1s"]"#);
    let closed = hopline_testkit::free_port();
    let id = service.send(&format!("http://127.0.0.1:{closed}/hook"));
    let started = tokio::time::Instant::now();
    let out = service.notify(&["status", &id, "--follow"]);
    eprintln!("{out}");
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "--follow should have polled several times ({:?})",
        started.elapsed()
    );
    assert!(!out.contains("null"), "a raw null in:\n{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with(&id)).count(),
        1,
        "the block's first line more than once:\n{out}"
    );
    for n in 1..=4 {
        assert_eq!(
            out.matches(&format!("attempt {n} (")).count(),
            1,
            "attempt {n} not exactly once:\n{out}"
        );
    }
    assert!(
        out.contains(&format!(
            "no answer: connect to 127.0.0.1:{closed}: Connection refused"
        )),
        "why no answer came:\n{out}"
    );
    assert_eq!(
        out.lines().last(),
        Some("  → dead"),
        "ends with the final status:\n{out}"
    );
}

/// `retry --since --to` queues again what went dead for one endpoint (and only that),
/// once the endpoint answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_queues_again_what_died_for_one_endpoint() {
    let service = Service::start(r#"["0s"]"#);
    let (down, other) = (hopline_testkit::free_port(), hopline_testkit::free_port());
    let hook = format!("http://127.0.0.1:{down}/hook");
    let service = tokio::task::spawn_blocking(move || {
        let ids: Vec<String> = (0..2).map(|_| service.send(&hook)).collect();
        service.send(&format!("http://127.0.0.1:{other}/hook"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v: serde_json::Value =
                serde_json::from_str(&service.notify(&["stats", "--json"])).unwrap();
            let dead: u64 = v["groups"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| g["status"] == "dead")
                .map(|g| g["count"].as_u64().unwrap())
                .sum();
            if dead == 3 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "stats: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
        (service, ids, hook)
    })
    .await
    .unwrap();
    let (service, ids, hook) = service;
    // the endpoint is back
    sink_on(
        tokio::net::TcpListener::bind(("127.0.0.1", down))
            .await
            .unwrap(),
    );
    let out = tokio::task::spawn_blocking(move || {
        let out = service.notify(&["retry", "--since", "1h", "--to", &hook, "--json"]);
        let text = service.notify(&["retry", "--since", "1h", "--to", &hook]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for id in &ids {
            loop {
                let v: serde_json::Value =
                    serde_json::from_str(&service.notify(&["status", id, "--json"])).unwrap();
                if v["message"]["status"] == "delivered" {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{v}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        (out, text)
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out.0).unwrap();
    assert_eq!(
        v["retried"], 2,
        "the two for that endpoint, not the other: {v}"
    );
    assert_eq!(
        out.1.trim(),
        "0 message(s) queued again",
        "already queued: nothing dead is left for it"
    );
}

/// `stats` columns line up: names start, numbers end, at the same character in every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_columns_line_up() {
    let sink = sink().await;
    let service = Service::start(r#"["0s", "60s"]"#);
    let closed = hopline_testkit::free_port();
    let service = tokio::task::spawn_blocking(move || {
        for _ in 0..12 {
            service.send(&format!("http://{sink}/hook"));
        }
        service.send(&format!("http://127.0.0.1:{closed}/hook"));
        // wait for the twelve deliveries and the failed first attempt
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v: serde_json::Value =
                serde_json::from_str(&service.notify(&["stats", "--json"])).unwrap();
            let count = |status: &str| {
                v["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|g| g["status"] == status)
                    .map(|g| g["count"].as_u64().unwrap())
                    .sum::<u64>()
            };
            if count("delivered") == 12 && count("queued") == 1 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "stats: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    })
    .await
    .unwrap();
    let out = service.notify(&["stats"]);
    eprintln!("{out}");
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("channel"))
        .collect();
    assert_eq!(rows.len(), 3, "a header and two groups:\n{out}");
    // each row's cells (split on two or more spaces) as character ranges
    let cells = |line: &str| {
        let chars: Vec<char> = line.chars().collect();
        let mut spans = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] == ' ' {
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len()
                && !(chars[i] == ' ' && chars.get(i + 1).is_none_or(|c| *c == ' '))
            {
                i += 1;
            }
            spans.push((start, i));
        }
        spans
    };
    let header = cells(rows[0]);
    assert_eq!(header.len(), 7, "{out}");
    for row in &rows[1..] {
        let spans = cells(row);
        assert_eq!(spans.len(), 7, "{row:?}\n{out}");
        for (c, (span, head)) in spans.iter().zip(&header).enumerate() {
            if c < 2 {
                assert_eq!(span.0, head.0, "column {c} starts elsewhere:\n{out}");
            } else {
                assert_eq!(span.1, head.1, "column {c} ends elsewhere:\n{out}");
            }
        }
    }
}
