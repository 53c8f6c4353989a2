//! The reverse proxy and load balancer: one entry point in front of a pool of origin
//! servers. Picks a server with `hopline-balance`, forwards over pooled keep-alive
//! connections (HTTP/1.1 or h2c), streams bodies both ways, passes WebSocket upgrades
//! through as a raw tunnel, retries failed connects of idempotent requests on another
//! server, and runs active health checks. Every failure is one classified
//! [`ProxyError`], from which status, retry and log line are decided.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::client_body::ClientBody;
use crate::error::ProxyError;
use crate::hop_by_hop::{is_upgrade, strip_hop_by_hop};
use crate::origin::{HeadForm, UpstreamBody};
use crate::pool::{ServerAddr, UpstreamPool};
use hopline_balance::Outcome;
use hopline_engine::body::{Body, RequestBody};

/// Add `add` to the list field `name`, as one field line holding every earlier line's
/// items and then `add` (some readers look at the first line only).
fn append_header(h: &mut HeaderMap, name: HeaderName, add: &str) {
    let mut joined = String::new();
    for old in h.get_all(&name).iter().filter_map(|v| v.to_str().ok()) {
        if !old.trim().is_empty() {
            joined.push_str(old);
            joined.push_str(", ");
        }
    }
    let value = if joined.is_empty() {
        HeaderValue::from_str(add)
    } else {
        joined.push_str(add);
        HeaderValue::from_str(&joined)
    };
    if let Ok(v) = value {
        h.insert(name, v);
    }
}

/// What the proxy knows of the client side.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    /// Client address.
    pub peer: SocketAddr,
    /// The client's IP address as text (made once per connection).
    pub client: &'a str,
    /// Client spoke TLS.
    pub tls: bool,
    /// Host (without port) the client asked for.
    pub host: &'a str,
    /// The Host / :authority exactly as sent (with its port), for the upstream's Host.
    pub authority: &'a str,
    /// Where the origin's 1xx responses go (an HTTP/1.1 client), if anywhere.
    pub interim: Option<&'a hopline_engine::h1::interim::Interim>,
}

fn forwarded_for(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// The fields the proxy adds to a forwarded request, described once and either applied
/// to a header map (for hyper's client) or written straight into a request head (for
/// hopline's own), so both paths send the same thing.
struct Forwarding<'a> {
    /// Appended to `X-Forwarded-For`.
    client: &'a str,
    /// Set as `X-Forwarded-Proto`.
    proto: &'static str,
    /// Set as `X-Forwarded-Host` (when usable as a value).
    host: Option<&'a str>,
    /// `Host` when the request has none.
    authority: &'a str,
    /// The client's address as `Forwarded` writes it, when it is IPv6 (quoted, bracketed);
    /// IPv4 is `client` as it is.
    for_v6: Option<String>,
    /// `Host` as `Forwarded` may carry it (a token-safe value), if so.
    forwarded_host: Option<&'a str>,
    /// Appended to `Via`.
    via: &'static str,
}

/// Whether `s` can be a field value as it is (what `HeaderValue::from_str` accepts),
/// checked without making one.
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= b' ' && b != 0x7f))
}

