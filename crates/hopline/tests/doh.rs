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
        .args(["dns.test", "page.doh.test", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(
        d.join("hosts"),
        "10.9.8.6 www.doh.test\n127.0.0.1 page.doh.test\n",
    )
    .unwrap();
    std::fs::create_dir(d.join("www")).unwrap();
    std::fs::write(
        d.join("www/index.html"),
        "<!doctype html><link rel=stylesheet href=/site.css><p>over DoH</p>",
    )
    .unwrap();
    std::fs::write(d.join("www/site.css"), "p { color: teal }").unwrap();
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
http3 = true
  [[site.route]]
  path = "/dns-query"
  service = "doh:main"
  [[site.route]]
  path = "/unbound-query"
  service = "doh:unbound"
  [[site.route]]
  path = "/"
  root = "www"
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

    // hopline's own client over DNS over HTTPS
    let doh_url = format!("https://127.0.0.1:{https_port}/dns-query");
    let unbound_url = format!("https://127.0.0.1:{https_port}/unbound-query");
    let over_https = |name: &str, extra: &[&str]| {
        Command::new(BIN)
            .args(["resolve", name, "--ca"])
            .arg(d.join("certs/ca.pem"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = over_https("www.doh.test", &["--https", &doh_url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("10.9.8.6") && text.contains("over HTTP/2"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(
        &over_https("www.doh.test", &["--https", &doh_url, "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(json["transport"], "https");
    assert_eq!(json["records"][0]["data"], "10.9.8.6");
    assert_eq!(json["http"]["status"], 200);
    assert_eq!(json["http"]["http_version"], "HTTP/2");
    assert!(
        json["http"]["url"]
            .as_str()
            .unwrap()
            .contains("/dns-query?dns="),
        "{json}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &over_https("www.doh.test", &["--https", &doh_url, "--http3", "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(json["http"]["http_version"], "HTTP/3", "{json}");
    assert_eq!(json["records"][0]["data"], "10.9.8.6");
    // NXDOMAIN (from Unbound behind the relay) comes back as such (exit 2), not as an
    // HTTP failure
    let out = over_https("nothere.unbound.test", &["--https", &unbound_url, "--json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["rcode"], "Non-Existent Domain", "{json}");
    // a certificate we do not trust: refused
    let out = Command::new(BIN)
        .args(["resolve", "www.doh.test", "--https", &doh_url])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");

    // a page loaded the way a browser with DoH on loads it: the name of the page asked
    // over HTTPS (A and AAAA, each a request of its own on one HTTP/2 connection), never
    // through the system resolver (which does not know page.doh.test)
    let page = format!("https://page.doh.test:{https_port}/");
    let out = Command::new(BIN)
        .args([
            "visit",
            &page,
            "--doh",
            &doh_url,
            "--no-cache",
            "--json",
            "--ca",
        ])
        .arg(d.join("certs/ca.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let nav: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = nav["entries"].as_array().unwrap();
    let dns: Vec<&serde_json::Value> = entries.iter().filter(|e| e["kind"] == "dns").collect();
    assert_eq!(dns.len(), 2, "A and AAAA: {nav}");
    for e in &dns {
        assert_eq!(e["status"], 200, "{e}");
        assert_eq!(e["http_version"], "HTTP/2", "{e}");
        assert!(
            e["url"].as_str().unwrap().contains("/dns-query?dns="),
            "{e}"
        );
    }
    // one connection carries both questions
    assert_eq!(dns[0]["connection"], dns[1]["connection"], "{nav}");
    let doc = entries.iter().find(|e| e["kind"] == "document").unwrap();
    assert_eq!(doc["status"], 200, "{doc}");
    let info = &doc["dns"];
    assert!(
        info["answered_by"]
            .as_str()
            .unwrap()
            .starts_with("doh https://127.0.0.1:"),
        "{info}"
    );
    assert_eq!(info["addrs"][0], "127.0.0.1", "{info}");
    let ids: Vec<u64> = dns.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let mut said: Vec<u64> = info["doh"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    said.sort();
    let mut ids_sorted = ids.clone();
    ids_sorted.sort();
    assert_eq!(
        said, ids_sorted,
        "the document names the DoH requests: {nav}"
    );
    for e in &dns {
        assert_eq!(e["initiator"], doc["id"], "{e}");
    }
    // the stylesheet reuses the connection: no second lookup
    let css = entries.iter().find(|e| e["kind"] == "stylesheet").unwrap();
    assert_eq!(css["status"], 200, "{css}");
    // the waterfall draws the DoH lookup (D) and lists the DoH requests as rows
    let out = Command::new(BIN)
        .args([
            "visit",
            &page,
            "--doh",
            &doh_url,
            "--no-cache",
            "--explain",
            "--ca",
        ])
        .arg(d.join("certs/ca.pem"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let rows = text
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("dns"))
        .count();
    assert_eq!(rows, 2, "{text}");
    assert!(text.contains("DDD"), "the document's DNS bar: {text}");
    assert!(
        text.contains("fetched 1 subresources (2 DNS-over-HTTPS requests besides)"),
        "{text}"
    );
    assert!(text.contains("asked over DNS over HTTPS"), "{text}");
    // DNS over HTTPS over HTTP/3 (QUIC), the site's own listener serving it
    let out = Command::new(BIN)
        .args([
            "visit",
            &page,
            "--doh",
            &doh_url,
            "--no-cache",
            "--http3",
            "--json",
            "--ca",
        ])
        .arg(d.join("certs/ca.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let nav: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = nav["entries"].as_array().unwrap();
    let dns: Vec<&serde_json::Value> = entries.iter().filter(|e| e["kind"] == "dns").collect();
    assert_eq!(dns.len(), 2, "{nav}");
    for e in &dns {
        assert_eq!(
            (e["status"].as_u64(), e["http_version"].as_str()),
            (Some(200), Some("HTTP/3")),
            "{e}"
        );
    }
    // a DoH server that answers NXDOMAIN: the visit fails with the reason
    let out = Command::new(BIN)
        .args([
            "visit",
            &format!("https://nothere.unbound.test:{https_port}/"),
            "--doh",
            &unbound_url,
            "--no-cache",
            "--ca",
        ])
        .arg(d.join("certs/ca.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("NXDOMAIN (DNS over HTTPS"), "{text}");
}
