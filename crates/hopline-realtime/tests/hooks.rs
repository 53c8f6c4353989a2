//! App hooks: the hub asks a real HTTP application (a hyper server on 127.0.0.1:0) before
//! connections, subscriptions and publications, on every transport, and does what it
//! answers — allow, deny (its reason and status), rewrite a publication; a hook that
//! fails follows `on_error`.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::SinkExt;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The application: decides by channel, data and cookie, and keeps what it was asked.
async fn app() -> (SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            log.lock().push(v.clone());
                            let channel = v["channel"].as_str().unwrap_or("").to_string();
                            let (status, answer) = match path.as_str() {
                            "/connect" if v["headers"]["cookie"].as_str().unwrap_or("").contains("banned") => {
                                (403, "banned here".to_string())
                            }
                            "/connect" => (200, r#"{"allow": true}"#.into()),
                            "/subscribe" if channel.starts_with("secret") => {
                                (200, r#"{"allow": false, "reason": "not for you"}"#.into())
                            }
                            "/subscribe" if channel.starts_with("gone") => (410, "that channel is gone".into()),
                            "/subscribe" => (200, "{}".into()),
                            "/publish" if v["data"].as_str().unwrap_or("").contains("bad") => {
                                (200, r#"{"allow": false, "reason": "no bad words"}"#.into())
                            }
                            "/publish" => (
                                200,
                                serde_json::json!({"data": format!("{} (checked)", v["data"].as_str().unwrap_or(""))}).to_string(),
                            ),
                            "/slow" => {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                (200, "{}".into())
                            }
                            "/broken" => (500, "oops".into()),
                            _ => (200, "not json".into()),
                        };
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(answer)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn hooked(app: SocketAddr, extra: &str) -> String {
    hub_toml(&format!(
        "hooks = {{ connect = \"http://{app}/connect\", subscribe = \"http://{app}/subscribe\", publish = \"http://{app}/publish\", timeout_ms = 1000{extra} }}"
    ))
}

#[tokio::test]
async fn the_application_allows_denies_and_rewrites_on_every_transport() {
    let (app, seen) = app().await;
    let edge = start(&hooked(app, "")).await;
    let c = client();

    // polls and SSE: subscribe hook
    let r = c
        .get(edge.url("/live/orders"))
        .header("cookie", "session=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(edge.url("/live/secret-plans")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("not for you"));
    let r = c.get(edge.url("/live/gone-1?wait=1")).send().await.unwrap();
    assert_eq!(r.status(), 410, "a 4xx of the hook is the client's status");
    assert!(r.text().await.unwrap().contains("that channel is gone"));
    let r = c
        .get(edge.url("/live/secret-x"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    {
        let log = seen.lock();
        let first = &log[0];
        assert_eq!(first["event"], "subscribe");
        assert_eq!(first["hub"], "live");
        assert_eq!(first["channel"], "orders");
        assert_eq!(first["transport"], "poll");
        assert_eq!(first["headers"]["cookie"], "session=abc");
        assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(log[2]["transport"], "long_poll");
        assert_eq!(log[3]["transport"], "sse");
    }

    // publications by POST: denied, or published as the application rewrote them
    let r = c
        .post(edge.url("/live/orders"))
        .bearer_auth(token(&["orders"]))
        .body("a bad word")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("no bad words"));
    let p = publish(&edge, "orders", "hello").await;
    assert_eq!(p["offset"], 1, "{p}");
    let events: serde_json::Value = c
        .get(edge.url("/live/orders?last=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"][0]["data"], "hello (checked)", "{events}");
    {
        let log = seen.lock();
        let p = log
            .iter()
            .find(|v| v["event"] == "publish" && v["data"] == "hello")
            .unwrap();
        assert_eq!(p["transport"], "http");
        assert_eq!(
            p["claims"]["channels"][0], "*",
            "the publisher's token claims: {p}"
        );
    }

    // WebSocket: the connect hook sees the handshake's cookie
    let mut req = format!("ws://{}/live/orders", edge.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", "user=banned".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(req).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!(
            "a banned connection was let in: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!(
        "ws://{}/live/orders?token={}",
        edge.addr,
        token(&["*"])
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    ws.send(WsMessage::text(
        r#"{"type":"subscribe","channel":"secret-room"}"#,
    ))
    .await
    .unwrap();
    let e = next(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["message"].as_str()),
        (Some("error"), Some("not for you"))
    );
    ws.send(WsMessage::text(
        r#"{"type":"publish","channel":"orders","data":"bad news"}"#,
    ))
    .await
    .unwrap();
    let e = next(&mut ws).await;
    assert_eq!(e["message"], "no bad words", "{e}");
    ws.send(WsMessage::text(
        r#"{"type":"publish","channel":"orders","data":"by ws"}"#,
    ))
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(next(&mut ws).await);
    }
    assert!(got.iter().any(|m| m["type"] == "published"), "{got:?}");
    assert!(
        got.iter().any(|m| m["data"] == "by ws (checked)"),
        "{got:?}"
    );
    {
        let log = seen.lock();
        assert!(log.iter().any(|v| v["event"] == "connect"
            && v["transport"] == "websocket"
            && v.get("channel").is_none()));
        assert!(log.iter().any(|v| v["event"] == "publish"
            && v["transport"] == "websocket"
            && v["data"] == "by ws"));
    }
    // every answer counted
    let status = hopline_realtime::metrics::status(
        &edge.hubs.get("live").unwrap().state(),
        &edge.hubs.get("live").unwrap().metrics,
    );
    let hooks = &status["hooks"];
    assert_eq!(hooks["failed"], 0, "{status}");
    assert_eq!(
        hooks["allowed"].as_u64().unwrap() + hooks["denied"].as_u64().unwrap(),
        seen.lock().len() as u64,
        "{status}"
    );
    assert_eq!(hooks["denied"], 7, "{status}");
}

#[tokio::test]
async fn a_failing_hook_follows_on_error() {
    let (app, _seen) = app().await;
    // too slow, a 500, not JSON, nobody listening: denied (503) by default
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for url in [
        format!("http://{app}/slow"),
        format!("http://{app}/broken"),
        format!("http://{app}/nonsense"),
        format!("http://{closed}/subscribe"),
    ] {
        let edge = start(&hub_toml(&format!(
            "hooks = {{ subscribe = \"{url}\", timeout_ms = 300 }}"
        )))
        .await;
        let t = tokio::time::Instant::now();
        let r = client().get(edge.url("/live/orders")).send().await.unwrap();
        assert_eq!(r.status(), 503, "{url}");
        assert!(r.text().await.unwrap().contains("subscribe hook failed"));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{url}: the timeout held"
        );
        assert_eq!(
            edge.hubs
                .get("live")
                .unwrap()
                .metrics
                .hooks_failed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
    // on_error = "allow": the application being down lets clients in
    let edge = start(&hub_toml(&format!(
        "hooks = {{ subscribe = \"http://{app}/slow\", timeout_ms = 300, on_error = \"allow\" }}"
    )))
    .await;
    let r = client().get(edge.url("/live/orders")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_hook_must_be_an_http_url() {
    let text = hub_toml("hooks = { publish = \"https://app.test/hook\" }");
    let e = hopline_realtime::config::load(&text, std::path::Path::new("hopline.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("hopline.toml:") && e.contains("a hook is an http:// URL"),
        "{e}"
    );
    let text = hub_toml("hooks = { publish = \"http://127.0.0.1:1/h\", on_error = \"maybe\" }");
    let e = hopline_realtime::config::load(&text, std::path::Path::new("hopline.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("on_error") || e.contains("deny"), "{e}");
}
