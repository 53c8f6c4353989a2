//! DNS on the network: UDP and TCP listeners for the authoritative servers and the
//! resolver services of a config, reload (zones swapped whole; a bad zone is refused and
//! the old ones keep serving) and shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::Message;
use hickory_proto::rr::{LowerName, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::authority::{Authority, DnsPool};
use crate::config::DnsConfig;
use crate::error::DnsError;
use crate::resolver::Resolver;
use crate::rrl::{Rrl, RrlSettings, Verdict, slipped};
use crate::wire::{self, Decoded};

/// Receive buffer asked for each UDP listener.
const UDP_RCVBUF: usize = 4 << 20;
/// Packets a UDP listener answers in a row before it lets its runtime's other tasks run.
const UDP_BATCH: u32 = 64;
/// Networks (or single addresses) from the config; `what` names the key in errors.
fn nets(list: &[String], what: &str) -> Result<Vec<ipnet::IpNet>, DnsError> {
    list.iter()
        .map(|n| {
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    DnsError::Config(format!(
                        "{what} {n:?}: expected an address or a network like \"10.0.0.0/8\""
                    ))
                })
        })
        .collect()
}

/// A server address from the config: `IP:PORT`, or `IP` meaning port 53.
fn server_addr(s: &str, what: &str) -> Result<SocketAddr, DnsError> {
    s.parse()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| DnsError::Config(format!("{what} {s:?}: expected IP or IP:PORT")))
}

/// What answers on a listener.
#[derive(Clone)]
enum Answerer {
    Authority(Arc<ArcSwap<Authority>>),
    Resolver(Resolver, Arc<Allow>),
}

/// The client networks a resolver serves.
#[derive(Debug)]
struct Allow(Vec<ipnet::IpNet>);

impl Allow {
    fn new(cfg: &crate::config::ResolverService) -> Result<Allow, DnsError> {
        let nets = match &cfg.allow {
            Some(list) => nets(list, &format!("resolver {} allow", cfg.listen))?,
            None => {
                let mut nets: Vec<ipnet::IpNet> = vec![
                    "127.0.0.0/8".parse().expect("a network"),
                    "::1/128".parse().expect("a network"),
                ];
                if let Ok(a) = cfg.listen.parse::<SocketAddr>()
                    && !a.ip().is_unspecified()
                    && !a.ip().is_loopback()
                {
                    let prefix = if a.is_ipv4() { 24 } else { 64 };
                    if let Ok(n) = ipnet::IpNet::new(a.ip(), prefix) {
                        nets.push(n.trunc());
                    }
                }
                nets
            }
        };
        Ok(Allow(nets))
    }

