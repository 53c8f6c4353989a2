//! HTTP/3 beside HTTP/1.1 and HTTP/2: QUIC by `quinn`, HTTP/3 framing and QPACK by `h3`,
//! on the same rustls configuration (certificates, SNI, ACME) as the TCP listener of the
//! same address. A request arrives as the same `Request<RequestBody>` the other versions
//! give the request path, its body read from the stream as the handler asks; the
//! response's frames go out as they come (files in chunks: QUIC has no `sendfile`).
//!
//! Defences as for HTTP/2: concurrent streams, header size, idle timeout, per-stream and
//! per-connection flow control; and one of QUIC's own: when more handshakes than
//! [`H3Settings::retry_above`] are in flight, a client whose address is not yet proven
//! gets a stateless Retry first (RFC 9000 §8.1), so a flood of spoofed Initial packets
//! costs the server no state and cannot use it to amplify. 0-RTT is off: a replayed
//! early request could not be told apart by the request path (h3 does not say which
//! requests came early).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body as HttpBody;

pub mod request_body;

pub use request_body::H3RequestBody;

use crate::body::{Body, RequestBody};
use crate::error::EngineError;
use crate::h1::connection::Closing;

/// The ALPN protocol id of HTTP/3 (RFC 9114 §3.1).
pub const ALPN: &[u8] = b"h3";

/// Limits of an HTTP/3 listener.
#[derive(Debug, Clone)]
pub struct H3Settings {
    /// Requests in flight per connection (bidirectional streams).
    pub max_streams: u32,
    /// A connection with no packet for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request head (QPACK-decoded field section), bytes.
    pub max_header_bytes: u64,
    /// Bytes a client may send on one stream before the server reads them.
    pub stream_window: u32,
    /// Bytes a client may send on all streams of a connection before the server reads them.
    pub connection_window: u32,
    /// Handshakes in flight above which a client must prove its address by Retry first
    /// (0: always).
    pub retry_above: usize,
}

impl Default for H3Settings {
    fn default() -> Self {
        H3Settings {
            max_streams: 100,
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            stream_window: 1 << 20,
            connection_window: 8 << 20,
            retry_above: 64,
        }
    }
}

/// quinn's server configuration for `tls` (the TCP listener's own, certificates and SNI
/// included): ALPN `h3`, no early data, the transport limits of `settings`.
pub fn server_config(
    tls: &rustls::ServerConfig,
    settings: &H3Settings,
) -> Result<quinn::ServerConfig, EngineError> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // quinn accepts 0 or u32::MAX only (else every handshake fails); 0: no 0-RTT
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| EngineError::Tls(format!("HTTP/3: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(settings.max_streams.into())
        // the client's control stream and its two QPACK streams, and a little room
        .max_concurrent_uni_streams(8u32.into())
        .stream_receive_window(settings.stream_window.into())
        .receive_window(settings.connection_window.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(settings.idle_timeout)
                .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))),
        ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A UDP socket on `addr` answering QUIC with `config`.
pub fn endpoint(addr: SocketAddr, config: quinn::ServerConfig) -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::server(config, addr)
}

/// What answers the requests of HTTP/3 connections.
pub trait H3Service: Send + Sync + 'static {
    /// Answer one request.
    fn call(&self, req: Request<RequestBody>) -> impl Future<Output = Response<Body>> + Send;
}

/// Handshakes in flight on one endpoint, for the Retry decision.
#[derive(Debug, Default)]
pub struct Handshakes(AtomicUsize);

impl Handshakes {
    /// Handshakes in flight now.
    pub fn in_flight(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// What to do with a new connection attempt: `None` when it was answered with a Retry
/// (the client comes back with a token that proves its address), else the attempt.
pub fn admit(
    incoming: quinn::Incoming,
    handshakes: &Handshakes,
    settings: &H3Settings,
) -> Option<quinn::Incoming> {
    if handshakes.in_flight() >= settings.retry_above
        && !incoming.remote_address_validated()
        && incoming.may_retry()
    {
        // (Err only when it may not retry, checked above)
        let _ = incoming.retry();
        return None;
    }
    Some(incoming)
}

/// Complete the handshake of an admitted attempt and serve its requests until the client
/// closes, the idle timeout passes, or the server closes (GOAWAY, then the requests in
/// flight finish).
pub async fn serve<S: H3Service>(
    incoming: quinn::Incoming,
    handshakes: Arc<Handshakes>,
    svc: Arc<S>,
    settings: &H3Settings,
    closing: &Closing,
) {
    let peer = incoming.remote_address();
    handshakes.0.fetch_add(1, Ordering::Relaxed);
    let connecting = incoming.accept();
    let conn = match connecting {
        Ok(c) => c.await,
        Err(e) => Err(e),
    };
    handshakes.0.fetch_sub(1, Ordering::Relaxed);
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(target: "hopline::edge", "QUIC handshake from {peer}: {e}");
            return;
        }
    };
    let h3 = h3::server::builder()
        .max_field_section_size(settings.max_header_bytes)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await;
    let mut h3 = match h3 {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(target: "hopline::edge", "HTTP/3 connection from {peer}: {e}");
            return;
        }
    };
    let mut requests = tokio::task::JoinSet::new();
    let mut draining = closing.is_set();
    if draining {
        let _ = h3.shutdown(0).await;
    }
    loop {
        if draining && requests.is_empty() {
            // every request answered: closing the connection (H3_NO_ERROR) ends it
            break;
        }
        tokio::select! {
            next = h3.accept() => match next {
                Ok(Some(resolver)) => {
                    let svc = svc.clone();
                    requests.spawn(async move { request(resolver, svc).await });
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(target: "hopline::edge", "HTTP/3 connection from {peer}: {e}");
                    }
                    break;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            _ = closing.started(), if !draining => {
                draining = true;
                let _ = h3.shutdown(0).await;
            }
        }
    }
    // requests still running when the client went away or the connection failed end
    // with it
    while requests.join_next().await.is_some() {}
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn request<S: H3Service>(
    resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    svc: Arc<S>,
) {
    let (req, stream): (Request<()>, Stream) = match resolver.resolve_request().await {
        Ok(r) => r,
        // h3 answered it already (a malformed head: the stream is reset)
        Err(_) => return,
    };
    let (mut send, recv) = stream.split();
    let (parts, ()) = req.into_parts();
    let req = Request::from_parts(parts, RequestBody::H3(Box::new(H3RequestBody::new(recv))));
    let mut resp = svc.call(req).await;
    crate::body::expand_lines(&mut resp);
    let (mut parts, body) = resp.into_parts();
    strip_connection_fields(&mut parts.headers);
    if send
        .send_response(Response::from_parts(parts, ()))
        .await
        .is_err()
    {
        return;
    }
    let mut body = std::pin::pin!(body);
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let sent = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    send.send_data(data).await
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => send.send_trailers(trailers).await,
                    Err(_) => continue,
                },
            },
            Err(e) => {
                tracing::debug!(target: "hopline::edge", "HTTP/3 response body: {e}");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = send.finish().await;
}

/// HTTP/3 forbids the fields of HTTP/1.1's connection management (RFC 9114 §4.2).
fn strip_connection_fields(headers: &mut HeaderMap) {
    for name in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::HeaderName::from_static("keep-alive"),
        http::HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}