impl<'a> Forwarding<'a> {
    fn new(down: &Downstream<'a>, via: &'static str) -> Forwarding<'a> {
        let proto = if down.tls { "https" } else { "http" };
        let host_ok = !down.host.is_empty();
        Forwarding {
            client: down.client,
            proto,
            host: (host_ok && is_field_value(down.host)).then_some(down.host),
            authority: down.authority,
            for_v6: down.peer.is_ipv6().then(|| forwarded_for(down.peer.ip())),
            forwarded_host: (host_ok
                && down
                    .host
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b','))
            .then_some(down.host),
            via,
        }
    }

    /// The element appended to `Forwarded` (RFC 7239), in pieces:
    /// `for=CLIENT;proto=PROTO[;host=HOST]`.
    fn forwarded(&self) -> [&str; 6] {
        let (sep, host) = match self.forwarded_host {
            Some(h) => (";host=", h),
            None => ("", ""),
        };
        [
            "for=",
            self.for_v6.as_deref().unwrap_or(self.client),
            ";proto=",
            self.proto,
            sep,
            host,
        ]
    }

    fn apply(&self, h: &mut HeaderMap) {
        append_header(h, HeaderName::from_static("x-forwarded-for"), self.client);
        h.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(self.proto),
        );
        if let Some(host) = self.host
            && let Ok(v) = HeaderValue::from_str(host)
        {
            h.insert(HeaderName::from_static("x-forwarded-host"), v);
        }
        if !h.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(self.authority)
        {
            h.insert(header::HOST, v);
        }
        append_header(h, header::FORWARDED, &self.forwarded().concat());
        append_header(h, header::VIA, self.via);
    }

    /// The request head for hopline's own client: the request's fields (hop-by-hop ones
    /// already gone) with these added, as [`Forwarding::apply`] would have.
    fn head(&self, parts: &http::request::Parts, path_and_query: &str) -> Vec<u8> {
        /// `name: value` of a field the proxy sets
        fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        /// a list field the proxy extends: every earlier line's items, then `add` (as
        /// [`append_header`] does), given in pieces
        fn extend(out: &mut Vec<u8>, h: &HeaderMap, name: HeaderName, add: &[&str]) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            for old in h.get_all(&name).iter().filter(|v| v.to_str().is_ok()) {
                if !old.as_bytes().trim_ascii().is_empty() {
                    out.extend_from_slice(old.as_bytes());
                    out.extend_from_slice(b", ");
                }
            }
            for piece in add {
                out.extend_from_slice(piece.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        let h = &parts.headers;
        let mut out = Vec::with_capacity(384 + h.len() * 32);
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(path_and_query.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut extended = false;
        for (name, value) in h {
            let n = name.as_str();
            match n {
                "content-length" | "transfer-encoding" | "x-forwarded-proto"
                | "x-forwarded-host" => continue,
                // extended below
                "x-forwarded-for" | "forwarded" | "via" => {
                    extended = true;
                    continue;
                }
                _ => {}
            }
            line(&mut out, n.as_bytes(), value.as_bytes());
        }
        // (a request that came straight from a client has none of them: no lookups)
        let map = if extended { h } else { &HeaderMap::new() };
        extend(
            &mut out,
            map,
            HeaderName::from_static("x-forwarded-for"),
            &[self.client],
        );
        line(&mut out, b"x-forwarded-proto", self.proto.as_bytes());
        if let Some(host) = self.host {
            line(&mut out, b"x-forwarded-host", host.as_bytes());
        }
        if !h.contains_key(header::HOST) && is_field_value(self.authority) {
            line(&mut out, b"host", self.authority.as_bytes());
        }
        extend(&mut out, map, header::FORWARDED, &self.forwarded());
        extend(&mut out, map, header::VIA, &[self.via]);
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Forward one request to the pool; always returns a response (errors become 502/503/504).
pub async fn forward(
    up: &UpstreamPool,
    mut req: Request<RequestBody>,
    down: Downstream<'_>,
) -> Response<Body> {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = if upgrade {
        hopline_engine::h1::upgrade::on_upgrade(&mut req)
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    match send(up, parts, Some(body), down, client_upgrade, HeadForm::Lines).await {
        Ok(resp) => {
            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let (parts, body) = resp.into_parts();
            let body = match body {
                _ if switching => Body::empty(),
                Either::Left(hyper_body) => Body::stream(hyper_body),
                // hopline's own client: the body unboxed, the fields as the origin's lines
                Either::Right(mut own) => match own.take_relayed() {
                    Some(r) => Body::relayed(own).with_relayed_lines(r.lines.freeze(), r.has_date),
                    None => Body::relayed(own),
                },
            };
            Response::from_parts(parts, body)
        }
        Err(e) => e.response(),
    }
}

/// Send a request (head + optional body) to a server of the pool, retrying failed
/// connects of bodiless idempotent requests on another server. The response comes back
/// with hop-by-hop headers stripped and `Via` / `Server-Timing` added; its body is the
/// upstream's, unread. With [`HeadForm::Lines`], a response of hopline's own client may
/// carry its fields as the origin's lines in its body (see [`UpstreamBody`]) rather
/// than in its header map.
pub async fn send(
    up: &UpstreamPool,
    mut parts: http::request::Parts,
    body: Option<RequestBody>,
    down: Downstream<'_>,
    client_upgrade: Option<hopline_engine::h1::upgrade::OnUpgrade>,
    form: HeadForm,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let upgrade = client_upgrade.is_some();
    let via = if parts.version == http::Version::HTTP_2 {
        "2 hopline"
    } else {
        "1.1 hopline"
    };
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if !parts.headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(&up.name)
    {
        // (an HTTP/1.0 client may send none; HTTP/1.1 to the origin needs one: the
        // pool's name, as nginx sends $proxy_host)
        parts.headers.insert(header::HOST, v);
    }
    let forwarding = Forwarding::new(&down, via);
    let interim = down.interim;
    // A request without a body can be sent again to another server.
    let bodiless = body
        .as_ref()
        .is_none_or(|b| b.is_end_stream_hint(&parts.headers));
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let retryable = bodiless && idempotent && !upgrade;
    // (made only for a request with a body: a bodiless GET allocates nothing for it)
    let mut client_failed: Option<Arc<std::sync::OnceLock<ProxyError>>> = None;
    let mut body = Some(match body {
        Some(inner) if !bodiless => Either::Left(ClientBody {
            inner,
            failed: client_failed.insert(Arc::default()).clone(),
        }),
        _ => Either::Right(Empty::new()),
    });
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.version = http::Version::HTTP_11;
    let members = up.members();
    // what ties the request to a server: a key to hash, a sticky-session cookie
    let affinity = if up.hash_key.is_some() || up.sticky.is_some() {
        crate::affinity::of_request(
            up,
            &members.pool,
            &mut parts.headers,
            path_and_query,
            down.peer.ip(),
        )
    } else {
        hopline_balance::Affinity::default()
    };

    // hopline's own HTTP/1.1 client takes the bodiless idempotent requests; hyper's
    // gets the forwarding fields in its header map
    let fast = !up.http2
        && bodiless
        && !upgrade
        && !crate::affinity::rewrites_set_cookie(up)
        && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !fast {
        forwarding.apply(&mut parts.headers);
    }
    let mut fast_head: Option<Vec<u8>> = None;
    let mut client_upgrade = client_upgrade;
    let mut tried: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
    let attempts = if retryable { up.retries + 1 } else { 1 };
    // (the error made only when there is one: a request that succeeds allocates none)
    let mut last_err: Option<ProxyError> = None;
    for attempt in 0..attempts {
        // pick: a server not tried yet, from the pool's balancer
        let Some(pick) = members.pool.pick_for(&tried, affinity) else {
            break; // none at all (NoServer below), or none left to retry on
        };
        let idx = pick.index();
        tried.push(idx);
        let server = &members.servers[idx];
        // attempt: one exchange with it
        let attempted = if fast {
            let head = fast_head.get_or_insert_with(|| forwarding.head(&parts, path_and_query));
            let ask = crate::origin::Ask {
                head,
                is_head: parts.method == Method::HEAD,
                form,
                interim,
            };
            attempt_own(up, server, pick, ask).await
        } else {
            let headers = if retryable && attempt + 1 < attempts {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            let out = Outgoing {
                method: &parts.method,
                path_and_query,
                headers,
                body: body.take().unwrap_or_else(|| Either::Right(Empty::new())),
                client_failed: client_failed.as_deref(),
                client_upgrade: client_upgrade.take(),
            };
            attempt_hyper(up, server, pick, out).await
        };
        // retry: only a failed connect may go on to the next server
        match attempted {
            Attempt::Done(Ok(resp)) if up.sticky.is_some() => {
                return Ok(stick(resp, up, &members.pool, idx, affinity));
            }
            Attempt::Done(answer) => return answer,
            Attempt::Retry(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| ProxyError::NoServer {
        pool: up.name.clone(),
    }))
}

/// Sticky sessions: the response tells the client which server it is stuck to (the
/// balancer's cookie, or the origin's session cookie with the server's id before it).
fn stick(
    resp: Response<UpstreamBody>,
    up: &UpstreamPool,
    pool: &hopline_balance::Pool,
    index: usize,
    affinity: hopline_balance::Affinity,
) -> Response<UpstreamBody> {
    let (mut parts, mut body) = resp.into_parts();
    if let Some(v) = crate::affinity::insert_cookie(up, pool, index, affinity) {
        let lines = match &mut body {
            Either::Right(own) => own.relayed_mut().map(|r| &mut r.lines),
            Either::Left(_) => None,
        };
        match lines {
            Some(lines) => {
                lines.extend_from_slice(b"set-cookie: ");
                lines.extend_from_slice(v.as_bytes());
                lines.extend_from_slice(b"\r\n");
            }
            None => append_header(&mut parts.headers, header::SET_COOKIE, &v),
        }
    }
    crate::affinity::prefix_set_cookie(up, pool, index, &mut parts.headers);
    Response::from_parts(parts, body)
}

/// What one attempt on one server came to. (Moved once per attempt: boxing the answer
/// would cost an allocation on every proxied request.)
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// An answer, or a failure no retry may help: the end of the request's tries.
    Done(Result<Response<UpstreamBody>, ProxyError>),
    /// The connect failed: another server may be tried.
    Retry(ProxyError),
}

/// A request for hyper's client, as one attempt sends it.
struct Outgoing<'a> {
    method: &'a Method,
    path_and_query: &'a str,
    headers: HeaderMap,
    body: crate::client_body::ProxyBody,
    /// Set when the client's body broke (then the failure is the client's).
    client_failed: Option<&'a std::sync::OnceLock<ProxyError>>,
    /// The client's side of an upgrade, tunnelled to the server's after a 101.
    client_upgrade: Option<hopline_engine::h1::upgrade::OnUpgrade>,
}

/// One attempt with hopline's own HTTP/1.1 client (bodiless GET, HEAD, OPTIONS).
async fn attempt_own(
    up: &UpstreamPool,
    server: &ServerAddr,
    pick: hopline_balance::Pick<'_>,
    ask: crate::origin::Ask<'_>,
) -> Attempt {
    let started = Instant::now();
    let sent = crate::origin::exchange(
        &server.idle,
        server.addr,
        ask,
        up.connect_timeout,
        started + up.read_timeout,
    )
    .await;
    let latency = started.elapsed();
    match sent {
        Ok(resp) => {
            pick.finish(if resp.status().is_server_error() {
                Outcome::ServerError { latency }
            } else {
                Outcome::Success { latency }
            });
            let (mut rparts, mut rbody) = resp.into_parts();
            // (the client left the hop-by-hop fields out already)
            match rbody.relayed_mut() {
                Some(relayed) => annotate_lines(&mut relayed.lines, server, latency),
                None => annotate_response(&mut rparts.headers, server, latency),
            }
            Attempt::Done(Ok(Response::from_parts(rparts, Either::Right(rbody))))
        }
        Err(crate::origin::ExchangeError::Connect(reason)) => {
            pick.finish(Outcome::ConnectError);
            tracing::warn!(target: "hopline::proxy", "{}: connect to {} failed: {reason}", up.name, server.id);
            Attempt::Retry(ProxyError::Connect {
                server: server.id.clone(),
                reason,
            })
        }
        Err(crate::origin::ExchangeError::Timeout) => {
            pick.finish(Outcome::Timeout);
            tracing::warn!(target: "hopline::proxy", "{}: {} timed out", up.name, server.id);
            Attempt::Done(Err(ProxyError::Timeout {
                server: server.id.clone(),
                after: up.read_timeout,
            }))
        }
        Err(crate::origin::ExchangeError::Broken(reason)) => {
            pick.finish(Outcome::ServerError { latency });
            tracing::warn!(target: "hopline::proxy", "{}: {} failed: {reason}", up.name, server.id);
            Attempt::Done(Err(ProxyError::Upstream {
                server: server.id.clone(),
                reason,
            }))
        }
    }
}

/// One attempt with hyper's client (requests with a body, upgrades, h2c pools).
async fn attempt_hyper(
    up: &UpstreamPool,
    server: &ServerAddr,
    pick: hopline_balance::Pick<'_>,
    out: Outgoing<'_>,
) -> Attempt {
    let uri: Uri = match format!("http://{}{}", server.addr, out.path_and_query).parse() {
        Ok(u) => u,
        Err(_) => {
            pick.finish(Outcome::Success {
                latency: Duration::ZERO,
            });
            return Attempt::Done(Err(ProxyError::Upstream {
                server: server.id.clone(),
                reason: "the request target cannot be forwarded".into(),
            }));
        }
    };
    let mut req = Request::new(out.body);
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    *req.headers_mut() = out.headers;
    let started = Instant::now();
    let sent =
        tokio::time::timeout(up.read_timeout + up.connect_timeout, up.client.request(req)).await;
    let latency = started.elapsed();
    if !matches!(sent, Ok(Ok(_)))
        && let Some(e) = out.client_failed.and_then(|f| f.get())
    {
        // the client's body broke: its error, not the server's (the pick is dropped
        // unfinished: nothing learned about the server)
        tracing::debug!(target: "hopline::proxy", "{}: request body from the client failed: {e:?}", up.name);
        drop(pick);
        return Attempt::Done(Err(e.clone()));
    }
    match sent {
        Ok(Ok(mut resp)) => {
            let status = resp.status();
            pick.finish(if status.is_server_error() {
                Outcome::ServerError { latency }
            } else {
                Outcome::Success { latency }
            });
            let switching = status == StatusCode::SWITCHING_PROTOCOLS;
            if switching && let Some(client_upgrade) = out.client_upgrade {
                tunnel(
                    client_upgrade,
                    hyper::upgrade::on(&mut resp),
                    server.id.clone(),
                );
            }
            let (mut rparts, rbody) = resp.into_parts();
            response_headers(&mut rparts.headers, switching, server, latency);
            Attempt::Done(Ok(Response::from_parts(rparts, Either::Left(rbody))))
        }
        Ok(Err(e)) if e.is_connect() => {
            pick.finish(Outcome::ConnectError);
            let reason = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            tracing::warn!(target: "hopline::proxy", "{}: connect to {} failed: {reason}", up.name, server.id);
            Attempt::Retry(ProxyError::Connect {
                server: server.id.clone(),
                reason,
            })
        }
        Ok(Err(e)) => {
            pick.finish(Outcome::ServerError { latency });
            let reason = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            tracing::warn!(target: "hopline::proxy", "{}: {} failed: {reason}", up.name, server.id);
            Attempt::Done(Err(ProxyError::Upstream {
                server: server.id.clone(),
                reason,
            }))
        }
        Err(_) => {
            pick.finish(Outcome::Timeout);
            tracing::warn!(target: "hopline::proxy", "{}: {} timed out", up.name, server.id);
            Attempt::Done(Err(ProxyError::Timeout {
                server: server.id.clone(),
                after: up.read_timeout,
            }))
        }
    }
}

/// After a 101: the client's and the server's upgraded connections, copied both ways
/// until either ends.
fn tunnel(
    client: hopline_engine::h1::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    server_id: String,
) {
    tokio::spawn(async move {
        let server = async move { server.await.map_err(std::io::Error::other) };
        match tokio::try_join!(client, server) {
            Ok((mut c, u)) => {
                let mut u = TokioIo::new(u);
                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                    tracing::debug!(target: "hopline::proxy", "tunnel to {server_id} ended: {e}");
                }
            }
            Err(e) => {
                tracing::debug!(target: "hopline::proxy", "upgrade with {server_id} failed: {e}")
            }
        }
    });
}

/// What the proxy does to every response head: hop-by-hop headers out, `Via` and its
/// `Server-Timing` entry in.
fn response_headers(h: &mut HeaderMap, switching: bool, server: &ServerAddr, latency: Duration) {
    strip_hop_by_hop(h, switching);
    annotate_response(h, server, latency);
}

/// `Via` and the proxy's `Server-Timing` entry.
fn annotate_response(h: &mut HeaderMap, server: &ServerAddr, latency: Duration) {
    append_header(h, header::VIA, "1.1 hopline");
    let mut timing = String::with_capacity(40 + server.timing_desc.len());
    timing.push_str("hopline-proxy;dur=");
    push_millis(&mut timing, latency);
    timing.push_str(&server.timing_desc);
    append_header(h, HeaderName::from_static("server-timing"), &timing);
}

/// [`annotate_response`] for relayed lines: the same two fields, as lines of their own
/// (a list field may come in several lines, RFC 9110 §5.3).
fn annotate_lines(lines: &mut bytes::BytesMut, server: &ServerAddr, latency: Duration) {
    lines.extend_from_slice(b"via: 1.1 hopline\r\nserver-timing: hopline-proxy;dur=");
    push_millis(lines, latency);
    lines.extend_from_slice(server.timing_desc.as_bytes());
    lines.extend_from_slice(b"\r\n");
}

/// `d` in milliseconds with three decimals (`{:.3}` of the float, without formatting one).
fn push_millis(out: &mut impl std::fmt::Write, d: Duration) {
    let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
    let frac = us % 1000;
    let pad = if frac < 10 {
        "00"
    } else if frac < 100 {
        "0"
    } else {
        ""
    };
    // (writing into a String or a BytesMut cannot fail)
    let _ = out.write_str(itoa::Buffer::new().format(us / 1000));
    let _ = out.write_str(".");
    let _ = out.write_str(pad);
    let _ = out.write_str(itoa::Buffer::new().format(frac));
}

/// Does a request carry no body? Judged from its headers, as the body has not been read.
trait BodyHint {
    fn is_end_stream_hint(&self, headers: &HeaderMap) -> bool;
}

impl BodyHint for RequestBody {
    fn is_end_stream_hint(&self, headers: &HeaderMap) -> bool {
        use http_body::Body as _;
        if self.is_end_stream() {
            return true;
        }
        let cl_zero = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0");
        cl_zero && !headers.contains_key(header::TRANSFER_ENCODING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Fault;
    use crate::hop_by_hop::HOP_BY_HOP;
    use crate::hop_by_hop::is_hop_by_hop;

    #[test]
    fn list_fields_keep_every_earlier_line() {
        let mut h = HeaderMap::new();
        append_header(&mut h, header::VIA, "1.1 hopline");
        assert_eq!(h[header::VIA], "1.1 hopline");
        h.append(header::VIA, HeaderValue::from_static("1.1 other"));
        h.append(header::VIA, HeaderValue::from_static(""));
        append_header(&mut h, header::VIA, "2 last");
        let all: Vec<_> = h.get_all(header::VIA).iter().collect();
        assert_eq!(all, ["1.1 hopline, 1.1 other, 2 last"]);
    }

    #[test]
    fn millis_have_three_decimals() {
        for (us, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (45, "0.045"),
            (999, "0.999"),
            (1000, "1.000"),
            (12_345, "12.345"),
            (3_600_000_001, "3600000.001"),
        ] {
            let mut s = String::new();
            push_millis(&mut s, Duration::from_micros(us));
            assert_eq!(s, text);
            assert_eq!(s, format!("{:.3}", us as f64 / 1000.0));
        }
    }

    /// Both ways of adding the forwarding fields (to hyper's header map, into the own
    /// client's head) must send the same fields with the same values.
    #[test]
    fn forwarding_fields_are_the_same_on_both_client_paths() {
        let req = Request::get("/a?b=1")
            .header("host", "shop.test:8080")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-for", "198.51.100.1")
            .header("forwarded", "for=203.0.113.9")
            .header("x-forwarded-proto", "gopher")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        for (peer, tls, host) in [
            ("127.0.0.1:5000", false, "shop.test"),
            ("[::1]:5000", true, ""),
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            let client = peer.ip().to_string();
            let down = Downstream {
                peer,
                client: &client,
                tls,
                host,
                authority: "shop.test:8080",
                interim: None,
            };
            let f = Forwarding::new(&down, "1.1 hopline");
            let mut map = parts.headers.clone();
            f.apply(&mut map);
            let head = f.head(&parts, "/a?b=1");
            let head = String::from_utf8(head).unwrap();
            assert!(head.starts_with("GET /a?b=1 HTTP/1.1\r\n"), "{head}");
            assert!(head.ends_with("\r\n\r\n"), "{head}");
            let mut from_head: Vec<(String, String)> = head
                .lines()
                .skip(1)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (n, v) = l.split_once(": ").unwrap();
                    (n.to_string(), v.to_string())
                })
                .collect();
            let mut from_map: Vec<(String, String)> = map
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            from_head.sort();
            from_map.sort();
            assert_eq!(from_head, from_map);
            let get = |n: &str| {
                from_map
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            };
            let client = if tls { "::1" } else { "127.0.0.1" };
            // every earlier line's addresses, in order, then the client's
            assert_eq!(
                get("x-forwarded-for"),
                Some(&*format!("203.0.113.9, 198.51.100.1, {client}"))
            );
            assert_eq!(
                get("x-forwarded-proto"),
                Some(if tls { "https" } else { "http" })
            );
            assert_eq!(get("via"), Some("1.1 hopline"));
            assert_eq!(get("host"), Some("shop.test:8080"));
        }
    }

    #[test]
    fn hop_by_hop_names_are_the_list_and_upgrade() {
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            header::CONTENT_LENGTH,
            header::VIA,
            header::SERVER,
            header::TRAILER,
        ] {
            assert_eq!(is_hop_by_hop(&name), name == header::TRAILER, "{name}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        let mut a = h.clone();
        strip_hop_by_hop(&mut a, false);
        assert!(a.get("x-secret").is_none());
        assert!(a.get("keep-alive").is_none());
        assert!(a.get(header::CONNECTION).is_none());
        assert!(a.get(header::UPGRADE).is_none());
        assert_eq!(a["x-kept"], "yes");
        let mut b = h.clone();
        strip_hop_by_hop(&mut b, true);
        assert_eq!(b[header::UPGRADE], "websocket");
        assert_eq!(b[header::CONNECTION], "upgrade");
    }

    #[test]
    fn errors_say_what_and_whose() {
        let e = ProxyError::Connect {
            server: "127.0.0.1:9".into(),
            reason: "refused".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(e.retryable());
        assert!(e.body().contains("could not connect"));
        let e = ProxyError::Timeout {
            server: "a".into(),
            after: Duration::from_millis(50),
        };
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(!e.retryable());
        assert!(e.body().contains("did not answer within 50 ms"));
        let e = ProxyError::NoServer { pool: "app".into() };
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.fault(), Fault::Internal);
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        assert_eq!(forwarded_for("10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(forwarded_for("::1".parse().unwrap()), "\"[::1]\"");
    }
}
