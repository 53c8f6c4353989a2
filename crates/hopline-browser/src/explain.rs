//! `visit --explain`: the journey of the page's document as numbered steps in plain
//! words — the seeds' story ("what happens when you type a URL"), told from what was
//! measured, including who vouched for the server (the certificate chain it sent) and each
//! server hop's own account (`Cache-Status`, `Server-Timing`).

use std::fmt::Write;

use crate::certificate;
use crate::timeline::{CertInfo, Entry, Navigation};

fn hop_lines(e: &Entry, out: &mut Vec<String>) {
    if let Some(cs) = &e.cache_status {
        let what = if cs.contains("; hit") {
            "cache HIT: it answered from its own copy, the origin was not asked"
        } else if cs.contains("fwd=stale") {
            "cache had a stale copy and revalidated it with the origin"
        } else {
            "cache MISS: it forwarded the request"
        };
        let pop = cs.split(';').next().unwrap_or("").trim();
        out.push(format!("edge PoP ({pop}): {what} [Cache-Status: {cs}]"));
    }
    let hit = e
        .cache_status
        .as_deref()
        .is_some_and(|c| c.contains("; hit"));
    // Server-Timing entries are appended on the way back: the innermost hop comes first.
    // On a cache hit, the entries of the hops behind the cache were stored with the copy.
    for st in e.server_timing.iter().rev() {
        if st.name == "hopline-cache" {
            out.push(format!(
                "edge PoP took {:.2} ms ({})",
                st.dur.unwrap_or(0.0),
                st.desc.as_deref().unwrap_or("")
            ));
            continue;
        }
        if hit {
            let desc = st.desc.as_deref().unwrap_or(&st.name);
            out.push(format!(
                "(stored with the cached copy, from when it was fetched) {desc}"
            ));
            continue;
        }
        let dur = st.dur.map(|d| format!(" in {d:.2} ms")).unwrap_or_default();
        match (st.name.as_str(), &st.desc) {
            ("hopline", Some(desc)) => out.push(format!(
                "{desc} answered; its own account: {}",
                dur.trim_start()
            )),
            ("hopline-proxy", Some(desc)) => {
                let (pool_server, algo) = desc.split_once(" via ").unwrap_or((desc.as_str(), "?"));
                let (pool, server) = pool_server.split_once(' ').unwrap_or((pool_server, "?"));
                out.push(format!(
                    "proxy to pool \"{pool}\": {algo} picked {server}, which answered{dur}"
                ));
            }
            (name, Some(desc)) => out.push(format!("{name}: {desc}{dur}")),
            (name, None) => out.push(format!("{name}{dur}")),
        }
    }
}

/// Who vouched for the server: the leaf's names, its issuer, when it was issued (the time
/// of day when that was the visit's day, the date too otherwise), its lifetime and the
/// chain as received.
fn certificate_step(chain: &[CertInfo], visit_unix_us: i64) -> Option<String> {
    let leaf = chain.first()?;
    let issued = certificate::rfc3339(leaf.not_before_unix);
    let same_day =
        certificate::rfc3339(visit_unix_us.div_euclid(1_000_000)).get(..10) == issued.get(..10);
    let when = match issued.split_once('T') {
        Some((_, time)) if same_day => format!("at {} UTC", time.trim_end_matches('Z')),
        Some((day, time)) => format!("on {day} at {} UTC", time.trim_end_matches('Z')),
        None => "at an unreadable time".to_string(),
    };
    Some(format!(
        "the certificate for {} was issued by {} {when}, valid {}, {}",
        certificate::covers(leaf),
        leaf.issuer_name,
        certificate::lifetime(leaf.not_after_unix - leaf.not_before_unix),
        certificate::summary(chain)
    ))
}

