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
