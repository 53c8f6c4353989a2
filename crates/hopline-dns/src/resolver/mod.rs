//! The resolver: hosts file → cache → a forwarder (stub mode) or the hierarchy itself
//! (iterative from the root hints), recording every step for `--trace`.
//!
//! Caching as a real resolver caches: positive answers until their smallest TTL,
//! negative answers (NXDOMAIN, NODATA) for min(SOA TTL, SOA MINIMUM) per RFC 2308, CNAME
//! chains per link, delegations (NS + glue) so later questions start at the closest
//! known zone; bounded in memory. Safety: random query IDs and source ports, responses
//! must match the question, records outside the asked server's bailiwick are ignored,
//! truncated UDP answers are retried over TCP, servers are tried fastest-first by
//! measured RTT, referral chains and CNAME loops are cut off with a clear error.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use serde::Serialize;
use tokio::time::Instant;

use crate::error::ResolveError;
use crate::hints::RootHints;

mod aggressive;
mod standing;
mod trust;
pub use standing::Security;
use standing::ZoneTrust;

/// Which layer answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "layer", content = "server", rename_all = "snake_case")]
pub enum Answered {
    /// The resolver's cache.
    Cache,
    /// The hosts file.
    HostsFile,
    /// A forwarding resolver.
    Forwarder(SocketAddr),
    /// Iteration from the root.
    Recursive,
}

/// One record, printable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordView {
    /// Owner name.
    pub name: String,
    /// Type, e.g. "A".
    #[serde(rename = "type")]
    pub rtype: String,
    /// Remaining TTL, seconds.
    pub ttl: u32,
    /// RDATA in presentation format.
    pub data: String,
}

impl From<&Record> for RecordView {
    fn from(r: &Record) -> Self {
        RecordView {
            name: r.name.to_string(),
            rtype: r.record_type().to_string(),
            ttl: r.ttl,
            data: r.data.to_string(),
        }
    }
}

/// One answer the resolver's cache holds, as status pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedAnswer {
    /// The name asked, lowercase, e.g. "www.shop.test.".
    pub name: String,
    /// The type asked, e.g. "A".
    #[serde(rename = "type")]
    pub rtype: String,
    /// "answer", "nxdomain" or "nodata".
    pub kind: &'static str,
    /// Each record's data, in the order every client gets them (for A/AAAA the
    /// addresses, the first being the one a client connects to).
    pub data: Vec<String>,
    /// The TTL it was stored with, seconds.
    pub ttl: u32,
    /// Seconds until it expires and the next question is asked upstream again.
    pub ttl_left: u32,
}

/// One server asked during a resolution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceStep {
    /// Server asked (or "cache" / "hosts").
    pub server: String,
    /// The zone it serves (as far as we know).
    pub zone: String,
    /// The question, e.g. "www.shop.test. A".
    pub question: String,
    /// referral | answer | cname | nxdomain | nodata | timeout | error | lame | cache | hosts
    pub kind: String,
    /// What it said, briefly.
    pub detail: String,
    /// Round trip, ms.
    pub rtt_ms: f64,
    /// The TTL learned.
    pub ttl: Option<u32>,
    /// Over TCP (after a truncated UDP answer)?
    pub tcp: bool,
}

/// The result of a lookup.
#[derive(Debug, Clone, Serialize)]
pub struct Lookup {
    /// The name asked.
    pub name: String,
    /// Addresses (A/AAAA lookups).
    pub addrs: Vec<IpAddr>,
    /// Every answer record (CNAMEs included).
    pub records: Vec<RecordView>,
    /// Smallest TTL of the answer.
    #[serde(serialize_with = "ser_secs")]
    pub ttl: Duration,
    /// Which layer answered.
    pub answered_by: Answered,
    /// DNSSEC: secure (validated from a trust anchor), insecure (proven unsigned) or
    /// unchecked (no anchor covers it).
    pub security: Security,
    /// Every step taken.
    pub steps: Vec<TraceStep>,
    /// Total time.
    #[serde(serialize_with = "ser_ms")]
    pub elapsed: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}
fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

#[derive(Debug, Clone)]
enum Mode {
    Forward(Vec<SocketAddr>),
    Recursive(RootHints),
}

/// CNAME links followed at most (Unbound follows 11; a longer chain is a loop or abuse).
const MAX_CHAIN: usize = 12;

/// A cached answer for (name, type).
#[derive(Debug)]
struct Entry {
    records: Vec<Record>,
    rcode: ResponseCode,
    soa: Option<Record>,
    stored: Instant,
    ttl: u32,
    /// Validated or not, and how.
    security: Security,
    /// The RRSIGs of the records (or, for a negative answer, the SOA's and the NSEC
    /// proof with theirs), for clients that ask with DO.
    sigs: Vec<Record>,
}

impl Entry {
    fn remaining(&self, now: Instant) -> Option<u32> {
        let age = now.saturating_duration_since(self.stored).as_secs() as u32;
        (age < self.ttl).then(|| self.ttl - age)
    }
    fn records_now(&self, now: Instant) -> Vec<Record> {
        let age = now.saturating_duration_since(self.stored).as_secs() as u32;
        self.records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.ttl = r.ttl.saturating_sub(age);
                r
            })
            .collect()
    }
}

/// A known delegation: the zone and its servers' addresses.
#[derive(Debug)]
struct Delegation {
    zone: Name,
    servers: Vec<(String, IpAddr)>,
}

/// Builds a [`Resolver`].
#[derive(Debug)]
pub struct ResolverBuilder {
    hosts: Option<PathBuf>,
    mode: Mode,
    cache_entries: u64,
    query_port: u16,
    timeout: Duration,
    max_ttl: u32,
    max_negative_ttl: u32,
    anchors: Option<Vec<Record>>,
    aggressive_nsec: bool,
}

impl ResolverBuilder {
    /// Validate DNSSEC from these trust anchors (DS or DNSKEY records, e.g. from
    /// [`crate::dnssec::validate::parse_anchors`]). By default a resolver iterating from
    /// the real root validates from the IANA root keys; one with other root hints (a
    /// private hierarchy) validates only when given anchors.
    pub fn trust_anchors(mut self, anchors: Vec<Record>) -> Self {
        self.anchors = Some(anchors);
        self
    }
    /// Answer from validated NSEC records what they prove absent (RFC 8198; on by
    /// default, as in Unbound and Knot Resolver).
    pub fn aggressive_nsec(mut self, on: bool) -> Self {
        self.aggressive_nsec = on;
        self
    }
    /// Do not validate DNSSEC.
    pub fn no_validation(mut self) -> Self {
        self.anchors = Some(Vec::new());
        self
    }
    /// Consult this hosts file first (default `/etc/hosts`).
    pub fn hosts_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.hosts = Some(path.into());
        self
    }
    /// No hosts file.
    pub fn no_hosts_file(mut self) -> Self {
        self.hosts = None;
        self
    }
    /// Forward to these resolvers (stub mode).
    pub fn forward(mut self, servers: Vec<SocketAddr>) -> Self {
        self.mode = Mode::Forward(servers);
        self
    }
    /// Forward to the nameservers of `/etc/resolv.conf` (the default).
    pub fn system(mut self) -> Self {
        self.mode = Mode::Forward(system_nameservers());
        self
    }
    /// Iterate from these root hints.
    pub fn recursive(mut self, hints: RootHints) -> Self {
        self.mode = Mode::Recursive(hints);
        self
    }
    /// Cache size in entries.
    pub fn cache_entries(mut self, n: u64) -> Self {
        self.cache_entries = n;
        self
    }
    /// Send iterative queries to this port instead of 53 (test hierarchies).
    /// Cap on how long an answer is cached and the TTL given to clients (default 86400 s).
    pub fn max_ttl(mut self, secs: u32) -> Self {
        self.max_ttl = secs;
        self
    }

    /// Cap on how long NXDOMAIN / NODATA is cached (default 3600 s).
    pub fn max_negative_ttl(mut self, secs: u32) -> Self {
        self.max_negative_ttl = secs;
        self
    }

    pub fn query_port(mut self, port: u16) -> Self {
        self.query_port = port;
        self
    }
    /// Per-query timeout (default 1.5 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Build.
    pub fn build(self) -> Result<Resolver, ResolveError> {
        let hosts = match &self.hosts {
            Some(p) if p.as_os_str().is_empty() => HashMap::new(),
            Some(p) => read_hosts(p)?,
            None => HashMap::new(),
        };
        if let Mode::Forward(s) = &self.mode
            && s.is_empty()
        {
            return Err(ResolveError::Config("no nameserver to forward to".into()));
        }
        let anchors = match (self.anchors, &self.mode) {
            (_, Mode::Forward(_)) => Vec::new(),
            (Some(a), _) => a,
            (None, Mode::Recursive(h)) if *h == RootHints::builtin() => {
                crate::dnssec::validate::iana_root_anchors()
            }
            (None, _) => Vec::new(),
        };
        Ok(Resolver {
            inner: Arc::new(Inner {
                nsec: (self.aggressive_nsec && !anchors.is_empty())
                    .then(aggressive::NsecCache::new),
                anchors,
                trust: moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(600))
                    .build(),
                mode: self.mode,
                hosts,
                cache: moka::sync::Cache::builder()
                    .max_capacity(self.cache_entries.max(16))
                    .build(),
                delegations: moka::sync::Cache::builder()
                    .max_capacity((self.cache_entries / 4).max(16))
                    .time_to_live(Duration::from_secs(3600))
                    .build(),
                rtt: parking_lot::Mutex::new(HashMap::new()),
                lame: moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(900))
                    .build(),
                query_port: self.query_port,
                max_ttl: self.max_ttl,
                max_negative_ttl: self.max_negative_ttl,
                timeout: self.timeout,
            }),
        })
    }
}

