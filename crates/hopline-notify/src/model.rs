//! The notification service's core, with no I/O: what a message is, how a request to send
//! one is validated, its statuses and their order, the retry schedule, how a request is
//! signed (the canonical request of the API), and how a webhook is signed (Standard
//! Webhooks).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Allowed clock difference of a signed request, seconds.
pub const SKEW_S: u64 = 300;

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// An HTTP POST to the recipient URL, signed per Standard Webhooks.
    Webhook,
    /// Email over SMTP.
    Email,
    /// SMS through an HTTP gateway.
    Sms,
    /// Mobile push through an HTTP provider.
    Push,
}

impl Channel {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
        }
    }

    /// From the API name.
    pub fn parse(s: &str) -> Option<Channel> {
        Some(match s {
            "webhook" => Channel::Webhook,
            "email" => Channel::Email,
            "sms" => Channel::Sms,
            "push" => Channel::Push,
            _ => return None,
        })
    }
}

/// Priority: high before normal before low (low is never starved: see the dispatcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// First.
    High = 0,
    /// The default.
    Normal = 1,
    /// Last, but within a bounded share.
    Low = 2,
}

impl Priority {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// From the stored number.
    pub fn from_i64(n: i64) -> Priority {
        match n {
            0 => Priority::High,
            2 => Priority::Low,
            _ => Priority::Normal,
        }
    }
}

/// A message's status. `queued → sending → sent → delivered`, or one of the ends
/// `failed`, `bounced`, `expired`, `dead` (retries exhausted; replayable), `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted and durable; waiting for its time or a worker.
    Queued,
    /// A worker is sending it now.
    Sending,
    /// The provider accepted it.
    Sent,
    /// The recipient got it (a webhook endpoint's 2xx; a provider's callback).
    Delivered,
    /// Refused for good (e.g. a 4xx other than 408/429).
    Failed,
    /// The provider reported a bounce.
    Bounced,
    /// Its ttl passed before it could be sent.
    Expired,
    /// Every retry failed (dead letter; `POST …/retry` replays it).
    Dead,
    /// Cancelled before it was sent.
    Cancelled,
}

impl Status {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Bounced => "bounced",
            Status::Expired => "expired",
            Status::Dead => "dead",
            Status::Cancelled => "cancelled",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "sending" => Status::Sending,
            "sent" => Status::Sent,
            "delivered" => Status::Delivered,
            "failed" => Status::Failed,
            "bounced" => Status::Bounced,
            "expired" => Status::Expired,
            "dead" => Status::Dead,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// No further change happens by itself.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Sending | Status::Sent)
    }
}

/// A request to send, as the API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// webhook | email | sms | push
    pub channel: String,
    /// The recipient: a URL, an address, a phone number (E.164) or a device token.
    pub to: String,
    /// Email subject (one line).
    pub subject: Option<String>,
    /// The text to send.
    pub body: Option<String>,
    /// A template with `{{name}}` placeholders, filled from `data`.
    pub template: Option<String>,
    /// Values for the template (an object).
    pub data: Option<serde_json::Value>,
    /// high | normal | low
    pub priority: Option<String>,
    /// Send at this time (RFC 3339 or Unix seconds) rather than now.
    pub send_at: Option<serde_json::Value>,
    /// Give up (status `expired`) if not sent within this many seconds.
    pub ttl: Option<u64>,
    /// Free JSON kept with the message and sent with webhooks.
    pub metadata: Option<serde_json::Value>,
}

/// A validated message, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The channel.
    pub channel: Channel,
    /// The recipient.
    pub to: String,
    /// The subject (email).
    pub subject: Option<String>,
    /// The text (template already filled).
    pub body: String,
    /// Priority.
    pub priority: Priority,
    /// When to send (Unix ms).
    pub send_at_ms: u64,
    /// When to give up (Unix ms).
    pub expires_ms: Option<u64>,
    /// Free JSON.
    pub metadata: Option<serde_json::Value>,
}

