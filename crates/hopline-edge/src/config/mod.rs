//! The config file: one TOML format for every part of hopline (`hopline serve FILE`).
//!
//! This module owns parsing and validation. A bad file is refused with the file, the
//! line, the column and what was expected; nothing here touches a socket. The result is
//! a [`Config`] whose relative paths are already resolved against the file's folder.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub mod error;
mod lists;
mod products;

pub use error::ConfigError;
use error::{in_file_terms, line_col};
pub use hopline_engine::byte_size::ByteSize;
use hopline_limits::config::LimitConfig;
pub use hopline_proxy::config::{HealthConfig, ServerEntry, Upstream};
pub use products::ProductSections;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Worker threads (`--threads` overrides). Default: one per core.
    pub threads: Option<usize>,
    /// Where access log lines go: "stderr" (default), "off", or a file path.
    #[serde(default)]
    pub access_log: Option<String>,
    /// Connection and request limits shared by every listener.
    #[serde(default)]
    pub limits: Limits,
    /// Open-file cache of the static file handler.
    #[serde(default)]
    pub file_cache: FileCacheConfig,
    /// The sites: listeners, hosts, TLS and routes.
    #[serde(default)]
    pub site: Vec<Site>,
    /// Upstream pools the proxy balances over, by name.
    #[serde(default)]
    pub upstream: std::collections::BTreeMap<String, Upstream>,
    /// The admin listener: `/.hopline/status` (JSON) and `/metrics` (Prometheus).
    pub admin: Option<Admin>,
    /// Layer-4 proxies: TCP connections or UDP datagrams forwarded to a pool.
    #[serde(default)]
    pub stream: Vec<hopline_proxy::layer4::StreamConfig>,
    /// HTTP caches (CDN points of presence), by name.
    #[serde(default)]
    pub cache: std::collections::BTreeMap<String, hopline_cache::config::CacheConfig>,
    /// Rate limits, by name.
    #[serde(default)]
    pub limit: std::collections::BTreeMap<String, LimitConfig>,
    /// DNS services (resolvers, authoritative servers, pools).
    #[serde(default)]
    pub dns: hopline_dns::config::DnsConfig,
    /// ACME CAs that sites get certificates from (`tls = { acme = "NAME" }`), by name.
    #[serde(default)]
    pub acme: std::collections::BTreeMap<String, hopline_acme::config::AcmeConfig>,
    /// The sections of products served on routes (`[KIND.NAME]`, e.g. `[realtime.live]`),
    /// by kind: each product reads its own; the edge knows only their names, to check that
    /// a route's `service = "KIND:NAME"` exists.
    #[serde(skip)]
    pub products: std::collections::BTreeMap<String, ProductSections>,
    /// Folder of the config file; relative paths were resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Limits that protect the server; each breach gets the status a user expects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections at once (all listeners); new ones beyond are closed at accept.
    pub max_connections: usize,
    /// A request's header section must be complete within this (slowloris defence),
    /// counted from its first byte (from the accept for a connection's first request).
    pub header_timeout_ms: u64,
    /// Idle keep-alive connections are closed after this long without a request.
    pub keepalive_timeout_ms: u64,
    /// A client that accepts no response data for this long is cut (nginx's
    /// `send_timeout`): stalled downloads, slow consumers of event streams. HTTP/1.1.
    pub send_timeout_ms: u64,
    /// Requests served on one HTTP/1.1 connection before the server closes it.
    pub keepalive_requests: u64,
    /// Largest request header section accepted (HTTP/1.1 answers 431 above it).
    pub max_header_bytes: ByteSize,
    /// Default largest request body (a route may override it); 413 above it.
    pub max_body: ByteSize,
    /// How long shutdown waits for in-flight requests before closing them.
    pub shutdown_timeout_ms: u64,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_streams: u32,
    /// Concurrent HTTP/3 requests (QUIC streams) per connection.
    pub h3_max_streams: u32,
    /// QUIC handshakes in flight above which a new client must first prove its address
    /// by a Retry round trip (flood and amplification defence; 0: always).
    pub quic_retry_above: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            header_timeout_ms: 30_000,
            keepalive_timeout_ms: 30_000,
            send_timeout_ms: 60_000,
            keepalive_requests: 10_000,
            max_header_bytes: ByteSize(32 * 1024),
            max_body: ByteSize(1024 * 1024),
            shutdown_timeout_ms: 30_000,
            h2_max_streams: 128,
            h3_max_streams: 128,
            quic_retry_above: 64,
        }
    }
}

/// The static file handler's cache of file metadata and small file contents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileCacheConfig {
    /// How long a file's metadata is trusted before it is checked again (like nginx's
    /// `open_file_cache_valid`). 0 checks on every request.
    pub valid_ms: u64,
    /// Files up to this size are kept in memory (with their compressed variants).
    pub max_file: ByteSize,
    /// Total memory for cached contents.
    pub size: ByteSize,
}

impl Default for FileCacheConfig {
    fn default() -> Self {
        FileCacheConfig {
            valid_ms: 1000,
            max_file: ByteSize(1024 * 1024),
            size: ByteSize(64 * 1024 * 1024),
        }
    }
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address, e.g. "127.0.0.1:9900".
    pub listen: Spanned<String>,
    /// A secret every admin request must carry (`Authorization: Bearer …`, or the
    /// cookie `GET /?token=…` sets). Required when `listen` is not a loopback address.
    pub token: Option<Spanned<String>>,
    /// Traces started per second for requests that arrive without a `traceparent` (the
    /// dashboard's recent requests; `hopline trace ID`). 0 turns sampling off.
    #[serde(default = "default_sample")]
    pub sample: u32,
}

fn default_sample() -> u32 {
    10
}

/// One site: where it listens, which Host names it answers, TLS, and its routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// A name for logs and status (default: the first host or listen address).
    pub name: Option<String>,
    /// Addresses to listen on, e.g. "127.0.0.1:8080" or "[::1]:8443".
    pub listen: Spanned<Vec<Spanned<String>>>,
    /// Host names this site answers ("shop.test", "*.shop.test"); absent = any Host.
    pub hosts: Option<Vec<Spanned<String>>>,
    /// HTTPS: certificate chain and key (PEM). ALPN offers h2 and http/1.1; SNI picks the site.
    pub tls: Option<Spanned<TlsFiles>>,
    /// Routes, matched by longest path prefix.
    #[serde(default)]
    pub route: Vec<Route>,
    /// Add this hop's own `Server-Timing: hopline;dur=…;desc="SITE"` to every response.
    #[serde(default)]
    pub server_timing: bool,
    /// Also serve HTTP/3 (QUIC) on UDP at the same address and port, and advertise it to
    /// HTTP/1.1 and HTTP/2 clients with `Alt-Svc` (needs `tls`).
    pub http3: Option<Spanned<bool>>,
}

