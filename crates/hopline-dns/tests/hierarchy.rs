//! A whole DNS hierarchy on loopback — root, `test.` and `shop.test.` each on its own
//! 127.0.x.y address, port 53 (real delegation carries no ports) — served by hopline's
//! authoritative server, resolved by hopline's resolver, and cross-checked with real
//! peers: `dig` against our servers, Unbound resolving through our hierarchy, and NSD
//! serving the same zones to our resolver. Each test uses its own 127.0.N.0/24 block.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};

use hopline_testkit::Proc;
use std::time::Duration;

use hopline_dns::config::{AuthoritativeService, DnsConfig};
use hopline_dns::service::DnsServices;
use hopline_dns::{Answered, RecordType, ResolveError, Resolver, RootHints};

fn write_zones(dir: &Path, net: u8) {
    let ip = |h: u8| format!("127.0.{net}.{h}");
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
            "$ORIGIN test.\n$TTL 3600\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\n@ IN NS ns1.test.\nns1 IN A {}\nshop 3600 IN NS ns1.shop.test.\nns1.shop IN A {}\n",
            ip(12),
            ip(13)
        ),
    )
    .unwrap();
    let mut big = String::new();
    for i in 0..40 {
        big.push_str(&format!(
            "big IN TXT \"record number {i:02} padded to make the answer large\"\n"
        ));
    }
    // a chain of 11 CNAMEs (as long as Unbound follows), c1 → c2 → … → c11 → www
    let mut chain = String::new();
    for i in 1..=11 {
        let next = if i == 11 {
            "www".to_string()
        } else {
            format!("c{}", i + 1)
        };
        chain.push_str(&format!("c{i} IN CNAME {next}\n"));
    }
    std::fs::write(
        dir.join("shop.test.zone"),
        format!(
            "$ORIGIN shop.test.\n$TTL 300\n@ IN SOA ns1.shop.test. admin.shop.test. 1 3600 600 86400 30\n@ IN NS ns1.shop.test.\nns1 IN A {}\nwww 120 IN A 10.0.0.1\nwww 120 IN A 10.0.0.2\napi IN CNAME www\nmail IN MX 10 www.shop.test.\n@ IN TXT \"shop of the seeds\"\n{big}{chain}",
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

async fn hopline_hierarchy(dir: &Path, net: u8) -> DnsServices {
    write_zones(dir, net);
    let cfg = DnsConfig {
        resolver: vec![],
        authoritative: vec![
            AuthoritativeService {
                listen: format!("127.0.{net}.11:53"),
                zones: vec!["root.zone".into()],
                transfer: vec![],
                notify: vec![],
                rrl: Default::default(),
            },
            AuthoritativeService {
                listen: format!("127.0.{net}.12:53"),
                zones: vec!["test.zone".into()],
                transfer: vec![],
                notify: vec![],
                rrl: Default::default(),
            },
            AuthoritativeService {
                listen: format!("127.0.{net}.13:53"),
                zones: vec!["shop.test.zone".into()],
                transfer: vec![],
                notify: vec![],
                rrl: Default::default(),
            },
        ],
        pool: vec![],
    };
    DnsServices::start(&cfg, dir)
        .await
        .expect("authoritative servers start (needs root for port 53)")
}

fn resolver(dir: &Path) -> Resolver {
    Resolver::builder()
        .no_hosts_file()
        .recursive(RootHints::from_file(&dir.join("root.hints")).unwrap())
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap()
}

fn ips(l: &hopline_dns::Lookup) -> Vec<IpAddr> {
    let mut v = l.addrs.clone();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_resolution_through_our_hierarchy_with_trace_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let _dns = hopline_hierarchy(dir.path(), 61).await;
    let r = resolver(dir.path());

    let l = r.lookup("www.shop.test", RecordType::A).await.unwrap();
    assert_eq!(
        ips(&l),
        vec![
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "10.0.0.2".parse().unwrap()
        ]
    );
    assert_eq!(l.answered_by, Answered::Recursive);
    assert_eq!(l.ttl, Duration::from_secs(120));
    let kinds: Vec<&str> = l.steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["referral", "referral", "answer"],
        "{:#?}",
        l.steps
    );
    assert_eq!(l.steps[0].server, "127.0.61.11:53");
    assert!(
        l.steps[0].detail.contains("test. NS ns1.test."),
        "{}",
        l.steps[0].detail
    );
    assert_eq!(l.steps[0].ttl, Some(172800));
    assert_eq!(l.steps[1].server, "127.0.61.12:53");
    assert_eq!(l.steps[2].server, "127.0.61.13:53");

    // the second time: the cache answers, TTL counting down
    let l = r.lookup("www.shop.test", RecordType::A).await.unwrap();
    assert_eq!(l.answered_by, Answered::Cache);
    assert_eq!(l.steps.len(), 1);
    // a sibling name starts at the cached delegation of shop.test.: one step
    let l = r.lookup("mail.shop.test", RecordType::MX).await.unwrap();
    assert_eq!(l.steps.len(), 1, "{:#?}", l.steps);
    assert_eq!(l.records[0].data, "10 www.shop.test.");

    // a chain of 11 links is followed to the end
    let l = r.lookup("c1.shop.test", RecordType::A).await.unwrap();
    assert_eq!(l.addrs.len(), 2, "{:?}", l.records);
    assert_eq!(l.records.len(), 13);
    // CNAME chain, cached per link
    let l = r.lookup("api.shop.test", RecordType::A).await.unwrap();
    assert_eq!(l.records[0].rtype, "CNAME");
    assert_eq!(l.addrs.len(), 2);

    // NXDOMAIN, cached negatively with the SOA's TTL
    let e = r.lookup("nope.shop.test", RecordType::A).await.unwrap_err();
    assert!(matches!(e, ResolveError::NxDomain { .. }), "{e}");
    let started = tokio::time::Instant::now();
    assert!(matches!(
        r.lookup("nope.shop.test", RecordType::A).await,
        Err(ResolveError::NxDomain { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_millis(5),
        "negative answer not cached"
    );
    // NODATA
    assert!(matches!(
        r.lookup("www.shop.test", RecordType::AAAA).await,
        Err(ResolveError::NoData { .. })
    ));

    // a large answer: truncated over UDP, retried over TCP
    let l = r.lookup("big.shop.test", RecordType::TXT).await.unwrap();
    assert_eq!(l.records.len(), 40);
    assert!(l.steps.iter().any(|s| s.tcp), "{:#?}", l.steps);

    // REFUSED outside the zones of an authoritative server, through a forwarding resolver
    let stub = Resolver::builder()
        .no_hosts_file()
        .forward(vec!["127.0.61.13:53".parse().unwrap()])
        .build()
        .unwrap();
    assert!(matches!(
        stub.lookup("example.com", RecordType::A).await,
        Err(ResolveError::Refused { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_service_answers_stub_clients_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let _dns = hopline_hierarchy(dir.path(), 62).await;
    let cfg = DnsConfig {
        resolver: vec![hopline_dns::config::ResolverService {
            listen: "127.0.0.1:0".into(),
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
    let svc = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let addr = svc.bound()[0].1;
    let stub = Resolver::builder()
        .no_hosts_file()
        .forward(vec![addr])
        .build()
        .unwrap();
    let l = stub.lookup("api.shop.test", RecordType::A).await.unwrap();
    assert_eq!(l.addrs.len(), 2);
    assert_eq!(l.answered_by, Answered::Forwarder(addr));
    assert!(matches!(
        stub.lookup("gone.test", RecordType::A).await,
        Err(ResolveError::NxDomain { .. })
    ));
    if let Some(out) = dig(&[
        &format!("@{}", addr.ip()),
        "-p",
        &addr.port().to_string(),
        "+tcp",
        "+short",
        "big.shop.test",
        "TXT",
    ]) {
        assert_eq!(
            out.lines().filter(|l| l.contains("record number")).count(),
            40,
            "{out}"
        );
    }
}

/// NXDOMAIN and NODATA are steps of their own in `--trace`, from the walk and through a
/// forwarding resolver alike: which server said so, the SOA and its negative TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_answers_are_named_steps_saying_who_and_for_how_long() {
    let dir = tempfile::tempdir().unwrap();
    let _dns = hopline_hierarchy(dir.path(), 79).await;
    let r = resolver(dir.path());

    let (res, steps) = r.lookup_traced("nope.shop.test", RecordType::A).await;
    assert!(matches!(res, Err(ResolveError::NxDomain { .. })), "{res:?}");
    let kinds: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["referral", "referral", "nxdomain"], "{steps:#?}");
    let last = &steps[2];
    assert_eq!(last.server, "127.0.79.13:53");
    assert_eq!(
        last.detail,
        "nope.shop.test. does not exist, says 127.0.79.13:53 (SOA shop.test., negative TTL 30 s)"
    );
    assert_eq!(last.ttl, Some(30));
    // a name missing one zone up: the test. server says so, with its own SOA
    let (_, steps) = r.lookup_traced("gone.test", RecordType::A).await;
    let last = steps.last().unwrap();
    assert_eq!(last.kind, "nxdomain", "{steps:#?}");
    assert_eq!(
        last.detail,
        "gone.test. does not exist, says 127.0.79.12:53 (SOA test., negative TTL 60 s)"
    );

    let (res, steps) = r.lookup_traced("www.shop.test", RecordType::AAAA).await;
    assert!(matches!(res, Err(ResolveError::NoData { .. })), "{res:?}");
    let last = steps.last().unwrap();
    assert_eq!(last.kind, "nodata", "{steps:#?}");
    assert_eq!(
        last.detail,
        "www.shop.test. has no AAAA record, says 127.0.79.13:53 (SOA shop.test., negative TTL 30 s)"
    );
    assert_eq!(last.ttl, Some(30));

    // `hopline resolve --server`: a stub asking a resolver service that walks the hierarchy
    let cfg = DnsConfig {
        resolver: vec![hopline_dns::config::ResolverService {
            listen: "127.0.0.1:0".into(),
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
    let svc = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let addr = svc.bound()[0].1;
    let stub = Resolver::builder()
        .no_hosts_file()
        .forward(vec![addr])
        .build()
        .unwrap();
    let (res, steps) = stub.lookup_traced("nope.shop.test", RecordType::A).await;
    assert!(matches!(res, Err(ResolveError::NxDomain { .. })), "{res:?}");
    assert_eq!(steps.len(), 1, "{steps:#?}");
    assert_eq!(steps[0].kind, "nxdomain");
    assert_eq!(
        steps[0].detail,
        format!("nope.shop.test. does not exist, says {addr} (SOA shop.test., negative TTL 30 s)")
    );
    assert_eq!(steps[0].ttl, Some(30));
    let (res, steps) = stub.lookup_traced("api.shop.test", RecordType::AAAA).await;
    assert!(matches!(res, Err(ResolveError::NoData { .. })), "{res:?}");
    assert_eq!(steps[0].kind, "nodata", "{steps:#?}");
    assert!(
        steps[0].detail.starts_with(
            "api.shop.test. is an alias for www.shop.test.: www.shop.test. has no AAAA record, says"
        ),
        "{}",
        steps[0].detail
    );
}

fn dig(args: &[&str]) -> Option<String> {
    match Command::new("dig")
        .args(args)
        .args(["+time=2", "+tries=1"])
        .output()
    {
        Ok(o) => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "dig is required in CI (apt-get install dnsutils)"
            );
            eprintln!("SKIPPED part: dig is not installed");
            None
        }
    }
}

/// `dig +norec` of one question: its status, its AA bit and its whole output (answer
/// section only: NSD also puts the apex NS in the authority section of positive
/// answers, an optional extra; referrals are compared through the status and AA bit).
fn dig_norec(server: &str, name: &str, rtype: &str) -> Option<(String, bool, String)> {
    let out = dig(&[
        &format!("@{server}"),
        name,
        rtype,
        "+norec",
        "+nocmd",
        "+nostats",
        "+noquestion",
        "+noadditional",
        "+noauthority",
    ])?;
    let status = out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("?")
        .to_string();
    let aa = out
        .lines()
        .find(|l| l.contains("flags:"))
        .is_some_and(|l| l.contains(" aa"));
    Some((status, aa, out))
}

fn answers(dig_out: &str) -> Vec<String> {
    let mut v: Vec<String> = dig_out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .last()
                .unwrap_or("")
                .trim_matches('"')
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_aa_referrals_and_negative_answers() {
    let dir = tempfile::tempdir().unwrap();
    let _dns = hopline_hierarchy(dir.path(), 63).await;
    let Some(out) = dig(&["@127.0.63.13", "www.shop.test", "A", "+norec"]) else {
        return;
    };
    assert!(out.contains("flags: qr aa"), "{out}");
    assert!(
        out.contains("10.0.0.1") && out.contains("10.0.0.2"),
        "{out}"
    );
    let out = dig(&["@127.0.63.12", "www.shop.test", "A", "+norec"]).unwrap();
    assert!(
        out.contains("AUTHORITY: 1") && out.contains("ns1.shop.test."),
        "referral: {out}"
    );
    assert!(
        !out.contains("flags: qr aa"),
        "a referral is not authoritative: {out}"
    );
    assert!(out.contains("127.0.63.13"), "glue missing: {out}");
    let out = dig(&["@127.0.63.13", "nope.shop.test", "A", "+norec"]).unwrap();
    assert!(
        out.contains("status: NXDOMAIN") && out.contains("SOA"),
        "{out}"
    );
    let out = dig(&["@127.0.63.13", "example.com", "A", "+norec"]).unwrap();
    assert!(out.contains("status: REFUSED"), "{out}");
    // EDNS large answer: TC over UDP, complete over TCP
    let out = dig(&[
        "@127.0.63.13",
        "big.shop.test",
        "TXT",
        "+norec",
        "+ignore",
        "+bufsize=512",
    ])
    .unwrap();
    assert!(out.contains(" tc"), "{out}");
    let out = dig(&["@127.0.63.13", "big.shop.test", "TXT", "+norec", "+tcp"]).unwrap();
    assert!(out.contains("ANSWER: 40"), "{out}");
    // malformed packet: FORMERR, the server keeps serving
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(
        &[
            0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1,
        ],
        "127.0.63.13:53",
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert!(
        n >= 12 && buf[0] == 0xbe && buf[1] == 0xef && buf[3] & 0x0f == 1,
        "FORMERR expected"
    );
    let out = dig(&["@127.0.63.13", "www.shop.test", "A", "+norec"]).unwrap();
    assert!(out.contains("10.0.0.1"));
}

/// NSD serving `origin` from `dir/file` on `ip`:53, in the foreground, killed on drop.
fn nsd(dir: &Path, ip: &str, origin: &str, file: &str) -> Proc {
    hopline_testkit::nsd(dir, ip, 53, origin, file)
}

fn have(bin: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{bin} is required in CI (see .ci/run)"
        );
        eprintln!("SKIPPED: {bin} is not installed");
    }
    found
}

fn wait_udp(addr: SocketAddr) {
    hopline_testkit::wait_udp(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_resolves_through_our_authoritative_servers_and_agrees() {
    if !have("unbound") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _dns = hopline_hierarchy(dir.path(), 64).await;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = format!(
        "server:\n  interface: 127.0.64.53@{port}\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  root-hints: \"{d}/root.hints\"\n  module-config: \"iterator\"\n  do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n  access-control: 127.0.0.0/8 allow\n  num-threads: 1\n  qname-minimisation: no\n  harden-referral-path: no\n  prefetch: no\n",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("unbound.conf"), conf).unwrap();
    let _unbound = Proc(
        Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(dir.path().join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.64.53:{port}").parse().unwrap();
    wait_udp(addr);
    let ours = resolver(dir.path());
    for (name, t) in [
        ("www.shop.test", "A"),
        ("api.shop.test", "A"),
        ("mail.shop.test", "MX"),
        ("shop.test", "TXT"),
    ] {
        let out = dig(&["@127.0.64.53", "-p", &port.to_string(), name, t]).unwrap();
        let rtype: RecordType = t.parse().unwrap();
        let l = ours.lookup(name, rtype).await.unwrap();
        let mut mine: Vec<String> = l
            .records
            .iter()
            .map(|r| {
                r.data
                    .split_whitespace()
                    .last()
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string()
            })
            .collect();
        mine.sort();
        assert_eq!(answers(&out), mine, "{name} {t}: unbound says {out}");
    }
    let out = dig(&[
        "@127.0.64.53",
        "-p",
        &port.to_string(),
        "nope.shop.test",
        "A",
    ])
    .unwrap();
    assert!(out.contains("NXDOMAIN"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_resolver_walks_an_nsd_hierarchy() {
    if !have("nsd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_zones(dir.path(), 65);
    // a DS for the child zone, held by the parent (test.) as zones hold them
    let mut parent = std::fs::read_to_string(dir.path().join("test.zone")).unwrap();
    parent.push_str(
        "shop 3600 IN DS 12345 13 2 3490A6806D47F17A34C29E2CE80E8A999FFBE4BE8D7A32E40C6D9E0B2F7C2A1D\n",
    );
    std::fs::write(dir.path().join("test.zone"), parent).unwrap();
    let mut procs = Vec::new();
    for (host, origin, file) in [
        (11, ".", "root.zone"),
        (12, "test.", "test.zone"),
        (13, "shop.test.", "shop.test.zone"),
    ] {
        let sub = dir.path().join(format!("nsd{host}"));
        std::fs::create_dir_all(&sub).unwrap();
        let conf = format!(
            "server:\n  ip-address: 127.0.65.{host}\n  port: 53\n  username: \"\"\n  database: \"\"\n  zonelistfile: \"{s}/zone.list\"\n  xfrdfile: \"{s}/xfrd.state\"\n  xfrdir: \"{s}\"\n  pidfile: \"{s}/nsd.pid\"\n  logfile: \"{s}/nsd.log\"\n  zonesdir: \"{d}\"\n  rrl-ratelimit: 0\n  server-count: 1\n  verbosity: 1\nremote-control:\n  control-enable: no\nzone:\n  name: \"{origin}\"\n  zonefile: \"{file}\"\n",
            s = sub.display(),
            d = dir.path().display()
        );
        std::fs::write(sub.join("nsd.conf"), conf).unwrap();
        procs.push(Proc(
            Command::new("nsd")
                .arg("-d")
                .arg("-c")
                .arg(sub.join("nsd.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        wait_udp(format!("127.0.65.{host}:53").parse().unwrap());
    }
    let r = resolver(dir.path());
    let l = r.lookup("www.shop.test", RecordType::A).await.unwrap();
    assert_eq!(
        ips(&l),
        vec![
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "10.0.0.2".parse().unwrap()
        ]
    );
    assert_eq!(l.steps.len(), 3, "{:#?}", l.steps);
    let l = r.lookup("api.shop.test", RecordType::A).await.unwrap();
    assert_eq!(l.addrs.len(), 2);
    assert!(matches!(
        r.lookup("nope.shop.test", RecordType::A).await,
        Err(ResolveError::NxDomain { .. })
    ));
    let l = r.lookup("big.shop.test", RecordType::TXT).await.unwrap();
    assert_eq!(l.records.len(), 40);
    // DS is asked of the parent side of the cut, although the child's servers are known
    // by now (the child answers NODATA for it: it is not authoritative for its own DS)
    let l = r.lookup("shop.test", RecordType::DS).await.unwrap();
    assert_eq!(l.records.len(), 1, "{:#?}", l.steps);
    assert_eq!(l.records[0].rtype, "DS", "{:?}", l.records[0]);
    assert!(
        l.steps.last().unwrap().server.starts_with("127.0.65.12"),
        "asked the parent: {:#?}",
        l.steps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_rotate_follow_weights_and_drop_unhealthy_addresses() {
    // two tiny HTTP health endpoints: one healthy, one that starts failing
    let ok = tokio::net::TcpListener::bind("127.0.66.1:0").await.unwrap();
    let port = ok.local_addr().unwrap().port();
    let sick = tokio::net::TcpListener::bind(format!("127.0.66.2:{port}"))
        .await
        .unwrap();
    let health = |l: tokio::net::TcpListener, status: &'static str| {
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        })
    };
    health(ok, "200 OK");
    let sick_task = health(sick, "200 OK");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.zone"), "$ORIGIN shop.test.\n@ 300 IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.66.53\napi IN CNAME www.shop.test.\n").unwrap();
    let toml = format!(
        "[[authoritative]]\nlisten = \"127.0.0.1:0\"\nzones = [\"shop.zone\"]\n[[pool]]\nname = \"www.shop.test.\"\naddresses = [\"127.0.66.1\", \"127.0.66.2\"]\nttl = 5\nhealth = {{ http = \"/healthz\", port = {port}, interval_ms = 50, fails = 1, passes = 1 }}\n[[pool]]\nname = \"w.shop.test.\"\nbalance = \"weighted\"\naddresses = [{{ addr = \"10.9.0.1\", weight = 3 }}, \"10.9.0.2\"]\n"
    );
    let cfg: DnsConfig = toml::from_str(&toml).unwrap();
    let svc = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let addr = svc.bound()[0].1;
    let stub = Resolver::builder()
        .no_hosts_file()
        .forward(vec![addr])
        .cache_entries(16)
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // rotation: the first address alternates; TTL 5 s
    let mut firsts = Vec::new();
    for _ in 0..4 {
        let out = dig(&[
            &format!("@{}", addr.ip()),
            "-p",
            &addr.port().to_string(),
            "www.shop.test",
            "A",
            "+norec",
        ]);
        let Some(out) = out else { return };
        let ans: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
            .collect();
        assert_eq!(ans.len(), 2, "{out}");
        assert!(ans[0].contains("\t5\t"), "{out}");
        firsts.push(ans[0].split_whitespace().last().unwrap().to_string());
    }
    assert_ne!(firsts[0], firsts[1], "answers do not rotate: {firsts:?}");
    // a CNAME in the zone to the pooled name goes on into the pool's answer (not NXDOMAIN)
    let out = dig(&[
        &format!("@{}", addr.ip()),
        "-p",
        &addr.port().to_string(),
        "api.shop.test",
        "A",
        "+norec",
    ])
    .unwrap();
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("\tCNAME\twww.shop.test."), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
            .count(),
        2,
        "{out}"
    );
    // (a stub of its own: the shared one's cache must not keep www's answer for later)
    let via_stub = Resolver::builder()
        .no_hosts_file()
        .forward(vec![addr])
        .build()
        .unwrap()
        .lookup_ip("api.shop.test")
        .await
        .expect("api.shop.test resolves through the CNAME into the pool");
    assert_eq!(via_stub.addrs.len(), 2, "{via_stub:?}");
    // weights 3:1 for the first address of w.shop.test
    let mut count = 0;
    for _ in 0..40 {
        let out = dig(&[
            &format!("@{}", addr.ip()),
            "-p",
            &addr.port().to_string(),
            "w.shop.test",
            "A",
            "+norec",
            "+short",
        ])
        .unwrap();
        if out.lines().next() == Some("10.9.0.1") {
            count += 1;
        }
    }
    assert_eq!(
        count, 30,
        "weighted order should put 10.9.0.1 first 3 times in 4"
    );
    // the second address fails its health check: it leaves the answers
    sick_task.abort();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let l = stub.lookup("www.shop.test", RecordType::A).await.unwrap();
    assert_eq!(l.addrs, vec!["127.0.66.1".parse::<IpAddr>().unwrap()]);
}

/// A half-lame zone (RFC-style "lame delegation"): `test.` is delegated to three
/// servers — NSD answering REFUSED (it does not serve `test.`), a dead address, and one
/// good hopline server. Fresh names under `test.` all resolve; the client never sees the
/// lame server's REFUSED; and lameness is remembered: the lame server is asked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_lame_and_dead_servers_are_skipped_and_remembered() {
    if !have("nsd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ip = |h: u8| format!("127.0.67.{h}");
    std::fs::write(
        d.join("root.zone"),
        format!(
            "$ORIGIN .\n$TTL 86400\n@ IN SOA a.root. admin.root. 1 3600 600 86400 300\n@ IN NS a.root.\na.root. IN A {}\ntest. 172800 IN NS ns2.test.\ntest. 172800 IN NS ns3.test.\ntest. 172800 IN NS ns1.test.\nns1.test. 172800 IN A {}\nns2.test. 172800 IN A {}\nns3.test. 172800 IN A {}\n",
            ip(11),
            ip(12),
            ip(14),
            ip(15)
        ),
    )
    .unwrap();
    let mut names = String::new();
    for i in 0..21 {
        names.push_str(&format!("h{i} IN A 10.1.0.{i}\n"));
    }
    std::fs::write(
        d.join("test.zone"),
        format!(
            "$ORIGIN test.\n$TTL 3600\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\n@ IN NS ns2.test.\n@ IN NS ns3.test.\n@ IN NS ns1.test.\nns1 IN A {}\nns2 IN A {}\nns3 IN A {}\n{names}",
            ip(12),
            ip(14),
            ip(15)
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("other.zone"),
        "$ORIGIN other.\n$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 30\n@ IN NS ns\nns IN A 127.0.67.14\n",
    )
    .unwrap();
    std::fs::write(
        d.join("root.hints"),
        format!(". 3600000 NS a.root.\na.root. 3600000 A {}\n", ip(11)),
    )
    .unwrap();
    let cfg = DnsConfig {
        resolver: vec![],
        authoritative: vec![
            AuthoritativeService {
                listen: format!("{}:53", ip(11)),
                zones: vec!["root.zone".into()],
                transfer: vec![],
                notify: vec![],
                rrl: Default::default(),
            },
            AuthoritativeService {
                listen: format!("{}:53", ip(12)),
                zones: vec!["test.zone".into()],
                transfer: vec![],
                notify: vec![],
                rrl: Default::default(),
            },
        ],
        pool: vec![],
    };
    let _dns = DnsServices::start(&cfg, d)
        .await
        .expect("authoritative servers start (needs root for port 53)");
    // the lame server: NSD serving only `other.`
    let sub = d.join("nsd14");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        sub.join("nsd.conf"),
        format!(
            "server:\n  ip-address: {}\n  port: 53\n  username: \"\"\n  database: \"\"\n  zonelistfile: \"{s}/zone.list\"\n  xfrdfile: \"{s}/xfrd.state\"\n  xfrdir: \"{s}\"\n  pidfile: \"{s}/nsd.pid\"\n  logfile: \"{s}/nsd.log\"\n  zonesdir: \"{d}\"\n  rrl-ratelimit: 0\n  server-count: 1\n  verbosity: 1\nremote-control:\n  control-enable: no\nzone:\n  name: \"other.\"\n  zonefile: \"other.zone\"\n",
            ip(14),
            s = sub.display(),
            d = d.display()
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
    wait_udp(format!("{}:53", ip(14)).parse().unwrap());
    let r = resolver(d);
    let mut lame_steps = 0;
    for i in 0..21 {
        let l = r
            .lookup(&format!("h{i}.test"), RecordType::A)
            .await
            .unwrap_or_else(|e| panic!("h{i}.test: {e}"));
        assert_eq!(
            l.addrs,
            vec![format!("10.1.0.{i}").parse::<IpAddr>().unwrap()]
        );
        lame_steps += l
            .steps
            .iter()
            .filter(|s| s.kind == "lame" && s.server.starts_with(&ip(14)))
            .count();
        if i == 0 {
            assert!(
                l.steps.iter().any(|s| s.kind == "lame"),
                "the lame server is tried first (listed first): {:#?}",
                l.steps
            );
        }
    }
    assert_eq!(lame_steps, 1, "lameness is remembered per (server, zone)");
    // a zone whose every server is lame: SERVFAIL to the client, never REFUSED
    let stub_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        stub_dir.path().join("root.hints"),
        format!(". 3600000 NS a.root.\na.root. 3600000 A {}\n", ip(14)),
    )
    .unwrap();
    let all_lame = resolver(stub_dir.path());
    let e = all_lame.lookup("h1.test", RecordType::A).await.unwrap_err();
    assert!(matches!(e, ResolveError::ServFail { .. }), "{e}");
}

/// The wildcard example zone of RFC 4592 §2.2.1 (plus a wildcard CNAME and an empty
/// non-terminal), served by hopline and by NSD: every question of the RFC's examples gets
/// the same status and the same answer, authority and AA bit from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_answer_as_rfc_4592_and_nsd_do() {
    if !have("nsd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("example.zone"),
        "$ORIGIN example.\n$TTL 3600\n\
@ IN SOA ns.example.com. admin.example. 1 3600 600 86400 300\n\
@ IN NS ns.example.com.\n\
@ IN NS ns.example.net.\n\
*.example. IN TXT \"this is a wildcard\"\n\
*.example. IN MX 10 host1.example.\n\
sub.*.example. IN TXT \"this is not a wildcard\"\n\
host1.example. IN A 192.0.2.1\n\
_ssh._tcp.host1.example. IN SRV 0 0 22 host1.example.\n\
_ssh._tcp.host2.example. IN SRV 0 0 22 host2.example.\n\
subdel.example. IN NS ns.example.com.\n\
subdel.example. IN NS ns.example.net.\n\
*.alias.example. IN CNAME host1.example.\n\
*.gone.example. IN CNAME nowhere.example.\n\
leaf.ent.example. IN A 192.0.2.9\n",
    )
    .unwrap();
    let cfg = DnsConfig {
        resolver: vec![],
        authoritative: vec![AuthoritativeService {
            listen: "127.0.68.1:53".into(),
            zones: vec!["example.zone".into()],
            transfer: vec![],
            notify: vec![],
            rrl: Default::default(),
        }],
        pool: vec![],
    };
    let _dns = DnsServices::start(&cfg, d)
        .await
        .expect("authoritative server starts (needs root for port 53)");
    let _nsd = nsd(d, "127.0.68.2", "example.", "example.zone");
    // what matters of an answer: status, AA, and the answer section
    let view = |server: &str, name: &str, rtype: &str| -> Option<(String, bool, Vec<String>)> {
        let (status, aa, out) = dig_norec(server, name, rtype)?;
        Some((status, aa, answers(&out)))
    };
    let cases = [
        // RFC 4592 §2.2.1
        ("host3.example.", "MX"),               // synthesized
        ("host3.example.", "A"),                // NODATA from the wildcard
        ("foo.bar.example.", "TXT"),            // synthesized, two labels deep
        ("host1.example.", "MX"),               // NODATA: host1 exists
        ("sub.*.example.", "MX"),               // NODATA: exists, not a wildcard
        ("_telnet._tcp.host1.example.", "SRV"), // NXDOMAIN: closest encloser host1, no *.host1
        ("host.subdel.example.", "A"),          // referral: below a cut
        ("ghost.*.example.", "MX"),             // NXDOMAIN: encloser *.example has no *.*.example
        ("*.example.", "MX"),                   // the wildcard's own name
        ("_ssh._tcp.host3.example.", "SRV"),    // NODATA via *.example
        ("_ssh._tcp.host1.example.", "SRV"),    // exact answer
        // a wildcard CNAME, chased inside the zone; one to a missing name
        ("x.alias.example.", "A"),
        ("y.gone.example.", "A"),
        // an empty non-terminal is a name: no wildcard below the apex's for it
        ("ent.example.", "TXT"),
        ("other.ent.example.", "TXT"),
    ];
    for (name, rtype) in cases {
        let Some(ours) = view("127.0.68.1", name, rtype) else {
            return;
        };
        let theirs = view("127.0.68.2", name, rtype).unwrap();
        assert_eq!(ours, theirs, "{name} {rtype}: hopline vs NSD");
    }
    // and the synthesis itself, not only agreement
    let (status, _, ans) = view("127.0.68.1", "host3.example.", "MX").unwrap();
    assert_eq!(status, "NOERROR");
    assert_eq!(ans, vec!["host1.example.".to_string()]); // the MX target
}

/// hopline as the primary of NSD: NSD transfers the zone (AXFR over TCP, allowed for its
/// address only), and a reload that changes the zone NOTIFYs it, so NSD serves the new
/// version within seconds instead of at its next refresh (an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsd_is_a_secondary_of_a_hopline_zone_and_follows_notify() {
    if !have("nsd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let zone = |serial: u32, www: &str| {
        format!(
            "$ORIGIN shop.test.\n$TTL 300\n@ IN SOA ns1 admin {serial} 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.72.1\nwww IN A {www}\nmail IN MX 10 www\n"
        )
    };
    std::fs::write(d.join("shop.zone"), zone(1, "10.0.0.1")).unwrap();
    let free = |ip: &str| {
        std::net::TcpListener::bind(format!("{ip}:0"))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let nsd_port = free("127.0.72.2");
    let cfg = |nsd_port: u16| DnsConfig {
        resolver: vec![],
        authoritative: vec![AuthoritativeService {
            listen: "127.0.72.1:0".into(),
            zones: vec!["shop.zone".into()],
            transfer: vec!["127.0.72.2".into()],
            notify: vec![format!("127.0.72.2:{nsd_port}")],
            rrl: Default::default(),
        }],
        pool: vec![],
    };
    let dns = DnsServices::start(&cfg(nsd_port), d).await.unwrap();
    let primary = dns.bound()[0].1;
    // transfers: refused from an address not in `transfer`, allowed from NSD's
    let axfr = |from: &str| {
        dig(&[
            "-b",
            from,
            &format!("@{}", primary.ip()),
            "-p",
            &primary.port().to_string(),
            "shop.test.",
            "AXFR",
        ])
    };
    let Some(refused) = axfr("127.0.0.1") else {
        return;
    };
    assert!(refused.contains("Transfer failed"), "{refused}");
    let allowed = axfr("127.0.72.2").unwrap();
    assert_eq!(
        allowed.lines().filter(|l| l.contains("\tSOA\t")).count(),
        2,
        "AXFR starts and ends with the SOA: {allowed}"
    );
    assert!(allowed.contains("10.0.0.1"), "{allowed}");
    // NSD as the secondary
    let sub = d.join("nsd");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        sub.join("nsd.conf"),
        format!(
            "server:\n  ip-address: 127.0.72.2\n  port: {nsd_port}\n  username: \"\"\n  database: \"\"\n  zonelistfile: \"{s}/zone.list\"\n  xfrdfile: \"{s}/xfrd.state\"\n  xfrdir: \"{s}\"\n  pidfile: \"{s}/nsd.pid\"\n  logfile: \"{s}/nsd.log\"\n  zonesdir: \"{s}\"\n  rrl-ratelimit: 0\n  server-count: 1\n  verbosity: 2\nremote-control:\n  control-enable: no\nzone:\n  name: \"shop.test.\"\n  zonefile: \"shop.secondary\"\n  request-xfr: AXFR {}@{} NOKEY\n  allow-notify: 127.0.72.1 NOKEY\n  outgoing-interface: 127.0.72.2\n",
            primary.ip(),
            primary.port(),
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
    let www_at_nsd = || {
        dig(&[
            "@127.0.72.2",
            "-p",
            &nsd_port.to_string(),
            "www.shop.test.",
            "A",
            "+short",
            "+norec",
        ])
        .unwrap_or_default()
    };
    let mut seen = String::new();
    for _ in 0..100 {
        seen = www_at_nsd();
        if seen.contains("10.0.0.1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.contains("10.0.0.1"),
        "NSD never transferred the zone: {seen:?}\n{}",
        std::fs::read_to_string(sub.join("nsd.log")).unwrap_or_default()
    );
    // a new serial, a reload: NOTIFY, and NSD serves the change (its refresh is an hour)
    std::fs::write(d.join("shop.zone"), zone(2, "10.0.0.2")).unwrap();
    dns.reload(&cfg(nsd_port), d).unwrap();
    for _ in 0..100 {
        seen = www_at_nsd();
        if seen.contains("10.0.0.2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.contains("10.0.0.2"),
        "NSD did not follow the NOTIFY: {seen:?}\n{}",
        std::fs::read_to_string(sub.join("nsd.log")).unwrap_or_default()
    );
}

/// Escaped labels (RFC 1035 §5.1: `\DDD` decimal, `\X`), in owner names and in names
/// inside RDATA, load and answer as NSD answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_labels_answer_as_nsd_does() {
    if !have("nsd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("esc.zone"),
        "$ORIGIN esc.test.\n$TTL 300\n\
@ IN SOA ns1 john\\.doe 1 3600 600 86400 30\n\
@ IN NS ns1\n\
ns1 IN A 127.0.73.1\n\
a\\032b IN A 10.0.0.1\n\
dot\\.in IN A 10.0.0.2\n\
bin\\255\\000 IN A 10.0.0.3\n\
alias IN CNAME a\\032b\n\
mx IN MX 10 dot\\.in.esc.test.\n\
quoted IN TXT \"x\\032y\" \"raw\\255\\000end\" \"q\\\"q\"\n",
    )
    .unwrap();
    let cfg = DnsConfig {
        resolver: vec![],
        authoritative: vec![AuthoritativeService {
            listen: "127.0.73.1:53".into(),
            zones: vec!["esc.zone".into()],
            transfer: vec![],
            notify: vec![],
            rrl: Default::default(),
        }],
        pool: vec![],
    };
    let _dns = DnsServices::start(&cfg, d)
        .await
        .expect("the zone with escaped labels loads");
    let _nsd = nsd(d, "127.0.73.2", "esc.test.", "esc.zone");
    // status and the answer section's lines (owner, type, data; TTLs aside)
    let view = |server: &str, name: &str, rtype: &str| -> Option<(String, Vec<String>)> {
        let (status, _, out) = dig_norec(server, name, rtype)?;
        let mut lines: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .map(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", t[0], t[3..].join(" "))
            })
            .collect();
        lines.sort();
        Some((status, lines))
    };
    for (name, rtype) in [
        ("a\\032b.esc.test.", "A"),
        ("A\\032B.esc.test.", "A"),
        ("dot\\.in.esc.test.", "A"),
        ("bin\\255\\000.esc.test.", "A"),
        ("alias.esc.test.", "A"),
        ("mx.esc.test.", "MX"),
        ("esc.test.", "SOA"),
        ("quoted.esc.test.", "TXT"),
        ("a\\032c.esc.test.", "A"),
        ("dot.in.esc.test.", "A"),
    ] {
        let Some(ours) = view("127.0.73.1", name, rtype) else {
            return;
        };
        let theirs = view("127.0.73.2", name, rtype).unwrap();
        assert_eq!(ours, theirs, "{name} {rtype}: hopline vs NSD");
    }
    let (status, lines) = view("127.0.73.1", "alias.esc.test.", "A").unwrap();
    assert_eq!(status, "NOERROR");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("a\\032b.esc.test. A 10.0.0.1")),
        "{lines:?}"
    );
}
