//! The README and the pages under docs/ lead somewhere: every relative link names a file
//! that exists, and every shell block marked ```` ```sh runnable ```` runs, as written, to
//! exit status 0 with `hopline` on the PATH, in a fresh home folder, from a folder that
//! has the repository's `examples/`.
//!
//! A runnable block is one bash script (`set -e`, as a careful user would paste it). A line
//! ending in `&` starts a server in the background, as a user would in a second terminal:
//! the script waits until it says it listens (`listening on`, or `up`'s `serving until`)
//! and stops it when the block ends. ```` ```sh runnable while="CMD" ```` runs CMD that way
//! before the block's first line (for "while `hopline up` runs" blocks). Blocks use the
//! default ports of the pages they come from, so this test runs alone in its test group
//! (`.config/nextest.toml`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and docs/*.md, by path relative to the repository.
fn pages() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| Path::new("docs").join(p.file_name().unwrap()))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// A fenced block: the page, its first line's number, its info string, its lines.
struct Block {
    page: PathBuf,
    line: usize,
    info: String,
    body: Vec<String>,
}

fn blocks(page: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join(page)).unwrap();
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (n, l) in text.lines().enumerate() {
        if let Some(info) = l.strip_prefix("```") {
            match open.take() {
                Some(b) => out.push(b),
                None => {
                    open = Some(Block {
                        page: page.to_path_buf(),
                        line: n + 1,
                        info: info.trim().to_string(),
                        body: Vec::new(),
                    })
                }
            }
        } else if let Some(b) = open.as_mut() {
            b.body.push(l.to_string());
        }
    }
    out
}

/// The value of `key="…"` in a block's info string.
fn attr(info: &str, key: &str) -> Option<String> {
    let start = info.find(&format!("{key}=\""))? + key.len() + 2;
    let end = start + info[start..].find('"')?;
    Some(info[start..end].to_string())
}

/// The script a runnable block becomes: `&` lines get their output kept and are waited for.
fn script(block: &Block) -> String {
    let mut s = String::from(
        r#"set -e
__bg=0
__ready() {  # wait until the background server ($2, output in $1) listens; $3=up: all of `up`
  for _ in $(seq 1 600); do
    if grep -q 'serving until Ctrl-C' "$1"; then return 0; fi
    if [ "$3" != up ] && grep -q 'listening on' "$1"; then sleep 0.3; return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then echo "background command exited:"; cat "$1"; return 1; fi
    sleep 0.1
  done
  echo "background command never listened:"; cat "$1"; return 1
}
trap '__s=$?; for j in $(jobs -p); do kill $j; done; wait; exit $__s' EXIT
"#,
    );
    let mut lines: Vec<String> = Vec::new();
    if let Some(cmd) = attr(&block.info, "while") {
        lines.push(format!("{cmd} &"));
    }
    lines.extend(block.body.iter().cloned());
    for l in lines {
        let code = l.split(" #").next().unwrap_or("").trim_end();
        if let Some(cmd) = code.strip_suffix('&').filter(|c| !c.ends_with('&')) {
            let kind = if cmd.trim_start().starts_with("hopline up") {
                "up"
            } else {
                "server"
            };
            s.push_str(&format!(
                "__bg=$((__bg+1)); {cmd} > .bg$__bg 2>&1 &\n__ready .bg$__bg $! {kind}\n"
            ));
        } else {
            s.push_str(&l);
            s.push('\n');
        }
    }
    s
}

/// The last 40 lines of a stream, for a failure message one can read.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    lines[from..].iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn every_relative_link_names_a_file_that_exists() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(repo().join(&page)).unwrap();
        let dir = page.parent().unwrap_or(Path::new(""));
        for (n, line) in text.lines().enumerate() {
            for part in line.split("](").skip(1) {
                let target = part.split(')').next().unwrap_or("");
                let target = target.split('#').next().unwrap_or("");
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                if !repo().join(dir).join(target).exists() {
                    broken.push(format!("{}:{}: {target}", page.display(), n + 1));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing:\n{}",
        broken.join("\n")
    );
}

#[test]
fn runnable_blocks_of_the_docs_run() {
    let runnable: Vec<Block> = pages()
        .iter()
        .flat_map(|p| blocks(p))
        .filter(|b| b.info.starts_with("sh runnable"))
        .collect();
    // the pages promise these; a block losing its mark would silently stop being checked
    assert!(
        runnable.len() >= 8,
        "only {} runnable blocks",
        runnable.len()
    );
    let bin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.path().join("hopline")).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failed = Vec::new();
    for block in &runnable {
        let home = tempfile::tempdir().unwrap();
        let work = home.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        std::os::unix::fs::symlink(repo().join("examples"), work.join("examples")).unwrap();
        std::fs::create_dir_all(home.path().join("run")).unwrap();
        let script = script(block);
        let child = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&work)
            .env("PATH", &path)
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", home.path().join("run"))
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // no block may hang the suite: 120 s, then it is a failure
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if rx.recv_timeout(Duration::from_secs(120)).is_err() {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        });
        let out = child.wait_with_output().unwrap();
        let _ = tx.send(());
        let _ = watchdog.join();
        if !out.status.success() {
            failed.push(format!(
                "{}:{} ({}) exited {:?}\n--- script\n{script}--- stdout\n{}--- stderr\n{}",
                block.page.display(),
                block.line,
                block.info,
                out.status.code(),
                tail(&out.stdout),
                tail(&out.stderr)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
