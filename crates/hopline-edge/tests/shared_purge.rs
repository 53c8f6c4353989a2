//! Purges shared by the PoPs of one CDN through a real Redis (Debian's `redis-server`):
//! four PoPs, a purge at one reaching all; one PoP cut off from Redis (through a relay
//! the test cuts) replaying what it missed when it is back — or, when the stream was
//! trimmed past it, marking everything stale and saying so.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::origin::Origin;
use common::{TestServer, client, start_in};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay to Redis that the test can cut (every connection dropped, new ones
/// refused) and restore.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (c2, k2) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut a, _)) = l.accept().await else {
                    continue;
                };
                if c2.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut b) = TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                k2.lock().push(h);
            }
        });
        Relay { port, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for h in self.conns.lock().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pop_toml(origin: &Origin, redis_port: u16, keep: u64) -> String {
    format!(
        r#"
access_log = "off"
[admin]
listen = "127.0.0.1:0"
[cache.pop]
memory = "16MiB"
shared_purge = {{ redis = "redis://127.0.0.1:{redis_port}", stream = "hopline:purge:test", keep = {keep} }}
[upstream.app]
servers = ["{}"]
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  proxy = "app"
  cache = "pop"
"#,
        origin.addr
    )
}

async fn cache_status(t: &TestServer, path: &str) -> String {
    let r = client().get(t.url(path)).send().await.unwrap();
    r.headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn purge(t: &TestServer, body: serde_json::Value) -> serde_json::Value {
    let admin = t.server.admin_addr().unwrap();
    client()
        .post(format!("http://{admin}/.hopline/purge"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn shared(t: &TestServer) -> serde_json::Value {
    t.status().await["caches"]["pop"]["shared_purge"].clone()
}

/// Wait until `f` holds (5 s at most), polling.
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 5 s for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_at_one_pop_reaches_every_pop_and_a_pop_cut_off_catches_up() {
    let Some(redis) = hopline_testkit::Redis::start() else {
        return;
    };
    let o = Origin::start("o").await;
    {
        let mut h = o.ctl.obj_headers.lock();
        h.push(("cache-control".into(), "max-age=600".into()));
        h.push(("surrogate-key".into(), "every p{path}".into()));
    }
    *o.ctl.obj_body.lock() = "v1".into();
    let relay = Relay::start(redis.port).await;
    let mut pops = Vec::new();
    for i in 0..4 {
        let port = if i == 3 { relay.port } else { redis.port };
        pops.push(start_in(tempfile::tempdir().unwrap(), &pop_toml(&o, port, 5)).await);
    }
    for p in &pops {
        until("connected", || async {
            shared(p).await["connected"] == true
        })
        .await;
        for path in ["/obj/a", "/obj/b", "/obj/c"] {
            cache_status(p, path).await;
            assert!(cache_status(p, path).await.contains("hit"));
        }
    }
    // a tag purged at PoP 1: gone from all four, the rest still there
    let started = tokio::time::Instant::now();
    let v = purge(&pops[0], serde_json::json!({"tag": "p/obj/a"})).await;
    assert_eq!(v["purged"], 1, "{v}");
    for p in &pops {
        until("purged everywhere", || async {
            shared(p).await["applied"].as_u64() >= Some(1)
                || shared(p).await["published"].as_u64() >= Some(1)
        })
        .await;
    }
    println!("a tag purge reached 4 PoPs in {:?}", started.elapsed());
    for p in &pops {
        assert!(cache_status(p, "/obj/a").await.contains("fwd=miss"));
        assert!(cache_status(p, "/obj/b").await.contains("hit"));
    }
    // PoP 4 cut off: purges made meanwhile elsewhere, and one made at PoP 4
    relay.cut();
    until("PoP 4 sees it is cut off", || async {
        shared(&pops[3]).await["connected"] == false
    })
    .await;
    purge(&pops[1], serde_json::json!({"tag": "p/obj/b"})).await;
    let v = purge(&pops[3], serde_json::json!({"tag": "p/obj/c"})).await;
    assert_eq!(v["purged"], 1, "applied at PoP 4 at once: {v}");
    assert_eq!(shared(&pops[3]).await["pending"], 1);
    // back: it replays what it missed, and sends what it kept
    relay.restore();
    until("PoP 4 back", || async {
        shared(&pops[3]).await["connected"] == true
    })
    .await;
    until("PoP 4 replayed /obj/b's purge", || async {
        shared(&pops[3]).await["applied"].as_u64() >= Some(2)
    })
    .await;
    assert!(cache_status(&pops[3], "/obj/b").await.contains("fwd=miss"));
    until("PoP 4's own purge reached PoP 1", || async {
        shared(&pops[0]).await["applied"].as_u64() >= Some(2)
    })
    .await;
    assert!(cache_status(&pops[0], "/obj/c").await.contains("fwd=miss"));
    assert_eq!(shared(&pops[3]).await["gaps"], 0);
    // cut off again while more purges than the stream keeps (5) go by: PoP 4 cannot
    // vouch for anything, marks everything stale, and says so
    for p in &pops {
        for path in ["/obj/a", "/obj/b", "/obj/c"] {
            cache_status(p, path).await;
        }
    }
    relay.cut();
    until("cut off", || async {
        shared(&pops[3]).await["connected"] == false
    })
    .await;
    for i in 0..20 {
        purge(&pops[0], serde_json::json!({"tag": format!("nothing-{i}")})).await;
    }
    until("published", || async {
        shared(&pops[0]).await["pending"] == 0
    })
    .await;
    relay.restore();
    until("PoP 4 back with a gap", || async {
        shared(&pops[3]).await["gaps"] == 1
    })
    .await;
    for path in ["/obj/a", "/obj/b", "/obj/c"] {
        let cs = cache_status(&pops[3], path).await;
        assert!(
            !cs.contains("; hit"),
            "{path} served as fresh after a gap: {cs}"
        );
    }
    // the others saw every purge: their objects are still fresh hits
    assert!(cache_status(&pops[1], "/obj/a").await.contains("hit"));
    drop(redis);
}
