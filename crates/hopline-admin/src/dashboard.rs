//! The live dashboard of the admin listener: `GET /` is one self-contained page (HTML,
//! CSS and script embedded in the binary) fed by `GET /.hopline/events`, server-sent
//! events carrying one JSON snapshot per second — the topology (DNS → PoPs → balancers
//! → origins → services, taken from the table in force, so a reload shows at once) with
//! each box's req/s, p50/p99 latency and error rate of the last second, PoPs' cache hit
//! ratio, the certificate a site obtained by ACME (issuer, challenge, when, expiry and
//! renewal, state), every pool server's state, rate-limit rejections, open connections,
//! and the latest traced requests. Counters are read once per second per open page; the request
//! path only adds to atomics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hopline_balance::histogram::Snapshot;
use http::Response;
use http::header::{self, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::view::AdminView;
use crate::view::{RouteAnswer, SiteView};
use hopline_engine::body::Body;

/// The page, as served.
pub const PAGE: &str = include_str!("dashboard.html");

/// How many recent traced requests a snapshot lists.
const RECENT: usize = 15;

/// Counters of one box at the previous sample.
#[derive(Default)]
struct Prev {
    requests: u64,
    errors: u64,
    latency: Snapshot,
}

/// Rates of one box over the last interval.
struct Rates {
    rps: f64,
    error_rate: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
}

/// One page's view over time: the previous counters, to turn totals into rates.
#[derive(Default)]
pub struct Board {
    prev: HashMap<String, Prev>,
    pairs: HashMap<String, (u64, u64)>,
    at: Option<Instant>,
}

/// What went up since the last sample (a counter that went back was reset by a reload).
fn grew(now: u64, then: u64) -> u64 {
    if now >= then { now - then } else { now }
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

impl Board {
    fn rates(
        &mut self,
        key: &str,
        requests: u64,
        errors: u64,
        latency: Snapshot,
        secs: f64,
    ) -> Rates {
        let p = self.prev.entry(key.to_string()).or_default();
        let first = p.requests == 0 && p.latency.0.is_empty();
        let dr = grew(requests, p.requests);
        let de = grew(errors, p.errors);
        let dl = latency.since(&p.latency);
        *p = Prev {
            requests,
            errors,
            latency,
        };
        if first || secs <= 0.0 {
            return Rates {
                rps: 0.0,
                error_rate: None,
                p50: None,
                p99: None,
            };
        }
        Rates {
            rps: round(dr as f64 / secs, 1),
            error_rate: (dr > 0).then(|| round(de as f64 / dr as f64, 4)),
            p50: dl.quantile_ms(0.5).map(|v| round(v, 3)),
            p99: dl.quantile_ms(0.99).map(|v| round(v, 3)),
        }
    }

    /// The growth per second of a counter pair (e.g. cache hits and lookups) since the
    /// last sample: (Δa/s, Δb/s), None on the first sample.
    fn pair(&mut self, key: &str, a: u64, b: u64, secs: f64) -> Option<(f64, f64)> {
        let old = self.pairs.insert(key.to_string(), (a, b));
        let (pa, pb) = old?;
        (secs > 0.0).then(|| (grew(a, pa) as f64 / secs, grew(b, pb) as f64 / secs))
    }

    /// A pool and each of its servers: state, in flight, EWMA, weight, req/s; a link from
    /// `from` to the box each server is (when it is one of ours).
    fn pool_json(
        &mut self,
        from: &str,
        pool: &hopline_proxy::pool::UpstreamPool,
        secs: f64,
        target_id: &dyn Fn(SocketAddr) -> Option<String>,
        links: &mut Vec<Value>,
    ) -> Value {
        let members = pool.members();
        let mut servers = Vec::new();
        for (srv, s) in members.servers.iter().zip(members.pool.snapshot()) {
            let key = format!("{from}/{}/{}", pool.name, s.id);
            let rps = self
                .pair(&key, s.requests, 0, secs)
                .map(|(r, _)| round(r, 1));
            let state = if !s.healthy {
                "down"
            } else if s.ejected_for_ms.is_some() {
                "ejected"
            } else if s.backup {
                "backup"
            } else {
                "up"
            };
            let target = target_id(srv.addr);
            if let Some(t) = &target {
                links.push(json!({"from": from, "to": t, "pool": pool.name, "server": s.id}));
            }
            servers.push(json!({
                "id": s.id, "state": state, "eligible": s.up, "backup": s.backup,
                "in_flight": s.in_flight, "requests": s.requests, "errors": s.errors,
                "rps": rps, "ewma_ms": round(s.ewma_ms, 3), "weight": s.weight,
                "effective_weight": round(s.effective_weight, 3),
                "ejected_for_ms": s.ejected_for_ms, "target": target,
            }));
        }
        json!({
            "name": pool.name, "balance": pool.algorithm,
            "panic": members.pool.panicking(), "servers": servers,
        })
    }

    /// What the caches of a site's routes hold and hit (the interval's hit ratio too).
    fn site_cache(&mut self, id: &str, site: &SiteView, secs: f64) -> Option<Value> {
        let mut caches: Vec<&Arc<hopline_cache::store::HttpCache>> = Vec::new();
        for route in &site.routes {
            if let Some(c) = &route.cache
                && !caches.iter().any(|x| Arc::ptr_eq(x, c))
            {
                caches.push(c);
            }
        }
        (!caches.is_empty()).then(|| {
            let n = |f: fn(&hopline_cache::store::CacheStats) -> &std::sync::atomic::AtomicU64| {
                caches
                    .iter()
                    .map(|c| f(&c.stats).load(Ordering::Relaxed))
                    .sum::<u64>()
            };
            let hits = n(|s| &s.hits) + n(|s| &s.stale);
            let lookups = hits + n(|s| &s.misses) + n(|s| &s.revalidated);
            let interval = self.pair(&format!("{}/cache", id), hits, lookups, secs);
            json!({
                "names": caches.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                "entries": caches.iter().map(|c| c.entries()).sum::<u64>(),
                "hits": hits,
                "lookups": lookups,
                "hit_ratio": interval.filter(|(_, l)| *l > 0.0).map(|(h, l)| round(h / l, 4)),
                "hit_ratio_total": (lookups > 0).then(|| round(hits as f64 / lookups as f64, 4)),
            })
        })
    }

    /// The rate limits of a site's routes: what each refused, and how fast.
    fn site_limits(&mut self, site: &SiteView, secs: f64) -> Vec<Value> {
        let mut limits = Vec::new();
        for route in &site.routes {
            if let Some(l) = &route.limit
                && !limits.iter().any(|(n, _): &(String, u64)| *n == l.name)
            {
                limits.push((l.name.clone(), l.rejected.load(Ordering::Relaxed)));
            }
        }
        limits
            .into_iter()
            .map(|(name, rejected)| {
                let per_s = self
                    .pair(&format!("limit/{name}"), rejected, 0, secs)
                    .map(|(r, _)| round(r, 1));
                json!({"name": name, "rejected": rejected, "rejected_per_s": per_s})
            })
            .collect()
    }

    /// One snapshot of everything (the JSON each event carries).
    pub fn sample(&mut self, view: &dyn AdminView) -> Value {
        let now = Instant::now();
        let secs = self.at.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.at = Some(now);
        let table = view.snapshot();
        let extras = view.extras();
        let map = Map::new(view, &table, usize::from(!extras.is_empty()));

        let mut nodes = Vec::new();
        let mut links = Vec::new();
        for x in &extras {
            nodes.push(self.extra_node(x, &extras, &map, secs, &mut links));
        }
        let mut total_rps = 0.0;
        for i in 0..table.sites.len() {
            let (node, rps) = self.site_node(i, &map, secs, &mut links);
            total_rps += rps;
            nodes.push(node);
        }
        for st in view.streams() {
            nodes.push(self.stream_node(&st, &map, secs, &mut links));
        }
        for service in &table.services {
            let (kind, name) = (&service.kind, &service.name);
            nodes.push(json!({
                "id": format!("service:{kind}.{name}"), "kind": "service", "role": kind,
                "label": format!("{kind} {name}"), "col": map.service_col,
                "detail": service.report.status(),
            }));
        }
        self.totals(view, secs, total_rps, nodes, links)
    }

    /// A box the program added beside the edge (the DNS servers of `hopline up`), with
    /// a link to each site listening on an address it answers.
    fn extra_node(
        &mut self,
        x: &crate::view::ExtraNode,
        extras: &[crate::view::ExtraNode],
        map: &Map<'_>,
        secs: f64,
        links: &mut Vec<Value>,
    ) -> Value {
        let r = self.rates(&x.id, x.requests, x.errors, x.latency.clone(), secs);
        for t in &x.targets {
            if let Some(other) = extras.iter().find(|o| &o.addr == t && o.id != x.id) {
                links.push(json!({"from": x.id, "to": other.id}));
            } else if let Ok(ip) = t.parse::<std::net::IpAddr>() {
                for i in (0..map.ids.len()).filter(|&i| map.on_ip(i, ip)) {
                    links.push(json!({"from": x.id, "to": map.ids[i]}));
                }
            }
        }
        json!({
            "id": x.id, "kind": "dns", "role": x.role, "label": x.label, "addr": x.addr,
            "col": 0, "requests": x.requests, "rps": r.rps, "error_rate": r.error_rate,
            "p50_ms": r.p50, "p99_ms": r.p99, "detail": x.detail,
        })
    }

    /// Site `i`: its rates, cache, certificate, limits, pools (each server linked to the
    /// box it is) and the services it mounts; and its requests per second.
    fn site_node(
        &mut self,
        i: usize,
        map: &Map<'_>,
        secs: f64,
        links: &mut Vec<Value>,
    ) -> (Value, f64) {
        let (site, id) = (&map.table.sites[i], &map.ids[i]);
        let st = &site.stats;
        let requests = st.requests.load(Ordering::Relaxed);
        let r = self.rates(
            id,
            requests,
            st.errors.load(Ordering::Relaxed),
            st.latency.snapshot(),
            secs,
        );
        let cache = self.site_cache(id, site, secs);
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let certificate = site
            .certificate
            .as_ref()
            .and_then(|key| map.table.certificates.get(key))
            .map(|m| certificate_json(&m.status(), now_s));
        let limits = self.site_limits(site, secs);
        let target_id = |a: SocketAddr| map.target_id(a);
        let pools: Vec<Value> = pools_of(site)
            .iter()
            .map(|pool| self.pool_json(id, pool, secs, &target_id, links))
            .collect();
        let mut services = Vec::new();
        for route in &site.routes {
            if let RouteAnswer::Service { kind, name } = &route.answer {
                let service = format!("service:{kind}.{name}");
                if !services.contains(&service) {
                    links.push(json!({"from": id, "to": service}));
                    services.push(service);
                }
            }
        }
        let bound = &map.bound[i];
        let node = json!({
            "id": id, "kind": "site", "role": role(site), "label": &*site.name,
            "addr": bound.first().map(|(b, _)| b.to_string()),
            "tls": site.tls, "col": map.col[i],
            "connections": bound.iter().map(|(_, n)| n).sum::<usize>(),
            "requests": requests, "rps": r.rps, "error_rate": r.error_rate,
            "p50_ms": r.p50, "p99_ms": r.p99,
            "cache": cache, "limits": limits, "pools": pools,
            "certificate": certificate,
        });
        (node, r.rps)
    }

    /// A layer-4 stream (TCP or UDP), at the front beside the PoPs, with its pool.
    fn stream_node(
        &mut self,
        st: &hopline_proxy::layer4::StreamInfo,
        map: &Map<'_>,
        secs: f64,
        links: &mut Vec<Value>,
    ) -> Value {
        let id = format!("stream:{}:{}", if st.udp { "udp" } else { "tcp" }, st.bound);
        let connections = st.stats.connections.load(Ordering::Relaxed);
        let per_s = self
            .pair(&id, connections, 0, secs)
            .map(|(r, _)| round(r, 1));
        let target_id = |a: SocketAddr| map.target_id(a);
        let pools: Vec<Value> = map
            .table
            .upstreams
            .get(&st.pool)
            .map(|p| vec![self.pool_json(&id, p, secs, &target_id, links)])
            .unwrap_or_default();
        json!({
            "id": id, "kind": "stream", "role": if st.udp { "udp" } else { "tcp" },
            "label": format!("stream {}", if st.udp { "UDP" } else { "TCP" }),
            "addr": st.bound.to_string(), "col": map.base,
            "connections": st.stats.open.load(Ordering::Relaxed),
            "requests": connections, "rps": per_s.unwrap_or(0.0),
            "pools": pools,
        })
    }

    /// The snapshot: the boxes and links, with the edge's totals and the latest traced
    /// requests.
    fn totals(
        &mut self,
        view: &dyn AdminView,
        secs: f64,
        total_rps: f64,
        nodes: Vec<Value>,
        links: Vec<Value>,
    ) -> Value {
        let m = view.metrics();
        let accepted = m.connections_accepted.load(Ordering::Relaxed);
        let conn_rate = self
            .pair("connections", accepted, 0, secs)
            .map(|(r, _)| round(r, 1));
        let class = |c: usize| m.responses[c].load(Ordering::Relaxed);
        json!({
            "server": "hopline",
            "version": env!("CARGO_PKG_VERSION"),
            "t_ms": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            "interval_s": round(secs, 3),
            "rps": round(total_rps, 1),
            "connections": {
                "open": view.open_connections(),
                "accepted": accepted,
                "accepted_per_s": conn_rate,
                "refused": m.connections_refused.load(Ordering::Relaxed),
            },
            "responses": {"2xx": class(2), "3xx": class(3), "4xx": class(4), "5xx": class(5)},
            "nodes": nodes,
            "links": links,
            "recent": recent_requests(view),
        })
    }
}

/// Where the boxes sit: each site's id, where it listens (configured and bound, to
/// match pool servers to the sites they are), and its column (DNS, then sites by how
/// deep behind the front they sit, then services).
struct Map<'a> {
    table: &'a crate::view::Snapshot,
    ids: Vec<String>,
    bound: Vec<Vec<(SocketAddr, usize)>>,
    col: Vec<usize>,
    base: usize,
    service_col: usize,
}

impl<'a> Map<'a> {
    fn new(view: &dyn AdminView, table: &'a crate::view::Snapshot, base: usize) -> Map<'a> {
        let bound = table
            .sites
            .iter()
            .map(|s| {
                s.listen
                    .iter()
                    .map(|c| view.listener(*c).unwrap_or((*c, 0)))
                    .collect()
            })
            .collect();
        let mut map = Map {
            table,
            ids: site_ids(&table.sites),
            bound,
            col: Vec::new(),
            base,
            service_col: base,
        };
        let col = columns(&table.sites, &|a| map.target_of(a), base);
        map.col = col;
        map.service_col = map.col.iter().copied().max().unwrap_or(base) + 1;
        map
    }

    /// Does site `i` serve `addr`?
    fn serves(&self, i: usize, addr: SocketAddr) -> bool {
        self.table.sites[i]
            .listen
            .iter()
            .zip(&self.bound[i])
            .any(|(c, (b, _))| {
                *c == addr || *b == addr || (c.ip().is_unspecified() && c.port() == addr.port())
            })
    }

    /// Does site `i` listen on `ip`?
    fn on_ip(&self, i: usize, ip: std::net::IpAddr) -> bool {
        self.table.sites[i]
            .listen
            .iter()
            .zip(&self.bound[i])
            .any(|(c, (b, _))| c.ip() == ip || b.ip() == ip)
    }

    /// The site that serves `addr`.
    fn target_of(&self, addr: SocketAddr) -> Option<usize> {
        (0..self.table.sites.len()).find(|&i| self.serves(i, addr))
    }

    /// The box id of the site that serves `addr`.
    fn target_id(&self, addr: SocketAddr) -> Option<String> {
        self.target_of(addr).map(|t| self.ids[t].clone())
    }
}

/// The certificate a site serves, obtained by ACME: who issued it (the issuer's common
/// name), how it came (ordered by which challenge, from storage, or shared by another
/// edge), when (its not-before), when it expires and renews (also as seconds from `now`),
/// and its state with the last failure.
fn certificate_json(st: &hopline_acme::manager::Status, now: u64) -> Value {
    let how = match st.obtained {
        Some("ordered") => format!("ACME {}", st.challenge),
        Some("storage") => "from storage".to_string(),
        Some("shared") => "shared (another edge ordered it)".to_string(),
        Some(other) => other.to_string(),
        None => format!("ACME {} (not yet)", st.challenge),
    };
    let from_now = |t: Option<u64>| t.map(|t| t as i64 - now as i64);
    json!({
        "state": st.state,
        "acme": st.acme,
        "names": st.names,
        "issuer": st.issuer.as_deref().map(common_name),
        "issuer_dn": st.issuer,
        "how": how,
        "obtained": st.obtained,
        "challenge": st.challenge,
        "not_before": st.not_before,
        "not_after": st.not_after,
        "renew_at": st.renew_at,
        "renew_by": st.renew_by,
        "expires_in_s": from_now(st.not_after),
        "renews_in_s": from_now(st.renew_at),
        "orders": st.orders,
        "last_error": st.last_error,
        "retry_in_s": from_now(st.retry_at),
    })
}

/// The common name of a distinguished name as x509-parser prints it
/// (`CN=hopline local CA, O=…` → `hopline local CA`); the whole name without one.
fn common_name(dn: &str) -> String {
    dn.split(", ")
        .find_map(|part| part.trim().strip_prefix("CN="))
        .unwrap_or(dn)
        .to_string()
}

/// The dashboard's column of each site: the front (after DNS, `base`) for sites no pool
/// points at, then one column deeper per hop behind it.
fn columns(
    sites: &[SiteView],
    target_of: &dyn Fn(SocketAddr) -> Option<usize>,
    base: usize,
) -> Vec<usize> {
    let mut col: Vec<Option<usize>> = vec![None; sites.len()];
    let mut behind = vec![false; sites.len()];
    for s in sites {
        for pool in pools_of(s) {
            for srv in &pool.members().servers {
                if let Some(t) = target_of(srv.addr) {
                    behind[t] = true;
                }
            }
        }
    }
    let mut queue: std::collections::VecDeque<usize> =
        (0..sites.len()).filter(|&i| !behind[i]).collect();
    for &i in &queue {
        col[i] = Some(base);
    }
    while let Some(i) = queue.pop_front() {
        for pool in pools_of(&sites[i]) {
            for srv in &pool.members().servers {
                if let Some(t) = target_of(srv.addr)
                    && col[t].is_none()
                {
                    col[t] = Some(col[i].unwrap_or(base) + 1);
                    queue.push_back(t);
                }
            }
        }
    }
    col.into_iter().map(|c| c.unwrap_or(base)).collect()
}

/// The latest traced requests, newest first: one row per request, the hops of a trace that
/// share the span its first hop received (a page visit is one trace of many requests,
/// each its own span).
fn recent_requests(view: &dyn AdminView) -> Vec<Value> {
    let mut recent: Vec<Value> = Vec::new();
    for id in view.recent_traces(RECENT) {
        let hops = view.trace(&id);
        let mut spans: Vec<(&str, Vec<&crate::counters::TraceHop>)> = Vec::new();
        for h in &hops {
            match spans.iter_mut().find(|(s, _)| *s == h.span) {
                Some((_, v)) => v.push(h),
                None => spans.push((&h.span, vec![h])),
            }
        }
        for (span, group) in spans.iter().rev() {
            let first = group[0];
            recent.push(json!({
                "trace": id, "span": span, "site": first.site, "request": first.request,
                "status": first.status, "ms": round(first.ms, 3), "at_us": first.at_us as u64,
                "hops": group.iter().map(|h| h.site.as_str()).collect::<Vec<_>>(),
            }));
        }
        if recent.len() >= RECENT {
            break;
        }
    }
    recent.sort_by_key(|r| std::cmp::Reverse(r["at_us"].as_u64()));
    recent.truncate(RECENT);
    recent
}

/// Unique ids of the sites: `site:NAME` (`#N` added when two share a name).
fn site_ids(sites: &[SiteView]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(sites.len());
    for (i, s) in sites.iter().enumerate() {
        let id = format!("site:{}", s.name);
        if ids.contains(&id) {
            ids.push(format!("{id}#{i}"));
        } else {
            ids.push(id);
        }
    }
    ids
}

/// The pools a site proxies to, once each.
fn pools_of(site: &SiteView) -> Vec<Arc<hopline_proxy::pool::UpstreamPool>> {
    let mut out: Vec<Arc<hopline_proxy::pool::UpstreamPool>> = Vec::new();
    for r in &site.routes {
        if let RouteAnswer::Proxy(p) = &r.answer
            && !out.iter().any(|x| Arc::ptr_eq(x, p))
        {
            out.push(p.clone());
        }
    }
    out
}

/// What a site is in the picture: a PoP (caches), a balancer (proxies), the front of one
/// product (every route mounts a service of that kind, e.g. `ca`) or an origin.
fn role(site: &SiteView) -> String {
    let kinds: Vec<&str> = site
        .routes
        .iter()
        .filter_map(|r| match &r.answer {
            RouteAnswer::Service { kind, .. } => Some(&**kind),
            _ => None,
        })
        .collect();
    if !kinds.is_empty() && kinds.len() == site.routes.len() && kinds.iter().all(|k| *k == kinds[0])
    {
        return kinds[0].to_string();
    }
    if site.routes.iter().any(|r| r.cache.is_some()) {
        "pop"
    } else if site
        .routes
        .iter()
        .any(|r| matches!(r.answer, RouteAnswer::Proxy(_)))
    {
        "balancer"
    } else {
        "origin"
    }
    .to_string()
}

/// `GET /.hopline/events`: a snapshot at once, then one a second, until the client goes
/// away or the admin listener stops.
pub fn events(view: Arc<dyn AdminView>, mut stop: watch::Receiver<bool>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        let mut board = Board::default();
        // the first sample only sets the baseline for rates: the first event follows at once
        let _ = board.sample(&*view);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut first = true;
        loop {
            let snapshot = board.sample(&*view);
            let frame = format!(
                "{}data: {}\n\n",
                if first { "retry: 1000\n" } else { "" },
                snapshot
            );
            first = false;
            if tx.send(Bytes::from(frame)).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = tx.closed() => return,
                _ = stop.changed() => return,
            }
        }
    });
    let mut r = Body::feed(rx).event_stream();
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("hopline"));
    r
}