/// A validation error: the field and what was wrong (answered 400 or 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field named.
    pub field: &'static str,
    /// What was expected.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// Fill `{{name}}` placeholders from an object; a missing name is an error.
pub fn render(
    template: &str,
    data: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, Invalid> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return Err(invalid("template", "an unclosed {{"));
        };
        let name = after[..j].trim();
        match data.get(name) {
            Some(serde_json::Value::String(s)) => out.push_str(s),
            Some(v) => out.push_str(&v.to_string()),
            None => return Err(invalid("data", format!("no value for {{{{{name}}}}}"))),
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && s.len() <= 254
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '<' && c != '>' && c != ',')
}

fn valid_phone(s: &str) -> bool {
    // E.164: + and 8 to 15 digits
    s.strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Validate a request at time `now_ms`; `max_body` bounds the text.
pub fn validate(req: SendRequest, now_ms: u64, max_body: usize) -> Result<NewMessage, Invalid> {
    let channel = Channel::parse(&req.channel).ok_or_else(|| {
        invalid(
            "channel",
            format!(
                "unknown channel {:?}: expected webhook, email, sms or push",
                req.channel
            ),
        )
    })?;
    let to = req.to.trim().to_string();
    match channel {
        Channel::Webhook => {
            let u = url::Url::parse(&to).map_err(|e| invalid("to", format!("not a URL: {e}")))?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
                return Err(invalid(
                    "to",
                    "a webhook recipient is an http:// or https:// URL",
                ));
            }
            if !u.username().is_empty() || u.password().is_some() {
                return Err(invalid("to", "credentials in the URL are not accepted"));
            }
        }
        Channel::Email => {
            if !valid_email(&to) {
                return Err(invalid("to", "not an email address"));
            }
        }
        Channel::Sms => {
            if !valid_phone(&to) {
                return Err(invalid(
                    "to",
                    "a phone number in E.164 form, e.g. +4915112345678",
                ));
            }
        }
        Channel::Push => {
            if to.is_empty() || to.len() > 4096 || !to.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "to",
                    "a device token (printable ASCII, at most 4096)",
                ));
            }
        }
    }
    if let Some(s) = &req.subject {
        if s.contains(['\r', '\n']) {
            return Err(invalid("subject", "one line: CR and LF are not allowed"));
        }
        if s.len() > 998 {
            return Err(invalid("subject", "at most 998 characters"));
        }
    }
    let body = match (req.body, req.template) {
        (Some(_), Some(_)) => return Err(invalid("body", "give body or template, not both")),
        (Some(b), None) => b,
        (None, Some(t)) => {
            let data = match req.data {
                Some(serde_json::Value::Object(m)) => m,
                None => serde_json::Map::new(),
                Some(_) => return Err(invalid("data", "template data must be an object")),
            };
            render(&t, &data)?
        }
        (None, None) => return Err(invalid("body", "body or template is required")),
    };
    if body.len() > max_body {
        return Err(invalid("body", format!("at most {max_body} bytes")));
    }
    let priority = match req.priority.as_deref() {
        None | Some("normal") => Priority::Normal,
        Some("high") => Priority::High,
        Some("low") => Priority::Low,
        Some(p) => {
            return Err(invalid(
                "priority",
                format!("{p:?}: expected high, normal or low"),
            ));
        }
    };
    let send_at_ms = match req.send_at {
        None | Some(serde_json::Value::Null) => now_ms,
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(|s| s.saturating_mul(1000))
            .ok_or_else(|| invalid("send_at", "Unix seconds or an RFC 3339 time"))?,
        Some(serde_json::Value::String(s)) => parse_rfc3339_ms(&s).ok_or_else(|| {
            invalid(
                "send_at",
                "Unix seconds or an RFC 3339 time like 2026-12-01T09:00:00Z",
            )
        })?,
        Some(_) => return Err(invalid("send_at", "Unix seconds or an RFC 3339 time")),
    };
    if send_at_ms > now_ms + 366 * 86_400_000 {
        return Err(invalid("send_at", "at most a year ahead"));
    }
    let expires_ms = match req.ttl {
        Some(0) => return Err(invalid("ttl", "at least 1 second")),
        Some(t) => Some(
            send_at_ms
                .max(now_ms)
                .saturating_add(t.saturating_mul(1000)),
        ),
        None => None,
    };
    if let Some(m) = &req.metadata
        && m.to_string().len() > 16 * 1024
    {
        return Err(invalid("metadata", "at most 16 KiB of JSON"));
    }
    Ok(NewMessage {
        channel,
        to,
        subject: req.subject,
        body,
        priority,
        send_at_ms,
        expires_ms,
        metadata: req.metadata,
    })
}

