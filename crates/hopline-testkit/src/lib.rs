//! What integration tests share: starting real peer programs from Debian packages on
//! loopback. Outside CI a missing peer skips the test with a loud message; with `CI` set
//! it fails, so CI never passes by skipping.

pub mod alloc;
#[cfg(feature = "edge")]
pub mod edge;
pub mod house;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: another process may take it, which
/// the callers' start-up loops notice).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Whether `program` is installed. When it is not: panics in CI (`CI` set), otherwise
/// prints a loud SKIPPED line naming the Debian `package` and answers false.
/// A port shift for `hopline up`'s built-in topology whose every address is free: tried
/// from `first` in steps of 200 (`slots` of them, starting at one picked by the pid so
/// parallel runs spread), with its PoPs on `pops` (pop-1 and pop-2 are 127.0.0.2 and .3).
pub fn free_up_offset(first: u16, slots: u16, pops: &[&str]) -> u16 {
    use std::net::{TcpListener, UdpSocket};
    let start = (std::process::id() % slots as u32) as u16;
    for k in 0..slots {
        let off = first + ((start + k) % slots) * 200;
        let mut tcp: Vec<(&str, u16)> = vec![
            ("127.0.0.1", 5300),
            ("127.0.0.1", 5354),
            ("127.0.0.1", 9900),
            ("127.0.0.1", 9443),
            ("127.0.0.4", 8080),
            ("127.0.0.5", 8080),
            ("127.0.0.6", 8080),
            ("127.0.0.7", 8080),
        ];
        tcp.extend(pops.iter().map(|a| (*a, 8443)));
        let free = tcp
            .iter()
            .all(|(ip, p)| TcpListener::bind((*ip, p + off)).is_ok())
            && [5300, 5354]
                .iter()
                .all(|p| UdpSocket::bind(("127.0.0.1", p + off)).is_ok());
        if free {
            return off;
        }
    }
    panic!("no free port offset for the topology of hopline up");
}

pub fn peer_installed(program: &str, version_arg: &str, package: &str) -> bool {
    if Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is required in CI (apt-get install {package})"
    );
    eprintln!("SKIPPED: {program} is not installed (apt-get install {package})");
    false
}

/// Waits until something accepts TCP on 127.0.0.1:`port`, up to `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let step = Duration::from_millis(20);
    for _ in 0..=timeout.as_millis() / step.as_millis() {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(step);
    }
    false
}

/// Waits until something answers a DNS query (`. NS`) over UDP at `addr`; panics after
/// about 10 s.
pub fn wait_udp(addr: std::net::SocketAddr) {
    for _ in 0..100 {
        let s = std::net::UdpSocket::bind(if addr.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        })
        .expect("a UDP socket");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a timeout");
        // id 0x1234, RD, one question: the root, NS, IN
        let q = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1,
        ];
        let _ = s.send_to(&q, addr);
        let mut buf = [0u8; 512];
        if s.recv_from(&mut buf).is_ok() {
            return;
        }
    }
    panic!("nothing answers DNS on {addr}");
}

/// NSD (Debian's `nsd`) serving zone `origin` from `dir/zonefile` on `ip`:`port`, in the
/// foreground with its state in a folder of `dir`, response rate limiting off; waits
/// until it answers. Callers check [`peer_installed`] first.
pub fn nsd(dir: &std::path::Path, ip: &str, port: u16, origin: &str, zonefile: &str) -> Proc {
    let sub = dir.join(format!("nsd-{ip}-{port}"));
    std::fs::create_dir_all(&sub).expect("NSD's folder");
    std::fs::write(
        sub.join("nsd.conf"),
        format!(
            "server:\n  ip-address: {ip}\n  port: {port}\n  username: \"\"\n  database: \"\"\n  zonelistfile: \"{s}/zone.list\"\n  xfrdfile: \"{s}/xfrd.state\"\n  xfrdir: \"{s}\"\n  pidfile: \"{s}/nsd.pid\"\n  logfile: \"{s}/nsd.log\"\n  zonesdir: \"{d}\"\n  rrl-ratelimit: 0\n  server-count: 1\n  verbosity: 1\nremote-control:\n  control-enable: no\nzone:\n  name: \"{origin}\"\n  zonefile: \"{zonefile}\"\n",
            s = sub.display(),
            d = dir.display()
        ),
    )
    .expect("NSD's config");
    let p = Proc(
        Command::new("nsd")
            .arg("-d")
            .arg("-c")
            .arg(sub.join("nsd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nsd"),
    );
    wait_udp(format!("{ip}:{port}").parse().expect("an address"));
    p
}

/// A Redis server of our own (Debian's `redis-server`), in memory only, on loopback.
#[derive(Debug)]
pub struct Redis {
    child: Option<Proc>,
    /// The port it listens on.
    pub port: u16,
}

impl Redis {
    /// Starts one on a free port; None (with a loud message) when `redis-server` is not
    /// installed outside CI.
    pub fn start() -> Option<Redis> {
        if !peer_installed("redis-server", "--version", "redis-server") {
            return None;
        }
        Some(Self::start_on(free_port()))
    }

    /// Starts one on `port` (e.g. again after [`Redis::kill`], to test reconnection).
    pub fn start_on(port: u16) -> Redis {
        let child = Proc(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server"),
        );
        assert!(
            wait_for_port(port, Duration::from_secs(5)),
            "redis-server did not start on {port}"
        );
        Redis {
            child: Some(child),
            port,
        }
    }

    /// Its URL, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it now (the port stays recorded, for [`Redis::start_on`]).
    pub fn kill(&mut self) {
        self.child.take();
    }
}

/// A headless Chromium (Debian's `chromium`) driven over the DevTools protocol: one
/// page, JavaScript evaluated in it, screenshots. No driver program in between.
pub struct Browser {
    _child: Proc,
    _profile: tempfile::TempDir,
    ws: tungstenite::WebSocket<TcpStream>,
    session: String,
    next: u64,
    /// Uncaught exceptions and console errors of the page, as they arrived.
    pub errors: Vec<String>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("session", &self.session)
            .finish()
    }
}

