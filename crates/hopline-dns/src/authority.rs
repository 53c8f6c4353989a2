//! The authoritative server's brain: which zone a question belongs to, DNS load
//! balancing for pooled names (rotation or weights over addresses that pass their
//! health checks), and the response message. No sockets here.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::config::{PoolAddress, PoolConfig};
use crate::error::DnsError;
use crate::zone::Zone;

/// A pooled name.
pub struct DnsPool {
    /// The name.
    pub name: LowerName,
    ttl: u32,
    addrs: Vec<IpAddr>,
    balance: Arc<hopline_balance::Pool>,
    /// Health-check settings (the service runs them).
    pub health: Option<crate::config::PoolHealth>,
}

impl std::fmt::Debug for DnsPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsPool").field("name", &self.name).finish()
    }
}

impl DnsPool {
    /// Build from config.
    pub fn new(cfg: &PoolConfig) -> Result<DnsPool, DnsError> {
        let name: Name = cfg
            .name
            .parse()
            .map_err(|e| DnsError::Config(format!("pool name {:?}: {e}", cfg.name)))?;
        let mut addrs = Vec::new();
        let mut specs = Vec::new();
        for a in &cfg.addresses {
            let (text, weight) = match a {
                PoolAddress::Addr(s) => (s.as_str(), 1),
                PoolAddress::Weighted { addr, weight } => (addr.as_str(), *weight),
            };
            let ip: IpAddr = text.parse().map_err(|_| {
                DnsError::Config(format!("pool {}: {text:?} is not an IP address", cfg.name))
            })?;
            addrs.push(ip);
            specs.push(hopline_balance::ServerSpec {
                id: ip.to_string(),
                weight,
                backup: false,
            });
        }
        if addrs.is_empty() {
            return Err(DnsError::Config(format!(
                "pool {} has no addresses",
                cfg.name
            )));
        }
        let algorithm = match cfg.balance.as_str() {
            "round_robin" => hopline_balance::Algorithm::RoundRobin,
            "weighted" => hopline_balance::Algorithm::WeightedRoundRobin,
            other => {
                return Err(DnsError::Config(format!(
                    "pool {}: balance {other:?} unknown: expected \"round_robin\" or \"weighted\"",
                    cfg.name
                )));
            }
        };
        let mut opts = hopline_balance::PoolOptions::default();
        if let Some(h) = &cfg.health {
            opts.fails = h.fails;
            opts.passes = h.passes;
        }
        Ok(DnsPool {
            name: LowerName::new(&name.to_lowercase()),
            ttl: cfg.ttl,
            addrs,
            balance: Arc::new(hopline_balance::Pool::new(algorithm, specs, opts)),
            health: cfg.health.clone(),
        })
    }

    /// Addresses currently answered, in this answer's order: the balancer's pick first,
    /// then the other healthy addresses in pool order from there.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Vec<Record> {
        let Some(first) = self.balance.pick(&[]) else {
            return Vec::new();
        };
        let start = first.index();
        drop(first);
        let up: Vec<bool> = self.balance.snapshot().iter().map(|s| s.up).collect();
        let n = self.addrs.len();
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| up[i])
            .filter_map(|i| match (self.addrs[i], qtype) {
                (IpAddr::V4(v4), RecordType::A) => {
                    Some(Record::from_rdata(qname.clone(), self.ttl, RData::A(A(v4))))
                }
                (IpAddr::V6(v6), RecordType::AAAA) => Some(Record::from_rdata(
                    qname.clone(),
                    self.ttl,
                    RData::AAAA(AAAA(v6)),
                )),
                _ => None,
            })
            .collect()
    }

    /// The address types the pool answers (A, AAAA).
    pub fn types(&self) -> Vec<RecordType> {
        let mut t = Vec::new();
        if self.addrs.iter().any(|a| a.is_ipv4()) {
            t.push(RecordType::A);
        }
        if self.addrs.iter().any(|a| a.is_ipv6()) {
            t.push(RecordType::AAAA);
        }
        t
    }

    /// Run the HTTP health checks until the pool is dropped.
    pub fn spawn_health(self: &Arc<Self>) {
        let Some(h) = self.health.clone() else { return };
        for (i, ip) in self.addrs.iter().enumerate() {
            let weak = Arc::downgrade(self);
            let ip = *ip;
            let h = h.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(h.interval_ms.max(10)));
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else { return };
                    let ok = http_check(
                        std::net::SocketAddr::new(ip, h.port),
                        &h.http,
                        Duration::from_millis(h.timeout_ms),
                    )
                    .await;
                    pool.balance.report_health_check(i, ok);
                }
            });
        }
    }

    /// (address, up) for status output.
    pub fn status(&self) -> Vec<(IpAddr, bool)> {
        self.balance
            .snapshot()
            .iter()
            .zip(&self.addrs)
            .map(|(s, a)| (*a, s.up))
            .collect()
    }
}

