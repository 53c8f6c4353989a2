//! The router: a config compiled once (at start and at each reload) into the tables a
//! request walks — listener → site by Host (exact, then `*.suffix`, then the default
//! site) → route by longest path prefix → handler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use crate::config::{Config, Site};
use crate::error::EdgeError;
use crate::request::compress::Variants;
use crate::request::files::StaticRoute;
use hopline_engine::tls::{self, SniResolver};

/// Maps looked up on every request: a fast hasher (keys are configured names and addresses).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Everything a request needs, swapped whole on reload.
#[derive(Debug)]
pub struct Table {
    /// Per configured listen address.
    pub listeners: FastMap<SocketAddr, Arc<ListenerTable>>,
    /// Limits in force.
    pub limits: crate::config::Limits,
    /// Upstream pools by name.
    pub upstreams: std::collections::BTreeMap<String, Arc<hopline_proxy::pool::UpstreamPool>>,
    /// Caches by name.
    pub caches: std::collections::BTreeMap<String, Arc<hopline_cache::store::HttpCache>>,
    /// Rate limits by name.
    pub limits_by_name: std::collections::BTreeMap<String, Arc<hopline_limits::limiter::Limiter>>,
    /// The admin listener's address, if any.
    pub admin: Option<SocketAddr>,
    /// The admin listener's token, if any.
    pub admin_token: Option<String>,
    /// Traces started per second for requests without one.
    pub sample: u32,
    /// Route services (realtime, notify, …) the config's routes may name.
    pub services: crate::request::service::Services,
    /// Every site, in config order (for the dashboard's topology).
    pub sites: Vec<Arc<SiteTable>>,
    /// Certificates obtained by ACME, by `SECTION:name,name` (kept across reloads).
    pub certificates: std::collections::BTreeMap<String, Arc<hopline_acme::manager::Managed>>,
    /// HTTP-01 challenges in flight, answered before any route (kept across reloads).
    pub http01: Arc<hopline_acme::challenges::Http01>,
    /// TLS-ALPN-01 challenges in flight, answered by ACME sites' listeners (kept across
    /// reloads).
    pub tls_alpn: Arc<tls::AlpnChallenges>,
    /// On-demand certificates, by `SECTION:patterns` (kept across reloads).
    pub on_demand: std::collections::BTreeMap<String, Arc<hopline_acme::on_demand::OnDemand>>,
}

impl Table {
    /// Start the ACME tasks of certificates new in this table (those a reload kept run on).
    pub fn start_certificates(&self) {
        for m in self.certificates.values() {
            m.start(self.http01.clone(), self.tls_alpn.clone());
        }
    }

    /// What the admin side shows of this table (made once per start or reload).
    pub fn snapshot(&self) -> hopline_admin::view::Snapshot {
        use hopline_admin::view::{RouteAnswer, RouteView, ServiceView, SiteView, Snapshot};
        let services: Vec<ServiceView> = self
            .services
            .iter()
            .map(|(kind, name, service)| ServiceView {
                kind: kind.to_string(),
                name: name.to_string(),
                report: Arc::new(crate::request::service::Reporter(service.clone())),
            })
            .collect();
        let sites = self
            .sites
            .iter()
            .map(|site| SiteView {
                name: site.name.clone(),
                listen: site.listen.clone(),
                tls: site.tls,
                stats: site.stats.clone(),
                certificate: site.certificate.clone(),
                routes: site
                    .routes
                    .iter()
                    .map(|route| RouteView {
                        answer: match &route.handler {
                            Handler::Proxy(pool) => RouteAnswer::Proxy(pool.clone()),
                            Handler::Service { kind, service, .. } => self
                                .services
                                .iter()
                                .find(|(k, _, s)| *k == &**kind && Arc::ptr_eq(s, service))
                                .map_or(RouteAnswer::Local, |(_, name, _)| RouteAnswer::Service {
                                    kind: kind.clone(),
                                    name: name.to_string(),
                                }),
                            _ => RouteAnswer::Local,
                        },
                        cache: route.cache.clone(),
                        limit: route.limit.clone(),
                    })
                    .collect(),
            })
            .collect();
        Snapshot {
            sites,
            upstreams: self.upstreams.clone(),
            caches: self.caches.clone(),
            services,
            certificates: self.certificates.clone(),
            on_demand: self.on_demand.clone(),
            admin_token: self.admin_token.clone(),
        }
    }
}

