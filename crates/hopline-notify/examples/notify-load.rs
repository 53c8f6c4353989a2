//! The load client of bench/notify.sh.
//!
//! `notify-load send --url http://127.0.0.1:18110 --key K --secret S --clients 64 --seconds 10 --sink 127.0.0.1:18111`
//! runs a webhook sink itself, sends signed messages from `--clients` keep-alive
//! connections for `--seconds`, then waits for every accepted message to reach the sink,
//! and prints one JSON line: accepted/s, delivered/s (end to end), p50/p99 of the time
//! from a message's 202 to its first delivery attempt at the sink. `--scheduled N` first
//! queues N messages scheduled an hour ahead (not measured): the run then shows what a
//! backlog of scheduled messages costs the workers.
//!
//! `notify-load baseline --db FILE --rows N` prints the physical floor of the disk: N rows
//! of the same shape inserted into SQLite (WAL, synchronous=FULL) one transaction each,
//! and in batches of 1,000.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    t * 10_000
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("baseline") => baseline(&args),
        Some("send") => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(send(&args));
        }
        _ => {
            eprintln!(
                "usage: notify-load send --url URL --key K --secret S [--clients 64] [--seconds 10] [--sink ADDR] [--cpu-pid PID[,PID…]] [--scheduled N]\n       notify-load baseline --db FILE [--rows 20000]"
            );
            std::process::exit(2);
        }
    }
}

fn baseline(args: &[String]) {
    let db = arg(args, "--db").expect("--db FILE");
    let rows: usize = arg(args, "--rows").map_or(20_000, |r| r.parse().unwrap());
    let _ = std::fs::remove_file(&db);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.execute_batch("CREATE TABLE m (id TEXT PRIMARY KEY, app TEXT, channel TEXT, recipient TEXT, body TEXT, priority INTEGER, status TEXT, next_ms INTEGER, created_ms INTEGER); CREATE INDEX m_due ON m(status, priority, next_ms); CREATE TABLE h (message TEXT, status TEXT, at_ms INTEGER);").unwrap();
    let body = "x".repeat(100);
    let insert = |tx: &rusqlite::Connection, i: usize| {
        let id = format!("msg_{i:020}");
        tx.execute("INSERT INTO m VALUES (?1, 'app', 'webhook', 'http://127.0.0.1/hook', ?2, 1, 'queued', 0, 0)", rusqlite::params![id, body]).unwrap();
        tx.execute(
            "INSERT INTO h VALUES (?1, 'queued', 0)",
            rusqlite::params![id],
        )
        .unwrap();
    };
    let single = rows.min(5_000);
    let t = tokio::time::Instant::now();
    for i in 0..single {
        c.execute_batch("BEGIN").unwrap();
        insert(&c, i);
        c.execute_batch("COMMIT").unwrap();
    }
    let single_rate = single as f64 / t.elapsed().as_secs_f64();
    let t = tokio::time::Instant::now();
    for chunk in 0..rows.div_ceil(1000) {
        c.execute_batch("BEGIN").unwrap();
        for i in 0..1000 {
            insert(&c, 1_000_000 + chunk * 1000 + i);
        }
        c.execute_batch("COMMIT").unwrap();
    }
    let batch_rate = (rows.div_ceil(1000) * 1000) as f64 / t.elapsed().as_secs_f64();
    println!(
        "{{\"single_row_tx_per_s\":{single_rate:.0},\"batched_1000_rows_per_s\":{batch_rate:.0}}}"
    );
}

