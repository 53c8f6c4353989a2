//! The CDN point of presence through real sockets: an origin whose headers the test
//! controls, the real edge with a cache in front of the proxy, a real client.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::origin::Origin;
use common::{TestServer, client, start_in};
use reqwest::StatusCode;

fn pop_toml(origin: &Origin, extra_cache: &str) -> String {
    format!(
        r#"
access_log = "off"
[admin]
listen = "127.0.0.1:0"
[cache.pop]
memory = "16MiB"
{extra_cache}
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

async fn setup(cc: &str, extra_cache: &str) -> (Origin, TestServer) {
    let o = Origin::start("o").await;
    o.ctl
        .obj_headers
        .lock()
        .push(("cache-control".into(), cc.into()));
    *o.ctl.obj_body.lock() = "version 1".into();
    let t = start_in(tempfile::tempdir().unwrap(), &pop_toml(&o, extra_cache)).await;
    (o, t)
}

async fn get(
    t: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String, reqwest::header::HeaderMap) {
    let mut rb = client().get(t.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let cs = r
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let h = r.headers().clone();
    (status, cs, r.text().await.unwrap(), h)
}

#[tokio::test]
async fn miss_then_hit_with_age() {
    let (o, t) = setup("public, max-age=60", "").await;
    let (s, cs, body, _) = get(&t, "/obj/a", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, "version 1");
    assert!(cs.contains("fwd=miss") && cs.contains("stored"), "{cs}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, cs, body, h) = get(&t, "/obj/a", &[]).await;
    assert_eq!(body, "version 1");
    assert!(cs.starts_with("pop; hit; ttl="), "{cs}");
    let age: u64 = h["age"].to_str().unwrap().parse().unwrap();
    assert!(age >= 1, "Age {age}");
    assert_eq!(o.hits(), 1, "the hit reached the origin");
    // HEAD is answered from the GET entry
    let r = client().head(t.url("/obj/a")).send().await.unwrap();
    assert!(
        r.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
    );
    assert_eq!(r.headers()["content-length"], "9");
    assert_eq!(o.hits(), 1);
}

#[tokio::test]
async fn what_a_shared_cache_must_not_store() {
    for cc in ["no-store", "private, max-age=60"] {
        let (o, t) = setup(cc, "").await;
        get(&t, "/obj/a", &[]).await;
        let (_, cs, _, _) = get(&t, "/obj/a", &[]).await;
        assert!(
            cs.contains("fwd=miss") && !cs.contains("stored"),
            "{cc}: {cs}"
        );
        assert_eq!(o.hits(), 2, "{cc}: stored anyway");
    }
    // Authorization without public/s-maxage: not stored
    let (o, t) = setup("max-age=60", "").await;
    get(&t, "/obj/a", &[("authorization", "Bearer x")]).await;
    get(&t, "/obj/a", &[("authorization", "Bearer x")]).await;
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn stale_entries_are_revalidated_with_304() {
    let (o, t) = setup("max-age=1", "").await;
    get(&t, "/obj/a", &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, cs, body, _) = get(&t, "/obj/a", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, "version 1");
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    assert_eq!(o.ctl.not_modified.load(Ordering::Relaxed), 1);
    let inm = o
        .ctl
        .last_headers
        .lock()
        .iter()
        .find(|(k, _)| k == "if-none-match")
        .cloned();
    assert!(inm.is_some(), "revalidation without If-None-Match");
    // refreshed: fresh again
    let (_, cs, _, _) = get(&t, "/obj/a", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    // changed at the origin: the new body replaces the old
    tokio::time::sleep(Duration::from_millis(2100)).await;
    *o.ctl.obj_body.lock() = "version 2".into();
    let (_, cs, body, _) = get(&t, "/obj/a", &[]).await;
    assert_eq!(body, "version 2");
    assert!(cs.contains("fwd-status=200"), "{cs}");
    let (_, cs, body, _) = get(&t, "/obj/a", &[]).await;
    assert_eq!(body, "version 2");
    assert!(cs.contains("hit"), "{cs}");
}

#[tokio::test]
async fn vary_keeps_separate_variants() {
    let o = Origin::start("o").await;
    o.ctl
        .obj_headers
        .lock()
        .push(("cache-control".into(), "max-age=60".into()));
    o.ctl
        .obj_headers
        .lock()
        .push(("vary".into(), "Accept-Language".into()));
    *o.ctl.obj_body.lock() = "hello in {lang}".into();
    let t = start_in(tempfile::tempdir().unwrap(), &pop_toml(&o, "")).await;
    for lang in ["en", "vi", "en", "vi"] {
        let (_, _, body, _) = get(&t, "/obj/v", &[("accept-language", lang)]).await;
        assert_eq!(body, format!("hello in {lang}"));
    }
    assert_eq!(o.hits(), 2, "one origin request per variant");
}

#[tokio::test]
async fn concurrent_misses_make_one_origin_request() {
    let (o, t) = setup("max-age=60", "").await;
    o.ctl.delay_ms.store(300, Ordering::Relaxed);
    let c = client();
    let futs: Vec<_> = (0..10).map(|_| c.get(t.url("/obj/c")).send()).collect();
    let mut coalesced = 0;
    for r in futures::future::join_all(futs).await {
        let r = r.unwrap();
        let cs = r.headers()["cache-status"].to_str().unwrap().to_string();
        if cs.contains("hit") {
            coalesced += 1;
        }
        assert_eq!(r.text().await.unwrap(), "version 1");
    }
    assert_eq!(o.hits(), 1, "coalescing failed");
    assert_eq!(coalesced, 9);
}

#[tokio::test]
async fn purge_and_invalidation() {
    let (o, t) = setup("max-age=60", "").await;
    for p in ["/obj/a", "/obj/b", "/obj/c"] {
        get(&t, p, &[]).await;
    }
    assert_eq!(o.hits(), 3);
    let admin = t.server.admin_addr().unwrap();
    let host = t.addr.to_string();
    let r = client()
        .request(
            reqwest::Method::from_bytes(b"PURGE").unwrap(),
            format!("http://{admin}/obj/a"),
        )
        .header("host", host.clone())
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["purged"], 1, "{v}");
    get(&t, "/obj/a", &[]).await;
    get(&t, "/obj/b", &[]).await;
    assert_eq!(o.hits(), 4, "purge of /obj/a only");
    // prefix purge
    let r = client()
        .request(
            reqwest::Method::from_bytes(b"PURGE").unwrap(),
            format!("http://{admin}/obj/*"),
        )
        .header("host", host.clone())
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["purged"], 3, "{v}");
    get(&t, "/obj/b", &[]).await;
    assert_eq!(o.hits(), 5);
    // a POST to the URL invalidates it
    let r = client()
        .post(t.url("/obj/b"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, cs, _, _) = get(&t, "/obj/b", &[]).await;
    assert!(cs.contains("fwd=miss"), "POST did not invalidate: {cs}");
    // so does any method that is not safe, an unknown one too
    let (_, cs, _, _) = get(&t, "/obj/b", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    let r = client()
        .request(
            reqwest::Method::from_bytes(b"M-SEARCH").unwrap(),
            t.url("/obj/b"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, cs, _, _) = get(&t, "/obj/b", &[]).await;
    assert!(cs.contains("fwd=miss"), "M-SEARCH did not invalidate: {cs}");
}

#[tokio::test]
async fn directive_names_are_case_insensitive() {
    // Max-Age=60 is fresh for a minute; No-Store is not stored
    let (o, t) = setup("Public, Max-Age=60", "").await;
    get(&t, "/obj/a", &[]).await;
    let (_, cs, _, _) = get(&t, "/obj/a", &[]).await;
    assert!(cs.contains("hit"), "Max-Age ignored: {cs}");
    assert_eq!(o.hits(), 1);
    let (o, t) = setup("max-age=60, No-Store", "").await;
    get(&t, "/obj/a", &[]).await;
    get(&t, "/obj/a", &[]).await;
    assert_eq!(o.hits(), 2, "No-Store was stored");
}

#[tokio::test]
async fn stale_while_revalidate_and_stale_if_error() {
    let (o, t) = setup("max-age=1, stale-while-revalidate=30", "").await;
    get(&t, "/obj/s", &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    *o.ctl.obj_body.lock() = "version 2".into();
    let started = tokio::time::Instant::now();
    let (_, cs, body, _) = get(&t, "/obj/s", &[]).await;
    assert_eq!(body, "version 1", "stale copy expected while revalidating");
    assert!(cs.contains("stale-while-revalidate"), "{cs}");
    assert!(started.elapsed() < Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, cs, body, _) = get(&t, "/obj/s", &[]).await;
    assert_eq!(body, "version 2", "background refresh did not land");
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(o.hits(), 2);

    let (o, t) = setup("max-age=1, stale-if-error=60", "").await;
    get(&t, "/obj/e", &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    o.ctl.fail_500.store(true, Ordering::Relaxed);
    let (s, cs, body, _) = get(&t, "/obj/e", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, "version 1");
    assert!(
        cs.contains("stale-if-error") && cs.contains("fwd-status=500"),
        "{cs}"
    );
}

#[tokio::test]
async fn ranges_from_a_cached_full_response() {
    let (o, t) = setup("max-age=60", "").await;
    get(&t, "/obj/r", &[]).await;
    let (s, cs, body, h) = get(&t, "/obj/r", &[("range", "bytes=0-6")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, "version");
    assert_eq!(h["content-range"], "bytes 0-6/9");
    assert!(cs.contains("hit"));
    assert_eq!(o.hits(), 1);
    // a Range on a miss: the full object is fetched and stored (as nginx's proxy_cache
    // does without its slice module), the client gets its range, and later ranges hit
    let (s, cs, body, h) = get(&t, "/obj/miss", &[("range", "bytes=2-4")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT, "{cs}");
    assert_eq!(body, "rsi");
    assert_eq!(h["content-range"], "bytes 2-4/9");
    let (s, cs, body, _) = get(&t, "/obj/miss", &[("range", "bytes=0-2")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, "ver");
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn disk_tier_survives_restart_and_drops_corruption() {
    let o = Origin::start("o").await;
    o.ctl
        .obj_headers
        .lock()
        .push(("cache-control".into(), "max-age=300".into()));
    *o.ctl.obj_body.lock() = "kept on disk".into();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let toml = pop_toml(
        &o,
        &format!(
            "disk = {{ path = \"{}\", size = \"10MiB\" }}",
            disk.display()
        ),
    );
    let t = start_in(tempfile::tempdir().unwrap(), &toml).await;
    get(&t, "/obj/d", &[]).await;
    assert_eq!(o.hits(), 1);
    // restarts listen on the same port (the stored request's Host must match)
    let toml = toml.replace("[\"127.0.0.1:0\"]", &format!("[\"{}\"]", t.addr));
    t.server.shutdown(Duration::from_secs(5)).await;
    // a new process-like start with the same disk
    let t = start_in(tempfile::tempdir().unwrap(), &toml).await;
    let (_, cs, body, _) = get(&t, "/obj/d", &[]).await;
    assert_eq!(body, "kept on disk");
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(o.hits(), 1, "restart lost the disk entry");
    t.server.shutdown(Duration::from_secs(5)).await;
    // truncate the file: detected and dropped, never served
    let file = std::fs::read_dir(&disk)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let data = std::fs::read(&file).unwrap();
    std::fs::write(&file, &data[..data.len() / 2]).unwrap();
    let t = start_in(tempfile::tempdir().unwrap(), &toml).await;
    let (_, cs, body, _) = get(&t, "/obj/d", &[]).await;
    assert_eq!(body, "kept on disk");
    assert!(cs.contains("fwd=miss"), "{cs}");
    assert_eq!(o.hits(), 2);
    let m = client()
        .get(format!("http://{}/metrics", t.server.admin_addr().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("hopline_cache_events_total{cache=\"pop\",event=\"disk_corrupt\"} 1"),
        "{m}"
    );
}

/// An origin that answers the first request with a cacheable 200 (an ETag, one second of
/// freshness) and every conditional request with a bare 304 (no ETag, no Cache-Control).
async fn bare_304_origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let h2 = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let hits = h2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        buf.drain(..i + 4);
                        hits.fetch_add(1, Ordering::SeqCst);
                        let answer: &[u8] = if head.contains("if-none-match") {
                            b"HTTP/1.1 304 Not Modified\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nCache-Control: max-age=1\r\nContent-Length: 2\r\n\r\nv1"
                        };
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn a_bare_304_refreshes_the_entry_and_the_client_gets_the_stored_200() {
    let (addr, hits) = bare_304_origin().await;
    let toml = format!(
        "access_log = \"off\"\n[cache.pop]\nmemory = \"1MiB\"\n[upstream.app]\nservers = [\"{addr}\"]\n[[site]]\nlisten = [\"127.0.0.1:0\"]\n  [[site.route]]\n  path = \"/\"\n  proxy = \"app\"\n  cache = \"pop\"\n"
    );
    let t = start_in(tempfile::tempdir().unwrap(), &toml).await;
    let (s, _, body, _) = get(&t, "/doc", &[]).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "v1"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // stale: the PoP revalidates, the origin answers a bare 304; this client asked no
    // condition of its own, so it gets the stored 200, not an empty 304
    let (s, cs, body, _) = get(&t, "/doc", &[]).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "v1"), "{cs}");
    assert!(cs.contains("fwd-status=304"), "{cs}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // and the entry was refreshed: the next request is a hit, the origin is not asked
    let (s, cs, body, _) = get(&t, "/doc", &[]).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "v1"));
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_clients_own_conditions_are_answered_from_the_store() {
    let (o, t) = setup("max-age=60", "").await;
    let (_, _, _, h) = get(&t, "/obj/c", &[]).await;
    let etag = h["etag"].to_str().unwrap().to_string();
    // If-None-Match, weak comparison: 304 with the validators, from the store
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".into(),
    ] {
        let (s, cs, body, h) = get(&t, "/obj/c", &[("if-none-match", &inm)]).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED, "{inm}: {cs}");
        assert!(body.is_empty());
        assert_eq!(h["etag"].to_str().unwrap(), etag);
        assert!(cs.contains("hit"), "{cs}");
    }
    let (s, _, body, _) = get(&t, "/obj/c", &[("if-none-match", "\"other\"")]).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "version 1"));
    assert_eq!(o.hits(), 1, "all answered by the PoP");
}

#[tokio::test]
async fn targeted_cache_control_decides_for_the_pop_only() {
    // CDN-Cache-Control (RFC 9213) over Cache-Control, for the PoP; clients see the origin's
    let (o, t) = setup("no-store", "").await;
    o.ctl
        .obj_headers
        .lock()
        .push(("cdn-cache-control".into(), "max-age=60".into()));
    get(&t, "/obj/t", &[]).await;
    let (_, cs, _, h) = get(&t, "/obj/t", &[]).await;
    assert!(cs.contains("hit"), "CDN-Cache-Control ignored: {cs}");
    assert_eq!(
        h["cache-control"], "no-store",
        "clients must get the origin's Cache-Control"
    );
    assert_eq!(o.hits(), 1);
    // a field targeted at this cache alone wins over CDN-Cache-Control and is not forwarded
    let (o, t) = setup("no-store", "targeted_field = \"Hopline-Cache-Control\"").await;
    {
        let mut h = o.ctl.obj_headers.lock();
        h.push(("cdn-cache-control".into(), "no-store".into()));
        h.push(("hopline-cache-control".into(), "max-age=60".into()));
    }
    let (_, _, _, h) = get(&t, "/obj/t", &[]).await;
    assert!(h.get("hopline-cache-control").is_none(), "{h:?}");
    let (_, cs, _, h) = get(&t, "/obj/t", &[]).await;
    assert!(cs.contains("hit"), "the targeted field was ignored: {cs}");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h.get("hopline-cache-control").is_none());
    assert!(h.get("x-hopline-client-cache-control").is_none());
    assert_eq!(o.hits(), 1);
}

#[tokio::test]
async fn set_cookie_responses_are_stored_without_the_cookie() {
    let (o, t) = setup("max-age=60", "").await;
    o.ctl
        .obj_headers
        .lock()
        .push(("set-cookie".into(), "session=for-the-first-client".into()));
    let (_, cs, _, h) = get(&t, "/obj/s", &[]).await;
    assert!(cs.contains("stored"), "{cs}");
    assert_eq!(
        h["set-cookie"], "session=for-the-first-client",
        "the miss keeps its cookie"
    );
    let (_, cs, body, h) = get(&t, "/obj/s", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(body, "version 1");
    assert!(
        h.get("set-cookie").is_none(),
        "a cookie replayed to another client"
    );
    assert_eq!(o.hits(), 1);
}

#[tokio::test]
async fn store_set_cookie_keeps_the_cookie_for_hits_when_asked() {
    let (o, t) = setup("max-age=60", "store_set_cookie = true").await;
    o.ctl
        .obj_headers
        .lock()
        .push(("set-cookie".into(), "lang=fr; Path=/".into()));
    let (_, cs, _, h) = get(&t, "/obj/k", &[]).await;
    assert!(cs.contains("stored"), "{cs}");
    assert_eq!(h["set-cookie"], "lang=fr; Path=/");
    let (_, cs, _, h) = get(&t, "/obj/k", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(
        h["set-cookie"], "lang=fr; Path=/",
        "stored with the response"
    );
    assert_eq!(o.hits(), 1);
}

#[tokio::test]
async fn directives_reach_clients_as_the_origin_wrote_them() {
    // read case-insensitively (a hit: max-age), passed on unchanged, on the miss and the hit
    let (o, t) = setup("Public, Max-Age=60, Must-Revalidate", "").await;
    let (_, cs, _, h) = get(&t, "/obj/n", &[]).await;
    assert!(cs.contains("stored"), "{cs}");
    assert_eq!(h["cache-control"], "Public, Max-Age=60, Must-Revalidate");
    let (_, cs, _, h) = get(&t, "/obj/n", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(h["cache-control"], "Public, Max-Age=60, Must-Revalidate");
    assert!(h.get("x-hopline-client-cache-control").is_none());
    assert_eq!(o.hits(), 1);
    // `No-CaChE` is no-cache for the cache (revalidated every time), and kept as written
    let (o, t) = setup("max-age=60, No-CaChE", "").await;
    let (_, _, _, h) = get(&t, "/obj/n", &[]).await;
    assert_eq!(h["cache-control"], "max-age=60, No-CaChE");
    let (_, cs, _, h) = get(&t, "/obj/n", &[]).await;
    assert!(!cs.contains("; hit"), "no-cache must revalidate: {cs}");
    assert_eq!(h["cache-control"], "max-age=60, No-CaChE");
    assert_eq!(o.hits(), 2);
}

#[tokio::test]
async fn a_targeted_field_with_a_value_of_the_wrong_type_is_ignored_whole() {
    // CDN-Cache-Control: s-maxage must be an integer; a string makes the whole field
    // invalid (RFC 9213 §2.1), and Cache-Control decides
    for bad in [
        "max-age=60, s-maxage=\"30\"",
        "max-age=60, s-maxage=3.5",
        "max-age=(60)",
        "max-age=60,,",
    ] {
        let (o, t) = setup("no-store", "").await;
        o.ctl
            .obj_headers
            .lock()
            .push(("cdn-cache-control".into(), bad.into()));
        get(&t, "/obj/v", &[]).await;
        let (_, cs, _, _) = get(&t, "/obj/v", &[]).await;
        assert!(!cs.contains("hit"), "{bad}: {cs}");
        assert_eq!(o.hits(), 2, "{bad}");
    }
    // ...and a valid one still decides
    let (o, t) = setup("no-store", "").await;
    o.ctl.obj_headers.lock().push((
        "cdn-cache-control".into(),
        "max-age=60, s-maxage=30, foo=\"bar\"".into(),
    ));
    get(&t, "/obj/v", &[]).await;
    let (_, cs, _, _) = get(&t, "/obj/v", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(o.hits(), 1);
}

/// `POST /.hopline/purge` on the node's admin listener: (status, JSON answer).
async fn purge(t: &TestServer, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    let admin = t.server.admin_addr().unwrap();
    let r = client()
        .post(format!("http://{admin}/.hopline/purge"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn purge_by_tag_url_prefix_and_host_through_the_admin_api() {
    let (o, t) = setup("max-age=60", "").await;
    o.ctl
        .obj_headers
        .lock()
        .push(("surrogate-key".into(), "catalog p{path}".into()));
    for p in ["/obj/a", "/obj/b", "/obj/c/1"] {
        get(&t, p, &[]).await;
    }
    assert_eq!(o.hits(), 3);
    // one tag: one object
    let (s, v) = purge(&t, serde_json::json!({"tag": "p/obj/a"})).await;
    assert_eq!(
        (s, v["purged"].as_u64(), v["caches"]["pop"].as_u64()),
        (StatusCode::OK, Some(1), Some(1)),
        "{v}"
    );
    let (_, cs, _, _) = get(&t, "/obj/a", &[]).await;
    assert!(cs.contains("fwd=miss"), "{cs}");
    let (_, cs, _, _) = get(&t, "/obj/b", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(o.hits(), 4);
    // the tag every object carries: all three; again: none (idempotent)
    let (_, v) = purge(&t, serde_json::json!({"tag": "catalog"})).await;
    assert_eq!(v["purged"], 3, "{v}");
    let (_, v) = purge(&t, serde_json::json!({"tag": "catalog"})).await;
    assert_eq!(v["purged"], 0, "{v}");
    for p in ["/obj/a", "/obj/b", "/obj/c/1"] {
        get(&t, p, &[]).await;
    }
    assert_eq!(o.hits(), 7);
    // a URL, a prefix, a host
    let (_, v) = purge(&t, serde_json::json!({"url": t.url("/obj/a")})).await;
    assert_eq!(v["purged"], 1, "{v}");
    let prefix = t.url("/obj/c/");
    let (_, v) = purge(&t, serde_json::json!({"prefix": prefix})).await;
    assert_eq!(v["purged"], 1, "{v}");
    let (_, v) = purge(&t, serde_json::json!({"host": "127.0.0.1"})).await;
    assert_eq!(v["purged"], 1, "only /obj/b was left: {v}");
    // refused, saying why
    for (body, why) in [
        (
            serde_json::json!({"tag": "a", "url": "http://x/"}),
            "exactly one of",
        ),
        (serde_json::json!({"url": "/relative"}), "absolute URL"),
        (serde_json::json!({"tag": "two words"}), "one surrogate key"),
        (serde_json::json!({"tags": "x"}), "unknown field"),
    ] {
        let (s, v) = purge(&t, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains(why), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_serves_stale_while_exactly_one_request_revalidates() {
    let (o, t) = setup("max-age=600, stale-while-revalidate=60", "").await;
    o.ctl
        .obj_headers
        .lock()
        .push(("cache-tag".into(), "hot".into()));
    get(&t, "/obj/hot", &[]).await;
    let (_, cs, _, _) = get(&t, "/obj/hot", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    *o.ctl.obj_body.lock() = "version 2".into();
    let (_, v) = purge(&t, serde_json::json!({"tag": "hot", "soft": true})).await;
    assert_eq!(
        (v["purged"].as_u64(), v["soft"].as_bool()),
        (Some(1), Some(true)),
        "{v}"
    );
    assert_eq!(o.hits(), 1);
    // 1,000 requests at once: every one answered at once (stale), one origin request
    let c = client();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (c, url) = (c.clone(), t.url("/obj/hot"));
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                r.text().await.unwrap()
            })
        })
        .collect();
    let mut old = 0;
    for task in tasks {
        if task.await.unwrap() == "version 1" {
            old += 1;
        }
    }
    assert!(old > 0, "served stale while revalidating");
    // (the background revalidation may finish after the last answer on a busy machine)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while o.hits() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(o.hits(), 2, "exactly one origin request");
    // the revalidation brought the new version, fresh again
    let (_, cs, body, _) = get(&t, "/obj/hot", &[]).await;
    assert_eq!(body, "version 2");
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(o.hits(), 2);
    // without stale-while-revalidate a soft-purged object is revalidated before it is served
    let (o, t) = setup("max-age=600", "").await;
    get(&t, "/obj/x", &[]).await;
    let (_, v) = purge(&t, serde_json::json!({"all": true, "soft": true})).await;
    assert_eq!(v["purged"], 1, "{v}");
    let (_, cs, body, _) = get(&t, "/obj/x", &[]).await;
    assert_eq!(body, "version 1");
    assert!(
        cs.contains("fwd=stale") || cs.contains("revalidated"),
        "{cs}"
    );
    assert_eq!(
        (o.hits(), o.ctl.not_modified.load(Ordering::Relaxed)),
        (2, 1)
    );
    let (_, cs, _, _) = get(&t, "/obj/x", &[]).await;
    assert!(cs.contains("hit"), "fresh again after the 304: {cs}");
}
