//! `hopline serve` and `hopline cert` as a user runs them: the real binary, real
//! signals, real clients (reqwest and curl as a second opinion).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

struct Running {
    child: Child,
    addr: SocketAddr,
    log: Arc<parking_lot_free::Lines>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // never leave a server behind, even when an assertion failed
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod parking_lot_free {
    /// Lines the server printed on stderr, collected by a thread.
    #[derive(Default)]
    pub struct Lines(pub std::sync::RwLock<Vec<String>>);
    impl Lines {
        pub fn text(&self) -> String {
            self.0.read().unwrap().join("\n")
        }
    }
}

fn start(config: &Path) -> Running {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(parking_lot_free::Lines::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            log2.0.write().unwrap().push(line);
        }
    });
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("server did not start: {}", log.text()))
        .parse()
        .unwrap();
    Running { child, addr, log }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY-free: kill(1) from the OS
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("hopline did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn site(body: &str) -> String {
    format!(
        "threads = 1\naccess_log = \"off\"\n[[site]]\nlisten = [\"127.0.0.1:0\"]\n  [[site.route]]\n  path = \"/\"\n  respond = {{ body = \"{body}\" }}\n"
    )
}

#[test]
fn bad_config_is_refused_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[site]]\nlisten = [\"127.0.0.1:0\"]\nroute = 5\n").unwrap();
    let out = Command::new(BIN).arg("serve").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:"), "{err}");
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // --check loads what serve loads: a zone file with a bad address is refused by both
    std::fs::write(
        dir.path().join("z.zone"),
        "$ORIGIN shop.test.\n$TTL 300\n@ IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.300\n",
    )
    .unwrap();
    std::fs::write(
        &path,
        format!(
            "{}\n[[dns.authoritative]]\nlisten = \"127.0.0.1:0\"\nzones = [\"z.zone\"]\n",
            site("ok")
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("z.zone:5"), "{err}");
    std::fs::write(&path, site("ok")).unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a bad value in any section names its line (the site takes lines 1-7, then a blank line)
    for (extra, line, expected) in [
        (
            "[[dns.resolver]]\nlisten = \"127.0.0.1:0\"\nallow = [\"10.0.0.0/33\"]\n",
            11,
            "allow \"10.0.0.0/33\"",
        ),
        (
            "[[dns.authoritative]]\nlisten = \"127.0.0.1:0\"\nzones = []\nnotify = [\"x\"]\n",
            12,
            "notify \"x\": expected IP or IP:PORT",
        ),
        (
            "[realtime.live]\nengine = \"mysql://x\"\n",
            10,
            "\"memory\" or \"redis://HOST:PORT\"",
        ),
        (
            "[notify.main]\nrecipient_rate = \"lots\"\n",
            10,
            "rate \"lots\"",
        ),
    ] {
        std::fs::write(&path, format!("{}\n{extra}", site("ok"))).unwrap();
        let out = Command::new(BIN)
            .arg("serve")
            .arg("--check")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("bad.toml:{line}:")) && err.contains(expected),
            "{extra}: {err}"
        );
    }
}