    fn permits(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

impl Answerer {
    /// The answer to `q` from `peer`: the policy first (opcode, class, EDNS version,
    /// transfers over UDP; a resolver's allowed clients and RD=0), then the lookup.
    async fn answer(&self, q: &Message, peer: std::net::IpAddr, udp: bool) -> Message {
        if let Answerer::Resolver(_, allow) = self
            && !allow.permits(peer)
        {
            return resolver_refusal(q);
        }
        if let Some(mut r) = wire::refusal(q, udp) {
            r.metadata.recursion_available = matches!(self, Answerer::Resolver(..));
            return r;
        }
        match self {
            Answerer::Authority(a) => a.load().answer(q),
            // RD=0 asks for what the resolver already knows: its cache, or REFUSED
            Answerer::Resolver(r, _) if !q.metadata.recursion_desired => {
                r.answer_cached(q).unwrap_or_else(|| resolver_refusal(q))
            }
            Answerer::Resolver(r, _) => r.answer(q).await,
        }
    }
}

/// A resolver's REFUSED: recursion is still available, to the clients it serves (RA
/// set, as Unbound).
fn resolver_refusal(q: &Message) -> Message {
    let mut r = wire::response_for(q, hickory_proto::op::ResponseCode::Refused);
    r.metadata.recursion_available = true;
    r
}

/// Answers of one DNS listener (UDP and TCP): by response code, and how long each took
/// from the query's arrival to its answer.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Answers sent.
    pub answers: AtomicU64,
    /// Of those, by RCODE (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED, …).
    pub rcodes: [AtomicU64; 16],
    /// Time to answer.
    pub latency: hopline_balance::histogram::Histogram,
}

impl ListenerStats {
    /// Count the answer `out` (a DNS message) to a query that arrived at `since`.
    fn count(&self, out: &[u8], since: tokio::time::Instant) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = out.get(3) {
            self.rcodes[(b & 0x0f) as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(since.elapsed());
    }
}

/// One DNS listener as status pages show it.
#[derive(Debug, Clone)]
pub struct DnsListener {
    /// "resolver" or "authoritative".
    pub role: &'static str,
    /// The bound address.
    pub addr: SocketAddr,
    /// Its answers.
    pub stats: Arc<ListenerStats>,
    /// The servers a forwarding resolver asks.
    pub forward: Vec<SocketAddr>,
    authority: Option<Arc<ArcSwap<Authority>>>,
    resolver: Option<Resolver>,
}

impl DnsListener {
    /// The zones an authoritative listener serves now.
    pub fn zones(&self) -> Vec<String> {
        self.authority
            .as_ref()
            .map(|a| {
                a.load()
                    .zones()
                    .iter()
                    .map(|z| z.origin.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Its DNS load-balancing pools now: (name, [(address, up)]).
    pub fn pools(&self) -> Vec<(String, Vec<(std::net::IpAddr, bool)>)> {
        self.authority
            .as_ref()
            .map(|a| {
                a.load()
                    .pools()
                    .iter()
                    .map(|p| (p.name.to_string(), p.status()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What a resolver listener's cache holds now for names at or under `under` (e.g.
    /// "shop.test.", the zones and pools of the authoritative listeners beside it), at
    /// most `limit` answers; nothing for an authoritative listener. See
    /// [`Resolver::cached`]: a walk of the cache for status pages, not the query path.
    pub fn cached(&self, under: &[String], limit: usize) -> Vec<crate::resolver::CachedAnswer> {
        let Some(r) = &self.resolver else {
            return Vec::new();
        };
        let names: Vec<hickory_proto::rr::Name> = under
            .iter()
            .filter_map(|n| hickory_proto::rr::Name::from_ascii(n).ok())
            .map(|mut n| {
                n.set_fqdn(true);
                n
            })
            .collect();
        r.cached(&names, limit)
    }
}

/// Running DNS services.
pub struct DnsServices {
    /// Its resolvers, findable in this process by their address while it runs.
    _local: Vec<LocalResolver>,
    authorities: Vec<Arc<ArcSwap<Authority>>>,
    bound: Vec<(String, SocketAddr)>,
    listeners: Arc<Vec<DnsListener>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The resolvers this process runs, by the address they listen on: a DNS-over-HTTPS
/// route of the same process asks them directly instead of over a socket.
fn local_resolvers() -> &'static parking_lot::Mutex<std::collections::HashMap<SocketAddr, Resolver>>
{
    static LOCAL: std::sync::OnceLock<
        parking_lot::Mutex<std::collections::HashMap<SocketAddr, Resolver>>,
    > = std::sync::OnceLock::new();
    LOCAL.get_or_init(Default::default)
}

/// The resolver this process runs on `addr`, if any.
pub fn local_resolver(addr: SocketAddr) -> Option<Resolver> {
    local_resolvers().lock().get(&addr).cloned()
}

/// A resolver listed in [`local_resolver`] while this lives.
struct LocalResolver(SocketAddr);

impl LocalResolver {
    fn register(addr: SocketAddr, resolver: Resolver) -> LocalResolver {
        local_resolvers().lock().insert(addr, resolver);
        LocalResolver(addr)
    }
}

impl Drop for LocalResolver {
    fn drop(&mut self) {
        local_resolvers().lock().remove(&self.0);
    }
}

impl std::fmt::Debug for DnsServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServices")
            .field("bound", &self.bound)
            .finish()
    }
}

fn resolve(base: &Path, p: &Path) -> std::path::PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn pools(cfg: &DnsConfig) -> Result<Vec<Arc<DnsPool>>, DnsError> {
    cfg.pool
        .iter()
        .map(|p| DnsPool::new(p).map(Arc::new))
        .collect()
}

/// A zone loaded for a listener, with its keys when it is signed.
struct LoadedZone {
    zone: crate::zone::Zone,
    signing: Option<(
        Arc<crate::dnssec::keys::ZoneKeys>,
        crate::dnssec::signed::Signing,
    )>,
}

/// The authorities of every `[[dns.authoritative]]` of `cfg`, their signed zones signed
/// (a signed parent served here holds the DS of each signed child served here, unless
/// its file has one). `make_keys` false (a config check) makes no key and signs nothing.
fn load_authorities(
    cfg: &DnsConfig,
    base: &Path,
    pools: &[Arc<DnsPool>],
    make_keys: bool,
    serials: &std::collections::HashMap<LowerName, u32>,
) -> Result<Vec<Authority>, DnsError> {
    let mut loaded: Vec<Vec<LoadedZone>> = Vec::new();
    for a in &cfg.authoritative {
        let mut zones = Vec::new();
        for z in &a.zones {
            zones.push(load_zone(z, base, make_keys)?);
        }
        loaded.push(zones);
    }
    let mut child_ds: std::collections::HashMap<LowerName, Vec<Record>> = Default::default();
    for z in loaded.iter().flatten() {
        if let Some((keys, _)) = &z.signing {
            child_ds.insert(z.zone.origin.clone(), keys.ds_records(3600));
        }
    }
    cfg.authoritative
        .iter()
        .zip(loaded)
        .map(|(a, zones)| authority_for(a, zones, &child_ds, pools, serials))
        .collect()
}

/// Write the trust anchor of each resolver that names one not there yet, from the keys
/// of the root zone (".") that an authoritative server of the same config signs (made
/// now when new): a private hierarchy served and resolved by one config is validated
/// from its own root. Answers the files written.
fn write_own_anchors(cfg: &DnsConfig, base: &Path) -> Result<Vec<std::path::PathBuf>, DnsError> {
    let mut written = Vec::new();
    for r in &cfg.resolver {
        let Some(anchor) = &r.trust_anchor else {
            continue;
        };
        let path = resolve(base, anchor);
        if path.exists() {
            continue;
        }
        for z in cfg.authoritative.iter().flat_map(|a| &a.zones) {
            let Some(d) = z.dnssec() else { continue };
            let loaded = load_zone(z, base, true)?;
            if loaded.zone.origin != LowerName::new(&hickory_proto::rr::Name::root()) {
                continue;
            }
            if let Some((keys, _)) = &loaded.signing {
                let text: String = keys
                    .ds_records(3600)
                    .iter()
                    .map(|r| format!(". 3600 IN DS {}\n", r.data))
                    .collect();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        DnsError::Config(format!("trust anchor {}: {e}", path.display()))
                    })?;
                }
                std::fs::write(&path, text).map_err(|e| {
                    DnsError::Config(format!("trust anchor {}: {e}", path.display()))
                })?;
                tracing::info!(target: "hopline::dns", "wrote the trust anchor of the root signed here ({:?}) to {}", d.algorithm, path.display());
                written.push(path.clone());
                break;
            }
        }
    }
    Ok(written)
}

fn load_zone(
    z: &crate::config::ZoneFile,
    base: &Path,
    make_keys: bool,
) -> Result<LoadedZone, DnsError> {
    let origin = match z.origin() {
        Some(o) => Some(hickory_proto::rr::Name::from_ascii(o).map_err(|e| {
            DnsError::Config(format!(
                "zone {}: origin {o:?}: {e} (expected a domain name like \"shop.test.\")",
                z.file().display()
            ))
        })?),
        None => None,
    };
    let zone = crate::zone::Zone::load(&resolve(base, z.file()), origin)?;
    let signing = match z.dnssec() {
        Some(d) => {
            let how = d
                .signing()
                .map_err(|e| DnsError::Config(format!("zone {}: {e}", z.file().display())))?;
            let dir = resolve(base, d.keys.as_deref().unwrap_or(Path::new("keys")));
            let apex = hickory_proto::rr::Name::from(&zone.origin);
            let keys = if make_keys {
                Some(crate::dnssec::keys::ZoneKeys::load_or_create(
                    &dir,
                    &apex,
                    d.algorithm,
                )?)
            } else {
                crate::dnssec::keys::ZoneKeys::load(&dir, &apex)?
            };
            keys.filter(|_| make_keys).map(|k| (Arc::new(k), how))
        }
        None => None,
    };
    Ok(LoadedZone { zone, signing })
}

fn authority_for(
    cfg: &crate::config::AuthoritativeService,
    loaded: Vec<LoadedZone>,
    child_ds: &std::collections::HashMap<LowerName, Vec<Record>>,
    pools: &[Arc<DnsPool>],
    serials: &std::collections::HashMap<LowerName, u32>,
) -> Result<Authority, DnsError> {
    let mut zones = Vec::new();
    let mut signed = Vec::new();
    for LoadedZone { mut zone, signing } in loaded {
        if let Some((keys, how)) = signing {
            for (cut, ds) in child_ds {
                let is_cut = zone.origin.zone_of(cut)
                    && *cut != zone.origin
                    && zone.cut_for(&hickory_proto::rr::Name::from(cut)).as_ref() == Some(cut);
                if is_cut && zone.get(cut, RecordType::DS).is_none() {
                    zone.insert_rrset(cut.clone(), RecordType::DS, ds.clone());
                }
            }
            let extra: Vec<(LowerName, RecordType)> = pools
                .iter()
                .filter(|p| zone.origin.zone_of(&p.name))
                .flat_map(|p| p.types().into_iter().map(|t| (p.name.clone(), t)))
                .collect();
            // a signed zone's serial only goes up: above the one served before a reload
            let serial = match serials.get(&zone.origin) {
                Some(before) => zone.serial().max(before.wrapping_add(1)),
                None => zone.serial(),
            };
            signed.push(crate::dnssec::signed::SignedZone::sign(
                &mut zone, keys, &extra, serial, &how,
            ));
        }
        zones.push(zone);
    }
    let transfer = nets(
        &cfg.transfer,
        &format!("authoritative {} transfer", cfg.listen),
    )?;
    let notify = cfg
        .notify
        .iter()
        .map(|a| server_addr(a, &format!("authoritative {} notify", cfg.listen)))
        .collect::<Result<Vec<_>, _>>()?;
    let exempt = nets(
        &cfg.rrl.exempt,
        &format!("authoritative {} rrl exempt", cfg.listen),
    )?;
    Ok(Authority::new(zones, pools.to_vec())
        .with_signed(signed)
        .with_secondaries(transfer, notify)
        .with_rrl(RrlSettings {
            rate: cfg.rrl.rate,
            slip: cfg.rrl.slip,
            exempt,
        }))
}

/// Every 5 minutes, sign again the zones whose signatures are past half their validity,
/// and NOTIFY the secondaries of the new serials (sent from the listener's address).
async fn resign_when_due(
    slots: Vec<Arc<ArcSwap<Authority>>>,
    from: Vec<Option<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for (slot, from) in slots.iter().zip(&from) {
            let Some(fresh) = slot.load().resigned(std::time::SystemTime::now()) else {
                continue;
            };
            let (targets, soas) = fresh.notify_targets();
            let old_soas = slot.load().notify_targets().1;
            let changed: Vec<_> = soas.into_iter().filter(|s| !old_soas.contains(s)).collect();
            tracing::info!(target: "hopline::dns", "signed {} zone(s) again", changed.len());
            slot.store(Arc::new(fresh));
            if !targets.is_empty() && !changed.is_empty() {
                tokio::spawn(send_notifies(*from, targets, changed));
            }
        }
    }
}

fn build_resolver(cfg: &crate::config::ResolverService, base: &Path) -> Result<Resolver, DnsError> {
    let mut b = Resolver::builder().cache_entries(cfg.cache_entries);
    b = match &cfg.hosts_file {
        Some(p) if p.as_os_str().is_empty() => b.no_hosts_file(),
        Some(p) => b.hosts_file(resolve(base, p)),
        None => b,
    };
    if !cfg.forward.is_empty() && cfg.trust_anchor.is_some() {
        return Err(DnsError::Config(format!(
            "resolver {}: trust_anchor with forward: a forwarding resolver does not validate \
             (it passes on its upstream's AD bit); expected root_hints (iterate and validate) \
             or no trust_anchor",
            cfg.listen
        )));
    }
    if !cfg.forward.is_empty() {
        let servers = cfg
            .forward
            .iter()
            .map(|f| server_addr(f, "forward address"))
            .collect::<Result<Vec<_>, _>>()?;
        b = b.forward(servers);
    } else {
        let hints = match &cfg.root_hints {
            Some(p) => crate::hints::RootHints::from_file(&resolve(base, p))
                .map_err(|e| DnsError::Config(e.to_string()))?,
            None => crate::hints::RootHints::builtin(),
        };
        b = b.recursive(hints);
    }
    if let Some(t) = cfg.max_ttl {
        b = b.max_ttl(t);
    }
    if let Some(t) = cfg.max_negative_ttl {
        b = b.max_negative_ttl(t);
    }
    if let Some(port) = cfg.query_port {
        b = b.query_port(port);
    }
    if let Some(p) = &cfg.trust_anchor {
        let path = resolve(base, p);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| DnsError::Config(format!("trust anchor {}: {e}", path.display())))?;
        let anchors = crate::dnssec::validate::parse_anchors(&text).map_err(|e| {
            DnsError::Config(format!(
                "trust anchor {}: {e} (expected DS or DNSKEY records, e.g. `hopline dns ds .`)",
                path.display()
            ))
        })?;
        b = b.trust_anchors(anchors);
    }
    if cfg.validate == Some(false) {
        b = b.no_validation();
    }
    if cfg.aggressive_nsec == Some(false) {
        b = b.aggressive_nsec(false);
    }
    b.build().map_err(|e| DnsError::Config(e.to_string()))
}

async fn bind_pair(
    listen: &str,
    role: &str,
) -> Result<(Arc<UdpSocket>, TcpListener, SocketAddr), DnsError> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| DnsError::Config(format!("{role} listen {listen:?}: expected IP:PORT")))?;
    let err = |e| DnsError::Bind {
        addr,
        role: role.into(),
        reason: e,
    };
    // TCP on the same port as UDP (also when the port was 0). With port 0 the port the
    // kernel gave UDP may be taken for TCP (another socket's ephemeral port): pick again.
    let mut tries = if addr.port() == 0 { 20 } else { 1 };
    loop {
        let udp = UdpSocket::bind(addr).await.map_err(err)?;
        // a burst waits in the socket instead of being dropped by the kernel: the
        // default buffer holds ~200 small datagrams (what Unbound's docs advise, so-rcvbuf
        // 4m; the kernel caps it at net.core.rmem_max)
        let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(UDP_RCVBUF);
        let bound = udp.local_addr().map_err(err)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((Arc::new(udp), tcp, bound)),
            Err(e) if tries > 1 && e.kind() == std::io::ErrorKind::AddrInUse => tries -= 1,
            Err(e) => {
                return Err(DnsError::Bind {
                    addr: bound,
                    role: role.into(),
                    reason: e,
                });
            }
        }
    }
}

impl DnsServices {
    /// Load every zone and bind every listener; on any error nothing keeps running.
    /// Load everything [`DnsServices::start`] would — pools, zone files, resolvers and
    /// their root hints — without binding or serving (`hopline serve --check`).
    pub fn check(cfg: &DnsConfig, base_dir: &Path) -> Result<(), DnsError> {
        let pools = pools(cfg)?;
        load_authorities(cfg, base_dir, &pools, false, &Default::default())?;
        for r in &cfg.resolver {
            build_resolver(r, base_dir)?;
            Allow::new(r)?;
            if let Some(t) = &r.tls {
                dot_acceptor(t, base_dir)?;
            }
        }
        Ok(())
    }

