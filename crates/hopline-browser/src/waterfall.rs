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
    let wait = e.phases.wait;
    let mut proxies: Vec<f64> = e
        .server_timing
        .iter()
        .filter(|s| s.name == "hopline-proxy")
        .filter_map(|s| s.dur)
        .collect();
    proxies.sort_by(|a, b| b.total_cmp(a)); // outermost (largest) first
    if wait <= 0.0
        || proxies.is_empty()
        || e.cache_status
            .as_deref()
            .is_some_and(|c| c.contains("; hit"))
    {
        return "w".repeat(n);
    }
    let behind = (proxies[0] / wait).clamp(0.0, 1.0);
    let inner = proxies
        .get(1)
        .map(|d| (d / wait).clamp(0.0, behind))
        .unwrap_or(0.0);
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
    let _ = writeln!(out, "{} → {}", nav.url, nav.final_url);
    let _ = writeln!(
        out,
        "{:<3} {:<4} {:<10} {:<6} {:>8} {:>9}  {:<w$}  url",
        "#",
        "st",
        "kind",
        "proto",
        "bytes",
        "ms",
        "timeline (d dns, c connect, s tls, w wait, r receive)",
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
                // cache, f a forwarding resolver, R iteration from the root
                let ch = match e.dns.as_ref().map(|d| d.answered_by.as_str()) {
                    Some("hosts_file") => 'h',
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
        if let Some(d) = &e.dns {
            let _ = writeln!(
                out,
                "      dns: {} answered {} (ttl {} s, {} step(s))",
                d.answered_by,
                d.addrs.join(", "),
                d.ttl,
                d.steps
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
        }
        if let Some(cs) = &e.cache_status {
            let _ = writeln!(out, "      cache-status: {cs}");
        }
        for st in &e.server_timing {
            let _ = writeln!(
                out,
                "      server-timing: {}{}{}",
                st.name,
                st.dur.map(|d| format!(" {d:.2} ms")).unwrap_or_default(),
                st.desc
                    .as_ref()
                    .map(|d| format!(" — {d}"))
                    .unwrap_or_default()
            );
        }
    }
    let p = &nav.page;
    let _ = writeln!(
        out,
        "\npage: dns {:.1} ms · connect {:.1} ms · tls {:.1} ms · ttfb {:.1} ms · html parsed {:.1} ms · load {:.1} ms",
        p.dns, p.connect, p.tls, p.ttfb, p.dom_content_loaded, p.load
    );
    let _ = writeln!(
        out,
        "      {} requests · {} bytes · {} connection(s) opened · {} reused · {} failed",
        p.requests, p.transfer_bytes, p.connections, p.reused, p.failed
    );
    out
}
