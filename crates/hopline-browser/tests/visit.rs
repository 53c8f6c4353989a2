//! `visit` against real servers on loopback: hopline's own edge serving a page with
//! stylesheets (and an @import), a script, images (src and srcset), an icon and a font;
//! redirects and loops; TLS with a test CA (HTTP/2 by ALPN: one connection) and with a
//! wrong-host certificate; DNS through hopline's authoritative server; a HAR file.

use std::sync::Arc;
use std::time::Duration;

use hopline_browser::{Client, ClientOptions, Force, Navigation, VisitOptions, navigate};
use hopline_edge::Server;

fn site(dir: &std::path::Path) {
    let p = dir.join("public");
    std::fs::create_dir_all(p.join("css")).unwrap();
    std::fs::create_dir_all(p.join("img")).unwrap();
    std::fs::write(
        p.join("index.html"),
        r#"<!doctype html><html><head><link rel="stylesheet" href="/css/site.css"><link rel="icon" href="/favicon.ico"><script src="/app.js" defer></script></head>
<body><h1>shop</h1><img src="/img/a.png" srcset="/img/a2.png 2x"><img src="/img/b.png"></body></html>"#,
    )
    .unwrap();
    std::fs::write(p.join("css/site.css"), "@import \"reset.css\";\nbody{background:url(/img/bg.png)}\n@font-face{font-family:x;src:url(/fonts/x.woff2)}\n".repeat(20)).unwrap();
    std::fs::write(p.join("css/reset.css"), "*{margin:0}\n").unwrap();
    std::fs::write(p.join("app.js"), "console.log('hi');\n".repeat(50)).unwrap();
    std::fs::create_dir_all(p.join("fonts")).unwrap();
    std::fs::write(p.join("fonts/x.woff2"), vec![7u8; 3000]).unwrap();
    for f in ["a.png", "a2.png", "b.png", "bg.png"] {
        std::fs::write(p.join("img").join(f), vec![1u8; 2000]).unwrap();
    }
    std::fs::write(p.join("favicon.ico"), vec![2u8; 300]).unwrap();
}

async fn edge(dir: &std::path::Path, tls: Option<(&str, &str)>) -> (Server, std::net::SocketAddr) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls_line = tls
        .map(|(c, k)| format!("tls = {{ cert = \"{c}\", key = \"{k}\" }}\n"))
        .unwrap_or_default();
    let toml = format!(
        "access_log = \"off\"\n[[site]]\nlisten = [\"127.0.0.1:0\"]\n{tls_line}  [[site.route]]\n  path = \"/\"\n  root = \"public\"\n  [[site.route]]\n  path = \"/img/\"\n  root = \"public\"\n  cache_control = \"max-age=60\"\n  [[site.route]]\n  path = \"/old\"\n  redirect = \"/\"\n  [[site.route]]\n  path = \"/loop-a\"\n  redirect = \"/loop-b\"\n  status = 302\n  [[site.route]]\n  path = \"/loop-b\"\n  redirect = \"/loop-a\"\n  status = 307\n"
    );
    hopline_testkit::edge::start_at(dir, "edge.toml", &toml, hopline_edge::Services::new()).await
}

fn client(
    resolver: hopline_dns::Resolver,
    ca: Option<std::path::PathBuf>,
    force: Force,
) -> Arc<Client> {
    Arc::new(
        Client::new(ClientOptions {
            resolver,
            extra_ca: ca,
            max_per_host: 6,
            force,
            timeout: Duration::from_secs(5),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            cache: None,
            doh: None,
        })
        .unwrap(),
    )
}

fn no_dns() -> hopline_dns::Resolver {
    hopline_dns::Resolver::builder()
        .no_hosts_file()
        .forward(vec!["127.0.0.1:9".parse().unwrap()])
        .build()
        .unwrap()
}

