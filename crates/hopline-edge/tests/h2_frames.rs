//! HTTP/2 at the frame level (RFC 9113), driven by hand: a client that writes raw frames
//! and reads the server's, so that the errors the RFC requires are checked exactly, as
//! h2spec does — over h2c prior knowledge, and over TLS with ALPN `h2`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::start_in;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const STREAM_CLOSED: u32 = 0x5;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal field without indexing, with a new name (RFC 7541 §6.2.2).
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0x00, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
    b
}

/// A request's header block: `:method` (static table), `:scheme http`, `:path /`,
/// `:authority test`, then `extra`.
fn request_block(post: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x86, 0x84];
    // :authority, literal without indexing, name from static index 1
    b.extend_from_slice(&[0x01, 4]);
    b.extend_from_slice(b"test");
    for (n, v) in extra {
        b.extend(literal(n, v));
    }
    b
}

/// What the server ended with.
#[derive(Debug, PartialEq)]
enum Ended {
    /// RST_STREAM on the stream, with its code.
    Reset(u32),
    /// GOAWAY, with its code.
    GoAway(u32),
    /// The connection closed without either.
    Closed,
}

struct H2<S> {
    io: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> H2<S> {
    /// Sends the preface and an empty SETTINGS, and acknowledges the server's.
    async fn open(mut io: S) -> H2<S> {
        io.write_all(PREFACE).await.unwrap();
        io.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        let mut c = H2 { io };
        let (kind, flags, _, _) = c.read().await.expect("the server's SETTINGS");
        assert_eq!(
            (kind, flags & 1),
            (SETTINGS, 0),
            "the server starts with SETTINGS"
        );
        c.send(&frame(SETTINGS, 1, 0, &[])).await;
        c
    }

    async fn send(&mut self, bytes: &[u8]) {
        // the server may have closed already; what it answered is read next
        let _ = self.io.write_all(bytes).await;
    }
}

impl<S: AsyncRead + Unpin> H2<S> {
    /// The next frame, or None at the end of the connection.
    async fn read(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(5), self.io.read_exact(&mut head))
            .await
            .expect("the server answers within 5 s")
            .ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        self.io.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], stream, payload))
    }

    /// Reads until the server resets `stream` or ends the connection.
    async fn ended(&mut self, stream: u32) -> Ended {
        while let Some((kind, _, s, p)) = self.read().await {
            match kind {
                RST_STREAM if s == stream => {
                    return Ended::Reset(u32::from_be_bytes(p[..4].try_into().unwrap()));
                }
                GOAWAY => return Ended::GoAway(u32::from_be_bytes(p[4..8].try_into().unwrap())),
                _ => {}
            }
        }
        Ended::Closed
    }
}

/// The error an RFC "stream error of type X" allows: RST_STREAM(X), or the stricter
/// connection error GOAWAY(X).
fn is_error(e: &Ended, code: u32) -> bool {
    matches!(e, Ended::Reset(c) | Ended::GoAway(c) if *c == code)
}

/// Sends `bytes` where the preface belongs and checks the whole answer: HTTP/2's
/// GOAWAY(PROTOCOL_ERROR), never an HTTP/1.1 response.
async fn refused_preface<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, bytes: &[u8]) {
    io.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/1.1"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let mut c = H2 { io: &got[..] };
    assert_eq!(c.ended(0).await, Ended::GoAway(PROTOCOL_ERROR));
}

const CONFIG: &str = r#"
access_log = "off"
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  respond = { body = "hello" }
"#;

async fn h2c() -> (common::TestServer, H2<tokio::net::TcpStream>) {
    let t = start_in(tempfile::tempdir().unwrap(), CONFIG).await;
    let tcp = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    let c = H2::open(tcp).await;
    (t, c)
}

#[tokio::test]
async fn a_request_is_answered_at_the_frame_level() {
    // the client itself is right: a plain GET gets HEADERS and DATA "hello"
    let (_t, mut c) = h2c().await;
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block(false, &[]),
    ))
    .await;
    let mut body = Vec::new();
    let mut got_headers = false;
    while let Some((kind, flags, s, p)) = c.read().await {
        match kind {
            HEADERS if s == 1 => got_headers = true,
            DATA if s == 1 => {
                body.extend_from_slice(&p);
                if flags & END_STREAM != 0 {
                    break;
                }
            }
            RST_STREAM | GOAWAY => panic!("unexpected frame {kind}: {p:?}"),
            _ => {}
        }
    }
    assert!(got_headers);
    assert_eq!(body, b"hello");
}

#[tokio::test]
async fn data_after_the_client_closed_its_side_is_stream_closed() {
    // HEADERS with END_STREAM, then DATA on the same (half-closed remote) stream, in one
    // write: the server must answer STREAM_CLOSED whatever it has done with the request
    let (_t, mut c) = h2c().await;
    let mut w = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block(false, &[]),
    );
    w.extend(frame(DATA, END_STREAM, 1, b"late"));
    c.send(&w).await;
    let e = c.ended(1).await;
    assert!(is_error(&e, STREAM_CLOSED), "{e:?}");
}

#[tokio::test]
async fn data_after_the_client_reset_the_stream_is_stream_closed() {
    let (_t, mut c) = h2c().await;
    let mut w = frame(HEADERS, END_HEADERS, 1, &request_block(true, &[]));
    w.extend(frame(RST_STREAM, 0, 1, &0x8u32.to_be_bytes())); // CANCEL
    w.extend(frame(DATA, END_STREAM, 1, b"after the reset"));
    c.send(&w).await;
    let e = c.ended(1).await;
    assert!(is_error(&e, STREAM_CLOSED), "{e:?}");
}

