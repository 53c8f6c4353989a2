//! The timeline of one navigation: plain data (serde) that the waterfall, the HAR file
//! and the JSON output all read. Times are milliseconds since the navigation started;
//! phases follow W3C Navigation/Resource Timing: blocked, dns, connect, tls, send,
//! wait (time to first byte), receive.

use serde::Serialize;

/// One request's phases, ms (`None` = not part of this request, e.g. a reused connection).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Phases {
    /// Waiting for a connection slot (per-host limit).
    pub blocked: f64,
    /// Name lookup.
    pub dns: Option<f64>,
    /// TCP handshake.
    pub connect: Option<f64>,
    /// TLS handshake.
    pub tls: Option<f64>,
    /// Writing the request.
    pub send: f64,
    /// Request sent → first response byte (TTFB).
    pub wait: f64,
    /// First → last response byte.
    pub receive: f64,
}

impl Phases {
    /// Sum of all phases.
    pub fn total(&self) -> f64 {
        self.blocked
            + self.dns.unwrap_or(0.0)
            + self.connect.unwrap_or(0.0)
            + self.tls.unwrap_or(0.0)
            + self.send
            + self.wait
            + self.receive
    }
}

/// The DNS step of a request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DnsInfo {
    /// Which layer answered: cache, hosts_file, `resolver ADDR`, recursive, literal, or
    /// `doh URL` (DNS over HTTPS).
    pub answered_by: String,
    /// Addresses.
    pub addrs: Vec<String>,
    /// TTL, s.
    pub ttl: u64,
    /// Servers asked (recursive/forwarded lookups).
    pub steps: usize,
    /// DNSSEC: "secure" (validated: AD from the resolver, or by this resolver), "insecure"
    /// (proven unsigned), or "unchecked".
    pub dnssec: &'static str,
    /// Over DNS over HTTPS: the ids of the DoH requests (entries of kind "dns") that
    /// answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub doh: Vec<usize>,
}

/// The TLS step of a connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TlsInfo {
    /// e.g. "TLSv1_3".
    pub version: String,
    /// Cipher suite.
    pub cipher: String,
    /// Negotiated protocol ("h2", "http/1.1").
    pub alpn: Option<String>,
    /// Certificate subject.
    pub subject: String,
    /// Certificate issuer.
    pub issuer: String,
    /// Session resumed (no full handshake).
    pub resumed: bool,
    /// The certificate chain as the server sent it, leaf first (on a resumed session, as
    /// it was sent in the handshake that made the session).
    pub chain: Vec<CertInfo>,
}

/// One certificate of the chain a server sent.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CertInfo {
    /// Its short name: the subject's common name, else its first DNS name.
    pub name: String,
    /// The issuer's common name (else the whole issuer).
    pub issuer_name: String,
    /// Subject (distinguished name).
    pub subject: String,
    /// Issuer (distinguished name).
    pub issuer: String,
    /// The names it covers (subjectAltName: DNS names and IP addresses).
    pub names: Vec<String>,
    /// Valid from (RFC 3339, UTC).
    pub not_before: String,
    /// Valid until (RFC 3339, UTC).
    pub not_after: String,
    /// Valid from, seconds since the Unix epoch.
    pub not_before_unix: i64,
    /// Valid until, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// A CA certificate (basicConstraints cA).
    pub ca: bool,
    /// Its own issuer (a root).
    pub self_signed: bool,
}

/// A server's own account of a hop, from `Server-Timing`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerTiming {
    /// Metric name.
    pub name: String,
    /// Duration, ms.
    pub dur: Option<f64>,
    /// Description.
    pub desc: Option<String>,
}

