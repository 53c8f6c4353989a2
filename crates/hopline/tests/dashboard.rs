//! The pictures, in a real browser (Debian's headless `chromium`, driven over the
//! DevTools protocol): the admin listener's live dashboard of a running `hopline up`
//! (numbers move under load, an origin removed by SIGHUP turns "down" within 2 s,
//! clicking a traced request draws its hops, the topology fits a 1400 px window and wraps
//! narrower, the resolver's box shows the pool's answer it holds with its TTL counting
//! down, each PoP's box shows its ACME certificate: issuer, challenge, when, expiry) and
//! the `visit --html` waterfall (one bar per HAR entry, its phases adding up to
//! the entry's time). Screenshots go to `target/screenshots/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use hopline_testkit::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

/// A shift of the built-in topology's ports whose every address is free now.
/// Kills the `up` process when the test ends, however it ends.
struct Up {
    child: std::process::Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Plain HTTP/1.1 keep-alive GETs to `addr` until `stop`.
fn load(
    addr: SocketAddr,
    path: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut done = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut s) = TcpStream::connect(addr) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = vec![0u8; 65536];
            for _ in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n");
                if s.write_all(req.as_bytes()).is_err() {
                    break;
                }
                // the answers are small: one read has the whole of it
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => done += 1,
                    _ => break,
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        done
    })
}

fn screenshots() -> std::path::PathBuf {
    // target/screenshots, beside the test binaries
    let exe = std::path::PathBuf::from(BIN);
    exe.parent()
        .and_then(|d| d.parent())
        .map(|t| t.join("screenshots"))
        .unwrap_or_else(|| std::env::temp_dir().join("hopline-screenshots"))
}