/// `GET path` over a fresh TCP connection; 2xx/3xx within the timeout = healthy.
pub async fn http_check(addr: std::net::SocketAddr, path: &str, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hopline-dns-health\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 16];
        let mut n = 0;
        while n < 12 {
            let k = s.read(&mut buf[n..]).await.ok()?;
            if k == 0 {
                break;
            }
            n += k;
        }
        let head = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = head.get(9..12)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Zones and pools served by one authoritative listener.
#[derive(Debug, Default)]
pub struct Authority {
    zones: Vec<Zone>,
    /// The signatures and denial chain of each signed zone, by origin.
    signed: std::collections::HashMap<LowerName, Arc<crate::dnssec::signed::SignedZone>>,
    pools: Vec<Arc<DnsPool>>,
    /// Who may transfer the zones.
    transfer: Vec<ipnet::IpNet>,
    /// Secondaries to NOTIFY after a reload.
    notify: Vec<std::net::SocketAddr>,
    /// Response rate limiting.
    pub(crate) rrl: crate::rrl::RrlSettings,
    /// Its zones count as served by this process (for ACME DNS-01) while it lives.
    _served: Option<Arc<crate::challenge::Served>>,
}

impl Authority {
    /// Load zone files (every one must load) and attach the pools.
    pub fn load(
        files: &[impl AsRef<Path>],
        pools: Vec<Arc<DnsPool>>,
    ) -> Result<Authority, DnsError> {
        let mut zones = Vec::new();
        for f in files {
            zones.push(Zone::load(f.as_ref(), None)?);
        }
        Ok(Self::new(zones, pools))
    }

    /// Serve loaded zones and the pools.
    pub fn new(mut zones: Vec<Zone>, pools: Vec<Arc<DnsPool>>) -> Authority {
        // longest origin first, so the most specific zone answers
        zones.sort_by_key(|z| std::cmp::Reverse(z.origin.num_labels()));
        let served = crate::challenge::dns01()
            .register(zones.iter().map(|z| z.origin.to_string()).collect());
        Authority {
            zones,
            signed: Default::default(),
            pools,
            transfer: Vec::new(),
            notify: Vec::new(),
            rrl: crate::rrl::RrlSettings::off(),
            _served: Some(served),
        }
    }

    /// Serve `signed` as the signatures of the zones of the same origin.
    pub fn with_signed(
        mut self,
        signed: impl IntoIterator<Item = Arc<crate::dnssec::signed::SignedZone>>,
    ) -> Authority {
        self.signed = signed
            .into_iter()
            .map(|s| (LowerName::new(s.apex()), s))
            .collect();
        self
    }

    /// The signatures of the zone `origin`, when it is signed.
    pub fn signed(&self, origin: &LowerName) -> Option<&Arc<crate::dnssec::signed::SignedZone>> {
        self.signed.get(origin)
    }

    /// Limit responses as `rrl` says.
    pub(crate) fn with_rrl(mut self, rrl: crate::rrl::RrlSettings) -> Authority {
        self.rrl = rrl;
        self
    }