/// A site's certificate: files (`cert` and `key`), or obtained by ACME (`acme`); also
/// written `tls = "acme"`, short for the file's only `[acme.NAME]`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: Option<Spanned<PathBuf>>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<Spanned<PathBuf>>,
    /// Obtain and renew the certificate for the site's `hosts` from `[acme.NAME]`.
    pub acme: Option<Spanned<String>>,
    /// With `acme`: obtain a certificate for each name a handshake asks for, when the
    /// section's `ask` URL allows it (`hosts`, if given, are patterns names must match).
    pub on_demand: Option<Spanned<bool>>,
}

/// `tls = { … }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsTable {
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    acme: Option<Spanned<String>>,
    on_demand: Option<Spanned<bool>>,
}

impl<'de> Deserialize<'de> for TlsFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = TlsFiles;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{ cert = \"FILE\", key = \"FILE\" }, { acme = \"NAME\" } or \"acme\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TlsFiles, E> {
                if v != "acme" {
                    return Err(E::invalid_value(serde::de::Unexpected::Str(v), &self));
                }
                // the section's name is filled in by the validator: the file's only one
                Ok(TlsFiles {
                    cert: None,
                    key: None,
                    acme: Some(Spanned::new(0..0, String::new())),
                    on_demand: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TlsFiles, A::Error> {
                let t = TlsTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(TlsFiles {
                    cert: t.cert,
                    key: t.key,
                    acme: t.acme,
                    on_demand: t.on_demand,
                })
            }
        }
        d.deserialize_any(Visit)
    }
}

/// One route of a site: a path prefix and exactly one handler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix; the longest matching prefix wins.
    pub path: Spanned<String>,
    /// Serve files from this folder.
    pub root: Option<Spanned<PathBuf>>,
    /// Index files tried for a folder (default: ["index.html"]).
    pub index: Option<Vec<String>>,
    /// Redirect to this URL (the rest of the path is not appended).
    pub redirect: Option<String>,
    /// Status for `redirect` (301 default; 302, 303, 307, 308) .
    pub status: Option<Spanned<u16>>,
    /// Answer with a fixed response.
    pub respond: Option<Respond>,
    /// Forward to the named `[upstream.NAME]` pool.
    pub proxy: Option<Spanned<String>>,
    /// Answer with a product's route service, `"KIND:NAME"` (e.g. `"realtime:live"`, the
    /// service of `[realtime.live]`). `KIND = "NAME"` is the same, written shorter.
    pub service: Option<Spanned<String>>,
    /// Answer from the named `[cache.NAME]` where RFC 9111 allows (needs `proxy`).
    pub cache: Option<Spanned<String>>,
    /// Apply the named `[limit.NAME]` rate limit.
    pub limit: Option<Spanned<String>>,
    /// `Cache-Control` value set on this route's responses.
    pub cache_control: Option<String>,
    /// Largest request body for this route (413 above it).
    pub max_body: Option<ByteSize>,
    /// Compress responses by Accept-Encoding (default true).
    pub compress: Option<bool>,
    /// Write this route's requests to the access log (default true; `false` for e.g. a
    /// health-check path, like nginx's `access_log off` in a location).
    pub log: Option<bool>,
    /// Extra response headers, e.g. { "X-Frame-Options" = "DENY" }.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// A fixed response.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    /// Status code (default 200).
    #[serde(default = "default_status")]
    pub status: Spanned<u16>,
    /// Body text.
    #[serde(default)]
    pub body: String,
    /// Content-Type (default "text/plain; charset=utf-8").
    pub content_type: Option<String>,
}

fn default_status() -> Spanned<u16> {
    Spanned::new(0..0, 200)
}

impl Config {
    /// Read, parse and validate a config file. Relative paths are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        Config::from_str_at(&text, path, &base)
    }

    /// Parse and validate config text as if read from `file`, resolving paths against `base`.
    pub fn from_str_at(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut root = toml::de::DeTable::parse(text)
            .map_err(|e| ConfigError::at(file, text, e.span(), in_file_terms(text, &e)))?;
        lists::check(root.get_ref(), text)
            .map_err(|(span, message)| ConfigError::at(file, text, Some(span), message))?;
        let present = sections(root.get_ref());
        let products = products::lift(root.get_mut(), text)
            .map_err(|(span, message)| ConfigError::at(file, text, Some(span), message))?;
        let mut config = Config::deserialize(toml::de::Deserializer::from(root))
            .map_err(|e| ConfigError::at(file, text, e.span(), in_file_terms(text, &e)))?;
        config.products = products;
        config.base_dir = base.to_path_buf();
        Validator { file, text, base }.validate(&mut config)?;
        if !config.serves_anything() && config.admin.is_none() {
            return Err(ConfigError::at(
                file,
                text,
                None,
                nothing_to_serve(&present),
            ));
        }
        Ok(config)
    }

    /// Whether the file defines something to serve besides its admin listener: a site, a
    /// stream proxy, a DNS resolver or authoritative server, or a product's section. A
    /// file without any (nor an `[admin]`) is refused; with only an `[admin]` it is a
    /// dashboard of nothing, for which `hopline serve` warns.
    pub fn serves_anything(&self) -> bool {
        !self.site.is_empty()
            || !self.stream.is_empty()
            || !self.dns.resolver.is_empty()
            || !self.dns.authoritative.is_empty()
            || !self.products.is_empty()
    }
}

/// The sections and keys at the top of a file, in file order, as written (`threads`,
/// `[limits]`, `[[dns.pool]]`): said back to a file that serves nothing.
fn sections(root: &toml::de::DeTable<'_>) -> Vec<String> {
    use toml::de::DeValue;
    let mut entries: Vec<_> = root.iter().collect();
    entries.sort_by_key(|(_, v)| v.span().start);
    let mut out = Vec::new();
    for (key, value) in entries {
        let key = key.get_ref();
        match value.get_ref() {
            DeValue::Table(t) if key == "dns" => {
                let mut inner: Vec<_> = t.iter().collect();
                inner.sort_by_key(|(_, v)| v.span().start);
                out.extend(
                    inner
                        .iter()
                        .map(|(k, _)| format!("[[dns.{}]]", k.get_ref())),
                );
            }
            DeValue::Table(_) => out.push(format!("[{key}]")),
            DeValue::Array(a) if a.iter().all(|i| matches!(i.get_ref(), DeValue::Table(_))) => {
                out.push(format!("[[{key}]]"))
            }
            _ => out.push(key.to_string()),
        }
    }
    out
}