/// `2026-12-01T09:00:00Z` or with an offset (`+02:00`), fractions ignored → Unix ms.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        rest = &r[end..];
    }
    let offset_s: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && &rest[3..4] == ":" =>
        {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // days from civil (Howard Hinnant)
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// The retry schedule: the delay before each attempt after the first failure, plus up to
/// ±10 % jitter (so that a burst of failures does not retry in a burst).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Delay before attempt 1, 2, … (the first is usually 0).
    pub delays: Vec<Duration>,
}

impl Default for Schedule {
    /// Standard Webhooks' schedule: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    fn default() -> Self {
        let s = |secs: u64| Duration::from_secs(secs);
        Schedule {
            delays: vec![
                s(0),
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(18_000),
                s(36_000),
                s(36_000),
            ],
        }
    }
}

impl Schedule {
    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        self.delays.len().max(1) as u32
    }

    /// The delay before attempt `n` (1-based: attempt 1 is the first send), jittered by
    /// `jitter` in [-1, 1]; `None` after the last.
    pub fn delay_before(&self, n: u32, jitter: f64) -> Option<Duration> {
        let d = *self.delays.get(n.checked_sub(1)? as usize)?;
        let j = d.as_secs_f64() * 0.1 * jitter.clamp(-1.0, 1.0);
        Some(Duration::from_secs_f64((d.as_secs_f64() + j).max(0.0)))
    }
}

/// What an attempt's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by the recipient (2xx).
    Delivered,
    /// Try again (5xx, 408, 429, network errors), not before `after` if the answer said.
    Retry {
        /// `Retry-After`, when the answer carried one.
        after: Option<Duration>,
    },
    /// Refused for good (other 4xx).
    Failed,
    /// The endpoint is gone (410): failed, and the endpoint is disabled.
    Gone,
}

/// Judge an HTTP answer (or `None` for a network error / timeout).
pub fn judge(status: Option<u16>, retry_after: Option<Duration>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Delivered,
        Some(410) => Verdict::Gone,
        Some(408 | 429) => Verdict::Retry { after: retry_after },
        Some(s) if (400..500).contains(&s) => Verdict::Failed,
        Some(503) => Verdict::Retry { after: retry_after },
        _ => Verdict::Retry { after: None },
    }
}