    /// Allow zone transfers to `transfer` and NOTIFY `notify` on reload.
    pub fn with_secondaries(
        mut self,
        transfer: Vec<ipnet::IpNet>,
        notify: Vec<std::net::SocketAddr>,
    ) -> Authority {
        self.transfer = transfer;
        self.notify = notify;
        self
    }

    /// This authority with every signed zone whose signatures are past half their
    /// validity at `now` signed again (serial one up); `None` when none is due.
    pub fn resigned(&self, now: std::time::SystemTime) -> Option<Authority> {
        if !self.signed.values().any(|s| s.due(now)) {
            return None;
        }
        let mut signed = self.signed.clone();
        let zones = self
            .zones
            .iter()
            .map(|z| match self.signed.get(&z.origin) {
                Some(s) if s.due(now) => {
                    let (zone, again) = s.resigned(z.serial());
                    signed.insert(z.origin.clone(), again);
                    zone
                }
                _ => z.clone(),
            })
            .collect();
        Some(Authority {
            zones,
            signed,
            pools: self.pools.clone(),
            transfer: self.transfer.clone(),
            notify: self.notify.clone(),
            rrl: self.rrl.clone(),
            _served: self._served.clone(),
        })
    }

    /// The secondaries to NOTIFY, and the zones (origin, SOA) to tell them about.
    pub fn notify_targets(&self) -> (Vec<std::net::SocketAddr>, Vec<Record>) {
        (
            self.notify.clone(),
            self.zones.iter().map(|z| z.soa().clone()).collect(),
        )
    }

    /// A zone transfer (AXFR; IXFR answered with the whole zone, RFC 1995 §4) over TCP:
    /// the messages to send, or one REFUSED / NOTAUTH.
    pub fn transfer(&self, q: &Message, peer: std::net::IpAddr) -> Vec<Message> {
        let peer = peer.to_canonical();
        if !self.transfer.iter().any(|n| n.contains(&peer)) {
            return vec![crate::wire::response_for(q, ResponseCode::Refused)];
        }
        let lq = LowerName::new(&q.queries[0].name);
        let Some(zone) = self.zones.iter().find(|z| z.origin == lq) else {
            return vec![crate::wire::response_for(q, ResponseCode::NotAuth)];
        };
        let mut records = zone.transfer_records();
        // the pooled names with every address now up (signed when the zone is), so a
        // secondary answers them — and what its denial chain says they hold is there
        let end = records.pop();
        for pool in self.pools.iter().filter(|p| {
            zone.origin.zone_of(&p.name) && zone.cut_for(&Name::from(&p.name)).is_none()
        }) {
            let name = Name::from(&pool.name);
            for t in pool.types() {
                let set = pool.answer(&name, t);
                if set.is_empty() {
                    continue;
                }
                if let Some(s) = self.signed.get(&zone.origin) {
                    records.extend(s.sign_rrset(&name, t, &set));
                }
                records.extend(set);
            }
        }
        records.extend(end);
        // ~100 records a message keeps each well under the 64 KiB a TCP message holds
        records
            .chunks(100)
            .map(|chunk| {
                let mut m = crate::wire::response_for(q, ResponseCode::NoError);
                m.metadata.authoritative = true;
                m.answers = chunk.to_vec();
                m
            })
            .collect()
    }

    /// Is this name answered from a pool (answers change from query to query)?
    pub fn is_pooled(&self, name: &Name) -> bool {
        let ln = LowerName::new(name);
        self.pools.iter().any(|p| p.name == ln)
    }

    /// The DNS load-balancing pools.
    pub fn pools(&self) -> &[Arc<DnsPool>] {
        &self.pools
    }

    /// Zones loaded.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The zone that answers `name`/`rtype`: the most specific one holding the name —
    /// but a DS at a zone's apex is its parent's, when the parent is served here too
    /// (RFC 4035 §3.1.4.1).
    fn zone_for(&self, name: &LowerName, rtype: RecordType) -> Option<&Zone> {
        let mut holding = self.zones.iter().filter(|z| z.origin.zone_of(name));
        let first = holding.next()?;
        if rtype == RecordType::DS && first.origin == *name {
            return holding.next().or(Some(first));
        }
        Some(first)
    }

