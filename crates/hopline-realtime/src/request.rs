//! What a channel request carries and whether it may: the channel's name, the query
//! parameters, the token (`Authorization: Bearer …` or `?token=`) and its check against
//! the hub's access rules. Shared by the HTTP and the WebSocket faces.

use http::StatusCode;
use http::header;

use crate::config::Access;
use crate::token::{self, Claims, TokenError};

/// Longest channel name.
pub const MAX_CHANNEL: usize = 128;

/// Is `name` a channel name: 1–128 bytes of `A-Z a-z 0-9 _ - . :`?
pub fn valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The query parameters a channel request reads.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub since: Option<String>,
    pub wait: bool,
    /// `?info`: the channel's state instead of its events (publishers only).
    pub info: bool,
    pub token: Option<String>,
}

pub(crate) fn parse_query(q: Option<&str>) -> Result<Query, String> {
    let mut out = Query::default();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| format!("query parameter {k:?} is not UTF-8"))?
            .into_owned();
        match k {
            "since" => out.since = Some(v),
            "wait" => out.wait = matches!(v.as_str(), "1" | "true" | "yes"),
            "info" => out.info = !matches!(v.as_str(), "0" | "false" | "no"),
            "token" => out.token = Some(v),
            _ => {}
        }
    }
    Ok(out)
}

/// A token from `Authorization: Bearer …` or `?token=`.
pub(crate) fn bearer<'a>(headers: &'a http::HeaderMap, query: &'a Query) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or(query.token.as_deref())
}

/// Check `access` for `channel` with `token`: `Ok(claims)` (None when open), or the
/// status and message to answer.
pub(crate) fn authorize(
    access: &Access,
    token: Option<&str>,
    channel: &str,
    what: &str,
) -> Result<Option<Claims>, (StatusCode, String)> {
    match access {
        Access::Open => Ok(None),
        Access::Closed => Err((
            StatusCode::FORBIDDEN,
            format!(
                "{what} is not enabled on this hub (set {what} = \"open\" or {{ jwt_secret = \"…\" }})"
            ),
        )),
        Access::Jwt { secret } => {
            let t = token.ok_or((StatusCode::UNAUTHORIZED, TokenError::Missing.to_string()))?;
            let claims =
                token::verify(t, secret).map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
            if !claims.allows(channel) {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!("the token does not allow channel {channel:?}"),
                ));
            }
            Ok(Some(claims))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_and_queries() {
        assert!(valid_channel("orders"));
        assert!(valid_channel("a.b-c_d:1"));
        for bad in ["", "a b", "a/b", "é", "a%20b", &"x".repeat(129)] {
            assert!(!valid_channel(bad), "{bad:?}");
        }
        let q = parse_query(Some("since=ab%3A5&wait=1&token=t.k.n")).unwrap();
        assert_eq!(q.since.as_deref(), Some("ab:5"));
        assert!(q.wait);
        assert_eq!(q.token.as_deref(), Some("t.k.n"));
        assert!(parse_query(Some("since=%ff")).is_err());
    }
}
