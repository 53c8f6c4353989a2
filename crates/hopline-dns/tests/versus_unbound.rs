//! Our resolver against Unbound, case by case, over the same NSD hierarchy (root,
//! `test.`, `shop.test.` on 127.0.81-83.x:53, and a lame delegation): for each question both
//! are asked over UDP and must agree on the rcode, the RA flag and the answer section
//! (owner names as the zone spells them, types, data). Also: the SOA TTL of a negative
//! answer reached through a CNAME counts down, and our authoritative server answers ANY
//! at a CNAME owner and at an empty non-terminal as NSD does.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hopline_dns::config::{AuthoritativeService, DnsConfig, ResolverService};
use hopline_dns::service::DnsServices;
use hopline_testkit::Proc;

fn ip(net: u8, h: u8) -> String {
    format!("127.0.{net}.{h}")
}

fn write_zones(dir: &Path, net: u8) {
    let ip = |h| ip(net, h);
    std::fs::write(
        dir.join("root.zone"),
        format!(
            "$ORIGIN .\n$TTL 86400\n@ IN SOA a.root. admin.root. 1 3600 600 86400 300\n@ IN NS a.root.\na.root. IN A {}\ntest. 172800 IN NS ns1.test.\nns1.test. 172800 IN A {}\n",
            ip(11),
            ip(12)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("test.zone"),
        format!(
            "$ORIGIN test.\n$TTL 3600\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\n@ IN NS ns1.test.\nns1 IN A {}\nshop 3600 IN NS ns1.shop.test.\nns1.shop IN A {}\nlame 3600 IN NS ns1.lame.test.\nns1.lame IN A {}\n",
            ip(12),
            ip(13),
            ip(14)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("shop.test.zone"),
        format!(
            "$ORIGIN shop.test.\n$TTL 300\n@ IN SOA ns1.shop.test. admin.shop.test. 1 3600 600 86400 60\n@ IN NS ns1.shop.test.\nns1 IN A {}\nwww 120 IN A 10.0.0.1\napi IN CNAME www\nMixed IN CNAME WwW.Shop.Test.\ndanglingin IN CNAME nothere\ntolame IN CNAME www.lame.test.\nnodatavia IN CNAME www\na.ent IN A 10.0.0.9\nmail IN MX 10 www.shop.test.\n",
            ip(13)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("root.hints"),
        format!(". 3600000 NS a.root.\na.root. 3600000 A {}\n", ip(11)),
    )
    .unwrap();
}

/// Is `program` installed? (Outside CI a missing peer skips loudly; in CI it fails.)
fn installed(program: &str, package: &str) -> bool {
    hopline_testkit::peer_installed(program, "--version", package)
}

/// One UDP question with EDNS; the answer (3 s at most).
async fn ask(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    class: DNSClass,
    rd: bool,
) -> Message {
    let mut q = Message::new(0x4242, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = rd;
    let mut query = Query::query(Name::from_ascii(name).unwrap(), rtype);
    query.set_query_class(class);
    q.add_query(query);
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    q.set_edns(edns);
    let sock = tokio::net::UdpSocket::bind(format!("{}:0", server.ip()))
        .await
        .unwrap();
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{server} answers {name} {rtype}"))
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// What must agree: rcode, RA, and the answer section as `owner type data`, in order
/// of the chain (owner names keep their case).
fn seen(m: &Message) -> (ResponseCode, bool, Vec<String>) {
    let answers = m
        .answers
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    (
        m.metadata.response_code,
        m.metadata.recursion_available,
        answers,
    )
}

fn negative_ttl(m: &Message) -> Option<u32> {
    m.authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.ttl)
}

async fn unbound(dir: &Path, net: u8) -> (Proc, SocketAddr) {
    let ip = |h| ip(net, h);
    let conf = format!(
        "server:\n  interface: {i}\n  port: 53\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  root-hints: \"{d}/root.hints\"\n  module-config: \"iterator\"\n  do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n  access-control: 127.0.0.0/8 allow_snoop\n  num-threads: 1\n  qname-minimisation: no\n  harden-referral-path: no\n  prefetch: no\n  minimal-responses: yes\n  outgoing-interface: {i}\n",
        i = ip(53),
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
    let addr: SocketAddr = format!("{}:53", ip(53)).parse().unwrap();
    hopline_testkit::wait_udp(addr);
    (p, addr)
}

async fn ours(dir: &Path, net: u8) -> (DnsServices, SocketAddr) {
    let ip = |h| ip(net, h);
    let cfg = DnsConfig {
        resolver: vec![ResolverService {
            listen: format!("{}:53", ip(54)),
            root_hints: Some("root.hints".into()),
            forward: vec![],
            hosts_file: Some("".into()),
            cache_entries: 1000,
            query_port: None,
            allow: None,
            max_ttl: None,
            max_negative_ttl: None,
            trust_anchor: None,
            validate: None,
            aggressive_nsec: None,
            tls: None,
        }],
        authoritative: vec![],
        pool: vec![],
    };
    let svc = DnsServices::start(&cfg, dir).await.unwrap();
    let addr = svc.bound()[0].1;
    (svc, addr)
}

/// NSD for the root, `test.` and `shop.test.`; and at `ns1.lame.test.` an NSD that
/// serves another zone, so it refuses `lame.test.` (a lame delegation).
fn nsd_hierarchy(dir: &Path, net: u8) -> Vec<Proc> {
    std::fs::write(
        dir.join("other.zone"),
        "$ORIGIN other.\n@ 300 IN SOA ns. admin. 1 3600 600 86400 60\n@ 300 IN NS ns.\n",
    )
    .unwrap();
    [
        (11, ".", "root.zone"),
        (12, "test.", "test.zone"),
        (13, "shop.test.", "shop.test.zone"),
        (14, "other.", "other.zone"),
    ]
    .into_iter()
    .map(|(h, origin, file)| hopline_testkit::nsd(dir, &ip(net, h), 53, origin, file))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_resolver_answers_as_unbound_does_case_by_case() {
    if !installed("nsd", "nsd") || !installed("unbound", "unbound") {
        return;
    }
    let (dir, net) = (tempfile::tempdir().unwrap(), 81);
    write_zones(dir.path(), net);
    let _nsd = nsd_hierarchy(dir.path(), net);
    let (_unbound, theirs) = unbound(dir.path(), net).await;
    let (_svc, mine) = ours(dir.path(), net).await;

    let cases: &[(&str, RecordType, DNSClass, bool)] = &[
        ("www.shop.test.", RecordType::A, DNSClass::IN, true),
        ("api.shop.test.", RecordType::A, DNSClass::IN, true),
        ("nothere.shop.test.", RecordType::A, DNSClass::IN, true),
        ("www.shop.test.", RecordType::MX, DNSClass::IN, true),
        // RFC 8482: NSD answers ANY with one RRset; a resolver passes on what it got
        ("www.shop.test.", RecordType::ANY, DNSClass::IN, true),
        ("shop.test.", RecordType::ANY, DNSClass::IN, true),
        // an in-zone CNAME to a name that does not exist: NXDOMAIN with the CNAME
        ("danglingin.shop.test.", RecordType::A, DNSClass::IN, true),
        // a CNAME whose target's zone answers nobody: SERVFAIL, as Unbound
        ("tolame.shop.test.", RecordType::A, DNSClass::IN, true),
        // the CNAME target keeps the zone's spelling
        ("mixed.shop.test.", RecordType::A, DNSClass::IN, true),
        ("nodatavia.shop.test.", RecordType::TXT, DNSClass::IN, true),
        // an empty non-terminal: NODATA, not NXDOMAIN
        ("ent.shop.test.", RecordType::A, DNSClass::IN, true),
        // QCLASS ANY is answered like IN
        ("www.shop.test.", RecordType::A, DNSClass::ANY, true),
        // CHAOS is not served: REFUSED, with RA still set
        ("www.shop.test.", RecordType::A, DNSClass::CH, true),
        // without RD, from the cache: each has walked these chains above by now
        ("api.shop.test.", RecordType::A, DNSClass::IN, false),
        ("www.shop.test.", RecordType::A, DNSClass::IN, false),
    ];
    let mut differ = Vec::new();
    for &(name, rtype, class, rd) in cases {
        let u = seen(&ask(theirs, name, rtype, class, rd).await);
        let o = seen(&ask(mine, name, rtype, class, rd).await);
        if u != o {
            differ.push(format!(
                "{name} {rtype} {class:?} rd={rd}:\n  unbound {u:?}\n  ours    {o:?}"
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} differences:\n{}",
        differ.len(),
        differ.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_answer_through_a_cname_counts_its_ttl_down() {
    if !installed("nsd", "nsd") {
        return;
    }
    let (dir, net) = (tempfile::tempdir().unwrap(), 82);
    write_zones(dir.path(), net);
    let _nsd = nsd_hierarchy(dir.path(), net);
    let (_svc, mine) = ours(dir.path(), net).await;
    let first = ask(
        mine,
        "danglingin.shop.test.",
        RecordType::A,
        DNSClass::IN,
        true,
    )
    .await;
    assert_eq!(first.metadata.response_code, ResponseCode::NXDomain);
    let t0 = negative_ttl(&first).expect("an SOA");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = ask(
        mine,
        "danglingin.shop.test.",
        RecordType::A,
        DNSClass::IN,
        true,
    )
    .await;
    assert_eq!(later.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(later.answers.len(), 1, "the CNAME: {later:?}");
    let t1 = negative_ttl(&later).expect("an SOA");
    assert!(t1 + 2 <= t0, "the SOA TTL counts down: {t0} then {t1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_at_a_cname_owner_or_an_empty_non_terminal_answers_as_nsd() {
    if !installed("nsd", "nsd") {
        return;
    }
    let (dir, net) = (tempfile::tempdir().unwrap(), 83);
    write_zones(dir.path(), net);
    let ip = |h| ip(net, h);
    let theirs = hopline_testkit::nsd(dir.path(), &ip(21), 53, "shop.test.", "shop.test.zone");
    let cfg = DnsConfig {
        resolver: vec![],
        authoritative: vec![AuthoritativeService {
            listen: format!("{}:53", ip(22)),
            zones: vec!["shop.test.zone".into()],
            transfer: vec![],
            notify: vec![],
            rrl: Default::default(),
        }],
        pool: vec![],
    };
    let _svc = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let mine: SocketAddr = format!("{}:53", ip(22)).parse().unwrap();
    let nsd: SocketAddr = format!("{}:53", ip(21)).parse().unwrap();
    let mut differ = Vec::new();
    for (name, class) in [
        ("api.shop.test.", DNSClass::IN),
        ("ent.shop.test.", DNSClass::IN),
        ("www.shop.test.", DNSClass::ANY),
    ] {
        let t = ask(nsd, name, RecordType::ANY, class, false).await;
        let o = ask(mine, name, RecordType::ANY, class, false).await;
        let (t, o) = (seen(&t), seen(&o));
        if (t.0, &t.2) != (o.0, &o.2) {
            differ.push(format!("{name} ANY {class:?}:\n  nsd  {t:?}\n  ours {o:?}"));
        }
    }
    drop(theirs);
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