/// A site's certificate, as its listeners will serve it.
enum SiteCert {
    Fixed(Arc<rustls::sign::CertifiedKey>),
    Live(hopline_engine::tls::LiveCert),
    OnDemand(Arc<hopline_acme::on_demand::OnDemand>),
}

/// The sites of one listener.
#[derive(Debug)]
pub struct ListenerTable {
    /// rustls config when the listener speaks TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Obtains certificates while handshakes wait, when a site of it is on-demand.
    pub on_demand: Option<Arc<dyn tls::OnDemandTls>>,
    /// A site of it serves HTTP/3: the listener also answers QUIC on its UDP port.
    pub http3: bool,
    /// `Alt-Svc` for its HTTP/3 sites' HTTP/1.1 and HTTP/2 responses, set once the UDP
    /// port is bound (`h3=":PORT"; ma=86400`).
    pub alt_svc: std::sync::OnceLock<HeaderValue>,
    exact: FastMap<String, Arc<SiteTable>>,
    wildcard: Vec<(String, Arc<SiteTable>)>,
    default: Arc<SiteTable>,
}

/// One site's routes, longest prefix first.
#[derive(Debug)]
pub struct SiteTable {
    /// Name for logs.
    pub name: Arc<str>,
    /// Add this hop's `Server-Timing` entry to responses.
    pub server_timing: bool,
    /// It serves HTTP/3 too, and advertises it (`Alt-Svc`).
    pub http3: bool,
    /// Routes sorted by descending prefix length.
    pub routes: Vec<Route>,
    /// Where it listens.
    pub listen: Vec<SocketAddr>,
    /// It speaks HTTPS.
    pub tls: bool,
    /// Its requests, errors and latency (kept across reloads by site name).
    pub stats: Arc<hopline_admin::counters::SiteStats>,
    /// The key in [`Table::certificates`] of the certificate it serves, when ACME obtains
    /// it (what the dashboard shows on its box).
    pub certificate: Option<String>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Path prefix.
    pub prefix: String,
    /// What answers.
    pub handler: Handler,
    /// `Cache-Control` to set.
    pub cache_control: Option<HeaderValue>,
    /// Extra headers to set.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Largest request body.
    pub max_body: u64,
    /// Compress responses.
    pub compress: bool,
    /// Requests go to the access log.
    pub log: bool,
    /// Cache in front of the proxy.
    pub cache: Option<Arc<hopline_cache::store::HttpCache>>,
    /// Rate limit.
    pub limit: Option<Arc<hopline_limits::limiter::Limiter>>,
}

/// The handler of a route.
#[derive(Debug)]
pub enum Handler {
    /// Files from a folder.
    Static(StaticRoute),
    /// A redirect.
    Redirect {
        /// Target.
        location: HeaderValue,
        /// 301, 302, 303, 307 or 308.
        status: StatusCode,
    },
    /// Forward to an upstream pool.
    Proxy(Arc<hopline_proxy::pool::UpstreamPool>),
    /// A product's route service (realtime channels, notifications, …).
    Service {
        /// The product kind, e.g. `realtime`, for status and logs.
        kind: Arc<str>,
        /// The service.
        service: Arc<dyn crate::request::service::RouteService>,
        /// The route's prefix, handed to the service.
        prefix: Arc<str>,
    },
    /// A fixed response.
    Respond {
        /// Status.
        status: StatusCode,
        /// Content-Type.
        content_type: HeaderValue,
        /// Body and its compressed variants.
        body: Arc<Variants>,
        /// Worth compressing.
        compressible: bool,
    },
}

