//! The waterfall as one self-contained HTML file (`hopline visit --html FILE`): a row
//! per request with its phases as bars on a shared time axis in the colours devtools use,
//! the server-side hops from `Server-Timing` drawn inside the wait bar, the
//! DOMContentLoaded and load lines, and each request's details (headers, DNS, TLS with
//! the certificate chain as received, Cache-Status) in a `<details>` element. Plain HTML
//! and CSS: no script, no file fetched, readable printed. Every phase span carries its
//! duration (`data-ms`), so a test can check the picture against the timeline.

use std::fmt::Write;

use crate::timeline::{Entry, Navigation};

/// Escape text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222}\
h1{font-size:16px;margin:0 0 4px}p.sum{margin:2px 0 12px;color:#555}\
table{border-collapse:collapse;width:100%}th,td{padding:2px 6px;text-align:left;vertical-align:top;white-space:nowrap}\
th{border-bottom:1px solid #ccc;font-weight:600}td.num{text-align:right}tr.entry:nth-child(even){background:#f7f7f7}\
td.tl{width:50%;position:relative}div.bar{position:relative;height:14px;margin-top:2px}\
div.bar span{position:absolute;top:0;height:14px;min-width:1px}\
.blocked{background:#bdbdbd}.dns{background:#1f9e89}.connect{background:#f5a623}.tls{background:#8e44ad}\
.send{background:#2e86de}.wait{background:#27ae60}.receive{background:#3498db}\
.upstream{background:#7dcea0}.origin{background:#145a32}\
i.dcl,i.load{position:absolute;top:0;bottom:0;width:1px}i.dcl{background:#2e86de}i.load{background:#c0392b}\
details{white-space:normal;color:#444}details pre{margin:2px 0;font-size:12px}\
.legend span{display:inline-block;width:10px;height:10px;margin:0 3px 0 10px;vertical-align:middle}\
.err{color:#c0392b}div.axis{position:relative;height:14px;font-weight:400;font-size:10px;color:#777}\
div.axis span{position:absolute;top:0;border-left:1px solid #bbb;padding-left:2px}.init{font-size:11px;color:#777}pre.explain{white-space:pre-wrap;background:#f7f7f7;padding:8px}";

/// The phases of an entry: (class, label, ms).
fn phases(e: &Entry) -> [(&'static str, &'static str, f64); 7] {
    let p = &e.phases;
    [
        ("blocked", "blocked", p.blocked),
        ("dns", "DNS", p.dns.unwrap_or(0.0)),
        ("connect", "connect", p.connect.unwrap_or(0.0)),
        ("tls", "TLS", p.tls.unwrap_or(0.0)),
        ("send", "send", p.send),
        ("wait", "wait", p.wait),
        ("receive", "receive", p.receive),
    ]
}

/// Render the page load; `explain` is the story told beside the picture.
pub fn render(nav: &Navigation, explain: Option<&str>) -> String {
    let total = nav
        .entries
        .iter()
        .map(|e| e.start + e.phases.total())
        .fold(nav.page.load, f64::max)
        .max(0.001);
    let pct = |ms: f64| ms / total * 100.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=en><meta charset=utf-8><title>hopline visit {}</title><style>{STYLE}</style><body>",
        esc(&nav.url)
    );
    let _ = write!(out, "<h1>{}</h1>", esc(&nav.url));
    if nav.final_url != nav.url {
        let _ = write!(out, "<p>redirected to {}</p>", esc(&nav.final_url));
    }
    let p = &nav.page;
    let failed = nav
        .entries
        .iter()
        .filter(|e| e.error.is_some() || e.status >= 400)
        .count();
    let edge_hits = nav.entries.iter().filter(|e| e.edge_hit()).count();
    let browser_hits = nav
        .entries
        .iter()
        .filter(|e| e.from_cache.is_some())
        .count();
    let _ = write!(
        out,
        "<p class=sum>started {} · {} requests · {} bytes · {} connection(s) opened · {} reused · {edge_hits} edge cache hit(s) · {browser_hits} from the browser cache · {failed} failed · DNS {:.1} ms · connect {:.1} ms · TLS {:.1} ms · TTFB {:.1} ms · DOMContentLoaded {:.1} ms · load {:.1} ms</p>",
        esc(&nav.started),
        p.requests,
        p.transfer_bytes,
        p.connections,
        p.reused,
        p.dns,
        p.connect,
        p.tls,
        p.ttfb,
        p.dom_content_loaded,
        p.load
    );
    out.push_str("<p class=legend>");
    for (class, label) in [
        ("blocked", "blocked"),
        ("dns", "DNS"),
        ("connect", "connect"),
        ("tls", "TLS"),
        ("send", "send"),
        ("wait", "wait (the edge)"),
        ("upstream", "waiting on its upstream"),
        ("origin", "the origin behind it"),
        ("receive", "receive"),
    ] {
        let _ = write!(out, "<span class={class}></span>{label}");
    }
    out.push_str(" <span class=dcl style=\"background:#2e86de\"></span>DOMContentLoaded <span style=\"background:#c0392b\"></span>load</p>");
    out.push_str("<table><thead><tr><th>#</th><th>status</th><th>kind</th><th>proto</th><th>bytes</th><th>ms</th><th class=tl>timeline<div class=axis>");
    // the time axis: a tick every 1, 2 or 5 × 10^k ms, at most about eight of them
    let step = [1.0, 2.0, 5.0]
        .iter()
        .flat_map(|m| (-2..6).map(move |k| m * 10f64.powi(k)))
        .filter(|s| total / s <= 8.0)
        .fold(f64::INFINITY, f64::min);
    let mut t = 0.0;
    while t <= total && step.is_finite() {
        let _ = write!(
            out,
            "<span style=\"left:{:.3}%\">{}</span>",
            pct(t),
            if step < 1.0 {
                format!("{t:.1} ms")
            } else {
                format!("{t:.0} ms")
            }
        );
        t += step;
    }
    out.push_str("</div></th><th>url</th></tr></thead><tbody>");
    for e in &nav.entries {
        row(&mut out, e, &nav.entries, pct);
    }
    out.push_str("</tbody></table>");
    if let Some(text) = explain {
        let _ = write!(
            out,
            "<h1>the journey</h1><pre class=explain>{}</pre>",
            esc(text)
        );
    }
    let _ = write!(
        out,
        "<style>i.dcl{{left:{:.3}%}}i.load{{left:{:.3}%}}</style></body></html>",
        pct(p.dom_content_loaded).min(100.0),
        pct(p.load).min(100.0)
    );
    out
}

fn row(out: &mut String, e: &Entry, all: &[Entry], pct: impl Fn(f64) -> f64) {
    let status = if e.error.is_some() {
        "ERR".to_string()
    } else {
        e.status.to_string()
    };
    let _ = write!(
        out,
        "<tr class=entry data-id={} data-total-ms=\"{:.3}\"><td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{:.1}</td><td class=tl><div class=bar>",
        e.id,
        e.phases.total(),
        e.id,
        esc(&e.kind),
        esc(&e.http_version.replace("HTTP/", "h")),
        e.transfer_bytes,
        e.phases.total()
    );
    let mut at = e.start;
    for (class, label, ms) in phases(e) {
        if ms > 0.0 {
            let _ = write!(
                out,
                "<span class={class} data-phase={class} data-ms=\"{ms:.3}\" style=\"left:{:.3}%;width:{:.3}%\" title=\"{label} {ms:.2} ms\"></span>",
                pct(at),
                pct(ms)
            );
            if class == "wait" {
                wait_inside(out, e, at, ms, &pct);
            }
        }
        at += ms;
    }
    out.push_str("<i class=dcl></i><i class=load></i></div></td>");
    let _ = write!(out, "<td>{}", esc(&e.url));
    // the initiator chain: which document / stylesheet / script found this URL
    let mut chain = Vec::new();
    let mut by = e.initiator;
    while let Some(i) = by {
        let Some(p) = all.iter().find(|x| x.id == i) else {
            break;
        };
        if chain.len() > 8 || p.id == e.id {
            break;
        }
        chain.push(format!("#{} {}", p.id, esc(&p.kind)));
        by = p.initiator;
    }
    if !chain.is_empty() {
        let _ = write!(out, "<div class=init>found by {}</div>", chain.join(" ← "));
    }
    if let Some(err) = &e.error {
        let _ = write!(out, "<div class=err>✗ {}</div>", esc(err));
    }
    details(out, e);
    out.push_str("</td></tr>");
}

/// The hops inside the wait bar, from the edge's `Server-Timing`: the share the edge
/// waited on its upstream, and the innermost hop's (not for a cache hit: stored timings).
fn wait_inside(out: &mut String, e: &Entry, at: f64, wait: f64, pct: &impl Fn(f64) -> f64) {
    let Some((outer, inner)) = e.upstream_shares() else {
        return;
    };
    // drawn at the end of the wait: what is behind the edge answers last
    let up_start = at + wait - outer;
    let _ = write!(
        out,
        "<span class=upstream style=\"left:{:.3}%;width:{:.3}%\" title=\"waiting on the upstream {outer:.2} ms\"></span>",
        pct(up_start),
        pct(outer - inner)
    );
    if inner > 0.0 {
        let _ = write!(
            out,
            "<span class=origin style=\"left:{:.3}%;width:{:.3}%\" title=\"the origin {inner:.2} ms\"></span>",
            pct(up_start + outer - inner),
            pct(inner)
        );
    }
}

fn details(out: &mut String, e: &Entry) {
    out.push_str("<details><summary>details</summary>");
    if let Some(d) = &e.dns {
        let _ = write!(
            out,
            "<pre>DNS: {} answered {} (ttl {} s, {} step(s), DNSSEC {})</pre>",
            esc(&d.answered_by),
            esc(&d.addrs.join(", ")),
            d.ttl,
            d.steps,
            d.dnssec
        );
    }
    if let Some(t) = &e.tls {
        let _ = write!(
            out,
            "<pre>TLS: {} {} alpn={} {}subject=\"{}\" issuer=\"{}\"</pre>",
            esc(&t.version),
            esc(&t.cipher),
            esc(t.alpn.as_deref().unwrap_or("-")),
            if t.resumed { "resumed " } else { "" },
            esc(&t.subject),
            esc(&t.issuer)
        );
        if !t.chain.is_empty() {
            // the chain as received, leaf first: each certificate's subject → issuer and
            // validity
            let _ = write!(
                out,
                "<pre class=chain data-certs={}>certificate {}",
                t.chain.len(),
                esc(&crate::certificate::summary(&t.chain))
            );
            for (i, c) in t.chain.iter().enumerate() {
                let _ = write!(
                    out,
                    "\n  #{i} subject=\"{}\" → issuer=\"{}\"\n     valid {} → {} ({}){}{}",
                    esc(&c.subject),
                    esc(&c.issuer),
                    esc(&c.not_before),
                    esc(&c.not_after),
                    esc(&crate::certificate::lifetime(
                        c.not_after_unix - c.not_before_unix
                    )),
                    if c.names.is_empty() {
                        String::new()
                    } else {
                        format!(" for {}", esc(&c.names.join(", ")))
                    },
                    if c.self_signed {
                        " (self-signed: a root)"
                    } else {
                        ""
                    }
                );
            }
            out.push_str("</pre>");
        }
    }
    let conn = match (e.connection, e.reused) {
        (Some(c), true) => format!("connection {c} (reused)"),
        (Some(c), false) => format!("connection {c} (new)"),
        (None, _) => "no connection (from the browser cache, or failed before one)".into(),
    };
    let _ = write!(out, "<pre>{}</pre>", esc(&conn));
    if let Some(cs) = &e.cache_status {
        let _ = write!(out, "<pre>Cache-Status: {}</pre>", esc(cs));
    }
    for st in &e.server_timing {
        let _ = write!(
            out,
            "<pre>Server-Timing: {}{}{}</pre>",
            esc(&st.name),
            st.dur.map(|d| format!(" {d:.2} ms")).unwrap_or_default(),
            st.desc
                .as_ref()
                .map(|d| format!(" — {}", esc(d)))
                .unwrap_or_default()
        );
    }
    let headers = |h: &[(String, String)]| {
        h.iter()
            .map(|(n, v)| format!("{}: {}", esc(n), esc(v)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let _ = write!(
        out,
        "<pre>{} {}\n{}</pre><pre>{}\n{}</pre></details>",
        esc(&e.method),
        esc(&e.url),
        headers(&e.request_headers),
        e.status,
        headers(&e.response_headers)
    );
}

/// The waterfall as one SVG image (`hopline visit --svg FILE`): a row per request (its
/// number, status and URL) and its phases as rectangles on the shared time axis, with the
/// DOMContentLoaded and load lines. Each rectangle carries its duration (`data-ms`).
pub fn svg(nav: &Navigation) -> String {
    const ROW: f64 = 18.0;
    const LABEL: f64 = 420.0;
    const BARS: f64 = 560.0;
    let total = nav
        .entries
        .iter()
        .map(|e| e.start + e.phases.total())
        .fold(nav.page.load, f64::max)
        .max(0.001);
    let x = |ms: f64| LABEL + ms / total * BARS;
    let height = ROW * (nav.entries.len() as f64 + 2.0);
    let width = LABEL + BARS + 10.0;
    let colour = |class: &str| match class {
        "blocked" => "#bdbdbd",
        "dns" => "#1f9e89",
        "connect" => "#f5a623",
        "tls" => "#8e44ad",
        "send" => "#2e86de",
        "wait" => "#27ae60",
        _ => "#3498db",
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"11\"><title>{}</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>",
        esc(&nav.url)
    );
    let _ = write!(
        out,
        "<text x=\"4\" y=\"13\">{} · load {:.1} ms</text>",
        esc(&nav.url),
        nav.page.load
    );
    for (i, e) in nav.entries.iter().enumerate() {
        let y = ROW * (i as f64 + 1.0);
        let status = if e.error.is_some() {
            "ERR".to_string()
        } else {
            e.status.to_string()
        };
        let mut url = e.url.clone();
        if url.chars().count() > 60 {
            url = format!("{}…", url.chars().take(59).collect::<String>());
        }
        let _ = write!(
            out,
            "<g class=\"entry\" data-total-ms=\"{:.3}\"><text x=\"4\" y=\"{:.1}\">{} {status} {}</text>",
            e.phases.total(),
            y + 13.0,
            e.id,
            esc(&url)
        );
        let mut at = e.start;
        for (class, label, ms) in phases(e) {
            if ms > 0.0 {
                let _ = write!(
                    out,
                    "<rect data-phase=\"{class}\" data-ms=\"{ms:.3}\" x=\"{:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"12\" fill=\"{}\"><title>{label} {ms:.2} ms</title></rect>",
                    x(at),
                    y + 3.0,
                    (x(at + ms) - x(at)).max(0.5),
                    colour(class)
                );
            }
            at += ms;
        }
        out.push_str("</g>");
    }
    for (ms, c) in [
        (nav.page.dom_content_loaded, "#2e86de"),
        (nav.page.load, "#c0392b"),
    ] {
        let _ = write!(
            out,
            "<line x1=\"{0:.2}\" x2=\"{0:.2}\" y1=\"{1:.0}\" y2=\"{2:.0}\" stroke=\"{c}\"/>",
            x(ms.min(total)),
            ROW,
            height
        );
    }
    out.push_str("</svg>");
    out
}
