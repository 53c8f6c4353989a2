//! Reference servers for `bench/edge-static.sh`: how fast can anything answer here?
//!
//! They are not hopline. They answer every request with the same 13-byte body, so a
//! benchmark can show, in the same run as nginx and hopline, where this machine's
//! ceiling is for small keep-alive responses:
//!
//! - `hyper PORT`: a bare hyper 1.x HTTP/1.1 server answering a constant (the issue's
//!   "bare hyper server answering a constant"), one thread, no routing, no files.
//! - `raw PORT`: no HTTP parsing at all — it counts `\r\n\r\n` and writes a fixed
//!   response per request (closing after it when the request asked `Connection: close`).
//!   What is left of its CPU time is the kernel's and tokio's: the floor under any server
//!   built on tokio, and the load generator's ceiling when this one is not saturated.
//! - `raw PORT FILE`: the same with FILE as the body, sent the way hopline and nginx
//!   (`sendfile on; tcp_nopush off`) send a file: the head, then `sendfile` from the page
//!   cache (`RAW_MORE=1`: the head is held back with `MSG_MORE` to leave with the body).
//!
//! ```text
//! cargo build --release -p hopline-edge --example bench_floor
//! target/release/examples/bench_floor hyper 18083
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &[u8] = b"hello world\n\n";

fn main() {
    let mut args = std::env::args().skip(1);
    let (mode, port) = match (args.next(), args.next().map(|p| p.parse::<u16>())) {
        (Some(m), Some(Ok(p))) if m == "hyper" || m == "raw" => (m, p),
        _ => {
            eprintln!(
                "usage: bench_floor hyper|raw PORT [FILE]   (serves 127.0.0.1:PORT until killed)"
            );
            std::process::exit(2);
        }
    };
    let file: Option<&'static std::fs::File> = args.next().map(|path| {
        let f = std::fs::File::open(&path).unwrap_or_else(|e| {
            eprintln!("bench_floor: cannot open {path}: {e}");
            std::process::exit(1);
        });
        &*Box::leak(Box::new(f))
    });
    let more = std::env::var_os("RAW_MORE").is_some();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| {
                eprintln!("bench_floor: cannot listen on 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            });
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            if mode == "hyper" {
                tokio::spawn(serve_hyper(tcp));
            } else if let Some(file) = file {
                tokio::spawn(serve_raw_file(tcp, file, more));
            } else {
                tokio::spawn(serve_raw(tcp));
            }
        }
    });
}

async fn serve_hyper(tcp: TcpStream) {
    let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
        let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        Ok::<_, Infallible>(resp)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .await;
}

/// The head nginx and hopline send for the 13-byte file, with a fixed date.
const RAW_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: raw\r\nDate: Mon, 23 Nov 2026 10:00:00 GMT\r\n\
Content-Type: text/plain\r\nContent-Length: 13\r\nLast-Modified: Mon, 23 Nov 2026 10:00:00 GMT\r\n\
ETag: \"6563a0a0-d\"\r\nAccept-Ranges: bytes\r\n";

/// The end of the first complete request head in `buf` (just past its `\r\n\r\n`), and
/// whether it asks for `Connection: close`.
fn next_request(buf: &[u8]) -> Option<(usize, bool)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let close = buf[..end]
        .windows(17)
        .any(|w| w.eq_ignore_ascii_case(b"connection: close"));
    Some((end + 4, close))
}

async fn serve_raw(mut tcp: TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        if have == buf.len() {
            return; // a head this large is not what the benchmark sends
        }
        let n = match tcp.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        let mut start = 0;
        let mut close = false;
        while let Some((end, asks_close)) = next_request(&buf[start..have]) {
            close = asks_close;
            out.extend_from_slice(RAW_HEAD);
            if close {
                out.extend_from_slice(b"Connection: close\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(BODY);
            start += end;
            if close {
                break;
            }
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if !out.is_empty() {
            if tcp.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
    }
}

/// Like [`serve_raw`], with a file as the body: head (with `MSG_MORE` when `more`), then
/// `sendfile`.
async fn serve_raw_file(tcp: TcpStream, file: &'static std::fs::File, more: bool) {
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(_) => return,
    };
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    loop {
        if have == buf.len() {
            return;
        }
        if tcp.readable().await.is_err() {
            return;
        }
        let n = match tcp.try_read(&mut buf[have..]) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        have += n;
        let mut start = 0;
        while let Some((end, close)) = next_request(&buf[start..have]) {
            start += end;
            let mut head = Vec::with_capacity(320);
            head.extend_from_slice(
                b"HTTP/1.1 200 OK\r\nServer: raw\r\nDate: Mon, 23 Nov 2026 10:00:00 GMT\r\n\
Content-Type: application/octet-stream\r\nLast-Modified: Mon, 23 Nov 2026 10:00:00 GMT\r\n\
ETag: \"6563a0a0-19000\"\r\nAccept-Ranges: bytes\r\nContent-Length: ",
            );
            head.extend_from_slice(len.to_string().as_bytes());
            head.extend_from_slice(if close {
                b"\r\nConnection: close\r\n\r\n".as_slice()
            } else {
                b"\r\n\r\n".as_slice()
            });
            let flags = if more {
                rustix::net::SendFlags::MORE
            } else {
                rustix::net::SendFlags::empty()
            };
            if send_all(&tcp, &head, flags).await.is_err()
                || sendfile_all(&tcp, file, len).await.is_err()
                || close
            {
                return;
            }
        }
        buf.copy_within(start..have, 0);
        have -= start;
    }
}

async fn send_all(
    tcp: &TcpStream,
    mut buf: &[u8],
    flags: rustix::net::SendFlags,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        tcp.writable().await?;
        match tcp.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::net::send(tcp, buf, flags).map_err(std::io::Error::from)
        }) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn sendfile_all(tcp: &TcpStream, file: &std::fs::File, len: u64) -> std::io::Result<()> {
    let mut offset = 0u64;
    while offset < len {
        let want = (len - offset) as usize;
        match tcp.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::fs::sendfile(tcp, file, Some(&mut offset), want).map_err(std::io::Error::from)
        }) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => tcp.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