fn system_nameservers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let v: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if v.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], 53))]
    } else {
        v
    }
}

fn read_hosts(path: &Path) -> Result<HashMap<String, Vec<IpAddr>>, ResolveError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new("/etc/hosts") => {
            String::new()
        }
        Err(e) => {
            return Err(ResolveError::Config(format!(
                "hosts file {}: {e}",
                path.display()
            )));
        }
    };
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let Some(ip) = f.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        for name in f {
            let e = map
                .entry(name.trim_end_matches('.').to_ascii_lowercase())
                .or_default();
            if !e.contains(&ip) {
                e.push(ip);
            }
        }
    }
    Ok(map)
}

struct Inner {
    /// DNSSEC trust anchors (none: no validation).
    anchors: Vec<Record>,
    /// Validated NSEC records by zone, for answering from them (RFC 8198).
    nsec: Option<aggressive::NsecCache>,
    /// Each zone's standing in the chain of trust, until the instant it may be held to.
    trust: moka::sync::Cache<LowerName, (ZoneTrust, Instant)>,
    mode: Mode,
    hosts: HashMap<String, Vec<IpAddr>>,
    cache: moka::sync::Cache<(LowerName, RecordType), Arc<Entry>>,
    delegations: moka::sync::Cache<LowerName, Arc<Delegation>>,
    rtt: parking_lot::Mutex<HashMap<IpAddr, f64>>,
    /// (server, zone) pairs found lame — a server that answered REFUSED, SERVFAIL, NOTIMP
    /// or FORMERR for a zone delegated to it — kept 15 minutes like Unbound's infra cache;
    /// asked last while the zone has other servers.
    lame: moka::sync::Cache<(IpAddr, String), ()>,
    query_port: u16,
    timeout: Duration,
    max_ttl: u32,
    max_negative_ttl: u32,
}

/// The resolver. Cheap to clone; share it.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("mode", &self.inner.mode)
            .finish()
    }
}

/// An internal outcome: records or a negative answer, from some layer.
struct Resolved {
    records: Vec<Record>,
    rcode: ResponseCode,
    soa: Option<Record>,
    answered_by: Answered,
    security: Security,
}

impl Resolver {
    /// Start building: defaults are `/etc/hosts`, forwarding to `/etc/resolv.conf`'s
    /// nameservers, 100,000 cache entries.
    pub fn builder() -> ResolverBuilder {
        ResolverBuilder {
            hosts: Some(PathBuf::from("/etc/hosts")),
            mode: Mode::Forward(system_nameservers()),
            cache_entries: 100_000,
            query_port: 53,
            timeout: Duration::from_millis(1500),
            max_ttl: 86_400,
            max_negative_ttl: 3_600,
            anchors: None,
            aggressive_nsec: true,
        }
    }

