//! What one proxied GET costs the heap: heap allocations per request through the proxy's
//! own HTTP/1.1 client, counted exactly by a counting allocator. The client and the origin
//! here are blocking std sockets with fixed buffers, so every counted allocation is the
//! proxy's. A guard for the hot path: a header map built per response, a boxed body, a
//! buffer allocated per request again would each show here.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

#[global_allocator]
static HEAP: hopline_testkit::alloc::Counting = hopline_testkit::alloc::Counting::new();

/// Heap allocations one proxied 13-byte GET may make. Measured: 11 — the request's bytes
/// out of the per-thread read buffer, the shared handle its fields' values hold on them,
/// the request's header map (two), the per-request future, the proxy's future, the head
/// sent to the origin, the origin's relayed lines and their shared handle, the origin
/// body's box, the response head.
const BUDGET: usize = 11;

/// An origin on a std thread: every request on a connection gets the same 13-byte answer.
fn origin() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut have = 0;
                loop {
                    match s.read(&mut buf[have..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        let answer =
                            b"HTTP/1.1 200 OK\r\nServer: origin\r\nContent-Type: text/plain\r\n\
Content-Length: 13\r\nDate: Mon, 23 Nov 2026 23:00:00 GMT\r\n\r\nhello world\n\n";
                        if s.write_all(answer).is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                }
            });
        }
    });
    addr
}

/// One GET on `c`, its whole answer read into `buf` (no allocation).
fn get(c: &mut TcpStream, buf: &mut [u8]) {
    c.write_all(b"GET /small.txt HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .unwrap();
    let mut have = 0;
    loop {
        let n = c.read(&mut buf[have..]).unwrap();
        assert!(n > 0, "the proxy closed the connection");
        have += n;
        if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n")
            && have >= end + 4 + 13
        {
            assert!(buf.starts_with(b"HTTP/1.1 200"));
            assert_eq!(&buf[end + 4..end + 4 + 13], b"hello world\n\n");
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_proxied_get_makes_few_allocations() {
    let origin = origin();
    let t = common::start(&format!(
        r#"
threads = 1
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
    let addr = t.addr;
    let (warm, measured) = (200, 2000);
    let counted = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 4096];
        for _ in 0..warm {
            get(&mut c, &mut buf);
        }
        let before = HEAP.allocations();
        for _ in 0..measured {
            get(&mut c, &mut buf);
        }
        HEAP.allocations() - before
    })
    .await
    .unwrap();
    let per_request = counted as f64 / measured as f64;
    eprintln!("heap allocations per proxied GET: {per_request:.2}");
    assert!(
        per_request <= BUDGET as f64 + 0.1,
        "a proxied GET made {per_request:.2} allocations (budget {BUDGET})"
    );
}
