//! What integration tests share: starting real peer programs from Debian packages on
//! loopback. Outside CI a missing peer skips the test with a loud message; with `CI` set
//! it fails, so CI never passes by skipping.

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