/// Why a file that serves nothing is refused: what it holds, and what was expected.
fn nothing_to_serve(present: &[String]) -> String {
    let expected = "expected at least one [[site]] (with its [[site.route]]), [[stream]], [[dns.resolver]], [[dns.authoritative]] or product section ([KIND.NAME], e.g. [realtime.live])";
    if present.is_empty() {
        format!("nothing to serve: the file is empty; {expected}")
    } else {
        format!(
            "nothing to serve: the file has only {}; {expected}",
            present.join(", ")
        )
    }
}

/// Checks what serde cannot: addresses, files, handlers, conflicts.
struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    base: &'a Path,
}

/// The names of the sections a route may name.
struct Known<'a> {
    acme: Vec<String>,
    acme_dns01: Vec<String>,
    acme_ask: Vec<String>,
    caches: Vec<String>,
    limits: Vec<String>,
    upstreams: Vec<String>,
    products: &'a std::collections::BTreeMap<String, ProductSections>,
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, self.text, Some(span), msg)
    }

    /// A route's `service = "KIND:NAME"` names a `[KIND.NAME]` section of this file.
    fn check_service(
        &self,
        named: &Spanned<String>,
        products: &std::collections::BTreeMap<String, ProductSections>,
    ) -> Result<(), ConfigError> {
        let Some((kind, name)) = named.get_ref().split_once(':') else {
            return Err(self.err(
                named.span(),
                format!(
                    "service {:?}: expected \"KIND:NAME\", e.g. \"realtime:live\" for [realtime.live]",
                    named.get_ref()
                ),
            ));
        };
        let known = products.get(kind).map(|p| &p.names);
        if known.is_some_and(|k| k.contains(name)) {
            return Ok(());
        }
        let names: Vec<&str> = known.into_iter().flatten().map(String::as_str).collect();
        Err(self.err(
            named.span(),
            format!(
                "no [{kind}.{name}] in this file (known: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ))
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// Check the whole file, section by section; each step refuses a value at its place.
    fn validate(&self, config: &mut Config) -> Result<(), ConfigError> {
        self.top_level(config)?;
        self.limits_and_caches(config)?;
        self.upstreams(config)?;
        self.admin(config)?;
        self.streams(config)?;
        self.acme(config)?;
        let known = Known {
            acme: config.acme.keys().cloned().collect(),
            acme_ask: config
                .acme
                .iter()
                .filter(|(_, a)| a.ask.is_some())
                .map(|(n, _)| n.clone())
                .collect(),
            acme_dns01: config
                .acme
                .iter()
                .filter(|(_, a)| a.challenge() == hopline_acme::config::Challenge::Dns01)
                .map(|(n, _)| n.clone())
                .collect(),
            caches: config.cache.keys().cloned().collect(),
            limits: config.limit.keys().cloned().collect(),
            upstreams: config.upstream.keys().cloned().collect(),
            products: &config.products,
        };
        // (listen address, host or "*") pairs already claimed, for conflict detection.
        let mut claimed: Vec<(SocketAddr, String, Range<usize>)> = Vec::new();
        for site in &mut config.site {
            self.site(site, &known, &mut claimed)?;
        }
        Ok(())
    }

    /// `[acme.NAME]` sections: a directory URL; files resolved against the file's folder.
    fn acme(&self, config: &mut Config) -> Result<(), ConfigError> {
        for (name, a) in &mut config.acme {
            let url = a.directory.get_ref();
            if !url.starts_with("https://") {
                return Err(self.err(
                    a.directory.span(),
                    format!("[acme.{name}] directory {url:?}: expected the CA's directory URL, https:// (RFC 8555 §6.1), e.g. https://acme-v02.api.letsencrypt.org/directory"),
                ));
            }
            if let Some(c) = &a.challenge
                && !matches!(c.get_ref().as_str(), "http-01" | "tls-alpn-01" | "dns-01")
            {
                return Err(self.err(
                    c.span(),
                    format!(
                        "[acme.{name}] challenge {:?}: expected \"http-01\", \"tls-alpn-01\" or \"dns-01\"",
                        c.get_ref()
                    ),
                ));
            }
            if let Some(k) = &a.key_type
                && hopline_acme::config::KeyType::parse(k.get_ref()).is_none()
            {
                return Err(self.err(
                    k.span(),
                    format!(
                        "[acme.{name}] key_type {:?}: expected one of {}",
                        k.get_ref(),
                        hopline_acme::config::KeyType::NAMES
                            .map(|n| format!("{n:?}"))
                            .join(", ")
                    ),
                ));
            }
            if let Some(url) = &a.redis {
                if let Err(e) = redis::Client::open(url.get_ref().as_str()) {
                    return Err(self.err(
                        url.span(),
                        format!("[acme.{name}] redis {:?}: {e}", url.get_ref()),
                    ));
                }
                if a.challenge() != hopline_acme::config::Challenge::Http01 {
                    return Err(self.err(
                        url.span(),
                        format!(
                            "[acme.{name}] redis: edges share HTTP-01 answers only; challenge must be \"http-01\" here"
                        ),
                    ));
                }
            }
            if let Some(ask) = &a.ask
                && !ask.get_ref().starts_with("http://")
            {
                return Err(self.err(
                    ask.span(),
                    format!(
                        "[acme.{name}] ask {:?}: expected a plain http:// URL (a local service that answers 2xx for names to allow)",
                        ask.get_ref()
                    ),
                ));
            }
            if let Some(root) = &mut a.ca_root {
                let resolved = self.resolve(root.get_ref());
                if !resolved.is_file() {
                    return Err(self.err(
                        root.span(),
                        format!("[acme.{name}] ca_root {} not found", resolved.display()),
                    ));
                }
                *root = Spanned::new(root.span(), resolved);
            }
            let storage = match &a.storage {
                Some(s) => Spanned::new(s.span(), self.resolve(s.get_ref())),
                None => Spanned::new(0..0, self.base.join("acme").join(name)),
            };
            a.storage = Some(storage);
        }
        Ok(())
    }

    /// `threads`, `access_log`, `[limits]`.
    fn top_level(&self, config: &mut Config) -> Result<(), ConfigError> {
        if config.threads == Some(0) {
            return Err(ConfigError::at(
                self.file,
                self.text,
                None,
                "threads must be at least 1",
            ));
        }
        if let Some(log) = &config.access_log
            && log != "stderr"
            && log != "off"
        {
            config.access_log = Some(self.resolve(Path::new(log)).display().to_string());
        }
        if config.limits.max_header_bytes.0 < 8192 {
            return Err(ConfigError::at(
                self.file,
                self.text,
                None,
                "limits.max_header_bytes must be at least 8KiB (8192)",
            ));
        }
        Ok(())
    }

    /// `[limit.NAME]` and `[cache.NAME]` sections.
    fn limits_and_caches(&self, config: &mut Config) -> Result<(), ConfigError> {
        for (name, l) in &config.limit {
            if let Err(e) = hopline_limits::limiter::Limiter::new(name, l) {
                return Err(ConfigError::at(
                    self.file,
                    self.text,
                    None,
                    format!("[limit.{name}]: {e}"),
                ));
            }
        }
        for c in config.cache.values_mut() {
            if let Some(d) = &mut c.disk {
                d.path = self.resolve(&d.path);
            }
        }
        Ok(())
    }

    /// `[upstream.NAME]` sections: servers, weights, health checks.
    fn upstreams(&self, config: &Config) -> Result<(), ConfigError> {
        for (name, up) in &config.upstream {
            if up.servers.get_ref().is_empty() {
                return Err(self.err(
                    up.servers.span(),
                    format!("upstream {name} needs at least one server"),
                ));
            }
            for server in up.servers.get_ref() {
                let (addr, weight, _) = server.get_ref().parts();
                if weight == 0 {
                    return Err(self.err(server.span(), "weight must be at least 1"));
                }
                let ok = addr.parse::<SocketAddr>().is_ok()
                    || addr
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !ok {
                    return Err(self.err(
                        server.span(),
                        format!("bad server address {addr:?}: expected IP:PORT or host:port"),
                    ));
                }
            }
            if let Some(h) = &up.health
                && (h.fails == 0 || h.passes == 0 || !h.path.starts_with('/'))
            {
                return Err(self.err(
                    up.servers.span(),
                    format!("upstream {name}: health needs fails >= 1, passes >= 1 and a path starting with '/'"),
                ));
            }
        }
        Ok(())
    }

    /// `[admin]`: its address, and a token unless it listens on loopback.
    fn admin(&self, config: &Config) -> Result<(), ConfigError> {
        if let Some(admin) = &config.admin {
            let Ok(addr) = admin.listen.get_ref().parse::<SocketAddr>() else {
                return Err(self.err(
                    admin.listen.span(),
                    format!(
                        "bad admin listen address {:?}: expected IP:PORT",
                        admin.listen.get_ref()
                    ),
                ));
            };
            if let Some(t) = &admin.token
                && t.get_ref().len() < 16
            {
                return Err(self.err(
                    t.span(),
                    "admin token: expected at least 16 characters (e.g. the output of `openssl rand -hex 16`)",
                ));
            }
            if !addr.ip().to_canonical().is_loopback() && admin.token.is_none() {
                return Err(self.err(
                    admin.listen.span(),
                    format!(
                        "admin listen {addr} is not a loopback address: set [admin] token = \"…\" (at least 16 characters), or listen on 127.0.0.1 — the dashboard and PURGE are never served open"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[[stream]]` listeners: address, protocol, pool, and no address used twice.
    fn streams(&self, config: &Config) -> Result<(), ConfigError> {
        let site_addrs: Vec<SocketAddr> = config
            .site
            .iter()
            .flat_map(|s| s.listen.get_ref().iter())
            .filter_map(|l| l.get_ref().parse().ok())
            .collect();
        let mut stream_addrs: Vec<(SocketAddr, bool)> = Vec::new();
        for st in &config.stream {
            let Ok(addr) = st.listen.get_ref().parse::<SocketAddr>() else {
                return Err(self.err(
                    st.listen.span(),
                    format!(
                        "bad stream listen address {:?}: expected IP:PORT",
                        st.listen.get_ref()
                    ),
                ));
            };
            if let Some(p) = &st.protocol
                && !p.get_ref().eq_ignore_ascii_case("tcp")
                && !p.get_ref().eq_ignore_ascii_case("udp")
            {
                return Err(self.err(
                    p.span(),
                    format!(
                        "stream protocol {:?}: expected \"tcp\" or \"udp\"",
                        p.get_ref()
                    ),
                ));
            }
            if !config.upstream.contains_key(st.proxy.get_ref()) {
                return Err(self.err(
                    st.proxy.span(),
                    format!(
                        "stream proxy {:?}: no [upstream.{}] section",
                        st.proxy.get_ref(),
                        st.proxy.get_ref()
                    ),
                ));
            }
            let udp = st.udp();
            if addr.port() != 0
                && (stream_addrs.contains(&(addr, udp)) || (!udp && site_addrs.contains(&addr)))
            {
                return Err(self.err(
                    st.listen.span(),
                    format!(
                        "stream listen {addr} ({}) is already used by another listener",
                        if udp { "udp" } else { "tcp" }
                    ),
                ));
            }
            stream_addrs.push((addr, udp));
        }
        Ok(())
    }

    /// One `[[site]]`: its listeners and hosts (none claimed twice), TLS files, routes.
    fn site(
        &self,
        site: &mut Site,
        known: &Known<'_>,
        claimed: &mut Vec<(SocketAddr, String, Range<usize>)>,
    ) -> Result<(), ConfigError> {
        if site.listen.get_ref().is_empty() {
            return Err(self.err(
                site.listen.span(),
                "a site needs at least one listen address",
            ));
        }
        if let Some(h3) = &site.http3
            && *h3.get_ref()
            && site.tls.is_none()
        {
            return Err(self.err(
                h3.span(),
                "http3 = true needs tls (QUIC is always encrypted): add tls = { cert = …, key = … } or tls = { acme = … }",
            ));
        }
        let mut addrs = Vec::new();
        for l in site.listen.get_ref() {
            let addr: SocketAddr = l.get_ref().parse().map_err(|_| {
                self.err(
                    l.span(),
                    format!(
                        "bad listen address {:?}: expected IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8443\"",
                        l.get_ref()
                    ),
                )
            })?;
            addrs.push((addr, l.span()));
        }
        let hosts: Vec<(String, Range<usize>)> = match &site.hosts {
            Some(h) => {
                let mut v = Vec::new();
                for host in h {
                    let name = host.get_ref().trim().to_ascii_lowercase();
                    if name.is_empty()
                        || name.contains('/')
                        || name.contains(' ')
                        || (name.contains('*') && !name.starts_with("*."))
                    {
                        return Err(self.err(
                            host.span(),
                            format!(
                                "bad host {:?}: expected a name like \"shop.test\" or \"*.shop.test\"",
                                host.get_ref()
                            ),
                        ));
                    }
                    v.push((name, host.span()));
                }
                v
            }
            None => vec![("*".to_string(), site.listen.span())],
        };
        for (addr, _) in &addrs {
            for (host, span) in &hosts {
                if let Some((_, _, first)) = claimed.iter().find(|(a, h, _)| a == addr && h == host)
                {
                    let (l, _) = line_col(self.text, first.start);
                    return Err(self.err(
                        span.clone(),
                        format!(
                            "two sites claim listener {addr} for host {host:?} (the other is at line {l}); give each site distinct hosts or addresses"
                        ),
                    ));
                }
                claimed.push((*addr, host.clone(), span.clone()));
            }
        }
        if let Some(tls) = &mut site.tls {
            let span = tls.span();
            let files = tls.get_mut();
            // `tls = "acme"`: the file's only [acme.NAME]
            if let Some(a) = &mut files.acme
                && a.get_ref().is_empty()
            {
                match known.acme.as_slice() {
                    [only] => *a = Spanned::new(span.clone(), only.clone()),
                    all => {
                        return Err(self.err(
                            span.clone(),
                            format!(
                                "tls = \"acme\" is short for the file's only [acme.NAME]; it has {}: write tls = {{ acme = \"NAME\" }}",
                                if all.is_empty() { "none".to_string() } else { all.join(", ") }
                            ),
                        ));
                    }
                }
            }
            match (&files.acme, files.cert.is_some() || files.key.is_some()) {
                (Some(a), true) => {
                    return Err(self.err(
                        a.span(),
                        "tls: either cert and key (files) or acme = \"NAME\" (obtained), not both",
                    ));
                }
                (Some(a), false) => {
                    if !known.acme.contains(a.get_ref()) {
                        return Err(self.err(
                            a.span(),
                            format!(
                                "no [acme.{}] in this file (known: {})",
                                a.get_ref(),
                                if known.acme.is_empty() {
                                    "none".to_string()
                                } else {
                                    known.acme.join(", ")
                                }
                            ),
                        ));
                    }
                    let on_demand = files.on_demand.as_ref().is_some_and(|o| *o.get_ref());
                    if on_demand && !known.acme_ask.contains(a.get_ref()) {
                        return Err(self.err(
                            a.span(),
                            format!(
                                "on_demand = true needs ask = \"http://…\" in [acme.{}]: without it anyone could make this server order certificates for any name",
                                a.get_ref()
                            ),
                        ));
                    }
                    let hosts: Vec<&Spanned<String>> = site.hosts.iter().flatten().collect();
                    if on_demand {
                        // hosts are patterns the names asked for must match
                    } else if hosts.is_empty() {
                        return Err(self.err(
                            a.span(),
                            "tls = { acme = … } needs the site's names: add hosts = [\"www.example.com\", …]",
                        ));
                    }
                    let dns01 = known.acme_dns01.contains(a.get_ref());
                    if let Some(w) = hosts
                        .iter()
                        .find(|h| h.get_ref().contains('*') && !dns01 && !on_demand)
                    {
                        return Err(self.err(
                            w.span(),
                            format!(
                                "{:?}: a wildcard name needs the DNS-01 challenge: set challenge = \"dns-01\" in [acme.{}] (its zone served by this file's [[dns.authoritative]]), or list the names",
                                w.get_ref(),
                                a.get_ref()
                            ),
                        ));
                    }
                }
                (None, _) => {
                    if let Some(o) = &files.on_demand {
                        return Err(self.err(
                            o.span(),
                            "on_demand needs acme = \"NAME\" (certificates obtained by ACME)",
                        ));
                    }
                    for (f, what) in [(&files.cert, "cert"), (&files.key, "key")] {
                        if f.is_none() {
                            return Err(self.err(
                                span.clone(),
                                format!(
                                    "tls needs {what} = \"FILE\" (with cert and key), or acme = \"NAME\""
                                ),
                            ));
                        }
                    }
                    for f in [&mut files.cert, &mut files.key].into_iter().flatten() {
                        let resolved = self.resolve(f.get_ref());
                        if !resolved.is_file() {
                            return Err(self.err(
                                f.span(),
                                format!("TLS file {} not found", resolved.display()),
                            ));
                        }
                        *f = Spanned::new(f.span(), resolved);
                    }
                }
            }
        }
        if site.route.is_empty() {
            return Err(self.err(
                site.listen.span(),
                "a site needs at least one [[site.route]]",
            ));
        }
        let mut paths: Vec<&str> = Vec::new();
        for route in &mut site.route {
            self.route(route, known)?;
            if paths.contains(&route.path.get_ref().as_str()) {
                return Err(self.err(
                    route.path.span(),
                    format!(
                        "route path {:?} appears twice in this site",
                        route.path.get_ref()
                    ),
                ));
            }
            paths.push(route.path.get_ref().as_str());
        }
        Ok(())
    }

    /// One `[[site.route]]`: its path, one handler, and the sections it names.
    fn route(&self, route: &mut Route, known: &Known<'_>) -> Result<(), ConfigError> {
        let p = route.path.get_ref();
        if !p.starts_with('/') {
            return Err(self.err(
                route.path.span(),
                format!("route path {p:?} must start with '/'"),
            ));
        }
        let handlers = route.root.is_some() as u8
            + route.redirect.is_some() as u8
            + route.respond.is_some() as u8
            + route.proxy.is_some() as u8
            + route.service.is_some() as u8;
        if handlers != 1 {
            let kinds: String = known.products.keys().map(|k| format!(", `{k}`")).collect();
            return Err(self.err(
                route.path.span(),
                format!(
                    "a route needs exactly one handler: `root`, `redirect`, `respond`, `proxy` or `service`{kinds}"
                ),
            ));
        }
        if let Some(named) = &route.service {
            self.check_service(named, known.products)?;
        }
        if let Some(c) = &route.cache {
            if route.proxy.is_none() {
                return Err(self.err(
                    c.span(),
                    "`cache` needs a `proxy` route (it caches what the origin answers)",
                ));
            }
            if !known.caches.contains(c.get_ref()) {
                return Err(self.err(c.span(), format!("no [cache.{}] in this file", c.get_ref())));
            }
        }
        if let Some(l) = &route.limit
            && !known.limits.contains(l.get_ref())
        {
            return Err(self.err(l.span(), format!("no [limit.{}] in this file", l.get_ref())));
        }
        if let Some(p) = &route.proxy
            && !known.upstreams.contains(p.get_ref())
        {
            return Err(self.err(
                p.span(),
                format!(
                    "no [upstream.{}] in this file (known: {})",
                    p.get_ref(),
                    if known.upstreams.is_empty() {
                        "none".to_string()
                    } else {
                        known.upstreams.join(", ")
                    }
                ),
            ));
        }
        if let Some(status) = &route.status {
            if route.redirect.is_none() {
                return Err(self.err(status.span(), "`status` only applies to `redirect`"));
            }
            if ![301, 302, 303, 307, 308].contains(status.get_ref()) {
                return Err(self.err(
                    status.span(),
                    format!(
                        "redirect status {} is not a redirect: expected 301, 302, 303, 307 or 308",
                        status.get_ref()
                    ),
                ));
            }
        }
        if let Some(target) = &route.redirect
            && (target.is_empty() || http::HeaderValue::from_str(target).is_err())
        {
            return Err(self.err(
                route.path.span(),
                format!("redirect target {target:?} is not a valid Location value"),
            ));
        }
        if let Some(respond) = &route.respond {
            let s = *respond.status.get_ref();
            if !(100..=999).contains(&s) || (100..200).contains(&s) {
                return Err(self.err(
                    respond.status.span(),
                    format!("respond status {s} is not a final HTTP status (200-999)"),
                ));
            }
        }
        if let Some(cc) = &route.cache_control
            && http::HeaderValue::from_str(cc).is_err()
        {
            return Err(self.err(
                route.path.span(),
                format!("cache_control {cc:?} is not a valid header value"),
            ));
        }
        for (name, value) in &route.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(self.err(
                    route.path.span(),
                    format!("header {name:?} = {value:?} is not a valid header"),
                ));
            }
        }
        if let Some(root) = &mut route.root {
            let resolved = self.resolve(root.get_ref());
            if !resolved.is_dir() {
                return Err(self.err(
                    root.span(),
                    format!("root folder {} not found", resolved.display()),
                ));
            }
            *root = Spanned::new(root.span(), resolved);
        }
        Ok(())
    }
}

/// Every address a config listens on, deduplicated, in file order.
pub fn listen_addrs(config: &Config) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for site in &config.site {
        for l in site.listen.get_ref() {
            if let Ok(a) = l.get_ref().parse::<SocketAddr>()
                && !out.contains(&a)
            {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_sections_are_lifted_and_routes_name_them_generically() {
        let text = "[chat.room]\nsize = 3\n[chat.hall]\nopen = true\n\n[[site]]\nlisten = [\"127.0.0.1:0\"]\n  [[site.route]]\n  path = \"/a/\"\n  chat = \"room\"\n  [[site.route]]\n  path = \"/b/\"\n  service = \"chat:hall\"\n";
        let c = parse(text).unwrap();
        let chat = &c.products["chat"];
        assert_eq!(chat.names.iter().collect::<Vec<_>>(), ["hall", "room"]);
        assert_eq!(chat.at, (1, 2));
        let named: Vec<&str> = c.site[0]
            .route
            .iter()
            .map(|r| r.service.as_ref().unwrap().get_ref().as_str())
            .collect();
        assert_eq!(named, ["chat:room", "chat:hall"]);
        // the shorthand keeps its place in the file for errors
        let e = parse(&text.replace("chat = \"room\"", "chat = \"nope\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("10:10") && e.contains("no [chat.nope] in this file (known: hall, room)"),
            "{e}"
        );
        let e = parse(&text.replace("service = \"chat:hall\"", "service = \"hall\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected \"KIND:NAME\""), "{e}");
        let e = parse(&text.replace(
            "service = \"chat:hall\"",
            "service = \"chat:hall\"\n  chat = \"room\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("both name this route's handler"), "{e}");
        // a key the edge does not know, where the file has no such section, is still refused
        let e = parse(&text.replace("chat = \"room\"", "proxi = \"room\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("proxi"), "{e}");
    }

    #[test]
    fn type_errors_speak_the_files_language() {
        for (text, want) in [
            (
                "threads = \"two\"\n",
                "1:11: threads: expected a whole number, found \"two\"",
            ),
            (
                "[[site]]\nlisten = \"127.0.0.1:8080\"\n",
                "listen: expected a list of addresses, e.g. [\"127.0.0.1:8080\"]",
            ),
            (
                "[[site]]\nlisten = [\"127.0.0.1:0\"]\n  [[site.route]]\n  path = \"/\"\n  compress = \"yes\"\n",
                "5:14: compress: expected true or false, found \"yes\"",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("usize") && !e.contains("sequence"), "{e}");
        }
    }

    #[test]
    fn an_admin_listener_off_loopback_needs_a_token() {
        let site = "[[site]]\nlisten = [\"127.0.0.1:0\"]\n  [[site.route]]\n  path = \"/\"\n  respond = { body = \"x\" }\n";
        let e = parse(&format!("[admin]\nlisten = \"0.0.0.0:9900\"\n{site}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2:10") && e.contains("not a loopback address") && e.contains("token"),
            "{e}"
        );
        let e = parse(&format!(
            "[admin]\nlisten = \"0.0.0.0:9900\"\ntoken = \"short\"\n{site}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("3:9") && e.contains("at least 16"), "{e}");
        let ok = parse(&format!(
            "[admin]\nlisten = \"0.0.0.0:9900\"\ntoken = \"0123456789abcdef\"\n{site}"
        ))
        .unwrap();
        assert_eq!(ok.admin.unwrap().sample, 10);
        parse(&format!("[admin]\nlisten = \"127.0.0.1:9900\"\n{site}")).unwrap();
        parse(&format!("[admin]\nlisten = \"[::1]:9900\"\n{site}")).unwrap();
    }

    #[test]
    fn stream_sections_are_checked() {
        let up = "[upstream.db]\nservers = [\"127.0.0.1:5432\"]\n";
        for (text, want) in [
            (
                format!("{up}[[stream]]\nlisten = \"127.0.0.1:6000\"\nproxy = \"nope\"\n"),
                "5:9: stream proxy \"nope\": no [upstream.nope] section",
            ),
            (
                format!(
                    "{up}[[stream]]\nlisten = \"127.0.0.1:6000\"\nproxy = \"db\"\nprotocol = \"sctp\"\n"
                ),
                "6:12: stream protocol \"sctp\": expected \"tcp\" or \"udp\"",
            ),
            (
                format!("{up}[[stream]]\nlisten = \"6000\"\nproxy = \"db\"\n"),
                "4:10: bad stream listen address \"6000\"",
            ),
            (
                format!(
                    "{up}[[stream]]\nlisten = \"127.0.0.1:6000\"\nproxy = \"db\"\n[[stream]]\nlisten = \"127.0.0.1:6000\"\nproxy = \"db\"\n"
                ),
                "already used by another listener",
            ),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        // the same port over TCP and UDP is two listeners
        let ok = parse(&format!(
            "{up}[[stream]]\nlisten = \"127.0.0.1:6000\"\nproxy = \"db\"\n[[stream]]\nlisten = \"127.0.0.1:6000\"\nproxy = \"db\"\nprotocol = \"udp\"\n"
        ))
        .unwrap();
        assert_eq!(ok.stream.len(), 2);
        assert_eq!(ok.stream[1].idle(), std::time::Duration::from_secs(30));
        assert_eq!(ok.stream[0].idle(), std::time::Duration::from_secs(600));
    }

    #[test]
    fn a_list_inside_an_entry_needs_its_entry_above_it() {
        for (text, at, want) in [
            (
                "[[site.route]]\npath = \"/\"\nroot = \".\"\n",
                "test.toml:1:1: ",
                "a [[site.route]] must follow a [[site]] (none is above it)",
            ),
            (
                "threads = 2\n\n  [[site.route]]\n  path = \"/\"\n  respond = {}\n",
                "test.toml:3:3: ",
                "a [[site.route]] must follow a [[site]]",
            ),
            (
                "[site.tls]\ncert = \"a.pem\"\nkey = \"a-key.pem\"\n",
                "test.toml:1:1: ",
                "a [site.tls] must follow a [[site]]",
            ),
            (
                "[site]\nlisten = [\"127.0.0.1:0\"]\n[[site.route]]\npath = \"/\"\nrespond = {}\n",
                "test.toml:1:1: ",
                "[site] must be written [[site]]",
            ),
            (
                "[[site]]\nlisten = [\"127.0.0.1:0\"]\n[site.route]\npath = \"/\"\nrespond = {}\n",
                "test.toml:3:1: ",
                "[site.route] must be written [[site.route]]",
            ),
            (
                "[stream]\nlisten = \"127.0.0.1:6000\"\nproxy = \"db\"\n",
                "test.toml:1:1: ",
                "[stream] must be written [[stream]]",
            ),
            (
                "[dns]\n[[dns.authoritative.zones]]\nfile = \"shop.zone\"\n",
                "test.toml:2:1: ",
                "a [[dns.authoritative.zones]] must follow a [[dns.authoritative]]",
            ),
            (
                "[[dns.pool.addresses]]\naddr = \"127.0.0.2\"\nweight = 2\n",
                "test.toml:1:1: ",
                "a [[dns.pool.addresses]] must follow a [[dns.pool]]",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(at) && e.contains(want), "{text}: {e}");
            assert!(
                !e.contains("found map") && !e.contains("in brackets"),
                "{e}"
            );
        }
        // what the lists may hold in brackets of their own still reads
        let c = parse(
            "[[dns.authoritative]]\nlisten = \"127.0.0.1:0\"\n[[dns.authoritative.zones]]\nfile = \"shop.zone\"\norigin = \"shop.test.\"\n[[dns.pool]]\nname = \"www.shop.test.\"\n[[dns.pool.addresses]]\naddr = \"127.0.0.2\"\nweight = 2\n",
        )
        .unwrap();
        assert_eq!(c.dns.authoritative[0].zones.len(), 1);
        assert_eq!(c.dns.pool[0].addresses.len(), 1);
    }

    #[test]
    fn a_file_that_serves_nothing_is_refused_saying_what_was_expected() {
        let e = parse("").unwrap_err();
        assert_eq!((e.line, e.column), (None, None));
        let e = e.to_string();
        assert!(
            e.starts_with("test.toml: nothing to serve: the file is empty; expected at least one [[site]] (with its [[site.route]]), [[stream]], [[dns.resolver]], [[dns.authoritative]] or product section"),
            "{e}"
        );
        let e = parse("# a comment\n").unwrap_err().to_string();
        assert!(e.contains("the file is empty"), "{e}");
        let e = parse("threads = 2\n[limits]\nmax_body = \"2MiB\"\n[upstream.app]\nservers = [\"127.0.0.1:9000\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "nothing to serve: the file has only threads, [limits], [upstream]; expected"
            ),
            "{e}"
        );
        // a pool is answered by an authoritative server: alone it serves nothing
        let e = parse("[[dns.pool]]\nname = \"www.shop.test.\"\naddresses = [\"127.0.0.2\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has only [[dns.pool]]; expected"), "{e}");
        // each part alone is something to serve
        for text in [
            "[[dns.resolver]]\nlisten = \"127.0.0.1:0\"\n",
            "[[dns.authoritative]]\nlisten = \"127.0.0.1:0\"\nzones = []\n",
            "[upstream.db]\nservers = [\"127.0.0.1:5432\"]\n[[stream]]\nlisten = \"127.0.0.1:0\"\nproxy = \"db\"\n",
            "[chat.room]\nsize = 3\n",
        ] {
            assert!(parse(text).unwrap().serves_anything(), "{text}");
        }
        // an admin listener alone is a dashboard of nothing: allowed (serve warns), so
        // that sites can be added by reload
        let c = parse("[admin]\nlisten = \"127.0.0.1:9900\"\n").unwrap();
        assert!(!c.serves_anything());
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir();
        Config::from_str_at(text, Path::new("test.toml"), &dir)
    }

    #[test]
    fn minimal_site_parses() {
        let c = parse(
            r#"
[[site]]
listen = ["127.0.0.1:8080"]
  [[site.route]]
  path = "/"
  respond = { status = 200, body = "hello\n" }
"#,
        )
        .unwrap();
        assert_eq!(c.site.len(), 1);
        assert_eq!(
            *c.site[0].route[0]
                .respond
                .as_ref()
                .unwrap()
                .status
                .get_ref(),
            200
        );
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = parse("[[site]]\nlisten = [\"127.0.0.1:1\"]\nlisen = 3\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.column, Some(1), "{e}");
        assert!(e.message.contains("lisen"), "{e}");
        assert!(e.to_string().starts_with("test.toml:3:1:"), "{e}");
    }

    #[test]
    fn bad_address_is_refused_at_its_place() {
        let e = parse(
            "[[site]]\nlisten = [\"127.0.0.1:8080\", \"nonsense\"]\n[[site.route]]\npath = \"/\"\nrespond = {}\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.column, Some(29));
        assert!(e.message.contains("expected IP:PORT"), "{e}");
    }

    #[test]
    fn two_sites_same_listener_and_host_conflict() {
        let e = parse(
            r#"
[[site]]
listen = ["127.0.0.1:8080"]
hosts = ["a.test"]
[[site.route]]
path = "/"
respond = {}
[[site]]
listen = ["127.0.0.1:8080"]
hosts = ["b.test", "a.test"]
[[site.route]]
path = "/"
respond = {}
"#,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(10), "{e}");
        assert!(e.message.contains("two sites claim"), "{e}");
        // distinct hosts on one listener are fine
        parse(
            r#"
[[site]]
listen = ["127.0.0.1:8080"]
hosts = ["a.test"]
[[site.route]]
path = "/"
respond = {}
[[site]]
listen = ["127.0.0.1:8080"]
[[site.route]]
path = "/"
respond = {}
"#,
        )
        .unwrap();
    }

    #[test]
    fn missing_root_and_tls_files_are_refused() {
        let e = parse(
            "[[site]]\nlisten = [\"127.0.0.1:1\"]\n[[site.route]]\npath = \"/\"\nroot = \"no-such-dir-xyz\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("not found"), "{e}");
        let e = parse(
            "[[site]]\nlisten = [\"127.0.0.1:1\"]\ntls = { cert = \"nope.pem\", key = \"nope-key.pem\" }\n[[site.route]]\npath = \"/\"\nrespond = {}\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("nope.pem"), "{e}");
    }

    #[test]
    fn acme_sites_say_what_is_wrong_where() {
        let acme = "[acme.le]\ndirectory = \"https://ca.test/dir\"\n";
        let site = |tls: &str, hosts: &str| {
            format!(
                "{acme}[[site]]\nlisten = [\"127.0.0.1:1\"]\n{hosts}tls = {tls}\n[[site.route]]\npath = \"/\"\nrespond = {{}}\n"
            )
        };
        let hosts = "hosts = [\"www.a.test\"]\n";
        for (text, line, says) in [
            (
                site("{ acme = \"nope\" }", hosts),
                6,
                "no [acme.nope] in this file (known: le)",
            ),
            (
                site("{ acme = \"le\" }", ""),
                5,
                "needs the site's names: add hosts",
            ),
            (
                site("{ acme = \"le\" }", "hosts = [\"*.a.test\"]\n"),
                5,
                "a wildcard name needs the DNS-01 challenge",
            ),
            (
                site(
                    "{ acme = \"le\", cert = \"c.pem\", key = \"k.pem\" }",
                    hosts,
                ),
                6,
                "either cert and key (files) or acme",
            ),
            (
                site("{ cert = \"c.pem\" }", hosts),
                6,
                "tls needs key = \"FILE\"",
            ),
            (
                "[acme.le]\ndirectory = \"ca.test\"\n".to_string(),
                2,
                "expected the CA's directory URL",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}\n{text}");
            assert!(e.message.contains(says), "{e}\n{text}");
        }
        for (text, line, says) in [
            (
                site("{ acme = \"le\", on_demand = true }", ""),
                5,
                "on_demand = true needs ask = \"http://…\" in [acme.le]",
            ),
            (
                site(
                    "{ cert = \"c.pem\", key = \"k.pem\", on_demand = true }",
                    hosts,
                ),
                6,
                "on_demand needs acme",
            ),
            (
                "[acme.le]\ndirectory = \"https://ca.test/dir\"\nask = \"https://x/\"\n"
                    .to_string(),
                3,
                "expected a plain http:// URL",
            ),
            (
                "[[site]]\nlisten = [\"127.0.0.1:1\"]\nhttp3 = true\n[[site.route]]\npath = \"/\"\nrespond = {}\n"
                    .to_string(),
                3,
                "http3 = true needs tls",
            ),
            (
                "[acme.le]\ndirectory = \"https://ca.test/dir\"\nkey_type = \"rsa2048\"\n"
                    .to_string(),
                3,
                "key_type \"rsa2048\": expected one of \"ecdsa-p256\", \"ecdsa-p384\"",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}\n{text}");
            assert!(e.message.contains(says), "{e}\n{text}");
        }
        // on demand: hosts are optional patterns, wildcards allowed with HTTP-01
        let od = "[acme.le]\ndirectory = \"https://ca.test/dir\"\nask = \"http://127.0.0.1:1/ask\"\n[[site]]\nlisten = [\"127.0.0.1:1\"]\nhosts = [\"*.a.test\"]\ntls = { acme = \"le\", on_demand = true }\n[[site.route]]\npath = \"/\"\nrespond = {}\n".to_string();
        parse(&od).unwrap();
        // `tls = "acme"`: the only section
        let c = parse(&site("\"acme\"", hosts)).unwrap();
        assert_eq!(
            c.site[0]
                .tls
                .as_ref()
                .unwrap()
                .get_ref()
                .acme
                .as_ref()
                .unwrap()
                .get_ref(),
            "le"
        );
        let two = format!(
            "[acme.b]\ndirectory = \"https://b.test/dir\"\n{}",
            site("\"acme\"", hosts)
        );
        let e = parse(&two).unwrap_err();
        assert!(e.message.contains("it has b, le"), "{e}");
        let e = parse(&site("\"files\"", hosts)).unwrap_err();
        assert!(e.message.contains("\"acme\""), "{e}");
        // good: storage defaults beside the file
        let c = parse(&site("{ acme = \"le\" }", hosts)).unwrap();
        let storage = c.acme["le"].storage.as_ref().unwrap().get_ref().clone();
        assert!(storage.ends_with("acme/le"), "{storage:?}");
    }

    #[test]
    fn route_needs_one_handler_and_redirect_status() {
        let e = parse("[[site]]\nlisten = [\"127.0.0.1:1\"]\n[[site.route]]\npath = \"/\"\n")
            .unwrap_err();
        assert!(e.message.contains("exactly one handler"), "{e}");
        let e = parse(
            "[[site]]\nlisten = [\"127.0.0.1:1\"]\n[[site.route]]\npath = \"/\"\nredirect = \"https://x.test/\"\nstatus = 200\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("expected 301"), "{e}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("64KiB").unwrap().0, 65536);
        assert_eq!(ByteSize::parse("1 MiB").unwrap().0, 1 << 20);
        assert_eq!(ByteSize::parse("10MB").unwrap().0, 10_000_000);
        assert_eq!(ByteSize::parse("512").unwrap().0, 512);
        assert!(ByteSize::parse("12 parsecs").is_err());
        let e = parse("[limits]\nmax_body = \"3 bananas\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }
}
