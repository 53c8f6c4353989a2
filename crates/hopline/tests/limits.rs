//! Shared rate limits across edge processes: two `hopline serve` processes using one
//! Redis (the Debian `redis-server`, started here) enforce one combined limit; with
//! Redis gone they fall back to local limits and never fail a request.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

use hopline_testkit::{Proc, Redis};

fn edge(
    dir: &std::path::Path,
    name: &str,
    redis_port: u16,
) -> (
    Proc,
    SocketAddr,
    std::sync::Arc<std::sync::RwLock<Vec<String>>>,
) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "threads = 1\naccess_log = \"off\"\n[limit.api]\nrate = \"10/m\"\nburst = 10\nstore = \"redis://127.0.0.1:{redis_port}\"\n[[site]]\nlisten = [\"127.0.0.1:0\"]\n  [[site.route]]\n  path = \"/\"\n  respond = {{ body = \"{name}\" }}\n  limit = \"api\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg(&path)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = std::sync::Arc::new(std::sync::RwLock::new(Vec::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            l2.write().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("edge started")
        .parse()
        .unwrap();
    (Proc(child), addr, lines)
}

fn status(addr: SocketAddr) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out[9..12].parse().unwrap()
}

#[test]
fn two_processes_share_one_limit_through_redis_and_fall_back_without_it() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let port = redis.port;
    let dir = tempfile::tempdir().unwrap();
    let (_a, a, _) = edge(dir.path(), "a", port);
    let (_b, b, b_log) = edge(dir.path(), "b", port);
    // 10 per minute in total: alternate between the two processes
    let mut ok = 0;
    for i in 0..16 {
        let addr = if i % 2 == 0 { a } else { b };
        if status(addr) == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 10, "the two edges did not share one limit");
    // Redis goes away: local limits take over, requests are answered (not 5xx)
    redis.kill();
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(status(b));
    }
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    assert!(
        codes.contains(&200),
        "local fallback should start with a full bucket: {codes:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = b_log.read().unwrap().join("\n");
    assert!(log.contains("falling back to local limits"), "{log}");
}