    pub async fn start(cfg: &DnsConfig, base_dir: &Path) -> Result<DnsServices, DnsError> {
        let pools = pools(cfg)?;
        write_own_anchors(cfg, base_dir)?;
        let mut plan = Vec::new();
        let mut authorities = Vec::new();
        for (a, auth) in cfg.authoritative.iter().zip(load_authorities(
            cfg,
            base_dir,
            &pools,
            true,
            &Default::default(),
        )?) {
            let auth = Arc::new(ArcSwap::from_pointee(auth));
            authorities.push(auth.clone());
            plan.push((
                a.listen.clone(),
                "DNS authoritative",
                Answerer::Authority(auth),
            ));
        }
        // DNS over TLS beside a resolver's UDP and TCP: the same resolver and cache
        let mut dot = Vec::new();
        for r in &cfg.resolver {
            let answerer =
                Answerer::Resolver(build_resolver(r, base_dir)?, Arc::new(Allow::new(r)?));
            if let Some(t) = &r.tls {
                dot.push((
                    t.listen.clone(),
                    dot_acceptor(t, base_dir)?,
                    answerer.clone(),
                ));
            }
            plan.push((r.listen.clone(), "DNS resolver", answerer));
        }
        let forwards: Vec<Vec<SocketAddr>> = cfg
            .resolver
            .iter()
            .map(|r| {
                r.forward
                    .iter()
                    .filter_map(|f| server_addr(f, "forward address").ok())
                    .collect()
            })
            .collect();
        let mut sockets = Vec::new();
        for (listen, role, answerer) in plan {
            let (udp, tcp, bound) = bind_pair(&listen, role).await?;
            sockets.push((udp, tcp, bound, role, answerer));
        }
        let mut dot_sockets = Vec::new();
        for (listen, acceptor, answerer) in dot {
            let role = "DNS resolver (TLS)";
            let addr: SocketAddr = listen.parse().map_err(|_| {
                DnsError::Config(format!("{role} listen {listen:?}: expected IP:PORT"))
            })?;
            let tcp = TcpListener::bind(addr).await.map_err(|e| DnsError::Bind {
                addr,
                role: role.into(),
                reason: e,
            })?;
            let bound = tcp.local_addr().unwrap_or(addr);
            dot_sockets.push((tcp, bound, acceptor, answerer));
        }
        for p in &pools {
            p.spawn_health();
        }
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut bound_list = Vec::new();
        let mut listeners = Vec::new();
        let mut forwards = forwards.into_iter();
        for (udp, tcp, bound, role, answerer) in sockets {
            tracing::info!(target: "hopline::dns", "listening on {bound} ({role}, UDP and TCP)");
            bound_list.push((role.to_string(), bound));
            let stats = Arc::new(ListenerStats::default());
            listeners.push(match &answerer {
                Answerer::Authority(a) => DnsListener {
                    role: "authoritative",
                    addr: bound,
                    stats: stats.clone(),
                    forward: Vec::new(),
                    authority: Some(a.clone()),
                    resolver: None,
                },
                Answerer::Resolver(r, _) => DnsListener {
                    role: "resolver",
                    addr: bound,
                    stats: stats.clone(),
                    forward: forwards.next().unwrap_or_default(),
                    authority: None,
                    resolver: Some(r.clone()),
                },
            });
            tasks.push(tokio::spawn(udp_loop(
                udp,
                answerer.clone(),
                stats.clone(),
                stop.subscribe(),
            )));
            tasks.push(tokio::spawn(tcp_loop(
                tcp,
                answerer,
                stats,
                stop.subscribe(),
            )));
        }
        tasks.push(tokio::spawn(resign_when_due(
            authorities.clone(),
            cfg.authoritative
                .iter()
                .map(|a| {
                    a.listen
                        .parse::<SocketAddr>()
                        .ok()
                        .map(|l| SocketAddr::new(l.ip(), 0))
                })
                .collect(),
            stop.subscribe(),
        )));
        for (tcp, bound, acceptor, answerer) in dot_sockets {
            tracing::info!(target: "hopline::dns", "listening on {bound} (DNS resolver, TLS)");
            bound_list.push(("DNS resolver (TLS)".to_string(), bound));
            tasks.push(tokio::spawn(tls_loop(
                tcp,
                acceptor,
                answerer,
                Arc::new(ListenerStats::default()),
                stop.subscribe(),
            )));
        }
        // keep the pools' health checks alive with the services
        let keep = pools.clone();
        let mut stop_rx = stop.subscribe();
        tasks.push(tokio::spawn(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
            drop(keep);
        }));
        let local = listeners
            .iter()
            .filter_map(|l| {
                l.resolver
                    .clone()
                    .map(|r| LocalResolver::register(l.addr, r))
            })
            .collect();
        Ok(DnsServices {
            _local: local,
            authorities,
            bound: bound_list,
            listeners: Arc::new(listeners),
            stop,
            tasks,
        })
    }

