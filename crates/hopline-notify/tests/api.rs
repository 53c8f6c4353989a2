//! The notification service through the real edge on loopback: signed API calls, a
//! local webhook sink (a real HTTP server the test controls), retries, dead letters,
//! idempotency and every refusal.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hopline_notify::model;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

struct Delivery {
    headers: http::HeaderMap,
    body: String,
    at: tokio::time::Instant,
}

#[derive(Default)]
struct Sink {
    /// Connections accepted.
    conns: std::sync::atomic::AtomicUsize,
    /// Each answer waits this long (a busy endpoint).
    delay_ms: std::sync::atomic::AtomicU64,
    got: parking_lot::Mutex<Vec<Delivery>>,
    /// (status, retry-after) answers to give, in order; then 200.
    script: parking_lot::Mutex<VecDeque<(u16, Option<&'static str>)>>,
}

async fn sink() -> (SocketAddr, Arc<Sink>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let s = Arc::new(Sink::default());
    let s2 = s.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                continue;
            };
            s2.conns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let s = s2.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let s = s.clone();
                        async move {
                            let delay = s.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            s.got.lock().push(Delivery {
                                headers: parts.headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                                at: tokio::time::Instant::now(),
                            });
                            let (status, ra) = s.script.lock().pop_front().unwrap_or((200, None));
                            let mut r = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            if let Some(ra) = ra {
                                r.headers_mut().insert("retry-after", ra.parse().unwrap());
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, s)
}

struct Api {
    edge: hopline_testkit::edge::TestServer,
    addr: SocketAddr,
    key: String,
    secret: String,
    whsec: String,
    _services: hopline_notify::RunningServices,
}

/// Which engine a test runs on.
#[derive(Clone, Copy)]
enum Engine {
    Sqlite,
    Redis(u16),
}

async fn start(extra: &str) -> Api {
    start_with(extra, true).await
}

async fn start_with(extra: &str, allow_private: bool) -> Api {
    start_on(Engine::Sqlite, extra, allow_private).await
}

async fn start_on(engine: Engine, extra: &str, allow_private: bool) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let engine_line = match engine {
        Engine::Sqlite => "engine = \"sqlite\"".to_string(),
        Engine::Redis(port) => format!("engine = \"redis://127.0.0.1:{port}\""),
    };
    let toml = format!(
        r#"
access_log = "off"
[notify.main]
{engine_line}
database = "notify.db"
retry = ["0s", "300ms", "300ms"]
allow_private_targets = {allow_private}
max_body = "8KiB"
{extra}
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  notify = "main"
"#
    );
    let path = dir.path().join("hopline.toml");
    let sections = hopline_notify::config::load(&toml, &path, dir.path()).unwrap();
    let app = match engine {
        Engine::Sqlite => {
            hopline_notify::store::apps::create(&sections["main"].database, "shop", None)
        }
        Engine::Redis(port) => hopline_notify::store::redis::apps::create(
            &format!("redis://127.0.0.1:{port}"),
            "main",
            "shop",
            None,
        ),
    }
    .unwrap();
    let services = hopline_notify::RunningServices::new();
    let mut routes = hopline_edge::Services::new();
    services.apply(&sections, &mut routes).unwrap();
    let edge = hopline_testkit::edge::start_with(dir, &toml, routes).await;
    Api {
        addr: edge.addr,
        edge,
        key: app.key,
        secret: app.secret,
        whsec: app.webhook_secret,
        _services: services,
    }
}

/// A signed request; `tweak` may spoil it.
async fn call_with(
    api: &Api,
    method: &str,
    path_and_query: &str,
    body: &str,
    extra: &[(&str, &str)],
    tweak: impl FnOnce(&mut Vec<(String, String)>),
) -> (u16, serde_json::Value) {
    let ts = (hopline_notify::now_ms() / 1000).to_string();
    let nonce = model::random_token(9);
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let c = model::canonical(method, path, query, &ts, &nonce, body.as_bytes());
    let mut headers = vec![
        ("x-app-key".to_string(), api.key.clone()),
        ("x-timestamp".to_string(), ts),
        ("x-nonce".to_string(), nonce),
        ("x-signature".to_string(), model::sign(&api.secret, &c)),
    ];
    for (k, v) in extra {
        headers.push((k.to_string(), v.to_string()));
    }
    tweak(&mut headers);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut r = client.request(
        method.parse().unwrap(),
        format!("http://{}{}", api.addr, path_and_query),
    );
    for (k, v) in &headers {
        r = r.header(k, v);
    }
    let resp = r.body(body.to_string()).send().await.unwrap();
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}

async fn call(api: &Api, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    call_with(api, method, path, body, &[], |_| {}).await
}

