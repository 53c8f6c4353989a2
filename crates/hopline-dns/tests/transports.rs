//! DNS over TLS (RFC 7858) in front of hopline's resolver, checked with Knot's `kdig
//! +tls`: answers over one connection, certificate checked against its CA, and the same
//! resolver (and cache) as the UDP listener.

use std::net::SocketAddr;
use std::process::Command;

use hopline_dns::config::DnsConfig;
use hopline_dns::service::DnsServices;

/// Is `program` installed? (Outside CI a missing peer skips loudly; in CI it fails.)
fn installed(program: &str, package: &str) -> bool {
    hopline_testkit::peer_installed(program, "--version", package)
}

/// A CA and a certificate for `dns.test` signed by it, as PEM files in `dir`.
fn certificates(dir: &std::path::Path) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "hopline test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["dns.test".to_string()]).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("dot.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(dir.join("dot-key.pem"), leaf_key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_asks_the_resolver_over_tls() {
    if !installed("kdig", "knot-dnsutils") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    std::fs::write(d.join("hosts"), "10.9.8.7 www.dot.test\n").unwrap();
    let cfg: DnsConfig = toml::from_str(
        "[[resolver]]\nlisten = \"127.0.0.1:0\"\nforward = [\"127.0.0.1:9\"]\nhosts_file = \"hosts\"\ntls = { listen = \"127.0.0.1:0\", cert = \"dot.pem\", key = \"dot-key.pem\" }\n",
    )
    .unwrap();
    let dns = DnsServices::start(&cfg, d).await.unwrap();
    let dot: SocketAddr = dns
        .bound()
        .iter()
        .find(|(role, _)| role == "DNS resolver (TLS)")
        .map(|(_, a)| *a)
        .expect("a DoT listener");
    let kdig = |extra: &[&str]| {
        let out = Command::new("kdig")
            .args([
                &format!("@{}", dot.ip()),
                "-p",
                &dot.port().to_string(),
                "+tls",
                "+time=3",
                "+retry=0",
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // the certificate checked against the CA, for the name it is for
    let ca = format!("+tls-ca={}", d.join("ca.pem").display());
    let (ok, out) = kdig(&[&ca, "+tls-hostname=dns.test", "www.dot.test", "A"]);
    assert!(ok && out.contains("10.9.8.7"), "{out}");
    assert!(out.contains("TLS"), "kdig says it spoke TLS: {out}");
    // two questions over one connection
    let (ok, out) = kdig(&[
        &ca,
        "+tls-hostname=dns.test",
        "+keepopen",
        "www.dot.test",
        "A",
        "www.dot.test",
        "AAAA",
    ]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("->>HEADER<<-").count(), 2, "{out}");
    // a client that expects another name refuses the certificate
    let (_, out) = kdig(&[&ca, "+tls-hostname=other.test", "www.dot.test", "A"]);
    assert!(!out.contains("10.9.8.7"), "{out}");
}
