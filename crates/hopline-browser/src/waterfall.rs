//! The waterfall in a terminal: one row per request, a bar per phase on a shared time
//! axis (colour only on a terminal without NO_COLOR), then the page-level figures and
//! each hop's own account (`Server-Timing`, `Cache-Status`).

use std::fmt::Write;

use crate::timeline::Navigation;

const WIDTH: usize = 50;

/// The wait bar with the server side drawn inside it, from the hops' `Server-Timing`:
/// `w` = the edge itself (and the network to it), `u` = time the edge waited on what is
/// behind it (its upstream), `o` = the innermost hop's share (e.g. the origin behind a
/// load balancer). Proportional to the reported durations; plain `w` without them.
fn wait_segment(e: &crate::timeline::Entry, n: usize) -> String {
    let Some((behind, inner)) = e.upstream_shares() else {
        return "w".repeat(n);
    };
    let (behind, inner) = (behind / e.phases.wait, inner / e.phases.wait);
    let u = ((behind - inner) * n as f64).round() as usize;
    let o = (inner * n as f64).round() as usize;
    let w = n.saturating_sub(u + o);
    format!("{}{}{}", "w".repeat(w), "u".repeat(u), "o".repeat(o))
}

/// Render the waterfall; `color` adds ANSI colours.
pub fn render(nav: &Navigation, color: bool) -> String {
    let mut out = String::new();
    let total = nav.page.load.max(0.001);
    let scale = WIDTH as f64 / total;
    let phases: [(&str, &str, char); 7] = [
        ("blocked", "\x1b[90m", '·'),
        ("dns", "\x1b[36m", 'd'),
        ("connect", "\x1b[33m", 'c'),
        ("tls", "\x1b[35m", 's'),
        ("send", "\x1b[37m", '>'),
        ("wait", "\x1b[32m", 'w'),
        ("receive", "\x1b[34m", 'r'),
    ];
    if nav.url == nav.final_url {
        let _ = writeln!(out, "{}", nav.url);
    } else {
        let _ = writeln!(out, "{} → {} (redirected)", nav.url, nav.final_url);
    }
    let _ = writeln!(
        out,
        "{:<3} {:<4} {:<10} {:<6} {:>8} {:>9}  {:<w$}  url",
        "#",
        "st",
        "kind",
        "proto",
        "bytes",
        "ms",
        "timeline",
        w = WIDTH
    );
    for e in &nav.entries {
        let mut bar = String::new();
        let lead = (e.start * scale).round() as usize;
        bar.push_str(&" ".repeat(lead.min(WIDTH)));
        let values = [
            e.phases.blocked,
            e.phases.dns.unwrap_or(0.0),
            e.phases.connect.unwrap_or(0.0),
            e.phases.tls.unwrap_or(0.0),
            e.phases.send,
            e.phases.wait,
            e.phases.receive,
        ];
        let mut used = lead;
        for (i, v) in values.iter().enumerate() {
            let n = (v * scale).round() as usize;
            let n = if *v > 0.0 && n == 0 && i >= 5 { 1 } else { n };
            let n = n.min(WIDTH.saturating_sub(used));
            used += n;
            if n == 0 {
                continue;
            }
            let seg: String = if i == 5 {
                wait_segment(e, n)
            } else if i == 1 {
                // which layer answered, drawn in the DNS bar: h hosts file, k resolver
                // cache, f a forwarding resolver, R iteration from the root, D DNS over
                // HTTPS (its requests are rows of their own)
                let ch = match e.dns.as_ref().map(|d| d.answered_by.as_str()) {
                    Some("hosts_file") => 'h',
                    Some(a) if a.starts_with("doh ") => 'D',
                    Some("cache") => 'k',
                    Some("recursive") => 'R',
                    Some(a) if a.starts_with("resolver") => 'f',
                    _ => 'd',
                };
                std::iter::repeat_n(ch, n).collect()
            } else {
                std::iter::repeat_n(phases[i].2, n).collect()
            };
            if color {
                let _ = write!(bar, "{}{seg}\x1b[0m", phases[i].1);
            } else {
                bar.push_str(&seg);
            }
        }
        let visible = used.min(WIDTH);
        bar.push_str(&" ".repeat(WIDTH - visible));
        let status = if e.error.is_some() {
            "ERR".to_string()
        } else {
            e.status.to_string()
        };
        let proto = e.http_version.replace("HTTP/", "h");
        let _ = writeln!(
            out,
            "{:<3} {:<4} {:<10} {:<6} {:>8} {:>9.1}  {bar}  {}{}",
            e.id,
            status,
            e.kind,
            proto,
            e.transfer_bytes,
            e.phases.total(),
            e.url,
            match (e.from_cache.as_deref(), e.reused) {
                (Some("hit"), _) => "  (from cache)",
                (Some(_), _) => "  (revalidated: 304, body from cache)",
                (None, true) => "  (reused)",
                (None, false) => "",
            }
        );
        if let Some(err) = &e.error {
            let _ = writeln!(out, "      ✗ {err}");
        }
        if let Some(to) = &e.redirect_to {
            let _ = writeln!(out, "      ↪ redirect to {to}");
        }
        // (an IP literal asks nobody: nothing to say)
        if let Some(d) = e.dns.as_ref().filter(|d| d.answered_by != "literal") {
            let asked = if d.doh.is_empty() {
                format!("{} step(s)", d.steps)
            } else {
                let ids: Vec<String> = d.doh.iter().map(|i| format!("#{i}")).collect();
                format!("requests {}", ids.join(" "))
            };
            let _ = writeln!(
                out,
                "      dns: {} answered {} (ttl {} s, {asked}, DNSSEC {})",
                d.answered_by,
                d.addrs.join(", "),
                d.ttl,
                d.dnssec
            );
        }
        if let Some(t) = &e.tls {
            let _ = writeln!(
                out,
                "      tls: {} {} alpn={} {}subject=\"{}\" issuer=\"{}\"",
                t.version,
                t.cipher,
                t.alpn.as_deref().unwrap_or("-"),
                if t.resumed { "resumed " } else { "" },
                t.subject,
                t.issuer
            );
            if let Some(leaf) = t.chain.first() {
                let _ = writeln!(
                    out,
                    "      chain: {} · leaf valid {} → {}",
                    crate::certificate::summary(&t.chain),
                    leaf.not_before,
                    leaf.not_after
                );
            }
        }
        if let Some(cs) = &e.cache_status {
            let _ = writeln!(out, "      cache-status: {cs}");
        }
        // a browser-cache hit shows the stored response's timings; a CDN hit its own
        // cache's, beside the ones it stored from the origin's answer
        let from_browser_cache = e.from_cache.as_deref() == Some("hit");
        let cdn_hit = e
            .cache_status
            .as_deref()
            .is_some_and(|c| c.contains("; hit"));
        for st in &e.server_timing {
            let stored = from_browser_cache || (cdn_hit && st.name != "hopline-cache");
            let _ = writeln!(
                out,
                "      server-timing{}: {}{}{}",
                if stored {
                    " (stored, not this request)"
                } else {
                    ""
                },
                st.name,
                st.dur.map(|d| format!(" {d:.2} ms")).unwrap_or_default(),
                st.desc
                    .as_ref()
                    .map(|d| format!(" — {d}"))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        out,
        "legend: · blocked  d dns (h hosts file, k resolver cache, f forwarding resolver, R from the root, D over HTTPS)  c connect  s tls  > send  w wait (u the edge waiting on its upstream, o the origin behind it)  r receive"
    );
    let p = &nav.page;
    let doc = nav.entries.iter().find(|e| e.kind == "document");
    match doc.and_then(|d| d.error.as_deref().map(|err| (d, err))) {
        Some((d, err)) => {
            // no page: say what failed and where, not load figures of nothing
            let hop = err.split(':').next().unwrap_or("request");
            let _ = writeln!(
                out,
                "\npage: not loaded — the document {} failed at the {hop} step after {:.1} ms: {err}",
                d.url,
                d.phases.total()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\npage: dns {:.1} ms · connect {:.1} ms · tls {:.1} ms · ttfb {:.1} ms · html parsed {:.1} ms · load {:.1} ms",
                p.dns, p.connect, p.tls, p.ttfb, p.dom_content_loaded, p.load
            );
        }
    }
    let failed = nav
        .entries
        .iter()
        .filter(|e| e.error.is_some() || e.status >= 400)
        .count();
    let _ = writeln!(
        out,
        "      {} requests · {} bytes · {} connection(s) opened · {} reused · {} failed{}",
        p.requests,
        p.transfer_bytes,
        p.connections,
        p.reused,
        failed,
        if failed > p.failed {
            " (counting 4xx/5xx answers)"
        } else {
            ""
        }
    );
    if !nav.entries.is_empty()
        && nav
            .entries
            .iter()
            .all(|e| e.from_cache.as_deref() == Some("hit"))
    {
        let _ = writeln!(
            out,
            "      everything came from the browser cache (no network): --no-cache to ask the servers"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{DnsInfo, Entry, ServerTiming};

    fn entry(url: &str) -> Entry {
        Entry {
            url: url.into(),
            kind: "document".into(),
            status: 200,
            http_version: "HTTP/1.1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn says_what_happened_and_nothing_it_did_not() {
        // no redirect: the URL once; an IP literal: no DNS line; the whole legend
        let mut e = entry("http://127.0.0.1:8080/");
        e.dns = Some(DnsInfo {
            answered_by: "literal".into(),
            addrs: vec!["127.0.0.1".into()],
            ttl: 0,
            steps: 0,
            dnssec: "unchecked",
            doh: vec![],
        });
        let nav = Navigation {
            url: e.url.clone(),
            final_url: e.url.clone(),
            entries: vec![e.clone()],
            ..Default::default()
        };
        let text = render(&nav, false);
        assert!(
            !text.contains('→') && !text.contains("dns: literal"),
            "{text}"
        );
        for mark in [
            "· blocked",
            "d dns",
            "h hosts file",
            "k resolver cache",
            "f forwarding",
            "R from the root",
            "c connect",
            "s tls",
            "> send",
            "w wait",
            "u the edge",
            "o the origin",
            "r receive",
        ] {
            assert!(text.contains(mark), "legend lacks {mark}: {text}");
        }
        // a failed document: what failed and where, no load figures
        let mut failed = e.clone();
        failed.error = Some("dns: DNS NXDOMAIN: nope.test does not exist".into());
        let nav = Navigation {
            entries: vec![failed],
            ..nav.clone()
        };
        let text = render(&nav, false);
        assert!(
            text.contains("page: not loaded") && text.contains("at the dns step"),
            "{text}"
        );
        assert!(!text.contains("ttfb"), "{text}");
        // a 404 document counts as failed in the summary
        let mut missing = e.clone();
        missing.status = 404;
        let text = render(
            &Navigation {
                entries: vec![missing],
                ..nav.clone()
            },
            false,
        );
        assert!(
            text.contains("1 failed (counting 4xx/5xx answers)"),
            "{text}"
        );
        // everything from the browser cache: said, with the way around it; the stored
        // Server-Timing is marked stored
        let mut hit = e.clone();
        hit.from_cache = Some("hit".into());
        hit.server_timing = vec![ServerTiming {
            name: "hopline-proxy".into(),
            dur: Some(1.5),
            desc: None,
        }];
        let text = render(
            &Navigation {
                entries: vec![hit],
                ..nav.clone()
            },
            false,
        );
        assert!(
            text.contains("everything came from the browser cache") && text.contains("--no-cache"),
            "{text}"
        );
        assert!(
            text.contains("server-timing (stored, not this request): hopline-proxy"),
            "{text}"
        );
        // a CDN hit: its own cache's timing is fresh, the origin's stored
        let mut cdn = e;
        cdn.cache_status = Some("pop; hit; ttl=50".into());
        cdn.server_timing = vec![
            ServerTiming {
                name: "hopline-proxy".into(),
                dur: Some(1.5),
                desc: None,
            },
            ServerTiming {
                name: "hopline-cache".into(),
                dur: Some(0.05),
                desc: None,
            },
        ];
        let text = render(
            &Navigation {
                entries: vec![cdn],
                ..nav
            },
            false,
        );
        assert!(
            text.contains("server-timing (stored, not this request): hopline-proxy"),
            "{text}"
        );
        assert!(text.contains("server-timing: hopline-cache"), "{text}");
    }
}