/// The next step after attempt `attempt` (1-based) got `verdict`, at `now_ms`: the new
/// status and, for a retry, when.
pub fn next_step(
    schedule: &Schedule,
    attempt: u32,
    verdict: Verdict,
    now_ms: u64,
    jitter: f64,
) -> (Status, Option<u64>) {
    match verdict {
        Verdict::Delivered => (Status::Delivered, None),
        Verdict::Failed | Verdict::Gone => (Status::Failed, None),
        Verdict::Retry { after } => match schedule.delay_before(attempt + 1, jitter) {
            None => (Status::Dead, None),
            Some(d) => {
                let wait = after
                    .map_or(d, |a| a.max(d))
                    .min(Duration::from_secs(86_400));
                (Status::Queued, Some(now_ms + wait.as_millis() as u64))
            }
        },
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// The query string with its parameters sorted (by name, then value), as signed.
pub fn sorted_query(query: Option<&str>) -> String {
    let mut pairs: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// The canonical request an app signs:
/// `METHOD \n PATH \n QUERY_SORTED \n X-Timestamp \n X-Nonce \n hex(sha256(body))`.
pub fn canonical(
    method: &str,
    path: &str,
    query: Option<&str>,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    format!(
        "{method}\n{path}\n{}\n{timestamp}\n{nonce}\n{}",
        sorted_query(query),
        hex(digest.as_ref())
    )
}

/// `hex(hmac_sha256(secret, canonical))`.
pub fn sign(secret: &str, canonical: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    hex(ring::hmac::sign(&key, canonical.as_bytes()).as_ref())
}

/// Does `signature` (hex) sign `canonical` with `secret`? Constant time.
pub fn verify(secret: &str, canonical: &str, signature: &str) -> bool {
    let Some(raw) = unhex(signature) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, canonical.as_bytes(), &raw).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The Standard Webhooks signature header value for a `whsec_…` secret:
/// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where the key is the
/// base64 after `whsec_`.
pub fn webhook_signature(whsec: &str, id: &str, timestamp: u64, body: &[u8]) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(whsec.strip_prefix("whsec_")?)
        .ok()?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(ctx.sign().as_ref())
    ))
}