impl Browser {
    /// Starts one with an empty page; None (with a loud message) when `chromium` is not
    /// installed outside CI.
    pub fn start() -> Option<Browser> {
        Self::start_with(&[])
    }

    /// [`Browser::start`] with more command-line switches (e.g. `--origin-to-force-quic-on`).
    pub fn start_with(switches: &[String]) -> Option<Browser> {
        if !peer_installed("chromium", "--version", "chromium") {
            return None;
        }
        let profile = tempfile::tempdir().expect("a temporary profile folder");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1500,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(switches)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].trim().to_string());
                    sent = true;
                }
            }
        });
        let child = Proc(child);
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium printed its DevTools address within 30 s");
        let hostport = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_string();
        let stream = TcpStream::connect(&hostport).expect("connect to DevTools");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools handshake");
        let mut b = Browser {
            _child: child,
            _profile: profile,
            ws,
            session: String::new(),
            next: 0,
            errors: Vec::new(),
        };
        let target = b.call(
            "Target.createTarget",
            serde_json::json!({"url": "about:blank"}),
        );
        let target = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = b.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        b.call("Page.enable", serde_json::json!({}));
        b.call("Runtime.enable", serde_json::json!({}));
        Some(b)
    }

    /// One DevTools command (on the page once attached); its result. Panics on an error.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = self.session.clone().into();
        }
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send to DevTools");
        loop {
            let m = self.ws.read().expect("read from DevTools");
            let tungstenite::Message::Text(t) = m else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("DevTools JSON");
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            match v["method"].as_str() {
                Some("Runtime.exceptionThrown") => self.errors.push(
                    v["params"]["exceptionDetails"]["exception"]["description"]
                        .as_str()
                        .unwrap_or("an exception")
                        .to_string(),
                ),
                Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                    self.errors.push(v["params"]["args"].to_string())
                }
                _ => {}
            }
        }
    }

    /// Load `url` and wait until its `load` event.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({"url": url}));
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        );
    }

    /// The value of a JavaScript expression in the page (promises awaited). Panics when
    /// it throws.
    pub fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` every 50 ms until it is truthy (and answers it); panics after
    /// `timeout`.
    pub fn wait_for(&mut self, expr: &str, timeout: Duration) -> serde_json::Value {
        let step = Duration::from_millis(50);
        let mut tries = timeout.as_millis() / step.as_millis() + 1;
        loop {
            let r = self.call(
                "Runtime.evaluate",
                serde_json::json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            );
            let v = r["result"]["value"].clone();
            let truthy = match &v {
                serde_json::Value::Null => false,
                serde_json::Value::Bool(b) => *b,
                serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
                serde_json::Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy && r.get("exceptionDetails").is_none() {
                return v;
            }
            tries -= 1;
            assert!(
                tries > 0,
                "waited {timeout:?} for {expr} (last: {v}, {}; page errors: {:?})",
                r["exceptionDetails"],
                self.errors
            );
            std::thread::sleep(step);
        }
    }

    /// A PNG of the page (the whole page when `full`), written to `path`.
    pub fn screenshot(&mut self, path: &std::path::Path, full: bool) {
        use base64::Engine as _;
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png", "captureBeyondViewport": full}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("image data"))
            .expect("base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}