    /// A and AAAA of a host.
    pub async fn lookup_ip(&self, host: &str) -> Result<Lookup, ResolveError> {
        let started = Instant::now();
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(Lookup {
                name: host.into(),
                addrs: vec![ip],
                records: vec![],
                ttl: Duration::ZERO,
                answered_by: Answered::HostsFile,
                security: Security::Unchecked,
                steps: vec![],
                elapsed: started.elapsed(),
            });
        }
        let (a, aaaa) = tokio::join!(
            self.lookup(host, RecordType::A),
            self.lookup(host, RecordType::AAAA)
        );
        match (a, aaaa) {
            (Ok(mut a), Ok(b)) => {
                a.addrs.extend(b.addrs);
                a.records.extend(b.records);
                a.steps.extend(b.steps);
                a.ttl = a.ttl.min(b.ttl);
                a.security = a.security.min(b.security);
                a.elapsed = started.elapsed();
                Ok(a)
            }
            (Ok(mut a), Err(_)) | (Err(_), Ok(mut a)) => {
                a.elapsed = started.elapsed();
                Ok(a)
            }
            (Err(e), Err(ResolveError::NoData { .. })) => Err(e),
            (Err(ResolveError::NoData { .. }), Err(e)) => Err(e),
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// One record type of a name.
    pub async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Lookup, ResolveError> {
        self.lookup_traced(name, rtype).await.0
    }

    /// [`Resolver::lookup`], keeping the steps taken also when it fails (the failing
    /// step last, with its reason), for `hopline resolve --trace`: on success they are
    /// in the [`Lookup`], on failure in the second value.
    pub async fn lookup_traced(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> (Result<Lookup, ResolveError>, Vec<TraceStep>) {
        let mut steps = Vec::new();
        let r = self.lookup_steps(name, rtype, &mut steps).await;
        match r {
            Ok(mut l) => {
                l.steps = steps;
                (Ok(l), Vec::new())
            }
            Err(e) => (Err(e), steps),
        }
    }

    async fn lookup_steps(
        &self,
        name: &str,
        rtype: RecordType,
        steps: &mut Vec<TraceStep>,
    ) -> Result<Lookup, ResolveError> {
        let started = Instant::now();
        let qname = parse_name(name)?;
        let r = self.resolve(&qname, rtype, steps, true).await?;
        let display = qname.to_string();
        match r.rcode {
            ResponseCode::NXDomain => Err(ResolveError::NxDomain { name: display }),
            ResponseCode::NoError
                if r.records.iter().all(|x| x.record_type() != rtype)
                    && rtype != RecordType::CNAME =>
            {
                if r.records.is_empty() {
                    Err(ResolveError::NoData {
                        name: display,
                        rtype: rtype.to_string(),
                    })
                } else {
                    // a CNAME chain that ends without the type
                    Err(ResolveError::NoData {
                        name: display,
                        rtype: rtype.to_string(),
                    })
                }
            }
            ResponseCode::NoError => {
                let addrs = r
                    .records
                    .iter()
                    .filter_map(|x| match &x.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect();
                let ttl = r.records.iter().map(|x| x.ttl).min().unwrap_or(0);
                Ok(Lookup {
                    name: display,
                    addrs,
                    records: r.records.iter().map(RecordView::from).collect(),
                    ttl: Duration::from_secs(ttl as u64),
                    answered_by: r.answered_by,
                    security: r.security,
                    steps: Vec::new(),
                    elapsed: started.elapsed(),
                })
            }
            other => Err(ResolveError::ServFail {
                name: display,
                reason: format!("rcode {other}"),
            }),
        }
    }

    /// Answer a stub client's query message (the resolver service).
    pub async fn answer(&self, q: &Message) -> Message {
        if let Some(m) = self.answer_cached(q) {
            return m;
        }
        let query = &q.queries[0];
        let mut steps = Vec::new();
        let mut r = crate::wire::response_for(q, ResponseCode::NoError);
        r.metadata.recursion_available = true;
        // CD: the client validates for itself (RFC 4035 §3.2.2)
        let validate = !q.metadata.checking_disabled;
        match self
            .resolve(&query.name, query.query_type, &mut steps, validate)
            .await
        {
            Ok(res) => {
                authenticated(q, &mut r, res.security);
                r.metadata.response_code = res.rcode;
                r.answers = res.records;
                if let Some(soa) = &res.soa {
                    r.authorities.push(soa.clone());
                }
                self.add_signatures(q, &mut r);
                r.authorities.retain(|a| a.record_type() != RecordType::SOA);
                same_case(&mut r.answers, &query.name);
                for a in &mut r.answers {
                    a.ttl = a.ttl.min(self.inner.max_ttl);
                }
                if let Some(mut soa) = res.soa {
                    soa.ttl = soa.ttl.min(self.inner.max_negative_ttl);
                    r.authorities.push(soa);
                }
            }
            Err(ResolveError::NxDomain { .. }) => r.metadata.response_code = ResponseCode::NXDomain,
            Err(ResolveError::Bogus { ede, reason, .. }) => {
                r.metadata.response_code = ResponseCode::ServFail;
                extended_error(q, &mut r, ede, &reason);
            }
            // an upstream's REFUSED is its business: the client gets SERVFAIL (as Unbound)
            Err(_) => r.metadata.response_code = ResponseCode::ServFail,
        }
        r
    }

    /// The fast path of the service: a complete answer from the cache (following cached
    /// CNAME links), or `None`.
    pub fn answer_cached(&self, q: &Message) -> Option<Message> {
        let query = q.queries.first()?;
        let now = Instant::now();
        let key = (LowerName::new(&query.name), query.query_type);
        let validating = self.validating() && !q.metadata.checking_disabled;
        let direct = self
            .inner
            .cache
            .get(&key)
            .filter(|e| e.remaining(now).is_some())
            .filter(|e| !validating || e.security != Security::Unchecked);
        let (answers, rcode, soa, security) = match direct {
            // a cached CNAME alone is not a complete answer to another type
            Some(e)
                if e.rcode != ResponseCode::NoError
                    || query.query_type == RecordType::CNAME
                    || e.records.is_empty()
                    || e.records.iter().any(|r| answers_type(r, query.query_type)) =>
            {
                let soa = e.soa.clone().map(|mut soa| {
                    // the negative TTL counts down like a positive one
                    soa.ttl = soa.ttl.min(e.remaining(now).unwrap_or(0));
                    soa
                });
                (e.records_now(now), e.rcode, soa, e.security)
            }
            _ => {
                let r = self.cached_chain(
                    &query.name,
                    query.query_type,
                    &mut Vec::new(),
                    "",
                    validating,
                )?;
                (r.records, r.rcode, r.soa, r.security)
            }
        };
        let mut r = crate::wire::response_for(q, rcode);
        authenticated(q, &mut r, security);
        r.answers = answers;
        r.authorities.extend(soa);
        self.add_signatures(q, &mut r);
        let mut answers = std::mem::take(&mut r.answers);
        r.metadata.recursion_available = true;
        same_case(&mut answers, &query.name);
        r.answers = answers;
        Some(r)
    }

    /// What the cache holds now for names at or under `under` (e.g. the zones and DNS
    /// pools a topology serves), at most `limit` answers: in the order of `under` (the
    /// first that holds a name), then by name and type; expired answers left out.
    ///
    /// It walks the cache without counting as use (eviction order is left alone), so it
    /// costs O(cached entries) here and nothing on the query path: for status pages that
    /// look once a second, not for answering.
    pub fn cached(&self, under: &[Name], limit: usize) -> Vec<CachedAnswer> {
        if under.is_empty() || limit == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        let under: Vec<LowerName> = under.iter().map(LowerName::new).collect();
        let order = |a: &(usize, LowerName, RecordType, Arc<Entry>),
                     b: &(usize, LowerName, RecordType, Arc<Entry>)| {
            (a.0, &a.1, u16::from(a.2)).cmp(&(b.0, &b.1, u16::from(b.2)))
        };
        let mut found: Vec<(usize, LowerName, RecordType, Arc<Entry>)> = Vec::new();
        for (key, e) in self.inner.cache.iter() {
            let (name, rtype) = &*key;
            let Some(rank) = under.iter().position(|z| z.zone_of(name)) else {
                continue;
            };
            if e.remaining(now).is_none() {
                continue;
            }
            found.push((rank, name.clone(), *rtype, e));
            // only the best `limit` are kept while walking a big cache
            if found.len() >= 2 * limit + 64 {
                found.sort_by(order);
                found.truncate(limit);
            }
        }
        found.sort_by(order);
        found.truncate(limit);
        found
            .into_iter()
            .map(|(_, name, rtype, e)| CachedAnswer {
                name: name.to_string(),
                rtype: rtype.to_string(),
                kind: match e.rcode {
                    ResponseCode::NXDomain => "nxdomain",
                    _ if e.records.is_empty() => "nodata",
                    _ => "answer",
                },
                data: e.records.iter().map(|r| r.data.to_string()).collect(),
                ttl: e.ttl,
                ttl_left: e.remaining(now).unwrap_or(0),
            })
            .collect()
    }

    async fn resolve(
        &self,
        qname: &Name,
        rtype: RecordType,
        steps: &mut Vec<TraceStep>,
        validate: bool,
    ) -> Result<Resolved, ResolveError> {
        let validate = validate && self.validating();
        let question = format!("{qname} {rtype}");
        // 1. hosts file
        if matches!(rtype, RecordType::A | RecordType::AAAA) {
            let key = qname.to_string().trim_end_matches('.').to_ascii_lowercase();
            if let Some(ips) = self.inner.hosts.get(&key) {
                let records: Vec<Record> = ips
                    .iter()
                    .filter_map(|ip| match (ip, rtype) {
                        (IpAddr::V4(v4), RecordType::A) => {
                            Some(Record::from_rdata(qname.clone(), 0, RData::A((*v4).into())))
                        }
                        (IpAddr::V6(v6), RecordType::AAAA) => Some(Record::from_rdata(
                            qname.clone(),
                            0,
                            RData::AAAA((*v6).into()),
                        )),
                        _ => None,
                    })
                    .collect();
                steps.push(step(
                    "hosts",
                    "",
                    &question,
                    "hosts",
                    format!("{} address(es) from the hosts file", records.len()),
                    0.0,
                    None,
                    false,
                ));
                return Ok(Resolved {
                    records,
                    rcode: ResponseCode::NoError,
                    soa: None,
                    answered_by: Answered::HostsFile,
                    security: Security::Unchecked,
                });
            }
        }
        // 2. cache (whole answer, following cached CNAME links)
        if let Some(r) = self.cached_chain(qname, rtype, steps, &question, validate) {
            return Ok(r);
        }
        // 2b. what validated NSEC records already prove absent
        if validate && let Some(r) = self.proven_by_nsec(qname, rtype, steps, &question) {
            return Ok(r);
        }
        // 3. forwarder or the hierarchy
        match &self.inner.mode {
            Mode::Forward(servers) => self.forward(servers, qname, rtype, steps).await,
            Mode::Recursive(hints) => {
                let r =
                    Box::pin(self.iterate(hints, qname.clone(), rtype, steps, 0, validate)).await?;
                Ok(r)
            }
        }
    }

    fn cached_chain(
        &self,
        qname: &Name,
        rtype: RecordType,
        steps: &mut Vec<TraceStep>,
        question: &str,
        validating: bool,
    ) -> Option<Resolved> {
        let now = Instant::now();
        let mut chain = Vec::new();
        let mut name = qname.clone();
        // a validating lookup takes nothing from the cache that was not validated
        let usable = |e: &Entry| !validating || e.security != Security::Unchecked;
        let mut security = Security::Secure;
        for _ in 0..MAX_CHAIN {
            if let Some(e) = self.inner.cache.get(&(LowerName::new(&name), rtype))
                && let Some(left) = e.remaining(now)
                && usable(&e)
            {
                chain.extend(e.records_now(now));
                let kind = match e.rcode {
                    ResponseCode::NXDomain => "nxdomain",
                    _ if e.records.is_empty() => "nodata",
                    _ => "answer",
                };
                steps.push(step(
                    "cache",
                    "",
                    question,
                    "cache",
                    format!("{kind} from the cache, {left} s left"),
                    0.0,
                    Some(left),
                    false,
                ));
                let soa = e.soa.clone().map(|mut soa| {
                    // the negative TTL counts down like a positive one
                    soa.ttl = soa.ttl.min(left);
                    soa
                });
                return Some(Resolved {
                    records: chain,
                    rcode: e.rcode,
                    soa,
                    answered_by: Answered::Cache,
                    security: security.min(e.security),
                });
            }
            if rtype == RecordType::CNAME {
                return None;
            }
            let e = self
                .inner
                .cache
                .get(&(LowerName::new(&name), RecordType::CNAME))?;
            e.remaining(now)?;
            if !usable(&e) {
                return None;
            }
            security = security.min(e.security);
            let c = e.records_now(now).into_iter().next()?;
            let RData::CNAME(target) = &c.data else {
                return None;
            };
            name = target.0.clone();
            chain.push(c);
        }
        None
    }

    /// NXDOMAIN or NODATA made from the validated NSEC records held (RFC 8198), cached
    /// like an answer (with its proof, for DO clients).
    fn proven_by_nsec(
        &self,
        qname: &Name,
        rtype: RecordType,
        steps: &mut Vec<TraceStep>,
        question: &str,
    ) -> Option<Resolved> {
        let s = self.inner.nsec.as_ref()?.synthesize(qname, rtype)?;
        self.store(
            qname,
            rtype,
            vec![],
            s.rcode,
            Some(s.soa.clone()),
            Security::Secure,
        );
        self.keep_sigs(qname, rtype, s.proof);
        let kind = if s.rcode == ResponseCode::NXDomain {
            "nxdomain"
        } else {
            "nodata"
        };
        steps.push(step(
            "cache",
            "",
            question,
            "cache",
            format!(
                "{kind} proven by validated NSEC records in the cache (RFC 8198), {} s",
                s.ttl
            ),
            0.0,
            Some(s.ttl),
            false,
        ));
        Some(Resolved {
            records: vec![],
            rcode: s.rcode,
            soa: Some(s.soa),
            answered_by: Answered::Cache,
            security: Security::Secure,
        })
    }

    /// Keep the NSEC records of a secure negative answer of `zone` (RFC 8198).
    fn learn_nsec(&self, zone: &Name, soa: Option<&Record>, resp: &Message, security: Security) {
        if security != Security::Secure {
            return;
        }
        if let Some(c) = &self.inner.nsec {
            c.learn(
                zone,
                soa,
                &proof_of(resp, &LowerName::new(zone)),
                self.inner.max_negative_ttl,
            );
        }
    }

    fn store(
        &self,
        name: &Name,
        rtype: RecordType,
        mut records: Vec<Record>,
        rcode: ResponseCode,
        mut soa: Option<Record>,
        security: Security,
    ) {
        // capped like Unbound's cache-max-ttl / cache-max-negative-ttl
        let (max, max_neg) = (self.inner.max_ttl, self.inner.max_negative_ttl);
        for r in &mut records {
            r.ttl = r.ttl.min(max);
        }
        let ttl = match (&soa, records.iter().map(|r| r.ttl).min()) {
            (_, Some(t)) if rcode == ResponseCode::NoError => t,
            (Some(s), _) => match &s.data {
                RData::SOA(x) => s.ttl.min(x.minimum).min(max_neg),
                _ => s.ttl.min(max_neg),
            },
            _ => 0,
        };
        if let Some(s) = &mut soa {
            s.ttl = s.ttl.min(ttl.max(1));
        }
        if ttl == 0 {
            return;
        }
        self.inner.cache.insert(
            (LowerName::new(name), rtype),
            Arc::new(Entry {
                records,
                rcode,
                soa,
                stored: Instant::now(),
                ttl,
                security,
                sigs: Vec::new(),
            }),
        );
    }

    /// Keep `sigs` with the cached entry of `name`/`rtype` (its RRSIGs, or the proof of a
    /// negative answer).
    fn keep_sigs(&self, name: &Name, rtype: RecordType, sigs: Vec<Record>) {
        if sigs.is_empty() {
            return;
        }
        let key = (LowerName::new(name), rtype);
        if let Some(e) = self.inner.cache.get(&key) {
            self.inner.cache.insert(
                key,
                Arc::new(Entry {
                    records: e.records.clone(),
                    rcode: e.rcode,
                    soa: e.soa.clone(),
                    stored: e.stored,
                    ttl: e.ttl,
                    security: e.security,
                    sigs,
                }),
            );
        }
    }

    /// For a client that asked with DO: the RRSIGs of the answer's RRsets, and the proof
    /// of a negative answer, as cached with them.
    fn add_signatures(&self, q: &Message, r: &mut Message) {
        if !q.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok) {
            return;
        }
        let mut seen = std::collections::HashSet::new();
        let mut sigs = Vec::new();
        for rec in r
            .answers
            .iter()
            .filter(|a| a.record_type() != RecordType::RRSIG)
        {
            let key = (LowerName::new(&rec.name), rec.record_type());
            if seen.insert(key.clone())
                && let Some(e) = self.inner.cache.get(&key)
            {
                sigs.extend(e.sigs.iter().map(|s| {
                    let mut s = s.clone();
                    s.ttl = s.ttl.min(rec.ttl);
                    s
                }));
            }
        }
        // a wildcard's proof (NSEC and its RRSIGs) goes to the authority section
        let is_proof = |r: &Record| {
            matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3)
                || crate::dnssec::validate::as_rrsig(r).is_some_and(|s| {
                    matches!(s.input().type_covered, RecordType::NSEC | RecordType::NSEC3)
                })
        };
        let (proof, sigs): (Vec<Record>, Vec<Record>) = sigs.into_iter().partition(is_proof);
        r.answers.extend(sigs);
        r.authorities.extend(proof);
        if r.authorities
            .iter()
            .any(|a| a.record_type() == RecordType::SOA)
        {
            let query = &q.queries[0];
            let end = crate::dnssec::chain_end(&r.answers, &query.name);
            if let Some(e) = self
                .inner
                .cache
                .get(&(LowerName::new(&end), query.query_type))
            {
                r.authorities.extend(e.sigs.iter().cloned());
            }
        }
    }

    async fn forward(
        &self,
        servers: &[SocketAddr],
        qname: &Name,
        rtype: RecordType,
        steps: &mut Vec<TraceStep>,
    ) -> Result<Resolved, ResolveError> {
        let (server, resp) = self.ask(servers, qname, rtype, true, "", steps).await?;
        let rcode = resp.metadata.response_code;
        let soa = resp
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .cloned();
        if let Some(step) = steps.last_mut() {
            forwarded_step(
                step,
                qname,
                rtype,
                rcode,
                &resp.answers,
                soa.as_ref(),
                server,
            );
        }
        match rcode {
            ResponseCode::NoError | ResponseCode::NXDomain => {
                let records = resp.answers.clone();
                // a forwarder that validated says so with AD (we ask with AD, RFC 6840
                // §5.7); a stub trusts its configured resolver for it
                let security = if resp.metadata.authentic_data {
                    Security::Secure
                } else {
                    Security::Unchecked
                };
                // cache each CNAME link and the final records
                self.cache_answer_section(qname, rtype, &records, security);
                if records.is_empty() || rcode == ResponseCode::NXDomain {
                    self.store(qname, rtype, vec![], rcode, soa.clone(), security);
                }
                Ok(Resolved {
                    records,
                    rcode,
                    soa,
                    answered_by: Answered::Forwarder(server),
                    security,
                })
            }
            ResponseCode::Refused => Err(ResolveError::Refused {
                server: server.to_string(),
            }),
            other => Err(ResolveError::ServFail {
                name: qname.to_string(),
                reason: format!("{server} answered {other}"),
            }),
        }
    }

    /// Cache an answer section: CNAME links individually, the final RRset under its owner.
    fn cache_answer_section(
        &self,
        qname: &Name,
        rtype: RecordType,
        records: &[Record],
        security: Security,
    ) {
        let mut cur = qname.clone();
        for _ in 0..MAX_CHAIN {
            let lc = LowerName::new(&cur);
            let finals: Vec<Record> = records
                .iter()
                .filter(|r| LowerName::new(&r.name) == lc && answers_type(r, rtype))
                .cloned()
                .collect();
            if !finals.is_empty() {
                let owner = finals[0].name.clone();
                self.store(&cur, rtype, finals, ResponseCode::NoError, None, security);
                self.keep_sigs(&cur, rtype, covering(records, &owner, rtype));
                return;
            }
            let Some(c) = records
                .iter()
                .find(|r| LowerName::new(&r.name) == lc && r.record_type() == RecordType::CNAME)
            else {
                return;
            };
            self.store(
                &cur,
                RecordType::CNAME,
                vec![c.clone()],
                ResponseCode::NoError,
                None,
                security,
            );
            self.keep_sigs(
                &cur,
                RecordType::CNAME,
                covering(records, &c.name, RecordType::CNAME),
            );
            let RData::CNAME(t) = &c.data else { return };
            cur = t.0.clone();
        }
    }

    /// A NODATA answer (the name is there, no record of the type): remembered with the
    /// SOA's negative TTL, and the step says why, who said so and for how long.
    #[allow(clippy::too_many_arguments)]
    fn nodata(
        &self,
        name: &Name,
        rtype: RecordType,
        soa: Option<Record>,
        chain: Vec<Record>,
        step: &mut TraceStep,
        server: SocketAddr,
        why: String,
        security: Security,
    ) -> Resolved {
        self.store(
            name,
            rtype,
            vec![],
            ResponseCode::NoError,
            soa.clone(),
            security,
        );
        negative_step(step, "nodata", why, server, soa.as_ref());
        Resolved {
            records: chain,
            rcode: ResponseCode::NoError,
            soa,
            answered_by: Answered::Recursive,
            security: Security::Unchecked,
        }
    }

    /// Validate `resp` when validating (`sec` is `Some`), folding its standing into `sec`;
    /// a bogus answer is an error.
    #[allow(clippy::too_many_arguments)]
    async fn checked(
        &self,
        hints: &RootHints,
        resp: &Message,
        name: &Name,
        rtype: RecordType,
        zone: &Name,
        steps: &mut Vec<TraceStep>,
        depth: u8,
        sec: &mut Option<Security>,
    ) -> Result<Security, ResolveError> {
        let Some(acc) = sec else {
            return Ok(Security::Unchecked);
        };
        let s = self
            .check(hints, resp, name, rtype, zone, steps, depth)
            .await?;
        *acc = (*acc).min(s);
        Ok(s)
    }

    /// Where to start asking for `name`/`rtype`: the closest zone whose servers are known
    /// — for a DS, the parent's side of the cut (RFC 4035 §3.1.4.1), never the child's,
    /// even when the child's servers are known.
    fn start_for(
        &self,
        hints: &RootHints,
        name: &Name,
        rtype: RecordType,
    ) -> (Name, Vec<(String, IpAddr)>) {
        if rtype == RecordType::DS && !name.is_root() {
            self.closest(hints, &name.base_name())
        } else {
            self.closest(hints, name)
        }
    }

    /// The closest enclosing zone we know servers for.
    fn closest(&self, hints: &RootHints, name: &Name) -> (Name, Vec<(String, IpAddr)>) {
        let mut n = name.clone();
        loop {
            if let Some(d) = self.inner.delegations.get(&LowerName::new(&n)) {
                return (d.zone.clone(), d.servers.clone());
            }
            if n.is_root() {
                break;
            }
            n = n.base_name();
        }
        (Name::root(), hints.servers.clone())
    }

    /// Iterative resolution of `qname`: down from the closest zone whose servers are
    /// known to the servers of the name's zone, then on along the CNAME chain (each link
    /// from its own closest zone). `depth` counts the nested lookups of servers' names.
    async fn iterate(
        &self,
        hints: &RootHints,
        qname: Name,
        rtype: RecordType,
        steps: &mut Vec<TraceStep>,
        depth: u8,
        validate: bool,
    ) -> Result<Resolved, ResolveError> {
        if depth > 4 {
            return Err(ResolveError::Loop(format!(
                "resolving the name servers of {qname} needs more than 4 nested lookups"
            )));
        }
        let mut chain: Vec<Record> = Vec::new();
        let mut name = qname.clone();
        // the weakest standing of the answers along the chain (None: not validating)
        let mut sec = (validate && self.validating()).then_some(Security::Secure);
        for _hop in 0..MAX_CHAIN {
            let question = format!("{name} {rtype}");
            if name != qname
                && let Some(r) = self.cached_chain(&name, rtype, steps, &question, sec.is_some())
            {
                chain.extend(r.records);
                return Ok(Resolved {
                    records: chain,
                    rcode: r.rcode,
                    soa: r.soa,
                    answered_by: Answered::Recursive,
                    security: sec.map_or(Security::Unchecked, |s| s.min(r.security)),
                });
            }
            match self
                .descend(hints, &name, rtype, &mut chain, steps, depth, &mut sec)
                .await?
            {
                Hop::Done(mut r) => {
                    r.security = sec.unwrap_or(Security::Unchecked);
                    return Ok(r);
                }
                Hop::Alias(target) => name = target,
            }
        }
        Err(ResolveError::Loop(format!(
            "CNAME chain from {qname} longer than 10 links"
        )))
    }

    /// Ask for `name` from the closest zone whose servers are known, following referrals
    /// down (at most 20), until a server of the name's zone answers: the records (after
    /// the CNAMEs of `chain`), a negative answer, or the next link of an alias.
    #[allow(clippy::too_many_arguments)]
    async fn descend(
        &self,
        hints: &RootHints,
        name: &Name,
        rtype: RecordType,
        chain: &mut Vec<Record>,
        steps: &mut Vec<TraceStep>,
        depth: u8,
        sec: &mut Option<Security>,
    ) -> Result<Hop, ResolveError> {
        let (mut zone, mut servers) = self.start_for(hints, name, rtype);
        for _ in 0..20 {
            let addrs: Vec<SocketAddr> = servers
                .iter()
                .map(|(_, ip)| SocketAddr::new(*ip, self.inner.query_port))
                .collect();
            let (server, resp) = self
                .ask(&addrs, name, rtype, false, &zone.to_string(), steps)
                .await?;
            let lz = LowerName::new(&zone);
            let in_bailiwick = |r: &Record| lz.zone_of(&LowerName::new(&r.name));
            let rcode = resp.metadata.response_code;
            let soa = resp
                .authorities
                .iter()
                .find(|r| r.record_type() == RecordType::SOA && in_bailiwick(r))
                .cloned();
            let answers: Vec<Record> = resp
                .answers
                .iter()
                .filter(|r| in_bailiwick(r))
                .cloned()
                .collect();
            let last = steps.len() - 1;
            if rcode == ResponseCode::NXDomain {
                let security = self
                    .checked(hints, &resp, name, rtype, &zone, steps, depth, sec)
                    .await?;
                // an in-zone CNAME chain whose end does not exist (RFC 6604): the chain is
                // the answer's, the NXDOMAIN its last target's
                let (links, end) = cname_links(name, &answers);
                if !links.is_empty() {
                    self.cache_answer_section(name, rtype, &links, security);
                    chain.extend(links);
                }
                self.store(&end, rtype, vec![], rcode, soa.clone(), security);
                self.keep_sigs(&end, rtype, proof_of(&resp, &lz));
                self.learn_nsec(&zone, soa.as_ref(), &resp, security);
                let why = format!("{end} does not exist");
                negative_step(&mut steps[last], "nxdomain", why, server, soa.as_ref());
                return Ok(Hop::Done(Resolved {
                    records: std::mem::take(chain),
                    rcode,
                    soa,
                    answered_by: Answered::Recursive,
                    security: Security::Unchecked,
                }));
            }
            if rcode != ResponseCode::NoError {
                steps[last].kind = "error".into();
                steps[last].detail = format!("answered {rcode}");
                if rcode == ResponseCode::Refused {
                    return Err(ResolveError::Refused {
                        server: server.to_string(),
                    });
                }
                return Err(ResolveError::ServFail {
                    name: name.to_string(),
                    reason: format!("{server} answered {rcode}"),
                });
            }
            if !answers.is_empty() {
                let security = self
                    .checked(hints, &resp, name, rtype, &zone, steps, depth, sec)
                    .await?;
                self.cache_answer_section(name, rtype, &answers, security);
                // a wildcard's answer comes with the NSEC proving the name itself absent
                let expanded = answers.iter().any(|r| {
                    crate::dnssec::validate::as_rrsig(r)
                        .is_some_and(|s| s.input().num_labels < r.name.num_labels())
                });
                if expanded {
                    let (_, end) = cname_links(name, &answers);
                    let mut sigs = self
                        .inner
                        .cache
                        .get(&(LowerName::new(&end), rtype))
                        .map(|e| e.sigs.clone())
                        .unwrap_or_default();
                    sigs.extend(proof_of(&resp, &lz));
                    self.keep_sigs(&end, rtype, sigs);
                }
                if let Some(hop) = read_answer(name, rtype, &answers, chain, &mut steps[last]) {
                    return Ok(hop);
                }
            }
            match self
                .referral(hints, name, rtype, &zone, server, &resp, steps, last, depth)
                .await?
            {
                Referral::Down(child, child_servers) => {
                    zone = child;
                    servers = child_servers;
                    continue;
                }
                Referral::DsToChild => {
                    // the child's servers do not hold it: there is none at the parent
                    let why = format!(
                        "{zone} referred the DS of {name} to the child: no DS at the parent"
                    );
                    if let Some(s) = sec {
                        *s = Security::Unchecked;
                    }
                    let r = self.nodata(
                        name,
                        rtype,
                        soa,
                        std::mem::take(chain),
                        &mut steps[last],
                        server,
                        why,
                        Security::Unchecked,
                    );
                    return Ok(Hop::Done(r));
                }
                Referral::None => {}
            }
            if answers.is_empty() {
                let security = self
                    .checked(hints, &resp, name, rtype, &zone, steps, depth, sec)
                    .await?;
                let why = format!("{name} has no {rtype} record");
                self.learn_nsec(&zone, soa.as_ref(), &resp, security);
                let r = self.nodata(
                    name,
                    rtype,
                    soa,
                    std::mem::take(chain),
                    &mut steps[last],
                    server,
                    why,
                    security,
                );
                self.keep_sigs(name, rtype, proof_of(&resp, &lz));
                return Ok(Hop::Done(r));
            }
            return Err(ResolveError::ServFail {
                name: name.to_string(),
                reason: format!("{server} sent an answer out of its bailiwick"),
            });
        }
        Err(ResolveError::Loop(format!(
            "more than 20 referrals resolving {name}"
        )))
    }

    /// The referral in `resp` (NS records in its authority section), if any: the child
    /// zone and its servers' addresses — from the glue, or else looked up — remembered as
    /// a delegation. A referral that does not lead down towards `name` is an error.
    #[allow(clippy::too_many_arguments)]
    async fn referral(
        &self,
        hints: &RootHints,
        name: &Name,
        rtype: RecordType,
        zone: &Name,
        server: SocketAddr,
        resp: &Message,
        steps: &mut Vec<TraceStep>,
        last: usize,
        depth: u8,
    ) -> Result<Referral, ResolveError> {
        let ns: Vec<&Record> = resp
            .authorities
            .iter()
            .filter(|r| r.record_type() == RecordType::NS)
            .collect();
        let Some(first) = ns.first() else {
            return Ok(Referral::None);
        };
        let child = first.name.clone();
        let lchild = LowerName::new(&child);
        let lz = LowerName::new(zone);
        let ln = LowerName::new(name);
        if rtype == RecordType::DS && lchild == ln {
            return Ok(Referral::DsToChild);
        }
        if lchild == lz || !lz.zone_of(&lchild) || !lchild.zone_of(&ln) {
            steps[last].kind = "error".into();
            steps[last].detail =
                format!("bogus referral to {child} (not below {zone}, or not above {name})");
            return Err(ResolveError::ServFail {
                name: name.to_string(),
                reason: format!("{server} sent a referral to {child}, which is not below {zone}"),
            });
        }
        let (names, mut new_servers) = glue(&ns, resp, &lz);
        if new_servers.is_empty() {
            // no (usable) glue: resolve the servers' names first
            for n in names.iter().take(3) {
                if let Ok(r) =
                    Box::pin(self.iterate(hints, n.clone(), RecordType::A, steps, depth + 1, false))
                        .await
                {
                    for rec in r.records {
                        if let RData::A(a) = rec.data {
                            new_servers.push((n.to_string(), IpAddr::V4(a.0)));
                        }
                    }
                }
            }
        }
        let step = &mut steps[last];
        step.kind = "referral".into();
        step.ttl = Some(first.ttl);
        step.detail = format!(
            "{child} NS {} (glue {})",
            names
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            new_servers
                .iter()
                .map(|(_, ip)| ip.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        if new_servers.is_empty() {
            return Err(ResolveError::ServFail {
                name: name.to_string(),
                reason: format!("no address for any server of {child}"),
            });
        }
        self.inner.delegations.insert(
            lchild,
            Arc::new(Delegation {
                zone: child.clone(),
                servers: new_servers.clone(),
            }),
        );
        Ok(Referral::Down(child, new_servers))
    }

    /// Ask the servers (fastest first) until one answers; UDP, then TCP if truncated.
    async fn ask(
        &self,
        servers: &[SocketAddr],
        name: &Name,
        rtype: RecordType,
        rd: bool,
        zone: &str,
        steps: &mut Vec<TraceStep>,
    ) -> Result<(SocketAddr, Message), ResolveError> {
        let mut order: Vec<SocketAddr> = servers.to_vec();
        // iterative queries: servers known lame for this zone go last, then by RTT
        let lame =
            |a: &SocketAddr| !rd && self.inner.lame.contains_key(&(a.ip(), zone.to_string()));
        {
            let rtt = self.inner.rtt.lock();
            order.sort_by(|a, b| {
                let ra = rtt.get(&a.ip()).copied().unwrap_or(20.0);
                let rb = rtt.get(&b.ip()).copied().unwrap_or(20.0);
                lame(a).cmp(&lame(b)).then(ra.total_cmp(&rb))
            });
        }
        let question = format!("{name} {rtype}");
        let mut last_err = ResolveError::Timeout {
            server: "no server".into(),
        };
        for server in order.iter().take(6) {
            let started = Instant::now();
            let result = self.exchange(*server, name, rtype, rd).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match result {
                Ok((msg, tcp)) => {
                    {
                        let mut rtt = self.inner.rtt.lock();
                        let e = rtt.entry(server.ip()).or_insert(ms);
                        *e = *e * 0.7 + ms * 0.3;
                    }
                    let rcode = msg.metadata.response_code;
                    if !rd
                        && matches!(
                            rcode,
                            ResponseCode::Refused
                                | ResponseCode::ServFail
                                | ResponseCode::NotImp
                                | ResponseCode::FormErr
                        )
                    {
                        // lame for this zone: remember it, try the zone's other servers;
                        // the client never gets this server's REFUSED
                        self.inner.lame.insert((server.ip(), zone.to_string()), ());
                        steps.push(step(
                            &server.to_string(),
                            zone,
                            &question,
                            "lame",
                            format!(
                                "answered {rcode}: lame for {zone}, trying the zone's other servers"
                            ),
                            ms,
                            None,
                            tcp,
                        ));
                        last_err = ResolveError::ServFail {
                            name: name.to_string(),
                            reason: format!(
                                "every server of {zone} failed (last: {server} answered {rcode})"
                            ),
                        };
                        continue;
                    }
                    steps.push(step(
                        &server.to_string(),
                        zone,
                        &question,
                        "answer",
                        String::new(),
                        ms,
                        None,
                        tcp,
                    ));
                    return Ok((*server, msg));
                }
                Err(e) => {
                    self.inner.rtt.lock().insert(server.ip(), 5000.0);
                    let kind = if matches!(e, ResolveError::Timeout { .. }) {
                        "timeout"
                    } else {
                        "error"
                    };
                    steps.push(step(
                        &server.to_string(),
                        zone,
                        &question,
                        kind,
                        e.to_string(),
                        ms,
                        None,
                        false,
                    ));
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    async fn exchange(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
        rd: bool,
    ) -> Result<(Message, bool), ResolveError> {
        let mut q = Message::query(); // random ID
        q.metadata.recursion_desired = rd;
        // to a recursive resolver: tell it we understand AD (RFC 6840 §5.7)
        q.metadata.authentic_data = rd;
        q.add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(crate::wire::EDNS_PAYLOAD);
        // a validating resolver asks for the signatures (DO)
        edns.set_dnssec_ok(self.validating());
        q.set_edns(edns);
        let id = q.metadata.id;
        let bytes = q.to_vec().map_err(|e| ResolveError::Io(e.to_string()))?;
        let timeout = self.inner.timeout;
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("addr")
        } else {
            "[::]:0".parse().expect("addr")
        };
        // a fresh socket per query: the OS picks a random source port
        let sock = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| ResolveError::Io(e.to_string()))?;
        sock.send_to(&bytes, server)
            .await
            .map_err(|e| ResolveError::Io(e.to_string()))?;
        let mut buf = vec![0u8; 4096];
        let deadline = Instant::now() + timeout;
        let msg = loop {
            let (n, from) = match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
            {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return Err(ResolveError::Io(format!("{server}: {e}"))),
                Err(_) => {
                    return Err(ResolveError::Timeout {
                        server: server.to_string(),
                    });
                }
            };
            if from != server {
                continue; // not from the server we asked: ignore
            }
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if m.metadata.id != id || !same_question(&m, name, rtype) {
                continue; // spoofed or stale
            }
            break m;
        };
        if !msg.metadata.truncation {
            return Ok((msg, false));
        }
        // truncated: ask again over TCP
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = async {
            let mut s = tokio::net::TcpStream::connect(server).await?;
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            s.write_all(&framed).await?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await?;
            let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::time::timeout(timeout, tcp)
            .await
            .map_err(|_| ResolveError::Timeout {
                server: format!("{server} (TCP)"),
            })?
            .map_err(|e| ResolveError::Io(format!("{server} (TCP): {e}")))?;
        let m = Message::from_vec(&body).map_err(|e| ResolveError::ServFail {
            name: name.to_string(),
            reason: format!("bad TCP answer from {server}: {e}"),
        })?;
        if m.metadata.id != id || !same_question(&m, name, rtype) {
            return Err(ResolveError::ServFail {
                name: name.to_string(),
                reason: format!("{server} answered another question over TCP"),
            });
        }
        Ok((m, true))
    }
}

/// Where one descent towards a name ended (returned once per descent, never kept: its
/// size does not matter).
#[allow(clippy::large_enum_variant)]
enum Hop {
    /// An answer, positive or negative.
    Done(Resolved),
    /// The name is an alias: the next link of the chain to resolve.
    Alias(Name),
}

/// What the authority section of an answer without the records asked for says.
enum Referral {
    /// Nothing: no NS records.
    None,
    /// Ask the servers of the child zone (name, addresses) next.
    Down(Name, Vec<(String, IpAddr)>),
    /// A parent that refers a DS question to the child zone itself.
    DsToChild,
}

/// Follow the chain inside one answer section (`answers`, in bailiwick) from `name`: the
/// records of `rtype` at its end (done, with every CNAME of the answer before them), or
/// the alias to resolve next (a CNAME question is done at its first link). `step` says
/// which. None when the section holds neither.
/// The RRSIGs among `records` covering `owner`/`rtype`.
fn covering(records: &[Record], owner: &Name, rtype: RecordType) -> Vec<Record> {
    crate::dnssec::validate::sigs_covering(records, owner, rtype)
        .into_iter()
        .cloned()
        .collect()
}

/// The proof a negative answer carries: its authority section's RRSIGs and NSEC/NSEC3
/// records inside the zone `lz`.
fn proof_of(resp: &Message, lz: &LowerName) -> Vec<Record> {
    resp.authorities
        .iter()
        .filter(|r| {
            matches!(
                r.record_type(),
                RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3
            ) && lz.zone_of(&LowerName::new(&r.name))
        })
        .cloned()
        .collect()
}

/// Set AD on a secure answer for a client that asked with DO or AD (RFC 6840 §5.7–5.8),
/// and DO on the reply to a DO query.
fn authenticated(q: &Message, r: &mut Message, security: Security) {
    let dnssec_ok = q.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    r.metadata.authentic_data =
        security == Security::Secure && (dnssec_ok || q.metadata.authentic_data);
    if dnssec_ok && let Some(e) = r.edns.as_mut() {
        e.set_dnssec_ok(true);
    }
}

/// An Extended DNS Error (RFC 8914) on the reply, for a client that speaks EDNS.
fn extended_error(q: &Message, r: &mut Message, code: u16, text: &str) {
    if q.edns.is_none() {
        return;
    }
    let mut data = code.to_be_bytes().to_vec();
    data.extend_from_slice(&text.as_bytes()[..text.len().min(200)]);
    if let Some(e) = r.edns.as_mut() {
        e.options_mut()
            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(15, data));
    }
}

/// Does record `r` answer a question of type `rtype`? Its own type, or any type for
/// ANY (RFC 8482: a server may answer ANY with one RRset of the name, which is what
/// there is to pass on).
fn answers_type(r: &Record, rtype: RecordType) -> bool {
    r.record_type() == rtype || rtype == RecordType::ANY
}

/// The CNAME links of `answers` from `name` on, in order, and the name the chain ends at.
fn cname_links(name: &Name, answers: &[Record]) -> (Vec<Record>, Name) {
    let mut links = Vec::new();
    let mut cur = name.clone();
    for _ in 0..MAX_CHAIN {
        let lc = LowerName::new(&cur);
        let Some(c) = answers
            .iter()
            .find(|r| LowerName::new(&r.name) == lc && r.record_type() == RecordType::CNAME)
        else {
            break;
        };
        let RData::CNAME(t) = &c.data else { break };
        links.push(c.clone());
        cur = t.0.clone();
    }
    (links, cur)
}

fn read_answer(
    name: &Name,
    rtype: RecordType,
    answers: &[Record],
    chain: &mut Vec<Record>,
    step: &mut TraceStep,
) -> Option<Hop> {
    let cnames = || {
        answers
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .cloned()
    };
    let mut alias: Option<(&Record, Name)> = None;
    let mut cur = LowerName::new(name);
    for _ in 0..MAX_CHAIN {
        let finals: Vec<Record> = answers
            .iter()
            .filter(|r| LowerName::new(&r.name) == cur && answers_type(r, rtype))
            .cloned()
            .collect();
        if !finals.is_empty() {
            step.kind = "answer".into();
            step.detail = finals
                .iter()
                .map(|r| r.data.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            step.ttl = finals.iter().map(|r| r.ttl).min();
            chain.extend(cnames().filter(|c| !finals.contains(c)));
            chain.extend(finals);
            return Some(Hop::Done(Resolved {
                records: std::mem::take(chain),
                rcode: ResponseCode::NoError,
                soa: None,
                answered_by: Answered::Recursive,
                security: Security::Unchecked,
            }));
        }
        let Some(c) = answers
            .iter()
            .find(|r| LowerName::new(&r.name) == cur && r.record_type() == RecordType::CNAME)
        else {
            break;
        };
        let RData::CNAME(t) = &c.data else { break };
        cur = LowerName::new(&t.0);
        alias = Some((c, t.0.clone()));
        if rtype == RecordType::CNAME {
            break;
        }
    }
    let (c, target) = alias?;
    if rtype == RecordType::CNAME {
        chain.push(c.clone());
        return Some(Hop::Done(Resolved {
            records: std::mem::take(chain),
            rcode: ResponseCode::NoError,
            soa: None,
            answered_by: Answered::Recursive,
            security: Security::Unchecked,
        }));
    }
    step.kind = "cname".into();
    step.detail = format!("{} is an alias for {}", c.name, c.data);
    step.ttl = Some(c.ttl);
    // keep every CNAME of this answer in the chain
    chain.extend(cnames());
    Some(Hop::Alias(target))
}

/// What a forwarder's answer (`answers`, `rcode`) says, in the step that asked it: the
/// records at the end of the answer's CNAME chain, NXDOMAIN or NODATA (with who said so
/// and the SOA's negative TTL), or the error it answered.
fn forwarded_step(
    step: &mut TraceStep,
    qname: &Name,
    rtype: RecordType,
    rcode: ResponseCode,
    answers: &[Record],
    soa: Option<&Record>,
    server: SocketAddr,
) {
    if !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
        step.kind = "error".into();
        step.detail = format!("answered {rcode}");
        return;
    }
    // the end of the chain the answer gives, and the records of the type there
    let mut end = qname.clone();
    let mut finals: Vec<&Record> = Vec::new();
    for _ in 0..MAX_CHAIN {
        let at = LowerName::new(&end);
        finals = answers
            .iter()
            .filter(|r| LowerName::new(&r.name) == at && r.record_type() == rtype)
            .collect();
        if !finals.is_empty() {
            break;
        }
        match answers.iter().find_map(|r| match &r.data {
            RData::CNAME(t) if LowerName::new(&r.name) == at => Some(t.0.clone()),
            _ => None,
        }) {
            Some(t) => end = t,
            None => break,
        }
    }
    let alias = if LowerName::new(&end) == LowerName::new(qname) {
        String::new()
    } else {
        format!("{qname} is an alias for {end}: ")
    };
    if rcode == ResponseCode::NXDomain {
        let why = format!("{alias}{end} does not exist");
        negative_step(step, "nxdomain", why, server, soa);
    } else if finals.is_empty() {
        let why = format!("{alias}{end} has no {rtype} record");
        negative_step(step, "nodata", why, server, soa);
    } else {
        step.kind = "answer".into();
        step.detail = format!(
            "{alias}{}",
            finals
                .iter()
                .map(|r| r.data.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        step.ttl = finals.iter().map(|r| r.ttl).min();
    }
}

/// A negative answer's step (`kind` nxdomain or nodata): what it means, which server said
/// so, and how long it is remembered — the SOA's negative TTL (RFC 2308), or not at all
/// when the answer carried no SOA.
fn negative_step(
    step: &mut TraceStep,
    kind: &str,
    why: String,
    server: SocketAddr,
    soa: Option<&Record>,
) {
    step.kind = kind.into();
    step.ttl = soa.map(neg_ttl);
    step.detail = match soa {
        Some(s) => format!(
            "{why}, says {server} (SOA {}, negative TTL {} s)",
            s.name,
            neg_ttl(s)
        ),
        None => format!("{why}, says {server} (no SOA: not cached)"),
    };
}

/// The names of a referral's servers (`ns`) and the addresses its additional section
/// gives for those inside the referring zone `zone` (glue outside it is not trusted).
fn glue(ns: &[&Record], resp: &Message, zone: &LowerName) -> (Vec<Name>, Vec<(String, IpAddr)>) {
    let mut names = Vec::new();
    let mut servers = Vec::new();
    for r in ns {
        if let RData::NS(t) = &r.data {
            let tn = LowerName::new(&t.0);
            names.push(t.0.clone());
            for g in resp
                .additionals
                .iter()
                .filter(|g| LowerName::new(&g.name) == tn && zone.zone_of(&tn))
            {
                match &g.data {
                    RData::A(a) => servers.push((t.0.to_string(), IpAddr::V4(a.0))),
                    RData::AAAA(a) => servers.push((t.0.to_string(), IpAddr::V6(a.0))),
                    _ => {}
                }
            }
        }
    }
    (names, servers)
}

/// Records owned by the question's name carry the case of the client's question (RFC 4343),
/// not that of whoever asked first and filled the cache.
fn same_case(records: &mut [Record], qname: &Name) {
    let lq = LowerName::new(qname);
    for r in records {
        if LowerName::new(&r.name) == lq {
            r.name = qname.clone();
        }
    }
}

fn neg_ttl(soa: &Record) -> u32 {
    match &soa.data {
        RData::SOA(s) => soa.ttl.min(s.minimum),
        _ => soa.ttl,
    }
}

fn same_question(m: &Message, name: &Name, rtype: RecordType) -> bool {
    m.queries
        .first()
        .is_some_and(|q| q.query_type == rtype && LowerName::new(&q.name) == LowerName::new(name))
}

#[allow(clippy::too_many_arguments)]
fn step(
    server: &str,
    zone: &str,
    question: &str,
    kind: &str,
    detail: String,
    rtt_ms: f64,
    ttl: Option<u32>,
    tcp: bool,
) -> TraceStep {
    TraceStep {
        server: server.into(),
        zone: zone.into(),
        question: question.into(),
        kind: kind.into(),
        detail,
        rtt_ms,
        ttl,
        tcp,
    }
}

/// Parse a user-given name (trailing dot optional; IDNA labels as given).
pub fn parse_name(name: &str) -> Result<Name, ResolveError> {
    let mut n =
        Name::from_str(name.trim()).map_err(|e| ResolveError::BadName(format!("{name:?}: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{CNAME, SOA};

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    /// What a fake server answers: rcode, answer section, authority section.
    type Reply = (ResponseCode, Vec<Record>, Vec<Record>);

    /// A forwarder on loopback that answers from `answer(question)`, for as long as the
    /// test runs.
    async fn fake_forwarder(answer: fn(&Name, RecordType) -> Reply) -> SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let q = Message::from_vec(&buf[..n]).unwrap();
                let (rcode, answers, authorities) =
                    answer(&q.queries[0].name, q.queries[0].query_type);
                let mut r = crate::wire::response_for(&q, rcode);
                r.answers = answers;
                r.authorities = authorities;
                sock.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        addr
    }

    fn shop_soa() -> Record {
        let soa = SOA::new(
            name("ns1.shop.test."),
            name("admin.shop.test."),
            1,
            3600,
            600,
            86400,
            30,
        );
        Record::from_rdata(name("shop.test."), 300, RData::SOA(soa))
    }

    fn shop(q: &Name, rtype: RecordType) -> Reply {
        let www = || {
            Record::from_rdata(
                name("www.shop.test."),
                120,
                RData::A("10.0.0.1".parse().unwrap()),
            )
        };
        let api = || {
            Record::from_rdata(
                name("api.shop.test."),
                300,
                RData::CNAME(CNAME(name("www.shop.test."))),
            )
        };
        let gone = || {
            Record::from_rdata(
                name("old.shop.test."),
                300,
                RData::CNAME(CNAME(name("gone.shop.test."))),
            )
        };
        match (q.to_string().as_str(), rtype) {
            ("www.shop.test.", RecordType::A) => (ResponseCode::NoError, vec![www()], vec![]),
            ("www.shop.test.", _) => (ResponseCode::NoError, vec![], vec![shop_soa()]),
            ("api.shop.test.", RecordType::A) => {
                (ResponseCode::NoError, vec![api(), www()], vec![])
            }
            ("api.shop.test.", _) => (ResponseCode::NoError, vec![api()], vec![shop_soa()]),
            ("old.shop.test.", _) => (ResponseCode::NXDomain, vec![gone()], vec![shop_soa()]),
            ("nosoa.shop.test.", _) => (ResponseCode::NXDomain, vec![], vec![]),
            ("shut.shop.test.", _) => (ResponseCode::Refused, vec![], vec![]),
            _ => (ResponseCode::NXDomain, vec![], vec![shop_soa()]),
        }
    }

    fn stub(server: SocketAddr) -> Resolver {
        Resolver::builder()
            .no_hosts_file()
            .forward(vec![server])
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_forwarders_nxdomain_is_an_nxdomain_step_saying_who_and_how_long() {
        let server = fake_forwarder(shop).await;
        let r = stub(server);
        let (res, steps) = r.lookup_traced("nope.shop.test", RecordType::A).await;
        assert!(matches!(res, Err(ResolveError::NxDomain { .. })), "{res:?}");
        let last = steps.last().unwrap();
        assert_eq!(last.kind, "nxdomain", "{steps:#?}");
        assert_eq!(
            last.detail,
            format!(
                "nope.shop.test. does not exist, says {server} (SOA shop.test., negative TTL 30 s)"
            )
        );
        assert_eq!(last.ttl, Some(30));
        // the alias is there, the name it points to is not
        let (_, steps) = r.lookup_traced("old.shop.test", RecordType::A).await;
        assert_eq!(steps[0].kind, "nxdomain", "{steps:#?}");
        assert!(
            steps[0].detail.starts_with(
                "old.shop.test. is an alias for gone.shop.test.: gone.shop.test. does not exist, says"
            ),
            "{}",
            steps[0].detail
        );
        // without a SOA nobody knows for how long: not remembered
        let (_, steps) = r.lookup_traced("nosoa.shop.test", RecordType::A).await;
        assert_eq!(steps[0].kind, "nxdomain");
        assert_eq!(steps[0].ttl, None);
        assert!(
            steps[0].detail.ends_with("(no SOA: not cached)"),
            "{steps:#?}"
        );
        let (_, steps) = r.lookup_traced("nosoa.shop.test", RecordType::A).await;
        assert_eq!(
            steps[0].server,
            server.to_string(),
            "asked again: {steps:#?}"
        );
    }

    #[tokio::test]
    async fn a_forwarders_nodata_is_a_nodata_step_and_its_answers_and_errors_say_what() {
        let server = fake_forwarder(shop).await;
        let r = stub(server);
        let (res, steps) = r.lookup_traced("www.shop.test", RecordType::AAAA).await;
        assert!(matches!(res, Err(ResolveError::NoData { .. })), "{res:?}");
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].kind, "nodata");
        assert_eq!(
            steps[0].detail,
            format!(
                "www.shop.test. has no AAAA record, says {server} (SOA shop.test., negative TTL 30 s)"
            )
        );
        assert_eq!(steps[0].ttl, Some(30));
        // a chain that ends without the type
        let (res, steps) = r.lookup_traced("api.shop.test", RecordType::AAAA).await;
        assert!(matches!(res, Err(ResolveError::NoData { .. })), "{res:?}");
        assert_eq!(steps[0].kind, "nodata");
        assert!(
            steps[0].detail.starts_with(
                "api.shop.test. is an alias for www.shop.test.: www.shop.test. has no AAAA record"
            ),
            "{}",
            steps[0].detail
        );
        // the second time from the cache, for the SOA's negative TTL
        let (_, steps) = r.lookup_traced("www.shop.test", RecordType::AAAA).await;
        assert_eq!(steps[0].kind, "cache");
        assert!(
            steps[0].detail.starts_with("nodata from the cache"),
            "{steps:#?}"
        );

        let l = r.lookup("api.shop.test", RecordType::A).await.unwrap();
        assert_eq!(l.steps[0].kind, "answer");
        assert_eq!(
            l.steps[0].detail,
            "api.shop.test. is an alias for www.shop.test.: 10.0.0.1"
        );
        assert_eq!(l.steps[0].ttl, Some(120));
        let (res, steps) = r.lookup_traced("shut.shop.test", RecordType::A).await;
        assert!(matches!(res, Err(ResolveError::Refused { .. })), "{res:?}");
        assert_eq!(steps[0].kind, "error");
        assert_eq!(steps[0].detail, "answered Query Refused");
    }

    #[tokio::test]
    async fn the_cache_snapshot_lists_what_is_held_under_the_names_asked_with_ttl_left() {
        let server = fake_forwarder(shop).await;
        let r = stub(server);
        assert!(
            r.cached(&[name("shop.test.")], 10).is_empty(),
            "nothing yet"
        );
        r.lookup("www.shop.test", RecordType::A).await.unwrap();
        r.lookup("api.shop.test", RecordType::A).await.unwrap();
        let _ = r.lookup("www.shop.test", RecordType::AAAA).await;
        let _ = r.lookup("nope.shop.test", RecordType::A).await;
        // the name asked first comes first, then the rest of the zone by name and type
        let held = r.cached(&[name("www.shop.test."), name("shop.test.")], 10);
        let got: Vec<(&str, &str, &str)> = held
            .iter()
            .map(|c| (c.name.as_str(), c.rtype.as_str(), c.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("www.shop.test.", "A", "answer"),
                ("www.shop.test.", "AAAA", "nodata"),
                ("api.shop.test.", "CNAME", "answer"),
                ("nope.shop.test.", "A", "nxdomain"),
            ],
            "{held:#?}"
        );
        assert_eq!(held[0].data, ["10.0.0.1"]);
        assert_eq!(held[0].ttl, 120);
        assert!(
            held[0].ttl_left <= 120 && held[0].ttl_left >= 118,
            "{held:#?}"
        );
        assert_eq!(held[2].data, ["www.shop.test."]);
        // bounded, and only under the names asked
        assert_eq!(r.cached(&[name("shop.test.")], 2).len(), 2);
        assert_eq!(r.cached(&[name("www.shop.test.")], 10).len(), 2);
        assert!(r.cached(&[name("other.test.")], 10).is_empty());
        assert!(r.cached(&[], 10).is_empty());
        // the TTL counts down from when the answer was stored, and an expired one is not
        // shown (answers stored 25 s and 40 s ago with a 30 s TTL)
        let pool = |ago: u64, ip: &str| {
            let stored = Instant::now() - Duration::from_secs(ago);
            let a = |ip: &str| {
                Record::from_rdata(name("lb.shop.test."), 30, RData::A(ip.parse().unwrap()))
            };
            Arc::new(Entry {
                records: vec![a(ip), a("127.0.0.3")],
                rcode: ResponseCode::NoError,
                soa: None,
                stored,
                ttl: 30,
                security: Security::Unchecked,
                sigs: Vec::new(),
            })
        };
        r.inner.cache.insert(
            (LowerName::new(&name("lb.shop.test.")), RecordType::A),
            pool(25, "127.0.0.2"),
        );
        r.inner.cache.insert(
            (LowerName::new(&name("old.lb.shop.test.")), RecordType::A),
            pool(40, "127.0.0.4"),
        );
        let later = r.cached(&[name("lb.shop.test.")], 10);
        assert_eq!(
            later.len(),
            1,
            "the one stored 40 s ago expired: {later:#?}"
        );
        assert_eq!(
            later[0].data,
            ["127.0.0.2", "127.0.0.3"],
            "in the order served"
        );
        assert_eq!((later[0].ttl, later[0].ttl_left), (30, 5));
    }

    #[tokio::test]
    async fn hosts_file_answers_first() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "127.0.0.1 localhost\n10.1.2.3 shop.test www.shop.test # comment\n::1 v6.test\n",
        )
        .unwrap();
        let r = Resolver::builder()
            .hosts_file(&hosts)
            .forward(vec!["127.0.0.1:9".parse().unwrap()])
            .build()
            .unwrap();
        let l = r.lookup_ip("WWW.shop.test").await.unwrap();
        assert_eq!(l.addrs, vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(l.answered_by, Answered::HostsFile);
        let l = r.lookup("v6.test.", RecordType::AAAA).await.unwrap();
        assert_eq!(l.addrs, vec!["::1".parse::<IpAddr>().unwrap()]);
        // an IP literal needs no lookup
        assert_eq!(r.lookup_ip("192.0.2.7").await.unwrap().addrs.len(), 1);
        assert!(matches!(
            r.lookup("bad..name", RecordType::A).await,
            Err(ResolveError::BadName(_))
        ));
    }
}
