//! `hopline up`: the whole topology in one process, visited by `hopline visit` from
//! outside; the CDN answers a repeat visit, and one trace id crosses every hop's log.
//! Uses the topology's fixed loopback addresses (127.0.0.1:5300/5354/9900,
//! 127.0.0.2-7), so it is the only test that starts `up`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

#[test]
fn up_once_exits_0_with_every_hop() {
    let dir = tempfile::tempdir().unwrap();
    // a taken port (another program on 127.0.0.4:8080): the built-in topology moves every
    // port by 10000, says so, and works
    {
        let _taken = std::net::TcpListener::bind("127.0.0.4:8080").unwrap();
        let out = Command::new(BIN)
            .args(["up", "--once", "--data-dir"])
            .arg(dir.path())
            .env("NO_COLOR", "1")
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .output()
            .unwrap();
        let (text, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{text}\n{err}");
        assert!(
            err.contains("127.0.0.4:8080") && err.contains("moving every port by 10000"),
            "{err}"
        );
        assert!(text.contains("dns: resolver 127.0.0.1:15300"), "{text}");
        assert!(text.contains("https://www.shop.test:18443/"), "{text}");
        // the PoPs' certificate came by ACME from the topology's own CA, validated by
        // TLS-ALPN-01 through the topology's DNS; the visit trusted it
        assert!(
            text.contains("certificate for www.shop.test, shop.test obtained by ACME (tls-alpn-01) from CN=hopline local CA"),
            "{text}"
        );
        assert!(
            dir.path()
                .join("certs/acme/certs/www.shop.test-key.pem")
                .exists(),
            "stored for the next run"
        );
        // a file of the user's own is not rewritten: the error names the address and the
        // role once, and says how to find who holds the port
        let mine = dir.path().join("mine");
        std::fs::create_dir_all(&mine).unwrap();
        let printed = Command::new(BIN)
            .args(["up", "--print-config", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(printed.status.success());
        std::fs::write(mine.join("my.toml"), &printed.stdout).unwrap();
        let out = Command::new(BIN)
            .args(["up", "--once", "--config", "my.toml", "--data-dir"])
            .arg(dir.path())
            .current_dir(&mine)
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("127.0.0.4:8080")
                && err.contains("edge http, site lb")
                && err.contains("ss -l")
                && err.matches("already in use").count() == 0,
            "{err}"
        );
    }
    // what --print-config prints runs where it is saved (paths into the data folder)
    let mine = dir.path().join("elsewhere");
    std::fs::create_dir_all(&mine).unwrap();
    let printed = Command::new(BIN)
        .args(["up", "--print-config", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    std::fs::write(mine.join("my.toml"), &printed.stdout).unwrap();
    let out = Command::new(BIN)
        .args(["up", "--once", "--config", "my.toml", "--data-dir"])
        .arg(dir.path())
        .current_dir(&mine)
        .env("NO_COLOR", "1")
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["up", "--once", "--data-dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for hop in [
        "pop-1",
        "pop-2",
        "lb",
        "origin-1",
        "origin-2",
        "origin-3",
        "DNS resolver",
        "DNS authoritative",
        "admin",
    ] {
        assert!(text.contains(hop), "{hop} missing:\n{text}");
    }
    assert!(text.contains("dns: resolver 127.0.0.1:5300"), "{text}");
    assert!(text.contains("alpn=h2"), "{text}");
    // a later run serves the stored certificate: nothing ordered
    assert!(!text.contains("obtained by ACME"), "{text}");
    assert!(text.contains("cache-status: pop"), "{text}");
    assert!(text.contains("via least_connections"), "{text}");
    assert!(text.contains("0 failed"), "{text}");
    // and the same visit as a self-contained page in the data folder
    assert!(text.contains("the waterfall as a page:"), "{text}");
    let page = std::fs::read_to_string(dir.path().join("up-9900/visit.html")).unwrap();
    assert!(page.contains("<tr class=entry") && page.contains("www.shop.test"));

    // the running topology, visited from outside; its data folder given relative (`.`):
    // the state file still records the CA by an absolute path (visit runs elsewhere)
    let mut up = Command::new(BIN)
        .args(["up", "--data-dir", "."])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // a failing assertion must not leave the topology running (its ports are fixed)
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _guard = KillOnDrop(up.id());
    let log = Arc::new(RwLock::new(String::new()));
    let l2 = log.clone();
    let stderr = up.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            l2.write().unwrap().push_str(&(line + "\n"));
        }
    });
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("--compare") || line.contains("hopline notify status") {
                let _ = tx.send(line);
            }
        }
    });
    let (mut compare_line, mut status_line) = (String::new(), String::new());
    let state_file = dir.path().join(format!("hopline/run/up-{}.json", up.id()));
    while compare_line.is_empty() || status_line.is_empty() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("up is serving and prints a compare and a notify status command");
        if line.contains("--compare") {
            compare_line = line;
        } else {
            status_line = line;
        }
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let ca = std::path::PathBuf::from(state["ca"].as_str().unwrap());
    assert!(ca.is_absolute() && ca.is_file(), "{state}");
    // the shop's order confirmation, followed through PoP → balancer → origin's notify
    // API, is delivered to the webhook sink on origin-1
    let cmd = status_line
        .split("hopline ")
        .nth(1)
        .expect("a hopline command");
    let mut args: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    args.push("--json".into());
    let out = Command::new(BIN)
        .args(&args)
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["message"]["status"], "delivered", "{v}");
    assert_eq!(v["attempts"][0]["http_status"], 200, "{v}");
    // and one sent by hand through the same path
    let send: Vec<String> = args
        .iter()
        .skip(3) // notify status ID
        .take_while(|a| *a != "--follow")
        .cloned()
        .collect();
    let out = Command::new(BIN)
        .args(["notify", "send"])
        .args(&send)
        .args([
            "--to",
            "http://127.0.0.5:8080/hooks/orders",
            "--body",
            "by hand",
            "--json",
        ])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "queued", "{v}");
    // and the statistics see the delivered confirmation
    let out = Command::new(BIN)
        .args(["notify", "stats"])
        .args(&send)
        .args(["--since", "1h", "--json"])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["channel"] == "webhook" && g["status"] == "delivered"),
        "{v}"
    );
    // the printed command works against the running topology: every kind through
    // PoP → balancer → origin hub, nothing missed (shortened to a few seconds)
    let cmd = compare_line
        .split("hopline listen ")
        .nth(1)
        .expect("a hopline listen command");
    let mut args: Vec<String> = vec!["listen".into()];
    args.extend(cmd.split_whitespace().map(str::to_string));
    for (flag, value) in [("--for", "2s"), ("--rate", "10/s")] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            args[i + 1] = value.into();
        }
    }
    args.extend(["--interval".into(), "500ms".into(), "--json".into()]);
    let out = Command::new(BIN)
        .args(&args)
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds = v["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 4, "{v}");
    for k in kinds {
        assert_eq!(k["missed"], 0, "{v}");
        assert_eq!(k["events"], 20, "{v}");
    }
    // the demo shop's own orders arrive by SSE through the whole path
    let out = Command::new(BIN)
        .args([
            "listen",
            "https://www.shop.test:8443/live/orders",
            "--via",
            "sse",
            "--count",
            "1",
            "--json",
        ])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(e["data"].as_str().unwrap().contains("\"order\""), "{e}");
    // README's DNS commands: iteration from the shipped private root hints (the "root" is
    // up's authoritative server), and api.shop.test, a CNAME to the pooled www
    let hints = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/dns/up.root.hints"
    );
    for args in [
        vec![
            "resolve",
            "www.shop.test",
            "--root-hints",
            hints,
            "--query-port",
            "5354",
            "--trace",
        ],
        vec!["resolve", "api.shop.test", "--server", "127.0.0.1:5300"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("127.0.0.2") && text.contains("127.0.0.3"),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // a failing resolution still shows its steps, the failing one last
    let out = Command::new(BIN)
        .args([
            "resolve",
            "nope.shop.test",
            "--root-hints",
            hints,
            "--query-port",
            "5354",
            "--trace",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-> nxdomain"), "{text}");
    let mut hits = 0;
    let mut trace = String::new();
    for _ in 0..2 {
        let out = Command::new(BIN)
            .args([
                "visit",
                "https://www.shop.test:8443/",
                "--json",
                "--no-cache",
            ])
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let doc = &v["entries"][0];
        assert_eq!(doc["status"], 200);
        // up's resolver walks the signed root → test. → shop.test. and validates
        assert_eq!(doc["dns"]["dnssec"], "secure", "{}", doc["dns"]);
        if doc["cache_status"].as_str().unwrap_or("").contains("hit") {
            hits += 1;
        }
        let tp = doc["request_headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "traceparent")
            .unwrap()[1]
            .as_str()
            .unwrap()
            .to_string();
        trace = tp.split('-').nth(1).unwrap().to_string();
    }
    assert!(hits >= 1, "a repeat visit never hit a PoP cache");
    // `hopline trace` tells the last visit's journey across the hops
    let out = Command::new(BIN)
        .args(["trace", &trace, "--json"])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let sites: Vec<&str> = v["hops"]
        .as_array()
        .map(|h| h.iter().filter_map(|x| x["site"].as_str()).collect())
        .unwrap_or_default();
    assert!(sites.first().is_some_and(|s| s.starts_with("pop-")), "{v}");
    let out = Command::new(BIN)
        .args(["trace", &trace])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("trace {trace}")));
    // the journey in plain words
    let out = Command::new(BIN)
        .args([
            "visit",
            "https://www.shop.test:8443/",
            "--explain",
            "--no-cache",
        ])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for step in [
        "looked up www.shop.test: resolver 127.0.0.1:5300",
        "connected to 127.0.0.",
        "TLSv1.3 handshake",
        "edge PoP (pop",
        "edge PoP took",
        "sent GET / over HTTP/2",
        "answered 200",
    ] {
        assert!(text.contains(step), "{step:?} missing from:\n{text}");
    }
    // kill one origin: a reload of the topology without origin-1 closes its listener
    let topo = dir.path().join("up-9900/topology.toml");
    let text = std::fs::read_to_string(&topo).unwrap();
    let start = text.find("[[site]]\nname = \"origin-1\"").unwrap();
    let end = start + text[start..].find("[[site]]\nname = \"origin-2\"").unwrap();
    std::fs::write(&topo, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &up.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..6 {
        let out = Command::new(BIN)
            .args([
                "visit",
                "https://www.shop.test:8443/api/products",
                "--json",
                "--no-cache",
                "--no-subresources",
            ])
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let doc = &v["entries"][0];
        assert_eq!(
            doc["status"], 200,
            "the site must still load with one origin gone: {doc}"
        );
        let timing = doc["server_timing"].to_string();
        assert!(
            !timing.contains("origin-1"),
            "answered by the removed origin: {timing}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").arg(up.id().to_string()).status();
    let _ = up.wait();
    let log = log.read().unwrap().clone();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("trace={trace}")))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("site=pop-")),
        "edge: {lines:?}"
    );
    // the last visit may be a cache hit: then only the edge saw it; look at any visit's trace
    let all_traces: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("site=origin-") && !l.contains("trace=-"))
        .collect();
    assert!(!all_traces.is_empty());
    // (an origin also starts traces of its own — sampled requests that came straight to
    // it, like the notify worker's webhooks: the one looked at is one the PoP saw)
    let trace_of = |l: &str| {
        l.split("trace=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or("")
            .to_string()
    };
    let some = all_traces
        .iter()
        .map(|l| trace_of(l))
        .find(|t| {
            log.lines()
                .any(|l| l.contains("site=pop-") && l.contains(&format!("trace={t}")))
        })
        .expect("an origin's request that came through a PoP");
    let crossing: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("trace={some}")))
        .collect();
    assert!(
        crossing.iter().any(|l| l.contains("site=lb")),
        "lb: {crossing:?}"
    );
    assert!(
        crossing.iter().any(|l| l.contains("site=pop-")),
        "edge: {crossing:?}"
    );
}

