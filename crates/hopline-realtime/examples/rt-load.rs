//! The load client of bench/realtime.sh: holds many subscribers (WebSocket, SSE or long
//! polls) on one channel of a server — hopline or nginx + Nchan — publishes at a rate,
//! and measures delivery latency from a timestamp in each payload.
//!
//! It reads the subscribers' bytes raw and finds each event by its marker
//! (`T<unix µs>T` in the payload), so both servers are measured the same way whatever
//! they wrap the data in (hopline's JSON, Nchan's plain frames), and the client spends
//! little CPU per delivery.
//!
//! ```text
//! rt-load --addr 127.0.0.1:18100 --path /live/bench --via ws --subscribers 5000 \
//!         --rate 20 --seconds 30 --size 100 [--flavor nchan] [--hold]
//! ```
//! Prints one JSON line: connected, deliveries, expected, latency p50/p99/max (ms).
//! With `--hold` it connects, prints, then holds the connections until stdin closes (the
//! idle-memory measurement).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Ws,
    Sse,
    LongPoll,
}

#[derive(Clone, Debug)]
struct Opts {
    addr: SocketAddr,
    path: String,
    via: Via,
    subscribers: usize,
    rate: f64,
    seconds: f64,
    size: usize,
    nchan: bool,
    hold: bool,
    /// The server's pid: its CPU time during the publishing phase is reported.
    cpu_pid: Option<u32>,
    /// Publish to this server instead (another node sharing the channel, e.g. via Redis).
    publish_addr: Option<SocketAddr>,
}

