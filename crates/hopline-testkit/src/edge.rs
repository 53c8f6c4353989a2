//! A real edge on 127.0.0.1:0 for integration tests, the clients that talk to it (reqwest
//! over hyper, rustls, quinn) and raw sockets for malformed input. Behind the `edge`
//! feature: the crates that test over an edge (the edge itself, its products, the
//! browser) turn it on.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hopline_edge::{Config, Server, Services};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running edge, its first listen address and the directory its config lives in.
pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The admin listener's `/.hopline/status` (the config must have `[admin]`).
    pub async fn status(&self) -> serde_json::Value {
        status(&self.server).await
    }
}

/// `server`'s `/.hopline/status` from its admin listener.
pub async fn status(server: &Server) -> serde_json::Value {
    let admin = server.admin_addr().expect("an [admin] listener");
    client()
        .get(format!("http://{admin}/.hopline/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Start an edge from config text written into `dir` as `hopline.toml` (relative paths
/// resolve there), with the products' routes in `services`. The first listen address
/// of the config is the one returned in `addr`.
pub async fn start_with(dir: tempfile::TempDir, toml: &str, services: Services) -> TestServer {
    let (server, addr) = start_at(dir.path(), "hopline.toml", toml, services).await;
    TestServer { server, addr, dir }
}

/// Start an edge from config text written into `dir/file`, a directory the caller keeps;
/// answers the server and its first listen address.
pub async fn start_at(
    dir: &Path,
    file: &str,
    toml: &str,
    services: Services,
) -> (Server, SocketAddr) {
    hopline_edge::tls::install_crypto_provider();
    let path = dir.join(file);
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("config {}: {e}", path.display()));
    let first: SocketAddr = hopline_edge::config::listen_addrs(&config)[0];
    let server = Server::start_with(config, services)
        .await
        .expect("server starts");
    let addr = server.local_addr(first).unwrap();
    (server, addr)
}

/// Start an edge without products from config text written into `dir`.
pub async fn start_in(dir: tempfile::TempDir, toml: &str) -> TestServer {
    start_with(dir, toml, Services::new()).await
}

/// Start an edge without products in a fresh temporary directory.
pub async fn start(toml: &str) -> TestServer {
    start_in(tempfile::tempdir().unwrap(), toml).await
}

/// A client that shows responses as they are (no decompression, no proxy, no redirects).
pub fn client() -> reqwest::Client {
    hopline_edge::tls::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client speaking HTTP/2 without TLS from the first byte (h2c prior knowledge).
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

fn roots(ca_pem: &Path) -> rustls::RootCertStore {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(ca_pem).unwrap())
        .unwrap();
    roots
}

/// A TLS client trusting only `ca_pem`, offering h2 and http/1.1, with `resolve`'s names
/// pinned to addresses.
pub fn tls_client(ca_pem: &Path, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    hopline_edge::tls::install_crypto_provider();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(cfg);
    for (name, addr) in resolve {
        b = b.resolve(name, *addr);
    }
    b.build().unwrap()
}

/// A QUIC client endpoint on 127.0.0.1 offering ALPN h3 and trusting only `ca_pem`.
pub fn quic_client(ca_pem: &Path) -> quinn::Endpoint {
    hopline_edge::tls::install_crypto_provider();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

/// Send raw bytes, read until the server closes or `wait` passes; return what came back
/// (as text, lossily) and whether the server closed.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(request).await.unwrap();
    read_until_close(&mut s, wait).await
}

/// Read until EOF (true) or until `wait` passes (false).
pub async fn read_until_close(s: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}
