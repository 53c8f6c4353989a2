//! DNSSEC signing by hopline's authoritative server, checked by real validators: a
//! hierarchy (root → test. → shop.test.) signed online on 127.0.84.x:53, each parent
//! holding its signed child's DS; Unbound validating through it with the root's DS as
//! its trust anchor (AD on secure answers and proofs, SERVFAIL on a DS that does not
//! match); `ldns-verify-zone` on each zone as transferred (AXFR).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hopline_dns::config::DnsConfig;
use hopline_dns::service::DnsServices;
use hopline_testkit::Proc;

fn ip(net: u8, h: u8) -> String {
    format!("127.0.{net}.{h}")
}

/// Is `program` installed? (Outside CI a missing peer skips loudly; in CI it fails.)
fn installed(program: &str, package: &str) -> bool {
    hopline_testkit::peer_installed(program, "--version", package)
}

/// Zones of a small signed hierarchy, and hopline's config serving each on its own
/// address: the root (ECDSA), `test.` (Ed25519) with a wildcard, an empty non-terminal
/// and an unsigned child `plain.test.`, `shop.test.` (ECDSA) with a pooled name, and
/// `bad.test.`, signed, whose DS in `test.` is wrong.
fn hierarchy(dir: &Path, net: u8) -> DnsConfig {
    hierarchy_denial(dir, net, "", "")
}

/// [`hierarchy`] with `test.` and `shop.test.` proving denial as `test_how` and
/// `shop_how` say (extra keys of their `dnssec` tables, e.g. `, denial = "nsec3"`).
fn hierarchy_denial(dir: &Path, net: u8, test_how: &str, shop_how: &str) -> DnsConfig {
    let ip = |h| ip(net, h);
    let files = [
        (
            "root.zone",
            format!(
                "$ORIGIN .\n$TTL 86400\n@ IN SOA a.root. admin.root. 1 3600 600 86400 300\n@ IN NS a.root.\na.root. IN A {}\ntest. 172800 IN NS ns1.test.\nns1.test. 172800 IN A {}\n",
                ip(11),
                ip(12)
            ),
        ),
        (
            "test.zone",
            format!(
                "$ORIGIN test.\n$TTL 3600\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\n@ IN NS ns1.test.\nns1 IN A {}\nshop IN NS ns1.shop.test.\nns1.shop IN A {}\nplain IN NS ns1.plain.test.\nns1.plain IN A {}\nbad IN NS ns1.bad.test.\nns1.bad IN A {}\nbad IN DS 4242 13 2 3490A6806D47F17A34C29E2CE80E8A999FFBE4BE8D7A32E40C6D9E0B2F7C2A1D\n*.wild IN TXT \"any name\"\nhost.ent IN A 10.9.9.9\n",
                ip(12),
                ip(13),
                ip(14),
                ip(15)
            ),
        ),
        (
            "shop.test.zone",
            format!(
                "$ORIGIN shop.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {}\nwww 120 IN A 10.0.0.1\napi IN CNAME www\ngone IN CNAME nothere\n",
                ip(13)
            ),
        ),
        (
            "plain.test.zone",
            format!(
                "$ORIGIN plain.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {}\nwww IN A 10.0.0.7\n",
                ip(14)
            ),
        ),
        (
            "bad.test.zone",
            format!(
                "$ORIGIN bad.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {}\nwww IN A 10.0.0.8\n",
                ip(15)
            ),
        ),
    ];
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::fs::write(
        dir.join("root.hints"),
        format!(". 3600000 NS a.root.\na.root. 3600000 A {}\n", ip(11)),
    )
    .unwrap();
    let toml = format!(
        r#"
[[authoritative]]
listen = "{r}:53"
zones = [{{ file = "root.zone", dnssec = {{ algorithm = "ecdsap256sha256" }} }}]
transfer = ["127.0.0.0/8"]
[[authoritative]]
listen = "{t}:53"
zones = [{{ file = "test.zone", dnssec = {{ algorithm = "ed25519"{test_how} }} }}]
transfer = ["127.0.0.0/8"]
[[authoritative]]
listen = "{s}:53"
zones = [{{ file = "shop.test.zone", dnssec = {{ algorithm = "ecdsap256sha256"{shop_how} }} }}]
transfer = ["127.0.0.0/8"]
[[authoritative]]
listen = "{p}:53"
zones = ["plain.test.zone"]
[[authoritative]]
listen = "{b}:53"
zones = [{{ file = "bad.test.zone", dnssec = {{}} }}]
[[pool]]
name = "pool.shop.test."
addresses = ["10.1.0.1", "10.1.0.2"]
"#,
        r = ip(11),
        t = ip(12),
        s = ip(13),
        p = ip(14),
        b = ip(15)
    );
    toml::from_str(&toml).unwrap()
}

/// One UDP question with EDNS and DO set; the answer (5 s at most).
async fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    ask_with(server, name, rtype, false).await
}

