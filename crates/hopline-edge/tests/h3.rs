//! HTTP/3 over QUIC: a TLS site with `http3 = true` also answers on UDP at its address and
//! port, with the same routes as over TCP (files with ranges, the proxy with request
//! bodies, streamed event streams, the cache), advertises it to TCP clients with
//! `Alt-Svc`, proves addresses by Retry under handshake pressure, and drains with GOAWAY
//! at shutdown. Clients: an HTTP/3 client over quinn + h3, and ngtcp2's `gtlsclient`
//! (Debian `ngtcp2-client`).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use common::origin::Origin;
use common::*;

/// An HTTP/3 connection to the edge.
struct H3 {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

/// Connect over QUIC to `addr` as `name`, trusting `ca`.
async fn h3_connect(addr: SocketAddr, name: &str, ca: &Path) -> H3 {
    let endpoint = quic_client(ca);
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        endpoint.connect(addr, name).unwrap(),
    )
    .await
    .expect("QUIC handshake in time")
    .expect("QUIC handshake");
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    H3 {
        send,
        conn,
        _endpoint: endpoint,
    }
}

impl H3 {
    /// One request; the response head and its whole body.
    async fn fetch(
        &mut self,
        req: http::Request<()>,
        body: Option<Bytes>,
    ) -> Result<(http::Response<()>, Bytes), h3::error::StreamError> {
        let mut s = self.send.send_request(req).await?;
        if let Some(b) = body {
            // in pieces, as a client streaming an upload does
            for chunk in b.chunks(16 * 1024) {
                s.send_data(Bytes::copy_from_slice(chunk)).await?;
            }
        }
        s.finish().await?;
        let resp = s.recv_response().await?;
        let mut out = BytesMut::new();
        while let Some(mut chunk) = s.recv_data().await? {
            out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        Ok((resp, out.freeze()))
    }

    async fn get(&mut self, url: &str) -> (http::Response<()>, Bytes) {
        self.fetch(http::Request::get(url).body(()).unwrap(), None)
            .await
            .unwrap()
    }
}

fn edge_toml(origin: SocketAddr, extra: &str) -> String {
    format!(
        r#"
access_log = "access.log"
{extra}
[admin]
listen = "127.0.0.1:0"

[upstream.app]
servers = ["{origin}"]

[cache.edge]
memory = "16MB"

[[site]]
listen = ["127.0.0.1:0"]
hosts = ["shop.test"]
tls = {{ cert = "certs/shop.test.pem", key = "certs/shop.test-key.pem" }}
http3 = true
  [[site.route]]
  path = "/"
  root = "www"
  [[site.route]]
  path = "/echo"
  proxy = "app"
  [[site.route]]
  path = "/sse"
  proxy = "app"
  [[site.route]]
  path = "/obj/"
  proxy = "app"
  cache = "edge"

[[site]]
listen = ["127.0.0.1:0"]
hosts = ["blog.test"]
tls = {{ cert = "certs/blog.test.pem", key = "certs/blog.test-key.pem" }}
  [[site.route]]
  path = "/"
  respond = {{ body = "blog over tcp only" }}
"#
    )
}

/// An edge with a static root, a proxy and a cached proxy route on one HTTP/3 site.
async fn start_h3(extra: &str) -> (TestServer, Origin, Vec<u8>) {
    let origin = Origin::start("o1").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    hopline_edge::tls::ca::issue(&certs, &["shop.test".into()]).unwrap();
    hopline_edge::tls::ca::issue(&certs, &["blog.test".into()]).unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let file: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("www/big.bin"), &file).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "<h1>shop</h1>\n").unwrap();
    let t = start_in(dir, &edge_toml(origin.addr, extra)).await;
    (t, origin, file)
}

fn udp_addr(t: &TestServer) -> SocketAddr {
    let h3 = t.server.h3_addrs();
    assert_eq!(h3.len(), 1, "one listener serves HTTP/3: {h3:?}");
    h3[0].1
}

