//! Certificates by ACME against Let's Encrypt's test CA, Debian's `pebble`: the CA resolves
//! names through hopline's own authoritative server (`-dnsserver`) and validates HTTP-01
//! by connecting to the edge, as the internet would. A site with `tls = { acme = … }` gets
//! its certificate, stores it (keys 0600), serves it, renews it at two thirds of its
//! lifetime, keeps serving the stored one while the CA is down, and obtains one once a CA
//! that was down at start comes up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use hopline_testkit::{Proc, free_port, peer_installed, wait_for_port};

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

/// pebble and curl are here (else skipped loudly; required in CI).
fn peers() -> bool {
    peer_installed("pebble", "-h", "pebble") && peer_installed("curl", "--version", "curl")
}

/// A running pebble.
struct Pebble {
    _proc: Proc,
    directory: String,
    mgmt: u16,
}

/// Ports one scenario uses.
#[derive(Clone, Copy)]
struct Ports {
    dns: u16,
    http01: u16,
    https: u16,
    admin: u16,
    acme: u16,
    mgmt: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            dns: free_port(),
            http01: free_port(),
            https: free_port(),
            admin: free_port(),
            acme: free_port(),
            mgmt: free_port(),
        }
    }
}

/// pebble on `ports.acme`, its API certificate made by `hopline cert` in `dir/pc`, names
/// resolved through hopline's authoritative server, HTTP-01 checked on `ports.http01` and
/// TLS-ALPN-01 on `ports.https`;
/// certificates valid `validity` seconds (pebble's default: 5 years).
fn pebble(dir: &Path, ports: Ports, validity: Option<u64>) -> Pebble {
    pebble_full(dir, ports, validity, &[])
}

/// pebble with extra environment (e.g. `PEBBLE_WFE_NONCEREJECT`).
fn pebble_with_env(dir: &Path, ports: Ports, env: &[(&str, &str)]) -> Pebble {
    pebble_full(dir, ports, None, env)
}

