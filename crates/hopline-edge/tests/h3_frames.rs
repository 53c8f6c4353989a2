//! HTTP/3 by the RFC at the frame level (RFC 9114, RFC 9204): a raw QUIC client (quinn)
//! writes hand-made frames and streams — DATA before HEADERS, a second SETTINGS, the
//! control stream closed, frames and streams of unknown or reserved types, a QPACK
//! reference to a dynamic table that does not exist, a bad pseudo-header — and gets the
//! error code the RFC names, while the server keeps serving everyone else.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;

/// H3_CLOSED_CRITICAL_STREAM
const CLOSED_CRITICAL_STREAM: u64 = 0x104;
/// H3_FRAME_UNEXPECTED
const FRAME_UNEXPECTED: u64 = 0x105;
/// H3_MESSAGE_ERROR
const MESSAGE_ERROR: u64 = 0x10e;
/// QPACK_DECOMPRESSION_FAILED
const QPACK_DECOMPRESSION_FAILED: u64 = 0x200;

fn varint(v: u64, out: &mut Vec<u8>) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

fn frame(kind: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(kind, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// An empty SETTINGS frame.
fn settings() -> Vec<u8> {
    frame(0x04, &[])
}

/// A QPACK field section for `GET https://shop.test/index.html` from the static table
/// only (RFC 9204 Appendix A), plus `extra` field lines.
fn get_headers(extra: &[u8]) -> Vec<u8> {
    let mut block = vec![0x00, 0x00]; // Required Insert Count 0, Delta Base 0
    block.push(0xc0 | 17); // :method GET
    block.push(0xc0 | 23); // :scheme https
    // :authority shop.test: literal with a static name reference (index 0)
    block.push(0x50);
    block.push(9);
    block.extend_from_slice(b"shop.test");
    // :path /index.html: literal with a static name reference (index 1)
    block.push(0x51);
    block.push(11);
    block.extend_from_slice(b"/index.html");
    block.extend_from_slice(extra);
    frame(0x01, &block)
}

/// A raw QUIC connection speaking ALPN h3, with its control stream open (type 0, then
/// an empty SETTINGS).
async fn raw(addr: SocketAddr, ca: &Path) -> (quinn::Connection, quinn::SendStream) {
    let endpoint = quic_client(ca);
    let conn = endpoint
        .connect(addr, "shop.test")
        .unwrap()
        .await
        .expect("QUIC handshake");
    let mut control = conn.open_uni().await.unwrap();
    let mut first = vec![0x00];
    first.extend_from_slice(&settings());
    control.write_all(&first).await.unwrap();
    (conn, control)
}

/// The application error code the server closed the connection with.
async fn closed_with(conn: &quinn::Connection) -> u64 {
    match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => close.error_code.into_inner(),
        Ok(other) => panic!("closed otherwise: {other}"),
        Err(_) => panic!("the server did not close the connection"),
    }
}

/// Send `bytes` on a new request stream and finish it; what comes back: the bytes read, or
/// the code the server reset the stream with.
async fn request(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, u64> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    match tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)))) => {
            Err(code.into_inner())
        }
        Ok(Err(e)) => panic!("read: {e}"),
        Err(_) => panic!("no answer on the request stream"),
    }
}

async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    hopline_edge::tls::ca::issue(&dir.path().join("certs"), &["shop.test".into()]).unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "<h1>shop</h1>\n").unwrap();
    start_in(
        dir,
        r#"
access_log = "off"
[[site]]
listen = ["127.0.0.1:0"]
hosts = ["shop.test"]
tls = { cert = "certs/shop.test.pem", key = "certs/shop.test-key.pem" }
http3 = true
  [[site.route]]
  path = "/"
  root = "www"
"#,
    )
    .await
}

fn udp(t: &TestServer) -> SocketAddr {
    t.server.h3_addrs()[0].1
}

/// The response on a request stream begins with a HEADERS frame (type 0x01).
fn is_response(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x01) && bytes.len() > 2
}

#[tokio::test]
async fn well_formed_hand_made_frames_get_an_answer() {
    let t = start().await;
    let ca = t.dir.path().join("certs/ca.pem");
    let (conn, _control) = raw(udp(&t), &ca).await;
    let answer = request(&conn, &get_headers(&[])).await.expect("an answer");
    assert!(is_response(&answer), "{answer:?}");
    assert!(String::from_utf8_lossy(&answer).contains("<h1>shop</h1>"));
}

