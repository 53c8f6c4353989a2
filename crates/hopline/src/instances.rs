//! Running `hopline up`s, as other commands find them. Each `up` leaves one state file,
//! `up-PID.json`, in every state folder it can write (the runtime folder, and the data
//! folder so that a second terminal with another `XDG_RUNTIME_DIR` finds it too) and
//! removes only its own files when it stops. Discovery reads them all, keeps those whose
//! process still runs, and picks the one the user means: the one holding the port a URL
//! names, the one `--instance` names (pid or any port it holds), else the newest.

use std::path::{Path, PathBuf};

/// What a running `up` leaves for `visit`, `trace`, `listen` and a second `up`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// The pid of the `up` process.
    pub pid: u32,
    /// When it started (milliseconds since the Unix epoch); the newest is the default.
    #[serde(default)]
    pub started_ms: u64,
    /// The topology's resolver (IP:PORT).
    pub resolver: String,
    /// Its CA (absolute path).
    pub ca: PathBuf,
    /// Its admin listener (IP:PORT), when the topology has one.
    #[serde(default)]
    pub admin: Option<String>,
    /// The front door, e.g. `https://www.shop.test:8443`.
    #[serde(default)]
    pub front: String,
    /// The topology file SIGHUP re-reads.
    #[serde(default)]
    pub topology: PathBuf,
    /// This instance's own folder (notify.db, visit.html).
    #[serde(default)]
    pub dir: PathBuf,
    /// Every address it listens on.
    #[serde(default)]
    pub listens: Vec<String>,
}

impl State {
    /// Whether this instance listens on `port` (any address).
    pub fn holds_port(&self, port: u16) -> bool {
        self.listens
            .iter()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .any(|a| a.port() == port)
    }

    /// Whether this instance listens on exactly `addr`.
    pub fn holds(&self, addr: &std::net::SocketAddr) -> bool {
        self.listens
            .iter()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .any(|a| a == *addr)
    }
}

/// The folders state files live in: the runtime folder (when the system has one) and the
/// user's data folder; an `up` writes to each, discovery reads each.
pub fn state_dirs() -> Vec<PathBuf> {
    let mut dirs_out = Vec::new();
    for d in [dirs::runtime_dir(), dirs::data_dir()]
        .into_iter()
        .flatten()
    {
        let d = d.join("hopline").join("run");
        if !dirs_out.contains(&d) {
            dirs_out.push(d);
        }
    }
    if dirs_out.is_empty() {
        dirs_out.push(std::env::temp_dir().join("hopline").join("run"));
    }
    dirs_out
}

/// The folders looked in, for messages.
pub fn looked_in() -> String {
    state_dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Whether `pid` is a running `hopline` process (not a pid reused by something else).
fn alive(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => {
            let argv0 = cmd.split(|b| *b == 0).next().unwrap_or(&[]);
            let name = Path::new(std::ffi::OsStr::new(
                std::str::from_utf8(argv0).unwrap_or(""),
            ))
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
            name.starts_with("hopline")
        }
        Err(_) => false,
    }
}

/// Every running `up`, newest first. State files of processes that are gone are removed.
pub fn running() -> Vec<State> {
    let mut out: Vec<State> = Vec::new();
    for dir in state_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with("up-") && name.ends_with(".json")) {
                continue;
            }
            let Some(state) = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<State>(&b).ok())
            else {
                continue;
            };
            if !alive(state.pid) {
                // the process died without cleaning up (kill -9): its file misleads
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if !out.iter().any(|s| s.pid == state.pid) {
                out.push(state);
            }
        }
    }
    out.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.pid.cmp(&a.pid)));
    out
}

/// The running `up` a command means. `instance` (from `--instance`) is a pid or a port the
/// instance holds; else `port` (the port a URL names) picks the instance holding it; else
/// the newest. `Err` when `--instance` names none of them.
pub fn find(instance: Option<&str>, port: Option<u16>) -> anyhow::Result<Option<State>> {
    let all = running();
    if let Some(sel) = instance {
        let n: u32 = sel.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "--instance {sel:?}: expected the pid of a `hopline up` or a port it holds"
            )
        })?;
        return all
            .iter()
            .find(|s| s.pid == n)
            .or_else(|| {
                u16::try_from(n)
                    .ok()
                    .and_then(|p| all.iter().find(|s| s.holds_port(p)))
            })
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--instance {sel}: no running `hopline up` has that pid or port ({})",
                    describe(&all)
                )
            });
    }
    if let Some(p) = port
        && let Some(s) = all
            .iter()
            .find(|s| front_port(&s.front) == Some(p))
            .or_else(|| all.iter().find(|s| s.holds_port(p)))
    {
        // the front door's port first: another up may use the same number on another address
        return Ok(Some(s.clone()));
    }
    Ok(all.into_iter().next())
}

/// The port of a front door URL (`https://www.shop.test:8443`).
fn front_port(front: &str) -> Option<u16> {
    url::Url::parse(front).ok()?.port_or_known_default()
}

/// The running instances in a few words, for messages.
pub fn describe(all: &[State]) -> String {
    if all.is_empty() {
        return format!("none running; looked in {}", looked_in());
    }
    let list: Vec<String> = all
        .iter()
        .map(|s| format!("pid {} at {}", s.pid, s.front))
        .collect();
    format!("running: {}", list.join(", "))
}

/// Leaves `state` where discovery looks; returns the files written (to remove at exit).
pub fn publish(state: &State) -> Vec<PathBuf> {
    let Ok(json) = serde_json::to_vec_pretty(state) else {
        return Vec::new();
    };
    let mut written = Vec::new();
    for dir in state_dirs() {
        let file = dir.join(format!("up-{}.json", state.pid));
        if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&file, &json).is_ok() {
            written.push(file);
        }
    }
    written
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The hint for a `.test` name that failed to resolve with no running `up` to ask.
pub fn no_up_hint() -> String {
    format!(
        "no running `hopline up` found (looked in {}); start it, or pass --resolver",
        looked_in()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: u32, started: u64, listens: &[&str]) -> State {
        State {
            pid,
            started_ms: started,
            resolver: "127.0.0.1:5300".into(),
            ca: "/ca.pem".into(),
            admin: None,
            front: "https://www.shop.test:8443".into(),
            topology: PathBuf::new(),
            dir: PathBuf::new(),
            listens: listens.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_instance_holds_the_ports_it_listens_on() {
        let s = state(1, 0, &["127.0.0.2:18443", "127.0.0.1:19900"]);
        assert!(s.holds_port(18443));
        assert!(!s.holds_port(8443));
        assert!(s.holds(&"127.0.0.1:19900".parse().unwrap()));
        assert!(!s.holds(&"127.0.0.2:19900".parse().unwrap()));
    }

    #[test]
    fn our_own_process_is_alive_and_a_free_pid_is_not() {
        // the test binary's name starts with "hopline" (hopline-<hash>)
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
    }
}