/// The rules of the HAR 1.2 schema (the `har-validator` package's schemas, as Rust):
/// required fields with their types, optional ones strings or absent (never null),
/// ISO 8601 dates, timings numbers ≥ -1.
fn assert_valid_har(har: &serde_json::Value) {
    let log = &har["log"];
    assert!(
        log["version"].is_string()
            && log["creator"]["name"].is_string()
            && log["creator"]["version"].is_string()
    );
    let iso = |v: &serde_json::Value, what: &str| {
        let s = v
            .as_str()
            .unwrap_or_else(|| panic!("{what}: not a string: {v}"));
        assert!(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok(),
            "{what}: not ISO 8601: {s}"
        );
    };
    let pages = log["pages"].as_array().expect("pages");
    for p in pages {
        iso(&p["startedDateTime"], "page startedDateTime");
        assert!(p["id"].is_string() && p["title"].is_string(), "{p}");
        for k in ["onContentLoad", "onLoad"] {
            let t = &p["pageTimings"][k];
            assert!(
                t.is_null() || t.as_f64().is_some_and(|t| t >= -1.0),
                "{k}: {t}"
            );
        }
    }
    for e in log["entries"].as_array().expect("entries") {
        assert!(
            pages.iter().any(|p| p["id"] == e["pageref"]),
            "pageref: {e}"
        );
        iso(&e["startedDateTime"], "entry startedDateTime");
        assert!(e["time"].as_f64().is_some_and(|t| t >= 0.0), "{e}");
        for side in ["request", "response"] {
            let r = &e[side];
            assert!(
                r["httpVersion"].is_string() && r["cookies"].is_array(),
                "{side}: {r}"
            );
            for h in r["headers"].as_array().expect("headers") {
                assert!(h["name"].is_string() && h["value"].is_string(), "{h}");
            }
            assert!(
                r["headersSize"].is_i64() && r["bodySize"].is_i64(),
                "{side}: {r}"
            );
        }
        assert!(e["request"]["method"].is_string() && e["request"]["url"].is_string());
        assert!(e["request"]["queryString"].is_array());
        let resp = &e["response"];
        assert!(
            resp["status"].is_u64()
                && resp["statusText"].is_string()
                && resp["redirectURL"].is_string()
        );
        assert!(resp["content"]["size"].is_i64() && resp["content"]["mimeType"].is_string());
        assert!(e["cache"].is_object());
        for k in [
            "blocked", "dns", "connect", "ssl", "send", "wait", "receive",
        ] {
            let t = &e["timings"][k];
            assert!(t.as_f64().is_some_and(|t| t >= -1.0), "timings.{k}: {t}");
        }
        for k in ["serverIPAddress", "connection", "comment"] {
            let v = e.get(k);
            assert!(
                v.is_none_or(|v| v.is_string()),
                "{k} must be a string or absent: {e}"
            );
        }
    }
}