async fn wait_status(api: &Api, id: &str, want: &str) -> serde_json::Value {
    for _ in 0..100 {
        let (s, v) = call(api, "GET", &format!("/v1/messages/{id}"), "").await;
        assert_eq!(s, 200, "{v}");
        if v["message"]["status"] == want {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} never became {want}");
}

fn webhook(to: &str, body: &str) -> String {
    serde_json::json!({"channel": "webhook", "to": to, "body": body}).to_string()
}

#[tokio::test]
async fn a_message_is_accepted_delivered_signed_and_traced() {
    a_message_is_accepted_delivered_signed_and_traced_on(Engine::Sqlite).await;
}

#[tokio::test]
async fn a_message_is_accepted_delivered_signed_and_traced_redis() {
    let Some(r) = hopline_testkit::Redis::start() else {
        return;
    };
    a_message_is_accepted_delivered_signed_and_traced_on(Engine::Redis(r.port)).await;
}

async fn a_message_is_accepted_delivered_signed_and_traced_on(engine: Engine) {
    let (sink_addr, sink) = sink().await;
    let api = start_on(engine, "", true).await;
    let (s, v) = call(
        &api,
        "POST",
        "/v1/messages",
        &webhook(&format!("http://{sink_addr}/hook"), "order 42 paid"),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "queued");
    let id = v["id"].as_str().unwrap().to_string();
    let v = wait_status(&api, &id, "delivered").await;
    assert_eq!(v["message"]["attempts"], 1);
    let timeline: Vec<&str> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, ["queued", "sending", "sent", "delivered"]);
    assert_eq!(v["attempts"][0]["http_status"], 200);
    // what the sink got: Standard Webhooks headers, a signature that verifies
    {
        let got = sink.got.lock();
        assert_eq!(got.len(), 1);
        let d = &got[0];
        assert_eq!(d.headers["webhook-id"], id.as_str());
        let ts: u64 = d.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let expect = model::webhook_signature(&api.whsec, &id, ts, d.body.as_bytes()).unwrap();
        assert_eq!(d.headers["webhook-signature"], expect.as_str());
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["body"], "order 42 paid");
        assert_eq!(body["id"], id.as_str());
    }
    // and the Standard Webhooks reference library (PyPI `standardwebhooks`) verifies it
    let delivery = {
        let got = sink.got.lock();
        let d = &got[0];
        let h = |n: &str| d.headers[n].to_str().unwrap().to_string();
        serde_json::json!({
            "secret": api.whsec,
            "body": d.body,
            "headers": {
                "webhook-id": h("webhook-id"),
                "webhook-timestamp": h("webhook-timestamp"),
                "webhook-signature": h("webhook-signature"),
            },
        })
    };
    if let Some(py) = standardwebhooks_python() {
        verify_with_reference_library(py, &delivery);
    }
    // the list and the analytics see it
    let (s, v) = call(
        &api,
        "GET",
        "/v1/messages?status=delivered&channel=webhook",
        "",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["messages"][0]["id"], id.as_str());
    let (s, v) = call(&api, "GET", "/v1/analytics", "").await;
    assert_eq!(s, 200);
    let g = &v["groups"][0];
    assert_eq!(
        (
            g["channel"].as_str(),
            g["status"].as_str(),
            g["count"].as_u64()
        ),
        (Some("webhook"), Some("delivered"), Some(1))
    );
    assert!(
        g["accepted_to_sent_ms"]["p50"].as_f64().unwrap() < 1000.0,
        "{v}"
    );
}

#[tokio::test]
async fn requests_must_be_signed_fresh_and_once() {
    let api = start("").await;
    let body = webhook("http://127.0.0.1:9/x", "x");
    let (s, v) = call_with(&api, "POST", "/v1/messages", &body, &[], |h| {
        h.retain(|(k, _)| k != "x-signature")
    })
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (s, _) = call_with(&api, "POST", "/v1/messages", &body, &[], |h| {
        for (k, v) in h.iter_mut() {
            if k == "x-signature" {
                v.replace_range(0..2, "00");
            }
        }
    })
    .await;
    assert_eq!(s, 401);
    let (s, _) = call_with(&api, "POST", "/v1/messages", &body, &[], |h| {
        for (k, v) in h.iter_mut() {
            if k == "x-app-key" {
                *v = "app_unknown".into();
            }
        }
    })
    .await;
    assert_eq!(s, 401);
    // a timestamp outside ±300 s (signed correctly with it)
    let old = (hopline_notify::now_ms() / 1000 - 400).to_string();
    let c = model::canonical("POST", "/v1/messages", None, &old, "n-old", body.as_bytes());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("http://{}/v1/messages", api.addr))
        .header("x-app-key", &api.key)
        .header("x-timestamp", &old)
        .header("x-nonce", "n-old")
        .header("x-signature", model::sign(&api.secret, &c))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // the same nonce twice: the second is a replay
    let ts = (hopline_notify::now_ms() / 1000).to_string();
    let c = model::canonical("POST", "/v1/messages", None, &ts, "n-1", body.as_bytes());
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = client
            .post(format!("http://{}/v1/messages", api.addr))
            .header("x-app-key", &api.key)
            .header("x-timestamp", &ts)
            .header("x-nonce", "n-1")
            .header("x-signature", model::sign(&api.secret, &c))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [202, 401]);
    // an app limited to some channels
    let db = api.edge.dir.path().join("notify.db");
    let limited =
        hopline_notify::store::apps::create(&db, "sms-only", Some(vec!["sms".into()])).unwrap();
    let mut api = api;
    api.key = limited.key;
    api.secret = limited.secret;
    let (s, v) = call(&api, "POST", "/v1/messages", &body).await;
    assert_eq!(s, 403, "{v}");
}

#[tokio::test]
async fn idempotency_keys_and_bad_input() {
    idempotency_keys_and_bad_input_on(Engine::Sqlite).await;
}

