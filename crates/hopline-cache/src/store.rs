//! The CDN point of presence: a shared HTTP cache (RFC 9111) in front of a proxy route.
//!
//! Storability, freshness, `Age`, `Vary` matching and revalidation requests come from
//! the `http-cache-semantics` crate (shared-cache mode); this module adds what a PoP
//! needs around it: a memory tier with real eviction (moka, weighted by size), an
//! optional disk tier that survives restarts and drops corrupted entries, request
//! coalescing (N concurrent misses → one origin request), `stale-while-revalidate` and
//! `stale-if-error`, invalidation by unsafe methods, purge, and the `Cache-Status`
//! header (RFC 9211) telling the client what the PoP did.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

use crate::config::CacheConfig;
use crate::disk::{Disk, DiskRead};
use crate::freshness::{
    CLIENT_CACHE_CONTROL, CLIENT_EXPIRES, directive_secs, explicitly_fresh, normalize,
    request_forbids_stale, response_forbids_stale, stale_for, stale_parts,
};
use crate::stored::{Stored, header_list};

/// Counters for `/metrics` and the status page.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Fresh hits.
    pub hits: AtomicU64,
    /// Misses (forwarded).
    pub misses: AtomicU64,
    /// Stale served (while revalidating, or on error).
    pub stale: AtomicU64,
    /// Revalidations answered 304.
    pub revalidated: AtomicU64,
    /// Responses stored.
    pub stored: AtomicU64,
    /// Requests that waited for another request's origin fetch.
    pub coalesced: AtomicU64,
    /// Entries loaded from the disk tier.
    pub disk_hits: AtomicU64,
    /// Corrupted disk entries detected and dropped.
    pub disk_corrupt: AtomicU64,
    /// Entries purged or invalidated.
    pub purged: AtomicU64,
}

/// A named cache.
pub struct HttpCache {
    /// Name, for `Cache-Status` and metrics.
    pub name: String,
    mem: moka::sync::Cache<String, Arc<Vec<Arc<Stored>>>>,
    disk: Option<Disk>,
    pub max_object: u64,
    /// Targeted cache-control fields, most specific first (RFC 9213).
    targeted: Vec<header::HeaderName>,
    /// Keep `Set-Cookie` in stored responses.
    store_set_cookie: bool,
    inflight: parking_lot::Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    revalidating: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Surrogate keys: tag → the keys that carry it.
    tags: Arc<parking_lot::Mutex<crate::tags::TagIndex>>,
    /// Where this cache's purges go beside itself (the other PoPs of a CDN).
    broadcast: std::sync::OnceLock<Arc<dyn PurgeBroadcast>>,
    /// Counters.
    pub stats: CacheStats,
}

/// Where a cache's purges go beside itself (the other PoPs of one CDN), and how that
/// stands (for the status page).
pub trait PurgeBroadcast: Send + Sync {
    /// Tell the others (never blocks; what cannot be sent yet is sent later).
    fn publish(&self, target: &PurgeTarget, soft: bool);
    /// Connected, behind, gaps…
    fn status(&self) -> serde_json::Value;
}

/// What a purge aims at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    /// One URL (every variant).
    Url(String),
    /// Every key starting with this.
    Prefix(String),
    /// Every object carrying this surrogate key.
    Tag(String),
    /// Everything.
    All,
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("name", &self.name)
            .finish()
    }
}

fn opts() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..Default::default()
    }
}

/// The cache key: scheme, host and target. HEAD is answered from GET entries.
pub fn key(tls: bool, host: &str, path_and_query: &str) -> String {
    format!(
        "{}://{}{}",
        if tls { "https" } else { "http" },
        host.to_ascii_lowercase(),
        path_and_query
    )
}

/// The tags the variants of one key carry, together.
fn tags_of(variants: &[Arc<Stored>]) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::new();
    for s in variants {
        for t in crate::tags::of_stored(&s.headers) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// The conditional request that revalidates `stored` (its validators as preconditions).
fn conditional(req: &http::request::Parts, stored: &Stored) -> http::request::Parts {
    let mut c = req.clone();
    for (k, v) in &stored.headers {
        let name = match k.as_str() {
            "etag" => header::IF_NONE_MATCH,
            "last-modified" => header::IF_MODIFIED_SINCE,
            _ => continue,
        };
        if let Ok(v) = HeaderValue::from_bytes(v) {
            c.headers.insert(name, v);
        }
    }
    c
}

fn variant_of(req: &HeaderMap, res: &HeaderMap) -> String {
    let mut out = String::new();
    for v in res
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for name in v.split(',') {
            let name = name.trim().to_ascii_lowercase();
            out.push_str(&name);
            out.push('=');
            for val in req.get_all(name.as_str()).iter() {
                out.push_str(val.to_str().unwrap_or(""));
            }
            out.push('\n');
        }
    }
    out
}

/// What a lookup found.
pub enum Lookup {
    /// Serve this without asking the origin.
    Fresh(Arc<Stored>, http::response::Parts),
    /// Stale, may be served while one background refresh runs.
    StaleWhileRevalidate(Arc<Stored>, http::response::Parts),
    /// Stale: ask the origin with these (conditional) request headers.
    Revalidate(Arc<Stored>, http::request::Parts),
    /// Nothing usable. From [`HttpCache::find`]: the fetch to make for everyone waiting
    /// on the key when `Some`; without a lead the fetch is this request's alone.
    Miss(Option<FetchLead>),
}