#[test]
fn the_dashboard_and_the_waterfall_in_a_real_browser() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let off = hopline_testkit::free_up_offset(40000, 60, &["127.0.0.2", "127.0.0.3"]);
    let printed = Command::new(BIN)
        .args([
            "up",
            "--print-config",
            "--port-offset",
            &off.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    // health checks every 300 ms, so a removed origin is down well within the 2 s asked
    let config = String::from_utf8(printed.stdout)
        .unwrap()
        .replace("interval_ms = 1000", "interval_ms = 300");
    assert!(config.contains("interval_ms = 300"));
    let file = dir.path().join("topology.toml");
    std::fs::write(&file, &config).unwrap();

    let mut child = Command::new(BIN)
        .args(["up", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let up = Up { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // `up` prints the dashboard's URL, then serves once its first visit is done
    let mut url = None;
    let mut visit_page = None;
    let until = Instant::now() + Duration::from_secs(60);
    while url.is_none() || visit_page.is_none() {
        let line = rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .expect("up prints the dashboard URL and the visit's page");
        if line.starts_with("dashboard") {
            url = line.split_whitespace().nth(1).map(str::to_string);
        }
        if let Some(p) = line.strip_prefix("the waterfall as a page: ") {
            visit_page = Some(p.trim().to_string());
        }
    }
    let url = url.unwrap();
    assert_eq!(url, format!("http://127.0.0.1:{}/", 9900 + off));

    // ---- the live dashboard ----
    browser.goto(&url);
    // the topology: 2 DNS boxes, the CA's front and 2 PoPs, the balancer, 3 origins, 3
    // services (the CA, notify, realtime)
    browser.wait_for(
        "document.querySelectorAll('.node').length === 12",
        Duration::from_secs(10),
    );
    let kinds =
        browser.eval("[...document.querySelectorAll('.node')].map(n => n.dataset.role).join(' ')");
    assert_eq!(
        kinds, "resolver authoritative ca pop pop balancer origin origin origin ca notify realtime",
        "columns in order DNS → PoPs → balancer → origins → services"
    );
    // each PoP's box shows the certificate it serves: obtained by ACME (TLS-ALPN-01) from
    // the topology's CA at start, when, and when it expires and renews; the CA's own front
    // (a file certificate) and the plain sites show none
    let certs = browser.wait_for(
        "(() => { const c = [...document.querySelectorAll('.node[data-role=pop] .cert')];
          return c.length === 2 && c.map(e => ({ state: e.dataset.state, issuer: e.querySelector('.issuer').textContent,
            how: e.querySelector('.how').textContent, issued: e.querySelector('.issued').textContent,
            expires: e.querySelector('.expires').textContent, renews: e.querySelector('.renews').textContent,
            text: e.textContent })); })()",
        Duration::from_secs(5),
    );
    for c in certs.as_array().unwrap() {
        assert_eq!(c["state"], "valid", "{c}");
        assert_eq!(c["issuer"], "hopline local CA", "{c}");
        assert_eq!(c["how"], "ACME tls-alpn-01", "{c}");
        let issued = c["issued"].as_str().unwrap();
        assert!(
            issued.ends_with(" UTC") && issued.matches(':').count() == 2,
            "{c}"
        );
        // a day's certificate (validity_s = 86400), renewed before it ends
        let hours = |k: &str| -> u64 {
            let v = c[k].as_str().unwrap();
            v.strip_prefix("in ")
                .and_then(|v| v.split(" h").next()?.parse().ok())
                .unwrap_or_else(|| panic!("{k}: {c}"))
        };
        assert!((22..=24).contains(&hours("expires")), "{c}");
        assert!(hours("renews") < hours("expires"), "{c}");
        // hopline's CA offers renewalInfo (RFC 9773): the window is the CA's
        assert!(
            c["renews"].as_str().unwrap().ends_with("(the CA's window)"),
            "{c}"
        );
    }
    let uncertified = browser.eval(
        "[...document.querySelectorAll('.node')].filter(n => n.dataset.role !== 'pop' && n.querySelector('.cert')).map(n => n.dataset.id)",
    );
    assert_eq!(uncertified, serde_json::json!([]));

    // the lines between them: DNS → both PoPs, PoPs → balancer, balancer → 3 origins, …
    let lines = browser.eval("document.querySelectorAll('#links path').length");
    assert!(lines.as_u64().unwrap() >= 9, "{lines} links drawn");
    let origin3 = format!("127.0.0.7:{}", 8080 + off);
    let state_of = format!(
        "document.querySelector('.node[data-id=\"site:lb\"] .srv[data-server=\"{origin3}\"]')?.dataset.state"
    );
    assert_eq!(browser.wait_for(&state_of, Duration::from_secs(5)), "up");

    // the first visit's trace (PoP → balancer → origin) is in the recent list: click it
    let clicked = browser.wait_for(
        "(() => { const r = [...document.querySelectorAll('#recent tr[data-trace]')]
            .find(r => r.textContent.includes('pop-') && r.textContent.includes('origin-'));
          if (!r) return null; r.click(); return r.dataset.trace; })()",
        Duration::from_secs(10),
    );
    assert_eq!(clicked.as_str().unwrap().len(), 32, "{clicked}");
    let hops = browser.wait_for(
        "document.querySelectorAll('#trace .hop').length >= 3 && [...document.querySelectorAll('#trace .hop')].map(h => h.dataset.site).join(' ')",
        Duration::from_secs(5),
    );
    let hops = hops.as_str().unwrap().to_string();
    let sites: Vec<&str> = hops.split(' ').collect();
    assert!(
        sites.len() == 3
            && sites[0].starts_with("pop-")
            && sites[1] == "lb"
            && sites[2].starts_with("origin-"),
        "one request's hops, in order: {hops}"
    );
    // every hop's bar is drawn inside the track, the outer one the widest
    let widths = browser.eval(
        "[...document.querySelectorAll('#trace .hop .track i')].map(i => i.getBoundingClientRect().width)",
    );
    let widths: Vec<f64> = widths
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_f64().unwrap())
        .collect();
    assert!(widths.iter().all(|w| *w >= 2.0), "{widths:?}");
    assert!(
        widths[0] >= widths[1] && widths[1] >= widths[2],
        "{widths:?}"
    );

    // ---- it fits the window: at 1400 px the five columns stand in one row, the services
    // column inside the viewport, nothing behind a scrollbar or cut inside a box; narrower,
    // the last columns wrap to a row below, still all in view ----
    let shots = screenshots();
    for (width, one_row) in [(1400, true), (900, false)] {
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        // the page redraws on the resize and once a second: give it two
        let _ = browser.wait_for(
            &format!(
                "innerWidth === {width} && document.querySelectorAll('.node').length === 12
                 && new Promise(r => setTimeout(() => r(true), 2200))"
            ),
            Duration::from_secs(8),
        );
        let fit = browser.eval(
            "(() => { const t = document.querySelector('#topology');
              const cols = [...t.querySelectorAll('.col')];
              const services = cols.find(c => c.querySelector('.node[data-kind=service]')).getBoundingClientRect();
              const nodes = [...t.querySelectorAll('.node')];
              return { scroll: t.scrollWidth, client: t.clientWidth, view: document.documentElement.clientWidth,
                page: document.documentElement.scrollWidth,
                services_left: services.left, services_right: services.right, services_top: services.top,
                first_top: cols[0].getBoundingClientRect().top,
                right: Math.max(...nodes.map(n => n.getBoundingClientRect().right)),
                cut: nodes.filter(n => n.scrollWidth > n.clientWidth).map(n => n.dataset.id) }; })()",
        );
        let n = |k: &str| fit[k].as_f64().unwrap();
        assert!(
            n("scroll") <= n("client"),
            "{width} px: the topology overflows sideways: {fit}"
        );
        assert!(
            n("page") <= n("view") && n("right") <= n("view"),
            "{width} px: a box past the window's edge: {fit}"
        );
        assert!(
            n("services_left") >= 0.0 && n("services_right") <= n("view"),
            "{width} px: the services column is not in view: {fit}"
        );
        assert_eq!(fit["cut"], serde_json::json!([]), "{width} px: {fit}");
        assert_eq!(
            n("services_top") == n("first_top"),
            one_row,
            "{width} px: columns in one row only when they fit: {fit}"
        );
        browser.screenshot(&shots.join(format!("dashboard-{width}.png")), true);
    }
    browser.call(
        "Emulation.clearDeviceMetricsOverride",
        serde_json::json!({}),
    );

    // ---- why one PoP takes every visit: the resolver's box shows the pool's answer it
    // holds, addresses in the order every client gets them, and the TTL counting down ----
    let visit = Command::new(BIN)
        .args(["visit", &format!("https://www.shop.test:{}/", 8443 + off)])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        visit.status.success(),
        "{}",
        String::from_utf8_lossy(&visit.stderr)
    );
    let cached_ttl = r#"(() => { const t = document.querySelector('.node[data-role=resolver]').textContent;
        const m = t.match(/www\.shop\.test → (127\.0\.0\.[23]), (127\.0\.0\.[23]) \(TTL (\d+) s left\)/);
        return m && { first: m[1], second: m[2], ttl: +m[3], text: t.replace(/\s+/g, ' ') }; })()"#;
    let held = browser.wait_for(cached_ttl, Duration::from_secs(3));
    let ttl = held["ttl"].as_u64().unwrap();
    assert!(
        held["first"] != held["second"] && (1..=30).contains(&ttl),
        "both PoPs, TTL at most the pool's 30 s: {held}"
    );
    let text = held["text"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "Clients keep the first address ({}) until the TTL ends",
            held["first"].as_str().unwrap()
        )),
        "{text}"
    );
    if ttl > 2 {
        let later = browser.wait_for(
            &format!("(() => {{ const h = {cached_ttl}; return h && h.ttl < {ttl} && h.ttl; }})()"),
            Duration::from_secs(3),
        );
        assert!(later.as_u64().unwrap() < ttl, "{later}");
    }

    // the numbers move while load goes through the balancer
    let stop = Arc::new(AtomicBool::new(false));
    let lb: SocketAddr = format!("127.0.0.4:{}", 8080 + off).parse().unwrap();
    let workers: Vec<_> = (0..2).map(|_| load(lb, "/api/", stop.clone())).collect();
    let rps = browser.wait_for(
        "(() => { const v = +document.querySelector('.node[data-id=\"site:lb\"] .rps').dataset.value; return v > 20 && v; })()",
        Duration::from_secs(6),
    );
    let origins_rps = browser.wait_for(
        "[...document.querySelectorAll('.node[data-role=origin] .rps')].map(e => +e.dataset.value).reduce((a, b) => a + b, 0)",
        Duration::from_secs(3),
    );
    let p99 = browser.eval("document.querySelector('.node[data-id=\"site:lb\"] .p99').textContent");
    assert!(
        p99.as_str().unwrap().parse::<f64>().is_ok(),
        "p99 shown as a number under load: {p99}"
    );
    let requests_then = browser.eval("+document.querySelector('.node[data-id=\"site:lb\"] .sub').textContent.match(/([\\d,]+) requests/)[1].replaceAll(',', '')");
    std::thread::sleep(Duration::from_millis(2200));
    let requests_now = browser.eval("+document.querySelector('.node[data-id=\"site:lb\"] .sub').textContent.match(/([\\d,]+) requests/)[1].replaceAll(',', '')");
    assert!(
        requests_now.as_f64() > requests_then.as_f64(),
        "request counts move: {requests_then} → {requests_now} (lb {rps} req/s, origins {origins_rps})"
    );
    browser.screenshot(&shots.join("dashboard.png"), true);

    // an origin removed by SIGHUP turns "down" within 2 s
    let cut = config
        .find("name = \"origin-3\"")
        .expect("origin-3 in the topology");
    let cut = config[..cut].rfind("[[site]]").unwrap();
    std::fs::write(&file, &config[..cut]).unwrap();
    let hup = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-HUP", &up.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    browser.wait_for(&format!("{state_of} === 'down'"), Duration::from_secs(2));
    let took = hup.elapsed();
    assert!(took <= Duration::from_millis(2000), "down after {took:?}");
    // and its box is gone from the picture
    browser.wait_for(
        "!document.querySelector('.node[data-id=\"site:origin-3\"]')",
        Duration::from_secs(2),
    );
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(sent > 0);

    // ---- the visit's waterfall page (written by `up`) ----
    let har = dir.path().join("visit.har");
    let out = Command::new(BIN)
        .args([
            "visit",
            &format!("https://www.shop.test:{}/", 8443 + off),
            "--har",
        ])
        .arg(&har)
        .arg("--html")
        .arg(dir.path().join("again.html"))
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        std::path::PathBuf::from(&visit_page.unwrap()),
        dir.path().join("again.html"),
    ] {
        browser.goto(&format!("file://{}", page.display()));
        let rows = browser.eval(
            "[...document.querySelectorAll('tr.entry')].map(r => ({
                total: +r.dataset.totalMs,
                sum: [...r.querySelectorAll('[data-ms]')].reduce((a, s) => a + +s.dataset.ms, 0),
                drawn: [...r.querySelectorAll('[data-ms]')].filter(s => s.getBoundingClientRect().width > 0).length,
                url: r.children[2]?.textContent }))",
        );
        let rows = rows.as_array().unwrap().clone();
        assert!(rows.len() >= 5, "{} rows in {}", rows.len(), page.display());
        for r in &rows {
            let (total, sum) = (r["total"].as_f64().unwrap(), r["sum"].as_f64().unwrap());
            assert!(
                (total - sum).abs() <= 1.0,
                "phases {sum} ms vs entry {total} ms: {r}"
            );
            assert!(r["drawn"].as_u64().unwrap() >= 1, "a visible bar: {r}");
        }
        // the initiator chain: the document found the stylesheet, which found base.css
        let chains = browser.eval(
            "[...document.querySelectorAll('tr.entry .init')].map(e => e.textContent).join(' | ')",
        );
        let chains = chains.as_str().unwrap();
        assert!(
            chains.contains("found by #0 document") && chains.contains("stylesheet ← #0 document"),
            "{chains}"
        );
        // a time axis over the bars, from 0 ms
        let ticks =
            browser.eval("[...document.querySelectorAll('div.axis span')].map(s => s.textContent)");
        let ticks = ticks.as_array().unwrap();
        // "0 ms", or "0.0 ms" when the page took under 8 ms (ticks every 0.5 ms or less)
        let zero = ticks
            .first()
            .and_then(|t| t.as_str()?.strip_suffix(" ms")?.parse::<f64>().ok());
        assert!(ticks.len() >= 2 && zero == Some(0.0), "{ticks:?}");
        let summary = browser.eval("document.querySelector('p.sum').textContent");
        assert!(
            summary.as_str().unwrap().contains("edge cache hit(s)"),
            "{summary}"
        );
        if !page.ends_with("again.html") {
            // `up`'s own first visit: cache misses, so the wait bars hold the hops behind
            browser.screenshot(&shots.join("visit.png"), true);
        } else {
            // one bar per HAR entry, each with the HAR's time
            let har: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
            let entries = har["log"]["entries"].as_array().unwrap();
            assert_eq!(rows.len(), entries.len(), "one row per HAR entry");
            for (r, e) in rows.iter().zip(entries) {
                let t = e["time"].as_f64().unwrap();
                assert!(
                    (r["total"].as_f64().unwrap() - t).abs() <= 1.0,
                    "{r} vs HAR {t}"
                );
            }
        }
    }
    drop(up);
}
