//! What a channel request carries and whether it may: the channel's name, the query
//! parameters, the token (`Authorization: Bearer …` or `?token=`) and its check against
//! the hub's access rules. Shared by the HTTP and the WebSocket faces.

use http::StatusCode;
use http::header;

use crate::channel_log::{Position, Start};
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
    /// `?last=N`: start with the latest N publications still in history.
    pub last: Option<u64>,
    pub wait: bool,
    /// `?info`: the channel's state instead of its events (publishers only).
    pub info: bool,
    /// `?presence` (who is subscribed) or `?presence=stats` (how many), publishers only.
    pub presence: Option<PresenceAsk>,
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
            "last" => out.last = Some(parse_last(&v)?),
            "wait" => out.wait = matches!(v.as_str(), "1" | "true" | "yes"),
            "info" => out.info = !matches!(v.as_str(), "0" | "false" | "no"),
            "presence" => {
                out.presence = match v.as_str() {
                    "" | "1" | "true" | "yes" => Some(PresenceAsk::Members),
                    "stats" => Some(PresenceAsk::Stats),
                    "0" | "false" | "no" => None,
                    other => {
                        return Err(format!(
                            "bad presence={other:?}: expected ?presence or ?presence=stats"
                        ));
                    }
                }
            }
            "token" => out.token = Some(v),
            _ => {}
        }
    }
    if out.last.is_some() && out.since.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(
            "since and last cannot go together: since=EPOCH:OFFSET resumes after a position, last=N starts with the latest N events"
                .into(),
        );
    }
    Ok(out)
}

/// `last=N`: a count of events, at least 1 (its upper bound is the hub's history, see
/// [`Query::start`]).
pub(crate) fn parse_last(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "bad last={v:?}: expected a number of events from 1 to the channel's history, e.g. last=10"
        )),
    }
}

/// Refuse `last=N` over what a channel's log can hold (`history`).
pub(crate) fn check_last(n: u64, history: usize) -> Result<(), String> {
    if n > history as u64 {
        return Err(format!(
            "last={n} is more than a channel keeps: at most {history} (this hub's history)"
        ));
    }
    Ok(())
}

impl Query {
    /// Where a subscriber starts: after `since`, with the latest `last` (at most
    /// `history`), or from now; the message of a 400 otherwise.
    pub(crate) fn start(&self, history: usize) -> Result<Start, String> {
        if let Some(n) = self.last {
            check_last(n, history)?;
            return Ok(Start::Latest(n));
        }
        match self.since.as_deref() {
            None | Some("") => Ok(Start::Now),
            Some(t) => position(t).map(Start::After),
        }
    }
}

/// A position given by a client, or the message of a 400.
pub(crate) fn position(text: &str) -> Result<Position, String> {
    Position::parse(text).ok_or_else(|| {
        format!("bad position {text:?}: expected EPOCH:OFFSET as given by an earlier answer (its \"position\"), or last=N for the latest N events")
    })
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
/// What `?presence` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceAsk {
    Members,
    Stats,
}

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

/// A new connection's id for presence: 16 hex digits, random.
pub(crate) fn new_client_id() -> std::sync::Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

/// The claims of `token` when the hub checks tokens and it verifies (for the hooks).
pub(crate) fn token_claims(
    access: &crate::config::Access,
    token: Option<&str>,
) -> Option<crate::token::Claims> {
    match (access, token) {
        (crate::config::Access::Jwt { secret }, Some(t)) => crate::token::verify(t, secret).ok(),
        _ => None,
    }
}

/// What presence shows of `channel` (held here or not): members, distinct users, and
/// with `clients` every member.
pub(crate) fn presence_view(
    channel: &str,
    held: Option<&crate::channel::Channel>,
    clients: bool,
) -> serde_json::Value {
    let (members, users) = held.map_or((0, 0), |c| c.presence_counts());
    let mut v = serde_json::json!({"channel": channel, "members": members, "users": users});
    if clients {
        v["clients"] =
            serde_json::to_value(held.map(|c| c.members()).unwrap_or_default()).unwrap_or_default();
    }
    v
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

    #[test]
    fn last_is_a_count_within_history_and_not_with_since() {
        let q = parse_query(Some("last=5&wait=1")).unwrap();
        assert_eq!(q.start(100), Ok(Start::Latest(5)));
        assert_eq!(q.start(5), Ok(Start::Latest(5)));
        let e = q.start(4).unwrap_err();
        assert!(e.contains("at most 4"), "{e}");
        for bad in [
            "last=abc", "last=0", "last=", "last", "last=-1", "last=+3", "last=1.5",
        ] {
            let e = parse_query(Some(bad)).unwrap_err();
            assert!(e.contains("bad last="), "{bad}: {e}");
        }
        let e = parse_query(Some("since=ab:1&last=2")).unwrap_err();
        assert!(e.contains("since and last"), "{e}");
        let e = parse_query(Some("last=2&since=ab:1")).unwrap_err();
        assert!(e.contains("since and last"), "{e}");
        // an empty since is no since
        assert_eq!(
            parse_query(Some("since=&last=2")).unwrap().start(10),
            Ok(Start::Latest(2))
        );
        assert_eq!(parse_query(None).unwrap().start(10), Ok(Start::Now));
        assert!(matches!(
            parse_query(Some("since=ab:3")).unwrap().start(10),
            Ok(Start::After(_))
        ));
        assert!(parse_query(Some("since=EPOCH")).unwrap().start(10).is_err());
    }
}