/// The document's journey, then the page, as numbered steps.
pub fn explain(nav: &Navigation) -> String {
    let mut steps: Vec<String> = Vec::new();
    for e in nav.entries.iter().filter(|e| e.kind == "document") {
        let url = url::Url::parse(&e.url).ok();
        let host = url
            .as_ref()
            .and_then(|u| u.host_str())
            .unwrap_or("?")
            .to_string();
        steps.push(format!(
            "parsed {}: scheme {}, host {host}, port {}, path {}",
            e.url,
            url.as_ref().map(|u| u.scheme()).unwrap_or("?"),
            url.as_ref()
                .and_then(|u| u.port_or_known_default())
                .map(|p| p.to_string())
                .unwrap_or_default(),
            url.as_ref().map(|u| u.path()).unwrap_or("/")
        ));
        if let Some(c) = &e.from_cache {
            steps.push(if c == "hit" {
                "the browser cache held a fresh copy: no network at all".into()
            } else {
                "the browser cache held a stale copy: asked the server whether it changed (If-None-Match)".into()
            });
            if c == "hit" {
                continue;
            }
        }
        if let Some(d) = &e.dns {
            let who = match d.answered_by.as_str() {
                "literal" => "no lookup needed (an IP address)".to_string(),
                "hosts_file" => "the hosts file answered".to_string(),
                "cache" => "the resolver cache answered".to_string(),
                "recursive" => format!(
                    "walked the hierarchy from the root ({} servers asked)",
                    d.steps
                ),
                other => match other.strip_prefix("doh ") {
                    Some(url) => {
                        let ids: Vec<String> = d.doh.iter().map(|i| format!("#{i}")).collect();
                        format!(
                            "asked over DNS over HTTPS, as a browser with DoH on does: an HTTPS \
                             request to {url} per question (A and AAAA at once: requests {}), \
                             hidden from the network between",
                            ids.join(" and ")
                        )
                    }
                    None => format!("{other} answered"),
                },
            };
            let trust = match d.dnssec {
                "secure" => "; DNSSEC-validated (signed by the zone's owner)",
                "insecure" => "; the zone is not signed (proven so)",
                _ => "",
            };
            steps.push(format!(
                "looked up {host}: {who} → {} (TTL {} s) in {:.1} ms{trust}",
                d.addrs.join(", "),
                d.ttl,
                e.phases.dns.unwrap_or(0.0)
            ));
        }
        if let Some(note) = &e.note {
            steps.push(note.clone());
        }
        let quic = e.http_version == "HTTP/3";
        match (e.phases.connect, &e.server) {
            (Some(c), Some(s)) if quic => steps.push(format!(
                "connected to {s} over QUIC in {c:.1} ms: one handshake over UDP carries the transport and TLS 1.3 together, 1 round trip before the request can go (TCP needs its three-way handshake, then TLS's own round trip: 2)"
            )),
            (Some(c), Some(s)) => steps.push(format!(
                "connected to {s} in {c:.1} ms (TCP three-way handshake)"
            )),
            (None, Some(s)) if e.reused => {
                steps.push(format!("reused the open connection to {s} (keep-alive)"))
            }
            _ => {}
        }
        if let Some(t) = &e.tls
            && !(quic && e.reused)
        {
            steps.push(format!(
                "{} handshake in {}{}: {}, ALPN {}, certificate {} issued by {}",
                t.version.replace('_', "."),
                if quic {
                    "the QUIC handshake above".to_string()
                } else {
                    format!("{:.1} ms", e.phases.tls.unwrap_or(0.0))
                },
                if t.resumed { " (session resumed)" } else { "" },
                t.cipher,
                t.alpn.as_deref().unwrap_or("none"),
                t.subject,
                t.issuer
            ));
            if let Some(step) = certificate_step(&t.chain, nav.started_unix_us) {
                steps.push(step);
            }
        }
        if let Some(err) = &e.error {
            steps.push(format!("failed: {err}"));
            continue;
        }
        steps.push(format!(
            "sent GET {} over {}; first byte after {:.1} ms",
            url.as_ref().map(|u| u.path()).unwrap_or("/"),
            e.http_version,
            e.phases.wait
        ));
        let mut hops = Vec::new();
        hop_lines(e, &mut hops);
        steps.extend(hops);
        match &e.redirect_to {
            Some(to) => steps.push(format!("answered {} → redirect to {to}", e.status)),
            None => steps.push(format!(
                "answered {} with {} bytes ({} on the wire{}) in {:.1} ms",
                e.status,
                e.body_bytes,
                e.transfer_bytes,
                e.content_encoding
                    .as_deref()
                    .map(|c| format!(", {c}"))
                    .unwrap_or_default(),
                e.phases.receive
            )),
        }
    }
    let p = &nav.page;
    let subs = nav
        .entries
        .iter()
        .filter(|e| e.kind != "document" && e.kind != "dns")
        .count();
    let doh = nav.entries.iter().filter(|e| e.kind == "dns").count();
    let doh = if doh > 0 {
        format!(" ({doh} DNS-over-HTTPS requests besides)")
    } else {
        String::new()
    };
    steps.push(format!(
        "parsed the HTML at {:.1} ms and fetched {subs} subresources{doh} ({} requests over reused connections); every one done at {:.1} ms",
        p.dom_content_loaded, p.reused, p.load
    ));
    let mut out = String::new();
    for (i, s) in steps.iter().enumerate() {
        let _ = writeln!(out, "{:>2}. {s}", i + 1);
    }
    out
}