/// One request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Entry {
    /// Position in the timeline.
    pub id: usize,
    /// URL.
    pub url: String,
    /// Method.
    pub method: String,
    /// What it is: document, stylesheet, script, image, font, icon, other.
    pub kind: String,
    /// Who asked for it (the id of the document or stylesheet), if anyone.
    pub initiator: Option<usize>,
    /// Status code (0 when it failed before a response).
    pub status: u16,
    /// "HTTP/1.1" or "HTTP/2".
    pub http_version: String,
    /// Server address connected to.
    pub server: Option<String>,
    /// Connection number (same number = same connection).
    pub connection: Option<usize>,
    /// Whether the connection was reused from an earlier request.
    pub reused: bool,
    /// Start, ms since the navigation started.
    pub start: f64,
    /// Phases.
    pub phases: Phases,
    /// DNS detail when this request looked a name up.
    pub dns: Option<DnsInfo>,
    /// TLS detail when this request opened a TLS connection.
    pub tls: Option<TlsInfo>,
    /// `Server-Timing` entries of the response.
    pub server_timing: Vec<ServerTiming>,
    /// `Cache-Status` of the response.
    pub cache_status: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// Bytes on the wire (body, encoded).
    pub transfer_bytes: u64,
    /// Bytes after decoding.
    pub body_bytes: u64,
    /// Where a redirect pointed.
    pub redirect_to: Option<String>,
    /// Served by the browser cache: "hit" (no network) or "revalidated" (304).
    pub from_cache: Option<String>,
    /// Response headers (name, value).
    pub response_headers: Vec<(String, String)>,
    /// Request headers (name, value).
    pub request_headers: Vec<(String, String)>,
    /// The hop where it failed, with the reason.
    pub error: Option<String>,
    /// Something worth knowing that is not a failure (e.g. HTTP/3 fell back to TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Entry {
    /// An edge cache answered from its own copy (`Cache-Status: …; hit`).
    pub fn edge_hit(&self) -> bool {
        self.cache_status
            .as_deref()
            .is_some_and(|c| c.contains("; hit"))
    }

    /// How much of the wait the edge spent waiting on its upstream, and of that the
    /// innermost hop's share (e.g. the origin behind a balancer), in ms, from the hops'
    /// `hopline-proxy` Server-Timing; None without them, or for a cache hit (whose
    /// timings are stored, not this request's).
    pub fn upstream_shares(&self) -> Option<(f64, f64)> {
        let wait = self.phases.wait;
        if self.from_cache.as_deref() == Some("hit") || self.edge_hit() || wait <= 0.0 {
            return None;
        }
        let mut proxies: Vec<f64> = self
            .server_timing
            .iter()
            .filter(|s| s.name == "hopline-proxy")
            .filter_map(|s| s.dur)
            .collect();
        proxies.sort_by(|a, b| b.total_cmp(a)); // outermost (largest) first
        let behind = proxies.first()?.clamp(0.0, wait);
        let inner = proxies.get(1).map_or(0.0, |d| d.clamp(0.0, behind));
        Some((behind, inner))
    }
}

/// Page-level figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PageTimings {
    /// DNS of the document, ms.
    pub dns: f64,
    /// TCP connect of the document, ms.
    pub connect: f64,
    /// TLS of the document, ms.
    pub tls: f64,
    /// Time to first byte of the (final) document, ms since start.
    pub ttfb: f64,
    /// HTML parsed (DOMContentLoaded-equivalent), ms since start.
    pub dom_content_loaded: f64,
    /// Every subresource done, ms since start.
    pub load: f64,
    /// Requests made.
    pub requests: usize,
    /// Bytes on the wire.
    pub transfer_bytes: u64,
    /// Connections opened.
    pub connections: usize,
    /// Requests that reused a connection.
    pub reused: usize,
    /// Requests that failed.
    pub failed: usize,
}

/// A navigation: the document, its redirects and subresources.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Navigation {
    /// URL typed.
    pub url: String,
    /// Final URL after redirects.
    pub final_url: String,
    /// Wall-clock start (RFC 3339, microseconds).
    pub started: String,
    /// The same, in microseconds since the Unix epoch.
    pub started_unix_us: i64,
    /// Every request in start order.
    pub entries: Vec<Entry>,
    /// Page figures.
    pub page: PageTimings,
}

/// Parse a `Server-Timing` header value.
pub fn parse_server_timing(v: &str) -> Vec<ServerTiming> {
    v.split(',')
        .filter_map(|metric| {
            let mut parts = metric.split(';');
            let name = parts.next()?.trim().to_string();
            if name.is_empty() {
                return None;
            }
            let mut st = ServerTiming {
                name,
                dur: None,
                desc: None,
            };
            for p in parts {
                let (k, val) = p.trim().split_once('=')?;
                match k.trim() {
                    "dur" => st.dur = val.trim().parse().ok(),
                    "desc" => st.desc = Some(val.trim().trim_matches('"').to_string()),
                    _ => {}
                }
            }
            Some(st)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_parses() {
        let v = parse_server_timing(
            "hopline-proxy;dur=3.2;desc=\"app 127.0.0.1:9001 via least_connections\", db;dur=1, miss",
        );
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].dur, Some(3.2));
        assert_eq!(
            v[0].desc.as_deref(),
            Some("app 127.0.0.1:9001 via least_connections")
        );
        assert_eq!(v[2].name, "miss");
    }
}