/// Random bytes as URL-safe base64 (no padding).
pub fn random_token(bytes: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// How many leading characters of a message id are its time (`msg_` and 13 base-32
/// digits of the Unix ms): ids sort by time.
pub const ID_TIME_LEN: usize = 17;

/// The smallest id a message accepted at `at_ms` can have: every message accepted
/// before it has a smaller one (ids begin with their acceptance time).
pub fn message_id_bound(at_ms: u64) -> String {
    let mut s = message_id(at_ms);
    s.truncate(ID_TIME_LEN);
    s
}

/// A new message id: `msg_`, the time, then randomness.
pub fn message_id(now_ms: u64) -> String {
    const A: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut s = String::from("msg_");
    for i in (0..13).rev() {
        s.push(A[((now_ms >> (i * 5)) & 31) as usize] as char);
    }
    let r: u64 = rand::random();
    for i in 0..10 {
        s.push(A[((r >> (i * 5)) & 31) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(channel: &str, to: &str) -> SendRequest {
        SendRequest {
            channel: channel.into(),
            to: to.into(),
            subject: None,
            body: Some("hi".into()),
            template: None,
            data: None,
            priority: None,
            send_at: None,
            ttl: None,
            metadata: None,
        }
    }

    #[test]
    fn requests_are_validated_field_by_field() {
        let now = 1_800_000_000_000;
        assert!(validate(req("webhook", "https://example.com/hook"), now, 1000).is_ok());
        assert_eq!(
            validate(req("fax", "x"), now, 1000).unwrap_err().field,
            "channel"
        );
        assert_eq!(
            validate(req("webhook", "ftp://x/y"), now, 1000)
                .unwrap_err()
                .field,
            "to"
        );
        assert_eq!(
            validate(req("webhook", "https://u:p@x/"), now, 1000)
                .unwrap_err()
                .field,
            "to"
        );
        assert_eq!(
            validate(req("email", "nobody"), now, 1000)
                .unwrap_err()
                .field,
            "to"
        );
        assert!(validate(req("email", "a@b.example"), now, 1000).is_ok());
        assert_eq!(
            validate(req("sms", "12345"), now, 1000).unwrap_err().field,
            "to"
        );
        assert!(validate(req("sms", "+4915112345678"), now, 1000).is_ok());
        let mut r = req("email", "a@b.example");
        r.subject = Some("hi\r\nBcc: victim@x.example".into());
        assert_eq!(validate(r, now, 1000).unwrap_err().field, "subject");
        let mut r = req("webhook", "https://x.example/");
        r.body = None;
        r.template = Some("Order {{id}} for {{name}}".into());
        r.data = Some(serde_json::json!({"id": 42, "name": "Ada"}));
        assert_eq!(
            validate(r.clone(), now, 1000).unwrap().body,
            "Order 42 for Ada"
        );
        r.data = Some(serde_json::json!([1, 2]));
        assert_eq!(validate(r.clone(), now, 1000).unwrap_err().field, "data");
        r.data = Some(serde_json::json!({"id": 1}));
        assert_eq!(validate(r, now, 1000).unwrap_err().field, "data");
        let mut r = req("webhook", "https://x.example/");
        r.body = Some("x".repeat(2000));
        assert_eq!(validate(r, now, 1000).unwrap_err().field, "body");
        let mut r = req("webhook", "https://x.example/");
        r.priority = Some("urgent".into());
        assert_eq!(validate(r, now, 1000).unwrap_err().field, "priority");
        let mut r = req("webhook", "https://x.example/");
        r.send_at = Some(serde_json::json!("2027-01-15T10:00:00Z"));
        r.ttl = Some(60);
        let m = validate(r, now, 1000).unwrap();
        assert_eq!(
            m.send_at_ms,
            parse_rfc3339_ms("2027-01-15T10:00:00Z").unwrap()
        );
        assert_eq!(m.expires_ms, Some(m.send_at_ms + 60_000));
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T02:00:00+02:00"),
            Some(951_868_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T00:00:00.123Z"),
            Some(951_868_800_000)
        );
        assert_eq!(parse_rfc3339_ms("2000-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn retries_follow_the_schedule_and_answers() {
        let s = Schedule::default();
        assert_eq!(s.attempts(), 8);
        assert_eq!(s.delay_before(2, 0.0), Some(Duration::from_secs(5)));
        let d = s.delay_before(3, 1.0).unwrap();
        assert_eq!(d, Duration::from_secs(330), "+10 % jitter");
        assert_eq!(judge(Some(204), None), Verdict::Delivered);
        assert_eq!(judge(Some(404), None), Verdict::Failed);
        assert_eq!(judge(Some(410), None), Verdict::Gone);
        assert_eq!(judge(Some(500), None), Verdict::Retry { after: None });
        assert_eq!(judge(None, None), Verdict::Retry { after: None });
        let ra = Some(Duration::from_secs(120));
        assert_eq!(judge(Some(429), ra), Verdict::Retry { after: ra });
        // Retry-After longer than the schedule's wait wins
        let (st, at) = next_step(&s, 1, Verdict::Retry { after: ra }, 1000, 0.0);
        assert_eq!((st, at), (Status::Queued, Some(121_000)));
        // after the last attempt: dead letter
        assert_eq!(
            next_step(&s, 8, Verdict::Retry { after: None }, 0, 0.0).0,
            Status::Dead
        );
        assert_eq!(next_step(&s, 1, Verdict::Failed, 0, 0.0).0, Status::Failed);
    }

    #[test]
    fn signatures_as_documented() {
        let c = canonical(
            "POST",
            "/v1/messages",
            Some("b=2&a=1"),
            "1800000000",
            "n1",
            b"{}",
        );
        assert_eq!(
            c,
            "POST\n/v1/messages\na=1&b=2\n1800000000\nn1\n44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let sig = sign("s3cret", &c);
        assert!(verify("s3cret", &c, &sig));
        assert!(!verify("other", &c, &sig));
        assert!(!verify("s3cret", &c, "zz"));
        // Standard Webhooks' own test vector
        let v = webhook_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(v, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn ids_sort_by_time() {
        let a = message_id(1_000);
        let b = message_id(2_000);
        assert!(a < b && a.starts_with("msg_") && a.len() == 27);
    }
}