/// A GET or HEAD as the cache sees it: its key and the GET the cache sends for it (whole
/// objects: a client's `Range` is cut from them, never forwarded).
pub struct Ask {
    pub key: String,
    pub as_get: http::request::Parts,
}

/// What the cache makes of an origin's response (see [`HttpCache::admit`]).
pub struct Admission {
    /// The head as this cache stores it.
    pub stored: http::response::Parts,
    /// How long it may be kept; `None` when a shared cache must not store it.
    pub policy: Option<CachePolicy>,
}

impl HttpCache {
    /// A cache from its config (relative disk paths resolved by the caller).
    pub fn new(name: &str, cfg: &CacheConfig) -> std::io::Result<HttpCache> {
        let tags: Arc<parking_lot::Mutex<crate::tags::TagIndex>> = Arc::default();
        let evicted = tags.clone();
        let disk = match &cfg.disk {
            Some(d) => Some(Disk::open(&d.path, d.size.0)?),
            None => None,
        };
        let on_disk = disk.is_some();
        let mem = moka::sync::Cache::builder()
            .max_capacity(cfg.memory.0.max(1))
            .weigher(|k: &String, v: &Arc<Vec<Arc<Stored>>>| -> u32 {
                let size: usize = v.iter().map(|s| s.body.len() + 512).sum::<usize>() + k.len();
                size.min(u32::MAX as usize) as u32
            })
            // an object the memory tier let go of leaves the tag index (unless the disk
            // tier still holds it); removals and replacements are indexed where they are
            // made
            .eviction_listener(move |k: Arc<String>, v: Arc<Vec<Arc<Stored>>>, cause| {
                if cause.was_evicted() && !on_disk {
                    evicted.lock().remove(&k, &tags_of(&v));
                }
            })
            .build();
        if let Some(d) = &disk {
            let mut ix = tags.lock();
            for (key, t) in d.keys_and_tags() {
                ix.add(&key, &t);
            }
        }
        Ok(HttpCache {
            name: name.to_string(),
            mem,
            disk,
            max_object: cfg.max_object.0,
            targeted: cfg
                .targeted_field
                .iter()
                .filter_map(|f| header::HeaderName::from_bytes(f.trim().as_bytes()).ok())
                .chain([header::HeaderName::from_static("cdn-cache-control")])
                .collect(),
            store_set_cookie: cfg.store_set_cookie,
            inflight: parking_lot::Mutex::new(HashMap::new()),
            revalidating: parking_lot::Mutex::new(Default::default()),
            tags,
            broadcast: std::sync::OnceLock::new(),
            stats: CacheStats::default(),
        })
    }