impl ListenerTable {
    /// The site for a Host (port stripped, lowercased by the caller or not).
    pub fn site(&self, host: &str) -> &Arc<SiteTable> {
        if !host.is_empty() {
            if let Some(s) = self.exact.get(host) {
                return s;
            }
            let lower;
            let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = host.to_ascii_lowercase();
                if let Some(s) = self.exact.get(&lower) {
                    return s;
                }
                lower.as_str()
            } else {
                host
            };
            for (suffix, s) in &self.wildcard {
                if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                    return s;
                }
            }
        }
        &self.default
    }
}

impl SiteTable {
    /// Longest prefix match.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }
}

/// Compile a validated config; caches of the `previous` table with the same name keep
/// their contents.
pub fn compile(
    config: &Config,
    previous: Option<&Table>,
    services: &crate::request::service::Services,
) -> Result<Table, EdgeError> {
    struct Pending {
        tls: Option<SniResolver>,
        on_demand: Option<Arc<hopline_acme::on_demand::OnDemand>>,
        http3: bool,
        plain: bool,
        exact: FastMap<String, Arc<SiteTable>>,
        wildcard: Vec<(String, Arc<SiteTable>)>,
        any: Option<Arc<SiteTable>>,
        first: Option<Arc<SiteTable>>,
    }
    // every product kind in the file is served by this program (else, most likely, a
    // misspelt section of the edge's own)
    let served = services.kinds();
    for (kind, sections) in &config.products {
        if !served.contains(&kind.as_str()) {
            let (line, col) = sections.at;
            return Err(EdgeError::Conflict(format!(
                "[{kind}.{}] (line {line}, column {col}): no part of this program reads [{kind}.*] sections; expected the edge's [upstream.NAME], [cache.NAME], [limit.NAME] or a product's ({})",
                sections
                    .names
                    .iter()
                    .next()
                    .map(String::as_str)
                    .unwrap_or(""),
                if served.is_empty() {
                    "none in this program".to_string()
                } else {
                    served
                        .iter()
                        .map(|k| format!("[{k}.NAME]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            )));
        }
    }
    let mut upstreams = std::collections::BTreeMap::new();
    for (name, up) in &config.upstream {
        upstreams.insert(
            name.clone(),
            Arc::new(hopline_proxy::pool::build_pool(name, up).map_err(EdgeError::Conflict)?),
        );
    }
    let mut caches = std::collections::BTreeMap::new();
    for (name, c) in &config.cache {
        let cache = match previous.and_then(|p| p.caches.get(name)) {
            // keep a cache's contents across reloads
            Some(old) => old.clone(),
            None => {
                let cache =
                    Arc::new(hopline_cache::store::HttpCache::new(name, c).map_err(|e| {
                        EdgeError::Io {
                            what: format!("cache {name}: disk tier"),
                            source: e,
                        }
                    })?);
                if let Some(shared) = &c.shared_purge {
                    crate::purge_channel::attach(name, &cache, shared)
                        .map_err(EdgeError::Conflict)?;
                }
                cache
            }
        };
        caches.insert(name.clone(), cache);
    }
    let mut limits_by_name = std::collections::BTreeMap::new();
    for (name, l) in &config.limit {
        limits_by_name.insert(
            name.clone(),
            Arc::new(hopline_limits::limiter::Limiter::new(name, l).map_err(EdgeError::Conflict)?),
        );
    }
    let mut certificates = std::collections::BTreeMap::new();
    let mut on_demand = std::collections::BTreeMap::new();
    let tls_alpn: Arc<tls::AlpnChallenges> =
        previous.map_or_else(Default::default, |p| p.tls_alpn.clone());
    let http01: Arc<hopline_acme::challenges::Http01> =
        previous.map_or_else(Default::default, |p| p.http01.clone());
    for (name, a) in &config.acme {
        if let Some(url) = &a.redis {
            let shared = hopline_acme::shared::Shared::new(url.get_ref(), name)
                .map_err(EdgeError::Conflict)?;
            http01.share(Arc::new(shared));
        }
    }
    let mut pending: HashMap<SocketAddr, Pending> = HashMap::new();
    let mut order: Vec<SocketAddr> = Vec::new();
    let mut sites = Vec::new();
    for site in &config.site {
        let mut compiled =
            compile_site(site, config, &upstreams, &caches, &limits_by_name, services)?;
        // a site's counters survive a reload that keeps its name
        if let Some(old) = previous.and_then(|p| p.sites.iter().find(|s| s.name == compiled.name)) {
            compiled.stats = old.stats.clone();
        }
        let hosts: Option<Vec<String>> = site.hosts.as_ref().map(|h| {
            h.iter()
                .map(|s| s.get_ref().trim().to_ascii_lowercase())
                .collect()
        });
        let cert = match site.tls.as_ref().map(|t| t.get_ref()) {
            Some(crate::config::TlsFiles {
                acme: Some(section),
                on_demand: Some(od),
                ..
            }) if *od.get_ref() => {
                let section = section.get_ref();
                let key = format!(
                    "{section}:{}",
                    hosts.as_ref().map_or("*".to_string(), |h| h.join(","))
                );
                let acme = config.acme.get(section).expect("validated").clone();
                let storage = acme
                    .storage
                    .as_ref()
                    .map(|s| s.get_ref().clone())
                    .expect("validated");
                let od = match on_demand
                    .get(&key)
                    .or_else(|| previous.and_then(|p| p.on_demand.get(&key)))
                {
                    Some(o) if o.same_setup(&acme, &hosts) => o.clone(),
                    _ => Arc::new(hopline_acme::on_demand::OnDemand::new(
                        section,
                        acme,
                        storage,
                        hosts.clone(),
                        http01.clone(),
                        tls_alpn.clone(),
                    )),
                };
                on_demand.insert(key, od.clone());
                Some(SiteCert::OnDemand(od))
            }
            Some(crate::config::TlsFiles {
                acme: Some(section),
                ..
            }) => {
                let section = section.get_ref();
                let names = hosts.clone().unwrap_or_default();
                let key = format!("{section}:{}", names.join(","));
                let acme = config.acme.get(section).expect("validated").clone();
                let storage = acme
                    .storage
                    .as_ref()
                    .map(|s| s.get_ref().clone())
                    .expect("validated");
                // several sites with the same names (two PoPs) share one certificate
                let managed = match certificates
                    .get(&key)
                    .or_else(|| previous.and_then(|p| p.certificates.get(&key)))
                {
                    Some(m) if m.same_setup(&acme, &storage) => m.clone(),
                    _ => Arc::new(hopline_acme::manager::Managed::new(
                        section, acme, storage, names,
                    )),
                };
                let live = managed.live.clone();
                compiled.certificate = Some(key.clone());
                certificates.insert(key, managed);
                Some(SiteCert::Live(live))
            }
            Some(crate::config::TlsFiles {
                cert: Some(c),
                key: Some(k),
                ..
            }) => Some(SiteCert::Fixed(tls::load_certified_key(
                c.get_ref(),
                k.get_ref(),
            )?)),
            _ => None,
        };
        let table = Arc::new(compiled);
        sites.push(table.clone());
        for l in site.listen.get_ref() {
            let addr: SocketAddr = l.get_ref().parse().expect("validated");
            let p = pending.entry(addr).or_insert_with(|| {
                order.push(addr);
                Pending {
                    tls: None,
                    on_demand: None,
                    http3: false,
                    plain: false,
                    exact: FastMap::default(),
                    wildcard: Vec::new(),
                    any: None,
                    first: None,
                }
            });
            match &cert {
                Some(SiteCert::Fixed(ck)) => p
                    .tls
                    .get_or_insert_with(SniResolver::default)
                    .add(hosts.as_deref(), ck.clone()),
                Some(SiteCert::Live(live)) => {
                    let r = p.tls.get_or_insert_with(SniResolver::default);
                    r.add_live(hosts.as_deref(), live.clone());
                    r.answer_challenges(tls_alpn.clone());
                }
                Some(SiteCert::OnDemand(od)) => {
                    let r = p.tls.get_or_insert_with(SniResolver::default);
                    r.on_demand(od.certs.clone());
                    r.answer_challenges(tls_alpn.clone());
                    p.on_demand = Some(od.clone());
                }
                None => p.plain = true,
            }
            if p.tls.is_some() && p.plain {
                return Err(EdgeError::Conflict(format!(
                    "listener {addr} has sites with TLS and sites without: a listener is either HTTPS or plain HTTP"
                )));
            }
            match &hosts {
                None => p.any = Some(table.clone()),
                Some(hs) => {
                    for h in hs {
                        if let Some(suffix) = h.strip_prefix("*.") {
                            p.wildcard.push((format!(".{suffix}"), table.clone()));
                        } else {
                            p.exact.insert(h.clone(), table.clone());
                        }
                    }
                }
            }
            if p.first.is_none() {
                p.first = Some(table.clone());
            }
            p.http3 |= table.http3;
        }
    }
    let mut listeners = FastMap::default();
    for addr in order {
        let p = pending.remove(&addr).expect("present");
        let tls = match p.tls {
            Some(r) => Some(tls::server_config(r)?),
            None => None,
        };
        // longer wildcard suffixes first, so the most specific wins
        let mut wildcard = p.wildcard;
        wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        listeners.insert(
            addr,
            Arc::new(ListenerTable {
                tls,
                on_demand: p.on_demand.map(|o| o as Arc<dyn tls::OnDemandTls>),
                http3: p.http3,
                alt_svc: std::sync::OnceLock::new(),
                exact: p.exact,
                wildcard,
                default: p.any.or(p.first).expect("a listener has a site"),
            }),
        );
    }
    Ok(Table {
        listeners,
        limits: config.limits.clone(),
        upstreams,
        caches,
        limits_by_name,
        admin: config
            .admin
            .as_ref()
            .map(|a| a.listen.get_ref().parse().expect("validated")),
        admin_token: config
            .admin
            .as_ref()
            .and_then(|a| a.token.as_ref())
            .map(|t| t.get_ref().clone()),
        sample: config.admin.as_ref().map_or(0, |a| a.sample),
        services: services.clone(),
        sites,
        certificates,
        http01,
        tls_alpn,
        on_demand,
    })
}

fn compile_site(
    site: &Site,
    config: &Config,
    upstreams: &std::collections::BTreeMap<String, Arc<hopline_proxy::pool::UpstreamPool>>,
    caches: &std::collections::BTreeMap<String, Arc<hopline_cache::store::HttpCache>>,
    limits: &std::collections::BTreeMap<String, Arc<hopline_limits::limiter::Limiter>>,
    services: &crate::request::service::Services,
) -> Result<SiteTable, EdgeError> {
    let name: Arc<str> = match (&site.name, &site.hosts) {
        (Some(n), _) => n.as_str().into(),
        (None, Some(h)) if !h.is_empty() => h[0].get_ref().as_str().into(),
        _ => site.listen.get_ref()[0].get_ref().as_str().into(),
    };
    let mut routes = Vec::new();
    for r in &site.route {
        let compress = r.compress.unwrap_or(true);
        let handler = if let Some(root) = &r.root {
            let root = root.get_ref().clone();
            let root_canon = std::fs::canonicalize(&root).map_err(|e| EdgeError::Io {
                what: format!("root folder {}", root.display()),
                source: e,
            })?;
            static NEXT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            Handler::Static(StaticRoute {
                uid: NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                root,
                root_canon: Arc::new(root_canon),
                index: r.index.clone().unwrap_or_else(|| vec!["index.html".into()]),
                compress,
            })
        } else if let Some(target) = &r.redirect {
            Handler::Redirect {
                location: HeaderValue::from_str(target).expect("validated"),
                status: StatusCode::from_u16(
                    r.status.as_ref().map(|s| *s.get_ref()).unwrap_or(301),
                )
                .expect("validated"),
            }
        } else if let Some(name) = &r.proxy {
            Handler::Proxy(upstreams.get(name.get_ref()).expect("validated").clone())
        } else if let Some((kind, name)) =
            r.service.as_ref().and_then(|s| s.get_ref().split_once(':'))
        {
            let service = services.get(kind, name).ok_or_else(|| {
                EdgeError::Conflict(format!(
                    "route {}: no {kind} service {name:?} was started (this program does not serve [{kind}.*] sections)",
                    r.path.get_ref(),
                ))
            })?;
            Handler::Service {
                kind: kind.into(),
                service: service.clone(),
                prefix: r.path.get_ref().as_str().into(),
            }
        } else if let Some(resp) = &r.respond {
            let ct = resp
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain; charset=utf-8".into());
            let content_type = HeaderValue::from_str(&ct).map_err(|_| {
                EdgeError::Conflict(format!("content_type {ct:?} is not a valid header value"))
            })?;
            Handler::Respond {
                status: StatusCode::from_u16(*resp.status.get_ref()).expect("validated"),
                compressible: crate::request::compress::compressible(&ct),
                content_type,
                body: Arc::new(Variants::new(Bytes::from(resp.body.clone()))),
            }
        } else {
            unreachable!("validated: one handler per route")
        };
        routes.push(Route {
            prefix: r.path.get_ref().clone(),
            handler,
            cache_control: r
                .cache_control
                .as_ref()
                .map(|c| HeaderValue::from_str(c).expect("validated")),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        HeaderName::from_bytes(k.as_bytes()).expect("validated"),
                        HeaderValue::from_str(v).expect("validated"),
                    )
                })
                .collect(),
            max_body: r.max_body.unwrap_or(config.limits.max_body).0,
            compress,
            log: r.log.unwrap_or(true),
            cache: r.cache.as_ref().map(|c| caches[c.get_ref()].clone()),
            limit: r.limit.as_ref().map(|l| limits[l.get_ref()].clone()),
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    Ok(SiteTable {
        name,
        routes,
        server_timing: site.server_timing,
        http3: site.http3.as_ref().is_some_and(|h| *h.get_ref()),
        listen: site
            .listen
            .get_ref()
            .iter()
            .map(|l| l.get_ref().parse().expect("validated"))
            .collect(),
        tls: site.tls.is_some(),
        stats: Arc::default(),
        certificate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_kind_no_registered_service_serves_is_refused() {
        let text = "[[site]]\nlisten = [\"127.0.0.1:0\"]\n  [[site.route]]\n  path = \"/\"\n  respond = { body = \"x\" }\n\n[chat.room]\nsize = 3\n";
        let dir = std::env::temp_dir();
        let config = Config::from_str_at(text, std::path::Path::new("t.toml"), &dir).unwrap();
        let services = crate::request::service::Services::new();
        let e = compile(&config, None, &services).unwrap_err().to_string();
        assert!(
            e.contains("[chat.room] (line 7, column 2): no part of this program reads [chat.*] sections; expected the edge's [upstream.NAME], [cache.NAME], [limit.NAME] or a product's (none in this program)"),
            "{e}"
        );
    }

    #[test]
    fn sites_by_host_and_routes_by_longest_prefix() {
        let text = r#"
[[site]]
name = "shop"
listen = ["127.0.0.1:1"]
hosts = ["shop.test", "*.shop.test"]
  [[site.route]]
  path = "/"
  respond = { body = "root" }
  [[site.route]]
  path = "/api/"
  respond = { body = "api" }
  [[site.route]]
  path = "/api/v2/"
  respond = { body = "v2" }
[[site]]
name = "other"
listen = ["127.0.0.1:1"]
  [[site.route]]
  path = "/"
  respond = { body = "other" }
"#;
        let c = Config::from_str_at(
            text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
        )
        .unwrap();
        let t = compile(&c, None, &crate::request::service::Services::new()).unwrap();
        let l = &t.listeners[&"127.0.0.1:1".parse().unwrap()];
        assert_eq!(&*l.site("shop.test").name, "shop");
        assert_eq!(&*l.site("WWW.Shop.Test").name, "shop");
        assert_eq!(&*l.site("shop.test.evil").name, "other");
        assert_eq!(&*l.site("").name, "other");
        let shop = l.site("shop.test");
        assert_eq!(shop.route("/api/v2/x").unwrap().prefix, "/api/v2/");
        assert_eq!(shop.route("/api/x").unwrap().prefix, "/api/");
        assert_eq!(shop.route("/index.html").unwrap().prefix, "/");
    }
}