#[tokio::test]
async fn data_before_headers_is_frame_unexpected() {
    let t = start().await;
    let ca = t.dir.path().join("certs/ca.pem");
    let (conn, _control) = raw(udp(&t), &ca).await;
    let mut bytes = frame(0x00, b"early");
    bytes.extend_from_slice(&get_headers(&[]));
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&bytes).await.unwrap();
    let _ = send.finish();
    assert_eq!(closed_with(&conn).await, FRAME_UNEXPECTED);
    // the server serves the next client
    let (conn, _control) = raw(udp(&t), &ca).await;
    assert!(is_response(
        &request(&conn, &get_headers(&[])).await.unwrap()
    ));
}

#[tokio::test]
async fn a_second_settings_frame_is_frame_unexpected() {
    let t = start().await;
    let ca = t.dir.path().join("certs/ca.pem");
    let (conn, mut control) = raw(udp(&t), &ca).await;
    control.write_all(&settings()).await.unwrap();
    assert_eq!(closed_with(&conn).await, FRAME_UNEXPECTED);
}

#[tokio::test]
async fn closing_the_control_stream_is_closed_critical_stream() {
    let t = start().await;
    let ca = t.dir.path().join("certs/ca.pem");
    let (conn, mut control) = raw(udp(&t), &ca).await;
    // let the server read the SETTINGS first, then end the stream
    tokio::time::sleep(Duration::from_millis(100)).await;
    control.finish().unwrap();
    assert_eq!(closed_with(&conn).await, CLOSED_CRITICAL_STREAM);
}

#[tokio::test]
async fn unknown_and_reserved_frames_and_streams_are_ignored() {
    let t = start().await;
    let ca = t.dir.path().join("certs/ca.pem");
    let (conn, mut control) = raw(udp(&t), &ca).await;
    // a reserved (grease) frame type on the control stream: 0x1f * N + 0x21
    control
        .write_all(&frame(0x1f * 7 + 0x21, b"grease"))
        .await
        .unwrap();
    // a uni stream of a reserved type
    let mut odd = conn.open_uni().await.unwrap();
    let mut bytes = Vec::new();
    varint(0x1f * 3 + 0x21, &mut bytes);
    bytes.extend_from_slice(b"whatever comes on it");
    odd.write_all(&bytes).await.unwrap();
    let _ = odd.finish();
    // an unknown frame before HEADERS, and one after, on a request stream
    let mut bytes = frame(0x1f * 5 + 0x21, b"ignore me");
    bytes.extend_from_slice(&get_headers(&[]));
    bytes.extend_from_slice(&frame(0x2a, b"and me"));
    let answer = request(&conn, &bytes).await.expect("an answer");
    assert!(is_response(&answer), "{answer:?}");
}

#[tokio::test]
async fn a_reference_to_a_dynamic_table_that_does_not_exist_is_qpack_decompression_failed() {
    let t = start().await;
    let ca = t.dir.path().join("certs/ca.pem");
    let (conn, _control) = raw(udp(&t), &ca).await;
    // Required Insert Count 1, while the server allowed no dynamic table (capacity 0)
    let block = [0x02, 0x00, 0x80];
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(0x01, &block)).await.unwrap();
    let _ = send.finish();
    assert_eq!(closed_with(&conn).await, QPACK_DECOMPRESSION_FAILED);
}

#[tokio::test]
async fn a_bad_pseudo_header_is_a_message_error_on_that_stream_only() {
    let t = start().await;
    let ca = t.dir.path().join("certs/ca.pem");
    let (conn, _control) = raw(udp(&t), &ca).await;
    // `:bogus: 1` (a literal field line with a literal name)
    let mut extra = vec![0x20 | 6];
    extra.extend_from_slice(b":bogus");
    extra.push(1);
    extra.push(b'1');
    assert_eq!(
        request(&conn, &get_headers(&extra)).await,
        Err(MESSAGE_ERROR)
    );
    // the connection goes on
    assert!(is_response(
        &request(&conn, &get_headers(&[])).await.unwrap()
    ));
}
