//! Real-time channels through the real edge on loopback: every transport reads one log;
//! tokens, limits, bad input; WebSocket checked with tungstenite as an independent peer
//! and with raw frames for what a well-behaved client never sends.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn offsets(v: &serde_json::Value) -> Vec<u64> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect()
}

/// Read SSE events (id, data) from a streaming response until `n` arrived.
async fn sse_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String)> {
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .expect("an SSE chunk in time")
            .unwrap()
            .expect("stream open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(i) = text.find("\n\n") {
            let block: String = text[..i].to_string();
            text.drain(..i + 2);
            let mut id = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v.to_string());
                }
            }
            if let Some(id) = id
                && !block.contains("event: gap")
            {
                out.push((id, data.join("\n")));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_transport_reads_the_same_log() {
    let edge = start(&hub_toml("")).await;
    let c = client();
    // positions before anything is published
    let start_pos: serde_json::Value = c
        .get(edge.url("/live/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(start_pos["recovered"], true);
    assert_eq!(start_pos["offset"], 0);
    let since = start_pos["position"].as_str().unwrap().to_string();
    let epoch = start_pos["epoch"].as_str().unwrap().to_string();

    // SSE, WebSocket and a long poll subscribe first
    let mut sse = c
        .get(edge.url("/live/orders"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/live/orders", edge.addr))
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    let subscribed = ws.next().await.unwrap().unwrap();
    let subscribed: serde_json::Value =
        serde_json::from_str(subscribed.to_text().unwrap()).unwrap();
    assert_eq!(subscribed["type"], "subscribed");
    let long_poll = tokio::spawn({
        let url = edge.url(&format!("/live/orders?since={since}&wait=1"));
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
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 1..=5 {
        let p = publish(&edge, "orders", &format!("order {i}\nline two")).await;
        assert_eq!(p["offset"], i);
        assert_eq!(p["epoch"].as_str().unwrap(), epoch);
    }
    // the long poll was answered by the first publication (at least)
    let lp = long_poll.await.unwrap();
    assert!(!offsets(&lp).is_empty());
    assert_eq!(offsets(&lp)[0], 1);
    // the short poll from the start: all five, in order
    let poll: serde_json::Value = c
        .get(edge.url(&format!("/live/orders?since={since}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(offsets(&poll), [1, 2, 3, 4, 5]);
    assert_eq!(poll["events"][2]["data"], "order 3\nline two");
    assert_eq!(poll["offset"], 5);
    // SSE: ids EPOCH:OFFSET, multi-line data as data: lines
    let events = sse_events(&mut sse, 5).await;
    let ids: Vec<String> = events.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        ids,
        (1..=5).map(|i| format!("{epoch}:{i}")).collect::<Vec<_>>()
    );
    assert_eq!(events[0].1, "order 1\nline two");
    // WebSocket: the same offsets and data
    let mut got = Vec::new();
    while got.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(v["channel"], "orders");
        assert_eq!(v["epoch"].as_str().unwrap(), epoch);
        got.push((
            v["offset"].as_u64().unwrap(),
            v["data"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(got[4].1, "order 5\nline two");
    ws.close(None).await.unwrap();

    // the admin listener counts them
    let status = edge.status().await;
    let hub = &status["services"]["realtime.live"];
    assert_eq!(hub["publications"], 5, "{status}");
    assert!(hub["deliveries"].as_u64().unwrap() >= 15, "{status}");
    let metrics = c
        .get(format!(
            "http://{}/metrics",
            edge.server.admin_addr().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hopline_realtime_publications_total{hub=\"live\"} 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sse_resumes_from_last_event_id_and_says_when_it_cannot() {
    let edge = start(&hub_toml("")).await;
    for i in 1..=3 {
        publish(&edge, "news", &format!("n{i}")).await;
    }
    let epoch = publish(&edge, "news", "n4").await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    // a browser reconnecting after event 2
    let mut sse = client()
        .get(edge.url("/live/news"))
        .header("accept", "text/event-stream")
        .header("last-event-id", format!("{epoch}:2"))
        .send()
        .await
        .unwrap();
    let got = sse_events(&mut sse, 2).await;
    assert_eq!(
        got,
        vec![
            (format!("{epoch}:3"), "n3".into()),
            (format!("{epoch}:4"), "n4".into())
        ]
    );
    // another epoch (e.g. a restarted memory engine): a gap event says so
    let mut sse = client()
        .get(edge.url("/live/news"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "OtherEpoch:2")
        .send()
        .await
        .unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(5), sse.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.contains("retry: "), "{text}");
    assert!(
        text.contains("event: gap") && text.contains("\"recovered\":false"),
        "{text}"
    );
}

#[tokio::test]
async fn many_sse_streams_share_one_http2_connection() {
    let edge = start(&hub_toml("")).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..20 {
        let r = h2
            .get(edge.url("/live/h2"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        streams.push(r);
    }
    assert_eq!(
        edge.server.open_connections(),
        1,
        "one connection for twenty streams"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&edge, "h2", "hello").await;
    for s in &mut streams {
        let got = sse_events(s, 1).await;
        assert_eq!(got[0].1, "hello");
    }
}

#[tokio::test]
async fn long_polls_are_held_then_answered_empty() {
    let edge = start(&hub_toml("")).await;
    let started = tokio::time::Instant::now();
    let r: serde_json::Value = client()
        .get(edge.url("/live/quiet?wait=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(1400),
        "held {held:?} (long_poll_ms = 1500)"
    );
    assert!(held < Duration::from_millis(3000), "held {held:?}");
    assert_eq!(offsets(&r), Vec::<u64>::new());
    assert_eq!(r["recovered"], true);
    // many held polls, then one publication answers them all
    let mut held = Vec::new();
    // one client (building one loads its TLS roots: 500 of them cost seconds of this
    // test's single thread); concurrent requests each get a connection of their own
    let crowd = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..500 {
        let url = edge.url("/live/crowd?wait=1");
        let c = crowd.clone();
        held.push(tokio::spawn(async move {
            c.get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    publish(&edge, "crowd", "now").await;
    for h in held {
        let v = h.await.unwrap();
        // a poll that arrived after the publication waited for the next one and timed
        // out empty; every other one got the event
        if let Some(e) = v["events"].as_array().unwrap().first() {
            assert_eq!(e["data"], "now");
        }
    }
}

#[tokio::test]
async fn tokens_limits_and_bad_input() {
    let edge = start(&hub_toml("max_message = \"1KiB\"\nclient_queue = \"4KiB\"")).await;
    let c = client();
    let url = edge.url("/live/orders");
    // publishing needs a token that allows the channel
    assert_eq!(c.post(&url).body("x").send().await.unwrap().status(), 401);
    assert_eq!(
        c.post(&url)
            .bearer_auth("not.a.token")
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.post(&url)
            .bearer_auth(token(&["news.*"]))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        c.post(&url)
            .bearer_auth(token(&["orders"]))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let other = hopline_realtime::token::sign(
        &hopline_realtime::token::Claims {
            channels: vec!["*".into()],
            exp: None,
            sub: None,
            info: None,
        },
        "another-secret-entirely-here",
    );
    assert_eq!(
        c.post(&url)
            .bearer_auth(other)
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // ?token= works for clients that cannot set headers
    let r = c
        .post(format!("{url}?token={}", token(&["orders"])))
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // too big
    assert_eq!(
        c.post(&url)
            .bearer_auth(token(&["*"]))
            .body(vec![b'a'; 1025])
            .send()
            .await
            .unwrap()
            .status(),
        413
    );
    // bad positions and names
    assert_eq!(
        c.get(format!("{url}?since=garbage"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(format!("{url}?since=abc:-1"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    for bad in ["/live/", "/live/a%20b", "/live/a/b", "/live/%ff%fe"] {
        let (r, _) = raw(
            edge.addr,
            format!("GET {bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 400"), "{bad}: {r}");
    }
    let long = format!("/live/{}", "x".repeat(200));
    assert_eq!(c.get(edge.url(&long)).send().await.unwrap().status(), 400);
    let r = c.put(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST, DELETE");
}

#[tokio::test]
async fn subscribing_can_require_a_token() {
    let edge = start(&hub_toml(&format!(
        "subscribe = {{ jwt_secret = \"{SECRET}\" }}"
    )))
    .await;
    let c = client();
    assert_eq!(
        c.get(edge.url("/live/private"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(edge.url("/live/private"))
            .bearer_auth(token(&["public"]))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let t = token(&["private"]);
    assert_eq!(
        c.get(edge.url(&format!("/live/private?token={t}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // WebSocket: refused at the handshake without one
    let (_, head, _) = ws_raw(edge.addr, "/live/private", "").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (_, head, _) = ws_raw(edge.addr, &format!("/live/private?token={t}"), "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

#[tokio::test]
async fn websocket_commands_subscribe_publish_and_resume() {
    let edge = start(&hub_toml("max_subscriptions = 3")).await;
    for i in 1..=3 {
        publish(&edge, "b", &format!("b{i}")).await;
    }
    let epoch = publish(&edge, "b", "b4").await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let t = token(&["*"]);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/live/a?token={t}", edge.addr))
            .await
            .unwrap();
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    // subscribe to b from offset 2: gets 3 and 4 from history
    ws.send(WsMessage::text(format!(
        r#"{{"type":"subscribe","channel":"b","since":"{epoch}:2"}}"#
    )))
    .await
    .unwrap();
    let sub = next(&mut ws).await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["recovered"], true);
    assert_eq!(next(&mut ws).await["data"], "b3");
    assert_eq!(next(&mut ws).await["data"], "b4");
    // publish through the socket; it comes back as an event of a
    ws.send(WsMessage::text(
        r#"{"type":"publish","channel":"a","data":"via ws"}"#,
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next(&mut ws).await);
    }
    assert!(
        seen.iter()
            .any(|v| v["type"] == "published" && v["offset"] == 1),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|v| v["channel"] == "a" && v["data"] == "via ws"),
        "{seen:?}"
    );
    // ping (JSON and protocol), unknown commands, garbage
    ws.send(WsMessage::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["type"], "pong");
    ws.send(WsMessage::text("not json")).await.unwrap();
    assert_eq!(next(&mut ws).await["type"], "error");
    ws.send(WsMessage::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, WsMessage::Pong(b"hi".to_vec().into()));
    // the subscription limit holds
    for ch in ["c", "d"] {
        ws.send(WsMessage::text(format!(
            r#"{{"type":"subscribe","channel":"{ch}"}}"#
        )))
        .await
        .unwrap();
        let v = next(&mut ws).await;
        if ch == "c" {
            assert_eq!(v["type"], "subscribed");
        } else {
            assert_eq!(v["type"], "error", "{v}");
        }
    }
    // the close handshake: our code echoed
    ws.send(WsMessage::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        },
    )))
    .await
    .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(WsMessage::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1000);
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn close_code_for(edge: &Edge, frames: &[u8]) -> u16 {
    let (mut s, head, mut rest) = ws_raw(edge.addr, "/live/bad", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(frames).await.unwrap();
    loop {
        let Some((b0, payload)) = read_frame(&mut s, &mut rest).await else {
            panic!("closed without a close frame");
        };
        if b0 & 0x0f == 8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test]
async fn malformed_frames_close_with_the_right_code() {
    let edge = start(&hub_toml("max_message = \"64KiB\"")).await;
    // reserved bits, bad opcode, unmasked, control > 125, bad UTF-8, close 1005 / 999
    assert_eq!(close_code_for(&edge, &[0xb1, 0x80, 1, 2, 3, 4]).await, 1002);
    assert_eq!(
        close_code_for(&edge, &client_frame(true, false, 0x3, b"")).await,
        1002
    );
    assert_eq!(close_code_for(&edge, &[0x81, 0x01, b'a']).await, 1002);
    assert_eq!(
        close_code_for(&edge, &client_frame(true, false, 0x9, &[0; 126])).await,
        1002
    );
    assert_eq!(
        close_code_for(&edge, &client_frame(true, false, 0x1, &[0xc3, 0x28])).await,
        1007
    );
    assert_eq!(
        close_code_for(
            &edge,
            &client_frame(true, false, 0x8, &1005u16.to_be_bytes())
        )
        .await,
        1002
    );
    assert_eq!(
        close_code_for(
            &edge,
            &client_frame(true, false, 0x8, &999u16.to_be_bytes())
        )
        .await,
        1002
    );
    // a 127-bit length with the top bit set; a 1 GiB announcement: 1009, nothing buffered
    let mut top = vec![0x82, 0xff];
    top.extend_from_slice(&(1u64 << 63).to_be_bytes());
    top.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(close_code_for(&edge, &top).await, 1002);
    let mut gib = vec![0x82, 0xff];
    gib.extend_from_slice(&(1u64 << 30).to_be_bytes());
    gib.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(close_code_for(&edge, &gib).await, 1009);
    // a valid close is echoed
    let mut bye = 1001u16.to_be_bytes().to_vec();
    bye.extend_from_slice(b"leaving");
    assert_eq!(
        close_code_for(&edge, &client_frame(true, false, 0x8, &bye)).await,
        1001
    );
    // handshake errors: wrong version 426, bad key 400
    let r = raw(edge.addr, b"GET /live/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", Duration::from_secs(2)).await.0;
    assert!(
        r.starts_with("HTTP/1.1 426")
            && r.to_ascii_lowercase().contains("sec-websocket-version: 13"),
        "{r}"
    );
    let r = raw(edge.addr, b"GET /live/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n", Duration::from_secs(2)).await.0;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let status = edge.status().await;
    assert!(
        status["services"]["realtime.live"]["websocket_violations"]
            .as_u64()
            .unwrap()
            >= 9,
        "{status}"
    );
}

#[tokio::test]
async fn permessage_deflate_both_ways() {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    let edge = start(&hub_toml("")).await;
    let (mut s, head, mut rest) = ws_raw(
        edge.addr,
        "/live/z",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-extensions: permessage-deflate"),
        "{head}"
    );
    let mut inflate = Decompress::new(false);
    let mut read_text = async |s: &mut tokio::net::TcpStream, rest: &mut Vec<u8>| -> String {
        let (b0, payload) = read_frame(s, rest).await.unwrap();
        assert_eq!(b0, 0xc1, "FIN + RSV1 + text");
        let mut z = payload;
        z.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(4096);
        inflate
            .decompress_vec(&z, &mut out, FlushDecompress::Sync)
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    let first = read_text(&mut s, &mut rest).await;
    assert!(first.contains("\"subscribed\""), "{first}");
    // a compressed command from the client (context kept across messages)
    let mut deflate = Compress::new(Compression::default(), false);
    for _ in 0..2 {
        let mut z = Vec::with_capacity(256);
        deflate
            .compress_vec(br#"{"type":"ping"}"#, &mut z, FlushCompress::Sync)
            .unwrap();
        z.truncate(z.len() - 4);
        s.write_all(&client_frame(true, true, 1, &z)).await.unwrap();
        assert_eq!(read_text(&mut s, &mut rest).await, r#"{"type":"pong"}"#);
    }
    // events arrive compressed, decodable with one inflater kept across messages
    for i in 0..3 {
        publish(
            &edge,
            "z",
            &format!("compressed event {i} {}", "padding ".repeat(20)),
        )
        .await;
        let e = read_text(&mut s, &mut rest).await;
        assert!(e.contains(&format!("compressed event {i}")), "{e}");
    }
}

#[tokio::test]
async fn a_slow_consumer_is_cut_and_never_slows_the_channel() {
    let edge = start(&hub_toml(
        "max_message = \"32KiB\"\nclient_queue = \"64KiB\"",
    ))
    .await;
    // a subscriber that never reads
    let (stuck, head, _) = ws_raw(edge.addr, "/live/firehose", "").await;
    assert!(head.starts_with("HTTP/1.1 101"));
    // a healthy one
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/firehose", edge.addr))
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap(); // subscribed
    // (more than the kernel's socket buffers on loopback hold: several MiB)
    let big = "x".repeat(16000);
    let c = client();
    let t = token(&["*"]);
    let started = tokio::time::Instant::now();
    let mut received = 0;
    for _ in 0..1000 {
        let r = c
            .post(edge.url("/live/firehose"))
            .bearer_auth(&t)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // the healthy subscriber keeps up
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_millis(1), ws.next()).await
        {
            received += 1;
        }
    }
    while received < 1000 {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        received += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let status = edge.status().await;
    assert!(
        status["services"]["realtime.live"]["slow_consumers_cut"]
            .as_u64()
            .unwrap()
            >= 1,
        "{status}"
    );
    drop(stuck);
}

#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    let edge = start(&hub_toml("")).await;
    let tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{}/live/h2ws", edge.addr))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200, "extended CONNECT accepted");
    let mut recv = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut next_frame = async || -> (u8, Vec<u8>) {
        loop {
            if pending.len() >= 2 {
                let len = (pending[1] & 0x7f) as usize;
                assert!(len < 126, "small frames in this test");
                if pending.len() >= 2 + len {
                    let b0 = pending[0];
                    let payload = pending[2..2 + len].to_vec();
                    pending.drain(..2 + len);
                    return (b0, payload);
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), recv.data())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            pending.extend_from_slice(&chunk);
        }
    };
    let (_, sub) = next_frame().await;
    assert!(String::from_utf8_lossy(&sub).contains("\"subscribed\""));
    publish(&edge, "h2ws", "over h2").await;
    let (b0, event) = next_frame().await;
    assert_eq!(b0, 0x81);
    let v: serde_json::Value = serde_json::from_slice(&event).unwrap();
    assert_eq!(v["data"], "over h2");
    // a masked ping from the client, answered with a pong
    send.send_data(
        bytes::Bytes::from(client_frame(true, false, 0x9, b"p")),
        false,
    )
    .unwrap();
    let (b0, payload) = next_frame().await;
    assert_eq!((b0, payload.as_slice()), (0x8a, &b"p"[..]));
}

#[tokio::test]
async fn reload_keeps_subscribers_and_route_limits_apply() {
    let toml = hub_toml("");
    let edge = start(&toml).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/kept", edge.addr))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    // SIGHUP's path: the file again, the same hub, its subscribers kept
    let path = edge.dir.path().join("hopline.toml");
    let limited = toml.replace(
        "  realtime = \"live\"",
        "  realtime = \"live\"\n  limit = \"pub\"",
    ) + "[limit.pub]\nrate = \"5/s\"\nburst = 5\nkey = \"client_ip\"\n";
    std::fs::write(&path, &limited).unwrap();
    let config = hopline_edge::Config::from_str_at(&limited, &path, edge.dir.path()).unwrap();
    let sections = hopline_realtime::config::load(&limited, &path).unwrap();
    let mut services = hopline_edge::Services::new();
    edge.hubs.apply(&sections, &mut services).unwrap();
    edge.server.reload_with(config, services).await.unwrap();
    publish(&edge, "kept", "after reload").await;
    assert_eq!(next(&mut ws).await["data"], "after reload");
    // a publisher flooding the route meets its rate limit
    let c = client();
    let t = token(&["*"]);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(
            c.post(edge.url("/live/kept"))
                .bearer_auth(&t)
                .body("flood")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// An SSE subscriber that stops reading is cut by the edge's send timeout even while its
/// socket is full (no write completes, so the stream itself would never look again).
#[tokio::test]
async fn a_stalled_sse_subscriber_is_cut_by_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge = start(&hub_toml(
        "max_message = \"32KiB\"\nclient_queue = \"64MiB\"\n[limits]\nsend_timeout_ms = 300",
    ))
    .await;
    let mut stuck = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    stuck
        .write_all(b"GET /live/firehose HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = stuck.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    let server = &edge.server;
    let c = client();
    let sse_open = || async {
        let s = hopline_testkit::edge::status(server).await;
        s["services"]["realtime.live"]["connections"]["sse"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(sse_open().await, 1);
    // more than loopback's socket buffers hold; the subscriber reads nothing
    let big = "x".repeat(16000);
    let t = token(&["*"]);
    for _ in 0..400 {
        let r = c
            .post(edge.url("/live/firehose"))
            .bearer_auth(&t)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut cut = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sse_open().await == 0 {
            cut = true;
            break;
        }
    }
    assert!(cut, "the stalled subscriber still holds its stream");
    drop(stuck);
}

/// A publication is written to its WebSocket subscribers by the publisher itself (no
/// wake-up of each subscriber's task) — also past tokio's cooperative budget of ~128
/// operations per task, which once refused every socket after the first hundred or so —
/// and a connection that moves between that path and its own (a second subscription
/// and back, commands, pings) still gets every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_write_to_websocket_subscribers_directly_in_order() {
    const SUBS: usize = 300;
    const EVENTS: u64 = 30;
    let edge = start(&hub_toml("")).await;
    let mut subs = Vec::new();
    for _ in 0..SUBS {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/fan", edge.addr))
            .await
            .unwrap();
        assert_eq!(next(&mut ws).await["type"], "subscribed");
        subs.push(ws);
    }
    // the one that switches paths, subscribed to fan too
    let (mut mover, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/live/fan?token={}",
        edge.addr,
        token(&["*"])
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut mover).await["type"], "subscribed");
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < EVENTS as usize {
                    let v = next(&mut ws).await;
                    assert_eq!(v["channel"], "fan", "{v}");
                    got.push(v["offset"].as_u64().unwrap());
                }
                got
            })
        })
        .collect();
    let hub = edge.hubs.get("live").unwrap();
    let direct_before = hub
        .metrics
        .deliveries_direct
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut mover_got = Vec::new();
    let mut other_got = Vec::new();
    for i in 1..=EVENTS {
        publish(&edge, "fan", &format!("e{i}")).await;
        match i {
            5 => mover
                .send(WsMessage::text(r#"{"type":"subscribe","channel":"other"}"#))
                .await
                .unwrap(),
            10 | 11 => {
                publish(&edge, "other", &format!("o{i}")).await;
            }
            15 => mover
                .send(WsMessage::text(
                    r#"{"type":"unsubscribe","channel":"other"}"#,
                ))
                .await
                .unwrap(),
            20 => mover
                .send(WsMessage::text(r#"{"type":"ping"}"#))
                .await
                .unwrap(),
            _ => {}
        }
        // read what the mover has so far (without waiting for what is not there)
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout(Duration::from_millis(20), mover.next()).await
        {
            let Ok(text) = m.to_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            match v["channel"].as_str() {
                Some("fan") if v.get("type").is_none() => {
                    mover_got.push(v["offset"].as_u64().unwrap())
                }
                Some("other") if v.get("type").is_none() => {
                    other_got.push(v["offset"].as_u64().unwrap())
                }
                _ => {}
            }
        }
    }
    while mover_got.len() < EVENTS as usize {
        let v = next(&mut mover).await;
        if v["channel"] == "fan" && v.get("type").is_none() {
            mover_got.push(v["offset"].as_u64().unwrap());
        }
    }
    let want: Vec<u64> = (1..=EVENTS).collect();
    assert_eq!(mover_got, want, "the switching connection's events");
    assert_eq!(other_got, vec![1, 2], "its second channel's events");
    for r in readers {
        assert_eq!(r.await.unwrap(), want);
    }
    assert_mostly_direct(&hub, direct_before, SUBS as u64 * EVENTS);
}

/// At least 90 % of the `all` deliveries since the counter stood at `before` were written
/// by the publisher itself.
fn assert_mostly_direct(hub: &hopline_realtime::hub::Hub, before: u64, all: u64) {
    let direct = hub
        .metrics
        .deliveries_direct
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    assert!(
        direct >= all * 9 / 10,
        "only {direct} of {all} deliveries were written by the publisher"
    );
}

/// Decode an HTTP/1.1 chunked body; `None` when it does not end with the last chunk.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = b.windows(2).position(|w| w == b"\r\n")?;
        let len = usize::from_str_radix(std::str::from_utf8(&b[..i]).ok()?.trim(), 16).ok()?;
        b = &b[i + 2..];
        if len == 0 {
            return (b == b"\r\n").then_some(out);
        }
        out.extend_from_slice(b.get(..len)?);
        if b.get(len..len + 2)? != b"\r\n" {
            return None;
        }
        b = &b[len + 2..];
    }
}

/// SSE streams over HTTP/1.1 are written straight to the socket (chunked), by the
/// publishers when they can: every subscriber gets every event once, in order, with its
/// id; the deliveries are the publishers'; a server shutdown ends each stream with the
/// last chunk. (Over HTTP/2 the same streams go through the engine: tested above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_over_http11_is_written_by_the_publisher_in_chunks() {
    use tokio::io::AsyncReadExt;
    const SUBS: usize = 200;
    const EVENTS: u64 = 20;
    let edge = start(&hub_toml("")).await;
    let hub = edge.hubs.get("live").unwrap();
    let mut readers = Vec::new();
    for _ in 0..SUBS {
        let mut s = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(b"GET /live/news HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        // wait for the head and the opening comment
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains(": ok") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        readers.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return got,
                    Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    Err(_) => panic!("the stream did not end"),
                }
            }
        }));
    }
    let direct_before = hub
        .metrics
        .deliveries_direct
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut epoch = String::new();
    for i in 1..=EVENTS {
        epoch = publish(&edge, "news", &format!("line {i}\nsecond line")).await["epoch"]
            .as_str()
            .unwrap()
            .to_string();
    }
    // every event out before the shutdown
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.shutdown();
    let want: Vec<String> = (1..=EVENTS).map(|i| format!("{epoch}:{i}")).collect();
    for r in readers {
        let got = r.await.unwrap();
        let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&got[..at]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        let body = dechunk(&got[at + 4..]).expect("chunks ending with the last chunk");
        let text = String::from_utf8(body).unwrap();
        let ids: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: ").map(str::to_string))
            .collect();
        assert_eq!(ids, want);
        assert_eq!(text.matches("data: second line\n").count(), EVENTS as usize);
    }
    assert_mostly_direct(&hub, direct_before, SUBS as u64 * EVENTS);
}

/// Publisher-side writes over TLS: `wss://` subscribers and an HTTPS SSE stream get
/// every event, in order, also when events are larger than a TLS record and come faster
/// than one at a time (rustls takes what the socket cannot, and the connection's task
/// finishes the flush).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_over_tls() {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    hopline_edge::tls::ca::issue(&certs, &["live.test".into()]).unwrap();
    let toml = hub_toml("max_message = \"64KiB\"").replace(
        "listen = [\"127.0.0.1:0\"]\n",
        &format!(
            "listen = [\"127.0.0.1:0\"]\ntls = {{ cert = \"{0}/live.test.pem\", key = \"{0}/live.test-key.pem\" }}\n",
            certs.display()
        ),
    );
    let edge = start(&toml).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(certs.join("ca.pem")).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let tls = |addr| {
        let cfg = cfg.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(cfg)
                .connect(
                    rustls_pki_types::ServerName::try_from("live.test").unwrap(),
                    tcp,
                )
                .await
                .unwrap()
        }
    };
    let mut subs = Vec::new();
    for _ in 0..20 {
        let (mut ws, _) =
            tokio_tungstenite::client_async("wss://live.test/live/big", tls(edge.addr).await)
                .await
                .unwrap();
        assert_eq!(next(&mut ws).await["type"], "subscribed");
        subs.push(ws);
    }
    let mut sse = tls(edge.addr).await;
    sse.write_all(
        b"GET /live/big HTTP/1.1\r\nHost: live.test\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !String::from_utf8_lossy(&got).contains(": ok") {
        let n = sse.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    const EVENTS: u64 = 40;
    let big = "y".repeat(40_000);
    // every subscriber reads while the events are published, as clients do (left unread
    // for long, a connection sits on a zero receive window and the kernel's persist
    // timer, backing off, outlasts the per-frame timeout: the test's reading, not the
    // server)
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                for want in 1..=EVENTS {
                    let v = next(&mut ws).await;
                    assert_eq!(v["offset"].as_u64(), Some(want));
                    assert_eq!(v["data"].as_str().map(str::len), Some(40_000));
                }
            })
        })
        .collect();
    let want_ids = EVENTS as usize;
    let big2 = big.clone();
    let sse_reader = tokio::spawn(async move {
        let big = big2;
        loop {
            let text = String::from_utf8_lossy(&got).to_string();
            if text.matches("\nid: ").count() + usize::from(text.starts_with("id: ")) >= want_ids
                && text.matches(&big).count() >= want_ids
            {
                let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                assert!(
                    String::from_utf8_lossy(&got[..at])
                        .to_ascii_lowercase()
                        .contains("transfer-encoding: chunked")
                );
                break;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), sse.read(&mut buf))
                .await
                .expect("SSE events in time")
                .unwrap();
            assert!(n > 0, "the SSE stream ended early");
            got.extend_from_slice(&buf[..n]);
        }
    });
    let https = reqwest::Client::builder()
        .no_proxy()
        .resolve("live.test", edge.addr)
        .tls_backend_preconfigured((*cfg).clone())
        .build()
        .unwrap();
    for _ in 0..EVENTS {
        let r = https
            .post(format!("https://live.test:{}/live/big", edge.addr.port()))
            .bearer_auth(token(&["*"]))
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let hub = edge.hubs.get("live").unwrap();
    assert!(
        hub.metrics
            .deliveries_direct
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "no event was written by a publisher over TLS"
    );
    for r in readers {
        r.await.unwrap();
    }
    sse_reader.await.unwrap();
}

/// `GET /live/CHANNEL?info` (as Nchan's channel info): position, history and subscribers,
/// for publishers only; 404 for a channel the node does not have.
#[tokio::test]
async fn channel_info_for_publishers() {
    let edge = start(&hub_toml("").replace("history = 100", "history = 2")).await;
    let c = client();
    let info = |ch: &str| edge.url(&format!("/live/{ch}?info"));
    let t = token(&["stats"]);
    assert_eq!(
        c.get(info("stats"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    for i in 0..3 {
        publish(&edge, "stats", &format!("e{i}")).await;
    }
    // two subscribers: an SSE stream and a WebSocket
    let _sse = c
        .get(edge.url("/live/stats"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/stats", edge.addr))
        .await
        .unwrap();
    let _subscribed = ws.next().await.unwrap().unwrap();
    // publishers only
    assert_eq!(c.get(info("stats")).send().await.unwrap().status(), 401);
    assert_eq!(
        c.get(info("stats"))
            .bearer_auth(token(&["other"]))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let r = c.get(info("stats")).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["channel"], "stats");
    assert_eq!(v["offset"], 3);
    assert_eq!(v["position"], format!("{}:3", v["epoch"].as_str().unwrap()));
    // history = 2: the oldest publication dropped out
    assert_eq!(v["messages"], 2);
    assert_eq!(v["oldest_offset"], 2);
    assert_eq!(v["bytes_published"], 6);
    assert_eq!(v["subscribers"], 2, "{v}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let last = v["last_published_ms"].as_u64().unwrap();
    assert!(last <= now && now - last < 60_000, "{v}");
    // the WebSocket leaves: counted out
    ws.close(None).await.unwrap();
    let mut left = 0;
    for _ in 0..50 {
        let v: serde_json::Value = c
            .get(info("stats"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        left = v["subscribers"].as_u64().unwrap();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 1);
}

/// `DELETE /live/CHANNEL` (as Nchan's): publishers only; every kind of subscriber gets what
/// was published before, then is told — WebSocket `{"type":"deleted"}` (its other
/// subscriptions go on), SSE `event: deleted` and the end of the stream (HTTP/1.1 direct
/// and the HTTP/1.0 body path), a held long poll 410 —; the channel starts again under a
/// new epoch and an old position reads `recovered: false`.
#[tokio::test]
async fn delete_tells_every_subscriber_and_starts_the_channel_again() {
    let edge = start(&hub_toml("")).await;
    let c = client();
    let first = publish(&edge, "doomed", "e1").await;
    let old_epoch = first["epoch"].as_str().unwrap().to_string();
    // a WebSocket on the channel alone (publishers write to it directly) ...
    let (mut ws1, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/doomed", edge.addr))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws1).await["type"], "subscribed");
    // ... one on two channels
    let (mut ws2, _) = tokio_tungstenite::connect_async(format!("ws://{}/live/doomed", edge.addr))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws2).await["type"], "subscribed");
    ws2.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"subscribe","channel":"other"}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws2).await["type"], "subscribed");
    // SSE over HTTP/1.1 (direct) and HTTP/1.0 (the body path)
    let sse11 = c
        .get(edge.url("/live/doomed"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse11.status(), 200);
    let addr = edge.addr;
    let sse10 = tokio::spawn(async move {
        raw(
            addr,
            b"GET /live/doomed HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
            Duration::from_secs(10),
        )
        .await
    });
    // a held long poll
    let held = {
        let c = c.clone();
        let url = edge.url("/live/doomed?wait=1");
        tokio::spawn(async move { c.get(url).send().await.unwrap() })
    };
    wait_subscribers(&edge, "doomed", 5).await;
    let p = publish(&edge, "doomed", "e2").await;
    assert_eq!(p["subscribers"], 5, "the answer says who was there: {p}");

    // publishers only
    let url = edge.url("/live/doomed");
    delete_as_publisher(&c, &url, &old_epoch).await;

    // the WebSockets: e2, then the notice
    for ws in [&mut ws1, &mut ws2] {
        let e = next_json(ws).await;
        assert_eq!(
            (e["offset"].as_u64(), e["data"].as_str()),
            (Some(2), Some("e2")),
            "{e}"
        );
        let d = next_json(ws).await;
        assert_eq!(d["type"], "deleted", "{d}");
        assert_eq!(d["channel"], "doomed");
    }
    // ws2's other subscription goes on
    publish(&edge, "other", "still here").await;
    let e = next_json(&mut ws2).await;
    assert_eq!(
        (e["channel"].as_str(), e["data"].as_str()),
        (Some("other"), Some("still here"))
    );
    // SSE: e2, the event, the end of the stream
    let text = tokio::time::timeout(Duration::from_secs(5), sse11.text())
        .await
        .expect("the HTTP/1.1 stream ends")
        .unwrap();
    let e2 = text.find("data: e2").expect(&text);
    let gone = text
        .find("event: deleted\ndata: {\"channel\":\"doomed\"}")
        .expect(&text);
    assert!(e2 < gone, "{text}");
    let text = sse10.await.unwrap().0;
    assert!(
        text.contains("data: e2")
            && text.ends_with("event: deleted\ndata: {\"channel\":\"doomed\"}\n\n"),
        "{text}"
    );
    // the long poll (held from e1) was answered by e2 before the deletion
    let r = held.await.unwrap();
    assert_eq!(r.status(), 200);
    let r: serde_json::Value = r.json().await.unwrap();
    assert_eq!(r["events"][0]["data"], "e2", "{r}");

    assert_eq!(
        hub_counter(&edge, |m| &m.channels_deleted),
        1,
        "counted once"
    );
    gone_then_started_again(&edge, &c, &url, &old_epoch).await;
}

/// `DELETE` of `url` (channel `doomed`, two publications under `old_epoch`): 401 without
/// a token, 403 with one for another channel, 200 with what the channel was.
async fn delete_as_publisher(c: &reqwest::Client, url: &str, old_epoch: &str) {
    assert_eq!(c.delete(url).send().await.unwrap().status(), 401);
    let r = c
        .delete(url)
        .bearer_auth(token(&["other"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .delete(url)
        .bearer_auth(token(&["doomed"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["deleted"], true);
    assert_eq!(v["epoch"], old_epoch);
    assert_eq!(v["offset"], 2);
    assert_eq!(v["messages"], 2);
    assert!(v["subscribers"].as_u64().unwrap() >= 4, "{v}");
}

/// A deleted channel `doomed` (at `url`): info and DELETE answer 404; the next
/// publication starts it again under a new epoch, where `old_epoch` reads
/// `recovered: false`.
async fn gone_then_started_again(edge: &Edge, c: &reqwest::Client, url: &str, old_epoch: &str) {
    // gone: info 404, DELETE again 404
    let t = token(&["doomed"]);
    assert_eq!(
        c.get(edge.url("/live/doomed?info"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.delete(url).bearer_auth(&t).send().await.unwrap().status(),
        404
    );
    // and it starts again under a new epoch
    let again = publish(edge, "doomed", "new life").await;
    assert_eq!(again["offset"], 1);
    assert_ne!(again["epoch"], old_epoch);
    let r: serde_json::Value = c
        .get(edge.url(&format!("/live/doomed?since={old_epoch}:2")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["recovered"], false, "{r}");
}

/// A long poll held on a channel with nothing new when it is deleted answers 410.
#[tokio::test]
async fn a_held_long_poll_on_a_deleted_channel_gets_410() {
    let edge = start(&hub_toml("")).await;
    let c = client();
    publish(&edge, "brief", "only").await;
    let held = {
        let c = c.clone();
        let url = edge.url("/live/brief?wait=1");
        tokio::spawn(async move { c.get(url).send().await.unwrap() })
    };
    wait_subscribers(&edge, "brief", 1).await;
    let r = c
        .delete(edge.url("/live/brief"))
        .bearer_auth(token(&["brief"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let started = tokio::time::Instant::now();
    let r = held.await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once, not at long_poll_ms"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["channel"], "brief");
}

/// A server shutdown answers a held long poll at once (empty), not at `long_poll_ms`.
#[tokio::test]
async fn shutdown_answers_held_long_polls() {
    let edge = start(&hub_toml("").replace("long_poll_ms = 1500", "long_poll_ms = 20000")).await;
    publish(&edge, "quiet", "only").await;
    let held = {
        let url = edge.url("/live/quiet?wait=1");
        tokio::spawn(async move { client().get(url).send().await.unwrap() })
    };
    wait_subscribers(&edge, "quiet", 1).await;
    let started = tokio::time::Instant::now();
    edge.hubs.get("live").unwrap().shutdown();
    let r = held.await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["events"].as_array().map(Vec::len), Some(0), "{v}");
}

/// A 400 and its text for `GET url`.
async fn refused(c: &reqwest::Client, url: &str) -> String {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 400, "{url}");
    r.text().await.unwrap()
}

/// A first read that does not miss what was just published: `?last=N` answers the latest
/// N events still in history (with the position to continue from) by short poll, long
/// poll (at once when there are some), SSE and WebSocket (`?last=` and the subscribe
/// command's `"last"`); bad counts, counts over the history and `since` with `last` are
/// refused with a 400 that says why.
#[tokio::test]
async fn last_n_is_a_first_read_of_the_latest_events() {
    let edge = start(&hub_toml("")).await; // history = 100
    let c = client();
    let url = edge.url("/live/news");
    let mut epoch = String::new();
    for i in 1..=5 {
        epoch = publish(&edge, "news", &format!("n{i}")).await["epoch"]
            .as_str()
            .unwrap()
            .to_string();
    }
    let get = |q: &str| {
        let (c, url) = (c.clone(), format!("{url}?{q}"));
        async move {
            let r = c.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    // without a position a short poll reads from now: nothing
    assert_eq!(offsets(&get("").await), Vec::<u64>::new());
    // the latest three, and where to continue
    let r = get("last=3").await;
    assert_eq!(offsets(&r), [3, 4, 5]);
    assert_eq!(r["events"][0]["data"], "n3");
    assert_eq!(r["recovered"], true);
    assert_eq!(r["position"], format!("{epoch}:5"));
    // as many as history allows: all there are
    assert_eq!(offsets(&get("last=100").await), [1, 2, 3, 4, 5]);
    // continuing from the position it gave
    publish(&edge, "news", "n6").await;
    let r = get(&format!("since={epoch}:5")).await;
    assert_eq!(offsets(&r), [6]);

    // long poll: answered at once when history has some…
    let started = tokio::time::Instant::now();
    let r = get("last=2&wait=1").await;
    assert_eq!(offsets(&r), [5, 6]);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "held {:?} with events there",
        started.elapsed()
    );
    // …held on an empty channel until the next publication
    let held = tokio::spawn({
        let url = edge.url("/live/empty?last=5&wait=1");
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "a long poll on an empty channel waits");
    publish(&edge, "empty", "first").await;
    let r = held.await.unwrap();
    assert_eq!(offsets(&r), [1]);
    assert_eq!(r["events"][0]["data"], "first");

    // SSE: the latest two, then what comes
    let mut sse = c
        .get(format!("{url}?last=2"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let events = sse_events(&mut sse, 2).await;
    assert_eq!(
        events,
        [
            (format!("{epoch}:5"), "n5".to_string()),
            (format!("{epoch}:6"), "n6".to_string())
        ]
    );
    publish(&edge, "news", "n7").await;
    assert_eq!(sse_events(&mut sse, 1).await[0].0, format!("{epoch}:7"));
    // a browser reconnecting to the same URL sends Last-Event-ID: it resumes from there
    let mut again = c
        .get(format!("{url}?last=5"))
        .header("accept", "text/event-stream")
        .header("last-event-id", format!("{epoch}:6"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sse_events(&mut again, 1).await,
        [(format!("{epoch}:7"), "n7".to_string())]
    );

    // WebSocket: ?last= on the URL, and "last" in a subscribe command
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/live/news?last=2", edge.addr))
            .await
            .unwrap();
    let sub = next(&mut ws).await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(
        (sub["offset"].as_u64(), sub["recovered"].as_bool()),
        (Some(5), Some(true))
    );
    assert_eq!(next(&mut ws).await["data"], "n6");
    assert_eq!(next(&mut ws).await["data"], "n7");
    ws.send(WsMessage::text(
        r#"{"type":"subscribe","channel":"empty","last":1}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    let e = next(&mut ws).await;
    assert_eq!(
        (e["channel"].as_str(), e["data"].as_str()),
        (Some("empty"), Some("first"))
    );
    for (bad, says) in [
        (r#"{"type":"subscribe","channel":"x","last":0}"#, "bad last"),
        (
            r#"{"type":"subscribe","channel":"x","last":"3"}"#,
            "bad last",
        ),
        (
            r#"{"type":"subscribe","channel":"x","last":101}"#,
            "at most 100",
        ),
        (
            r#"{"type":"subscribe","channel":"x","last":2,"since":"ab:1"}"#,
            "since and last",
        ),
    ] {
        ws.send(WsMessage::text(bad)).await.unwrap();
        let e = next(&mut ws).await;
        assert_eq!(e["type"], "error", "{bad}");
        assert!(e["message"].as_str().unwrap().contains(says), "{bad}: {e}");
    }

    // refused, with a reason
    for (query, says) in [
        ("last=abc", "bad last=\"abc\""),
        ("last=0", "bad last=\"0\""),
        ("last=-2", "bad last"),
        ("last=101", "at most 100"),
        (
            "last=3&wait=1&since=abc:1",
            "since and last cannot go together",
        ),
    ] {
        let text = refused(&c, &format!("{url}?{query}")).await;
        assert!(text.contains(says), "{query}: {text}");
    }
    let r = c
        .get(format!("{url}?last=101"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    match tokio_tungstenite::connect_async(format!("ws://{}/live/news?last=abc", edge.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("a WebSocket with last=abc: {other:?}"),
    }
}