/// A keep-alive HTTP/1.1 connection to the service.
async fn client(
    target: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(target).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A signed `POST /v1/messages` of `body`.
fn signed(key: &str, secret: &str, nonce: &str, body: String) -> http::Request<Full<Bytes>> {
    let ts = (now_us() / 1_000_000).to_string();
    let canonical =
        hopline_notify::model::canonical("POST", "/v1/messages", None, &ts, nonce, body.as_bytes());
    http::Request::post("/v1/messages")
        .header("host", "bench")
        .header("content-type", "application/json")
        .header("x-app-key", key)
        .header("x-timestamp", ts)
        .header("x-nonce", nonce)
        .header(
            "x-signature",
            hopline_notify::model::sign(secret, &canonical),
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// The first arrival time (µs) of each message id at the sink.
type FirstSeen = Arc<parking_lot::Mutex<HashMap<String, u64>>>;

/// The accepted messages: id and accept time (µs).
type Accepted = Arc<parking_lot::Mutex<Vec<(String, u64)>>>;

/// The sink the webhooks go to: the first arrival time of each message id, and how many
/// deliveries arrived.
async fn start_sink(sink_addr: &str) -> (FirstSeen, Arc<AtomicU64>) {
    let first_seen: FirstSeen = Arc::default();
    let arrivals = Arc::new(AtomicU64::new(0));
    let l = tokio::net::TcpListener::bind(sink_addr)
        .await
        .expect("the sink's address");
    {
        let (first_seen, arrivals) = (first_seen.clone(), arrivals.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (first_seen, arrivals) = (first_seen.clone(), arrivals.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (first_seen, arrivals) = (first_seen.clone(), arrivals.clone());
                            async move {
                                let now = now_us();
                                if let Some(id) = req
                                    .headers()
                                    .get("webhook-id")
                                    .and_then(|v| v.to_str().ok())
                                {
                                    first_seen.lock().entry(id.to_string()).or_insert(now);
                                    arrivals.fetch_add(1, Ordering::Relaxed);
                                }
                                let _ = req.into_body().collect().await;
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
    (first_seen, arrivals)
}

/// Schedule `scheduled` messages an hour ahead (not measured): a backlog that stays
/// queued for the whole run.
async fn schedule_backlog(
    target: std::net::SocketAddr,
    key: &str,
    secret: &str,
    clients: usize,
    scheduled: usize,
) {
    let later = now_us() / 1_000_000 + 3600;
    let left = Arc::new(AtomicU64::new(scheduled as u64));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (left, key, secret) = (left.clone(), key.to_string(), secret.to_string());
        tasks.push(tokio::spawn(async move {
            let mut sender = client(target).await;
            let mut n = 0u64;
            while left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1)).is_ok() {
                n += 1;
                let body = format!("{{\"channel\":\"webhook\",\"to\":\"http://127.0.0.1:9/later\",\"body\":\"later {c} {n}\",\"send_at\":{later}}}");
                let req = signed(&key, &secret, &format!("s{c}-{n}-{}", now_us()), body);
                if sender.ready().await.is_err() {
                    break;
                }
                match sender.send_request(req).await {
                    Ok(resp) if resp.status() == 202 => {
                        let _ = resp.into_body().collect().await;
                    }
                    other => panic!("scheduling the backlog: {:?}", other.map(|r| r.status())),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("notify-load: {scheduled} messages scheduled an hour ahead; measuring");
}

/// `clients` connections sending messages to the sink until `stop`: the id and accept
/// time of each accepted message are pushed to `accepted`, failures counted in `errors`.
fn start_senders(
    target: std::net::SocketAddr,
    (key, secret): (&str, &str),
    clients: usize,
    sink_addr: &str,
    (accepted, stop, errors): (&Accepted, &Arc<AtomicBool>, &Arc<AtomicU64>),
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (accepted, stop, errors, key, secret, sink_addr) = (
            accepted.clone(),
            stop.clone(),
            errors.clone(),
            key.to_string(),
            secret.to_string(),
            sink_addr.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut sender = client(target).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = format!("{{\"channel\":\"webhook\",\"to\":\"http://{sink_addr}/hook\",\"body\":\"client {c} message {n} {}\"}}", "x".repeat(48));
                let req = signed(&key, &secret, &format!("{c}-{n}-{}", now_us()), body);
                if sender.ready().await.is_err() {
                    break;
                }
                match sender.send_request(req).await {
                    Ok(resp) if resp.status() == 202 => {
                        let at = now_us();
                        let b = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                        if let Some(id) = v["id"].as_str() {
                            accepted.lock().push((id.to_string(), at));
                        }
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tasks
}

async fn send(args: &[String]) {
    let url = arg(args, "--url").expect("--url");
    let key = arg(args, "--key").expect("--key");
    let secret = arg(args, "--secret").expect("--secret");
    let clients: usize = arg(args, "--clients").map_or(64, |v| v.parse().unwrap());
    let seconds: f64 = arg(args, "--seconds").map_or(10.0, |v| v.parse().unwrap());
    let sink_addr = arg(args, "--sink").unwrap_or_else(|| "127.0.0.1:18111".into());
    // the server's processes (e.g. hopline,redis-server): their CPU is summed
    let cpu_pids: Option<Vec<u32>> =
        arg(args, "--cpu-pid").map(|v| v.split(',').map(|p| p.parse().unwrap()).collect());
    let cpu_pid = cpu_pids.as_ref();
    let cpu_sum = |pids: &Vec<u32>| pids.iter().map(|p| cpu_us(*p)).sum::<u64>();
    let target: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("--url http://IP:PORT");

    let (first_seen, _arrivals) = start_sink(&sink_addr).await;
    let scheduled: usize = arg(args, "--scheduled").map_or(0, |v| v.parse().unwrap());
    if scheduled > 0 {
        schedule_backlog(target, &key, &secret, clients, scheduled).await;
    }
    let accepted: Accepted = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_pid.map(cpu_sum);
    let each0: Vec<u64> = cpu_pid.map_or(Vec::new(), |p| p.iter().map(|p| cpu_us(*p)).collect());
    let started = tokio::time::Instant::now();
    let tasks = start_senders(
        target,
        (&key, &secret),
        clients,
        &sink_addr,
        (&accepted, &stop, &errors),
    );
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let accept_secs = started.elapsed().as_secs_f64();
    let cpu_accept = cpu_pid.map(cpu_sum).zip(cpu0).map(|(b, a)| b - a);
    // per process, as a JSON list (e.g. [hopline, redis-server])
    let n_accepted = accepted.lock().len().max(1) as f64;
    let each: Vec<String> = cpu_pid
        .map_or(Vec::new(), |p| p.iter().map(|p| cpu_us(*p)).collect())
        .iter()
        .zip(&each0)
        .map(|(b, a)| format!("{:.1}", (b - a) as f64 / n_accepted))
        .collect();
    let accepted = accepted.lock().clone();
    // wait for every accepted message to reach the sink
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let seen = first_seen.lock();
            accepted.iter().all(|(id, _)| seen.contains_key(id))
        };
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_secs = started.elapsed().as_secs_f64();
    let seen = first_seen.lock();
    let mut lat: Vec<u64> = accepted
        .iter()
        .filter_map(|(id, at)| seen.get(id).map(|t| t.saturating_sub(*at)))
        .collect();
    let delivered = lat.len();
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    println!(
        "{{\"clients\":{clients},\"accepted\":{},\"errors\":{},\"accepted_per_s\":{:.0},\"delivered\":{delivered},\"delivered_per_s\":{:.0},\"accept_to_first_attempt_p50_ms\":{:.2},\"accept_to_first_attempt_p99_ms\":{:.2},\"server_cpu_us_per_accept\":{:.1},\"server_cpu_us_per_accept_by_pid\":[{}]}}",
        accepted.len(),
        errors.load(Ordering::Relaxed),
        accepted.len() as f64 / accept_secs,
        delivered as f64 / all_secs,
        pct(0.5),
        pct(0.99),
        cpu_accept.map_or(0.0, |c| c as f64 / accepted.len().max(1) as f64),
        each.join(","),
    );
}