    /// (role, bound address) of every listener.
    pub fn bound(&self) -> &[(String, SocketAddr)] {
        &self.bound
    }

    /// Every listener with its counters (for status pages; cheap to clone and keep).
    pub fn listeners(&self) -> Arc<Vec<DnsListener>> {
        self.listeners.clone()
    }

    /// Reload zones (and pools). A bad zone is refused; the old zones keep serving.
    /// Listeners are not moved: changed `listen` addresses need a restart.
    pub fn reload(&self, cfg: &DnsConfig, base_dir: &Path) -> Result<(), DnsError> {
        let pools = pools(cfg)?;
        let mut serials = std::collections::HashMap::new();
        for slot in &self.authorities {
            let auth = slot.load();
            for z in auth
                .zones()
                .iter()
                .filter(|z| auth.signed(&z.origin).is_some())
            {
                serials.insert(z.origin.clone(), z.serial());
            }
        }
        let fresh = load_authorities(cfg, base_dir, &pools, true, &serials)?;
        if fresh.len() != self.authorities.len() {
            return Err(DnsError::Config(
                "the number of [[dns.authoritative]] servers changed: restart to apply".into(),
            ));
        }
        for p in &pools {
            p.spawn_health();
        }
        for ((slot, auth), a) in self.authorities.iter().zip(fresh).zip(&cfg.authoritative) {
            let (targets, soas) = auth.notify_targets();
            // NOTIFY comes from the listener's address: what secondaries allow
            let from = a
                .listen
                .parse::<SocketAddr>()
                .map(|l| SocketAddr::new(l.ip(), 0))
                .ok();
            let changed: Vec<_> = {
                let old = slot.load();
                let (_, old_soas) = old.notify_targets();
                soas.into_iter().filter(|s| !old_soas.contains(s)).collect()
            };
            slot.store(Arc::new(auth));
            if !targets.is_empty()
                && !changed.is_empty()
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                rt.spawn(send_notifies(from, targets, changed));
            }
        }
        Ok(())
    }

