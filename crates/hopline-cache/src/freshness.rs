//! The freshness rules around a stored response (RFC 9111): how long it is fresh or may
//! be served stale, the lenient reading of `Cache-Control`/`Expires`/`Age`, the head it
//! is served with (`Age`), and the `Cache-Status` value (RFC 9211).

use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use crate::stored::Stored;

/// How long an entry has been stale (zero while fresh).
pub fn stale_for(stored: &Stored, now: SystemTime) -> Duration {
    if !stored.policy.time_to_live(now).is_zero() {
        return Duration::ZERO;
    }
    stored
        .policy
        .age(now)
        .saturating_sub(freshness_lifetime(stored))
}

pub fn freshness_lifetime(stored: &Stored) -> Duration {
    // once stale the crate reports ttl 0, so recover the lifetime from the stored
    // response's own headers
    let h = &stored.header_map();
    if let Some(s) = directive_secs(h, "s-maxage").or_else(|| directive_secs(h, "max-age")) {
        return s;
    }
    if let (Some(exp), Some(date)) = (
        h.get(header::EXPIRES)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
        h.get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
    ) {
        return exp.duration_since(date).unwrap_or_default();
    }
    Duration::ZERO
}

pub fn request_forbids_stale(h: &HeaderMap) -> bool {
    h.get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("no-cache") || v.contains("max-age=0"))
}

pub fn response_forbids_stale(s: &Stored) -> bool {
    s.header_map()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.contains("must-revalidate")
                || v.contains("proxy-revalidate")
                || v.contains("no-cache")
        })
}

/// Does a response say how long it is fresh (`max-age`, `s-maxage` or `Expires`)?
pub fn explicitly_fresh(h: &HeaderMap) -> bool {
    h.contains_key(header::EXPIRES)
        || h.get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("max-age") || v.contains("s-maxage"))
}

/// Where an entry keeps the `Cache-Control` and `Expires` clients are served when a
/// targeted field (RFC 9213) decided for the cache.
pub static CLIENT_CACHE_CONTROL: header::HeaderName =
    header::HeaderName::from_static("x-hopline-client-cache-control");
pub static CLIENT_EXPIRES: header::HeaderName =
    header::HeaderName::from_static("x-hopline-client-expires");

/// The stored head of an entry served as it is (its current `Age` added).
pub fn stale_head(stored: &Stored) -> http::response::Parts {
    stale_parts(stored, SystemTime::now())
}

/// The stored head for a stale copy, with its current `Age`.
pub fn stale_parts(stored: &Stored, now: SystemTime) -> http::response::Parts {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.headers = stored.header_map();
    parts.headers.insert(
        header::AGE,
        HeaderValue::from(stored.policy.age(now).as_secs()),
    );
    parts
}

impl Stored {
    /// The stored response head (validators etc.).
    pub fn head(&self) -> HeaderMap {
        self.header_map()
    }
}

/// Put what RFC 9111 says a cache must read leniently into the one form the freshness
/// rules read (in place, before a request or a response meets them):
/// - `Cache-Control` (and `CDN-Cache-Control`) directive names are case-insensitive:
///   `No-CaChE` is `no-cache`, `Max-Age=60` is `max-age=60` (values are kept);
/// - an `Expires` that is not a valid HTTP date (any of the three forms of RFC 9110
///   §5.6.7) means "already expired" (§5.3): it becomes the epoch;
/// - `Age` as a list uses its first member; an invalid one is ignored (§5.1).
pub fn normalize(h: &mut HeaderMap) {
    for name in [
        header::CACHE_CONTROL,
        header::HeaderName::from_static("cdn-cache-control"),
    ] {
        if !h.contains_key(&name) {
            continue;
        }
        let values: Vec<HeaderValue> = h
            .get_all(&name)
            .iter()
            .map(|v| {
                let Ok(text) = v.to_str() else {
                    return v.clone();
                };
                if !text.bytes().any(|b| b.is_ascii_uppercase()) {
                    return v.clone();
                }
                let lowered: Vec<String> = text
                    .split(',')
                    .map(|d| match d.split_once('=') {
                        Some((n, val)) => format!("{}={val}", n.to_ascii_lowercase()),
                        None => d.to_ascii_lowercase(),
                    })
                    .collect();
                HeaderValue::from_str(&lowered.join(",")).unwrap_or_else(|_| v.clone())
            })
            .collect();
        h.remove(&name);
        for v in values {
            h.append(name.clone(), v);
        }
    }
    if let Some(e) = h.get(header::EXPIRES)
        && e.to_str()
            .ok()
            .and_then(|t| httpdate::parse_http_date(t).ok())
            .is_none()
    {
        h.insert(
            header::EXPIRES,
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
    }
    if let Some(a) = h.get(header::AGE) {
        let first = a
            .to_str()
            .ok()
            .and_then(|t| t.split(',').next())
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && t.len() <= 10)
            .map(str::to_string);
        match first {
            Some(n)
                if h.get_all(header::AGE).iter().count() == 1 && a.as_bytes() == n.as_bytes() => {}
            Some(n) => {
                h.insert(
                    header::AGE,
                    HeaderValue::from_str(&n).unwrap_or(HeaderValue::from_static("0")),
                );
            }
            None => {
                h.remove(header::AGE);
            }
        }
    }
}

