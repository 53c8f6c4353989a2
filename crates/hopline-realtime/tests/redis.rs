//! Two hopline nodes on one Redis (Debian's redis-server, started here): a subscriber on
//! one node receives what was published on the other, a client resumes on the other node
//! from its position, and Redis dying is answered (503, close 1011) without hanging.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use hopline_testkit::Redis;

async fn node(redis: &Redis) -> Edge {
    start(&hub_toml(&format!(
        "engine = \"redis://127.0.0.1:{}\"",
        redis.port
    )))
    .await
}

async fn poll(edge: &Edge, channel: &str, since: &str) -> serde_json::Value {
    client()
        .get(edge.url(&format!("/live/{channel}?since={since}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_nodes_share_channels_through_redis() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (node(&redis).await, node(&redis).await);
    // a WebSocket subscriber on B
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/orders", b.addr))
        .await
        .unwrap();
    let sub = ws.next().await.unwrap().unwrap();
    let sub: serde_json::Value =
        serde_json::from_str(sub.to_text().unwrap()).unwrap_or_else(|e| panic!("{e}: {sub:?}"));
    assert_eq!(sub["type"], "subscribed");
    let epoch = sub["epoch"].as_str().unwrap().to_string();
    // published on A (and on B): one order, gapless offsets
    let p1 = publish(&a, "orders", "from A").await;
    let p2 = publish(&b, "orders", "from B").await;
    let p3 = publish(&a, "orders", "from A again").await;
    assert_eq!(
        (
            p1["offset"].as_u64(),
            p2["offset"].as_u64(),
            p3["offset"].as_u64()
        ),
        (Some(1), Some(2), Some(3))
    );
    assert_eq!(
        p1["epoch"].as_str().unwrap(),
        epoch,
        "both nodes agree on the epoch"
    );
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("event from the other node")
            .unwrap()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(m.to_text().unwrap()).unwrap_or_else(|e| panic!("{e}: {m:?}"));
        got.push((
            v["offset"].as_u64().unwrap(),
            v["data"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        got,
        vec![
            (1, "from A".into()),
            (2, "from B".into()),
            (3, "from A again".into())
        ]
    );
    // a client that read up to 1 on A resumes on B without loss
    let r = poll(&b, "orders", &format!("{epoch}:1")).await;
    assert_eq!(r["recovered"], true);
    let offsets: Vec<u64> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3]);
    // a node that never saw the channel loads its history from Redis
    let c = node(&redis).await;
    let r = poll(&c, "orders", &format!("{epoch}:0")).await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["events"].as_array().unwrap().len(), 3);

    // Redis dies: publish answers 503 quickly, the WebSocket is closed with 1011
    redis.kill();
    let started = tokio::time::Instant::now();
    let r = client()
        .post(a.url("/live/orders"))
        .bearer_auth(token(&["*"]))
        .body("lost?")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "publish hung for {:?}",
        started.elapsed()
    );
    // so does a deletion, and the channel stays (its subscribers are not told of one)
    let r = client()
        .delete(a.url("/live/orders"))
        .bearer_auth(token(&["*"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let hub_a = a.hubs.get("live").unwrap();
    assert!(hub_a.existing("orders").is_some_and(|c| !c.is_gone()));
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("told within 10 s")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.unwrap().code), 1011);
    // Redis is back (empty: --save ''): publishing works again, under a new epoch, and a
    // client resuming from the old position is told it could not recover
    let _redis = Redis::start_on(redis.port);
    let mut back = None;
    for _ in 0..50 {
        let r = client()
            .post(a.url("/live/orders"))
            .bearer_auth(token(&["*"]))
            .body("after")
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            back = Some(r.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = back.expect("publish works again once Redis is back");
    assert_ne!(
        back["epoch"].as_str().unwrap(),
        epoch,
        "history was lost: a new epoch"
    );
    let mut resumed = None;
    for _ in 0..50 {
        let r = poll(&b, "orders", &format!("{epoch}:3")).await;
        if r["epoch"] == back["epoch"] {
            resumed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = resumed.expect("node B follows the new history");
    assert_eq!(r["recovered"], false, "{r}");
}

/// A channel deleted on node A: Redis's history goes, a WebSocket and an SSE subscriber
/// on node B are told, and both nodes start the channel again under one new epoch.
#[tokio::test]
async fn a_deletion_on_one_node_reaches_the_subscribers_of_another() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let first = publish(&a, "doomed", "e1").await;
    let old_epoch = first["epoch"].as_str().unwrap().to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/doomed", b.addr))
        .await
        .unwrap();
    let sub = next_json(&mut ws).await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["epoch"], old_epoch.as_str());
    let sse = client()
        .get(b.url("/live/doomed"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    // (let B's follower take in the channel)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client()
        .delete(a.url("/live/doomed"))
        .bearer_auth(token(&["doomed"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (
            v["epoch"].as_str(),
            v["offset"].as_u64(),
            v["messages"].as_u64()
        ),
        (Some(&*old_epoch), Some(1), Some(1)),
        "{v}"
    );
    // B's WebSocket is told
    // (after e1, if the subscription had not read it yet: the next message with a type)
    let told = loop {
        let v = next_json(&mut ws).await;
        if v.get("type").is_some() {
            break v;
        }
    };
    assert_eq!(told["type"], "deleted", "{told}");
    assert_eq!(
        hub_counter(&b, |m| &m.channels_deleted),
        1,
        "B let its channel go"
    );
    // B's SSE stream ends with the event
    let text = tokio::time::timeout(Duration::from_secs(5), sse.text())
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(
        text.ends_with("event: deleted\ndata: {\"channel\":\"doomed\"}\n\n"),
        "{text}"
    );
    // Redis no longer has it: deleting again is 404 from either node
    let r = client()
        .delete(b.url("/live/doomed"))
        .bearer_auth(token(&["doomed"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // published again on B: a new epoch, offset 1, which A serves too
    let again = publish(&b, "doomed", "new life").await;
    assert_eq!(again["offset"], 1);
    assert_ne!(again["epoch"], old_epoch.as_str());
    let r = poll(
        &a,
        "doomed",
        &format!("{}:0", again["epoch"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["events"][0]["data"], "new life");
    // B follows the new epoch from its start: what A publishes next reaches B's subscribers
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/doomed", b.addr))
        .await
        .unwrap();
    let _subscribed = ws.next().await.unwrap().unwrap();
    let p = publish(&a, "doomed", "second life").await;
    assert_eq!(p["offset"], 2);
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["offset"].as_u64(), e["data"].as_str()),
        (Some(2), Some("second life")),
        "{e}"
    );
}

/// A node that had a channel and let it go (swept: nobody listening, history expired)
/// follows the channel's next life from its start: after a deletion elsewhere and a new
/// epoch, the offsets it had read of the old one do not hide the new one's first offsets.
#[tokio::test]
async fn a_swept_channel_is_followed_again_from_its_new_start() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let cfg = hub_toml(&format!(
        "engine = \"redis://127.0.0.1:{}\"\nhistory_ttl = \"1s\"",
        redis.port
    ));
    let (a, b) = (start(&cfg).await, start(&cfg).await);
    // B reads the channel up to offset 3 of its first epoch, then nobody listens there
    for i in 1..=3 {
        publish(&a, "cycle", &format!("old {i}")).await;
    }
    let r = poll(&b, "cycle", "").await;
    assert_eq!(r["offset"], 3, "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await; // (B's follower takes it in)
    tokio::time::sleep(Duration::from_millis(1100)).await; // history expires
    let hub_b = b.hubs.get("live").unwrap();
    hub_b.sweep();
    assert!(hub_b.existing("cycle").is_none(), "swept from B");
    // deleted on A, started again there
    let r = client()
        .delete(a.url("/live/cycle"))
        .bearer_auth(token(&["cycle"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = publish(&a, "cycle", "new 1").await;
    assert_eq!(first["offset"], 1);
    // a subscriber on B: the next publications on A reach it (offsets 2 and 3 of the new
    // epoch, below the 3 B had read of the old one)
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/cycle", b.addr))
        .await
        .unwrap();
    let _subscribed = ws.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&a, "cycle", "new 2").await;
    publish(&a, "cycle", "new 3").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let v = next_json(&mut ws).await;
        got.push((
            v["offset"].as_u64().unwrap(),
            v["data"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        got,
        vec![(2, "new 2".to_string()), (3, "new 3".to_string())]
    );
}

/// `?last=N` on the Redis engine: a node that never saw the channel answers the latest N
/// of the shared history (loaded from Redis) with the shared offsets, a long poll with
/// `last` is answered at once from it, and one on an empty channel waits for a
/// publication made on the other node.
#[tokio::test]
async fn last_n_reads_the_shared_history_on_any_node() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut epoch = String::new();
    for i in 1..=4 {
        epoch = publish(&a, "feed", &format!("f{i}")).await["epoch"]
            .as_str()
            .unwrap()
            .to_string();
    }
    let get = |edge: &Edge, path: &str| {
        let url = edge.url(path);
        async move {
            let r = client().get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let offsets = |v: &serde_json::Value| -> Vec<u64> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["offset"].as_u64().unwrap())
            .collect()
    };
    let r = get(&b, "/live/feed?last=2").await;
    assert_eq!(offsets(&r), [3, 4], "{r}");
    assert_eq!(r["events"][1]["data"], "f4");
    assert_eq!(r["recovered"], true);
    assert_eq!(r["position"], format!("{epoch}:4"));
    let started = tokio::time::Instant::now();
    let r = get(&b, "/live/feed?last=1&wait=1").await;
    assert_eq!(offsets(&r), [4], "{r}");
    assert!(started.elapsed() < Duration::from_millis(1000));
    // an empty channel: held on B until A publishes
    let held = tokio::spawn({
        let url = b.url("/live/later?last=3&wait=1");
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&a, "later", "l1").await;
    let r = held.await.unwrap();
    assert_eq!(offsets(&r), [1], "{r}");
    assert_eq!(r["events"][0]["data"], "l1");
}