    /// Stop every listener.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// NOTIFY (RFC 1996) each secondary of each changed zone, over UDP, up to 5 tries a
/// second apart until it answers.
async fn send_notifies(
    from: Option<SocketAddr>,
    targets: Vec<SocketAddr>,
    soas: Vec<hickory_proto::rr::Record>,
) {
    use hickory_proto::op::{OpCode, Query};
    for soa in soas {
        for target in &targets {
            let mut m = Message::query();
            m.metadata.id = rand::random();
            m.metadata.op_code = OpCode::Notify;
            m.metadata.authoritative = true;
            m.add_query(Query::query(
                soa.name.clone(),
                hickory_proto::rr::RecordType::SOA,
            ));
            m.answers.push(soa.clone());
            let Ok(bytes) = m.to_vec() else { continue };
            let bind = from
                .filter(|f| f.is_ipv4() == target.is_ipv4())
                .unwrap_or_else(|| {
                    if target.is_ipv4() {
                        SocketAddr::from(([0, 0, 0, 0], 0))
                    } else {
                        SocketAddr::from(([0u16; 8], 0))
                    }
                });
            let Ok(sock) = UdpSocket::bind(bind).await else {
                continue;
            };
            let mut answered = false;
            for _ in 0..5 {
                let _ = sock.send_to(&bytes, target).await;
                let mut buf = [0u8; 512];
                if let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
                    && n >= 2
                    && buf[..2] == m.metadata.id.to_be_bytes()
                {
                    answered = true;
                    break;
                }
            }
            if answered {
                tracing::info!(target: "hopline::dns", "NOTIFY {} sent to {target}", soa.name);
            } else {
                tracing::warn!(target: "hopline::dns", "NOTIFY {} to {target}: no answer after 5 tries", soa.name);
            }
        }
    }
}

/// Encoded answers by query bytes (everything after the ID): a repeated question is
/// answered by patching the ID into the stored bytes, without decoding or encoding.
/// Authoritative answers stay valid until the next reload (the authority is replaced);
/// resolver answers for one second (their TTLs count down).
type Replayed = (Arc<[u8]>, tokio::time::Instant);

struct Replay {
    cache: moka::sync::Cache<Box<[u8]>, Replayed>,
    valid: Duration,
}

impl Replay {
    fn new(valid: Duration) -> Replay {
        Replay {
            cache: moka::sync::Cache::new(100_000),
            valid,
        }
    }