fn check_phases(nav: &Navigation) {
    for e in &nav.entries {
        let p = &e.phases;
        for v in [
            p.blocked,
            p.dns.unwrap_or(0.0),
            p.connect.unwrap_or(0.0),
            p.tls.unwrap_or(0.0),
            p.send,
            p.wait,
            p.receive,
        ] {
            assert!(v >= 0.0, "negative phase in {e:?}");
        }
        assert!(e.start >= 0.0);
        assert!(
            e.start + p.total() <= nav.page.load + 0.5,
            "entry ends after load: {} + {} > {}",
            e.start,
            p.total(),
            nav.page.load
        );
    }
    assert!(
        nav.page.ttfb <= nav.page.dom_content_loaded
            && nav.page.dom_content_loaded <= nav.page.load + 0.001
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_and_every_subresource_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let (_s, addr) = edge(dir.path(), None).await;
    let c = client(no_dns(), None, Force::Auto);
    let url = url::Url::parse(&format!("http://{addr}/")).unwrap();
    let nav = navigate(c.clone(), url, VisitOptions::default()).await;
    let mut kinds: Vec<(String, String, u16)> = nav
        .entries
        .iter()
        .map(|e| {
            (
                e.url.replace(&format!("http://{addr}"), ""),
                e.kind.clone(),
                e.status,
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("/".into(), "document".into(), 200),
            ("/app.js".into(), "script".into(), 200),
            ("/css/reset.css".into(), "stylesheet".into(), 200),
            ("/css/site.css".into(), "stylesheet".into(), 200),
            ("/favicon.ico".into(), "icon".into(), 200),
            ("/fonts/x.woff2".into(), "font".into(), 200),
            ("/img/a.png".into(), "image".into(), 200),
            ("/img/a2.png".into(), "image".into(), 200),
            ("/img/b.png".into(), "image".into(), 200),
            ("/img/bg.png".into(), "image".into(), 200),
        ]
    );
    assert!(nav.entries.iter().all(|e| e.http_version == "HTTP/1.1"));
    assert!(
        nav.page.connections <= 6,
        "{} connections",
        nav.page.connections
    );
    assert!(
        nav.page.reused > 0,
        "keep-alive connections were not reused"
    );
    let css = nav
        .entries
        .iter()
        .find(|e| e.url.ends_with("site.css"))
        .unwrap();
    assert_eq!(
        css.content_encoding.as_deref(),
        Some("br"),
        "compressed CSS expected"
    );
    assert!(
        css.body_bytes > css.transfer_bytes,
        "decoded size should exceed the wire size"
    );
    let font = nav.entries.iter().find(|e| e.kind == "font").unwrap();
    assert_eq!(
        font.initiator,
        Some(css.id),
        "the font was found in the stylesheet"
    );
    check_phases(&nav);
    // the waterfall and the HAR read the same timeline
    let text = hopline_browser::waterfall::render(&nav, false);
    assert!(
        text.contains("page: dns") && text.contains("/fonts/x.woff2"),
        "{text}"
    );
    let har = hopline_browser::har::har(&nav);
    assert_eq!(har["log"]["version"], "1.2");
    assert_valid_har(&har);
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 10);
    // each request's own start, to the microsecond: not one shared whole millisecond
    let starts: std::collections::HashSet<&str> = entries
        .iter()
        .map(|e| e["startedDateTime"].as_str().unwrap())
        .collect();
    assert!(starts.len() > entries.len() / 2, "{starts:?}");
    assert!(
        starts
            .iter()
            .all(|s| s.len() == "2026-11-29T03:00:00.123456Z".len()),
        "{starts:?}"
    );
    // the HTML waterfall: one row per HAR entry, each row's phase bars adding up to the
    // entry's time (±1 ms), self-contained (no script, nothing fetched)
    let html = hopline_browser::html::render(&nav, Some("the story"));
    assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>"));
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    let rows: Vec<&str> = html.split("<tr class=entry").skip(1).collect();
    assert_eq!(rows.len(), entries.len());
    for (row, e) in rows.iter().zip(entries) {
        let total: f64 = row
            .split("data-ms=\"")
            .skip(1)
            .map(|r| r.split('"').next().unwrap().parse::<f64>().unwrap())
            .sum();
        let har_time = e["time"].as_f64().unwrap();
        assert!(
            (total - har_time).abs() <= 1.0,
            "{total} vs {har_time}: {row}"
        );
        assert!(row.contains("<details>"), "{row}");
    }
    assert!(html.contains("the story"));
    // and as an SVG image: one group per entry, rectangles adding up to its time
    let svg = hopline_browser::html::svg(&nav);
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.ends_with("</svg>")
    );
    let groups: Vec<&str> = svg.split("<g class=\"entry\"").skip(1).collect();
    assert_eq!(groups.len(), entries.len());
    for (g, e) in groups.iter().zip(entries) {
        let total: f64 = g
            .split("data-ms=\"")
            .skip(1)
            .map(|r| r.split('"').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert!((total - e["time"].as_f64().unwrap()).abs() <= 1.0, "{g}");
    }
    // two visits: one HAR with two pages
    let two = hopline_browser::har::har_of(&[nav.clone(), nav.clone()]);
    assert_valid_har(&two);
    assert_eq!(two["log"]["pages"].as_array().unwrap().len(), 2);
    assert_eq!(two["log"]["entries"].as_array().unwrap().len(), 20);
    for e in entries {
        for k in [
            "blocked", "dns", "connect", "ssl", "send", "wait", "receive",
        ] {
            assert!(e["timings"][k].is_number(), "{k} missing: {e}");
        }
        assert!(e["startedDateTime"].as_str().unwrap().contains('T'));
        assert!(
            e["request"]["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["name"] == "traceparent")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_rows_and_loops_stop() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let (_s, addr) = edge(dir.path(), None).await;
    let c = client(no_dns(), None, Force::Auto);
    let nav = navigate(
        c.clone(),
        url::Url::parse(&format!("http://{addr}/old")).unwrap(),
        VisitOptions {
            subresources: false,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(nav.entries.len(), 2);
    assert_eq!(nav.entries[0].status, 301);
    assert_eq!(
        nav.entries[0].redirect_to.as_deref(),
        Some(format!("http://{addr}/").as_str())
    );
    assert_eq!(nav.entries[1].status, 200);
    assert_eq!(nav.final_url, format!("http://{addr}/"));
    let nav = navigate(
        c,
        url::Url::parse(&format!("http://{addr}/loop-a")).unwrap(),
        VisitOptions::default(),
    )
    .await;
    let last = nav.entries.last().unwrap();
    assert!(
        last.error
            .as_deref()
            .unwrap_or("")
            .contains("redirect loop"),
        "{:?}",
        nav.entries
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca_http2_on_one_connection_and_a_wrong_host() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let certs = dir.path().join("certs");
    hopline_edge::tls::ca::issue(&certs, &["shop.test".into()]).unwrap();
    let (_s, addr) = edge(
        dir.path(),
        Some(("certs/shop.test.pem", "certs/shop.test-key.pem")),
    )
    .await;
    // shop.test resolves to 127.0.0.1 through a hosts file
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 shop.test other.test\n").unwrap();
    let resolver = hopline_dns::Resolver::builder()
        .hosts_file(&hosts)
        .forward(vec!["127.0.0.1:9".parse().unwrap()])
        .build()
        .unwrap();
    let c = client(resolver.clone(), Some(certs.join("ca.pem")), Force::Auto);
    let nav = navigate(
        c.clone(),
        url::Url::parse(&format!("https://shop.test:{}/", addr.port())).unwrap(),
        VisitOptions::default(),
    )
    .await;
    assert_eq!(
        nav.page.failed,
        0,
        "{:#?}",
        nav.entries
            .iter()
            .filter_map(|e| e.error.clone())
            .collect::<Vec<_>>()
    );
    assert!(nav.entries.iter().all(|e| e.http_version == "HTTP/2"));
    assert_eq!(
        nav.page.connections, 1,
        "HTTP/2 should multiplex on one connection"
    );
    let doc = &nav.entries[0];
    let tls = doc.tls.as_ref().unwrap();
    assert_eq!(tls.alpn.as_deref(), Some("h2"));
    assert!(tls.version.contains("TLSv1_3"), "{tls:?}");
    assert!(
        tls.subject.contains("shop.test") && tls.issuer.contains("hopline local CA"),
        "{tls:?}"
    );
    // the chain as received: the edge sends the leaf alone, its issuer is the CA the
    // client was given (a root it trusts)
    assert_eq!(tls.chain.len(), 1, "{tls:?}");
    assert_eq!(tls.chain[0].name, "shop.test");
    assert_eq!(tls.chain[0].issuer_name, "hopline local CA");
    assert!(!tls.chain[0].self_signed && !tls.chain[0].ca);
    assert!(hopline_browser::explain::explain(&nav).contains(
        "chain of 1: shop.test ← hopline local CA (not sent: a root this client trusts)"
    ));
    assert_eq!(doc.dns.as_ref().unwrap().answered_by, "hosts_file");
    assert!(doc.phases.tls.unwrap() > 0.0 && doc.phases.connect.unwrap() > 0.0);
    check_phases(&nav);
    // a second client session resumes TLS
    let nav2 = navigate(
        Arc::new(
            Client::new(ClientOptions {
                resolver: resolver.clone(),
                extra_ca: Some(certs.join("ca.pem")),
                max_per_host: 6,
                force: Force::Http1,
                timeout: Duration::from_secs(5),
                trace_id: "1".repeat(32),
                cache: None,
                doh: None,
            })
            .unwrap(),
        ),
        url::Url::parse(&format!("https://shop.test:{}/", addr.port())).unwrap(),
        VisitOptions::default(),
    )
    .await;
    assert_eq!(nav2.entries[0].http_version, "HTTP/1.1");
    // HTTP/1.1 opens several connections to the host: the later ones resume TLS
    let tls_rows: Vec<_> = nav2.entries.iter().filter_map(|e| e.tls.as_ref()).collect();
    assert!(tls_rows.len() >= 2, "expected several HTTP/1.1 connections");
    assert!(!tls_rows[0].resumed);
    assert!(
        tls_rows.iter().skip(1).any(|t| t.resumed),
        "no later connection resumed its TLS session: {tls_rows:?}"
    );
    // a resumed session still names the chain it was made with
    assert!(tls_rows.iter().all(|t| t.chain.len() == 1), "{tls_rows:?}");
    // wrong host: the certificate does not cover other.test
    let nav = navigate(
        c,
        url::Url::parse(&format!("https://other.test:{}/", addr.port())).unwrap(),
        VisitOptions::default(),
    )
    .await;
    let err = nav.entries[0].error.clone().unwrap_or_default();
    assert!(
        err.starts_with("TLS:") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_chain_as_received_in_explain_the_page_and_json() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let certs = dir.path().join("certs");
    let leaf = hopline_edge::tls::ca::issue(&certs, &["www.shop.test".into(), "shop.test".into()])
        .unwrap();
    // the edge sends the whole chain: the leaf, then the CA that signed it
    let full = format!(
        "{}{}",
        std::fs::read_to_string(&leaf.cert).unwrap(),
        std::fs::read_to_string(&leaf.ca.ca_cert).unwrap()
    );
    std::fs::write(certs.join("fullchain.pem"), full).unwrap();
    let (_s, addr) = edge(
        dir.path(),
        Some(("certs/fullchain.pem", "certs/www.shop.test-key.pem")),
    )
    .await;
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 www.shop.test\n").unwrap();
    let resolver = hopline_dns::Resolver::builder()
        .hosts_file(&hosts)
        .forward(vec!["127.0.0.1:9".parse().unwrap()])
        .build()
        .unwrap();
    let c = client(resolver, Some(certs.join("ca.pem")), Force::Auto);
    let nav = navigate(
        c,
        url::Url::parse(&format!("https://www.shop.test:{}/", addr.port())).unwrap(),
        VisitOptions {
            subresources: false,
            ..Default::default()
        },
    )
    .await;
    let doc = &nav.entries[0];
    assert!(doc.error.is_none(), "{:?}", doc.error);
    let tls = doc.tls.as_ref().unwrap();
    let chain = &tls.chain;
    assert_eq!(chain.len(), 2, "{chain:?}");
    // the leaf: for both names, issued by the CA, backdated an hour, 825 days
    assert_eq!(chain[0].name, "www.shop.test");
    assert_eq!(chain[0].names, vec!["www.shop.test", "shop.test"]);
    assert_eq!(chain[0].issuer_name, "hopline local CA");
    assert_eq!(chain[0].issuer, chain[1].subject);
    assert!(!chain[0].ca && !chain[0].self_signed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (chain[0].not_before_unix - (now - 3600)).abs() < 120,
        "{:?}",
        chain[0]
    );
    assert_eq!(
        chain[0].not_after_unix - chain[0].not_before_unix,
        825 * 86_400 + 3600,
        "{:?}",
        chain[0]
    );
    // the CA: a root, its own issuer
    assert_eq!(chain[1].name, "hopline local CA");
    assert!(chain[1].ca && chain[1].self_signed);
    assert_eq!(tls.subject, chain[0].subject);
    assert_eq!(tls.issuer, chain[0].issuer);

    // --explain: one step says who issued it, when, for how long, and the chain
    let issued = &chain[0].not_before; // 2026-…T10:29:11Z
    let time_of_day = issued.split('T').nth(1).unwrap().trim_end_matches('Z');
    let day = &issued[..10];
    let started_day = hopline_browser::har::iso_us(nav.started_unix_us)[..10].to_string();
    let when = if started_day == day {
        format!("at {time_of_day} UTC")
    } else {
        // the visit ran just after midnight UTC: the certificate is from the day before
        format!("on {day} at {time_of_day} UTC")
    };
    let text = hopline_browser::explain::explain(&nav);
    let step = format!(
        "the certificate for www.shop.test, shop.test was issued by hopline local CA {when}, valid 825 days, chain of 2: www.shop.test ← hopline local CA"
    );
    assert!(text.contains(&step), "{step}\nnot in:\n{text}");
    // right after the TLS step
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.contains(&step)).unwrap();
    assert!(lines[at - 1].contains("handshake in"), "{text}");

    // the terminal waterfall says it under the tls line
    let fall = hopline_browser::waterfall::render(&nav, false);
    assert!(
        fall.contains(&format!(
            "chain: chain of 2: www.shop.test ← hopline local CA · leaf valid {} → {}",
            chain[0].not_before, chain[0].not_after
        )),
        "{fall}"
    );

    // --html: the document's details list each certificate, subject → issuer, validity
    let html = hopline_browser::html::render(&nav, Some(&text));
    let pre = html
        .split("<pre class=chain data-certs=2>")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("no chain in the page: {html}"));
    assert!(
        pre.starts_with("certificate chain of 2: www.shop.test ← hopline local CA"),
        "{pre}"
    );
    for (i, c) in chain.iter().enumerate() {
        let line = format!("#{i} subject=\"{}\" → issuer=\"{}\"", c.subject, c.issuer);
        assert!(pre.contains(&line), "{line} not in {pre}");
        assert!(
            pre.contains(&format!("valid {} → {}", c.not_before, c.not_after)),
            "{pre}"
        );
    }
    assert!(
        pre.contains("for www.shop.test, shop.test") && pre.contains("(self-signed: a root)"),
        "{pre}"
    );
    assert!(html.contains(&step), "the journey in the page");

    // --json: the navigation as serialized carries the chain
    let json = serde_json::to_value(&nav).unwrap();
    let j = &json["entries"][0]["tls"]["chain"];
    assert_eq!(j.as_array().map(Vec::len), Some(2), "{j}");
    assert_eq!(j[0]["name"], "www.shop.test");
    assert_eq!(j[0]["issuer_name"], "hopline local CA");
    assert_eq!(j[0]["not_before"], chain[0].not_before.as_str());
    assert_eq!(j[0]["not_after_unix"], chain[0].not_after_unix);
    assert_eq!(j[1]["self_signed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_through_hopline_dns_and_failures_name_their_hop() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let (_s, addr) = edge(dir.path(), None).await;
    std::fs::write(dir.path().join("shop.zone"), "$ORIGIN shop.test.\n$TTL 60\n@ IN SOA ns admin 1 3600 600 86400 30\n@ IN NS ns\nns IN A 127.0.0.1\nwww IN A 127.0.0.1\n").unwrap();
    let dns_cfg = hopline_dns::config::DnsConfig {
        authoritative: vec![hopline_dns::config::AuthoritativeService {
            listen: "127.0.0.1:0".into(),
            zones: vec!["shop.zone".into()],
            transfer: vec![],
            notify: vec![],
            rrl: Default::default(),
        }],
        ..Default::default()
    };
    let dns = hopline_dns::service::DnsServices::start(&dns_cfg, dir.path())
        .await
        .unwrap();
    let dns_addr = dns.bound()[0].1;
    let resolver = hopline_dns::Resolver::builder()
        .no_hosts_file()
        .forward(vec![dns_addr])
        .build()
        .unwrap();
    let c = client(resolver, None, Force::Auto);
    let url = url::Url::parse(&format!("http://www.shop.test:{}/", addr.port())).unwrap();
    let nav = navigate(
        c.clone(),
        url.clone(),
        VisitOptions {
            subresources: false,
            ..Default::default()
        },
    )
    .await;
    let d = nav.entries[0].dns.as_ref().unwrap();
    assert_eq!(d.answered_by, format!("resolver {dns_addr}"));
    assert_eq!(d.addrs, vec!["127.0.0.1".to_string()]);
    assert_eq!(nav.entries[0].status, 200);
    let nav = navigate(
        c.clone(),
        url::Url::parse(&format!("http://nope.shop.test:{}/", addr.port())).unwrap(),
        VisitOptions::default(),
    )
    .await;
    assert!(
        nav.entries[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("NXDOMAIN"),
        "{:?}",
        nav.entries[0].error
    );
    // its HAR is valid: the failed lookup's time is its dns phase, the page never loaded
    let har = hopline_browser::har::har(&nav);
    assert_valid_har(&har);
    let e = &har["log"]["entries"][0];
    assert!(e["timings"]["dns"].as_f64().unwrap() >= 0.0, "{e}");
    assert!(
        e.get("serverIPAddress").is_none() && e.get("connection").is_none(),
        "{e}"
    );
    assert_eq!(har["log"]["pages"][0]["pageTimings"]["onLoad"], -1.0);
    // connection refused is named as a connect failure
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nav = navigate(
        c,
        url::Url::parse(&format!("http://{dead}/")).unwrap(),
        VisitOptions::default(),
    )
    .await;
    assert!(
        nav.entries[0]
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("connect:"),
        "{:?}",
        nav.entries[0].error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_agree_with_curl() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var("CI").is_err(), "curl is required in CI");
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let (_s, addr) = edge(dir.path(), None).await;
    let url = format!("http://{addr}/app.js");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{time_connect} %{time_starttransfer} %{time_total} %{http_code}",
                &url,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(v[3], 200.0);
    let c = client(no_dns(), None, Force::Http1);
    let nav = navigate(
        c,
        url::Url::parse(&format!("http://{addr}/app.js")).unwrap(),
        VisitOptions {
            subresources: false,
            ..Default::default()
        },
    )
    .await;
    let e = &nav.entries[0];
    // on loopback both see sub-10 ms connects and first bytes
    assert!(
        v[0] * 1000.0 < 10.0 && e.phases.connect.unwrap() < 10.0,
        "curl {text} vs {:?}",
        e.phases
    );
    assert!(
        v[1] * 1000.0 < 50.0 && e.phases.wait < 50.0,
        "curl {text} vs {:?}",
        e.phases
    );
    assert!(e.phases.connect.unwrap() <= e.phases.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_cache_serves_fresh_entries_and_revalidates_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let (_s, addr) = edge(dir.path(), None).await;
    let cache_dir = dir.path().join("browser-cache");
    let mk = || {
        Arc::new(
            Client::new(ClientOptions {
                resolver: no_dns(),
                extra_ca: None,
                max_per_host: 6,
                force: Force::Auto,
                timeout: Duration::from_secs(5),
                trace_id: "2".repeat(32),
                cache: Some(hopline_browser::cache::DiskCache::open(&cache_dir).unwrap()),
                doh: None,
            })
            .unwrap(),
        )
    };
    let url = url::Url::parse(&format!("http://{addr}/")).unwrap();
    let first = navigate(mk(), url.clone(), VisitOptions::default()).await;
    assert!(first.entries.iter().all(|e| e.from_cache.is_none()));
    // a second, separate visit: images (max-age=60) come from the cache without the
    // network; the document (no lifetime, a validator) is revalidated: 304
    let second = navigate(mk(), url, VisitOptions::default()).await;
    for e in &second.entries {
        if e.url.contains("/img/") {
            assert_eq!(e.from_cache.as_deref(), Some("hit"), "{}", e.url);
            assert!(
                e.connection.is_none(),
                "a fresh hit must not touch the network"
            );
        }
    }
    let doc = &second.entries[0];
    assert_eq!(doc.from_cache.as_deref(), Some("revalidated"), "{doc:?}");
    assert_eq!(doc.status, 304);
    assert!(
        doc.request_headers
            .iter()
            .any(|(k, _)| k == "if-none-match")
    );
    // the page is complete: the stylesheet found in the cached HTML was loaded too
    assert!(second.entries.iter().any(|e| e.url.ends_with("site.css")));
    assert_eq!(second.page.failed, 0);
}

/// An edge serving the test site over HTTPS, `site_extra` added to the site (e.g.
/// `http3 = true`).
async fn tls_edge(dir: &std::path::Path, site_extra: &str) -> (Server, std::net::SocketAddr) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = dir.join("certs");
    if !certs.join("ca.pem").exists() {
        hopline_edge::tls::ca::issue(&certs, &["shop.test".into()]).unwrap();
    }
    let toml = format!(
        "access_log = \"off\"\n[[site]]\nlisten = [\"127.0.0.1:0\"]\ntls = {{ cert = \"certs/shop.test.pem\", key = \"certs/shop.test-key.pem\" }}\n{site_extra}\n  [[site.route]]\n  path = \"/\"\n  root = \"public\"\n"
    );
    hopline_testkit::edge::start_at(dir, "edge-h3.toml", &toml, hopline_edge::Services::new()).await
}

fn shop_resolver(dir: &std::path::Path) -> hopline_dns::Resolver {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 shop.test\n").unwrap();
    hopline_dns::Resolver::builder()
        .hosts_file(&hosts)
        .forward(vec!["127.0.0.1:9".parse().unwrap()])
        .build()
        .unwrap()
}

fn cached_client(
    dir: &std::path::Path,
    cache: &std::path::Path,
    force: Force,
    timeout: Duration,
) -> Arc<Client> {
    Arc::new(
        Client::new(ClientOptions {
            resolver: shop_resolver(dir),
            extra_ca: Some(dir.join("certs/ca.pem")),
            max_per_host: 6,
            force,
            timeout,
            trace_id: "2".repeat(32),
            // (no stored responses to get in the way: every request goes out)
            cache: Some(hopline_browser::cache::DiskCache::open(cache).unwrap()),
            doh: None,
        })
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_after_alt_svc_when_forced_and_a_fall_back_when_udp_gets_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let (_s, addr) = tls_edge(dir.path(), "http3 = true").await;
    let url = url::Url::parse(&format!("https://shop.test:{}/", addr.port())).unwrap();
    let cache = dir.path().join("cache-a");
    // first visit: TCP (the browser does not know yet), the Alt-Svc remembered
    let nav = navigate(
        cached_client(dir.path(), &cache, Force::Auto, Duration::from_secs(5)),
        url.clone(),
        VisitOptions::default(),
    )
    .await;
    assert_eq!(nav.page.failed, 0);
    assert_eq!(nav.entries[0].http_version, "HTTP/2");
    let remembered = hopline_browser::cache::DiskCache::open(&cache)
        .unwrap()
        .alt_svc();
    assert_eq!(
        remembered
            .get(&format!("https://shop.test:{}", addr.port()))
            .map(|e| e.0),
        Some(addr.port()),
        "{remembered:?}"
    );
    // the next visit (a new process, the same private cache): one QUIC connection
    let nav = navigate(
        cached_client(dir.path(), &cache, Force::Auto, Duration::from_secs(5)),
        url.clone(),
        VisitOptions::default(),
    )
    .await;
    assert_eq!(
        nav.page.failed,
        0,
        "{:?}",
        nav.entries
            .iter()
            .filter_map(|e| e.error.clone())
            .collect::<Vec<_>>()
    );
    assert!(
        nav.entries.iter().all(|e| e.http_version == "HTTP/3"),
        "{:?}",
        nav.entries
            .iter()
            .map(|e| &e.http_version)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        nav.page.connections, 1,
        "HTTP/3 multiplexes on one connection"
    );
    let doc = &nav.entries[0];
    let tls = doc.tls.as_ref().unwrap();
    assert_eq!(tls.alpn.as_deref(), Some("h3"));
    assert_eq!(tls.chain[0].name, "shop.test");
    // one QUIC handshake: a connect phase, no separate TLS phase
    assert!(doc.phases.connect.unwrap() > 0.0);
    assert!(doc.phases.tls.is_none());
    check_phases(&nav);
    let har = hopline_browser::har::har(&nav);
    assert_eq!(har["log"]["entries"][0]["response"]["httpVersion"], "h3");
    assert!(hopline_browser::explain::explain(&nav).contains("over QUIC"));

    // forced: HTTP/3 from the first request, no cache needed
    let nav = navigate(
        client(
            shop_resolver(dir.path()),
            Some(dir.path().join("certs/ca.pem")),
            Force::Http3,
        ),
        url.clone(),
        VisitOptions::default(),
    )
    .await;
    assert_eq!(nav.page.failed, 0);
    assert_eq!(nav.entries[0].http_version, "HTTP/3");

    // an origin advertising HTTP/3 where no QUIC server answers: TCP, and said so
    let dir2 = tempfile::tempdir().unwrap();
    site(dir2.path());
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let quiet_port = silent.local_addr().unwrap().port();
    let (_s2, addr2) = tls_edge(
        dir2.path(),
        &format!("  [[site.route]]\n  path = \"/x\"\n  respond = {{ body = \"x\" }}\n  headers = {{ \"alt-svc\" = \"h3=\\\":{quiet_port}\\\"; ma=60\" }}\n"),
    )
    .await;
    let cache2 = dir2.path().join("cache");
    let base = format!("https://shop.test:{}", addr2.port());
    let c = cached_client(dir2.path(), &cache2, Force::Auto, Duration::from_secs(1));
    let nav = navigate(
        c,
        url::Url::parse(&format!("{base}/x")).unwrap(),
        VisitOptions::default(),
    )
    .await;
    assert_eq!(nav.entries[0].http_version, "HTTP/2");
    let nav = navigate(
        cached_client(dir2.path(), &cache2, Force::Auto, Duration::from_secs(1)),
        url::Url::parse(&format!("{base}/x")).unwrap(),
        VisitOptions::default(),
    )
    .await;
    let doc = &nav.entries[0];
    assert_eq!(doc.error, None);
    assert_eq!(doc.http_version, "HTTP/2", "fell back to TCP");
    let note = doc.note.clone().unwrap_or_default();
    assert!(
        note.contains("HTTP/3") && note.contains("fell back to TCP"),
        "{note}"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_from_debians_caddy() {
    if !hopline_testkit::peer_installed("caddy", "version", "caddy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let certs = dir.path().join("certs");
    hopline_edge::tls::ca::issue(&certs, &["shop.test".into()]).unwrap();
    let (http, https) = (hopline_testkit::free_port(), hopline_testkit::free_port());
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("Caddyfile"),
        format!(
            "{{\n  admin off\n  auto_https disable_redirects\n  skip_install_trust\n  http_port {http}\n  https_port {https}\n  servers {{\n    protocols h1 h2 h3\n  }}\n}}\n\
             https://shop.test:{https} {{\n  tls {d}/certs/shop.test.pem {d}/certs/shop.test-key.pem\n  root * {d}/public\n  file_server\n}}\n"
        ),
    )
    .unwrap();
    let _caddy = hopline_testkit::Proc(
        std::process::Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.path().join("Caddyfile"))
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        hopline_testkit::wait_for_port(https, Duration::from_secs(10)),
        "caddy did not listen on {https}"
    );
    let url = url::Url::parse(&format!("https://shop.test:{https}/")).unwrap();
    // Caddy's QUIC listener comes up beside its TCP one: a few tries
    let mut nav = None;
    for _ in 0..20 {
        let n = navigate(
            client(
                shop_resolver(dir.path()),
                Some(certs.join("ca.pem")),
                Force::Http3,
            ),
            url.clone(),
            VisitOptions::default(),
        )
        .await;
        if n.page.failed == 0 {
            nav = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let nav = nav.expect("a page load over HTTP/3 from caddy");
    assert!(
        nav.entries.iter().all(|e| e.http_version == "HTTP/3"),
        "{:?}",
        nav.entries
            .iter()
            .map(|e| &e.http_version)
            .collect::<Vec<_>>()
    );
    assert_eq!(nav.entries[0].status, 200);
    assert!(nav.entries.len() > 5, "the page's subresources too");
    assert_eq!(nav.page.connections, 1);
}
