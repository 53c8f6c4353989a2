//! What ties a request to a server: the key a hashing balancer hashes (client address,
//! URI, a header, a cookie) and the sticky-session cookie — read from the request on the
//! way in (the balancer's own cookie taken out, a learned cookie's prefix stripped, so
//! the origin sees what it set), and written into the response on the way out.

use std::net::IpAddr;

use hopline_balance::{Affinity, Pool, hash::hash_key};
use http::{HeaderMap, HeaderValue, header};

use crate::config::{HashKey, Sticky};
use crate::pool::UpstreamPool;

/// Separates the server's id from the origin's value in a learned cookie.
const SEP: char = '~';

/// The value of the cookie `name` in the request's `Cookie` fields.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Rewrite the cookie `name` in the `Cookie` fields: `f` gives its new value, or `None`
/// to drop it (a field left empty goes).
fn rewrite_cookie(headers: &mut HeaderMap, name: &str, f: impl Fn(&str) -> Option<String>) {
    let values: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    headers.remove(header::COOKIE);
    for v in values {
        let Ok(text) = v.to_str() else {
            headers.append(header::COOKIE, v);
            continue;
        };
        let kept: Vec<String> = text
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .filter_map(|pair| match pair.split_once('=') {
                Some((k, val)) if k == name => f(val).map(|nv| format!("{k}={nv}")),
                _ => Some(pair.to_string()),
            })
            .collect();
        if !kept.is_empty()
            && let Ok(nv) = HeaderValue::from_str(&kept.join("; "))
        {
            headers.append(header::COOKIE, nv);
        }
    }
}

/// Read what ties this request to a server, and take the balancer's part out of its
/// `Cookie` fields.
pub fn of_request(
    up: &UpstreamPool,
    pool: &Pool,
    headers: &mut HeaderMap,
    path_and_query: &str,
    client: IpAddr,
) -> Affinity {
    let key = up.hash_key.as_ref().and_then(|k| match k {
        HashKey::ClientIp => Some(match client.to_canonical() {
            IpAddr::V4(v4) => hash_key(&v4.octets()),
            IpAddr::V6(v6) => hash_key(&v6.octets()),
        }),
        HashKey::Uri => Some(hash_key(path_and_query.as_bytes())),
        HashKey::Header(name) => headers.get(name).map(|v| hash_key(v.as_bytes())),
        HashKey::Cookie(name) => cookie(headers, name).map(|v| hash_key(v.as_bytes())),
    });
    let sticky = match &up.sticky {
        None => None,
        Some(Sticky::Insert { cookie: name, .. }) => {
            let found = cookie(headers, name).and_then(|v| pool.sticky_index(v));
            if cookie(headers, name).is_some() {
                // the balancer's own cookie is not the origin's business
                rewrite_cookie(headers, name, |_| None);
            }
            found
        }
        Some(Sticky::Learn { cookie: name }) => {
            let found = cookie(headers, name)
                .and_then(|v| v.split_once(SEP))
                .and_then(|(id, _)| pool.sticky_index(id));
            if found.is_some() {
                // the origin gets its own value back
                rewrite_cookie(headers, name, |v| {
                    Some(v.split_once(SEP).map_or(v, |(_, rest)| rest).to_string())
                });
            }
            found
        }
    };
    Affinity { key, sticky }
}

/// Does this pool's stickiness rewrite the origin's `Set-Cookie` fields (they must then
/// come in a header map, not as relayed lines)?
pub fn rewrites_set_cookie(up: &UpstreamPool) -> bool {
    matches!(up.sticky, Some(Sticky::Learn { .. }))
}

/// The `Set-Cookie` value that sticks a client to the server `index` (insert mode), when
/// it is not stuck there already.
pub fn insert_cookie(
    up: &UpstreamPool,
    pool: &Pool,
    index: usize,
    affinity: Affinity,
) -> Option<String> {
    let Some(Sticky::Insert { cookie, max_age_s }) = &up.sticky else {
        return None;
    };
    if affinity.sticky == Some(index) {
        return None;
    }
    let mut v = format!(
        "{cookie}={}; Path=/; HttpOnly; SameSite=Lax",
        pool.sticky_value(index)
    );
    if let Some(age) = max_age_s {
        v.push_str(&format!("; Max-Age={age}"));
    }
    Some(v)
}

/// Learn mode: the origin's session cookie in `headers` (its `Set-Cookie` fields) gets
/// the server's id as a prefix.
pub fn prefix_set_cookie(up: &UpstreamPool, pool: &Pool, index: usize, headers: &mut HeaderMap) {
    let Some(Sticky::Learn { cookie }) = &up.sticky else {
        return;
    };
    let values: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if values.is_empty() {
        return;
    }
    headers.remove(header::SET_COOKIE);
    let id = pool.sticky_value(index);
    for v in values {
        let rewritten = v.to_str().ok().and_then(|text| {
            let (pair, attrs) = text
                .split_once(';')
                .map_or((text, None), |(p, a)| (p, Some(a)));
            let (k, val) = pair.split_once('=')?;
            (k.trim() == cookie).then(|| {
                // (a value that already carries an id — set again — keeps only the new)
                let val = val.trim().split_once(SEP).map_or(val.trim(), |(_, r)| r);
                match attrs {
                    Some(a) => format!("{}={id}{SEP}{val};{a}", k.trim()),
                    None => format!("{}={id}{SEP}{val}", k.trim()),
                }
            })
        });
        match rewritten.and_then(|t| HeaderValue::from_str(&t).ok()) {
            Some(nv) => headers.append(header::SET_COOKIE, nv),
            None => headers.append(header::SET_COOKIE, v),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn cookies_are_found_and_rewritten_across_fields() {
        let mut h = headers(&["a=1; srv=abc", "b=2"]);
        assert_eq!(cookie(&h, "srv"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        rewrite_cookie(&mut h, "srv", |_| None);
        let all: Vec<&str> = h
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all, vec!["a=1", "b=2"]);
        let mut h = headers(&["srv=x"]);
        rewrite_cookie(&mut h, "srv", |_| None);
        assert!(h.get(header::COOKIE).is_none(), "an emptied field goes");
        let mut h = headers(&["JSESSIONID=id~v; x=y"]);
        rewrite_cookie(&mut h, "JSESSIONID", |v| {
            Some(v.split_once(SEP).map_or(v, |(_, r)| r).to_string())
        });
        assert_eq!(h[header::COOKIE], "JSESSIONID=v; x=y");
    }
}
