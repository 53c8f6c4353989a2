//! What the DNS servers refuse before any lookup, as the RFCs say — other opcodes
//! (UPDATE, NOTIFY, STATUS) → NOTIMP, EDNS version 1 → BADVERS, class CH → REFUSED, AXFR
//! over UDP → FORMERR — and who a resolver serves: loopback and its own network by
//! default, or its `allow` list; RD=0 gets only what the cache knows. Raw packets over
//! UDP and TCP from chosen loopback source addresses (block 127.0.71.0/24).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hopline_dns::config::DnsConfig;
use hopline_dns::service::DnsServices;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.metadata.message_type = MessageType::Query;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

/// Send over UDP from `from` and return the decoded answer.
async fn udp(server: SocketAddr, from: &str, m: &Message) -> Message {
    let sock = tokio::net::UdpSocket::bind(format!("{from}:0"))
        .await
        .unwrap();
    sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("an answer within 3 s")
        .unwrap();
    let r = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(r.metadata.id, m.metadata.id);
    r
}

/// Send over TCP from `from` (bound source address) and return the decoded answer.
async fn tcp(server: SocketAddr, from: &str, m: &Message) -> Message {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut c = s.connect(server).await.unwrap();
    let body = m.to_vec().unwrap();
    let mut framed = (body.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    c.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    c.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

async fn services(
    extra_resolver: &str,
) -> (DnsServices, SocketAddr, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shop.zone"),
        "$ORIGIN shop.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.71.53\nwww IN A 127.0.71.80\nlong 200000 IN A 127.0.71.81\n",
    )
    .unwrap();
    // the authoritative server first, on a port of its own: the resolver forwards to it
    let auth_cfg: DnsConfig =
        toml::from_str("[[authoritative]]\nlisten = \"127.0.71.1:0\"\nzones = [\"shop.zone\"]\n")
            .unwrap();
    let auth = DnsServices::start(&auth_cfg, dir.path()).await.unwrap();
    let auth_addr = auth.bound()[0].1;
    let cfg: DnsConfig = toml::from_str(&format!(
        "[[authoritative]]\nlisten = \"127.0.71.2:0\"\nzones = [\"shop.zone\"]\n[[resolver]]\nlisten = \"127.0.71.3:0\"\nforward = [\"{auth_addr}\"]\nhosts_file = \"\"\n{extra_resolver}"
    ))
    .unwrap();
    let svc = DnsServices::start(&cfg, dir.path()).await.unwrap();
    std::mem::forget(auth); // serves for the rest of the test process
    let a = svc.bound()[0].1;
    let r = svc.bound()[1].1;
    (svc, a, r, dir)
}

#[tokio::test]
async fn what_no_server_answers_as_asked() {
    let (_svc, auth, resolver, _dir) = services("").await;
    for server in [auth, resolver] {
        // a normal query works
        let r = udp(server, "127.0.0.1", &query("www.shop.test.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{server}");
        assert_eq!(r.answers.len(), 1, "{server}: {r:?}");
        // UPDATE, NOTIFY, STATUS: NOTIMP with no data (never a NOERROR an UPDATE client
        // would take for success)
        for op in [OpCode::Update, OpCode::Notify, OpCode::Status] {
            let mut m = query("shop.test.", RecordType::SOA);
            m.metadata.op_code = op;
            for r in [
                udp(server, "127.0.0.1", &m).await,
                tcp(server, "127.0.0.1", &m).await,
            ] {
                assert_eq!(
                    r.metadata.response_code,
                    ResponseCode::NotImp,
                    "{server} {op:?}"
                );
                assert!(r.answers.is_empty());
            }
        }
        // EDNS version 1: BADVERS (an extended rcode, carried in the OPT record)
        let mut m = query("www.shop.test.", RecordType::A);
        let mut e = Edns::new();
        e.set_version(1);
        m.set_edns(e);
        let r = udp(server, "127.0.0.1", &m).await;
        // (16 on the wire: hickory reads it back as BADSIG, the same number)
        assert_eq!(u16::from(r.metadata.response_code), 16, "{server}: {r:?}");
        assert_eq!(r.edns.as_ref().map(|e| e.version()), Some(0));
        assert!(r.answers.is_empty());
        // class CH (version.bind and friends are not configured): REFUSED
        let mut m = Message::query();
        m.metadata.id = 7;
        m.metadata.recursion_desired = true;
        let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        m.add_query(q);
        let r = udp(server, "127.0.0.1", &m).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{server}");
        // AXFR over UDP: FORMERR
        let r = udp(server, "127.0.0.1", &query("shop.test.", RecordType::AXFR)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr, "{server}");
    }
}

#[tokio::test]
async fn a_resolver_serves_only_its_clients_and_rd0_only_from_cache() {
    // default: loopback (any 127/8 source) is served
    let (_svc, _, resolver, _dir) = services("").await;
    let r = udp(
        resolver,
        "127.0.71.200",
        &query("www.shop.test.", RecordType::A),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    // RD=0 for a name not in the cache: REFUSED, no recursion; after an RD=1 lookup the
    // cached answer is given
    let mut m = query("ns1.shop.test.", RecordType::A);
    m.metadata.recursion_desired = false;
    let r = udp(resolver, "127.0.0.1", &m).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{r:?}");
    let r = tcp(resolver, "127.0.0.1", &m).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{r:?}");
    udp(
        resolver,
        "127.0.0.1",
        &query("ns1.shop.test.", RecordType::A),
    )
    .await;
    let mut m = query("ns1.shop.test.", RecordType::A);
    m.metadata.recursion_desired = false;
    let r = udp(resolver, "127.0.0.1", &m).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r:?}");
    assert_eq!(r.answers.len(), 1);

    // an allow list: only 127.0.71.9 is a client; others get REFUSED over UDP and TCP,
    // also for a name another client has just put in the cache
    let (_svc, _, resolver, _dir) = services("allow = [\"127.0.71.9/32\"]\n").await;
    let q = query("www.shop.test.", RecordType::A);
    let r = udp(resolver, "127.0.71.9", &q).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    for from in ["127.0.0.1", "127.0.71.10"] {
        let r = udp(resolver, from, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{from}");
        assert!(r.answers.is_empty());
        let r = tcp(resolver, from, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{from}");
    }
    // a bad allow entry is a config error naming it, and where it is in the file
    let text = "[[resolver]]\nlisten = \"127.0.71.4:0\"\nforward = [\"127.0.0.1:9\"]\nallow = [\"10.0.0.0/33\"]\n";
    let e = toml::from_str::<DnsConfig>(text).expect_err("refused when read");
    assert!(e.message().contains("allow \"10.0.0.0/33\""), "{e}");
    let at = e.span().expect("a span").start;
    assert_eq!(text[..at].lines().count(), 4, "line 4: {e}");
    // (a config made in code is checked when started)
    let mut cfg: DnsConfig = toml::from_str(&text.replace("/33", "/8")).unwrap();
    cfg.resolver[0].allow = Some(vec!["10.0.0.0/33".into()]);
    let e = DnsServices::start(&cfg, std::path::Path::new("."))
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
}

#[test]
fn a_zone_entry_can_name_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rel.zone"),
        "@ 300 IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\n",
    )
    .unwrap();
    let with: DnsConfig = toml::from_str(
        "[[authoritative]]\nlisten = \"127.0.71.5:0\"\nzones = [{ file = \"rel.zone\", origin = \"shop.test.\" }]\n",
    )
    .unwrap();
    DnsServices::check(&with, dir.path()).unwrap();
    let without: DnsConfig =
        toml::from_str("[[authoritative]]\nlisten = \"127.0.71.5:0\"\nzones = [\"rel.zone\"]\n")
            .unwrap();
    let e = DnsServices::check(&without, dir.path()).unwrap_err();
    assert!(e.to_string().contains("rel.zone"), "{e}");
}

#[tokio::test]
async fn resolver_ttls_are_capped_count_down_and_keep_the_askers_case() {
    let (_svc, _, resolver, _dir) = services("max_ttl = 1000\nmax_negative_ttl = 20\n").await;
    // a TTL of 200000 is given (and cached) as at most max_ttl
    let r = udp(
        resolver,
        "127.0.0.1",
        &query("long.shop.test.", RecordType::A),
    )
    .await;
    assert_eq!(r.answers[0].ttl, 1000, "{r:?}");
    // negative answers: the SOA's TTL capped, then counting down in the cache
    let r = udp(
        resolver,
        "127.0.0.1",
        &query("nope.shop.test.", RecordType::A),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].ttl, 20, "{r:?}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = udp(
        resolver,
        "127.0.0.1",
        &query("nope.shop.test.", RecordType::A),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.authorities[0].ttl <= 18, "{r:?}");
    // the owner name has the case of this client's question, not the first asker's
    udp(
        resolver,
        "127.0.0.1",
        &query("www.shop.test.", RecordType::A),
    )
    .await;
    let r = udp(
        resolver,
        "127.0.0.1",
        &query("WwW.ShOp.test.", RecordType::A),
    )
    .await;
    assert_eq!(r.answers[0].name.to_string(), "WwW.ShOp.test.", "{r:?}");
    // a forwarder's REFUSED (a name outside the authoritative server's zones) reaches the
    // client as SERVFAIL
    let r = udp(resolver, "127.0.0.1", &query("example.com.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{r:?}");
}

/// Send `count` queries for `name` at once from `from` over UDP; return (full answers,
/// truncated answers) received.
async fn burst(server: SocketAddr, from: &str, name: &str, count: u16) -> (usize, usize) {
    let sock = tokio::net::UdpSocket::bind(format!("{from}:0"))
        .await
        .unwrap();
    // room for every answer before the first is read (the default buffer holds ~200 of
    // them: the rest would be dropped here, not by the server)
    socket2::SockRef::from(&sock)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
    for id in 0..count {
        let mut m = query(name, RecordType::A);
        m.metadata.id = id;
        sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    }
    let (mut full, mut tc) = (0, 0);
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await
    {
        let r = Message::from_vec(&buf[..n]).unwrap();
        if r.metadata.truncation {
            assert!(r.answers.is_empty());
            tc += 1;
        } else {
            assert_eq!(r.answers.len(), 1);
            full += 1;
        }
    }
    (full, tc)
}

#[tokio::test]
async fn response_rate_limiting_drops_and_slips_per_client_prefix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shop.zone"),
        "$ORIGIN shop.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.73.53\nwww IN A 127.0.73.80\n",
    )
    .unwrap();
    let cfg: DnsConfig = toml::from_str(
        "[[authoritative]]\nlisten = \"127.0.73.1:0\"\nzones = [\"shop.zone\"]\nrrl = { rate = 10, slip = 2, exempt = [\"127.0.75.0/24\"] }\n[[authoritative]]\nlisten = \"127.0.73.2:0\"\nzones = [\"shop.zone\"]\n",
    )
    .unwrap();
    let svc = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let (limited, default) = (svc.bound()[0].1, svc.bound()[1].1);
    // 100 at once from one client: 10 answers (20 if the burst straddles a second),
    // about half of the rest truncated, the others dropped
    let (full, tc) = burst(limited, "127.0.73.9", "www.shop.test.", 100).await;
    assert!((10..=20).contains(&full), "full answers: {full}");
    assert!((35..=50).contains(&tc), "truncated: {tc}");
    // the truncated client retries over TCP: never limited
    let r = tcp(
        limited,
        "127.0.73.9",
        &query("www.shop.test.", RecordType::A),
    )
    .await;
    assert_eq!(r.answers.len(), 1);
    // another /24 has its own budget; an exempt network has none
    let (full, _) = burst(limited, "127.0.74.9", "www.shop.test.", 5).await;
    assert_eq!(full, 5);
    let (full, tc) = burst(limited, "127.0.75.9", "www.shop.test.", 100).await;
    assert_eq!((full, tc), (100, 0));
    // the default (rate 200 a second, loopback exempt): a local client is never limited
    let (full, tc) = burst(default, "127.0.73.9", "www.shop.test.", 300).await;
    assert_eq!((full, tc), (300, 0));
}