    fn get(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let (bytes, at) = self.cache.get(&packet[2..])?;
        if at.elapsed() >= self.valid {
            return None;
        }
        let mut out = bytes.to_vec();
        out[..2].copy_from_slice(&packet[..2]);
        Some(out)
    }

    fn put(&self, packet: &[u8], answer: &[u8]) {
        if packet.len() > 2 && answer.len() > 2 {
            self.cache.insert(
                packet[2..].into(),
                (answer.into(), tokio::time::Instant::now()),
            );
        }
    }
}

async fn udp_loop(
    sock: Arc<UdpSocket>,
    answerer: Answerer,
    stats: Arc<ListenerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 4096];
    let mut rrl = Rrl::default();
    let replay = Replay::new(match answerer {
        Answerer::Authority(_) => Duration::from_secs(u32::MAX as u64),
        Answerer::Resolver(..) => Duration::from_secs(1),
    });
    // an authority swapped by reload invalidates what was replayed
    let mut generation = match &answerer {
        Answerer::Authority(a) => Arc::as_ptr(&a.load_full()) as usize,
        Answerer::Resolver(..) => 0,
    };
    let mut since_yield = 0u32;
    loop {
        if stop.has_changed().unwrap_or(true) {
            return;
        }
        // a socket that never runs dry (or keeps failing) must not starve the listener's
        // other tasks (TCP)
        since_yield += 1;
        if since_yield == UDP_BATCH {
            since_yield = 0;
            tokio::task::yield_now().await;
        }
        // take what is queued without a future per packet; wait (for a packet or the
        // stop) only when the socket is empty
        let (n, peer) = match sock.try_recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                since_yield = 0;
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = sock.readable() => continue,
                }
            }
            Err(_) => continue,
        };
        let arrived = tokio::time::Instant::now();
        // the authority of this packet, loaded once (a reload swaps it)
        let auth = match &answerer {
            Answerer::Authority(a) => Some(a.load()),
            Answerer::Resolver(..) => None,
        };
        if let Some(auth) = &auth {
            let now = Arc::as_ptr(auth) as usize;
            if now != generation {
                replay.cache.invalidate_all();
                generation = now;
            }
        }
        let allowed = match &answerer {
            Answerer::Resolver(_, allow) => allow.permits(peer.ip()),
            Answerer::Authority(_) => true,
        };
        // response rate limiting (authoritative answers over UDP)
        if let Some(auth) = &auth
            && n > 12
        {
            match rrl.check(&auth.rrl, peer.ip(), &buf[2..n]) {
                Verdict::Send => {}
                Verdict::Slip => {
                    if let Some(out) = slipped(&buf[..n]) {
                        send(&sock, &out, peer, &stats, arrived).await;
                    }
                    continue;
                }
                Verdict::Drop => continue,
            }
        }
        if allowed
            && n > 12
            && let Some(out) = replay.get(&buf[..n])
        {
            send(&sock, &out, peer, &stats, arrived).await;
            continue;
        }
        let q = match wire::decode_query(&buf[..n]) {
            Decoded::Query(q) => q,
            Decoded::FormErr(id) => {
                send(&sock, &wire::formerr(id), peer, &stats, arrived).await;
                continue;
            }
            Decoded::Drop => continue,
        };
        let refused = if allowed {
            wire::refusal(&q, true)
        } else {
            Some(wire::response_for(
                &q,
                hickory_proto::op::ResponseCode::Refused,
            ))
        };
        if let Some(mut r) = refused {
            r.metadata.recursion_available = matches!(answerer, Answerer::Resolver(..));
            send(&sock, &wire::encode_udp(&mut r, &q), peer, &stats, arrived).await;
            continue;
        }
        match &answerer {
            Answerer::Authority(_) => {
                let auth = auth.as_ref().expect("loaded above");
                let mut r = auth.answer(&q);
                let out = wire::encode_udp(&mut r, &q);
                // pooled answers change from query to query, ACME DNS-01 records come and go
                if !auth.is_pooled(&q.queries[0].name)
                    && !crate::challenge::is_challenge_name(&q.queries[0].name)
                {
                    replay.put(&buf[..n], &out);
                }
                send(&sock, &out, peer, &stats, arrived).await;
            }
            Answerer::Resolver(res, _) => {
                if let Some(mut r) = res.answer_cached(&q) {
                    let out = wire::encode_udp(&mut r, &q);
                    replay.put(&buf[..n], &out);
                    send(&sock, &out, peer, &stats, arrived).await;
                    continue;
                }
                if !q.metadata.recursion_desired {
                    // RD=0: only what the cache knows
                    let mut r = resolver_refusal(&q);
                    send(&sock, &wire::encode_udp(&mut r, &q), peer, &stats, arrived).await;
                    continue;
                }
                // a miss may take many round trips: answer it off the receive loop
                let (sock, res, stats) = (sock.clone(), res.clone(), stats.clone());
                tokio::spawn(async move {
                    let mut r = res.answer(&q).await;
                    let out = wire::encode_udp(&mut r, &q);
                    send(&sock, &out, peer, &stats, arrived).await;
                });
            }
        }
    }
}