fn pebble_full(dir: &Path, ports: Ports, validity: Option<u64>, env: &[(&str, &str)]) -> Pebble {
    let pc = dir.join("pc");
    if !pc.join("localhost.pem").exists() {
        let out = Command::new(BIN)
            .args(["cert", "--dir"])
            .arg(&pc)
            .args(["localhost", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let mut cfg = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{}", ports.acme),
        "managementListenAddress": format!("127.0.0.1:{}", ports.mgmt),
        "certificate": pc.join("localhost.pem"),
        "privateKey": pc.join("localhost-key.pem"),
        "httpPort": ports.http01,
        "tlsPort": ports.https,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    if let Some(v) = validity {
        cfg["pebble"]["certificateValidityPeriod"] = v.into();
    }
    let file = dir.join(format!("pebble-{}.json", ports.acme));
    std::fs::write(&file, cfg.to_string()).unwrap();
    let p = Proc(
        Command::new("pebble")
            .arg("-config")
            .arg(&file)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", ports.dns))
            .env("PEBBLE_VA_NOSLEEP", "1")
            // pebble refuses 5 % of nonces by default: a test about something else must
            // not fail by that chance (bad_nonces_are_retried asks for them on purpose)
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pebble"),
    );
    assert!(
        wait_for_port(ports.acme, Duration::from_secs(10)),
        "pebble never listened"
    );
    Pebble {
        _proc: p,
        directory: format!("https://127.0.0.1:{}/dir", ports.acme),
        mgmt: ports.mgmt,
    }
}

impl Pebble {
    /// The root its certificates chain to (made at each start).
    fn root(&self, to: &Path) -> PathBuf {
        let out = Command::new("curl")
            .args(["-sk", &format!("https://127.0.0.1:{}/roots/0", self.mgmt)])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.starts_with(b"-----BEGIN"));
        std::fs::write(to, &out.stdout).unwrap();
        to.to_path_buf()
    }
}

/// The zone the CA resolves `www.acme.test` in, and the edge's config.
fn write_config(dir: &Path, ports: Ports, directory: &str, storage: &str) -> PathBuf {
    write_config_with(
        dir,
        ports,
        directory,
        storage,
        "http-01",
        "\"www.acme.test\"",
    )
}

/// The same with `challenge`; for `tls-alpn-01` there is no plain listener at all.
fn write_config_with(
    dir: &Path,
    ports: Ports,
    directory: &str,
    storage: &str,
    challenge: &str,
    hosts: &str,
) -> PathBuf {
    std::fs::write(
        dir.join("acme.test.zone"),
        "$ORIGIN acme.test.\n$TTL 60\n@ IN SOA ns1.acme.test. admin.acme.test. 1 3600 600 86400 30\n@ IN NS ns1.acme.test.\nns1 IN A 127.0.0.1\nwww IN A 127.0.0.1\n",
    )
    .unwrap();
    let file = dir.join(format!("{storage}.toml"));
    std::fs::write(
        &file,
        format!(
            r#"[[dns.authoritative]]
listen = "127.0.0.1:{dns}"
zones = ["acme.test.zone"]

[admin]
listen = "127.0.0.1:{admin}"

[acme.pebble]
directory = "{directory}"
ca_root = "pc/ca.pem"
contact = "ops@acme.test"
storage = "{storage}"
challenge = "{challenge}"
{plain}
[[site]]
name = "www"
listen = ["127.0.0.1:{https}"]
hosts = [{hosts}]
tls = {{ acme = "pebble" }}
  [[site.route]]
  path = "/"
  respond = {{ status = 200, body = "hello over acme\n" }}
"#,
            dns = ports.dns,
            admin = ports.admin,
            https = ports.https,
            plain = if challenge == "http-01" {
                format!(
                    "\n[[site]]\nname = \"http\"\nlisten = [\"127.0.0.1:{}\"]\n  [[site.route]]\n  path = \"/\"\n  respond = {{ status = 200, body = \"plain\\n\" }}\n",
                    ports.http01
                )
            } else {
                String::new()
            },
        ),
    )
    .unwrap();
    file
}

fn serve(config: &Path) -> Proc {
    Proc(
        Command::new(BIN)
            .arg("serve")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The admin listener's view of the one certificate.
fn cert_status(ports: Ports) -> serde_json::Value {
    cert_status_of(ports, "pebble:www.acme.test")
}

/// The admin listener's view of the certificate `key` (`SECTION:names`).
fn cert_status_of(ports: Ports, key: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{}/.hopline/status", ports.admin),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["certificates"][key].clone()
}

/// Waits until `ok(status)`, up to `timeout`.
fn wait_status(
    ports: Ports,
    timeout: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + timeout;
    loop {
        let st = cert_status(ports);
        if ok(&st) {
            return st;
        }
        assert!(
            Instant::now() < until,
            "certificate status never got there: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `hopline visit` of the site through its own DNS, trusting `root`: the status, or None
/// when the handshake fails.
fn visit(ports: Ports, root: &Path) -> Option<u64> {
    visit_host(ports, root, "www.acme.test")
}

/// The same for `host`.
fn visit_host(ports: Ports, root: &Path, host: &str) -> Option<u64> {
    let out = Command::new(BIN)
        .args([
            "visit",
            &format!("https://{host}:{}/", ports.https),
            "--resolver",
            &format!("127.0.0.1:{}", ports.dns),
            "--ca",
        ])
        .arg(root)
        .args(["--json", "--no-cache", "--timeout", "3"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let doc = &v["entries"][0];
    doc["error"].is_null().then(|| doc["status"].as_u64())?
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn http01_issuance_storage_reuse_and_a_ca_that_is_down() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let ca = pebble(dir.path(), ports, None);
    let config = write_config(dir.path(), ports, &ca.directory, "store");
    let edge = serve(&config);
    let st = wait_status(ports, Duration::from_secs(30), |s| s["state"] == "valid");
    assert_eq!(st["obtained"], "ordered", "{st}");
    assert_eq!(st["orders"], 1, "{st}");
    assert!(st["issuer"].as_str().unwrap().contains("Pebble"), "{st}");
    let root = ca.root(&dir.path().join("root.pem"));
    assert_eq!(visit(ports, &root), Some(200));
    // stored: the key and the account only for us
    let store = dir.path().join("store");
    assert_eq!(mode(&store.join("certs/www.acme.test-key.pem")), 0o600);
    assert_eq!(mode(&store.join("account.json")), 0o600);
    assert!(store.join("certs/www.acme.test.pem").exists());
    // the metrics say when it expires
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{}/metrics", ports.admin)])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains(&format!(
            "hopline_certificate_expiry_seconds{{acme=\"pebble\",name=\"www.acme.test\"}} {}",
            st["not_after"]
        )),
        "{metrics}"
    );
    // restarted with the CA gone: the stored certificate serves, nothing is ordered
    drop(edge);
    drop(ca);
    let edge = serve(&config);
    let st = wait_status(ports, Duration::from_secs(10), |s| s["state"] == "valid");
    assert_eq!(st["obtained"], "storage", "{st}");
    assert_eq!(st["orders"], 0, "{st}");
    assert_eq!(visit(ports, &root), Some(200));
    drop(edge);

    // a new site while the CA is down: no certificate (the handshake fails, the state
    // says why), then the CA comes up and the retry obtains one
    let ports = Ports::new();
    let config = write_config(
        dir.path(),
        ports,
        &format!("https://127.0.0.1:{}/dir", ports.acme),
        "later",
    );
    let _edge = serve(&config);
    let st = wait_status(ports, Duration::from_secs(10), |s| {
        !s["last_error"].is_null()
    });
    assert_eq!(st["state"], "waiting", "{st}");
    assert!(st["retry_at"].is_u64(), "{st}");
    assert_eq!(
        visit(ports, &root),
        None,
        "served a certificate it does not have"
    );
    let ca = pebble(dir.path(), ports, None);
    let st = wait_status(ports, Duration::from_secs(30), |s| s["state"] == "valid");
    assert!(st["last_error"].is_null(), "{st}");
    let root = ca.root(&dir.path().join("root2.pem"));
    assert_eq!(visit(ports, &root), Some(200));
}

#[test]
fn a_certificate_is_renewed_at_two_thirds_of_its_lifetime() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    // 15-second certificates: renewed 10 s after each issuance
    let ca = pebble(dir.path(), ports, Some(15));
    let config = write_config(dir.path(), ports, &ca.directory, "short");
    let _edge = serve(&config);
    let first = wait_status(ports, Duration::from_secs(30), |s| s["state"] == "valid");
    let (nb, renew) = (
        first["not_after"].as_u64().unwrap(),
        first["renew_at"].as_u64().unwrap(),
    );
    assert!(nb > renew && nb - renew <= 6, "{first}");
    let renewed = wait_status(ports, Duration::from_secs(30), |s| {
        s["orders"].as_u64() >= Some(2)
    });
    assert!(
        renewed["not_after"].as_u64().unwrap() > nb,
        "{first} then {renewed}"
    );
    assert_eq!(renewed["state"], "valid", "{renewed}");
    let root = ca.root(&dir.path().join("root.pem"));
    assert_eq!(visit(ports, &root), Some(200));
    // the CA goes away mid-life: the renewal fails, the current certificate keeps serving
    // ("failing"), and once it runs out the state says "expired" (an error, not silence)
    drop(ca);
    let failing = wait_status(ports, Duration::from_secs(30), |s| s["state"] == "failing");
    assert!(!failing["last_error"].is_null(), "{failing}");
    if failing["not_after"].as_u64() > Some(now_secs() + 1) {
        assert_eq!(visit(ports, &root), Some(200), "{failing}");
    }
    let expired = wait_status(ports, Duration::from_secs(40), |s| s["state"] == "expired");
    assert!(!expired["last_error"].is_null(), "{expired}");
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn the_key_type_is_configurable_and_a_change_orders_anew() {
    if !peers() {
        return;
    }
    use hopline_edge::acme::{config::KeyType, storage};
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let ca = pebble(dir.path(), ports, None);
    let config = write_config_with(
        dir.path(),
        ports,
        &ca.directory,
        "keys",
        "tls-alpn-01",
        "\"www.acme.test\"",
    );
    let default = std::fs::read_to_string(&config).unwrap();
    let p384 = default.replace(
        "challenge = \"tls-alpn-01\"",
        "challenge = \"tls-alpn-01\"\nkey_type = \"ecdsa-p384\"",
    );
    assert_ne!(default, p384);
    std::fs::write(&config, &p384).unwrap();
    let names = vec!["www.acme.test".to_string()];
    let stored_key = || {
        storage::load(&dir.path().join("keys"), &names)
            .unwrap()
            .unwrap()
            .key_type
    };
    let edge = serve(&config);
    let st = wait_status(ports, Duration::from_secs(30), |s| s["state"] == "valid");
    assert_eq!(st["key_type"], "ecdsa-p384", "{st}");
    assert_eq!(stored_key(), Some(KeyType::EcdsaP384));
    let root = ca.root(&dir.path().join("root.pem"));
    assert_eq!(visit(ports, &root), Some(200));
    drop(edge);
    // back to the default: the stored P-384 one serves until a P-256 one is ordered
    std::fs::write(&config, &default).unwrap();
    let edge = serve(&config);
    let st = wait_status(ports, Duration::from_secs(30), |s| {
        s["state"] == "valid" && s["orders"] == 1
    });
    assert_eq!(st["key_type"], "ecdsa-p256", "{st}");
    assert_eq!(st["obtained"], "ordered", "{st}");
    assert_eq!(stored_key(), Some(KeyType::EcdsaP256));
    assert_eq!(visit(ports, &root), Some(200));
    drop(edge);
}

#[test]
fn tls_alpn01_with_no_plain_listener() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let ca = pebble(dir.path(), ports, None);
    let config = write_config_with(
        dir.path(),
        ports,
        &ca.directory,
        "alpn",
        "tls-alpn-01",
        "\"www.acme.test\"",
    );
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains("name = \"http\"")
    );
    let _edge = serve(&config);
    let st = wait_status(ports, Duration::from_secs(30), |s| {
        s["state"] == "valid" || !s["last_error"].is_null()
    });
    assert_eq!(st["state"], "valid", "{st}");
    assert_eq!(st["orders"], 1, "{st}");
    let root = ca.root(&dir.path().join("root.pem"));
    assert_eq!(visit(ports, &root), Some(200));
    // and an ordinary client (h2, http/1.1 offered) gets the site, not a challenge
    let out = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            root.to_str().unwrap(),
            "--resolve",
            &format!("www.acme.test:{}:127.0.0.1", ports.https),
            &format!("https://www.acme.test:{}/", ports.https),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over acme\n");
}

#[test]
fn dns01_through_our_own_authority_gives_a_wildcard_certificate() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let ca = pebble(dir.path(), ports, None);
    let config = write_config_with(
        dir.path(),
        ports,
        &ca.directory,
        "wild",
        "dns-01",
        "\"acme.test\", \"*.acme.test\"",
    );
    let _edge = serve(&config);
    let until = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st = cert_status_of(ports, "pebble:acme.test,*.acme.test");
        if st["state"] == "valid" || !st["last_error"].is_null() {
            break st;
        }
        assert!(Instant::now() < until, "{st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st["state"], "valid", "{st}");
    // www.acme.test is served by the wildcard
    let root = ca.root(&dir.path().join("root.pem"));
    assert_eq!(visit(ports, &root), Some(200));
    let pem = std::fs::read_to_string(dir.path().join("wild/certs/acme.test.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE"));
    // the TXT record was withdrawn: the authority no longer has it
    let out = Command::new("dig")
        .args([
            "+short",
            "-p",
            &ports.dns.to_string(),
            "@127.0.0.1",
            "_acme-challenge.acme.test",
            "TXT",
        ])
        .output();
    if let Ok(out) = out {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "",
            "still published"
        );
    }
}

/// An `ask` endpoint: 200 for names starting with "ok", 403 for the rest; counts the
/// questions per name.
fn ask_server() -> (
    u16,
    std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<String, u32>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(parking_lot::Mutex::new(std::collections::HashMap::new()));
    let a = asked.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            let name = line
                .split("domain=")
                .nth(1)
                .and_then(|r| r.split([' ', '&']).next())
                .unwrap_or("")
                .replace("%2E", ".");
            *a.lock().entry(name.clone()).or_insert(0) += 1;
            let status = if name.starts_with("ok") {
                "200 OK"
            } else {
                "403 Forbidden"
            };
            let _ = (&s).write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, asked)
}

#[test]
fn on_demand_certificates_asked_for_rate_limited_and_stored() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let ca = pebble(dir.path(), ports, None);
    let (ask_port, asked) = ask_server();
    let write = |ask: u16| {
        let file = write_config(dir.path(), ports, &ca.directory, "od");
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace(
                "challenge = \"http-01\"",
                &format!(
                    "challenge = \"http-01\"\nask = \"http://127.0.0.1:{ask}/check\"\non_demand_per_minute = 2"
                ),
            )
            .replace(
                "hosts = [\"www.acme.test\"]\ntls = { acme = \"pebble\" }",
                "hosts = [\"*.acme.test\"]\ntls = { acme = \"pebble\", on_demand = true }",
            );
        assert!(text.contains("on_demand = true"), "{text}");
        std::fs::write(&file, text).unwrap();
        std::fs::write(
            dir.path().join("acme.test.zone"),
            "$ORIGIN acme.test.\n$TTL 60\n@ IN SOA ns1.acme.test. admin.acme.test. 1 3600 600 86400 30\n@ IN NS ns1.acme.test.\nns1 IN A 127.0.0.1\n* IN A 127.0.0.1\n",
        )
        .unwrap();
        file
    };
    let config = write(ask_port);
    let edge = serve(&config);
    assert!(wait_for_port(ports.https, Duration::from_secs(10)));
    let root = ca.root(&dir.path().join("root.pem"));
    let count = |name: &str| asked.lock().get(name).copied().unwrap_or(0);
    // the first handshake for a name waits for its certificate
    assert_eq!(visit_host(ports, &root, "ok1.acme.test"), Some(200));
    assert_eq!(visit_host(ports, &root, "ok1.acme.test"), Some(200));
    assert_eq!(count("ok1.acme.test"), 1, "asked again for a name it holds");
    let st = cert_status_of(ports, "pebble:ok1.acme.test");
    assert_eq!(
        (st["state"].as_str(), st["orders"].as_u64()),
        (Some("valid"), Some(1)),
        "{st}"
    );
    // a name the ask endpoint refuses: no certificate, fast, and asked once per ask_cache_ms
    let t = Instant::now();
    assert_eq!(visit_host(ports, &root, "bad.acme.test"), None);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(visit_host(ports, &root, "bad.acme.test"), None);
    assert_eq!(count("bad.acme.test"), 1);
    assert!(cert_status_of(ports, "pebble:bad.acme.test").is_null());
    // 8 handshakes at once for one new name: one question (the others wait for its answer)
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || visit_host(ports, &root, "burst.acme.test"))
        })
        .collect();
    for b in burst {
        assert_eq!(b.join().unwrap(), None);
    }
    assert_eq!(count("burst.acme.test"), 1, "asked once per handshake");
    // a name outside the site's hosts patterns is refused without asking
    assert_eq!(visit_host(ports, &root, "ok9.elsewhere.test"), None);
    assert_eq!(count("ok9.elsewhere.test"), 0);
    // 2 new certificates a minute: ok2 is the second, ok3 waits for the next minute
    assert_eq!(visit_host(ports, &root, "ok2.acme.test"), Some(200));
    assert_eq!(visit_host(ports, &root, "ok3.acme.test"), None);
    assert!(cert_status_of(ports, "pebble:ok3.acme.test").is_null());
    drop(edge);
    // restarted, with an ask endpoint that hangs: stored names need no ask; a new one is
    // refused after the ask's 3 s timeout, not held until it answers
    let slow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in slow.incoming().flatten() {
            held.push(s); // accepted, never answered
        }
    });
    let config = write(slow_port);
    let _edge = serve(&config);
    assert!(wait_for_port(ports.https, Duration::from_secs(10)));
    assert_eq!(visit_host(ports, &root, "ok1.acme.test"), Some(200));
    assert_eq!(count("ok1.acme.test"), 1);
    let st = cert_status_of(ports, "pebble:ok1.acme.test");
    assert_eq!(st["obtained"], "storage", "{st}");
    let refused = || {
        let out = Command::new("curl")
            .args([
                "-s",
                &format!("http://127.0.0.1:{}/.hopline/status", ports.admin),
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["on_demand"]["pebble:*.acme.test"]["refused"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = refused();
    let t = Instant::now();
    assert_eq!(visit_host(ports, &root, "ok4.acme.test"), None);
    // the edge itself gave up on the hanging ask (3 s), not only the client
    while refused() == before {
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "the handshake is still held"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cert_status_of(ports, "pebble:ok4.acme.test").is_null());
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{}/.hopline/status", ports.admin),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["on_demand"]["pebble:*.acme.test"]["refused"].as_u64() >= Some(1),
        "{}",
        v["on_demand"]
    );
}

/// One edge of a cluster sharing certificates through Redis: a plain listener on
/// `http`, and, when `site` is given, an HTTPS site for that host on that port.
#[allow(clippy::too_many_arguments)]
fn cluster_node(
    dir: &Path,
    node: &str,
    admin: u16,
    directory: &str,
    redis: &str,
    http: u16,
    site: Option<(&str, u16)>,
) -> PathBuf {
    let mut text = format!(
        r#"[admin]
listen = "127.0.0.1:{admin}"

[acme.pebble]
directory = "{directory}"
ca_root = "pc/ca.pem"
storage = "{node}-store"
redis = "{redis}"

[[site]]
name = "http"
listen = ["127.0.0.1:{http}"]
  [[site.route]]
  path = "/"
  respond = {{ status = 200, body = "plain\n" }}
"#
    );
    if let Some((host, port)) = site {
        text.push_str(&format!(
            r#"
[[site]]
name = "www"
listen = ["127.0.0.1:{port}"]
hosts = ["{host}"]
tls = {{ acme = "pebble" }}
  [[site.route]]
  path = "/"
  respond = {{ status = 200, body = "hello from {node}\n" }}
"#
        ));
    }
    let file = dir.join(format!("{node}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

fn status_at(admin: u16, key: &str) -> serde_json::Value {
    cert_status_of(
        Ports {
            dns: 0,
            http01: 0,
            https: 0,
            admin,
            acme: 0,
            mgmt: 0,
        },
        key,
    )
}

fn wait_valid(admin: u16, key: &str) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status_at(admin, key);
        if st["state"] == "valid" {
            return st;
        }
        assert!(Instant::now() < until, "{key} on {admin}: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn edges_sharing_a_redis_order_once_and_answer_each_others_challenges() {
    if !peers() {
        return;
    }
    let Some(redis) = hopline_testkit::Redis::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let ca = pebble(dir.path(), ports, None);
    // the names' DNS, alone in a process of its own
    write_config(dir.path(), ports, &ca.directory, "unused");
    let dns = dir.path().join("dns.toml");
    std::fs::write(
        &dns,
        format!(
            "[[dns.authoritative]]\nlisten = \"127.0.0.1:{}\"\nzones = [\"acme.test.zone\"]\n",
            ports.dns
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("acme.test.zone"),
        "$ORIGIN acme.test.\n$TTL 60\n@ IN SOA ns1.acme.test. admin.acme.test. 1 3600 600 86400 30\n@ IN NS ns1.acme.test.\nns1 IN A 127.0.0.1\n* IN A 127.0.0.1\n",
    )
    .unwrap();
    let _dns = serve(&dns);
    // A holds the port the CA validates on and orders nothing; B orders: the CA's request
    // reaches A, which answers B's token from Redis
    let url = redis.url();
    let a = cluster_node(
        dir.path(),
        "a",
        free_port(),
        &ca.directory,
        &url,
        ports.http01,
        None,
    );
    let _a = serve(&a);
    assert!(wait_for_port(ports.http01, Duration::from_secs(10)));
    let (b_admin, b_https) = (free_port(), free_port());
    let b = cluster_node(
        dir.path(),
        "b",
        b_admin,
        &ca.directory,
        &url,
        free_port(),
        Some(("www.acme.test", b_https)),
    );
    let _b = serve(&b);
    let st = wait_valid(b_admin, "pebble:www.acme.test");
    assert_eq!(
        (st["obtained"].as_str(), st["orders"].as_u64()),
        (Some("ordered"), Some(1)),
        "{st}"
    );
    // C comes later: takes B's certificate from Redis, orders nothing
    let (c_admin, c_https) = (free_port(), free_port());
    let c = cluster_node(
        dir.path(),
        "c",
        c_admin,
        &ca.directory,
        &url,
        free_port(),
        Some(("www.acme.test", c_https)),
    );
    let _c = serve(&c);
    let st = wait_valid(c_admin, "pebble:www.acme.test");
    assert_eq!(st["orders"], 0, "{st}");
    let root = ca.root(&dir.path().join("root.pem"));
    for port in [b_https, c_https] {
        let p = Ports {
            https: port,
            ..ports
        };
        assert_eq!(visit(p, &root), Some(200), "port {port}");
    }
    // E and F start together for a new name: one of them orders, the other waits for it
    let mut nodes = Vec::new();
    for n in ["e", "f"] {
        let (admin, https) = (free_port(), free_port());
        let file = cluster_node(
            dir.path(),
            n,
            admin,
            &ca.directory,
            &url,
            free_port(),
            Some(("shop.acme.test", https)),
        );
        nodes.push((admin, serve(&file)));
    }
    let orders: u64 = nodes
        .iter()
        .map(|(admin, _)| {
            wait_valid(*admin, "pebble:shop.acme.test")["orders"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(orders, 1, "two edges ordered the same name");
}

#[test]
fn bad_nonces_are_retried() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    // pebble refuses a quarter of the nonces it is sent (urn:ietf:params:acme:error:badNonce)
    let ca = pebble_with_env(dir.path(), ports, &[("PEBBLE_WFE_NONCEREJECT", "25")]);
    let config = write_config(dir.path(), ports, &ca.directory, "nonces");
    let _edge = serve(&config);
    let st = wait_status(ports, Duration::from_secs(60), |s| s["state"] == "valid");
    assert_eq!(st["obtained"], "ordered", "{st}");
}

#[test]
fn a_hostile_directory_is_an_error_to_show_not_a_crash() {
    if !peer_installed("curl", "--version", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let out = Command::new(BIN)
        .args(["cert", "--dir"])
        .arg(dir.path().join("pc"))
        .args(["localhost", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // a "CA" that answers its directory with garbage, another with a directory whose
    // endpoints answer nonsense (no nonce, HTML errors)
    let fake = free_port();
    let ca_file = dir.path().join("fake-ca.toml");
    std::fs::write(
        &ca_file,
        format!(
            r#"[[site]]
listen = ["127.0.0.1:{fake}"]
tls = {{ cert = "pc/localhost.pem", key = "pc/localhost-key.pem" }}
  [[site.route]]
  path = "/garbage"
  respond = {{ status = 200, body = "{{not json", content_type = "application/json" }}
  [[site.route]]
  path = "/dir"
  respond = {{ status = 200, body = '{{"newNonce":"https://127.0.0.1:{fake}/nonce","newAccount":"https://127.0.0.1:{fake}/acct","newOrder":"https://127.0.0.1:{fake}/order"}}', content_type = "application/json" }}
  [[site.route]]
  path = "/"
  respond = {{ status = 500, body = "<html>oops</html>", content_type = "text/html" }}
"#
        ),
    )
    .unwrap();
    let _fake = serve(&ca_file);
    assert!(wait_for_port(fake, Duration::from_secs(10)));
    for (path, storage) in [("garbage", "g"), ("dir", "d")] {
        let ports = Ports {
            dns: free_port(),
            http01: free_port(),
            https: free_port(),
            admin: free_port(),
            ..ports
        };
        let config = write_config(
            dir.path(),
            ports,
            &format!("https://127.0.0.1:{fake}/{path}"),
            storage,
        );
        let edge = serve(&config);
        let st = wait_status(ports, Duration::from_secs(10), |s| {
            !s["last_error"].is_null()
        });
        assert_eq!(st["state"], "waiting", "{st}");
        // still serving: the admin listener answers, the process is alive
        let mut edge = edge;
        assert!(
            edge.0.try_wait().unwrap().is_none(),
            "the edge exited: {st}"
        );
        assert!(!cert_status(ports).is_null());
    }
}