/// Is a targeted cache-control field (RFC 9213) usable: a valid Structured Fields
/// dictionary (RFC 8941) whose time directives are integers? A field that is not is
/// ignored as a whole (the cache then follows `Cache-Control`).
pub fn valid_targeted(values: &[HeaderValue]) -> bool {
    let text: Vec<&str> = match values.iter().map(|v| v.to_str()).collect() {
        Ok(t) => t,
        Err(_) => return false,
    };
    let Ok(dict) = sfv::Parser::new(&text.join(", ")).parse_dictionary() else {
        return false;
    };
    dict.iter().all(|(k, member)| match k.as_str() {
        "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error" => matches!(
            member,
            sfv::ListEntry::Item(sfv::Item {
                bare_item: sfv::BareItem::Integer(_),
                ..
            })
        ),
        _ => true,
    })
}

/// The `Cache-Status` value (RFC 9211).
pub fn cache_status(name: &str, what: &str, ttl: Option<i64>, detail: Option<&str>) -> HeaderValue {
    let mut s = format!("{name}; {what}");
    if let Some(t) = ttl {
        s.push_str(&format!("; ttl={t}"));
    }
    if let Some(d) = detail {
        s.push_str(&format!("; detail={d}"));
    }
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("hopline"))
}

/// The head a cache hit answers with, in one call: the stored head as of now
/// ([`response_head`]) and the `Cache-Status` saying it was a hit, its TTL left and
/// `detail` (e.g. `stale-while-revalidate`).
pub fn hit_head(
    stored: &Stored,
    head: http::response::Parts,
    cache: &str,
    detail: Option<&str>,
) -> http::response::Parts {
    let mut head = response_head(stored, head);
    head.headers.insert(
        http::header::HeaderName::from_static("cache-status"),
        cache_status(cache, "hit", Some(ttl_secs(stored)), detail),
    );
    head
}

/// Remaining freshness in seconds (negative once stale).
pub fn ttl_secs(stored: &Stored) -> i64 {
    let now = SystemTime::now();
    let ttl = stored.policy.time_to_live(now);
    if ttl.is_zero() {
        -(stale_for(stored, now).as_secs() as i64)
    } else {
        ttl.as_secs() as i64
    }
}

/// Build the response head for a stored entry.
pub fn response_head(stored: &Stored, mut parts: http::response::Parts) -> http::response::Parts {
    parts.status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(stored.body.len()));
    parts.headers.remove(header::TRANSFER_ENCODING);
    // a cache adds Age; it does not re-date (RFC 9111 §5.1, RFC 9110 §6.6.1): the origin's
    // Date as stored (http-cache-semantics writes its own, and not as an IMF-fixdate);
    // without one, the writer adds the current Date in the right form
    match stored.headers.iter().find(|(k, _)| k == "date") {
        Some((_, v)) => match HeaderValue::from_bytes(v) {
            Ok(v) => {
                parts.headers.insert(header::DATE, v);
            }
            Err(_) => {
                parts.headers.remove(header::DATE);
            }
        },
        None => {
            parts.headers.remove(header::DATE);
        }
    }
    // a cookie stored with the response (`store_set_cookie`): its freshness was judged
    // without it, so the policy's head lacks it
    if !parts.headers.contains_key(header::SET_COOKIE) {
        for (k, v) in &stored.headers {
            if k == "set-cookie"
                && let Ok(v) = HeaderValue::from_bytes(v)
            {
                parts.headers.append(header::SET_COOKIE, v);
            }
        }
    }
    // a targeted field decided for the cache: clients get the origin's own fields back
    if stored
        .headers
        .iter()
        .any(|(k, _)| k == CLIENT_CACHE_CONTROL.as_str() || k == CLIENT_EXPIRES.as_str())
    {
        parts.headers.remove(header::CACHE_CONTROL);
        parts.headers.remove(header::EXPIRES);
        for (k, v) in &stored.headers {
            let Ok(v) = HeaderValue::from_bytes(v) else {
                continue;
            };
            if k == CLIENT_CACHE_CONTROL.as_str() {
                parts.headers.append(header::CACHE_CONTROL, v);
            } else if k == CLIENT_EXPIRES.as_str() {
                parts.headers.insert(header::EXPIRES, v);
            }
        }
        parts.headers.remove(&CLIENT_CACHE_CONTROL);
        parts.headers.remove(&CLIENT_EXPIRES);
    }
    parts
}

/// A `Cache-Control` directive's seconds, e.g. `stale-while-revalidate=30`.
pub fn directive_secs(h: &HeaderMap, name: &str) -> Option<Duration> {
    h.get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.trim().trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
}