/// Send a UDP answer and count it.
async fn send(
    sock: &UdpSocket,
    out: &[u8],
    peer: SocketAddr,
    stats: &ListenerStats,
    arrived: tokio::time::Instant,
) {
    // (most sends complete at once: no future unless the socket is full)
    match sock.try_send_to(out, peer) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let _ = sock.send_to(out, peer).await;
        }
        _ => {}
    }
    stats.count(out, arrived);
}

async fn tcp_loop(
    listener: TcpListener,
    answerer: Answerer,
    stats: Arc<ListenerStats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let answerer = answerer.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            serve_stream(&mut stream, peer.ip(), &answerer, &stats).await;
        });
    }
}

/// The TLS side of a DNS-over-TLS listener (RFC 7858): the certificate and key from
/// PEM files, ALPN `dot`, TLS 1.2 and 1.3.
fn dot_acceptor(
    cfg: &crate::config::DotConfig,
    base: &Path,
) -> Result<tokio_rustls::TlsAcceptor, DnsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = (resolve(base, &cfg.cert), resolve(base, &cfg.key));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            DnsError::Config(format!("DNS over TLS certificate {}: {e}", cert.display()))
        })?;
    if certs.is_empty() {
        return Err(DnsError::Config(format!(
            "DNS over TLS certificate {}: no certificate in it (expected PEM)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| DnsError::Config(format!("DNS over TLS key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DnsError::Config(format!("DNS over TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| DnsError::Config(format!("DNS over TLS {}: {e}", cert.display())))?;
    sc.alpn_protocols = vec![b"dot".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(sc)))
}

/// Accept DNS-over-TLS connections: the handshake within 10 s, then DNS over the stream.
async fn tls_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    answerer: Answerer,
    stats: Arc<ListenerStats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let (acceptor, answerer, stats) = (acceptor.clone(), answerer.clone(), stats.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(Ok(mut tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            serve_stream(&mut tls, peer.ip(), &answerer, &stats).await;
            let _ = tls.shutdown().await;
        });
    }
}

/// DNS over a byte stream (TCP, TLS): length-prefixed messages, answered in turn, until
/// the client closes or is idle 10 s.
async fn serve_stream<S>(
    stream: &mut S,
    peer: std::net::IpAddr,
    answerer: &Answerer,
    stats: &ListenerStats,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        if tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut body))
            .await
            .is_err()
        {
            return;
        }
        let arrived = tokio::time::Instant::now();
        // a zone transfer: several messages
        if let (Decoded::Query(q), Answerer::Authority(a)) = (wire::decode_query(&body), &answerer)
            && q.metadata.op_code == hickory_proto::op::OpCode::Query
            && matches!(
                q.queries[0].query_type,
                hickory_proto::rr::RecordType::AXFR | hickory_proto::rr::RecordType::IXFR
            )
        {
            let messages = a.load().transfer(&q, peer);
            for m in messages {
                let out = m.to_vec().unwrap_or_default();
                let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
            }
            continue;
        }
        let out = match wire::decode_query(&body) {
            Decoded::Query(q) => answerer
                .answer(&q, peer, false)
                .await
                .to_vec()
                .unwrap_or_default(),
            Decoded::FormErr(id) => wire::formerr(id),
            Decoded::Drop => return,
        };
        stats.count(&out, arrived);
        let mut framed = (out.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