#[tokio::test]
async fn idempotency_keys_and_bad_input_redis() {
    let Some(r) = hopline_testkit::Redis::start() else {
        return;
    };
    idempotency_keys_and_bad_input_on(Engine::Redis(r.port)).await;
}

async fn idempotency_keys_and_bad_input_on(engine: Engine) {
    let (sink_addr, sink) = sink().await;
    let api = start_on(engine, "", true).await;
    let to = format!("http://{sink_addr}/hook");
    let body = webhook(&to, "once");
    let k = [("idempotency-key", "order-42")];
    let (s1, v1) = call_with(&api, "POST", "/v1/messages", &body, &k, |_| {}).await;
    let (s2, v2) = call_with(&api, "POST", "/v1/messages", &body, &k, |_| {}).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(
        v1["id"], v2["id"],
        "the same key and body: the first answer again"
    );
    let (s3, v3) = call_with(
        &api,
        "POST",
        "/v1/messages",
        &webhook(&to, "other"),
        &k,
        |_| {},
    )
    .await;
    assert_eq!(s3, 422, "{v3}");
    wait_status(&api, v1["id"].as_str().unwrap(), "delivered").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.got.lock().len(), 1, "one message, not two");
    // bad input: each a clear 4xx naming the field
    for (body, status, field) in [
        ("{not json", 400, ""),
        (r#"{"channel":"fax","to":"x","body":"b"}"#, 422, "channel"),
        (
            r#"{"channel":"webhook","to":"not a url","body":"b"}"#,
            422,
            "to",
        ),
        (
            r#"{"channel":"email","to":"a@b.example","subject":"hi\r\nBcc: x@y.example","body":"b"}"#,
            422,
            "subject",
        ),
        (
            r#"{"channel":"webhook","to":"http://x.example/","template":"{{a}}","data":[1]}"#,
            422,
            "data",
        ),
        (
            r#"{"channel":"webhook","to":"http://x.example/","body":"b","extra":1}"#,
            422,
            "",
        ),
    ] {
        let (s, v) = call(&api, "POST", "/v1/messages", body).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    let huge = webhook(&to, &"x".repeat(10_000));
    let (s, _) = call(&api, "POST", "/v1/messages", &huge).await;
    assert_eq!(s, 413);
    let (s, _) = call(&api, "GET", "/v1/nothing", "").await;
    assert_eq!(s, 404);
    let (s, _) = call(&api, "GET", "/v1/messages/msg_none", "").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn retries_honour_retry_after_then_dead_letter_and_replay() {
    retries_honour_retry_after_then_dead_letter_and_replay_on(Engine::Sqlite).await;
}

#[tokio::test]
async fn retries_honour_retry_after_then_dead_letter_and_replay_redis() {
    let Some(r) = hopline_testkit::Redis::start() else {
        return;
    };
    retries_honour_retry_after_then_dead_letter_and_replay_on(Engine::Redis(r.port)).await;
}

async fn retries_honour_retry_after_then_dead_letter_and_replay_on(engine: Engine) {
    let (sink_addr, sink) = sink().await;
    let api = start_on(engine, "", true).await;
    let to = format!("http://{sink_addr}/hook");
    // 500, then 429 with Retry-After: 1, then 200
    sink.script.lock().extend([(500, None), (429, Some("1"))]);
    let (_, v) = call(&api, "POST", "/v1/messages", &webhook(&to, "retry me")).await;
    let id = v["id"].as_str().unwrap().to_string();
    let v = wait_status(&api, &id, "delivered").await;
    assert_eq!(v["message"]["attempts"], 3, "{v}");
    let results: Vec<&str> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["retry", "retry", "delivered"]);
    {
        let got = sink.got.lock();
        let gap = got[2].at - got[1].at;
        assert!(
            gap >= Duration::from_millis(950),
            "Retry-After: 1 not honoured ({gap:?})"
        );
        assert!(
            got.iter().all(|d| d.headers["webhook-id"] == id.as_str()),
            "the same id on every attempt"
        );
    }
    // always 500: dead after the schedule's three attempts, then replayed by hand
    sink.script
        .lock()
        .extend([(500, None), (500, None), (500, None)]);
    let (_, v) = call(&api, "POST", "/v1/messages", &webhook(&to, "doomed")).await;
    let id = v["id"].as_str().unwrap().to_string();
    let v = wait_status(&api, &id, "dead").await;
    assert_eq!(v["message"]["attempts"], 3);
    let (s, _) = call(&api, "POST", &format!("/v1/messages/{id}/retry"), "").await;
    assert_eq!(s, 202);
    wait_status(&api, &id, "delivered").await;
    // a 4xx is final at once; a 410 also disables the endpoint
    sink.script.lock().extend([(404, None), (410, None)]);
    let (_, v) = call(&api, "POST", "/v1/messages", &webhook(&to, "404")).await;
    let v = wait_status(&api, v["id"].as_str().unwrap(), "failed").await;
    assert_eq!(v["message"]["attempts"], 1);
    let gone = format!("http://{sink_addr}/gone");
    let (_, v) = call(&api, "POST", "/v1/messages", &webhook(&gone, "410")).await;
    wait_status(&api, v["id"].as_str().unwrap(), "failed").await;
    let before = sink.got.lock().len();
    let (_, v) = call(&api, "POST", "/v1/messages", &webhook(&gone, "after 410")).await;
    let v = wait_status(&api, v["id"].as_str().unwrap(), "failed").await;
    assert!(
        v["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{v}"
    );
    assert_eq!(
        sink.got.lock().len(),
        before,
        "a disabled endpoint gets nothing"
    );
    // everything that failed for one endpoint since a time, queued again at once: the
    // 404 to /hook (now answered 200), not the two for /gone
    let hook_failed = call(&api, "GET", "/v1/messages?status=failed", "").await.1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["to"] == to.as_str())
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(hook_failed.len(), 1);
    let q = format!(
        "/v1/messages/retry?status=failed&since=0&to={}",
        to.replace(':', "%3A").replace('/', "%2F")
    );
    let (s, v) = call(&api, "POST", &q, "").await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["retried"], 1, "{v}");
    assert_eq!(v["ids"][0], hook_failed[0].as_str());
    assert_eq!(v["more"], false);
    wait_status(&api, &hook_failed[0], "delivered").await;
    let (s, v) = call(&api, "POST", "/v1/messages/retry?status=sent", "").await;
    assert_eq!(s, 400, "{v}");
    // nothing left that failed for /hook; the disabled /gone ones stay failed unless asked
    let (_, v) = call(&api, "POST", &q, "").await;
    assert_eq!(v["retried"], 0, "{v}");
    // /gone fixed by its owner: enabled again by the API, its failed messages replayed
    // and delivered
    let gone_q = gone.replace(':', "%3A").replace('/', "%2F");
    let (s, v) = call(
        &api,
        "POST",
        &format!("/v1/endpoints/enable?url={gone_q}"),
        "",
    )
    .await;
    assert_eq!((s, v["was_disabled"].as_bool()), (200, Some(true)), "{v}");
    let (_, v) = call(
        &api,
        "POST",
        &format!("/v1/endpoints/enable?url={gone_q}"),
        "",
    )
    .await;
    assert_eq!(v["was_disabled"], false, "{v}");
    let (s, v) = call(
        &api,
        "POST",
        &format!("/v1/messages/retry?status=failed&to={gone_q}"),
        "",
    )
    .await;
    assert_eq!((s, v["retried"].as_u64()), (202, Some(2)), "{v}");
    for id in v["ids"].as_array().unwrap() {
        wait_status(&api, id.as_str().unwrap(), "delivered").await;
    }
    let (s, _) = call(&api, "POST", "/v1/endpoints/enable", "").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn scheduled_messages_wait_and_can_be_cancelled() {
    scheduled_messages_wait_and_can_be_cancelled_on(Engine::Sqlite).await;
}

#[tokio::test]
async fn scheduled_messages_wait_and_can_be_cancelled_redis() {
    let Some(r) = hopline_testkit::Redis::start() else {
        return;
    };
    scheduled_messages_wait_and_can_be_cancelled_on(Engine::Redis(r.port)).await;
}

async fn scheduled_messages_wait_and_can_be_cancelled_on(engine: Engine) {
    let (sink_addr, sink) = sink().await;
    let api = start_on(engine, "", true).await;
    let to = format!("http://{sink_addr}/hook");
    let at = hopline_notify::now_ms() / 1000 + 3600;
    let body = serde_json::json!({"channel": "webhook", "to": to, "body": "later", "send_at": at})
        .to_string();
    let (s, v) = call(&api, "POST", "/v1/messages", &body).await;
    assert_eq!(s, 202);
    let id = v["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.got.lock().is_empty(), "sent before its time");
    let (s, v) = call(&api, "DELETE", &format!("/v1/messages/{id}"), "").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("cancelled")));
    let (s, _) = call(&api, "DELETE", &format!("/v1/messages/{id}"), "").await;
    assert_eq!(s, 409, "cancelled twice");
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let (sink_addr, sink) = sink().await;
    let api = start_guarded().await;
    let (s, v) = call(
        &api,
        "POST",
        "/v1/messages",
        &webhook(&format!("http://{sink_addr}/hook"), "ssrf?"),
    )
    .await;
    assert_eq!(s, 202);
    let v = wait_status(&api, v["id"].as_str().unwrap(), "failed").await;
    assert!(
        v["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("non-public"),
        "{v}"
    );
    assert!(sink.got.lock().is_empty());
}

async fn start_guarded() -> Api {
    start_with("", false).await
}

#[tokio::test]
async fn apps_and_recipients_are_rate_limited() {
    let (sink_addr, _sink) = sink().await;
    let api =
        start("app_rate = \"5/m\"\napp_burst = 5\nrecipient_rate = \"2/h\"\nrecipient_burst = 2")
            .await;
    let one = format!("http://{sink_addr}/same");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let (s, v) = call(&api, "POST", "/v1/messages", &webhook(&one, "again")).await;
        if s == 429 {
            assert_eq!(v["error"]["code"], "rate_limited", "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("recipient"),
                "{v}"
            );
            retry_after = Some(v);
        }
        statuses.push(s);
    }
    assert_eq!(statuses, [202, 202, 429], "two per recipient per hour");
    assert!(retry_after.is_some());
    // the app's own limit: 5 in all (the refused one counted against the app too)
    let mut statuses = Vec::new();
    for i in 0..3 {
        let (s, v) = call(
            &api,
            "POST",
            "/v1/messages",
            &webhook(&format!("http://{sink_addr}/r{i}"), "x"),
        )
        .await;
        if s == 429 {
            assert!(
                v["error"]["message"].as_str().unwrap().contains("app"),
                "{v}"
            );
        }
        statuses.push(s);
    }
    assert_eq!(statuses, [202, 202, 429]);
}