#[tokio::test]
async fn data_after_an_early_answer_and_reset_is_refused_every_time() {
    // the route answers before the request body ends; the client goes on sending. Whatever
    // the timing, the stream's end is well-formed: the client is never left hanging and
    // the connection stays usable for a new stream
    for _ in 0..20 {
        let (_t, mut c) = h2c().await;
        c.send(&frame(HEADERS, END_HEADERS, 1, &request_block(true, &[])))
            .await;
        // wait for the early answer's end
        loop {
            let (kind, flags, s, _) = c.read().await.expect("an answer");
            if s == 1 && (kind == RST_STREAM || (kind == DATA && flags & END_STREAM != 0)) {
                break;
            }
            assert_ne!(kind, GOAWAY);
        }
        c.send(&frame(DATA, 0, 1, b"more body")).await;
        c.send(&frame(DATA, END_STREAM, 1, b"end")).await;
        // a new stream on the same connection is served
        c.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &request_block(false, &[]),
        ))
        .await;
        let mut answered = false;
        while let Some((kind, flags, s, p)) = c.read().await {
            if kind == GOAWAY {
                let code = u32::from_be_bytes(p[4..8].try_into().unwrap());
                // only the error the RFC allows for frames on a closed stream
                assert_eq!(code, STREAM_CLOSED, "GOAWAY {code}");
                answered = true;
                break;
            }
            if s == 3 && kind == DATA && flags & END_STREAM != 0 {
                answered = true;
                break;
            }
        }
        assert!(answered, "the connection hung");
    }
}

#[tokio::test]
async fn headers_twice_without_end_stream_is_a_protocol_error() {
    let (_t, mut c) = h2c().await;
    let mut w = frame(HEADERS, END_HEADERS, 1, &request_block(true, &[]));
    w.extend(frame(HEADERS, END_HEADERS, 1, &literal("x-trailer", "1")));
    c.send(&w).await;
    let e = c.ended(1).await;
    assert!(is_error(&e, PROTOCOL_ERROR), "{e:?}");
}

#[tokio::test]
async fn content_length_not_matching_the_data_is_a_protocol_error() {
    for (declared, sent) in [("10", &b"short"[..]), ("2", &b"too long"[..])] {
        let (_t, mut c) = h2c().await;
        let mut w = frame(
            HEADERS,
            END_HEADERS,
            1,
            &request_block(true, &[("content-length", declared)]),
        );
        w.extend(frame(DATA, END_STREAM, 1, sent));
        c.send(&w).await;
        let e = c.ended(1).await;
        assert!(
            is_error(&e, PROTOCOL_ERROR),
            "{declared} vs {sent:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_pseudo_header_in_trailers_is_a_protocol_error() {
    let (_t, mut c) = h2c().await;
    let mut w = frame(HEADERS, END_HEADERS, 1, &request_block(true, &[]));
    w.extend(frame(DATA, 0, 1, b"body"));
    // trailers carrying :method
    w.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x82]));
    c.send(&w).await;
    let e = c.ended(1).await;
    assert!(is_error(&e, PROTOCOL_ERROR), "{e:?}");
}

#[tokio::test]
async fn a_window_past_2_31_is_a_flow_control_error() {
    // on the connection: a connection error
    let (_t, mut c) = h2c().await;
    let big = 0x7fff_ffffu32.to_be_bytes();
    c.send(&frame(WINDOW_UPDATE, 0, 0, &big)).await;
    assert_eq!(c.ended(0).await, Ended::GoAway(FLOW_CONTROL_ERROR));
    // on a stream: a stream error (or the connection's)
    let (_t, mut c) = h2c().await;
    let mut w = frame(HEADERS, END_HEADERS, 1, &request_block(true, &[]));
    w.extend(frame(WINDOW_UPDATE, 0, 1, &big));
    c.send(&w).await;
    let e = c.ended(1).await;
    assert!(is_error(&e, FLOW_CONTROL_ERROR), "{e:?}");
}

#[tokio::test]
async fn a_bad_preface_over_h2c_prior_knowledge_is_a_protocol_error() {
    // the preface's first line, then not its end: HTTP/2 was announced, so the answer is
    // HTTP/2's (GOAWAY PROTOCOL_ERROR), not an HTTP/1.1 page
    let t = start_in(tempfile::tempdir().unwrap(), CONFIG).await;
    let tcp = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    refused_preface(tcp, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").await;
}

#[tokio::test]
async fn a_bad_preface_over_tls_alpn_h2_is_goaway_never_an_http1_page() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    hopline_edge::tls::ca::issue(&certs, &["shop.test".into()]).unwrap();
    let t = start_in(
        dir,
        r#"
access_log = "off"
[[site]]
listen = ["127.0.0.1:0"]
hosts = ["shop.test"]
tls = { cert = "certs/shop.test.pem", key = "certs/shop.test-key.pem" }
  [[site.route]]
  path = "/"
  respond = { body = "hello" }
"#,
    )
    .await;
    let connect = || async {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls_pki_types::CertificateDer::from_pem_file(t.dir.path().join("certs/ca.pem"))
                    .unwrap(),
            )
            .unwrap();
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(t.addr).await.unwrap();
        let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect("shop.test".try_into().unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        s
    };
    // an HTTP/1.1 request where the preface should be
    refused_preface(
        connect().await,
        b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    )
    .await;
    // and a good preface on the same listener works
    let mut c = H2::open(connect().await).await;
    c.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block(false, &[]),
    ))
    .await;
    let mut body = Vec::new();
    while let Some((kind, flags, s, p)) = c.read().await {
        if kind == DATA && s == 1 {
            body.extend_from_slice(&p);
            if flags & END_STREAM != 0 {
                break;
            }
        }
    }
    assert_eq!(body, b"hello");
}
