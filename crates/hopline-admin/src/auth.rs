//! The admin token: a bearer header or a cookie set by `GET /?token=…`, compared in
//! constant time.

use bytes::Bytes;
use hopline_engine::body::Body;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// The admin token's cookie.
pub const COOKIE: &str = "hopline_admin";

/// When a token is configured: the request must carry it (`Authorization: Bearer`, or
/// the cookie). `GET /?token=…` sets the cookie and redirects to `/`; anything else
/// without it is 401. None = go on.
pub fn check_token<B>(token: Option<&str>, req: &http::Request<B>) -> Option<Response<Body>> {
    let token = token?;
    let h = req.headers();
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|t| same_secret(t.trim().as_bytes(), token.as_bytes()));
    let cookie = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|t| same_secret(t.as_bytes(), token.as_bytes()));
    if bearer || cookie {
        return None;
    }
    let query_token = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(|t| t.to_string())
    });
    if let Some(t) = query_token
        && same_secret(t.as_bytes(), token.as_bytes())
    {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SEE_OTHER;
        let h = r.headers_mut();
        h.insert(header::LOCATION, HeaderValue::from_static("/"));
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        )) {
            h.insert(header::SET_COOKIE, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Some(r);
    }
    let mut r = Response::new(Body::full(Bytes::from_static(
        b"401: this admin listener needs its token (Authorization: Bearer TOKEN, or open /?token=TOKEN once in a browser)\n",
    )));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"hopline admin\""),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], uri: &str) -> http::Request<()> {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_token_is_asked_for_and_accepted_three_ways() {
        let t = Some("0123456789abcdef");
        assert!(check_token(None, &req(&[], "/")).is_none());
        assert_eq!(
            check_token(t, &req(&[], "/")).unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            check_token(
                t,
                &req(&[("authorization", "Bearer wrong-token-here")], "/")
            )
            .unwrap()
            .status(),
            StatusCode::UNAUTHORIZED
        );
        assert!(
            check_token(
                t,
                &req(&[("authorization", "Bearer 0123456789abcdef")], "/")
            )
            .is_none()
        );
        assert!(
            check_token(
                t,
                &req(&[("cookie", "a=b; hopline_admin=0123456789abcdef")], "/")
            )
            .is_none()
        );
        let r = check_token(t, &req(&[], "/?token=0123456789abcdef")).unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(
            cookie.starts_with("hopline_admin=0123456789abcdef;") && cookie.contains("HttpOnly")
        );
        assert_eq!(
            check_token(t, &req(&[], "/?token=0123456789abcdeX"))
                .unwrap()
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