/// [`ask`], with the CD bit (checking disabled: the client validates) when `cd`.
async fn ask_with(server: SocketAddr, name: &str, rtype: RecordType, cd: bool) -> Message {
    let mut q = Message::new(0x5353, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.metadata.checking_disabled = cd;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    q.set_edns(edns);
    let sock = tokio::net::UdpSocket::bind(format!("{}:0", server.ip()))
        .await
        .unwrap();
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{server} answers {name} {rtype}"))
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// The root's DS, from its keys, as Unbound's `trust-anchor:` takes it.
fn root_anchor(dir: &Path) -> String {
    let keys = hopline_dns::dnssec::keys::ZoneKeys::load(&dir.join("keys"), &Name::root())
        .unwrap()
        .expect("the root's keys were made");
    keys.ds_records(3600)
        .iter()
        .map(|r| format!(". DS {}", r.data))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Unbound on 127.0.NET.53:53, validating from `anchor`, iterating from `dir/root.hints`.
fn validating_unbound(dir: &Path, net: u8, anchor: &str) -> (Proc, SocketAddr) {
    let conf = format!(
        "server:\n  interface: {i}\n  port: 53\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  root-hints: \"{d}/root.hints\"\n  module-config: \"validator iterator\"\n  trust-anchor: \"{anchor}\"\n  do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n  access-control: 127.0.0.0/8 allow\n  num-threads: 1\n  qname-minimisation: no\n  prefetch: no\n  val-log-level: 2\n  ede: yes\n  outgoing-interface: {i}\n",
        i = ip(net, 53),
        d = dir.display()
    );
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
    let p = Proc(
        Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(dir.join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("{}:53", ip(net, 53)).parse().unwrap();
    hopline_testkit::wait_udp(addr);
    (p, addr)
}

/// Knot Resolver (kresd) on 127.0.NET.57:53, validating from `anchor` (DS lines),
/// iterating from the hierarchy's root at 127.0.NET.11.
fn validating_kresd(dir: &Path, net: u8, anchor: &str) -> (Proc, SocketAddr) {
    let run = dir.join("kresd");
    std::fs::create_dir_all(&run).unwrap();
    let anchors: String = anchor
        .lines()
        .map(|l| format!("trust_anchors.add('{l}')\n"))
        .collect();
    let conf = format!(
        "net.ipv6 = false\nnet.listen('{i}', 53, {{ kind = 'dns' }})\nnet.outgoing_v4('{i}')\ntrust_anchors.remove('.')\n-- test. is refused by default (RFC 6761 special-use): this hierarchy lives there\npolicy.special_names = {{}}\n-- glue on loopback addresses is ignored unless allowed\npolicy.add(policy.all(policy.FLAGS({{'ALLOW_LOCAL'}})))\n{anchors}modules.load('hints')\nhints.root({{['a.root.'] = '{root}'}})\ncache.size = 10 * MB\nmodules.unload('priming')\nmodules.unload('detect_time_skew')\n",
        i = ip(net, 57),
        root = ip(net, 11),
    );
    std::fs::write(run.join("kresd.conf"), conf).unwrap();
    let p = Proc(
        Command::new("kresd")
            .arg("-n")
            .arg("-q")
            .arg("-c")
            .arg(run.join("kresd.conf"))
            .arg(&run)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("{}:53", ip(net, 57)).parse().unwrap();
    hopline_testkit::wait_udp(addr);
    (p, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_validates_answers_and_proofs_of_a_hierarchy_hopline_signs() {
    if !installed("unbound", "unbound") || !installed("kresd", "knot-resolver") {
        return;
    }
    let (dir, net) = (tempfile::tempdir().unwrap(), 84);
    let cfg = hierarchy(dir.path(), net);
    let _dns = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let anchor = root_anchor(dir.path());
    let (_unbound, unbound) = validating_unbound(dir.path(), net, &anchor);

    // (name, type, rcode, AD) as a validating resolver must see them
    let cases: &[(&str, RecordType, ResponseCode, bool)] = &[
        ("www.shop.test.", RecordType::A, ResponseCode::NoError, true),
        ("api.shop.test.", RecordType::A, ResponseCode::NoError, true),
        (
            "nope.shop.test.",
            RecordType::A,
            ResponseCode::NXDomain,
            true,
        ),
        (
            "www.shop.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            true,
        ),
        (
            "gone.shop.test.",
            RecordType::A,
            ResponseCode::NXDomain,
            true,
        ),
        (
            "pool.shop.test.",
            RecordType::A,
            ResponseCode::NoError,
            true,
        ),
        (
            "pool.shop.test.",
            RecordType::AAAA,
            ResponseCode::NoError,
            true,
        ),
        ("a.wild.test.", RecordType::TXT, ResponseCode::NoError, true),
        ("a.wild.test.", RecordType::A, ResponseCode::NoError, true),
        ("ent.test.", RecordType::A, ResponseCode::NoError, true),
        ("shop.test.", RecordType::DS, ResponseCode::NoError, true),
        (
            "shop.test.",
            RecordType::DNSKEY,
            ResponseCode::NoError,
            true,
        ),
        // an unsigned child: answered, not authenticated
        (
            "www.plain.test.",
            RecordType::A,
            ResponseCode::NoError,
            false,
        ),
        // a DS that matches no key of the child: bogus
        (
            "www.bad.test.",
            RecordType::A,
            ResponseCode::ServFail,
            false,
        ),
    ];
    // hopline's own resolver, validating from the same anchor
    std::fs::write(dir.path().join("root.key"), &anchor).unwrap();
    let resolver_cfg: DnsConfig = toml::from_str(&format!(
        "[[resolver]]\nlisten = \"{}:53\"\nroot_hints = \"root.hints\"\nhosts_file = \"\"\ntrust_anchor = \"root.key\"\n",
        ip(net, 54)
    ))
    .unwrap();
    let _ours = DnsServices::start(&resolver_cfg, dir.path()).await.unwrap();
    let ours: SocketAddr = format!("{}:53", ip(net, 54)).parse().unwrap();
    let (_kresd, kresd) = validating_kresd(dir.path(), net, &anchor);

    let mut wrong = Vec::new();
    for &(name, rtype, rcode, ad) in cases {
        for (who, server) in [("unbound", unbound), ("kresd", kresd), ("hopline", ours)] {
            let m = ask(server, name, rtype).await;
            let got = (m.metadata.response_code, m.metadata.authentic_data);
            if got != (rcode, ad) {
                wrong.push(format!(
                    "{who}: {name} {rtype}: expected {rcode} AD={ad}, got {} AD={}",
                    got.0, got.1
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // the bogus answer says why (RFC 8914 Extended DNS Error), the secure one is cached
    // with its standing
    let m = ask(ours, "www.bad.test.", RecordType::A).await;
    let ede: Vec<u16> = m
        .edns
        .as_ref()
        .map(|e| {
            e.options()
                .as_ref()
                .iter()
                .filter_map(|(code, o)| {
                    let b = Vec::<u8>::try_from(o).ok()?;
                    (u16::from(*code) == 15 && b.len() >= 2)
                        .then(|| u16::from_be_bytes([b[0], b[1]]))
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ede, vec![9], "DNSKEY Missing: {m:?}");
    // CD: the client validates for itself, so it gets the bogus data, as from Unbound
    for server in [ours, unbound] {
        let m = ask_with(server, "www.bad.test.", RecordType::A, true).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "CD via {server}"
        );
        assert!(!m.metadata.authentic_data && !m.answers.is_empty(), "{m:?}");
    }
    let m = ask(ours, "www.shop.test.", RecordType::A).await;
    assert!(m.metadata.authentic_data, "secure from the cache too");
    // a DO client gets the signatures and proofs: Unbound forwarding to hopline's
    // resolver validates through it
    let conf = format!(
        "server:\n  interface: {i}\n  port: 53\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  module-config: \"validator iterator\"\n  trust-anchor: \"{anchor}\"\n  do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n  access-control: 127.0.0.0/8 allow\n  num-threads: 1\n  outgoing-interface: {i}\nforward-zone:\n  name: \".\"\n  forward-addr: {ours}@53\n",
        i = ip(net, 55),
        d = dir.path().display(),
        ours = ip(net, 54)
    );
    std::fs::write(dir.path().join("forwarding.conf"), conf).unwrap();
    let _forwarding = Proc(
        Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(dir.path().join("forwarding.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let forwarding: SocketAddr = format!("{}:53", ip(net, 55)).parse().unwrap();
    hopline_testkit::wait_udp(forwarding);
    for (name, rtype, rcode) in [
        ("www.shop.test.", RecordType::A, ResponseCode::NoError),
        ("api.shop.test.", RecordType::A, ResponseCode::NoError),
        ("nope.shop.test.", RecordType::A, ResponseCode::NXDomain),
        ("www.shop.test.", RecordType::TXT, ResponseCode::NoError),
        ("a.wild.test.", RecordType::TXT, ResponseCode::NoError),
    ] {
        let m = ask(forwarding, name, rtype).await;
        assert_eq!(
            (m.metadata.response_code, m.metadata.authentic_data),
            (rcode, true),
            "Unbound validating through hopline's answers: {name} {rtype}"
        );
    }
    // a stub forwarding to a validating resolver learns the verdict from AD (`visit`)
    for (upstream, name, security) in [
        (ours, "www.shop.test", hopline_dns::Security::Secure),
        (unbound, "www.shop.test", hopline_dns::Security::Secure),
        (ours, "www.plain.test", hopline_dns::Security::Unchecked),
    ] {
        let stub = hopline_dns::Resolver::builder()
            .no_hosts_file()
            .forward(vec![upstream])
            .build()
            .unwrap();
        let l = stub.lookup_ip(name).await.unwrap();
        assert_eq!(l.security, security, "{name} through {upstream}");
    }
}

/// NSEC3 as `test.` proves denial: opt-out (its unsigned delegation `plain.test.` out of
/// the chain); and `shop.test.`: a salt and two extra iterations.
const TEST_NSEC3: &str = r#", denial = "nsec3", nsec3 = { opt_out = true }"#;
const SHOP_NSEC3: &str = r#", denial = "nsec3", nsec3 = { salt = "beef", iterations = 2 }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldns_verify_zone_accepts_each_signed_zone_as_transferred() {
    if !installed("ldns-verify-zone", "ldnsutils") || !installed("dig", "dnsutils") {
        return;
    }
    for (net, test_how, shop_how) in [(85, "", ""), (97, TEST_NSEC3, SHOP_NSEC3)] {
        verify_transferred(net, test_how, shop_how).await;
    }
}

async fn verify_transferred(net: u8, test_how: &str, shop_how: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = hierarchy_denial(dir.path(), net, test_how, shop_how);
    let _dns = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let nsec3 = !test_how.is_empty();
    for (zone, h) in [(".", 11), ("test.", 12), ("shop.test.", 13)] {
        let out = Command::new("dig")
            .args([
                &format!("@{}", ip(net, h)),
                zone,
                "AXFR",
                "+nocmd",
                "+nostats",
                "+nocomments",
                "+time=3",
                "+tries=1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("RRSIG") && text.contains("NSEC"),
            "{zone}: {text}"
        );
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if nsec3 && zone != "." {
            assert!(
                flat.contains(" IN NSEC3 1 ")
                    && flat.contains(" IN NSEC3PARAM 1 0 ")
                    && !flat.contains(" IN NSEC "),
                "{zone}: {text}"
            );
        }
        if nsec3 && zone == "test." {
            // opt-out: the flag set in every NSEC3
            assert!(
                flat.contains(" IN NSEC3 1 1 0 - ") && !flat.contains(" IN NSEC3 1 0 "),
                "{zone}: {text}"
            );
        }
        if nsec3 && zone == "shop.test." {
            assert!(flat.contains(" IN NSEC3 1 0 2 BEEF "), "{zone}: {text}");
        }
        let file = dir.path().join(format!("axfr-{h}.zone"));
        // the transfer ends with the SOA again: a zone file holds it once
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines.pop();
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let v = Command::new("ldns-verify-zone")
            .arg("-V")
            .arg("2")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "{zone}: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        // and it would say so if a record were not the one signed
        let tampered = std::fs::read_to_string(&file).unwrap().replacen(
            &format!("\tA\t{}", ip(net, h)),
            "\tA\t10.66.66.66",
            1,
        );
        std::fs::write(&file, tampered).unwrap();
        let v = Command::new("ldns-verify-zone")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!v.status.success(), "{zone}: a changed A record passes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_validates_the_nsec3_proofs_hopline_makes() {
    if !installed("unbound", "unbound") || !installed("kresd", "knot-resolver") {
        return;
    }
    let (dir, net) = (tempfile::tempdir().unwrap(), 96);
    let cfg = hierarchy_denial(dir.path(), net, TEST_NSEC3, SHOP_NSEC3);
    let _dns = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let anchor = root_anchor(dir.path());
    let (_unbound, unbound) = validating_unbound(dir.path(), net, &anchor);
    std::fs::write(dir.path().join("root.key"), &anchor).unwrap();
    let resolver_cfg: DnsConfig = toml::from_str(&format!(
        "[[resolver]]\nlisten = \"{}:53\"\nroot_hints = \"root.hints\"\nhosts_file = \"\"\ntrust_anchor = \"root.key\"\n",
        ip(net, 54)
    ))
    .unwrap();
    let _ours = DnsServices::start(&resolver_cfg, dir.path()).await.unwrap();
    let ours: SocketAddr = format!("{}:53", ip(net, 54)).parse().unwrap();
    let (_kresd, kresd) = validating_kresd(dir.path(), net, &anchor);
    // (name, type, rcode, AD) as a validating resolver must see them. In the opt-out
    // zone `test.` a name that is not there cannot be proven absent securely (the
    // covering NSEC3 may hide an unsigned delegation): NXDOMAIN without AD, as RFC 5155
    // §9.2 says; what is in the chain is proven.
    let cases: &[(&str, RecordType, ResponseCode, bool)] = &[
        ("www.shop.test.", RecordType::A, ResponseCode::NoError, true),
        (
            "nope.shop.test.",
            RecordType::A,
            ResponseCode::NXDomain,
            true,
        ),
        (
            "a.b.nope.shop.test.",
            RecordType::A,
            ResponseCode::NXDomain,
            true,
        ),
        (
            "www.shop.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            true,
        ),
        (
            "gone.shop.test.",
            RecordType::A,
            ResponseCode::NXDomain,
            true,
        ),
        (
            "pool.shop.test.",
            RecordType::A,
            ResponseCode::NoError,
            true,
        ),
        (
            "pool.shop.test.",
            RecordType::AAAA,
            ResponseCode::NoError,
            true,
        ),
        ("ent.test.", RecordType::A, ResponseCode::NoError, true),
        ("test.", RecordType::TXT, ResponseCode::NoError, true),
        ("shop.test.", RecordType::DS, ResponseCode::NoError, true),
        ("nope.test.", RecordType::A, ResponseCode::NXDomain, false),
        (
            "a.wild.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            false,
        ),
        ("a.wild.test.", RecordType::A, ResponseCode::NoError, false),
        ("plain.test.", RecordType::DS, ResponseCode::NoError, false),
        (
            "www.plain.test.",
            RecordType::A,
            ResponseCode::NoError,
            false,
        ),
        (
            "www.bad.test.",
            RecordType::A,
            ResponseCode::ServFail,
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for &(name, rtype, rcode, ad) in cases {
        for (who, server) in [("unbound", unbound), ("kresd", kresd), ("hopline", ours)] {
            let m = ask(server, name, rtype).await;
            let got = (m.metadata.response_code, m.metadata.authentic_data);
            if got != (rcode, ad) {
                wrong.push(format!(
                    "{who}: {name} {rtype}: expected {rcode} AD={ad}, got {} AD={}",
                    got.0, got.1
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // what the authoritative server sends: NSEC3 only, hashed owners not answered as names
    let m = ask(
        format!("{}:53", ip(net, 13)).parse().unwrap(),
        "nope.shop.test.",
        RecordType::A,
    )
    .await;
    let n3: Vec<&Record> = m
        .authorities
        .iter()
        .filter(|r| r.record_type() == RecordType::NSEC3)
        .collect();
    assert!(
        (2..=3).contains(&n3.len())
            && !m
                .authorities
                .iter()
                .any(|r| r.record_type() == RecordType::NSEC),
        "closest encloser, next closer, wildcard: {m:?}"
    );
    let hashed = n3[0].name.to_ascii();
    let m = ask(
        format!("{}:53", ip(net, 13)).parse().unwrap(),
        &hashed,
        RecordType::NSEC3,
    )
    .await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "{hashed}: {m:?}"
    );
}

/// The root zone (delegating `test.` to 127.0.NET.12) and root hints (127.0.NET.11).
fn write_root(d: &Path, net: u8) {
    let ip = |h| ip(net, h);
    std::fs::write(
        d.join("root.zone"),
        format!(
            "$ORIGIN .\n$TTL 86400\n@ IN SOA a.root. admin.root. 1 3600 600 86400 300\n@ IN NS a.root.\na.root. IN A {}\ntest. 172800 IN NS ns1.test.\nns1.test. 172800 IN A {}\n",
            ip(11),
            ip(12)
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("root.hints"),
        format!(". 3600000 NS a.root.\na.root. 3600000 A {}\n", ip(11)),
    )
    .unwrap();
}

/// A config serving the signed root on 127.0.NET.11 and `test.` on .12 (zone files
/// `root.zone`, `test.zone`) and a resolver on .54 validating from `root.key` (written from
/// the root's keys at start when not there).
fn signed_root_test_and_resolver(net: u8) -> DnsConfig {
    toml::from_str(&format!(
        "[[authoritative]]\nlisten = \"{}:53\"\nzones = [{{ file = \"root.zone\", dnssec = {{}} }}]\n[[authoritative]]\nlisten = \"{}:53\"\nzones = [{{ file = \"test.zone\", dnssec = {{}} }}]\n[[resolver]]\nlisten = \"{}:53\"\nroot_hints = \"root.hints\"\nhosts_file = \"\"\ntrust_anchor = \"root.key\"\n",
        ip(net, 11),
        ip(net, 12),
        ip(net, 54)
    ))
    .unwrap()
}

/// `ldns-keygen` a KSK and a ZSK for `zone` in `dir`, `ldns-signzone` its `file` with
/// `options` (e.g. `-n` for NSEC3) into `file.signed`; answers the DS line of the KSK.
fn ldns_sign(dir: &Path, zone: &str, file: &str, options: &[&str]) -> String {
    let keygen = |ksk: bool| {
        let mut c = Command::new("ldns-keygen");
        c.current_dir(dir).args(["-a", "ECDSAP256SHA256"]);
        if ksk {
            c.arg("-k");
        }
        let out = c.arg(zone).output().unwrap();
        assert!(out.status.success(), "ldns-keygen: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (ksk, zsk) = (keygen(true), keygen(false));
    let out = Command::new("ldns-signzone")
        .current_dir(dir)
        .args(options)
        .args(["-f", &format!("{file}.signed"), file, &ksk, &zsk])
        .output()
        .unwrap();
    assert!(out.status.success(), "ldns-signzone: {out:?}");
    std::fs::read_to_string(dir.join(format!("{ksk}.ds")))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsec3_zones_signed_by_ldns_validate_as_in_unbound() {
    if !installed("unbound", "unbound")
        || !installed("nsd", "nsd")
        || !installed("ldns-signzone", "ldnsutils")
    {
        return;
    }
    let (dir, net) = (tempfile::tempdir().unwrap(), 87);
    let d = dir.path();
    let ip = |h| ip(net, h);
    std::fs::write(
        d.join("nsec3.test.zone"),
        format!(
            "$ORIGIN nsec3.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {}\nwww IN A 10.3.0.1\n*.wild IN TXT \"w\"\nhost.ent IN A 10.3.0.2\n",
            ip(13)
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("optout.test.zone"),
        format!(
            "$ORIGIN optout.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {}\nwww IN A 10.4.0.1\nchild IN NS ns1.child\nns1.child IN A {}\n",
            ip(14),
            ip(16)
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("child.optout.test.zone"),
        format!(
            "$ORIGIN child.optout.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {}\nwww IN A 10.5.0.1\n",
            ip(16)
        ),
    )
    .unwrap();
    let ds_nsec3 = ldns_sign(d, "nsec3.test.", "nsec3.test.zone", &["-n", "-t", "0"]);
    let ds_optout = ldns_sign(
        d,
        "optout.test.",
        "optout.test.zone",
        &["-n", "-t", "0", "-p"],
    );
    let _nsd = [
        hopline_testkit::nsd(d, &ip(13), 53, "nsec3.test.", "nsec3.test.zone.signed"),
        hopline_testkit::nsd(d, &ip(14), 53, "optout.test.", "optout.test.zone.signed"),
        hopline_testkit::nsd(
            d,
            &ip(16),
            53,
            "child.optout.test.",
            "child.optout.test.zone",
        ),
    ];
    write_root(d, net);
    std::fs::write(
        d.join("test.zone"),
        format!(
            "$ORIGIN test.\n$TTL 3600\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\n@ IN NS ns1.test.\nns1 IN A {}\nnsec3 IN NS ns1.nsec3.test.\nns1.nsec3 IN A {}\n{ds_nsec3}\noptout IN NS ns1.optout.test.\nns1.optout IN A {}\n{ds_optout}\n",
            ip(12),
            ip(13),
            ip(14)
        ),
    )
    .unwrap();
    let _dns = DnsServices::start(&signed_root_test_and_resolver(net), d)
        .await
        .unwrap();
    let (_unbound, unbound) = validating_unbound(d, net, &root_anchor(d));
    let ours: SocketAddr = format!("{}:53", ip(54)).parse().unwrap();

    // (name, type, rcode, AD): what a validator must say; hopline must also say what
    // Unbound says
    let cases: &[(&str, RecordType, ResponseCode, bool)] = &[
        (
            "www.nsec3.test.",
            RecordType::A,
            ResponseCode::NoError,
            true,
        ),
        (
            "nope.nsec3.test.",
            RecordType::A,
            ResponseCode::NXDomain,
            true,
        ),
        (
            "www.nsec3.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            true,
        ),
        (
            "a.wild.nsec3.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            true,
        ),
        (
            "a.wild.nsec3.test.",
            RecordType::A,
            ResponseCode::NoError,
            true,
        ),
        (
            "ent.nsec3.test.",
            RecordType::A,
            ResponseCode::NoError,
            true,
        ),
        (
            "www.optout.test.",
            RecordType::A,
            ResponseCode::NoError,
            true,
        ),
        // an unsigned child under an opt-out span: insecure
        (
            "www.child.optout.test.",
            RecordType::A,
            ResponseCode::NoError,
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for &(name, rtype, rcode, ad) in cases {
        let u = ask(unbound, name, rtype).await;
        let o = ask(ours, name, rtype).await;
        let (u, o) = (
            (u.metadata.response_code, u.metadata.authentic_data),
            (o.metadata.response_code, o.metadata.authentic_data),
        );
        if u != (rcode, ad) || o != u {
            wrong.push(format!(
                "{name} {rtype}: expected {rcode} AD={ad}; unbound {} AD={}, hopline {} AD={}",
                u.0, u.1, o.0, o.1
            ));
        }
    }
    // NXDOMAIN under an opt-out span: whatever Unbound says
    for (name, rtype) in [("nope.optout.test.", RecordType::A)] {
        let u = ask(unbound, name, rtype).await;
        let o = ask(ours, name, rtype).await;
        let (u, o) = (
            (u.metadata.response_code, u.metadata.authentic_data),
            (o.metadata.response_code, o.metadata.authentic_data),
        );
        if o != u {
            wrong.push(format!(
                "{name} {rtype}: unbound {} AD={}, hopline {} AD={}",
                u.0, u.1, o.0, o.1
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The DS lines (for the parent's zone file) of the key-signing keys `server` publishes
/// for `zone`.
async fn ds_of(server: SocketAddr, zone: &str) -> String {
    use hickory_proto::dnssec::rdata::{DNSSECRData, DS};
    use hickory_proto::rr::RData;
    let m = ask(server, zone, RecordType::DNSKEY).await;
    let name = Name::from_ascii(zone).unwrap();
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) if k.flags() & 1 == 1 => Some(k),
            _ => None,
        })
        .map(|k| {
            let digest = k
                .to_digest(&name, hickory_proto::dnssec::DigestType::SHA256)
                .unwrap();
            let ds = DS::new(
                k.calculate_key_tag().unwrap(),
                hickory_proto::dnssec::PublicKey::algorithm(k.public_key()),
                hickory_proto::dnssec::DigestType::SHA256,
                digest.as_ref().to_vec(),
            );
            format!("{zone} 3600 IN DS {ds}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_knot_signs_validate_as_in_unbound() {
    if !installed("unbound", "unbound") || !installed("knotd", "knot") {
        return;
    }
    let (dir, net) = (tempfile::tempdir().unwrap(), 88);
    let d = dir.path();
    let ip = |h| ip(net, h);
    // Knot: knot.test. signed at load (NSEC), online.test. signed per answer
    // (mod-onlinesign: NXDOMAIN answered as NODATA with a minimal NSEC, "black lies")
    for (zone, h) in [("knot.test.", 15), ("online.test.", 16)] {
        std::fs::write(
            d.join(format!("{zone}zone")),
            format!(
                "$ORIGIN {zone}\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {}\nwww IN A 10.6.0.1\n*.wild IN TXT \"w\"\n",
                ip(h)
            ),
        )
        .unwrap();
    }
    std::fs::create_dir_all(d.join("knot")).unwrap();
    std::fs::write(
        d.join("knot/knot.conf"),
        format!(
            "server:\n    rundir: \"{k}\"\n    listen: [ {a}@53, {b}@53 ]\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\ndatabase:\n    storage: \"{k}\"\nlog:\n  - target: stderr\n    any: error\npolicy:\n  - id: auto\n    algorithm: ecdsap256sha256\n  - id: online\n    algorithm: ecdsap256sha256\n    single-type-signing: on\nmod-onlinesign:\n  - id: sign\n    policy: online\nzone:\n  - domain: knot.test.\n    storage: \"{d}\"\n    file: \"knot.test.zone\"\n    dnssec-signing: on\n    dnssec-policy: auto\n  - domain: online.test.\n    storage: \"{d}\"\n    file: \"online.test.zone\"\n    module: mod-onlinesign/sign\n",
            k = d.join("knot").display(),
            d = d.display(),
            a = ip(15),
            b = ip(16)
        ),
    )
    .unwrap();
    let _knot = Proc(
        Command::new("knotd")
            .arg("-c")
            .arg(d.join("knot/knot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let knot: SocketAddr = format!("{}:53", ip(15)).parse().unwrap();
    let online: SocketAddr = format!("{}:53", ip(16)).parse().unwrap();
    hopline_testkit::wait_udp(knot);
    hopline_testkit::wait_udp(online);
    // the keys are made as the zones load: wait for the DNSKEYs
    let mut ds = (String::new(), String::new());
    for _ in 0..50 {
        ds = (
            ds_of(knot, "knot.test.").await,
            ds_of(online, "online.test.").await,
        );
        if !ds.0.is_empty() && !ds.1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !ds.0.is_empty() && !ds.1.is_empty(),
        "Knot published no KSK: {ds:?}"
    );
    write_root(d, net);
    std::fs::write(
        d.join("test.zone"),
        format!(
            "$ORIGIN test.\n$TTL 3600\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\n@ IN NS ns1.test.\nns1 IN A {}\nknot IN NS ns1.knot.test.\nns1.knot IN A {}\n{}\nonline IN NS ns1.online.test.\nns1.online IN A {}\n{}\n",
            ip(12),
            ip(15),
            ds.0,
            ip(16),
            ds.1
        ),
    )
    .unwrap();
    // one config serves the signed root and test. and resolves: the resolver's anchor
    // (root.key, not there yet) is written from the root's keys at start
    let cfg = signed_root_test_and_resolver(net);
    let _dns = DnsServices::start(&cfg, d).await.unwrap();
    let anchor = root_anchor(d);
    assert_eq!(
        std::fs::read_to_string(d.join("root.key")).unwrap().trim(),
        anchor.replace(". DS", ". 3600 IN DS").trim(),
        "the anchor written at start is the root's DS"
    );
    let ours: SocketAddr = format!("{}:53", ip(54)).parse().unwrap();
    let (_unbound, unbound) = validating_unbound(d, net, &anchor);

    let cases: &[(&str, RecordType, bool)] = &[
        ("www.knot.test.", RecordType::A, true),
        ("nope.knot.test.", RecordType::A, true),
        ("www.knot.test.", RecordType::TXT, true),
        ("a.wild.knot.test.", RecordType::TXT, true),
        ("www.online.test.", RecordType::A, true),
        ("nope.online.test.", RecordType::A, true),
        ("www.online.test.", RecordType::TXT, true),
        ("a.wild.online.test.", RecordType::TXT, true),
    ];
    let mut wrong = Vec::new();
    for &(name, rtype, ad) in cases {
        let u = ask(unbound, name, rtype).await;
        let o = ask(ours, name, rtype).await;
        let (u, o) = (
            (u.metadata.response_code, u.metadata.authentic_data),
            (o.metadata.response_code, o.metadata.authentic_data),
        );
        if u.1 != ad || o != u {
            wrong.push(format!(
                "{name} {rtype}: expected AD={ad}; unbound {} AD={}, hopline {} AD={}",
                u.0, u.1, o.0, o.1
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The Extended DNS Error codes of an answer.
fn ede_codes(m: &Message) -> Vec<u16> {
    m.edns
        .as_ref()
        .map(|e| {
            e.options()
                .as_ref()
                .iter()
                .filter_map(|(code, o)| {
                    let b = Vec::<u8>::try_from(o).ok()?;
                    (u16::from(*code) == 15 && b.len() >= 2)
                        .then(|| u16::from_be_bytes([b[0], b[1]]))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_answers_fail_as_in_unbound_with_the_same_extended_errors() {
    if !installed("unbound", "unbound")
        || !installed("kresd", "knot-resolver")
        || !installed("nsd", "nsd")
        || !installed("ldns-signzone", "ldnsutils")
    {
        return;
    }
    let (dir, net) = (tempfile::tempdir().unwrap(), 89);
    let d = dir.path();
    let ip = |h| ip(net, h);
    // five children of test., each broken one way, served by NSD
    let zones = [
        ("expired", 13),
        ("notyet", 14),
        ("badsig", 15),
        ("nodnskey", 16),
        ("nonsec", 17),
    ];
    let mut delegations = String::new();
    let mut nsd = Vec::new();
    for (label, h) in zones {
        let zone = format!("{label}.test.");
        let file = format!("{label}.zone");
        std::fs::write(
            d.join(&file),
            format!(
                "$ORIGIN {zone}\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {}\nwww IN A 10.7.0.1\n",
                ip(h)
            ),
        )
        .unwrap();
        let options: &[&str] = match label {
            "expired" => &["-i", "20191201000000", "-e", "20200101000000"],
            "notyet" => &["-i", "20400101000000", "-e", "20410101000000"],
            _ => &[],
        };
        let ds = ldns_sign(d, &zone, &file, options);
        let signed = std::fs::read_to_string(d.join(format!("{file}.signed"))).unwrap();
        let served = match label {
            // a record changed after signing
            "badsig" => signed.replace("10.7.0.1", "10.7.0.66"),
            // the DS is at the parent, the zone is served unsigned
            "nodnskey" => std::fs::read_to_string(d.join(&file)).unwrap(),
            // every NSEC gone
            "nonsec" => {
                signed
                    .lines()
                    .filter(|l| !l.contains("\tNSEC\t") && !l.contains("RRSIG\tNSEC "))
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n"
            }
            _ => signed,
        };
        std::fs::write(d.join(format!("{file}.served")), served).unwrap();
        nsd.push(hopline_testkit::nsd(
            d,
            &ip(h),
            53,
            &zone,
            &format!("{file}.served"),
        ));
        delegations.push_str(&format!(
            "{label} IN NS ns1.{label}.test.\nns1.{label} IN A {}\n{}\n",
            ip(h),
            ds.trim()
        ));
    }
    write_root(d, net);
    std::fs::write(
        d.join("test.zone"),
        format!(
            "$ORIGIN test.\n$TTL 3600\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\n@ IN NS ns1.test.\nns1 IN A {}\n{delegations}",
            ip(12)
        ),
    )
    .unwrap();
    let cfg = signed_root_test_and_resolver(net);
    let _dns = DnsServices::start(&cfg, d).await.unwrap();
    let anchor = root_anchor(d);
    let (_unbound, unbound) = validating_unbound(d, net, &anchor);
    let (_kresd, kresd) = validating_kresd(d, net, &anchor);
    let ours: SocketAddr = format!("{}:53", ip(54)).parse().unwrap();

    // (question, the EDE hopline and Unbound give, the one Knot Resolver gives). They
    // differ once: a zone served unsigned under a DS is "DNSKEY Missing" (9) to Unbound
    // and hopline, "NSEC Missing" (12) to Knot Resolver, whose DNSKEY question got a
    // NODATA without proof
    let cases: &[(&str, RecordType, u16, u16)] = &[
        ("www.expired.test.", RecordType::A, 7, 7),
        ("www.notyet.test.", RecordType::A, 8, 8),
        ("www.badsig.test.", RecordType::A, 6, 6),
        ("www.nodnskey.test.", RecordType::A, 9, 12),
        ("nope.nonsec.test.", RecordType::A, 12, 12),
    ];
    let mut wrong = Vec::new();
    for &(name, rtype, code, kresd_code) in cases {
        let u = ask(unbound, name, rtype).await;
        let k = ask(kresd, name, rtype).await;
        let o = ask(ours, name, rtype).await;
        let (ue, ke, oe) = (ede_codes(&u), ede_codes(&k), ede_codes(&o));
        if u.metadata.response_code != ResponseCode::ServFail
            || k.metadata.response_code != ResponseCode::ServFail
            || o.metadata.response_code != ResponseCode::ServFail
            || oe != vec![code]
            || ue != oe
            || ke != vec![kresd_code]
        {
            wrong.push(format!(
                "{name} {rtype}: unbound {} EDE {ue:?}, kresd {} EDE {ke:?}, hopline {} EDE {oe:?} (expected SERVFAIL, EDE {code})",
                u.metadata.response_code, k.metadata.response_code, o.metadata.response_code
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsviz_finds_no_error_in_the_chain_hopline_signs() {
    if !installed("dnsviz", "dnsviz") || !installed("dig", "dnsutils") {
        return;
    }
    for (net, test_how, shop_how) in [(92, "", ""), (98, TEST_NSEC3, SHOP_NSEC3)] {
        dnsviz_check(net, test_how, shop_how).await;
    }
}

/// dnsviz probes the hierarchy (denial as `test_how`, `shop_how` say) and finds nothing
/// wrong from the root's keys, and an error from a wrong anchor.
async fn dnsviz_check(net: u8, test_how: &str, shop_how: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = hierarchy_denial(d, net, test_how, shop_how);
    let _dns = DnsServices::start(&cfg, d).await.unwrap();
    let servers = [
        format!(".:a.root.={}", ip(net, 11)),
        format!("test:ns1.test.={}", ip(net, 12)),
        format!("shop.test:ns1.shop.test.={}", ip(net, 13)),
    ];
    let mut probe = Command::new("dnsviz");
    probe.current_dir(d).args(["probe", "-A", "-a", "."]);
    for s in &servers {
        probe.args(["-x", s]);
    }
    let out = probe
        .args([
            "-o",
            "probe.json",
            "shop.test",
            "www.shop.test",
            "a.wild.test",
            "ent.test",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "dnsviz probe: {out:?}");
    // the root's DNSKEY RRset as dnsviz takes a trust anchor; and a wrong one, the control
    let dnskey = |zone: &str, h: u8| {
        let out = Command::new("dig")
            .args([
                &format!("@{}", ip(net, h)),
                zone,
                "DNSKEY",
                "+noall",
                "+answer",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::fs::write(d.join("root.dnskey"), dnskey(".", 11)).unwrap();
    std::fs::write(
        d.join("wrong.dnskey"),
        dnskey("test.", 12).replace("test.\t", ".\t"),
    )
    .unwrap();
    let print = |anchor: &str| {
        let out = Command::new("dnsviz")
            .current_dir(d)
            .args(["print", "-t", anchor, "-r", "probe.json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "dnsviz print: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let report = print("root.dnskey");
    // under an opt-out span a wildcard's NODATA is insecure ([-]), as Unbound says too:
    // the name could be an unsigned delegation; everything in the proof verifies ([.])
    let opt_out = test_how.contains("opt_out = true");
    let flagged: Vec<&str> = report
        .lines()
        .filter(|l| !(opt_out && (l.trim() == "[-]  A: NODATA" || l.trim() == "[-]  AAAA: NODATA")))
        .filter(|l| {
            l.contains("[!]")
                || l.contains("[?]")
                || l.contains("[-")
                || l.trim_start().starts_with("E:")
                || l.trim_start().starts_with("W:")
        })
        .collect();
    assert!(
        report.contains("[.]") && flagged.is_empty(),
        "dnsviz flags ({test_how} {shop_how}): {flagged:#?}\n{report}"
    );
    assert!(
        print("wrong.dnskey").contains("E:"),
        "the control: a wrong anchor is an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsd_as_a_secondary_serves_the_zone_hopline_signs() {
    if !installed("nsd", "nsd") {
        return;
    }
    let (dir, net) = (tempfile::tempdir().unwrap(), 93);
    let d = dir.path();
    let ip = |h| ip(net, h);
    std::fs::write(
        d.join("shop.zone"),
        format!(
            "$ORIGIN shop.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A {}\nwww IN A 10.0.0.1\n",
            ip(1)
        ),
    )
    .unwrap();
    let cfg: DnsConfig = toml::from_str(&format!(
        "[[authoritative]]\nlisten = \"{}:53\"\nzones = [{{ file = \"shop.zone\", dnssec = {{}} }}]\ntransfer = [\"{}\"]\n",
        ip(1),
        ip(2)
    ))
    .unwrap();
    let _primary = DnsServices::start(&cfg, d).await.unwrap();
    let sub = d.join("nsd");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        sub.join("nsd.conf"),
        format!(
            "server:\n  ip-address: {sec}\n  port: 53\n  username: \"\"\n  database: \"\"\n  zonelistfile: \"{s}/zone.list\"\n  xfrdfile: \"{s}/xfrd.state\"\n  xfrdir: \"{s}\"\n  pidfile: \"{s}/nsd.pid\"\n  logfile: \"{s}/nsd.log\"\n  zonesdir: \"{s}\"\n  rrl-ratelimit: 0\n  server-count: 1\nremote-control:\n  control-enable: no\nzone:\n  name: \"shop.test.\"\n  zonefile: \"shop.secondary\"\n  request-xfr: AXFR {primary}@53 NOKEY\n  outgoing-interface: {sec}\n",
            sec = ip(2),
            primary = ip(1),
            s = sub.display(),
        ),
    )
    .unwrap();
    let _nsd = Proc(
        Command::new("nsd")
            .arg("-d")
            .arg("-c")
            .arg(sub.join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let secondary: SocketAddr = format!("{}:53", ip(2)).parse().unwrap();
    let primary: SocketAddr = format!("{}:53", ip(1)).parse().unwrap();
    hopline_testkit::wait_udp(secondary);
    let rrsigs = |m: &Message| -> Vec<String> {
        // (NSD adds the apex NS and its RRSIG to the authority section: an extra)
        let mut v: Vec<String> = m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::RRSIG)
            .map(|r| r.data.to_string())
            .collect();
        v.sort();
        v
    };
    let mut served = None;
    for _ in 0..100 {
        let m = ask(secondary, "www.shop.test.", RecordType::A).await;
        if m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty() {
            served = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.unwrap_or_else(|| {
        panic!(
            "NSD never transferred the signed zone: {}",
            std::fs::read_to_string(sub.join("nsd.log")).unwrap_or_default()
        )
    });
    // the secondary serves the primary's signatures, and its NSEC proofs
    let at_primary = ask(primary, "www.shop.test.", RecordType::A).await;
    assert!(!rrsigs(&served).is_empty(), "{served:?}");
    assert_eq!(rrsigs(&served), rrsigs(&at_primary));
    let nx = ask(secondary, "nope.shop.test.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        nx.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::NSEC),
        "{nx:?}"
    );
    let keys = ask(secondary, "shop.test.", RecordType::DNSKEY).await;
    assert_eq!(
        keys.answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DNSKEY)
            .count(),
        2,
        "KSK and ZSK: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rollovers_keep_a_caching_resolver_validating_and_a_hurried_one_does_not() {
    let (dir, net) = (tempfile::tempdir().unwrap(), 94);
    let d = dir.path();
    let ip = |h| ip(net, h);
    write_root(d, net);
    std::fs::write(
        d.join("test.zone"),
        format!(
            "$ORIGIN test.\n$TTL 3600\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\n@ IN NS ns1.test.\nns1 IN A {}\nshop IN NS ns1.shop.test.\nns1.shop IN A {}\n",
            ip(12),
            ip(13)
        ),
    )
    .unwrap();
    // shop.test.'s DNSKEY RRset lives 2 s in caches (its TTL is the SOA's)
    let mut names = String::new();
    for i in 1..=8 {
        names.push_str(&format!("n{i} IN A 10.8.0.{i}\n"));
    }
    std::fs::write(
        d.join("shop.zone"),
        format!(
            "$ORIGIN shop.test.\n$TTL 2\n@ IN SOA ns1 admin 1 3600 600 86400 2\n@ IN NS ns1\nns1 IN A {}\n{names}",
            ip(13)
        ),
    )
    .unwrap();
    let cfg: DnsConfig = toml::from_str(&format!(
        "[[authoritative]]\nlisten = \"{}:53\"\nzones = [{{ file = \"root.zone\", dnssec = {{}} }}]\n[[authoritative]]\nlisten = \"{}:53\"\nzones = [{{ file = \"test.zone\", dnssec = {{}} }}]\n[[authoritative]]\nlisten = \"{}:53\"\nzones = [{{ file = \"shop.zone\", dnssec = {{}} }}]\n[[resolver]]\nlisten = \"{}:53\"\nroot_hints = \"root.hints\"\nhosts_file = \"\"\ntrust_anchor = \"root.key\"\n",
        ip(11),
        ip(12),
        ip(13),
        ip(54)
    ))
    .unwrap();
    let dns = DnsServices::start(&cfg, d).await.unwrap();
    let ours: SocketAddr = format!("{}:53", ip(54)).parse().unwrap();
    let keys = d.join("keys");
    let shop = Name::from_ascii("shop.test.").unwrap();
    use hopline_dns::dnssec::keys::{Role, ZoneKeys};
    let verdict = |name: &'static str| async move {
        let m = ask(ours, name, RecordType::A).await;
        (m.metadata.response_code, m.metadata.authentic_data)
    };
    let secure = (ResponseCode::NoError, true);
    let roll = |role| {
        ZoneKeys::roll(&keys, &shop, role).unwrap();
        dns.reload(&cfg, d).unwrap();
    };
    let wait_ttl = || tokio::time::sleep(Duration::from_millis(2500));

    assert_eq!(verdict("n1.shop.test.").await, secure);
    // hurried: the new ZSK signs before resolvers could learn it; a resolver holding the
    // old DNSKEY RRset finds the new signatures bogus until that RRset expires
    ZoneKeys::roll(&keys, &shop, Role::Zsk).unwrap();
    roll(Role::Zsk);
    assert_eq!(
        verdict("n2.shop.test.").await,
        (ResponseCode::ServFail, false),
        "a ZSK that signs unannounced"
    );
    wait_ttl().await;
    assert_eq!(
        verdict("n2.shop.test.").await,
        secure,
        "once the keys expire"
    );
    roll(Role::Zsk); // step 3: the old ZSK leaves
    wait_ttl().await;

    // by the book: pre-publish, wait the DNSKEY TTL, then sign with it
    roll(Role::Zsk);
    wait_ttl().await;
    assert_eq!(verdict("n3.shop.test.").await, secure);
    roll(Role::Zsk);
    assert_eq!(
        verdict("n4.shop.test.").await,
        secure,
        "signed by the new ZSK"
    );
    wait_ttl().await;
    roll(Role::Zsk);
    assert_eq!(verdict("n5.shop.test.").await, secure);

    // KSK, double DS: the parent (served here) takes the new DS at each reload
    roll(Role::Ksk);
    wait_ttl().await;
    assert_eq!(
        verdict("n6.shop.test.").await,
        secure,
        "two DS, the old KSK"
    );
    roll(Role::Ksk);
    wait_ttl().await;
    assert_eq!(
        verdict("n7.shop.test.").await,
        secure,
        "two DS, the new KSK"
    );
    roll(Role::Ksk);
    wait_ttl().await;
    assert_eq!(verdict("n8.shop.test.").await, secure, "the new DS alone");
    let now = ZoneKeys::load(&keys, &shop).unwrap().unwrap();
    assert_eq!(now.ds_records(3600).len(), 1);
    assert_eq!(now.dnskey_records(2).len(), 2, "one KSK, one ZSK: {now:?}");
}

/// A lookup and every step it took (an answer keeps them in its `steps`).
async fn traced(
    r: &hopline_dns::Resolver,
    name: &str,
    rtype: RecordType,
) -> (
    Result<hopline_dns::Lookup, hopline_dns::ResolveError>,
    Vec<hopline_dns::TraceStep>,
) {
    let (res, steps) = r.lookup_traced(name, rtype).await;
    let steps = match &res {
        Ok(l) => l.steps.clone(),
        Err(_) => steps,
    };
    (res, steps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggressive_nsec_answers_what_validated_nsec_records_prove_absent() {
    let (dir, net) = (tempfile::tempdir().unwrap(), 76);
    let cfg = hierarchy(dir.path(), net);
    let _dns = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let anchors = hopline_dns::dnssec::validate::parse_anchors(&root_anchor(dir.path())).unwrap();
    let resolver = |aggressive: bool| {
        hopline_dns::Resolver::builder()
            .no_hosts_file()
            .recursive(hopline_dns::RootHints::from_file(&dir.path().join("root.hints")).unwrap())
            .query_port(53)
            .trust_anchors(anchors.clone())
            .aggressive_nsec(aggressive)
            .build()
            .unwrap()
    };
    // did the lookup ask a server, or answer from the NSEC records held?
    let asked = |steps: &[hopline_dns::TraceStep]| {
        steps
            .iter()
            .any(|s| s.kind != "cache" && s.kind != "dnssec")
    };
    let from_nsec = |steps: &[hopline_dns::TraceStep]| {
        steps
            .iter()
            .any(|s| s.kind == "cache" && s.detail.contains("RFC 8198"))
    };
    let r = resolver(true);
    let (res, steps) = traced(&r, "nope.shop.test.", RecordType::A).await;
    assert!(matches!(res, Err(hopline_dns::ResolveError::NxDomain { .. })) && asked(&steps));
    // another name of the same NSEC span (gone < nq < ns1): no question sent
    let (res, steps) = traced(&r, "nq.shop.test.", RecordType::A).await;
    assert!(
        matches!(res, Err(hopline_dns::ResolveError::NxDomain { .. })),
        "{res:?}"
    );
    assert!(!asked(&steps) && from_nsec(&steps), "{steps:#?}");
    // NODATA from the NSEC at a name
    let (res, _) = traced(&r, "www.shop.test.", RecordType::TXT).await;
    assert!(
        matches!(res, Err(hopline_dns::ResolveError::NoData { .. })),
        "{res:?}"
    );
    let (res, steps) = traced(&r, "www.shop.test.", RecordType::MX).await;
    assert!(
        matches!(res, Err(hopline_dns::ResolveError::NoData { .. })),
        "{res:?}"
    );
    assert!(!asked(&steps) && from_nsec(&steps), "{steps:#?}");
    // ...but never a type the NSEC says is there
    let (res, _) = traced(&r, "www.shop.test.", RecordType::A).await;
    assert_eq!(res.unwrap().records[0].data, "10.0.0.1");
    // a DO client gets the proof with the synthesized answer, and AD
    let q = {
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(
            Name::from_ascii("nop.shop.test.").unwrap(),
            RecordType::A,
        ));
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        q.set_edns(edns);
        q
    };
    let m = r.answer(&q).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authentic_data, "{m:?}");
    assert!(
        m.authorities
            .iter()
            .any(|a| a.record_type() == RecordType::NSEC)
            && m.authorities
                .iter()
                .any(|a| a.record_type() == RecordType::RRSIG),
        "{m:?}"
    );

    // a parent's NSEC span across a delegation proves nothing below the cut: test.'s
    // span shop.test. → *.wild.test. covers www.shop.test. in canonical order
    let r = resolver(true);
    let (res, _) = traced(&r, "shopx.test.", RecordType::A).await;
    assert!(
        matches!(res, Err(hopline_dns::ResolveError::NxDomain { .. })),
        "{res:?}"
    );
    let (res, steps) = traced(&r, "www.shop.test.", RecordType::A).await;
    assert!(res.is_ok() && asked(&steps), "{res:?} {steps:#?}");
    // an empty non-terminal is NODATA, not NXDOMAIN (the span ns1.bad.test. →
    // host.ent.test. covers ent.test. with its next name below it)
    let (res, _) = traced(&r, "cat.test.", RecordType::A).await;
    assert!(
        matches!(res, Err(hopline_dns::ResolveError::NxDomain { .. })),
        "{res:?}"
    );
    let (res, steps) = traced(&r, "ent.test.", RecordType::A).await;
    assert!(
        matches!(res, Err(hopline_dns::ResolveError::NoData { .. })) && from_nsec(&steps),
        "{res:?} {steps:#?}"
    );
    // a wildcard: the type it lacks is NODATA from the cache, the type it has is asked
    let (res, _) = traced(&r, "a.wild.test.", RecordType::A).await;
    assert!(
        matches!(res, Err(hopline_dns::ResolveError::NoData { .. })),
        "{res:?}"
    );
    let (res, steps) = traced(&r, "b.wild.test.", RecordType::TXT).await;
    assert!(res.is_ok() && asked(&steps), "{res:?} {steps:#?}");

    // a zone's own apex NSEC (no DS bit) says nothing of its DS, which is the parent's
    let r = resolver(true);
    let (res, _) = traced(&r, "nope.shop.test.", RecordType::A).await;
    assert!(matches!(
        res,
        Err(hopline_dns::ResolveError::NxDomain { .. })
    ));
    let (res, _) = traced(&r, "shop.test.", RecordType::TXT).await;
    assert!(
        matches!(res, Err(hopline_dns::ResolveError::NoData { .. })),
        "{res:?}"
    );
    let (res, steps) = traced(&r, "shop.test.", RecordType::DS).await;
    assert!(res.is_ok() && asked(&steps), "{res:?} {steps:#?}");

    // off: every name is asked
    let r = resolver(false);
    let _ = traced(&r, "nope.shop.test.", RecordType::A).await;
    let (res, steps) = traced(&r, "nq.shop.test.", RecordType::A).await;
    assert!(matches!(
        res,
        Err(hopline_dns::ResolveError::NxDomain { .. })
    ));
    assert!(asked(&steps) && !from_nsec(&steps), "{steps:#?}");
}