/// A UDP listener that never runs dry (a flood from two threads) still lets the TCP
/// listener on the same one-thread runtime answer, and still stops when told.
#[tokio::test]
#[allow(clippy::disallowed_types)] // std's Instant on purpose: wall-clock time, see below
async fn a_udp_flood_starves_neither_tcp_nor_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shop.zone"),
        "$ORIGIN shop.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.71.53\nwww IN A 127.0.71.80\n",
    )
    .unwrap();
    let cfg: DnsConfig = toml::from_str(
        "[[authoritative]]\nlisten = \"127.0.71.20:0\"\nzones = [\"shop.zone\"]\nrrl = { rate = 0 }\n",
    )
    .unwrap();
    let svc = DnsServices::start(&cfg, dir.path()).await.unwrap();
    let server = svc.bound()[0].1;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let packet = query("www.shop.test.", RecordType::A).to_vec().unwrap();
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, packet) = (stop.clone(), packet.clone());
            std::thread::spawn(move || {
                let s = std::net::UdpSocket::bind("127.0.71.21:0").unwrap();
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && std::time::Instant::now() < deadline
                {
                    let _ = s.send_to(&packet, server);
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    // (wall-clock time: a starved runtime would not run a tokio timer either — nor this
    // test's own task, which shares the runtime's one thread with the listeners)
    let asked = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = query("www.shop.test.", RecordType::A);
    let r = tcp(server, "127.0.71.22", &m).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "a 300 ms sleep and a TCP query took {:?} beside the UDP loop",
        asked.elapsed()
    );
    let told = std::time::Instant::now();
    svc.shutdown().await;
    assert!(
        told.elapsed() < Duration::from_secs(2),
        "the listeners took {:?} to stop during the flood",
        told.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: u64 = flooders.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(sent > 10_000, "the flood was a flood: {sent} packets");
}

#[test]
fn a_forwarding_resolver_given_a_trust_anchor_is_refused_with_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.key"), ". DS 1 13 2 00\n").unwrap();
    let cfg: hopline_dns::config::DnsConfig = toml::from_str(
        "[[resolver]]\nlisten = \"127.0.0.1:0\"\nforward = [\"127.0.0.1:53\"]\ntrust_anchor = \"root.key\"\n",
    )
    .unwrap();
    let e = hopline_dns::service::DnsServices::check(&cfg, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trust_anchor with forward") && e.contains("expected root_hints"),
        "{e}"
    );
}