async fn metrics(t: &TestServer) -> String {
    let admin = t.server.admin_addr().unwrap();
    client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[tokio::test]
async fn files_proxy_and_cache_over_h3_advertised_by_alt_svc() {
    let (t, origin, file) = start_h3("").await;
    let ca = t.dir.path().join("certs/ca.pem");
    let port = t.addr.port();
    let udp = udp_addr(&t);
    assert_eq!(
        udp.port(),
        port,
        "HTTP/3 on the UDP port of the same number"
    );

    // over TCP the site says where HTTP/3 is; the TCP-only site says nothing
    let c = tls_client(&ca, &[("shop.test", t.addr), ("blog.test", t.addr)]);
    let r = c
        .get(format!("https://shop.test:{port}/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["alt-svc"],
        format!("h3=\":{port}\"; ma=86400").as_str()
    );
    let r = c
        .get(format!("https://blog.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("alt-svc").is_none(), "{:?}", r.headers());

    let mut h3 = h3_connect(udp, "shop.test", &ca).await;
    let base = format!("https://shop.test:{port}");
    // a file, whole: version, length, bytes; no Alt-Svc over HTTP/3 itself
    let (resp, body) = h3.get(&format!("{base}/big.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_3);
    assert_eq!(resp.headers()["content-length"], "300000");
    assert!(resp.headers().get("alt-svc").is_none());
    assert!(resp.headers().get("connection").is_none());
    assert_eq!(body.as_ref(), file.as_slice());
    // a range and a conditional request
    let (resp, body) = h3
        .fetch(
            http::Request::get(format!("{base}/big.bin"))
                .header("range", "bytes=1000-1999")
                .body(())
                .unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(body.as_ref(), &file[1000..2000]);
    let (resp, _) = h3.get(&format!("{base}/index.html")).await;
    let etag = resp.headers()["etag"].clone();
    let (resp, body) = h3
        .fetch(
            http::Request::get(format!("{base}/index.html"))
                .header("if-none-match", etag)
                .body(())
                .unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert!(body.is_empty());
    // HEAD: the length, no body
    let (resp, body) = h3
        .fetch(
            http::Request::head(format!("{base}/big.bin"))
                .body(())
                .unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-length"], "300000");
    assert!(body.is_empty());

    // a request body through the proxy to an HTTP/1.1 origin, whole
    let upload: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8).collect();
    let (resp, body) = h3
        .fetch(
            http::Request::post(format!("{base}/echo"))
                .header("content-type", "application/octet-stream")
                .body(())
                .unwrap(),
            Some(Bytes::from(upload.clone())),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 200_000);
    let want = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&upload))
    };
    assert_eq!(echo["sha256"], want.as_str());
    // the origin's hop-by-hop fields never reach an HTTP/3 client
    let (resp, _) = h3.get(&format!("{base}/echo")).await;
    assert!(resp.headers().get("x-hop").is_none());

    // an event stream arrives event by event, not at the end
    let mut s = h3
        .send
        .send_request(http::Request::get(format!("{base}/sse")).body(()).unwrap())
        .await
        .unwrap();
    s.finish().await.unwrap();
    let resp = s.recv_response().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let started = tokio::time::Instant::now();
    let mut first = s.recv_data().await.unwrap().unwrap();
    let first = first.copy_to_bytes(first.remaining());
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the first event waited for the stream's end"
    );
    assert!(String::from_utf8_lossy(&first).contains("event 0"));
    while s.recv_data().await.unwrap().is_some() {}

    // the cache serves HTTP/3 clients too: a miss, then a hit the origin never sees
    origin
        .ctl
        .obj_headers
        .lock()
        .push(("cache-control".into(), "max-age=60".into()));
    *origin.ctl.obj_body.lock() = "cached object".into();
    let (resp, body) = h3.get(&format!("{base}/obj/a")).await;
    assert_eq!(body.as_ref(), b"cached object");
    assert!(
        resp.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("fwd=miss")
    );
    let hits = origin.hits();
    let (resp, body) = h3.get(&format!("{base}/obj/a")).await;
    assert_eq!(body.as_ref(), b"cached object");
    assert!(
        resp.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit"),
        "{:?}",
        resp.headers()
    );
    assert_eq!(origin.hits(), hits, "a hit does not reach the origin");

    // several requests at once on one connection
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut send = h3.send.clone();
        let url = format!("{base}/index.html");
        tasks.push(tokio::spawn(async move {
            let mut s = send
                .send_request(http::Request::get(url).body(()).unwrap())
                .await
                .unwrap();
            s.finish().await.unwrap();
            s.recv_response().await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }

    // the metrics and the access log say the protocol
    let m = metrics(&t).await;
    assert!(metric(&m, "hopline_requests_protocol_total{protocol=\"h3\"}") >= 18);
    assert!(metric(&m, "hopline_requests_protocol_total{protocol=\"h2\"}") >= 2);
    drop(h3);
    t.server.shutdown(Duration::from_secs(5)).await;
    let log = std::fs::read_to_string(t.dir.path().join("access.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("/big.bin") && l.contains("HTTP/3.0")),
        "{log}"
    );
}

#[tokio::test]
async fn a_client_proves_its_address_by_retry_when_handshakes_pile_up() {
    // 0: every new client is asked to retry with a token first
    let (t, _origin, _) = start_h3("[limits]\nquic_retry_above = 0\n").await;
    let ca = t.dir.path().join("certs/ca.pem");
    let port = t.addr.port();
    let mut h3 = h3_connect(udp_addr(&t), "shop.test", &ca).await;
    let (resp, _) = h3
        .get(&format!("https://shop.test:{port}/index.html"))
        .await;
    assert_eq!(resp.status(), 200);
    let m = metrics(&t).await;
    assert_eq!(metric(&m, "hopline_quic_retries_total"), 1, "{m}");
    // the Retry cost the client one more round trip, no more
    assert!(h3.conn.stats().path.sent_packets > 0);
}

#[tokio::test]
async fn shutdown_sends_goaway_and_lets_requests_in_flight_finish() {
    let (t, origin, _) = start_h3("").await;
    let ca = t.dir.path().join("certs/ca.pem");
    let port = t.addr.port();
    origin
        .ctl
        .delay_ms
        .store(800, std::sync::atomic::Ordering::Relaxed);
    let mut h3 = h3_connect(udp_addr(&t), "shop.test", &ca).await;
    let mut send = h3.send.clone();
    let slow = tokio::spawn(async move {
        let mut s = send
            .send_request(
                http::Request::get(format!("https://shop.test:{port}/echo"))
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap();
        s.finish().await.unwrap();
        let resp = s.recv_response().await.unwrap();
        let mut body = BytesMut::new();
        while let Some(mut c) = s.recv_data().await.unwrap() {
            body.extend_from_slice(&c.copy_to_bytes(c.remaining()));
        }
        (resp.status(), body.freeze())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = t.server;
    let stopping = tokio::spawn(async move { server.shutdown(Duration::from_secs(10)).await });
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains("\"origin\":\"o1\""),
        "{body:?}"
    );
    assert_eq!(stopping.await.unwrap(), hopline_edge::Shutdown::Drained);
    // after GOAWAY, no new request on that connection
    let refused = h3
        .fetch(
            http::Request::get(format!("https://shop.test:{port}/index.html"))
                .body(())
                .unwrap(),
            None,
        )
        .await;
    assert!(refused.is_err(), "a request after shutdown was answered");
}

#[tokio::test]
async fn a_reload_turns_http3_off_and_on() {
    let (t, origin, _) = start_h3("").await;
    let ca = t.dir.path().join("certs/ca.pem");
    let port = t.addr.port();
    let udp = udp_addr(&t);
    let path = t.dir.path().join("hopline.toml");
    // the sites' listener named by its bound port is the same listener
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[\"127.0.0.1:0\"]", &format!("[\"{}\"]", t.addr));
    std::fs::write(&path, text.replace("http3 = true\n", "")).unwrap();
    let config = hopline_edge::Config::load(&path).unwrap();
    t.server.reload(config).await.unwrap();
    assert!(t.server.h3_addrs().is_empty());
    let c = tls_client(&ca, &[("shop.test", t.addr)]);
    let r = c
        .get(format!("https://shop.test:{port}/index.html"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("alt-svc").is_none());
    std::fs::write(&path, &text).unwrap();
    let config = hopline_edge::Config::load(&path).unwrap();
    t.server.reload(config).await.unwrap();
    assert_eq!(udp_addr(&t).port(), udp.port());
    let mut h3 = h3_connect(udp_addr(&t), "shop.test", &ca).await;
    let (resp, _) = h3
        .get(&format!("https://shop.test:{port}/index.html"))
        .await;
    assert_eq!(resp.status(), 200);
    drop(origin);
}

#[tokio::test]
async fn ngtcp2s_client_fetches_over_h3() {
    if !hopline_testkit::peer_installed("gtlsclient", "--help", "ngtcp2-client") {
        return;
    }
    let (t, _origin, file) = start_h3("").await;
    let udp = udp_addr(&t);
    let out = t.dir.path().join("download");
    std::fs::create_dir(&out).unwrap();
    let mut cmd = std::process::Command::new("gtlsclient");
    cmd.args(["--exit-on-all-streams-close", "--timeout=10s"])
        .arg(format!("--download={}", out.display()))
        .args([
            "--sni=shop.test",
            "127.0.0.1",
            &udp.port().to_string(),
            &format!("https://shop.test:{}/big.bin", udp.port()),
        ]);
    let done = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let said =
        String::from_utf8_lossy(&done.stderr).into_owned() + &String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "gtlsclient: {}\n{said}", done.status);
    let got = std::fs::read(out.join("big.bin"))
        .unwrap_or_else(|e| panic!("{e}: gtlsclient said\n{said}"));
    assert_eq!(got.len(), file.len());
    assert!(got == file, "gtlsclient's download differs");
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_hash(pem: &Path) -> String {
    use base64::Engine;
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;
    let der = rustls_pki_types::CertificateDer::from_pem_file(pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let spki = cert.tbs_certificate.subject_pki.raw;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_a_page_and_its_resources_over_h3() {
    let (t, _origin, _) = start_h3("").await;
    let www = t.dir.path().join("www");
    std::fs::write(
        www.join("page.html"),
        "<!doctype html><html><head><link rel=stylesheet href=/style.css><script src=/app.js></script></head>\
         <body><h1>over h3</h1><img src=/dot.svg></body></html>\n",
    )
    .unwrap();
    std::fs::write(www.join("style.css"), "h1 { color: teal }\n").unwrap();
    std::fs::write(www.join("app.js"), "window.loaded = true;\n").unwrap();
    std::fs::write(
        www.join("dot.svg"),
        "<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'><rect width='4' height='4'/></svg>\n",
    )
    .unwrap();
    let port = t.addr.port();
    let spki = spki_hash(&t.dir.path().join("certs/shop.test.pem"));
    let switches = vec![
        "--enable-quic".to_string(),
        format!("--origin-to-force-quic-on=shop.test:{port}"),
        "--host-resolver-rules=MAP shop.test 127.0.0.1".to_string(),
        format!("--ignore-certificate-errors-spki-list={spki}"),
    ];
    let seen = tokio::task::spawn_blocking(move || {
        let mut browser = hopline_testkit::Browser::start_with(&switches)?;
        browser.goto(&format!("https://shop.test:{port}/page.html"));
        browser.wait_for("window.loaded === true", Duration::from_secs(10));
        Some(browser.eval(
            "JSON.stringify([performance.getEntriesByType('navigation')[0].nextHopProtocol]\
             .concat(performance.getEntriesByType('resource').map(e => e.nextHopProtocol)))",
        ))
    })
    .await
    .unwrap();
    let Some(seen) = seen else {
        return;
    };
    let protocols: Vec<String> = serde_json::from_str(seen.as_str().unwrap()).unwrap();
    // the page, its 3 resources (and the icon, when Chromium asked for it by then)
    assert!(protocols.len() >= 4, "{protocols:?}");
    assert!(
        protocols.iter().all(|p| p == "h3"),
        "every load over HTTP/3: {protocols:?}"
    );
    let m = metrics(&t).await;
    assert!(metric(&m, "hopline_requests_protocol_total{protocol=\"h3\"}") >= 4);
}

#[tokio::test]
async fn a_udp_port_already_taken_is_refused_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    hopline_edge::tls::ca::issue(&dir.path().join("certs"), &["shop.test".into()]).unwrap();
    // the UDP side of a port whose TCP side is free
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let path = dir.path().join("hopline.toml");
    std::fs::write(
        &path,
        format!(
            "[[site]]\nlisten = [\"127.0.0.1:{port}\"]\ntls = {{ cert = \"certs/shop.test.pem\", key = \"certs/shop.test-key.pem\" }}\nhttp3 = true\n  [[site.route]]\n  path = \"/\"\n  respond = {{ body = \"x\" }}\n"
        ),
    )
    .unwrap();
    hopline_edge::tls::install_crypto_provider();
    let config = hopline_edge::Config::load(&path).unwrap();
    let err = hopline_edge::Server::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP/3 over UDP")
            && err.contains("ss -lutnp")
            && err.contains("choose another port"),
        "{err}"
    );
    drop(udp);
}