fn opts() -> Opts {
    let mut o = Opts {
        addr: "127.0.0.1:18100".parse().unwrap(),
        path: "/live/bench".into(),
        via: Via::Ws,
        subscribers: 100,
        rate: 20.0,
        seconds: 10.0,
        size: 100,
        nchan: false,
        hold: false,
        cpu_pid: None,
        publish_addr: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--addr" => o.addr = v.parse().expect("--addr IP:PORT"),
            "--path" => o.path = v,
            "--via" => {
                o.via = match v.as_str() {
                    "ws" => Via::Ws,
                    "sse" => Via::Sse,
                    "long-poll" => Via::LongPoll,
                    _ => panic!("--via ws|sse|long-poll"),
                }
            }
            "--subscribers" => o.subscribers = v.parse().expect("--subscribers N"),
            "--rate" => o.rate = v.parse().expect("--rate N (per second)"),
            "--seconds" => o.seconds = v.parse().expect("--seconds N"),
            "--size" => o.size = v.parse().expect("--size BYTES"),
            "--flavor" => o.nchan = v == "nchan",
            "--cpu-pid" => o.cpu_pid = Some(v.parse().expect("--cpu-pid PID")),
            "--publish-addr" => o.publish_addr = Some(v.parse().expect("--publish-addr IP:PORT")),
            "--hold" => {
                o.hold = true;
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

/// CPU time (user + system) of a process so far, in µs.
fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name (which may hold spaces) start at ") "
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ticks * 1_000_000 / 100 // CLK_TCK is 100 on Linux
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Latencies (µs) of every delivery.
#[derive(Default)]
struct Stats {
    latencies: parking_lot::Mutex<Vec<u32>>,
    deliveries: AtomicU64,
    connected: AtomicU64,
}

/// Scan `buf` for `T<13+ digits>T` markers; record each; keep an unfinished tail.
fn scan(buf: &mut Vec<u8>, stats: &Stats, local: &mut Vec<u32>) {
    let now = now_us();
    let mut i = 0;
    let mut keep = buf.len();
    while i < buf.len() {
        if buf[i] == b'T' {
            let mut j = i + 1;
            while j < buf.len() && buf[j].is_ascii_digit() {
                j += 1;
            }
            if j == buf.len() {
                keep = i; // maybe a marker cut by the read: keep it for the next one
                break;
            }
            if buf[j] == b'T' && j - i > 13 {
                let t: u64 = std::str::from_utf8(&buf[i + 1..j])
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0);
                local.push(now.saturating_sub(t).min(u32::MAX as u64) as u32);
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    buf.drain(..keep);
    if local.len() >= 64 {
        stats
            .deliveries
            .fetch_add(local.len() as u64, Ordering::Relaxed);
        stats.latencies.lock().append(local);
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                s.set_nodelay(true).unwrap();
                return s;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            return got.split_off(i + 4);
        }
    }
}

async fn stream_subscriber(
    o: Arc<Opts>,
    stats: Arc<Stats>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut s = connect(o.addr).await;
    let req = match o.via {
        Via::Ws => format!(
            "GET {} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            o.path
        ),
        _ => format!(
            "GET {} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n",
            o.path
        ),
    };
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = read_head(&mut s).await;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let mut local = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let mut stop = stop;
    loop {
        tokio::select! {
            r = s.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    scan(&mut buf, &stats, &mut local);
                }
            },
            _ = stop.changed() => break,
        }
    }
    stats
        .deliveries
        .fetch_add(local.len() as u64, Ordering::Relaxed);
    stats.latencies.lock().append(&mut local);
}

/// Long polling: hopline follows `position`; Nchan follows Last-Modified / Etag.
async fn long_poll_subscriber(
    o: Arc<Opts>,
    stats: Arc<Stats>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut s = connect(o.addr).await;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let mut since: Option<String> = None;
    let (mut last_modified, mut etag) = (None::<String>, None::<String>);
    let mut local = Vec::new();
    let mut stop = stop;
    loop {
        let req = if o.nchan {
            let mut r = format!("GET {} HTTP/1.1\r\nHost: bench\r\n", o.path);
            if let Some(lm) = &last_modified {
                r.push_str(&format!("If-Modified-Since: {lm}\r\n"));
            }
            if let Some(e) = &etag {
                r.push_str(&format!("If-None-Match: {e}\r\n"));
            }
            r + "\r\n"
        } else {
            match &since {
                Some(p) => format!(
                    "GET {}?wait=1&since={p} HTTP/1.1\r\nHost: bench\r\n\r\n",
                    o.path
                ),
                None => format!("GET {}?wait=1 HTTP/1.1\r\nHost: bench\r\n\r\n", o.path),
            }
        };
        if s.write_all(req.as_bytes()).await.is_err() {
            s = connect(o.addr).await;
            continue;
        }
        // read one response: head, then Content-Length bytes (both servers send it)
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        let (head_end, body_len) = loop {
            let n = tokio::select! {
                r = s.read(&mut buf) => r.unwrap_or(0),
                _ = stop.changed() => 0,
            };
            if n == 0 {
                stats
                    .deliveries
                    .fetch_add(local.len() as u64, Ordering::Relaxed);
                stats.latencies.lock().append(&mut local);
                return;
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if o.nchan {
                    let raw = String::from_utf8_lossy(&got[..i]).to_string();
                    for line in raw.lines() {
                        let lower = line.to_ascii_lowercase();
                        if lower.starts_with("last-modified:") {
                            last_modified = Some(line[14..].trim().to_string());
                        } else if lower.starts_with("etag:") {
                            etag = Some(line[5..].trim().to_string());
                        }
                    }
                }
                break (i + 4, len);
            }
        };
        while got.len() < head_end + body_len {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let mut body = got[head_end..].to_vec();
        if !o.nchan
            && let Some(i) = body.windows(12).position(|w| w == b"\"position\":\"")
        {
            let rest = &body[i + 12..];
            if let Some(end) = rest.iter().position(|&b| b == b'"') {
                since = Some(String::from_utf8_lossy(&rest[..end]).to_string());
            }
        }
        scan(&mut body, &stats, &mut local);
    }
}

async fn publisher(o: Arc<Opts>) -> u64 {
    let mut s = connect(o.publish_addr.unwrap_or(o.addr)).await;
    let total = (o.rate * o.seconds).round() as u64;
    let every = Duration::from_secs_f64(1.0 / o.rate);
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 4096];
    for n in 0..total {
        tokio::time::sleep_until(start + every.mul_f64(n as f64)).await;
        let mark = format!("T{}T", now_us());
        let body = format!("{mark}{}", "x".repeat(o.size.saturating_sub(mark.len())));
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            o.path,
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        // one response each (small; Content-Length framed)
        let mut got = Vec::new();
        loop {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "the server closed the publisher's connection");
            got.extend_from_slice(&buf[..k]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
                assert!(
                    head.starts_with("http/1.1 200")
                        || head.starts_with("http/1.1 201")
                        || head.starts_with("http/1.1 202"),
                    "publish failed: {head}"
                );
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= i + 4 + len {
                    break;
                }
            }
        }
    }
    total
}

fn main() {
    let o = Arc::new(opts());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stats = Arc::new(Stats::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..o.subscribers {
            let (o2, s2, r2) = (o.clone(), stats.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                match o2.via {
                    Via::LongPoll => long_poll_subscriber(o2, s2, r2).await,
                    _ => stream_subscriber(o2, s2, r2).await,
                }
            }));
            if i % 200 == 199 {
                tokio::task::yield_now().await;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while (stats.connected.load(Ordering::Relaxed) as usize) < o.subscribers && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connected = stats.connected.load(Ordering::Relaxed);
        if o.hold {
            println!("{{\"connected\":{connected}}}");
            let _ = tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
            })
            .await;
            let _ = stop_tx.send(true);
            return;
        }
        // long polls need a moment to be held
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!("rt-load: {connected} subscribers connected; publishing");
        let cpu0 = o.cpu_pid.map(cpu_us);
        let published = publisher(o.clone()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = o.cpu_pid.map(cpu_us).zip(cpu0).map(|(b, a)| b - a);
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let mut lat = std::mem::take(&mut *stats.latencies.lock());
        lat.sort_unstable();
        let pct = |p: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
            }
        };
        let per = cpu.map_or(0.0, |c| c as f64 / lat.len().max(1) as f64);
        println!(
            "{{\"connected\":{connected},\"published\":{published},\"expected\":{},\"deliveries\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"server_cpu_ms\":{},\"cpu_us_per_delivery\":{per:.3}}}",
            published * connected,
            lat.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0),
            cpu.map_or(0, |c| c / 1000),
        );
    });
}