#[test]
fn a_file_that_serves_nothing_or_a_route_without_its_site_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .arg("serve")
            .arg("--check")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let (code, err) = check("[[site.route]]\npath = \"/\"\nroot = \".\"\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("h.toml:1:1: a [[site.route]] must follow a [[site]]"),
        "{err}"
    );
    let (code, err) = check("");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("h.toml: nothing to serve: the file is empty; expected at least one [[site]]"),
        "{err}"
    );
    // serve itself refuses it too, before binding anything
    let out = Command::new(BIN).arg("serve").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to serve"));
    // an admin listener alone is valid, with a warning
    let (code, err) = check("[admin]\nlisten = \"127.0.0.1:0\"\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: ") && err.contains("serves nothing but its [admin] listener"),
        "{err}"
    );
    assert!(err.contains("is valid"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_under_load_without_failures_and_sigterm_exits_0() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopline.toml");
    std::fs::write(&path, site("one")).unwrap();
    let mut run = start(&path);
    let addr = run.addr;
    // pin the port so the reload keeps the same listener
    std::fs::write(&path, site("one").replace("127.0.0.1:0", &addr.to_string())).unwrap();
    signal(&run.child, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let saw_two = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (ok, failed, saw_two, stop) =
            (ok.clone(), failed.clone(), saw_two.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                match c.get(format!("http://{addr}/")).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body = r.text().await.unwrap_or_default();
                        if body == "two" {
                            saw_two.fetch_add(1, Ordering::Relaxed);
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // good reload
    std::fs::write(&path, site("two").replace("127.0.0.1:0", &addr.to_string())).unwrap();
    signal(&run.child, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // bad reload: refused, old config keeps serving
    std::fs::write(&path, "this is not = = toml").unwrap();
    signal(&run.child, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reload; log:\n{}",
        run.log.text()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(
        saw_two.load(Ordering::Relaxed) > 0,
        "reload never took effect"
    );
    let body = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "two", "bad reload replaced the good config");
    assert!(
        run.log.text().contains("reload refused"),
        "{}",
        run.log.text()
    );

    signal(&run.child, 15);
    let status = wait_exit(&mut run.child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn cert_makes_a_ca_and_https_works_with_curl() {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "curl is required in CI");
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(BIN)
        .args(["cert", "--dir"])
        .arg(&certs)
        .args(["shop.test", "*.shop.test", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("made a new local CA"));
    for f in ["ca.pem", "ca-key.pem", "shop.test.pem", "shop.test-key.pem"] {
        assert!(certs.join(f).is_file(), "{f} missing");
    }
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca-key.pem", "shop.test-key.pem"] {
        let mode = std::fs::metadata(certs.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    // a second run reuses the CA
    let out = Command::new(BIN)
        .args(["cert", "--json", "--dir"])
        .arg(&certs)
        .arg("api.shop.test")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ca"]["created"], false);

    let path = dir.path().join("hopline.toml");
    std::fs::write(
        &path,
        "threads = 1\naccess_log = \"off\"\n[[site]]\nlisten = [\"127.0.0.1:0\"]\ntls = { cert = \"certs/shop.test.pem\", key = \"certs/shop.test-key.pem\" }\n  [[site.route]]\n  path = \"/\"\n  respond = { body = \"secure\" }\n",
    )
    .unwrap();
    let mut run = start(&path);
    let port = run.addr.port();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "-",
            "-w",
            "\n%{http_version} %{ssl_verify_result}",
            "--cacert",
        ])
        .arg(certs.join("ca.pem"))
        .args(["--resolve", &format!("www.shop.test:{port}:127.0.0.1")])
        .arg(format!("https://www.shop.test:{port}/"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl: {} {}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text, "secure\n2 0", "body, HTTP version, verify result");
    // without the CA, curl refuses the certificate
    let out = Command::new("curl")
        .args([
            "-sS",
            "--resolve",
            &format!("www.shop.test:{port}:127.0.0.1"),
        ])
        .arg(format!("https://www.shop.test:{port}/"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    // nor does `hopline visit`, which says how to trust it
    let out = Command::new(BIN)
        .args(["visit", &format!("https://127.0.0.1:{port}/")])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass --ca FILE"), "{err}");
    let _ = run.child.kill();
    let _ = run.child.wait();
    // a name that is neither a DNS name nor an address is refused, nothing written
    let out = Command::new(BIN)
        .args(["cert", "--dir"])
        .arg(&certs)
        .arg("bad name!")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a DNS name"));
    assert!(!certs.join("bad name!.pem").exists());
    // a URL without its scheme gets the likely one suggested
    let out = Command::new(BIN)
        .args(["visit", "localhost:8080"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean http://localhost:8080/"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_zones_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("shop.zone");
    let zone_text = |ip: &str| {
        format!(
            "$ORIGIN shop.test.\n$TTL 60\n@ IN SOA ns admin 1 3600 600 86400 30\n@ IN NS ns\nns IN A 127.0.0.1\nwww IN A {ip}\n"
        )
    };
    std::fs::write(&zone, zone_text("10.0.0.1")).unwrap();
    let path = dir.path().join("hopline.toml");
    std::fs::write(
        &path,
        "threads = 1\n[[dns.authoritative]]\nlisten = \"127.0.0.1:0\"\nzones = [\"shop.zone\"]\n",
    )
    .unwrap();
    let mut run = start(&path);
    let ask = |addr: SocketAddr| async move {
        let r = hopline_dns::Resolver::builder()
            .no_hosts_file()
            .forward(vec![addr])
            .build()
            .unwrap();
        r.lookup_ip("www.shop.test").await.map(|l| l.addrs)
    };
    assert_eq!(
        ask(run.addr).await.unwrap(),
        vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    std::fs::write(&zone, zone_text("10.0.0.2")).unwrap();
    signal(&run.child, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        ask(run.addr).await.unwrap(),
        vec!["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
    // a bad zone: refused with file and line, the old zone keeps answering
    std::fs::write(
        &zone,
        "$ORIGIN shop.test.\n$TTL 60\n@ IN SOA ns admin 1 3600 600 86400 30\nwww IN A 999.1.1.1\n",
    )
    .unwrap();
    signal(&run.child, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        ask(run.addr).await.unwrap(),
        vec!["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
    let log = run.log.text();
    assert!(
        log.contains("reload refused") && log.contains("shop.zone:4"),
        "{log}"
    );
    signal(&run.child, 15);
    assert_eq!(
        wait_exit(&mut run.child, Duration::from_secs(10)).code(),
        Some(0)
    );
}

/// `hopline publish` as a user runs it against `hopline serve`: a publication, then
/// `--info` (human and `--json`), the clear errors without a token or a channel, and
/// `--delete` ending a listener.
#[test]
fn publish_and_channel_info_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hub.toml");
    std::fs::write(
        &cfg,
        "threads = 1\naccess_log = \"off\"\n[realtime.live]\npublish = { jwt_secret = \"cli-secret-of-the-test\" }\n[[site]]\nlisten = [\"127.0.0.1:0\"]\n  [[site.route]]\n  path = \"/live/\"\n  realtime = \"live\"\n",
    )
    .unwrap();
    let s = start(&cfg);
    let url = format!("http://{}/live/cli", s.addr);
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // nothing there yet: 404, said plainly
    let (ok, _, err) = run(&[
        "publish",
        &url,
        "--info",
        "--secret",
        "cli-secret-of-the-test",
    ]);
    assert!(
        !ok && err.contains("404") && err.contains("no channel"),
        "{err}"
    );
    let (ok, out, err) = run(&[
        "publish",
        &url,
        "hello",
        "--secret",
        "cli-secret-of-the-test",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("published on cli at ") && out.contains("(0 subscriber(s) on that node)"),
        "{out}"
    );
    let (ok, out, err) = run(&[
        "publish",
        &url,
        "--info",
        "--secret",
        "cli-secret-of-the-test",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("1 publication(s) in history from offset 1"),
        "{out}"
    );
    let (ok, out, err) = run(&[
        "publish",
        &url,
        "--info",
        "--secret",
        "cli-secret-of-the-test",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["offset"], 1);
    assert_eq!(v["bytes_published"], 5);
    // no token: 401; no data and no --info: a usage error
    let (ok, _, err) = run(&["publish", &url, "--info"]);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = run(&["publish", &url]);
    assert!(!ok && err.contains("<DATA>"), "{err}");

    // --delete: a listener is told and ends; the channel is gone (404 the second time)
    let listener = Command::new(BIN)
        .args(["listen", &url, "--via", "sse"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut listening = false;
    for _ in 0..100 {
        let (_, out, _) = run(&[
            "publish",
            &url,
            "--info",
            "--secret",
            "cli-secret-of-the-test",
            "--json",
        ]);
        if serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|v| v["subscribers"] == 1) {
            listening = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(listening, "the listener never subscribed");
    let (ok, out, err) = run(&[
        "publish",
        &url,
        "--delete",
        "--secret",
        "cli-secret-of-the-test",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("deleted cli at ")
            && out.contains("1 publication(s) in history; 1 subscriber(s)"),
        "{out}"
    );
    let ended = listener.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&ended.stderr);
    assert!(
        ended.status.success() && err.contains("channel cli was deleted"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "publish",
        &url,
        "--delete",
        "--secret",
        "cli-secret-of-the-test",
    ]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = run(&["publish", &url, "x", "--delete"]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
}

/// `hopline completions SHELL` completes for real in bash (a command, then a flag of it),
/// and `hopline man --dir` writes a page per command that man can read.
#[test]
fn completions_and_man_pages() {
    let script = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hopline.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let complete = |words: &str, cword: usize| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; _hopline hopline \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[@]}}\"",
                file.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("hopline vi", 1), "visit");
    assert_eq!(complete("hopline up --port", 2), "--port-offset");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("visit"),
            "{shell}"
        );
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
    // the pages
    let out = Command::new(BIN)
        .args(["man", "--dir"])
        .arg(dir.path().join("man1"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    for cmd in ["up", "serve", "visit", "resolve", "notify", "completions"] {
        let page = dir.path().join(format!("man1/hopline-{cmd}.1"));
        assert!(listed.contains(&page.display().to_string()), "{listed}");
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(
            text.starts_with(".ie") && text.contains(&format!(".TH hopline-{cmd} 1")),
            "{cmd}: {text}"
        );
    }
    let up = std::fs::read_to_string(dir.path().join("man1/hopline-up.1")).unwrap();
    assert!(up.contains("port\\-offset"), "{up}");
    let main = Command::new(BIN).arg("man").output().unwrap();
    assert!(String::from_utf8_lossy(&main.stdout).contains(".SH SUBCOMMANDS"));
}

/// What one `hopline listen` run left: its exit, stdout and stderr (killed if it runs
/// past `within`).
fn listen_output(args: &[&str], within: Duration) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .arg("listen")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, within);
    let out = child.wait_with_output().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `hopline listen --last N` reads the latest N events still in history first, on all
/// four transports, then goes on from their position; `--json` keeps stdout to events
/// and stderr free of the "listening" line; a count over history is refused plainly.
#[test]
fn listen_last_n_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hub.toml");
    std::fs::write(
        &cfg,
        "threads = 1\naccess_log = \"off\"\n[realtime.live]\npublish = { jwt_secret = \"cli-secret-of-the-test\" }\n[[site]]\nlisten = [\"127.0.0.1:0\"]\n  [[site.route]]\n  path = \"/live/\"\n  realtime = \"live\"\n",
    )
    .unwrap();
    let s = start(&cfg);
    let url = format!("http://{}/live/latest", s.addr);
    for i in 1..=3 {
        let out = Command::new(BIN)
            .args(["publish", &url, &format!("event {i}")])
            .args(["--secret", "cli-secret-of-the-test"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for via in ["poll", "long-poll", "sse", "ws"] {
        let (ok, out, err) = listen_output(
            &[&url, "--via", via, "--last", "2", "--count", "2", "--json"],
            Duration::from_secs(20),
        );
        assert!(ok, "{via}: {err}");
        assert!(!err.contains("listening on"), "{via}: {err}");
        let got: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{via}: {l:?}: {e}")))
            .collect();
        let data: Vec<&str> = got.iter().map(|v| v["data"].as_str().unwrap()).collect();
        assert_eq!(data, ["event 2", "event 3"], "{via}: {out}");
        let offsets: Vec<u64> = got.iter().map(|v| v["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, [2, 3], "{via}: {out}");
        assert!(got.iter().all(|v| v["channel"] == "latest"), "{via}: {out}");
    }
    // the human form: "listening" on stderr once subscribed, the events on stdout
    let (ok, out, err) = listen_output(
        &[&url, "--via", "sse", "--last", "1", "--count", "1"],
        Duration::from_secs(20),
    );
    assert!(ok, "{err}");
    assert!(
        err.starts_with("hopline: listening on ") && err.contains("via sse"),
        "{err}"
    );
    assert!(
        out.ends_with(":3  event 3\n") && out.lines().count() == 1,
        "{out}"
    );
    // more than a channel keeps: the server's reason, no "listening"
    for via in ["poll", "ws"] {
        let (ok, _, err) = listen_output(
            &[&url, "--via", via, "--last", "100000"],
            Duration::from_secs(20),
        );
        assert!(!ok, "{via}: {err}");
        assert!(
            !err.contains("listening on") && err.contains("400") && err.contains("at most"),
            "{via}: {err}"
        );
    }
    // --last and --since: one start only
    let (ok, _, err) = listen_output(
        &[&url, "--last", "2", "--since", "abc:1"],
        Duration::from_secs(20),
    );
    assert!(!ok && err.contains("cannot be used with"), "{err}");
}

/// A listen that cannot connect says so and exits non-zero, never "listening" first.
#[test]
fn listen_to_a_closed_port_fails_without_listening() {
    // a port bound but not listening: connections are refused, and no other test's
    // server can take the number meanwhile (a port merely freed could be reused at once)
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let port = held.local_addr().unwrap().as_socket().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/live/orders");
    for via in ["poll", "long-poll", "sse", "ws"] {
        let (ok, out, err) = listen_output(&[&url, "--via", via], Duration::from_secs(20));
        assert!(!ok, "{via}: {out} {err}");
        assert!(out.is_empty(), "{via}: {out}");
        assert!(!err.contains("listening on"), "{via}: {err}");
        assert!(
            err.contains(&format!("cannot listen on {url} via {via}"))
                && err.contains("connecting to"),
            "{via}: {err}"
        );
    }
}

/// No `--help` shows the value of an environment variable it reads (an empty one read as
/// `[env: HOPLINE_APP_KEY=]`, a secret would be printed), and every command has examples.
#[test]
fn help_never_shows_environment_values() {
    let commands: &[&[&str]] = &[
        &["up"],
        &["serve"],
        &["cert"],
        &["ca", "serve"],
        &["resolve"],
        &["visit"],
        &["trace"],
        &["publish"],
        &["listen"],
        &["notify", "send"],
        &["notify", "status"],
        &["notify", "stats"],
        &["notify", "app", "create"],
        &["completions"],
        &["man"],
    ];
    for cmd in commands {
        let out = Command::new(BIN)
            .args(*cmd)
            .arg("--help")
            .env("HOPLINE_APP_KEY", "")
            .env("HOPLINE_APP_SECRET", "s3cret-value")
            .env("HOPLINE_REALTIME_SECRET", "s3cret-value")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd:?}: {text}");
        assert!(
            !text.contains("=]") && !text.contains("s3cret-value"),
            "{cmd:?} shows an environment value:\n{text}"
        );
        assert!(text.contains("Example"), "{cmd:?} has no example:\n{text}");
    }
}
