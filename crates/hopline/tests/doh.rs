//! DNS over HTTPS (RFC 8484) as a route of the edge: `hopline serve` with a resolver, a
//! `[doh.main]` relay and a TLS site routing `/dns-query` to it; Knot's `kdig +https`
//! (POST and GET, over HTTP/2) and curl for the malformed requests a server must refuse.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Is `program` installed? (Outside CI a missing peer skips loudly; in CI it fails.)
fn installed(program: &str, package: &str) -> bool {
    hopline_testkit::peer_installed(program, "--version", package)
}

#[test]
fn kdig_asks_over_https_and_malformed_requests_are_refused() {
    if !installed("kdig", "knot-dnsutils")
        || !installed("curl", "curl")
        || !installed("unbound", "unbound")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = Command::new(BIN)
        .args(["cert", "--dir"])
        .arg(d.join("certs"))
        .args(["dns.test", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(d.join("hosts"), "10.9.8.6 www.doh.test\n").unwrap();
    let (dns_port, https_port, dot_port, unbound_port) = (
        hopline_testkit::free_port(),
        hopline_testkit::free_port(),
        hopline_testkit::free_port(),
        hopline_testkit::free_port(),
    );
    // a resolver of another process, for the relay over UDP: Unbound with one local name
    std::fs::write(
        d.join("unbound.conf"),
        format!(
            "server:\n  interface: 127.0.0.1@{unbound_port}\n  port: {unbound_port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  access-control: 127.0.0.0/8 allow\n  num-threads: 1\n  local-zone: \".\" refuse\n  local-zone: \"unbound.test.\" static\n  local-data: \"www.unbound.test. 300 A 10.9.8.5\"\n",
            d.display()
        ),
    )
    .unwrap();
    let _unbound = Killed(
        Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(d.join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    hopline_testkit::wait_udp(format!("127.0.0.1:{unbound_port}").parse().unwrap());
    std::fs::write(
        d.join("hopline.toml"),
        format!(
            r#"
access_log = "off"
[[dns.resolver]]
listen = "127.0.0.1:{dns_port}"
forward = ["127.0.0.1:9"]
hosts_file = "hosts"
tls = {{ listen = "127.0.0.1:{dot_port}", cert = "certs/dns.test.pem", key = "certs/dns.test-key.pem" }}

[doh.main]
resolver = "127.0.0.1:{dns_port}"

[doh.unbound]
resolver = "127.0.0.1:{unbound_port}"

[[site]]
listen = ["127.0.0.1:{https_port}"]
tls = {{ cert = "certs/dns.test.pem", key = "certs/dns.test-key.pem" }}
  [[site.route]]
  path = "/dns-query"
  service = "doh:main"
  [[site.route]]
  path = "/unbound-query"
  service = "doh:unbound"
"#
        ),
    )
    .unwrap();
    let _server = Killed(
        Command::new(BIN)
            .arg("serve")
            .arg(d.join("hopline.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        hopline_testkit::wait_for_port(https_port, Duration::from_secs(10)),
        "the site listens"
    );
    let ca = format!("+tls-ca={}", d.join("certs/ca.pem").display());
    let kdig = |extra: &[&str]| {
        let out = Command::new("kdig")
            .args(["@127.0.0.1", "-p", &https_port.to_string(), &ca])
            .args(["+tls-hostname=dns.test", "+time=3", "+retry=0"])
            .args(extra)
            .args(["www.doh.test", "A"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    for (how, method) in [("+https", "POST"), ("+https-get", "GET")] {
        let out = kdig(&[how]);
        assert!(out.contains("10.9.8.6"), "{how}: {out}");
        assert!(
            out.contains(&format!("HTTP session (HTTP/2-{method})")) && out.contains("status: 200"),
            "{how}: {out}"
        );
    }
    // what a DoH server must refuse, and how
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(d.join("certs/ca.pem"))
            .args([
                "--resolve",
                &format!("dns.test:{https_port}:127.0.0.1"),
                "--max-time",
                "5",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let url = format!("https://dns.test:{https_port}/dns-query");
    assert_eq!(curl(&[&format!("{url}?dns=!!not-base64!!")]), "400");
    assert_eq!(curl(&[&url]), "400", "no dns= parameter");
    // base64url of bytes that are no DNS message
    assert_eq!(curl(&[&format!("{url}?dns=AAEC")]), "400");
    assert_eq!(
        curl(&[
            "-H",
            "content-type: text/plain",
            "--data-binary",
            "hello",
            &url
        ]),
        "415"
    );
    let big = d.join("big");
    std::fs::write(&big, vec![0u8; 70_000]).unwrap();
    assert_eq!(
        curl(&[
            "-H",
            "content-type: application/dns-message",
            "--data-binary",
            &format!("@{}", big.display()),
            &url
        ]),
        "413"
    );
    assert_eq!(curl(&["-X", "PUT", &url]), "405");
    // relayed over UDP to a resolver of another process
    let out = Command::new("kdig")
        .args(["@127.0.0.1", "-p", &https_port.to_string(), &ca])
        .args([
            "+tls-hostname=dns.test",
            "+https=/unbound-query",
            "+time=3",
            "+retry=0",
        ])
        .args(["www.unbound.test", "A"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("10.9.8.5") && text.contains("/unbound-query"),
        "{text}"
    );
    // hopline's own client over DNS over TLS: the certificate checked against the CA
    let resolve = |extra: &[&str]| {
        Command::new(BIN)
            .args(["resolve", "www.doh.test", "--tls"])
            .arg(format!("127.0.0.1:{dot_port}"))
            .arg("--ca")
            .arg(d.join("certs/ca.pem"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = resolve(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("10.9.8.6") && text.contains("over TLS"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&resolve(&["--json"]).stdout).unwrap();
    assert_eq!(json["transport"], "tls");
    assert_eq!(json["records"][0]["data"], "10.9.8.6");
    // a name the certificate does not carry is refused
    let out = resolve(&["--tls-name", "other.test"]);
    assert!(!out.status.success(), "{out:?}");
}
