//! Rate limits through real sockets: exact burst then 429, honest Retry-After, the IETF
//! RateLimit headers, separate buckets per key.

mod common;

use std::time::Duration;

use common::{client, start};
use reqwest::StatusCode;

const LIMITED: &str = r#"
access_log = "off"
[limit.api]
key = "client_ip"
rate = "2/s"
burst = 5
[limit.keys]
key = "header:X-App-Key"
rate = "1/m"
burst = 2
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/api/"
  respond = { body = "ok" }
  limit = "api"
  [[site.route]]
  path = "/keyed/"
  respond = { body = "ok" }
  limit = "keys"
  [[site.route]]
  path = "/"
  respond = { body = "free" }
"#;

#[tokio::test]
async fn exact_burst_then_429_with_an_honest_retry_after() {
    let t = start(LIMITED).await;
    let c = client();
    for i in 0..5 {
        let r = c.get(t.url("/api/x")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "request {i} of the burst");
        assert_eq!(r.headers()["ratelimit-policy"], "\"api\";q=2;w=1;burst=5");
        assert!(
            r.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with(&format!("\"api\";r={};", 4 - i))
        );
    }
    let r = c.get(t.url("/api/x")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 1);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("rate limit \"api\" exceeded")
    );
    // unlimited routes are untouched
    assert_eq!(
        c.get(t.url("/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    // after Retry-After, one more request passes (2/s: one every 500 ms)
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(
        c.get(t.url("/api/x")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(t.url("/api/x")).send().await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn header_keys_have_their_own_buckets() {
    let t = start(LIMITED).await;
    let c = client();
    for key in ["alice", "bob"] {
        for _ in 0..2 {
            let r = c
                .get(t.url("/keyed/"))
                .header("x-app-key", key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{key}");
        }
        let r = c
            .get(t.url("/keyed/"))
            .header("x-app-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{key}");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (59..=60).contains(&retry),
            "1/m: the next slot comes 60 s after the burst, got {retry}"
        );
    }
}
