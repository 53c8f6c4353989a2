//! What an idle keep-alive connection costs: the heap bytes the server holds for each
//! connection that made a request and now waits for the next one (counted exactly by a
//! counting allocator, not guessed from RSS). nginx holds well under 1 KiB per idle
//! connection beyond its preallocated connection table; hopline's budget is 1.5 KiB (it
//! holds about 1.3 KiB: its task, its socket registration and its connection record).

mod common;

use std::time::Duration;

use std::io::{Read, Write};
use std::net::TcpStream;

#[global_allocator]
static HEAP: hopline_testkit::alloc::Counting = hopline_testkit::alloc::Counting::new();

const N: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_holds_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    std::fs::write(dir.path().join("public/small.txt"), "hello world\n\n").unwrap();
    let t = common::start_in(
        dir,
        r#"
access_log = "off"
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  root = "public"
"#,
    )
    .await;
    // warm up: file cache, date cache, thread-locals, the runtime's own structures
    let mut warm = Vec::new();
    for _ in 0..50 {
        warm.push(one_request(t.addr));
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // blocking std sockets: the clients hold no heap, so every counted byte is the server's
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        clients.push(TcpStream::connect(t.addr).unwrap());
    }
    let mut buf = vec![0u8; 4096];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = HEAP.live_bytes();
    for c in &mut clients {
        c.write_all(b"GET /small.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let n = c.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = HEAP.live_bytes();
    assert_eq!(t.server.open_connections(), N);
    // the connections were accepted before `before`: the request left nothing behind
    let per_request = (after - before) as f64 / N as f64;
    assert!(
        per_request < 64.0,
        "an answered request left {per_request:.0} bytes per connection behind"
    );
    // and what the server holds for an idle connection at all
    drop(clients);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed = HEAP.live_bytes();
    let per_conn = (after - closed) as f64 / N as f64;
    eprintln!("idle keep-alive connection: {per_conn:.0} bytes of heap (server side)");
    assert!(
        per_conn < 1536.0,
        "an idle keep-alive connection holds {per_conn:.0} bytes"
    );
}

fn one_request(addr: std::net::SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /small.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    c
}