/// Two `up`s at once (on port offsets of their own, so this test runs beside the one
/// above): each keeps its own state, folder and topology; discovery finds the one a URL's
/// port names, and from a second terminal with another runtime folder; a third asked onto
/// taken ports names the `up` holding them; stopping one leaves the other's state.
#[test]
fn two_ups_each_keep_their_own_state() {
    let dir = tempfile::tempdir().unwrap();
    // stopped as Ctrl-C would (SIGTERM), so that it removes its own state files
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
    let env = |c: &mut Command| {
        c.env("NO_COLOR", "1")
            .env("XDG_RUNTIME_DIR", dir.path().join("rt"))
            .env("XDG_DATA_HOME", dir.path());
    };
    std::fs::create_dir_all(dir.path().join("rt")).unwrap();
    let start = |offset: u16| {
        let mut c = Command::new(BIN);
        c.args(["up", "--port-offset", &offset.to_string(), "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        env(&mut c);
        let mut child = c.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut printed = String::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("up --port-offset {offset} never served:\n{printed}"));
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("serving until Ctrl-C") {
                break;
            }
        }
        (KillOnDrop(child), printed)
    };
    let (a, a_out) = start(21000);
    let (b, b_out) = start(22000);
    let (pid_a, pid_b) = (a.0.id(), b.0.id());
    // each names its own topology file, in a folder of its own
    let data = dir.path().join("data");
    for (out, admin, pid) in [(&a_out, 30900, pid_a), (&b_out, 31900, pid_b)] {
        let topo = data.join(format!("up-{admin}/topology.toml"));
        assert!(
            out.contains(&format!(
                "topology   {}",
                topo.canonicalize().unwrap().display()
            )) && out.contains(&format!("kill -HUP {pid}")),
            "{out}"
        );
        assert!(data.join(format!("up-{admin}/notify.db")).exists());
    }
    // up's own order confirmation went through the service's front door: counted
    let status = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:30900").unwrap();
        s.write_all(b"GET /.hopline/status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let body = raw.split_once("\r\n\r\n").unwrap().1.to_string();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    assert_eq!(
        status["services"]["notify.main"]["accepted"], 1,
        "{}",
        status["services"]
    );
    let states = |d: &std::path::Path| -> Vec<u32> {
        let mut pids: Vec<u32> = std::fs::read_dir(d.join("hopline/run"))
            .map(|r| {
                r.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().into_string().ok()?;
                        n.strip_prefix("up-")?.strip_suffix(".json")?.parse().ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        pids.sort();
        pids
    };
    let mut both = vec![pid_a, pid_b];
    both.sort();
    assert_eq!(states(&dir.path().join("rt")), both);
    assert_eq!(states(dir.path()), both);
    // the URL's port picks the instance: A's PoP on 29443, B's on 30443; a second terminal
    // whose runtime folder differs still finds them in the data folder
    for (port, pid, runtime) in [
        (29443, pid_a, dir.path().join("rt")),
        (30443, pid_b, dir.path().join("rt")),
        (29443, pid_a, dir.path().join("elsewhere")),
    ] {
        let mut c = Command::new(BIN);
        c.args([
            "visit",
            &format!("https://www.shop.test:{port}/"),
            "--json",
            "--no-cache",
            "--no-subresources",
        ]);
        env(&mut c);
        let out = c.env("XDG_RUNTIME_DIR", &runtime).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{port}: {err}");
        assert!(err.contains(&format!("(pid {pid})")), "{port}: {err}");
    }
    // `--ca up` is the running up's CA
    let mut c = Command::new(BIN);
    c.args([
        "visit",
        "https://www.shop.test:29443/",
        "--resolver",
        "127.0.0.1:26300",
        "--ca",
        "up",
        "--no-subresources",
        "--no-cache",
    ]);
    env(&mut c);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a third, asked onto A's ports, says who holds them
    let mut c = Command::new(BIN);
    c.args(["up", "--once", "--port-offset", "21000", "--data-dir"])
        .arg(&data);
    env(&mut c);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("another `hopline up` (pid {pid_a}) holds"))
            && err.contains("127.0.0.1:30900"),
        "{err}"
    );
    // trace with no --admin asks the newest (B); --instance A asks A's admin
    for (inst, admin) in [(None, "127.0.0.1:31900"), (Some(pid_a), "127.0.0.1:30900")] {
        let mut c = Command::new(BIN);
        c.args(["trace", "0af7651916cd43dd8448eb211c80319c"]);
        if let Some(p) = inst {
            c.args(["--instance", &p.to_string()]);
        }
        env(&mut c);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(admin), "{err}");
    }
    // stopping B leaves A's state, and discovery finds A
    drop(b);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(states(&dir.path().join("rt")), vec![pid_a]);
    assert_eq!(states(dir.path()), vec![pid_a]);
    let mut c = Command::new(BIN);
    c.args([
        "visit",
        "https://www.shop.test:29443/",
        "--no-subresources",
        "--no-cache",
    ]);
    env(&mut c);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // and with none running, a .test name says why it fails
    drop(a);
    let mut c = Command::new(BIN);
    c.args([
        "visit",
        "https://www.shop.test:29443/",
        "--timeout",
        "2",
        "--no-cache",
    ]);
    env(&mut c);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no running `hopline up` found (looked in"),
        "{err}"
    );
}
