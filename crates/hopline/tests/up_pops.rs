//! `hopline up --pops 4`: a CDN of four points of presence in the small internet — the
//! DNS pool spreads over all four, the dashboard shows each, and the `hopline purge`
//! example `up` prints empties every PoP (each one's `Cache-Status` says so).
//! Runs on a port offset of its own (52000-55400), beside the other `up` tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

/// The four PoPs' addresses (pop-1, pop-2, pop-3, pop-4).
const POPS: [&str; 4] = ["127.0.0.2", "127.0.0.3", "127.0.0.8", "127.0.0.9"];

/// Kills the `up` process when the test ends, however it ends.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// The first snapshot of the dashboard's event stream.
fn snapshot(admin: SocketAddr) -> serde_json::Value {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /.hopline/events HTTP/1.1\r\nHost: admin\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the event stream ended");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("data: {") && l.ends_with('}'))
        {
            return serde_json::from_str(&line[6..]).unwrap();
        }
    }
}

#[test]
fn up_with_four_pops_purges_every_one() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // --pops shapes the built-in topology only; 9 is more than the addresses planned
    let out = Command::new(BIN)
        .args(["up", "--pops", "3", "--config", "x.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--pops shapes the built-in topology"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["up", "--pops", "9"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("1..=8"), "{err}");

    let off = hopline_testkit::free_up_offset(52000, 17, &POPS);
    let mut child = Command::new(BIN)
        .args([
            "up",
            "--pops",
            "4",
            "--port-offset",
            &off.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _up = Up(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = String::new();
    let purge_line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("up printed no purge example:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("purge on every PoP:") {
            break line;
        }
    };
    // four PoPs listed, each with its own cache, and the visit's DNS answer had all four
    for (k, a) in POPS.iter().enumerate() {
        let row = format!("pop-{} ", k + 1);
        assert!(
            printed.lines().any(|l| l.starts_with(&row)
                && l.contains(&format!("{a}:{}", 8443 + off))
                && l.contains(&format!("cache pop{}", k + 1))),
            "{row} on {a}:\n{printed}"
        );
    }
    let answered = printed
        .lines()
        .find(|l| l.contains("dns: resolver") && l.contains("answered"))
        .unwrap_or_else(|| panic!("no DNS line:\n{printed}"));
    for a in POPS {
        assert!(
            answered.contains(&format!("{a},")) || answered.contains(&format!("{a} ")),
            "{answered}"
        );
    }
    assert!(purge_line.contains("(4 PoPs)"), "{purge_line}");

    // the dashboard shows each PoP
    let admin: SocketAddr = format!("127.0.0.1:{}", 9900 + off).parse().unwrap();
    let snap = snapshot(admin);
    let pops: Vec<&str> = snap["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "pop")
        .filter_map(|n| n["label"].as_str())
        .collect();
    assert_eq!(pops, ["pop-1", "pop-2", "pop-3", "pop-4"], "{snap}");

    // every PoP caches the shop: a miss, then a hit, each in its own cache
    let tls = {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls_pki_types::CertificateDer::from_pem_file(dir.path().join("certs/ca.pem"))
                    .unwrap(),
            )
            .unwrap();
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = 8443 + off;
    let url = format!("https://www.shop.test:{port}/");
    let clients: Vec<reqwest::Client> = POPS
        .iter()
        .map(|a| {
            reqwest::Client::builder()
                .no_proxy()
                .tls_backend_preconfigured(tls.clone())
                .resolve("www.shop.test", format!("{a}:{port}").parse().unwrap())
                .build()
                .unwrap()
        })
        .collect();
    let statuses = |clients: &[reqwest::Client]| -> Vec<String> {
        rt.block_on(async {
            let mut out = Vec::new();
            for c in clients {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                assert_eq!(r.headers()["surrogate-key"], "shop");
                out.push(r.headers()["cache-status"].to_str().unwrap().to_string());
                let _ = r.bytes().await;
            }
            out
        })
    };
    statuses(&clients);
    let warm = statuses(&clients);
    for (k, s) in warm.iter().enumerate() {
        assert!(
            s.starts_with(&format!("pop{}; hit", k + 1)),
            "PoP {} did not keep the page: {warm:?}",
            k + 1
        );
    }

    // the printed purge, run as printed: every PoP dropped its copy
    let cmd = purge_line
        .split("hopline ")
        .nth(1)
        .and_then(|c| c.split("   (").next())
        .expect("a hopline command");
    let mut args: Vec<&str> = cmd.split_whitespace().collect();
    args.push("--json");
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in 1..=4 {
        assert!(
            v["caches"][format!("pop{k}")].as_u64().unwrap_or(0) >= 1,
            "pop{k} dropped nothing: {v}"
        );
    }
    let after = statuses(&clients);
    for (k, s) in after.iter().enumerate() {
        assert!(
            s.starts_with(&format!("pop{}; fwd=miss", k + 1)),
            "PoP {} still served the purged page: {after:?}",
            k + 1
        );
    }
}