    fn variants(&self, key: &str) -> Option<Arc<Vec<Arc<Stored>>>> {
        if let Some(v) = self.mem.get(key) {
            return Some(v);
        }
        let disk = self.disk.as_ref()?;
        match disk.load(key) {
            DiskRead::Found(variants) => {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                let v = Arc::new(variants.into_iter().map(Arc::new).collect::<Vec<_>>());
                self.mem.insert(key.to_string(), v.clone());
                Some(v)
            }
            DiskRead::Corrupt(why) => {
                self.stats.disk_corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "hopline::cache", "cache {}: dropped a corrupted disk entry for {key}: {why}", self.name);
                None
            }
            DiskRead::Missing => None,
        }
    }

    /// Find a usable stored response for a GET/HEAD request.
    pub fn lookup(&self, key: &str, req: &http::request::Parts) -> Lookup {
        let Some(variants) = self.variants(key) else {
            return Lookup::Miss(None);
        };
        let now = SystemTime::now();
        for stored in variants.iter() {
            match stored.policy.before_request(req, now) {
                // soft-purged: stale since the purge, whatever its freshness says — served
                // stale while one request revalidates when stale-while-revalidate allows
                BeforeRequest::Fresh(parts) if stored.soft_purged_at.is_some() => {
                    let since = stored
                        .soft_purged_at
                        .and_then(|at| now.duration_since(at).ok())
                        .unwrap_or_default();
                    if !stored.swr.is_zero()
                        && since <= stored.swr
                        && !request_forbids_stale(&req.headers)
                        && !response_forbids_stale(stored)
                    {
                        return Lookup::StaleWhileRevalidate(stored.clone(), parts);
                    }
                    return Lookup::Revalidate(stored.clone(), conditional(req, stored));
                }
                BeforeRequest::Fresh(parts) => return Lookup::Fresh(stored.clone(), parts),
                BeforeRequest::Stale {
                    request,
                    matches: true,
                } => {
                    if !stored.swr.is_zero()
                        && stale_for(stored, now) <= stored.swr
                        && !request_forbids_stale(&req.headers)
                        && !response_forbids_stale(stored)
                    {
                        let parts = stale_parts(stored, now);
                        return Lookup::StaleWhileRevalidate(stored.clone(), parts);
                    }
                    return Lookup::Revalidate(stored.clone(), request);
                }
                BeforeRequest::Stale { matches: false, .. } => continue,
            }
        }
        Lookup::Miss(None)
    }

    /// The cache's whole part of a GET or HEAD before the origin, in one call: the
    /// request's fields made canonical, its key, the GET to send for it, and what is
    /// stored, counted as hit, stale or miss. A miss while another request fetches the
    /// key waits for that fetch (30 s at most) and looks again; a miss then leads the
    /// fetch for the requests that come after it (request coalescing).
    pub async fn find(
        self: &Arc<Self>,
        tls: bool,
        host: &str,
        parts: &mut http::request::Parts,
    ) -> (Ask, Lookup) {
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let key = key(tls, host, &target);
        normalize(&mut parts.headers);
        let mut as_get = parts.clone();
        as_get.method = Method::GET;
        as_get.headers.remove(header::RANGE);
        as_get.headers.remove(header::IF_RANGE);
        let mut waited = false;
        let found = loop {
            match self.lookup(&key, &as_get) {
                Lookup::Miss(_) => match self.join_or_lead(&key) {
                    Ok(lead) => break Lookup::Miss(Some(lead)),
                    Err(mut done) if !waited => {
                        waited = true;
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(30),
                            done.wait_for(|d| *d),
                        )
                        .await;
                    }
                    Err(_) => break Lookup::Miss(None),
                },
                found => break found,
            }
        };
        let counter = match &found {
            Lookup::Fresh(..) => Some(&self.stats.hits),
            Lookup::StaleWhileRevalidate(..) => Some(&self.stats.stale),
            Lookup::Revalidate(..) => None,
            Lookup::Miss(_) => Some(&self.stats.misses),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        (Ask { key, as_get }, found)
    }

    /// The cache's whole part of an origin's response, in one call: its fields made
    /// canonical, the field targeted at this cache alone removed from what goes
    /// downstream, and the head to store with its policy.
    pub fn admit(
        &self,
        as_get: &http::request::Parts,
        res: &mut http::response::Parts,
    ) -> Admission {
        // the cache reads the fields canonical (`No-CaChE` is no-cache); clients — this
        // one and every hit — get them as the origin wrote them
        let raw_cc: Vec<HeaderValue> = res
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .cloned()
            .collect();
        let raw_expires = res.headers.get(header::EXPIRES).cloned();
        normalize(&mut res.headers);
        let changed = !res
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .eq(raw_cc.iter())
            || res.headers.get(header::EXPIRES) != raw_expires.as_ref();
        let judged = self.for_storage(res);
        self.strip_own_targeted(&mut res.headers);
        let mut stored = judged.unwrap_or_else(|| res.clone());
        if changed {
            stored.headers.remove(&CLIENT_CACHE_CONTROL);
            stored.headers.remove(&CLIENT_EXPIRES);
            res.headers.remove(header::CACHE_CONTROL);
            for v in &raw_cc {
                stored
                    .headers
                    .append(CLIENT_CACHE_CONTROL.clone(), v.clone());
                res.headers.append(header::CACHE_CONTROL, v.clone());
            }
            match &raw_expires {
                Some(e) => {
                    stored.headers.insert(CLIENT_EXPIRES.clone(), e.clone());
                    res.headers.insert(header::EXPIRES, e.clone());
                }
                None => {
                    res.headers.remove(header::EXPIRES);
                }
            }
        }
        // (http-cache-semantics gives a shared cache no freshness for a response that
        // sets a cookie unless it is `public`; with `store_set_cookie` the cookie is the
        // operator's choice to replay, so freshness is judged without it)
        let policy = if self.store_set_cookie && stored.headers.contains_key(header::SET_COOKIE) {
            let mut judged = stored.clone();
            judged.headers.remove(header::SET_COOKIE);
            self.storable(as_get, &judged)
        } else {
            self.storable(as_get, &stored)
        };
        Admission { stored, policy }
    }

    /// May this stale entry be served because the origin failed (`stale-if-error`)?
    pub fn usable_on_error(&self, stored: &Stored) -> Option<http::response::Parts> {
        let now = SystemTime::now();
        (!stored.sie.is_zero()
            && stale_for(stored, now) <= stored.sie
            && !response_forbids_stale(stored))
        .then(|| stale_parts(stored, now))
    }

    /// The response as this cache judges it (RFC 9213): when a field targeted at it
    /// (its `targeted_field`, else `CDN-Cache-Control`) is present, its directives stand
    /// in for `Cache-Control` and `Expires`, whose own values are kept aside in the stored
    /// entry so that clients are served them unchanged. `None`: no targeted field.
    pub fn targeted(&self, res: &http::response::Parts) -> Option<http::response::Parts> {
        for name in &self.targeted {
            let values: Vec<HeaderValue> = res.headers.get_all(name).iter().cloned().collect();
            // (a field that is no valid Structured Fields dictionary, or whose
            // directives have values of the wrong type, is ignored as a whole: RFC 9213
            // §2.1)
            if values.is_empty() || !crate::freshness::valid_targeted(&values) {
                continue;
            }
            let mut p = res.clone();
            for v in res.headers.get_all(header::CACHE_CONTROL) {
                p.headers.append(CLIENT_CACHE_CONTROL.clone(), v.clone());
            }
            if let Some(e) = res.headers.get(header::EXPIRES) {
                p.headers.insert(CLIENT_EXPIRES.clone(), e.clone());
            }
            p.headers.remove(header::CACHE_CONTROL);
            p.headers.remove(header::EXPIRES);
            for v in values {
                p.headers.append(header::CACHE_CONTROL, v);
            }
            normalize(&mut p.headers);
            // (the field for this cache alone is not stored: hits never show it)
            self.strip_own_targeted(&mut p.headers);
            return Some(p);
        }
        None
    }

    /// The response as this cache stores it, when that differs from what the client
    /// gets: a targeted field's decisions (see [`HttpCache::targeted`]), and no
    /// `Set-Cookie` — a response with explicit freshness is stored although it sets a
    /// cookie, but the stored copy never replays a cookie meant for one client to others
    /// (store and strip: the client that caused the miss gets its cookie from the origin's
    /// answer; Varnish and nginx by default pass such responses uncached instead).
    pub fn for_storage(&self, res: &http::response::Parts) -> Option<http::response::Parts> {
        let mut judged = self.targeted(res);
        let base = judged.as_ref().unwrap_or(res);
        if !self.store_set_cookie
            && base.headers.contains_key(header::SET_COOKIE)
            && explicitly_fresh(&base.headers)
        {
            let mut p = judged.take().unwrap_or_else(|| res.clone());
            p.headers.remove(header::SET_COOKIE);
            judged = Some(p);
        }
        judged
    }

    /// Drop the field targeted at this cache alone from what goes downstream.
    pub fn strip_own_targeted(&self, h: &mut HeaderMap) {
        if self.targeted.len() > 1 {
            h.remove(&self.targeted[0]);
        }
    }

    /// Build the policy for an origin response; `None` when a shared cache must not store it.
    pub fn storable(
        &self,
        req: &http::request::Parts,
        res: &http::response::Parts,
    ) -> Option<CachePolicy> {
        if req.method != Method::GET {
            return None;
        }
        // heuristically cacheable statuses (RFC 9110 §15.1) may be stored without explicit
        // freshness; any other final status needs it (RFC 9111 §3: 302, 307, 500, 503, …
        // with max-age are stored); partial and interim responses never are
        let explicit = explicitly_fresh(&res.headers);
        let code = res.status.as_u16();
        let by_default = matches!(
            code,
            200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
        );
        if !(by_default || (explicit && (200..600).contains(&code) && code != 206 && code != 304)) {
            return None;
        }
        if res
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|len| len > self.max_object)
        {
            return None;
        }
        if res
            .headers
            .get(header::VARY)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "*")
        {
            return None;
        }
        let now = SystemTime::now();
        // http-cache-semantics refuses statuses it does not list (5xx, unknown codes) even
        // with explicit freshness; for those the policy is computed as for a 200 (explicit
        // freshness is all that decides), while the entry keeps its real status
        let understood = matches!(
            code,
            200 | 203 | 204 | 300..=303 | 307 | 308 | 404 | 405 | 410 | 414 | 501
        );
        let as_understood;
        let res = if understood {
            res
        } else {
            let (mut p, ()) = http::Response::new(()).into_parts();
            p.status = StatusCode::OK;
            p.headers = res.headers.clone();
            as_understood = p;
            &as_understood
        };
        let policy = CachePolicy::new_options(req, res, now, opts());
        // RFC 9111 lets a shared cache store a heuristically cacheable response even with
        // no freshness and no validator, but such a copy can never be used: skip it.
        let has_validator = res.headers.contains_key(header::ETAG)
            || res.headers.contains_key(header::LAST_MODIFIED);
        let useful = has_validator || !policy.time_to_live(now).is_zero();
        (policy.is_storable() && useful).then_some(policy)
    }

    /// Store a complete response.
    pub fn store(
        &self,
        key: &str,
        req: &http::request::Parts,
        res: &http::response::Parts,
        policy: CachePolicy,
        body: Bytes,
    ) {
        if body.len() as u64 > self.max_object {
            return;
        }
        let stored = Arc::new(Stored {
            swr: directive_secs(&res.headers, "stale-while-revalidate").unwrap_or_default(),
            sie: directive_secs(&res.headers, "stale-if-error").unwrap_or_default(),
            variant: variant_of(&req.headers, &res.headers),
            headers: header_list(&res.headers),
            status: res.status.as_u16(),
            policy,
            body,
            soft_purged_at: None,
        });
        let mut list: Vec<Arc<Stored>> = self
            .mem
            .get(key)
            .map(|v| {
                v.iter()
                    .filter(|s| s.variant != stored.variant)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let before = self.mem.get(key).map(|v| tags_of(&v)).unwrap_or_default();
        list.push(stored.clone());
        self.reindex(key, &before, &tags_of(&list));
        if let Some(d) = &self.disk {
            d.save(key, &list);
        }
        self.mem.insert(key.to_string(), Arc::new(list));
        self.stats.stored.fetch_add(1, Ordering::Relaxed);
    }

    /// The tag index after `key`'s tags went from `before` to `after`.
    fn reindex(&self, key: &str, before: &[Box<str>], after: &[Box<str>]) {
        if before.is_empty() && after.is_empty() {
            return;
        }
        let gone: Vec<Box<str>> = before
            .iter()
            .filter(|t| !after.contains(t))
            .cloned()
            .collect();
        let mut ix = self.tags.lock();
        ix.remove(key, &gone);
        ix.add(key, after);
    }

    /// Purge what `target` names from this cache: dropped (hard), or marked stale
    /// (`soft`: served stale while one request revalidates, as `stale-while-revalidate`
    /// allows). Returns how many keys it touched. Purging what is not there is nothing.
    pub fn purge(&self, target: &PurgeTarget, soft: bool) -> u64 {
        let keys: Vec<String> = match target {
            PurgeTarget::Url(k) => vec![k.clone()],
            PurgeTarget::Tag(t) if !soft => {
                // the tag leaves the index at once; each object then leaves its other tags
                let keys = self.tags.lock().take(t);
                return keys.iter().map(|k| self.invalidate(k)).sum();
            }
            PurgeTarget::Tag(t) => self.tags.lock().keys_of(t),
            PurgeTarget::Prefix(p) => {
                if !soft {
                    return self.purge_prefix(p);
                }
                self.mem
                    .iter()
                    .filter(|(k, _)| k.starts_with(p.as_str()))
                    .map(|(k, _)| (*k).clone())
                    .collect()
            }
            PurgeTarget::All => {
                if !soft {
                    let n = self.purge_prefix("");
                    *self.tags.lock() = Default::default();
                    return n;
                }
                self.mem.iter().map(|(k, _)| (*k).clone()).collect()
            }
        };
        let mut n = 0;
        for k in &keys {
            n += if soft {
                self.soft_purge(k)
            } else {
                self.invalidate(k)
            };
        }
        // a soft purge of a prefix (or everything) cannot mark what only the disk tier
        // holds without reading it all: that is dropped instead
        if soft && let (Some(d), PurgeTarget::Prefix(_) | PurgeTarget::All) = (&self.disk, target) {
            let prefix = match target {
                PurgeTarget::Prefix(p) => p.as_str(),
                _ => "",
            };
            n += d.purge_prefix(prefix, &keys);
        }
        n
    }

    /// Purge here and tell the other PoPs (when the cache shares its purges).
    pub fn purge_everywhere(&self, target: &PurgeTarget, soft: bool) -> u64 {
        let n = self.purge(target, soft);
        if let Some(b) = self.broadcast.get() {
            b.publish(target, soft);
        }
        n
    }

    /// Share this cache's purges through `b` (once; later calls are ignored).
    pub fn set_broadcast(&self, b: Arc<dyn PurgeBroadcast>) {
        let _ = self.broadcast.set(b);
    }

    /// The shared purges' state, when the cache shares them.
    pub fn broadcast_status(&self) -> Option<serde_json::Value> {
        self.broadcast.get().map(|b| b.status())
    }

    /// Mark every variant of `key` stale from now (both tiers). 1 if it was there.
    fn soft_purge(&self, key: &str) -> u64 {
        let Some(variants) = self.variants(key) else {
            return 0;
        };
        let now = SystemTime::now();
        let list: Vec<Arc<Stored>> = variants
            .iter()
            .map(|s| {
                let mut s = (**s).clone();
                s.soft_purged_at.get_or_insert(now);
                Arc::new(s)
            })
            .collect();
        if let Some(d) = &self.disk {
            d.save(key, &list);
        }
        self.mem.insert(key.to_string(), Arc::new(list));
        self.stats.purged.fetch_add(1, Ordering::Relaxed);
        1
    }

    /// (tags, keys) in the surrogate-key index.
    pub fn tag_index_len(&self) -> (usize, usize) {
        self.tags.lock().len()
    }

    /// A 304 answered a revalidation: take the new headers, keep the body.
    pub fn refreshed(
        &self,
        key: &str,
        old: &Stored,
        req: &http::request::Parts,
        res: &http::response::Parts,
    ) -> Option<(Arc<Stored>, http::response::Parts)> {
        match old.policy.after_response(req, res, SystemTime::now()) {
            AfterResponse::NotModified(policy, new_head) => {
                self.stats.revalidated.fetch_add(1, Ordering::Relaxed);
                let stored = Stored {
                    policy,
                    status: old.status,
                    body: old.body.clone(),
                    swr: directive_secs(&res.headers, "stale-while-revalidate").unwrap_or(old.swr),
                    sie: directive_secs(&res.headers, "stale-if-error").unwrap_or(old.sie),
                    variant: old.variant.clone(),
                    headers: header_list(&new_head.headers),
                    soft_purged_at: None,
                };
                let mut list: Vec<Arc<Stored>> = self
                    .mem
                    .get(key)
                    .map(|v| {
                        v.iter()
                            .filter(|s| s.variant != stored.variant)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let stored = Arc::new(stored);
                list.push(stored.clone());
                if let Some(d) = &self.disk {
                    d.save(key, &list);
                }
                self.mem.insert(key.to_string(), Arc::new(list));
                let parts = match stored.policy.before_request(req, SystemTime::now()) {
                    BeforeRequest::Fresh(p) => p,
                    _ => stale_parts(&stored, SystemTime::now()),
                };
                Some((stored, parts))
            }
            AfterResponse::Modified(..) => None,
        }
    }

    /// Drop every variant of a key (both tiers). Returns how many keys went.
    pub fn invalidate(&self, key: &str) -> u64 {
        let mut n = 0;
        if let Some(v) = self.mem.remove(key) {
            self.tags.lock().remove(key, &tags_of(&v));
            n = 1;
        }
        if let Some(d) = &self.disk
            && d.remove(key)
        {
            n = 1;
        }
        self.stats.purged.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Drop every key starting with `prefix` (both tiers).
    pub fn purge_prefix(&self, prefix: &str) -> u64 {
        let keys: Vec<String> = self
            .mem
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| (*k).clone())
            .collect();
        let mut n = 0;
        for k in &keys {
            n += self.invalidate(k);
        }
        if let Some(d) = &self.disk {
            n += d.purge_prefix(prefix, &keys);
        }
        n
    }

    /// Become the one request that fetches `key`, or get a receiver that fires when the
    /// fetching request is done.
    pub fn join_or_lead(
        self: &Arc<Self>,
        key: &str,
    ) -> Result<FetchLead, tokio::sync::watch::Receiver<bool>> {
        let mut map = self.inflight.lock();
        if let Some(rx) = map.get(key) {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return Err(rx.clone());
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        map.insert(key.to_string(), rx);
        Ok(FetchLead {
            cache: self.clone(),
            key: key.to_string(),
            tx,
        })
    }

    /// Start a background revalidation of `key` unless one runs already.
    pub fn begin_background(&self, key: &str) -> bool {
        self.revalidating.lock().insert(key.to_string())
    }

    /// A background revalidation of `key` ended.
    pub fn end_background(&self, key: &str) {
        self.revalidating.lock().remove(key);
    }

    /// Entries in the memory tier.
    pub fn entries(&self) -> u64 {
        self.mem.run_pending_tasks();
        self.mem.entry_count()
    }
}

/// The request that fetches a key for everyone waiting on it; dropping it wakes them.
pub struct FetchLead {
    cache: Arc<HttpCache>,
    key: String,
    tx: tokio::sync::watch::Sender<bool>,
}

impl Drop for FetchLead {
    fn drop(&mut self) {
        self.cache.inflight.lock().remove(&self.key);
        let _ = self.tx.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiskConfig;
    use crate::freshness::response_head;
    use crate::freshness::ttl_secs;
    use hopline_engine::byte_size::ByteSize;
    use std::time::Duration;

    fn req(path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder()
            .method("GET")
            .uri(format!("http://shop.test{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn res(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
        let mut b = http::Response::builder().status(status);
        b = b.header("date", httpdate::fmt_http_date(SystemTime::now()));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn cache() -> HttpCache {
        HttpCache::new(
            "pop",
            &CacheConfig {
                memory: ByteSize(1 << 20),
                disk: None,
                max_object: ByteSize(1000),
                targeted_field: None,
                store_set_cookie: false,
                shared_purge: None,
            },
        )
        .unwrap()
    }

    /// One case per RFC 9111 storability rule, as a shared cache.
    #[test]
    fn storability_table() {
        let c = cache();
        type Case<'a> = (
            &'a str,
            u16,
            &'a [(&'a str, &'a str)],
            &'a [(&'a str, &'a str)],
            bool,
        );
        let cases: &[Case<'_>] = &[
            (
                "max-age",
                200,
                &[],
                &[("cache-control", "max-age=60")],
                true,
            ),
            (
                "s-maxage",
                200,
                &[],
                &[("cache-control", "s-maxage=60")],
                true,
            ),
            (
                "no-store",
                200,
                &[],
                &[("cache-control", "no-store, max-age=60")],
                false,
            ),
            (
                "private",
                200,
                &[],
                &[("cache-control", "private, max-age=60")],
                false,
            ),
            (
                "public, no lifetime, no validator: useless",
                200,
                &[],
                &[("cache-control", "public")],
                false,
            ),
            (
                "public with a validator",
                200,
                &[],
                &[("cache-control", "public"), ("etag", "\"x\"")],
                true,
            ),
            (
                "expires",
                200,
                &[],
                &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")],
                true,
            ),
            (
                "heuristic: last-modified on 200",
                200,
                &[],
                &[("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT")],
                true,
            ),
            ("no lifetime, no validator", 200, &[], &[], false),
            (
                "500 with max-age is stored (explicit freshness, RFC 9111 §3)",
                500,
                &[],
                &[("cache-control", "max-age=60")],
                true,
            ),
            (
                "authorization without public",
                200,
                &[("authorization", "Bearer x")],
                &[("cache-control", "max-age=60")],
                false,
            ),
            (
                "authorization with s-maxage",
                200,
                &[("authorization", "Bearer x")],
                &[("cache-control", "s-maxage=60")],
                true,
            ),
            (
                "authorization with public",
                200,
                &[("authorization", "Bearer x")],
                &[("cache-control", "public, max-age=60")],
                true,
            ),
            (
                "vary *",
                200,
                &[],
                &[("cache-control", "max-age=60"), ("vary", "*")],
                false,
            ),
            (
                "too large",
                200,
                &[],
                &[("cache-control", "max-age=60"), ("content-length", "5000")],
                false,
            ),
            (
                "404 with max-age",
                404,
                &[],
                &[("cache-control", "max-age=60")],
                true,
            ),
            (
                "Set-Cookie with explicit freshness",
                200,
                &[],
                &[
                    ("cache-control", "max-age=60"),
                    ("set-cookie", "session=abc"),
                ],
                true,
            ),
            (
                "302 with max-age",
                302,
                &[],
                &[("cache-control", "max-age=60")],
                true,
            ),
            (
                "503 with max-age",
                503,
                &[],
                &[("cache-control", "max-age=5")],
                true,
            ),
            (
                "599 (unknown) with s-maxage",
                599,
                &[],
                &[("cache-control", "s-maxage=5")],
                true,
            ),
            ("302 without freshness", 302, &[], &[], false),
            (
                "206 never",
                206,
                &[],
                &[("cache-control", "max-age=60")],
                false,
            ),
            (
                "no-cache is storable (revalidated every time)",
                200,
                &[],
                &[("cache-control", "no-cache"), ("etag", "\"a\"")],
                true,
            ),
        ];
        for (name, status, rq, rs, want) in cases {
            let rs = res(*status, rs);
            let rs = c.for_storage(&rs).unwrap_or(rs);
            let got = c.storable(&req("/a", rq), &rs).is_some();
            assert_eq!(got, *want, "{name}");
        }
        // a stored 503 is reused as a 503 while fresh
        let rq = req("/down", &[]);
        let rs = res(503, &[("cache-control", "max-age=30")]);
        let p = c.storable(&rq, &rs).unwrap();
        c.store("down", &rq, &rs, p, Bytes::from_static(b"maintenance"));
        match c.lookup("down", &rq) {
            Lookup::Fresh(s, parts) => {
                assert_eq!(
                    response_head(&s, parts).status,
                    StatusCode::SERVICE_UNAVAILABLE
                );
                assert_eq!(&s.body[..], b"maintenance");
            }
            _ => panic!("a fresh 503 must be a hit"),
        }
    }

    #[test]
    fn lenient_fields_are_read_as_rfc_9111_says() {
        let mut h = HeaderMap::new();
        h.insert(
            "cache-control",
            HeaderValue::from_static("Public, Max-Age=60, No-CaChE"),
        );
        h.insert(
            "expires",
            HeaderValue::from_static("Thu,  01 Dec 2094 16:00:00 GMT"),
        );
        h.insert("age", HeaderValue::from_static("7200, 0"));
        normalize(&mut h);
        assert_eq!(h["cache-control"], "public, max-age=60, no-cache");
        assert_eq!(
            h["expires"], "Thu, 01 Jan 1970 00:00:00 GMT",
            "invalid Expires: expired"
        );
        assert_eq!(h["age"], "7200");
        let mut h = HeaderMap::new();
        h.insert("age", HeaderValue::from_static("soon"));
        // the obsolete date forms are dates: RFC 850 and asctime
        h.insert(
            "expires",
            HeaderValue::from_static("Sunday, 06-Nov-94 08:49:37 GMT"),
        );
        normalize(&mut h);
        assert!(h.get("age").is_none(), "an invalid Age is ignored");
        assert_eq!(h["expires"], "Sunday, 06-Nov-94 08:49:37 GMT");
        let mut h = HeaderMap::new();
        h.insert(
            "expires",
            HeaderValue::from_static("Sun Nov  6 08:49:37 1994"),
        );
        normalize(&mut h);
        assert_eq!(h["expires"], "Sun Nov  6 08:49:37 1994");
        // and the rules then read them: No-Store is no-store
        let c = cache();
        let rq = req("/n", &[]);
        let mut rs = res(200, &[("cache-control", "max-age=60, No-Store")]);
        normalize(&mut rs.headers);
        assert!(c.storable(&rq, &rs).is_none());
        let mut rs = res(200, &[("cache-control", "Max-Age=60")]);
        normalize(&mut rs.headers);
        let p = c
            .storable(&rq, &rs)
            .expect("Max-Age=60 is fresh for a minute");
        assert!(p.time_to_live(SystemTime::now()) > Duration::from_secs(50));
    }

    #[test]
    fn freshness_age_and_revalidation() {
        let c = cache();
        let rq = req("/a", &[]);
        let origin_date = httpdate::fmt_http_date(SystemTime::now());
        let rs = res(
            200,
            &[
                ("cache-control", "max-age=100"),
                ("etag", "\"v1\""),
                ("date", &origin_date),
                ("age", "30"),
            ],
        );
        let p = c.storable(&rq, &rs).unwrap();
        c.store("k", &rq, &rs, p, Bytes::from_static(b"body"));
        match c.lookup("k", &rq) {
            Lookup::Fresh(s, parts) => {
                assert_eq!(&s.body[..], b"body");
                let age: u64 = parts.headers["age"].to_str().unwrap().parse().unwrap();
                assert!((30..=31).contains(&age), "Age {age}");
                // the origin's Date is kept, in IMF-fixdate form
                let date = s
                    .headers
                    .iter()
                    .find(|(k, _)| k == "date")
                    .map(|(_, v)| v.clone());
                let head = response_head(&s, parts);
                assert_eq!(date.as_deref(), Some(origin_date.as_bytes()));
                assert_eq!(head.headers["date"], origin_date.as_str());
                assert!(origin_date.ends_with(" GMT"));
            }
            _ => panic!("expected fresh"),
        }
        // the client asks for a fresher copy than we have: revalidate with the validator
        match c.lookup("k", &req("/a", &[("cache-control", "max-age=10")])) {
            Lookup::Revalidate(_, r) => assert_eq!(r.headers["if-none-match"], "\"v1\""),
            _ => panic!("expected revalidation"),
        }
        // no-cache responses are revalidated on every use
        let rs = res(200, &[("cache-control", "no-cache"), ("etag", "\"v2\"")]);
        let p = c.storable(&rq, &rs).unwrap();
        c.store("k2", &rq, &rs, p, Bytes::from_static(b"x"));
        assert!(matches!(c.lookup("k2", &rq), Lookup::Revalidate(..)));
    }

    #[test]
    fn vary_keeps_variants_apart() {
        let c = cache();
        for lang in ["en", "vi"] {
            let rq = req("/a", &[("accept-language", lang)]);
            let rs = res(
                200,
                &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            );
            let p = c.storable(&rq, &rs).unwrap();
            c.store("k", &rq, &rs, p, Bytes::from(lang));
        }
        for lang in ["en", "vi"] {
            match c.lookup("k", &req("/a", &[("accept-language", lang)])) {
                Lookup::Fresh(s, _) => assert_eq!(&s.body[..], lang.as_bytes()),
                _ => panic!("{lang}: expected its own variant"),
            }
        }
        assert!(matches!(
            c.lookup("k", &req("/a", &[("accept-language", "fr")])),
            Lookup::Miss(_)
        ));
    }

    #[test]
    fn stale_windows() {
        let c = cache();
        let rq = req("/a", &[]);
        // an upstream cache already held it for 20 s: stale for 10 s
        let rs = res(
            200,
            &[
                (
                    "cache-control",
                    "max-age=10, stale-while-revalidate=30, stale-if-error=60",
                ),
                ("etag", "\"e\""),
                ("age", "20"),
            ],
        );
        let p = c.storable(&rq, &rs).unwrap();
        c.store("k", &rq, &rs, p, Bytes::from_static(b"old"));
        match c.lookup("k", &rq) {
            Lookup::StaleWhileRevalidate(s, _) => {
                assert_eq!(ttl_secs(&s), -10);
                assert!(c.usable_on_error(&s).is_some());
            }
            Lookup::Fresh(..) => panic!("expected stale-while-revalidate, got fresh"),
            Lookup::Revalidate(s, _) => panic!(
                "expected stale-while-revalidate, got revalidate: swr {:?} age {:?} ttl {:?} stale_for {:?}",
                s.swr,
                s.policy.age(SystemTime::now()),
                s.policy.time_to_live(SystemTime::now()),
                stale_for(&s, SystemTime::now())
            ),
            Lookup::Miss(_) => panic!("expected stale-while-revalidate, got miss"),
        }
        // must-revalidate forbids serving stale
        let rs = res(
            200,
            &[
                (
                    "cache-control",
                    "max-age=10, must-revalidate, stale-while-revalidate=30, stale-if-error=60",
                ),
                ("etag", "\"e\""),
                ("age", "20"),
            ],
        );
        let p = c.storable(&rq, &rs).unwrap();
        c.store("k3", &rq, &rs, p, Bytes::from_static(b"old"));
        match c.lookup("k3", &rq) {
            Lookup::Revalidate(s, _) => assert!(c.usable_on_error(&s).is_none()),
            _ => panic!("expected revalidation"),
        }
    }

    #[test]
    fn disk_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CacheConfig {
            memory: ByteSize(1 << 20),
            disk: Some(DiskConfig {
                path: dir.path().to_path_buf(),
                size: ByteSize(1 << 20),
            }),
            max_object: ByteSize(1 << 20),
            targeted_field: None,
            store_set_cookie: false,
            shared_purge: None,
        };
        let rq = req("/a", &[]);
        let rs = res(200, &[("cache-control", "max-age=60")]);
        {
            let c = HttpCache::new("pop", &cfg).unwrap();
            let p = c.storable(&rq, &rs).unwrap();
            c.store("k", &rq, &rs, p, Bytes::from_static(b"persisted body"));
        }
        let c = HttpCache::new("pop", &cfg).unwrap();
        match c.lookup("k", &rq) {
            Lookup::Fresh(s, _) => assert_eq!(&s.body[..], b"persisted body"),
            _ => panic!("disk entry not found after restart"),
        }
        assert_eq!(c.stats.disk_hits.load(Ordering::Relaxed), 1);
        // every Vary variant of a key survives a restart, not only the latest
        let vary = |lang: &'static str| {
            (
                req("/v", &[("accept-language", lang)]),
                res(
                    200,
                    &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
                ),
            )
        };
        {
            let c = HttpCache::new("pop", &cfg).unwrap();
            for (lang, body) in [("en", "hello"), ("fr", "bonjour"), ("de", "hallo")] {
                let (rq, rs) = vary(lang);
                let p = c.storable(&rq, &rs).unwrap();
                c.store("v", &rq, &rs, p, Bytes::from_static(body.as_bytes()));
            }
        }
        let c = HttpCache::new("pop", &cfg).unwrap();
        for (lang, body) in [("en", "hello"), ("fr", "bonjour"), ("de", "hallo")] {
            match c.lookup("v", &vary(lang).0) {
                Lookup::Fresh(s, _) => assert_eq!(&s.body[..], body.as_bytes(), "{lang}"),
                _ => panic!("variant {lang} lost on restart"),
            }
        }
        std::fs::remove_file(c.disk.as_ref().unwrap().path("v")).unwrap();
        // truncate the file: detected, dropped, never served
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let data = std::fs::read(&file).unwrap();
        std::fs::write(&file, &data[..data.len() - 5]).unwrap();
        let c = HttpCache::new("pop", &cfg).unwrap();
        assert!(matches!(c.lookup("k", &rq), Lookup::Miss(_)));
        assert_eq!(c.stats.disk_corrupt.load(Ordering::Relaxed), 1);
        assert!(!file.exists(), "corrupted file kept");
    }
}