/// `GET /`: the page.
pub fn page() -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from_static(PAGE.as_bytes())));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::SERVER, HeaderValue::from_static("hopline"));
    // everything the page needs is in it: nothing else may load
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_says_who_issued_it_how_and_when() {
        let st = hopline_acme::manager::Status {
            state: "valid",
            acme: "local".into(),
            names: vec!["www.shop.test".into(), "shop.test".into()],
            obtained: Some("ordered"),
            challenge: "tls-alpn-01",
            not_before: Some(1_000),
            issuer: Some("CN=hopline local CA, O=hopline development CA".into()),
            not_after: Some(1_000 + 86_400),
            renew_at: Some(1_000 + 57_600),
            orders: 1,
            ..Default::default()
        };
        let v = certificate_json(&st, 1_100);
        assert_eq!(v["issuer"], "hopline local CA");
        assert_eq!(v["how"], "ACME tls-alpn-01");
        assert_eq!(v["not_before"], 1_000);
        assert_eq!(v["expires_in_s"], 86_300);
        assert_eq!(v["renews_in_s"], 57_500);
        assert!(v["renew_by"].is_null());
        assert!(v["retry_in_s"].is_null() && v["last_error"].is_null());
        let failing = hopline_acme::manager::Status {
            state: "failing",
            obtained: Some("storage"),
            last_error: Some("connection refused".into()),
            retry_at: Some(1_130),
            ..st.clone()
        };
        let v = certificate_json(&failing, 1_100);
        assert_eq!(v["how"], "from storage");
        assert_eq!(v["state"], "failing");
        assert_eq!(v["last_error"], "connection refused");
        assert_eq!(v["retry_in_s"], 30);
        let shared = hopline_acme::manager::Status {
            obtained: Some("shared"),
            ..st
        };
        assert!(
            certificate_json(&shared, 0)["how"]
                .as_str()
                .unwrap()
                .starts_with("shared")
        );
        assert_eq!(common_name("O=x"), "O=x");
    }
}