#[tokio::test]
async fn status_changes_stream_as_server_sent_events() {
    let api = start("").await;
    status_changes_stream(&api, &api).await;
}

/// With the Redis engine the feed is shared: a client watching node B sees the changes
/// of a message sent through node A.
#[tokio::test]
async fn status_changes_stream_as_server_sent_events_redis_across_nodes() {
    let Some(r) = hopline_testkit::Redis::start() else {
        return;
    };
    let a = start_on(Engine::Redis(r.port), "", true).await;
    let mut b = start_on(Engine::Redis(r.port), "", true).await;
    (b.key, b.secret, b.whsec) = (a.key.clone(), a.secret.clone(), a.whsec.clone());
    status_changes_stream(&b, &a).await;
}

async fn status_changes_stream(watch: &Api, send: &Api) {
    let (sink_addr, _sink) = sink().await;
    let api = watch;
    // a signed GET of the feed
    let ts = (hopline_notify::now_ms() / 1000).to_string();
    let c = model::canonical("GET", "/v1/events", None, &ts, "feed-1", b"");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut feed = client
        .get(format!("http://{}/v1/events", api.addr))
        .header("x-app-key", &api.key)
        .header("x-timestamp", &ts)
        .header("x-nonce", "feed-1")
        .header("x-signature", model::sign(&api.secret, &c))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    assert_eq!(feed.headers()["content-type"], "text/event-stream");
    let (_, v) = call(
        send,
        "POST",
        "/v1/messages",
        &webhook(&format!("http://{sink_addr}/hook"), "watched"),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    let mut text = String::new();
    let mut statuses = Vec::new();
    while !statuses.contains(&"delivered".to_string()) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), feed.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = text.find("\n\n") {
            let block = text[..i].to_string();
            text.drain(..i + 2);
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                let e: serde_json::Value = serde_json::from_str(data).unwrap();
                assert_eq!(e["id"], id.as_str());
                statuses.push(e["status"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(statuses, ["queued", "delivered"]);
}

#[tokio::test]
async fn sms_and_push_through_providers_with_signed_callbacks() {
    sms_and_push_on(Engine::Sqlite).await;
}

#[tokio::test]
async fn sms_and_push_through_providers_with_signed_callbacks_redis() {
    let Some(r) = hopline_testkit::Redis::start() else {
        return;
    };
    sms_and_push_on(Engine::Redis(r.port)).await;
}

async fn sms_and_push_on(engine: Engine) {
    let (provider, stub) = sink().await;
    let api = start_on(engine, &format!(
        "[notify.main.sms]\nurl = \"http://{provider}/sms\"\nuser = \"acct\"\npassword = \"pw\"\nfrom = \"+15550100\"\ncallback_secret = \"sms-callback-secret\"\n\
         [notify.main.push]\nurl = \"http://{provider}/push\"\ntoken = \"push-token\"\ncallback_secret = \"push-callback-secret\"\n"
    ), true)
    .await;
    sms_sent_then_reported_delivered(&api, &stub).await;
    push_retried_then_reported_bounced(&api, &stub).await;
    // email has no provider yet: refused, not queued
    let (s, v) = call(
        &api,
        "POST",
        "/v1/messages",
        r#"{"channel":"email","to":"a@b.example","subject":"s","body":"b"}"#,
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("no_provider")));
}

/// An SMS goes out as a form POST with basic auth (sent, not yet delivered); its
/// delivery report counts only when signed with the SMS provider's secret.
async fn sms_sent_then_reported_delivered(api: &Api, stub: &Sink) {
    // SMS: a form POST with basic auth; the provider took it → sent (not yet delivered)
    let (s, v) = call(
        api,
        "POST",
        "/v1/messages",
        r#"{"channel":"sms","to":"+4915112345678","body":"your code is 1234"}"#,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let sms_id = v["id"].as_str().unwrap().to_string();
    wait_status(api, &sms_id, "sent").await;
    {
        let got = stub.got.lock();
        let d = &got[0];
        assert_eq!(
            d.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(d.headers["authorization"], "Basic YWNjdDpwdw==");
        let form: Vec<(String, String)> = url::form_urlencoded::parse(d.body.as_bytes())
            .into_owned()
            .collect();
        assert!(
            form.contains(&("To".into(), "+4915112345678".into())),
            "{form:?}"
        );
        assert!(
            form.contains(&("Reference".into(), sms_id.clone())),
            "{form:?}"
        );
    }
    // its delivery report: unsigned or badly signed → 401, nothing changed
    let report = format!(r#"{{"id":"{sms_id}","status":"delivered"}}"#);
    assert_eq!(
        callback(api, "/v1/callbacks/sms", None, report.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        callback(
            api,
            "/v1/callbacks/sms",
            Some(hmac_hex("wrong", &report)),
            report.clone()
        )
        .await
        .unwrap()
        .status(),
        401
    );
    assert_eq!(
        callback(
            api,
            "/v1/callbacks/fax",
            Some(hmac_hex("sms-callback-secret", &report)),
            report.clone()
        )
        .await
        .unwrap()
        .status(),
        401
    );
    let (_, v) = call(api, "GET", &format!("/v1/messages/{sms_id}"), "").await;
    assert_eq!(v["message"]["status"], "sent", "nothing changed");
    let r = callback(
        api,
        "/v1/callbacks/sms",
        Some(hmac_hex("sms-callback-secret", &report)),
        report.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v = wait_status(api, &sms_id, "delivered").await;
    let timeline: Vec<&str> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, ["queued", "sending", "sent", "delivered"]);
}

/// A push goes out as a JSON POST with a bearer token, retried after a 500; its bounce
/// report counts only when signed with the push provider's secret.
async fn push_retried_then_reported_bounced(api: &Api, stub: &Sink) {
    // push: a JSON POST with a bearer token, retried after a 500; then a bounce report
    stub.script.lock().push_back((500, None));
    let (s, v) = call(
        api,
        "POST",
        "/v1/messages",
        r#"{"channel":"push","to":"device-token-abc","subject":"Hi","body":"Your order shipped"}"#,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let push_id = v["id"].as_str().unwrap().to_string();
    let v = wait_status(api, &push_id, "sent").await;
    assert_eq!(v["message"]["attempts"], 2);
    {
        let got = stub.got.lock();
        let d = got.last().unwrap();
        assert_eq!(d.headers["authorization"], "Bearer push-token");
        let b: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(b["message"]["token"], "device-token-abc");
        assert_eq!(b["message"]["data"]["id"], push_id.as_str());
    }
    let bounce = format!(r#"{{"id":"{push_id}","status":"bounced"}}"#);
    // the SMS provider's secret does not sign push reports
    assert_eq!(
        callback(
            api,
            "/v1/callbacks/push",
            Some(hmac_hex("sms-callback-secret", &bounce)),
            bounce.clone()
        )
        .await
        .unwrap()
        .status(),
        401
    );
    let r = callback(
        api,
        "/v1/callbacks/push",
        Some(hmac_hex("push-callback-secret", &bounce)),
        bounce,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    wait_status(api, &push_id, "bounced").await;
}

/// A provider's delivery report POSTed to `path` of the API, signed with `sig` if any.
async fn callback(
    api: &Api,
    path: &str,
    sig: Option<String>,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut r = client.post(format!("http://{}{path}", api.addr)).body(body);
    if let Some(s) = sig {
        r = r.header("x-signature", s);
    }
    r.send().await
}

/// Hex HMAC-SHA256 of `body` with `secret` (how providers sign their reports).
fn hmac_hex(secret: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    model::hex(ring::hmac::sign(&key, body.as_bytes()).as_ref())
}

/// Debian's python3-aiosmtpd (the system Python's: pyenv's may lack it). Outside CI a
/// missing sink skips loudly; in CI it fails.
/// A Python that has the Standard Webhooks reference library (`pip install
/// standardwebhooks`; .ci/run installs it).
fn standardwebhooks_python() -> Option<&'static str> {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = std::process::Command::new(py)
            .args(["-c", "import standardwebhooks"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the standardwebhooks Python library is required in CI (.ci/run installs it)");
    }
    eprintln!(
        "\n!!! SKIPPED: the standardwebhooks Python library is not installed (pip install standardwebhooks) !!!\n"
    );
    None
}

/// `Webhook(secret).verify(body, headers)` of the reference library accepts the delivery,
/// and refuses it with one byte of the body changed or the signature of another secret.
fn verify_with_reference_library(py: &str, delivery: &serde_json::Value) {
    use std::io::Write;
    let script = r#"
import json, sys
from standardwebhooks import Webhook, WebhookVerificationError
x = json.load(sys.stdin)
wh = Webhook(x["secret"])
payload = wh.verify(x["body"], x["headers"])
assert payload["body"] == "order 42 paid", payload
for body, secret in ((x["body"].replace("42", "43"), x["secret"]), (x["body"], "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ==")):
    try:
        Webhook(secret).verify(body, x["headers"])
    except WebhookVerificationError:
        continue
    sys.exit("a tampered delivery verified")
print("verified")
"#;
    let mut child = std::process::Command::new(py)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(delivery.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified"),
        "standardwebhooks: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn smtp_sink_python() -> Option<&'static str> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = std::process::Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("python3-aiosmtpd is required in CI (.ci/run installs it)");
    }
    eprintln!("\n!!! SKIPPED: python3-aiosmtpd is not installed; the SMTP test needs it !!!\n");
    None
}

#[tokio::test]
async fn email_through_a_real_smtp_server_then_a_bounce_report() {
    let Some(py) = smtp_sink_python() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut smtpd = tokio::process::Command::new(py)
        .args([
            "-u",
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = start(&format!(
        "[notify.main.email]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"Shop <shop@shop.test>\"\ncallback_secret = \"mail-callback-secret\"\n"
    ))
    .await;
    let (s, v) = call(
        &api,
        "POST",
        "/v1/messages",
        r#"{"channel":"email","to":"ada@example.test","subject":"Order 42","template":"Hello {{name}}, order {{order}} is paid.","data":{"name":"Ada","order":42}}"#,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    wait_status(&api, &id, "sent").await;
    // what the SMTP server printed: our headers and the filled template
    let mut out = String::new();
    let mut stdout = smtpd.stdout.take().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !out.contains("is paid") && tokio::time::Instant::now() < deadline {
        let mut buf = [0u8; 4096];
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(Duration::from_millis(200), stdout.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => {}
        }
    }
    assert!(out.contains("Subject: Order 42"), "{out}");
    assert!(out.contains(&format!("<{id}@shop.test>")), "{out}");
    assert!(out.contains("Hello Ada, order 42 is paid."), "{out}");
    assert!(out.contains("ada@example.test"), "{out}");
    // a bounce reported later through the callback endpoint
    let report = format!(r#"{{"id":"{id}","status":"bounced"}}"#);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"mail-callback-secret");
    let sig = model::hex(ring::hmac::sign(&key, report.as_bytes()).as_ref());
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/callbacks/email", api.addr))
        .header("x-signature", sig)
        .body(report)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_status(&api, &id, "bounced").await;
    let _ = smtpd.kill().await;
}

#[tokio::test]
async fn a_full_database_refuses_with_503_and_loses_nothing_it_accepted() {
    let (sink_addr, _sink) = sink().await;
    // a quota of a few pages stands for a full disk: SQLite answers SQLITE_FULL
    let api = start("max_database_size = \"160KiB\"").await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        let body = webhook(&format!("http://{sink_addr}/h{i}"), &"x".repeat(1500));
        let (s, v) = call(&api, "POST", "/v1/messages", &body).await;
        match s {
            202 => accepted.push(v["id"].as_str().unwrap().to_string()),
            503 => {
                assert_eq!(v["error"]["code"], "unavailable", "{v}");
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!(
        refused >= 3,
        "the quota was never reached ({} accepted)",
        accepted.len()
    );
    assert!(!accepted.is_empty());
    // everything that got a 202 is there
    for id in &accepted {
        let (s, v) = call(&api, "GET", &format!("/v1/messages/{id}"), "").await;
        assert_eq!(s, 200, "{id} was accepted but is gone: {v}");
    }
}

#[tokio::test]
async fn a_reload_reaches_the_running_workers() {
    let (sink_addr, sink) = sink().await;
    let api = start_guarded().await;
    let to = format!("http://{sink_addr}/hook");
    let (_, v) = call(&api, "POST", "/v1/messages", &webhook(&to, "before")).await;
    wait_status(&api, v["id"].as_str().unwrap(), "failed").await;
    // the same section, now allowing private targets: the next attempt follows it
    let path = api.edge.dir.path().join("hopline.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "allow_private_targets = false",
        "allow_private_targets = true",
    );
    let sections = hopline_notify::config::load(&text, &path, api.edge.dir.path()).unwrap();
    let mut routes = hopline_edge::Services::new();
    api._services.apply(&sections, &mut routes).unwrap();
    let (_, v) = call(&api, "POST", "/v1/messages", &webhook(&to, "after")).await;
    wait_status(&api, v["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(sink.got.lock().len(), 1);
}

/// A node that is gone for good (nothing pending, idle for 10 × claim_idle_ms) is removed
/// from the consumer groups by the nodes still running; the running node stays.
#[tokio::test]
async fn consumers_of_nodes_gone_for_good_are_forgotten_redis() {
    let Some(r) = hopline_testkit::Redis::start() else {
        return;
    };
    let api = start_on(
        Engine::Redis(r.port),
        "claim_idle_ms = 100\nwebhook_timeout_ms = 50\n",
        true,
    )
    .await;
    // the running node reads a message: it is a consumer of the normal-priority stream
    let (sink_addr, _sink) = sink().await;
    let (s, v) = call(
        &api,
        "POST",
        "/v1/messages",
        &webhook(&format!("http://{sink_addr}/hook"), "hello"),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    wait_status(&api, v["id"].as_str().unwrap(), "delivered").await;
    let client = redis::Client::open(r.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    let stream = "hopline:notify:{main}:q:webhook:1";
    // a consumer of a node that died (with nothing pending: taken over already)
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(stream)
        .arg("workers")
        .arg("ghost-node")
        .query(&mut c)
        .unwrap();
    let names = |c: &mut redis::Connection| -> Vec<String> {
        let info: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg("workers")
            .query(c)
            .unwrap();
        info.iter()
            .filter_map(|m| m.get("name").and_then(|v| redis::from_redis_value(v).ok()))
            .collect()
    };
    assert!(names(&mut c).contains(&"ghost-node".to_string()));
    let mut gone = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = names(&mut c);
        if !n.contains(&"ghost-node".to_string()) {
            assert_eq!(n.len(), 1, "the running node stays a consumer: {n:?}");
            gone = true;
            break;
        }
    }
    assert!(gone, "the dead node's consumer is still in the group");
}

/// A busy endpoint keeps its connections: when many attempts to one sink run at once
/// (here: messages scheduled for the same second, claimed together), the worker reuses
/// the connections it opened for the next ones instead of closing most of them after each
/// burst and connecting again (it kept only 64 idle per endpoint while 256 attempts can
/// be in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_endpoint_keeps_its_connections() {
    let api = Arc::new(start("").await);
    let (sink_addr, sink) = sink().await;
    sink.delay_ms
        .store(300, std::sync::atomic::Ordering::Relaxed);
    let to = format!("http://{sink_addr}/hook");
    const N: usize = 512;
    let due = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 8;
    let mut sends = Vec::new();
    for c in 0..16 {
        let (api, to) = (api.clone(), to.clone());
        sends.push(tokio::spawn(async move {
            for i in 0..N / 16 {
                let body = serde_json::json!({"channel": "webhook", "to": to,
                    "body": format!("{c}-{i}"), "send_at": due})
                .to_string();
                let (s, v) = call(&api, "POST", "/v1/messages", &body).await;
                assert_eq!(s, 202, "{v}");
            }
        }));
    }
    for s in sends {
        s.await.unwrap();
    }
    for _ in 0..400 {
        if sink.got.lock().len() >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sink.got.lock().len() >= N, "not all delivered");
    let conns = sink.conns.load(std::sync::atomic::Ordering::Relaxed);
    // at most one connection per attempt that can be in flight (64 x 4)
    assert!(conns <= 256, "{conns} connections for {N} messages");
}

/// `retention`: a delivered message is gone (404) once it is older than that; a
/// scheduled one stays. Bad values are refused with the key named.
#[tokio::test]
async fn finished_messages_are_dropped_after_the_retention() {
    finished_messages_are_dropped_after_the_retention_on(Engine::Sqlite).await;
}

#[tokio::test]
async fn finished_messages_are_dropped_after_the_retention_redis() {
    let Some(r) = hopline_testkit::Redis::start() else {
        return;
    };
    finished_messages_are_dropped_after_the_retention_on(Engine::Redis(r.port)).await;
}

async fn finished_messages_are_dropped_after_the_retention_on(engine: Engine) {
    let (sink_addr, _sink) = sink().await;
    let api = start_on(engine, "retention = \"1s\"", true).await;
    let (s, v) = call(
        &api,
        "POST",
        "/v1/messages",
        &webhook(&format!("http://{sink_addr}/hook"), "soon gone"),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let done = v["id"].as_str().unwrap().to_string();
    let later = serde_json::json!({"channel": "webhook", "to": format!("http://{sink_addr}/hook"),
        "body": "later", "send_at": hopline_notify::now_ms() / 1000 + 3600})
    .to_string();
    let (s, v) = call(&api, "POST", "/v1/messages", &later).await;
    assert_eq!(s, 202, "{v}");
    let scheduled = v["id"].as_str().unwrap().to_string();
    wait_status(&api, &done, "delivered").await;
    let mut gone = false;
    for _ in 0..60 {
        let (s, _) = call(&api, "GET", &format!("/v1/messages/{done}"), "").await;
        if s == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "a delivered message outlived retention = 1s");
    let (s, v) = call(&api, "GET", &format!("/v1/messages/{scheduled}"), "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"]["status"], "queued");
    // the listing has only the scheduled one left
    let (s, v) = call(&api, "GET", "/v1/messages", "").await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec![scheduled.as_str()], "{v}");
    // bad values
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.toml");
    for (bad, says) in [("\"soon\"", "retention"), ("\"0s\"", "off")] {
        let toml = format!("[notify.main]\nretention = {bad}\n");
        let e = hopline_notify::config::load(&toml, &path, dir.path()).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}

/// A reload's `retention` applies at once, on both engines: kept for ever ("off"), then
/// "1s" — the delivered message goes.
#[tokio::test]
async fn retention_follows_a_reload() {
    retention_follows_a_reload_on(Engine::Sqlite).await;
}

#[tokio::test]
async fn retention_follows_a_reload_redis() {
    let Some(r) = hopline_testkit::Redis::start() else {
        return;
    };
    retention_follows_a_reload_on(Engine::Redis(r.port)).await;
}

async fn retention_follows_a_reload_on(engine: Engine) {
    let (sink_addr, _sink) = sink().await;
    let api = start_on(engine, "retention = \"off\"", true).await;
    let to = format!("http://{sink_addr}/hook");
    let (_, v) = call(&api, "POST", "/v1/messages", &webhook(&to, "kept")).await;
    let first = v["id"].as_str().unwrap().to_string();
    wait_status(&api, &first, "delivered").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (s, _) = call(&api, "GET", &format!("/v1/messages/{first}"), "").await;
    assert_eq!(s, 200, "kept with retention = \"off\"");
    let path = api.edge.dir.path().join("hopline.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("retention = \"off\"", "retention = \"1s\"");
    let sections = hopline_notify::config::load(&text, &path, api.edge.dir.path()).unwrap();
    let mut routes = hopline_edge::Services::new();
    api._services.apply(&sections, &mut routes).unwrap();
    // a message finished after the reload expires by itself (Redis) or is purged (SQLite);
    // the one from before is purged by the embedded engine's next round
    let (_, v) = call(&api, "POST", "/v1/messages", &webhook(&to, "soon gone")).await;
    let second = v["id"].as_str().unwrap().to_string();
    wait_status(&api, &second, "delivered").await;
    let mut gone = false;
    for _ in 0..40 {
        let (s, _) = call(&api, "GET", &format!("/v1/messages/{second}"), "").await;
        if s == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "retention = \"1s\" after the reload did not apply");
}
