//! Presence: who is subscribed to a channel (WebSocket subscriptions and SSE streams, with
//! their token's `sub` and `info`), through the real edge — the publishers' `?presence`,
//! the WebSocket `presence` command; members leave when they unsubscribe or go.

mod common;

use std::time::Duration;

use common::*;
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn user_token(sub: &str, info: Option<serde_json::Value>) -> String {
    hopline_realtime::token::sign(
        &hopline_realtime::token::Claims {
            channels: vec!["*".into()],
            exp: None,
            sub: Some(sub.into()),
            info,
        },
        SECRET,
    )
}

async fn presence(edge: &Edge, channel: &str, ask: &str) -> (u16, serde_json::Value) {
    let r = client()
        .get(edge.url(&format!("/live/{channel}?{ask}")))
        .bearer_auth(token(&["*"]))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::json!(text)),
    )
}

/// Wait until the channel shows `n` members.
async fn members_become(edge: &Edge, channel: &str, n: u64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, v) = presence(edge, channel, "presence").await;
        if v["members"] == n {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel}: never {n} members: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn who_is_subscribed_and_when_they_leave() {
    let edge = start(&hub_toml(&format!(
        "subscribe = {{ jwt_secret = \"{SECRET}\" }}\npresence = true"
    )))
    .await;
    // Ada on WebSocket (room by URL, lobby by command), Bob on SSE
    let ada = user_token("ada", Some(serde_json::json!({"name": "Ada"})));
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/live/room?token={ada}", edge.addr))
            .await
            .unwrap();
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    ws.send(WsMessage::text(r#"{"type":"subscribe","channel":"lobby"}"#))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    let mut sse = client()
        .get(edge.url("/live/room"))
        .header("accept", "text/event-stream")
        .bearer_auth(user_token("bob", None))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let _ = tokio::time::timeout(Duration::from_secs(5), sse.chunk()).await;

    let v = members_become(&edge, "room", 2).await;
    assert_eq!(v["users"], 2, "{v}");
    let clients = v["clients"].as_array().unwrap();
    let ada_m = clients.iter().find(|c| c["sub"] == "ada").unwrap();
    assert_eq!(ada_m["transport"], "websocket");
    assert_eq!(ada_m["info"]["name"], "Ada");
    assert_eq!(ada_m["client"].as_str().unwrap().len(), 16);
    let bob_m = clients.iter().find(|c| c["sub"] == "bob").unwrap();
    assert_eq!(bob_m["transport"], "sse");
    assert!(bob_m.get("info").is_none(), "{bob_m}");
    // the same connection is one client on both its channels
    let v = members_become(&edge, "lobby", 1).await;
    assert_eq!(v["clients"][0]["client"], ada_m["client"]);
    // counts only
    let (s, v) = presence(&edge, "room", "presence=stats").await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["members"].as_u64(), v["users"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(v.get("clients").is_none(), "{v}");
    // a subscriber asks over its WebSocket
    ws.send(WsMessage::text(r#"{"type":"presence","channel":"room"}"#))
        .await
        .unwrap();
    let p = next(&mut ws).await;
    assert_eq!(
        (p["type"].as_str(), p["members"].as_u64()),
        (Some("presence"), Some(2)),
        "{p}"
    );
    // leaving: unsubscribe, disconnect, SSE stream closed
    ws.send(WsMessage::text(
        r#"{"type":"unsubscribe","channel":"lobby"}"#,
    ))
    .await
    .unwrap();
    members_become(&edge, "lobby", 0).await;
    ws.close(None).await.unwrap();
    drop(ws);
    let v = members_become(&edge, "room", 1).await;
    assert_eq!(v["clients"][0]["sub"], "bob");
    drop(sse);
    members_become(&edge, "room", 0).await;
    // publishers only; a bad ask is refused
    let r = client()
        .get(edge.url("/live/room?presence"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, _) = presence(&edge, "room", "presence=everyone").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn a_hub_without_presence_says_so() {
    let edge = start(&hub_toml("")).await;
    let (s, v) = presence(&edge, "room", "presence").await;
    assert_eq!(s, 404);
    assert!(v.as_str().unwrap().contains("presence = true"), "{v}");
}