    /// The answer without DNSSEC records.
    fn answer_plain(&self, q: &Message) -> Message {
        let query = &q.queries[0];
        let qname = query.name.clone();
        let lq = LowerName::new(&qname);
        let Some(zone) = self.zone_for(&lq, query.query_type) else {
            return crate::wire::response_for(q, ResponseCode::Refused);
        };
        let mut r = crate::wire::response_for(q, ResponseCode::NoError);
        if query.query_type == RecordType::TXT
            && let Some(values) = crate::challenge::dns01().txt(&qname.to_ascii())
        {
            // an ACME DNS-01 record this process published (short-lived: TTL 0)
            r.metadata.authoritative = true;
            r.answers = values
                .into_iter()
                .map(|v| {
                    Record::from_rdata(
                        qname.clone(),
                        0,
                        RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![v])),
                    )
                })
                .collect();
            return r;
        }
        if let Some(pool) = self.pools.iter().find(|p| p.name == lq) {
            r.metadata.authoritative = true;
            let answers = pool.answer(&qname, query.query_type);
            if answers.is_empty() {
                r.authorities.push(zone.negative_soa());
            }
            r.answers = answers;
            return r;
        }
        let a = zone.answer(&qname, query.query_type);
        r.metadata.authoritative = a.authoritative;
        if a.nxdomain {
            r.metadata.response_code = ResponseCode::NXDomain;
        }
        r.answers = a.answers;
        r.authorities = a.authorities;
        r.additionals = a.additionals;
        self.follow_into_pool(&mut r, query.query_type);
        r
    }

    /// Answer one decoded query; a DO query to a signed zone gets the RRSIGs and the
    /// denial proofs with it (RFC 4035 §3.1).
    pub fn answer(&self, q: &Message) -> Message {
        let mut r = self.answer_plain(q);
        let dnssec_ok = q.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        if !dnssec_ok {
            return r;
        }
        if let Some(e) = r.edns.as_mut() {
            e.set_dnssec_ok(true);
        }
        let lq = LowerName::new(&q.queries[0].name);
        if let Some(zone) = self.zone_for(&lq, q.queries[0].query_type)
            && let Some(signed) = self.signed.get(&zone.origin)
            && matches!(
                r.metadata.response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            )
        {
            signed.decorate(zone, &mut r);
        }
        r
    }

    /// A CNAME chain that ends at a pooled name (`api CNAME www` where `www` is a pool)
    /// goes on into the pool's answer, as it would into any record of the zone: the zone
    /// alone does not know the name, and would say NXDOMAIN.
    fn follow_into_pool(&self, r: &mut Message, qtype: RecordType) {
        if qtype == RecordType::CNAME {
            return;
        }
        let Some(target) = r.answers.last().and_then(|rr| match &rr.data {
            RData::CNAME(c) => Some(c.0.clone()),
            _ => None,
        }) else {
            return;
        };
        let lt = LowerName::new(&target);
        let Some(pool) = self.pools.iter().find(|p| p.name == lt) else {
            return;
        };
        let answers = pool.answer(&target, qtype);
        r.metadata.response_code = ResponseCode::NoError;
        r.authorities.clear();
        if answers.is_empty()
            && let Some(zone) = self.zones.iter().find(|z| z.origin.zone_of(&lt))
        {
            r.authorities.push(zone.negative_soa());
        }
        r.answers.extend(answers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ds_at_a_child_apex_is_answered_by_the_parent_served_beside_it() {
        let parent = Zone::parse(
            "$ORIGIN p.test.\n$TTL 60\n@ IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\nc IN NS ns1.c\nns1.c IN A 127.0.0.1\nc IN DS 4242 13 2 3490A6806D47F17A34C29E2CE80E8A999FFBE4BE8D7A32E40C6D9E0B2F7C2A1D\n",
            Path::new("p"),
            None,
        )
        .unwrap();
        let child = Zone::parse(
            "$ORIGIN c.p.test.\n$TTL 60\n@ IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\n",
            Path::new("c"),
            None,
        )
        .unwrap();
        let a = Authority::new(vec![parent, child], Vec::new());
        let ask = |rtype| {
            let mut m = Message::new(
                1,
                hickory_proto::op::MessageType::Query,
                hickory_proto::op::OpCode::Query,
            );
            m.add_query(hickory_proto::op::Query::query(
                Name::from_ascii("c.p.test.").unwrap(),
                rtype,
            ));
            a.answer(&m)
        };
        let ds = ask(RecordType::DS);
        assert_eq!(ds.answers.len(), 1, "{ds:?}");
        assert_eq!(ds.answers[0].record_type(), RecordType::DS);
        // every other type at the apex is the child's
        let soa = ask(RecordType::SOA);
        assert_eq!(soa.answers[0].name, Name::from_ascii("c.p.test.").unwrap());
    }

    #[test]
    fn signed_zones_are_signed_again_past_half_their_validity_with_the_serial_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut zone = Zone::parse(
            "$ORIGIN resign.test.\n$TTL 60\n@ IN SOA ns1 admin 7 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\n",
            Path::new("z"),
            None,
        )
        .unwrap();
        let keys = crate::dnssec::keys::ZoneKeys::load_or_create(
            dir.path(),
            &Name::from_ascii("resign.test.").unwrap(),
            crate::dnssec::keys::SigningAlgorithm::EcdsaP256Sha256,
        )
        .unwrap();
        let how = crate::dnssec::signed::Signing {
            validity: Duration::from_secs(10 * 86400),
            ..Default::default()
        };
        let signed =
            crate::dnssec::signed::SignedZone::sign(&mut zone, Arc::new(keys), &[], 7, &how);
        let a = Authority::new(vec![zone], Vec::new()).with_signed([signed]);
        let now = std::time::SystemTime::now();
        assert!(a.resigned(now).is_none(), "fresh signatures are kept");
        let later = now + Duration::from_secs(5 * 86400 + 1);
        let b = a.resigned(later).expect("due after half the validity");
        assert_eq!(b.zones()[0].serial(), 8);
        let rrsigs = b.zones()[0]
            .get(
                &LowerName::new(&Name::from_ascii("resign.test.").unwrap()),
                RecordType::RRSIG,
            )
            .unwrap();
        assert!(
            rrsigs.len() >= 4,
            "SOA, NS, DNSKEY, NSEC signed: {rrsigs:?}"
        );
        assert!(b.resigned(now).is_none());
    }

    #[test]
    fn a_published_acme_record_is_answered_by_the_zone_holding_it() {
        let zone = Zone::parse(
            "$ORIGIN dns01-auth.test.\n$TTL 60\n@ IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\n",
            Path::new("z"),
            None,
        )
        .unwrap();
        let a = Authority::new(vec![zone], Vec::new());
        assert!(crate::challenge::dns01().serves("www.dns01-auth.test"));
        let q = |name: &str| {
            let mut m = Message::new(
                1,
                hickory_proto::op::MessageType::Query,
                hickory_proto::op::OpCode::Query,
            );
            m.add_query(hickory_proto::op::Query::query(
                Name::from_ascii(name).unwrap(),
                RecordType::TXT,
            ));
            a.answer(&m)
        };
        let name = "_acme-challenge.dns01-auth.test.";
        assert_eq!(q(name).metadata.response_code, ResponseCode::NXDomain);
        crate::challenge::dns01().publish(name, "one");
        crate::challenge::dns01().publish(name, "two");
        let r = q(name);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        let values: Vec<String> = r
            .answers
            .iter()
            .map(|rr| match &rr.data {
                RData::TXT(t) => t.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, vec!["one".to_string(), "two".to_string()]);
        crate::challenge::dns01().withdraw(name, "one");
        crate::challenge::dns01().withdraw(name, "two");
        assert_eq!(q(name).metadata.response_code, ResponseCode::NXDomain);
        drop(a);
        assert!(!crate::challenge::dns01().serves("www.dns01-auth.test"));
    }
}
