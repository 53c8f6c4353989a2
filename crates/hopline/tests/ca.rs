//! hopline's own ACME CA (`[ca.NAME]` on an edge route) against real clients: hopline's
//! own ACME client (HTTP-01, TLS-ALPN-01, DNS-01 for a wildcard), Debian's certbot
//! (standalone) and lego. The CA resolves names through hopline's authoritative server
//! and validates by connecting to them or querying their TXT records.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hopline_testkit::{Proc, free_port, peer_installed, wait_for_port};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

fn serve(config: &Path) -> Proc {
    Proc(
        Command::new(BIN)
            .arg("serve")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The CA's folder (made by `hopline cert`, which also gives the CA's own HTTPS
/// certificate), the zone, a DNS process, and the CA process on `ca_port`.
struct World {
    dir: tempfile::TempDir,
    dns: u16,
    ca_port: u16,
    _procs: Vec<Proc>,
}

impl World {
    fn start(http_port: u16, tls_port: u16) -> World {
        World::start_with(http_port, tls_port, "")
    }

    /// The same, with more lines in `[ca.local]`.
    fn start_with(http_port: u16, tls_port: u16, extra: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["cert", "--dir"])
            .arg(dir.path().join("ca"))
            .args(["localhost", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(
            dir.path().join("acme.test.zone"),
            "$ORIGIN acme.test.\n$TTL 60\n@ IN SOA ns1.acme.test. admin.acme.test. 1 3600 600 86400 30\n@ IN NS ns1.acme.test.\nns1 IN A 127.0.0.1\n* IN A 127.0.0.1\n",
        )
        .unwrap();
        let (dns, ca_port) = (free_port(), free_port());
        let ca = dir.path().join("ca.toml");
        std::fs::write(
            &ca,
            format!(
                r#"[ca.local]
dir = "ca"
http_port = {http_port}
tls_port = {tls_port}
resolvers = ["127.0.0.1:{dns}"]
{extra}
[[site]]
listen = ["127.0.0.1:{ca_port}"]
tls = {{ cert = "ca/localhost.pem", key = "ca/localhost-key.pem" }}
  [[site.route]]
  path = "/acme/"
  ca = "local"
"#
            ),
        )
        .unwrap();
        let procs = vec![serve(&ca)];
        assert!(wait_for_port(ca_port, Duration::from_secs(10)));
        World {
            dir,
            dns,
            ca_port,
            _procs: procs,
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/acme/directory", self.ca_port)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("ca/ca.pem")
    }

    /// A process serving only the zone (for clients that are not hopline).
    fn dns_alone(&mut self) {
        let f = self.dir.path().join("dns.toml");
        std::fs::write(
            &f,
            format!(
                "[[dns.authoritative]]\nlisten = \"127.0.0.1:{}\"\nzones = [\"acme.test.zone\"]\n",
                self.dns
            ),
        )
        .unwrap();
        self._procs.push(serve(&f));
        hopline_testkit::wait_udp(format!("127.0.0.1:{}", self.dns).parse().unwrap());
    }
}

fn status(admin: u16) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{admin}/.hopline/status")])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()["certificates"]
        .clone()
}

/// `hopline visit https://HOST:PORT/` through the world's DNS, trusting its CA.
fn visit(w: &World, host: &str, port: u16) -> Option<u64> {
    let out = Command::new(BIN)
        .args([
            "visit",
            &format!("https://{host}:{port}/"),
            "--resolver",
            &format!("127.0.0.1:{}", w.dns),
            "--ca",
        ])
        .arg(w.root())
        .args(["--json", "--no-cache", "--timeout", "3"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let doc = &v["entries"][0];
    doc["error"].is_null().then(|| doc["status"].as_u64())?
}

#[test]
fn hopline_client_gets_certificates_from_hopline_ca_by_every_challenge() {
    if !peer_installed("curl", "--version", "curl") {
        return;
    }
    let (http, alpn) = (free_port(), free_port());
    let w = World::start(http, alpn);
    let (admin, www, wild) = (free_port(), free_port(), free_port());
    let edge = w.dir.path().join("edge.toml");
    let section = |name: &str, challenge: &str| {
        format!(
            "[acme.{name}]\ndirectory = \"{}\"\nca_root = \"ca/ca.pem\"\nchallenge = \"{challenge}\"\n",
            w.directory()
        )
    };
    let site = |name: &str, port: u16, hosts: &str, acme: &str| {
        format!(
            "[[site]]\nname = \"{name}\"\nlisten = [\"127.0.0.1:{port}\"]\nhosts = [{hosts}]\ntls = {{ acme = \"{acme}\" }}\n  [[site.route]]\n  path = \"/\"\n  respond = {{ status = 200, body = \"{name}\\n\" }}\n"
        )
    };
    std::fs::write(
        &edge,
        format!(
            "[[dns.authoritative]]\nlisten = \"127.0.0.1:{dns}\"\nzones = [\"acme.test.zone\"]\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n{}{}{}[[site]]\nname = \"http\"\nlisten = [\"127.0.0.1:{http}\"]\n  [[site.route]]\n  path = \"/\"\n  respond = {{ status = 200 }}\n{}{}{}",
            section("byhttp", "http-01"),
            section("byalpn", "tls-alpn-01"),
            section("bydns", "dns-01"),
            site("www", www, "\"www.acme.test\"", "byhttp"),
            site("alpn", alpn, "\"alpn.acme.test\"", "byalpn"),
            site("wild", wild, "\"*.wild.acme.test\"", "bydns"),
            dns = w.dns,
        ),
    )
    .unwrap();
    let _edge = serve(&edge);
    let until = Instant::now() + Duration::from_secs(30);
    let keys = [
        "byhttp:www.acme.test",
        "byalpn:alpn.acme.test",
        "bydns:*.wild.acme.test",
    ];
    loop {
        let st = status(admin);
        if keys
            .iter()
            .all(|k| st[k]["state"] == "valid" && st[k]["renew_by"] == "ari")
        {
            // the renewal window comes from the CA (ARI): within 2/3–3/4 of the lifetime
            let c = &st["byhttp:www.acme.test"];
            let (nb, na, at) = (
                c["not_before"].as_u64().unwrap(),
                c["not_after"].as_u64().unwrap(),
                c["renew_at"].as_u64().unwrap(),
            );
            let life = na - nb;
            assert!(
                at >= nb + life * 2 / 3 && at <= nb + life * 3 / 4 + 1,
                "{c}"
            );
            for k in keys {
                assert!(
                    st[k]["issuer"]
                        .as_str()
                        .unwrap()
                        .contains("hopline local CA"),
                    "{st}"
                );
            }
            break;
        }
        assert!(Instant::now() < until, "{st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(visit(&w, "www.acme.test", www), Some(200));
    assert_eq!(visit(&w, "alpn.acme.test", alpn), Some(200));
    assert_eq!(visit(&w, "shop.wild.acme.test", wild), Some(200));
}

#[test]
fn a_name_that_does_not_answer_its_challenge_gets_no_certificate() {
    if !peer_installed("curl", "--version", "curl") {
        return;
    }
    // the CA checks HTTP-01 on a port nobody listens on
    let w = World::start(free_port(), free_port());
    let (admin, www) = (free_port(), free_port());
    let edge = w.dir.path().join("edge.toml");
    std::fs::write(
        &edge,
        format!(
            "[[dns.authoritative]]\nlisten = \"127.0.0.1:{dns}\"\nzones = [\"acme.test.zone\"]\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[acme.x]\ndirectory = \"{dir}\"\nca_root = \"ca/ca.pem\"\n[[site]]\nlisten = [\"127.0.0.1:{www}\"]\nhosts = [\"www.acme.test\"]\ntls = {{ acme = \"x\" }}\n  [[site.route]]\n  path = \"/\"\n  respond = {{}}\n",
            dns = w.dns,
            dir = w.directory(),
        ),
    )
    .unwrap();
    let _edge = serve(&edge);
    let until = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = status(admin)["x:www.acme.test"].clone();
        if !st["last_error"].is_null() {
            break st;
        }
        assert!(Instant::now() < until, "{st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st["state"], "waiting", "{st}");
    let e = st["last_error"].as_str().unwrap();
    assert!(e.contains("connecting to 127.0.0.1:"), "{e}");
}

#[test]
fn certbot_and_lego_get_certificates_from_hopline_ca() {
    if !peer_installed("curl", "--version", "curl")
        || !peer_installed("certbot", "--version", "certbot")
        || !peer_installed("lego", "--version", "lego")
    {
        return;
    }
    let http = free_port();
    let mut w = World::start(http, free_port());
    w.dns_alone();
    // certbot's own web server answers HTTP-01 on the port the CA checks
    let work = w.dir.path().join("certbot");
    let out = Command::new("certbot")
        .args([
            "certonly",
            "--standalone",
            "--non-interactive",
            "--agree-tos",
            "--register-unsafely-without-email",
            "--server",
            &w.directory(),
            "-d",
            "certbot.acme.test",
            "--http-01-port",
            &http.to_string(),
            "--http-01-address",
            "127.0.0.1",
            "--config-dir",
        ])
        .arg(&work)
        .arg("--work-dir")
        .arg(&work)
        .arg("--logs-dir")
        .arg(&work)
        .env("REQUESTS_CA_BUNDLE", w.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certbot: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let chain = std::fs::read_to_string(work.join("live/certbot.acme.test/fullchain.pem")).unwrap();
    assert!(chain.matches("BEGIN CERTIFICATE").count() == 2, "{chain}");
    // lego likewise
    let path = w.dir.path().join("lego");
    let out = Command::new("lego")
        .args([
            "--server",
            &w.directory(),
            "--email",
            "ops@acme.test",
            "--accept-tos",
            "--domains",
            "lego.acme.test",
            "--http",
            "--http.port",
            &format!("127.0.0.1:{http}"),
            "--path",
        ])
        .arg(&path)
        .arg("run")
        .env("LEGO_CA_CERTIFICATES", w.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lego: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let crt = std::fs::read_to_string(path.join("certificates/lego.acme.test.crt")).unwrap();
    assert!(crt.contains("BEGIN CERTIFICATE"));
}

#[test]
fn hopline_ca_serve_runs_the_ca_alone() {
    if !peer_installed("curl", "--version", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _ca = Proc(
        Command::new(BIN)
            .args(["ca", "serve", "--dir"])
            .arg(dir.path().join("ca"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--http-port",
                "8080",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for_port(port, Duration::from_secs(10)));
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(dir.path().join("ca/ca.pem"))
        .arg(format!("https://127.0.0.1:{port}/acme/directory"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["newOrder"],
        format!("https://127.0.0.1:{port}/acme/new-order"),
        "{v}"
    );
    let written = std::fs::read_to_string(dir.path().join("ca/ca-serve.toml")).unwrap();
    assert!(written.contains("http_port = 8080"), "{written}");
}

#[test]
fn a_ca_asking_for_early_renewal_is_obeyed() {
    if !peer_installed("curl", "--version", "curl") {
        return;
    }
    let http = free_port();
    // the CA tells clients, through ARI, to renew certificates once 63 s old (their
    // not_before is a minute back: 3 s after issuance), as a CA shortens the window
    // after a mis-issuance
    let w = World::start_with(http, free_port(), "renew_after_s = 63\n");
    let (admin, www) = (free_port(), free_port());
    let edge = w.dir.path().join("edge.toml");
    std::fs::write(
        &edge,
        format!(
            "[[dns.authoritative]]\nlisten = \"127.0.0.1:{dns}\"\nzones = [\"acme.test.zone\"]\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[acme.x]\ndirectory = \"{dir}\"\nca_root = \"ca/ca.pem\"\n[[site]]\nname = \"http\"\nlisten = [\"127.0.0.1:{http}\"]\n  [[site.route]]\n  path = \"/\"\n  respond = {{}}\n[[site]]\nlisten = [\"127.0.0.1:{www}\"]\nhosts = [\"www.acme.test\"]\ntls = {{ acme = \"x\" }}\n  [[site.route]]\n  path = \"/\"\n  respond = {{}}\n",
            dns = w.dns,
            dir = w.directory(),
        ),
    )
    .unwrap();
    let _edge = serve(&edge);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(admin)["x:www.acme.test"].clone();
        // a 90-day certificate renewed within seconds: the CA's window, not the lifetime
        if st["orders"].as_u64() >= Some(2) {
            assert_eq!(st["renew_by"], "ari", "{st}");
            break;
        }
        assert!(Instant::now() < until, "{st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
