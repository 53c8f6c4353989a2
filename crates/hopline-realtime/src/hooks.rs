//! App hooks (what Centrifugo calls its proxy): before a client connects, subscribes or
//! publishes, the hub asks the application over HTTP and does what it answers.
//!
//! The hub POSTs JSON to the event's URL:
//! `{"event":"subscribe","hub":"live","channel":"orders","transport":"sse",
//!   "client":"203.0.113.7:53211","claims":{"sub":"u1","channels":["orders"]},
//!   "headers":{"cookie":"…"},"data":"…"}` (`data`: publish only; `claims`: when the hub
//! checks tokens and the client showed one).
//!
//! The application answers:
//! - `2xx` with `{}` or `{"allow": true}`: allowed; for a publication
//!   `{"data": "…"}` (a string, or any JSON value, published as its text) replaces the
//!   data;
//! - `2xx` with `{"allow": false, "reason": "…"}`, or any `4xx` (its body the reason):
//!   denied — 403 (or that 4xx) to an HTTP client, an error message to a WebSocket;
//! - anything else (`5xx`, not JSON, no answer within `timeout_ms`, refused): the hook
//!   failed, and `on_error` decides — `deny` (503, the default) or `allow`.
//!
//! One keep-alive client per hub; every answer is counted in the hub's metrics.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{Hooks, OnError};
use crate::metrics::Metrics;
use crate::token::Claims;

/// Largest hook answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// The hook events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Connect,
    Subscribe,
    Publish,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Connect => "connect",
            Event::Subscribe => "subscribe",
            Event::Publish => "publish",
        }
    }

    fn url(self, hooks: &Hooks) -> Option<&str> {
        match self {
            Event::Connect => hooks.connect.as_deref(),
            Event::Subscribe => hooks.subscribe.as_deref(),
            Event::Publish => hooks.publish.as_deref(),
        }
    }
}

/// What the application decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on; for a publication, maybe with other data.
    Allow(Option<Bytes>),
    /// Refused, with the status an HTTP client gets and the reason.
    Deny(StatusCode, String),
}

/// One question to the application.
pub struct Ask<'a> {
    pub event: Event,
    pub channel: &'a str,
    /// `websocket`, `sse`, `poll`, `long_poll` or `http` (a publication by POST).
    pub transport: &'static str,
    pub client: Option<SocketAddr>,
    pub claims: Option<&'a Claims>,
    /// The client's fields the hooks pass on (already picked by [`pick_headers`]).
    pub headers: &'a [(String, String)],
    pub data: Option<&'a [u8]>,
}

/// The HTTP client of a hub's hooks.
#[derive(Clone)]
pub struct HookClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for HookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookClient")
    }
}

impl Default for HookClient {
    fn default() -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        HookClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(http),
        }
    }
}

/// The fields of `headers` that `hooks` pass on.
pub fn pick_headers(hooks: Option<&Hooks>, headers: &HeaderMap) -> Vec<(String, String)> {
    let Some(hooks) = hooks else {
        return Vec::new();
    };
    hooks
        .headers
        .iter()
        .filter_map(|name| {
            let v = headers.get(name.as_str())?.to_str().ok()?;
            Some((name.to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}

impl HookClient {
    /// Ask the application (when `hooks` has a URL for the event; else allowed).
    pub async fn ask(&self, hub: &str, hooks: &Hooks, metrics: &Metrics, ask: Ask<'_>) -> Verdict {
        let Some(url) = ask.event.url(hooks) else {
            return Verdict::Allow(None);
        };
        let answer = tokio::time::timeout(
            Duration::from_millis(hooks.timeout_ms),
            self.post(url, hub, &ask),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer in {} ms", hooks.timeout_ms)));
        let verdict = match answer {
            Ok(v) => v,
            Err(why) => {
                metrics.hooks_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "hopline::realtime", "{} hook {url}: {why}", ask.event.name());
                return match hooks.on_error {
                    OnError::Allow => Verdict::Allow(None),
                    OnError::Deny => Verdict::Deny(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the application's {} hook failed", ask.event.name()),
                    ),
                };
            }
        };
        match &verdict {
            Verdict::Allow(_) => metrics.hooks_allowed.fetch_add(1, Ordering::Relaxed),
            Verdict::Deny(..) => metrics.hooks_denied.fetch_add(1, Ordering::Relaxed),
        };
        verdict
    }

    async fn post(&self, url: &str, hub: &str, ask: &Ask<'_>) -> Result<Verdict, String> {
        let mut body = serde_json::json!({
            "event": ask.event.name(),
            "hub": hub,
            "transport": ask.transport,
            "client": ask.client.map(|c| c.to_string()),
            "claims": ask.claims,
            "headers": ask
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>(),
        });
        // (a connection has no channel)
        if ask.event != Event::Connect && !ask.channel.is_empty() {
            body["channel"] = ask.channel.into();
        }
        if let Some(d) = ask.data {
            body["data"] = String::from_utf8_lossy(d).into_owned().into();
        }
        let req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "hopline-realtime-hook")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| {
            use std::error::Error;
            match e.source() {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            }
        })?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if status.is_client_error() {
            let reason = String::from_utf8_lossy(&bytes).trim().to_string();
            return Ok(Verdict::Deny(
                status,
                if reason.is_empty() {
                    format!("denied by the application ({status})")
                } else {
                    reason
                },
            ));
        }
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Verdict::Allow(None));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
        if !v.is_object() {
            return Err("the answer is not a JSON object".into());
        }
        if v.get("allow") == Some(&serde_json::Value::Bool(false)) {
            let reason = v
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("denied by the application")
                .to_string();
            return Ok(Verdict::Deny(StatusCode::FORBIDDEN, reason));
        }
        let data = match v.get("data") {
            None | Some(serde_json::Value::Null) => None,
            Some(_) if ask.event != Event::Publish => None,
            Some(serde_json::Value::String(s)) => Some(Bytes::from(s.clone())),
            Some(other) => Some(Bytes::from(other.to_string())),
        };
        Ok(Verdict::Allow(data))
    }
}
