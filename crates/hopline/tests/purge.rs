//! `hopline purge` against a real node: `hopline serve` with an origin site, a caching
//! proxy site and an admin listener.

use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hopline");

#[tokio::test]
async fn purge_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("www")).unwrap();
    std::fs::write(d.join("www/app.css"), "p { color: teal }").unwrap();
    let (origin, front, admin) = (
        hopline_testkit::free_port(),
        hopline_testkit::free_port(),
        hopline_testkit::free_port(),
    );
    std::fs::write(
        d.join("hopline.toml"),
        format!(
            r#"
access_log = "off"
[admin]
listen = "127.0.0.1:{admin}"
[cache.pop]
memory = "16MiB"
[upstream.origin]
servers = ["127.0.0.1:{origin}"]
[[site]]
listen = ["127.0.0.1:{origin}"]
  [[site.route]]
  path = "/"
  root = "www"
[[site]]
listen = ["127.0.0.1:{front}"]
  [[site.route]]
  path = "/"
  proxy = "origin"
  cache = "pop"
"#
        ),
    )
    .unwrap();
    let _server = hopline_testkit::Proc(
        Command::new(BIN)
            .arg("serve")
            .arg(d.join("hopline.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(hopline_testkit::wait_for_port(
        front,
        Duration::from_secs(10)
    ));
    assert!(hopline_testkit::wait_for_port(
        admin,
        Duration::from_secs(10)
    ));
    let url = format!("http://127.0.0.1:{front}/app.css");
    let status = |r: &reqwest::Response| {
        r.headers()
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();
    // (a file just written is fresh for no time at all: stored, then revalidated)
    let r = c.get(&url).send().await.unwrap();
    assert!(status(&r).contains("stored"), "{}", status(&r));
    let r = c.get(&url).send().await.unwrap();
    assert!(!status(&r).contains("fwd=miss"), "{}", status(&r));
    let purge = |args: &[&str]| {
        Command::new(BIN)
            .arg("purge")
            .args(args)
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .output()
            .unwrap()
    };
    let out = purge(&["--url", &url, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["purged"].as_u64(), v["caches"]["pop"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let r = c.get(&url).send().await.unwrap();
    assert!(status(&r).contains("fwd=miss"), "{}", status(&r));
    // the human form, a soft purge, nothing matching
    let out = purge(&["--host", "127.0.0.1", "--soft"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("marked stale 1 object(s)")
            && text.contains("pop: 1"),
        "{text}"
    );
    let out = purge(&["--tag", "nothing-has-it"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("purged 0 object(s)"));
    // refused by the node (a relative URL), or nobody there: exit 2, saying why
    let out = purge(&["--url", "/app.css"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("absolute URL"),
        "{out:?}"
    );
    let out = Command::new(BIN)
        .args(["purge", "--all", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // nothing named: clap says what is expected
    let out = Command::new(BIN).args(["purge"]).output().unwrap();
    assert!(!out.status.success());
}
