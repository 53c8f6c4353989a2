//! Balancing for stateful servers through real sockets: consistent hashing (ring hash,
//! Maglev) and sticky sessions (the balancer's cookie, or the origin's own session cookie
//! learned), with real origins killed and started again, and two balancer nodes that
//! share nothing.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::origin::Origin;
use common::{client, start};
use reqwest::StatusCode;

fn config(balance: &str, servers: &[&Origin], extra: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|o| format!("\"{}\"", o.addr)).collect();
    format!(
        r#"
access_log = "off"
[upstream.app]
balance = "{balance}"
servers = [{}]
connect_timeout_ms = 300
read_timeout_ms = 1500
retries = 1
max_fails = 1
fail_timeout_ms = 300
{extra}
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  proxy = "app"
"#,
        servers.join(", ")
    )
}

/// Which origin answers each of `users` users (by their `x-user` header).
async fn owners(url: &str, users: usize) -> Vec<String> {
    let c = client();
    let mut out = Vec::with_capacity(users);
    for u in 0..users {
        let r = c
            .get(url)
            .header("x-user", format!("user-{u}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "user-{u}");
        out.push(r.text().await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_moves_only_a_killed_servers_keys_and_brings_them_back() {
    for balance in ["ring_hash", "maglev"] {
        let mut origins = [
            Origin::start("a").await,
            Origin::start("b").await,
            Origin::start("c").await,
            Origin::start("d").await,
        ];
        let refs: Vec<&Origin> = origins.iter().collect();
        let t = start(&config(balance, &refs, "hash_key = \"header:x-user\"")).await;
        let url = t.url("/");
        let users = 400;
        let before = owners(&url, users).await;
        assert_eq!(
            before,
            owners(&url, users).await,
            "{balance}: same key, same server"
        );
        let mut shares: HashMap<&str, usize> = HashMap::new();
        for o in &before {
            *shares.entry(o.as_str()).or_default() += 1;
        }
        assert!(
            shares.len() == 4 && shares.values().all(|&n| n > users / 8),
            "{balance}: {shares:?}"
        );
        // c dies: its users move (every request still answered, by a retry), spread over
        // the others; the others' users stay where they were
        let c_addr = origins[2].addr;
        gone(&mut origins[2]).await;
        let during = owners(&url, users).await;
        let _ = owners(&url, users).await; // (c ejected by now)
        let during_settled = owners(&url, users).await;
        let mut went: HashMap<&str, usize> = HashMap::new();
        let mut others_moved = 0;
        for ((b, d), s) in before.iter().zip(&during).zip(&during_settled) {
            assert_ne!(d, "c");
            if b == "c" {
                *went.entry(s.as_str()).or_default() += 1;
            } else if b != s {
                others_moved += 1;
            }
        }
        let moved = before.iter().filter(|b| *b == "c").count();
        println!(
            "{balance}: c held {moved} of {users} users; they went to {went:?}; {others_moved} other users moved"
        );
        assert!(went.len() >= 2, "{balance}: spread, not onto one: {went:?}");
        match balance {
            "ring_hash" => assert_eq!(others_moved, 0, "{balance}"),
            _ => assert!(others_moved <= users / 20, "{balance}: {others_moved}"),
        }
        // c comes back on its address: probed back in, and its users return to it
        origins[2] = Origin::start_on(c_addr, "c").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = owners(&url, users).await;
            if now == before {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{balance}: c's users did not come back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Kill an origin and wait until it is gone for good: its listener refuses, and its
/// open connections (aborted with it, asynchronously) had time to close.
async fn gone(o: &mut Origin) {
    o.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(o.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still accepts",
            o.addr
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The sticky cookie a response set, as `name=value`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_holds_across_two_balancers_and_moves_when_its_server_dies() {
    let mut origins = [
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    ];
    let refs: Vec<&Origin> = origins.iter().collect();
    let toml = config(
        "round_robin",
        &refs,
        "sticky = { cookie = \"srv\", max_age_s = 3600 }",
    );
    let (one, two) = (start(&toml).await, start(&toml).await);
    let c = client();
    // the first answer sticks the client to whoever served it
    let r = c.get(one.url("/")).send().await.unwrap();
    let attrs = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        attrs.contains("Path=/") && attrs.contains("HttpOnly") && attrs.contains("Max-Age=3600"),
        "{attrs}"
    );
    let cookie = set_cookie(&r, "srv").expect("a sticky cookie");
    let server = r.text().await.unwrap();
    // on either balancer, the cookie keeps it there (round robin would not), and an
    // answer to a stuck client sets no cookie again
    for t in [&one, &two, &one, &two, &one, &two] {
        let r = c
            .get(t.url("/"))
            .header("cookie", format!("theme=dark; {cookie}"))
            .send()
            .await
            .unwrap();
        assert!(set_cookie(&r, "srv").is_none());
        assert_eq!(r.text().await.unwrap(), server);
    }
    // the balancer's cookie is its own: the origin sees only the application's
    let r = c
        .get(one.url("/echo"))
        .header("cookie", format!("theme=dark; {cookie}"))
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["origin"], server.as_str());
    assert_eq!(echo["headers"]["cookie"], "theme=dark", "{echo}");
    // its server dies: the client moves, and the cookie is written anew
    let i = ["a", "b", "c"].iter().position(|n| *n == server).unwrap();
    gone(&mut origins[i]).await;
    let r = c
        .get(two.url("/"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let moved = set_cookie(&r, "srv").expect("a new cookie");
    assert_ne!(moved, cookie);
    let now = r.text().await.unwrap();
    assert_ne!(now, server);
    // ...and the new cookie holds on the other balancer too
    for _ in 0..4 {
        let r = c
            .get(one.url("/"))
            .header("cookie", moved.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), now);
    }
    // a cookie naming no server (or garbage) is balanced as if absent, and replaced
    let r = c
        .get(one.url("/"))
        .header("cookie", "srv=0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&r, "srv").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origins_session_cookie_is_learned_with_its_server_and_given_back_as_set() {
    let origins = [
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    ];
    let refs: Vec<&Origin> = origins.iter().collect();
    let t = start(&config(
        "round_robin",
        &refs,
        "sticky = { learn = \"JSESSIONID\" }",
    ))
    .await;
    let c = client();
    let r = c.get(t.url("/session")).send().await.unwrap();
    let sent = set_cookie(&r, "JSESSIONID").expect("the origin's cookie");
    let body = r.text().await.unwrap();
    let server = body.split('|').next().unwrap().to_string();
    // the client sees the server's id before the origin's own value
    let value = sent.strip_prefix("JSESSIONID=").unwrap();
    let (id, own) = value.split_once('~').expect("id~value");
    assert_eq!(id.len(), 16);
    assert_eq!(own, format!("{server}-sess"));
    // with it, the client stays; the origin reads back exactly what it set
    for _ in 0..6 {
        let r = c
            .get(t.url("/session"))
            .header("cookie", format!("{sent}; x=1"))
            .send()
            .await
            .unwrap();
        assert!(set_cookie(&r, "JSESSIONID").is_none());
        assert_eq!(
            r.text().await.unwrap(),
            format!("{server}|JSESSIONID={server}-sess; x=1")
        );
    }
}

#[tokio::test]
async fn hashing_and_stickiness_settings_are_checked() {
    let a = Origin::start("a").await;
    let base = |extra: &str, balance: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hopline.toml");
        std::fs::write(&path, config(balance, &[&a], extra)).unwrap();
        let e = match hopline_edge::Config::load(&path) {
            Err(e) => Some(e.to_string()),
            Ok(cfg) => hopline_edge::Server::check(&cfg, &Default::default())
                .err()
                .map(|e| e.to_string()),
        };
        (dir, e)
    };
    let (_d, e) = base("hash_key = \"body\"", "maglev");
    let e = e.expect("refused");
    assert!(
        e.contains("expected \"client_ip\", \"uri\", \"header:NAME\" or \"cookie:NAME\""),
        "{e}"
    );
    let (_d, e) = base("hash_key = \"uri\"", "round_robin");
    assert!(
        e.is_some_and(|e| e.contains("hash_key is for balance")),
        "hash_key without hashing"
    );
    let (_d, e) = base("sticky = { cookie = \"a\", learn = \"b\" }", "round_robin");
    assert!(e.is_some_and(|e| e.contains("sticky: expected")));
    let (_d, e) = base("sticky = { cookie = \"a b\" }", "round_robin");
    assert!(e.is_some_and(|e| e.contains("not a cookie name")));
    let (_d, e) = base(
        "sticky = { cookie = \"srv\" }\nhash_key = \"cookie:user\"",
        "ring_hash",
    );
    assert_eq!(e, None);
}
