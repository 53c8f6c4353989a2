//! An HTTP/3 load generator for `bench/http3.sh` (Debian's h2load has no HTTP/3): C QUIC
//! connections, S requests in flight on each (one stream per request), GET of one URL
//! for a duration, every response read whole. Prints one line:
//! `requests=N errors=E secs=T rps=R bytes=B`.
//!
//! ```text
//! h3load URL --connect 127.0.0.1:8443 [--ca ca.pem | --insecure] [-c 8] [-s 32] [-d 10]
//! ```
//! `--download` fetches the URL once and prints the goodput (`mbit_s=…`) instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Args {
    url: http::Uri,
    connect: SocketAddr,
    ca: Option<String>,
    conns: usize,
    streams: usize,
    secs: u64,
    download: bool,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        url: "https://localhost/".parse().unwrap(),
        connect: "127.0.0.1:443".parse().unwrap(),
        ca: None,
        conns: 8,
        streams: 32,
        secs: 10,
        download: false,
    };
    while let Some(x) = it.next() {
        match x.as_str() {
            "--connect" => a.connect = it.next().unwrap().parse().expect("IP:PORT"),
            "--ca" => a.ca = it.next(),
            "--insecure" => a.ca = None,
            "-c" => a.conns = it.next().unwrap().parse().unwrap(),
            "-s" => a.streams = it.next().unwrap().parse().unwrap(),
            "-d" => a.secs = it.next().unwrap().parse().unwrap(),
            "--download" => a.download = true,
            url => a.url = url.parse().expect("a URL"),
        }
    }
    a
}

fn client_config(ca: Option<&str>) -> quinn::ClientConfig {
    hopline_edge::tls::install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .expect("installed")
        .clone();
    let builder = rustls::ClientConfig::builder();
    let mut tls = match ca {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls_pki_types::CertificateDer::from_pem_file(path).expect("a PEM root"))
                .unwrap();
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window((8u32 << 20).into())
        .receive_window((64u32 << 20).into());
    config.transport_config(Arc::new(transport));
    config
}

type Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn connect(a: &Args) -> (Send, quinn::Endpoint) {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client_config(a.ca.as_deref()));
    let host = a.url.host().unwrap_or("localhost").to_string();
    let conn = endpoint
        .connect(a.connect, &host)
        .unwrap()
        .await
        .expect("QUIC handshake");
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (send, endpoint)
}

async fn one(send: &mut Send, url: &http::Uri) -> Result<u64, String> {
    let e = |e: h3::error::StreamError| e.to_string();
    let req = http::Request::get(url.clone())
        .body(())
        .map_err(|e| e.to_string())?;
    let mut s = send.send_request(req).await.map_err(e)?;
    s.finish().await.map_err(e)?;
    let resp = s.recv_response().await.map_err(e)?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut n = 0u64;
    while let Some(mut chunk) = s.recv_data().await.map_err(e)? {
        n += chunk.remaining() as u64;
        chunk.advance(chunk.remaining());
    }
    Ok(n)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = Arc::new(args());
    if a.download {
        let (mut send, _ep) = connect(&a).await;
        let t = tokio::time::Instant::now();
        let n = one(&mut send, &a.url).await.expect("the download");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "bytes={n} secs={secs:.3} mbit_s={:.1}",
            n as f64 * 8.0 / secs / 1e6
        );
        return;
    }
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.secs);
    let mut tasks = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..a.conns {
        let (send, ep) = connect(&a).await;
        endpoints.push(ep);
        for _ in 0..a.streams {
            let (mut send, a) = (send.clone(), a.clone());
            let (requests, errors, bytes) = (requests.clone(), errors.clone(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    match one(&mut send, &a.url).await {
                        Ok(n) => {
                            requests.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }));
        }
    }
    let start = tokio::time::Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = requests.load(Ordering::Relaxed);
    println!(
        "requests={n} errors={} secs={secs:.3} rps={:.0} bytes={}",
        errors.load(Ordering::Relaxed),
        n as f64 / secs,
        bytes.load(Ordering::Relaxed)
    );
}
