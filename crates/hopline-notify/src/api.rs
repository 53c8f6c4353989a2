//! The API, as a route service of the edge (TLS, limits, logs and metrics come from
//! there). Every request is signed by an app:
//! `X-App-Key`, `X-Timestamp` (Unix seconds, within ±300 s), `X-Nonce` (never twice in the
//! window), and `X-Signature = hex(hmac_sha256(secret, canonical))` with
//! `canonical = METHOD \n PATH \n QUERY_SORTED \n X-Timestamp \n X-Nonce \n hex(sha256(body))`.
//! Every error is JSON `{"error": {"code", "message"}}` with the right status.
//!
//! - `POST /v1/messages` → 202 `{id, status: "queued"}` once the message is durable
//!   (`Idempotency-Key`: the same key and body answer the first response again, another
//!   body 422);
//! - `GET /v1/messages/{id}` → the message, its attempts and its status changes;
//! - `GET /v1/messages?status=&channel=&since=&before=&limit=` → a page, newest first;
//! - `POST /v1/messages/{id}/retry` → a dead, failed or expired message queued again;
//! - `POST /v1/messages/retry?status=&since=&channel=&to=` → every such message of the
//!   app (default: dead and failed) queued again, e.g. all that failed for one endpoint;
//! - `DELETE /v1/messages/{id}` → a queued (e.g. scheduled) message cancelled;
//! - `POST /v1/endpoints/enable?url=` → a webhook endpoint disabled by its 410 enabled
//!   again;
//! - `GET /v1/analytics?from=&to=` → per channel and status: counts, latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hopline_edge::body::{Body, RequestBody};
use hopline_edge::service::{BoxFuture, RouteService, ServiceContext};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::clock::now_ms;
use crate::events::StatusChange;
use crate::model::{Channel, NewMessage, SKEW_S, SendRequest, canonical, hex, validate, verify};
use crate::service::Service;
use crate::store::records::{Accepted, App, StoreError};

/// The API of one service.
#[derive(Debug, Clone)]
pub struct NotifyApi {
    svc: Arc<Service>,
}

impl NotifyApi {
    /// Serve `svc`.
    pub fn new(svc: Arc<Service>) -> NotifyApi {
        NotifyApi { svc }
    }
}

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message.into()}}),
    )
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let text = v.to_string();
    let mut r = Response::new(Body::full(text.clone()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl RouteService for NotifyApi {
    fn call(&self, req: Request<RequestBody>, ctx: ServiceContext) -> BoxFuture<Response<Body>> {
        let svc = self.svc.clone();
        Box::pin(async move { handle(svc, req, ctx).await })
    }

    fn status(&self) -> serde_json::Value {
        let m = &self.svc.metrics;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "kind": "notify",
            "engine": self.svc.config.read().engine,
            "accepted": n(&m.accepted),
            "repeats": n(&m.repeats),
            "unauthorized": n(&m.unauthorized),
            "invalid": n(&m.invalid),
            "unavailable": n(&m.unavailable),
            "rate_limited": n(&m.limited),
        })
    }

    fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let m = &self.svc.metrics;
        let name = self.svc.name.replace('"', "'");
        let _ = writeln!(
            out,
            "# HELP hopline_notify_requests_total API requests by outcome.\n# TYPE hopline_notify_requests_total counter"
        );
        for (outcome, a) in [
            ("accepted", &m.accepted),
            ("repeat", &m.repeats),
            ("unauthorized", &m.unauthorized),
            ("invalid", &m.invalid),
            ("unavailable", &m.unavailable),
            ("rate_limited", &m.limited),
        ] {
            let _ = writeln!(
                out,
                "hopline_notify_requests_total{{service=\"{name}\",outcome=\"{outcome}\"}} {}",
                a.load(Ordering::Relaxed)
            );
        }
    }
}

/// Who is calling, once the signature checked out.
struct Caller {
    app: App,
}

async fn authenticate(
    svc: &Service,
    req: &http::request::Parts,
    body: &[u8],
) -> Result<Caller, Response<Body>> {
    let h = &req.headers;
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let (Some(key), Some(ts), Some(nonce), Some(sig)) = (
        get("x-app-key"),
        get("x-timestamp"),
        get("x-nonce"),
        get("x-signature"),
    ) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign the request: X-App-Key, X-Timestamp, X-Nonce and X-Signature are required",
        ));
    };
    let now_s = now_ms() / 1000;
    let Ok(t) = ts.parse::<u64>() else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "X-Timestamp must be Unix seconds",
        ));
    };
    if t.abs_diff(now_s) > SKEW_S {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "X-Timestamp is {} s away from the server's clock (at most {SKEW_S})",
                t.abs_diff(now_s)
            ),
        ));
    }
    if nonce.is_empty() || nonce.len() > 128 {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "X-Nonce must be 1 to 128 characters",
        ));
    }
    let app = match svc.apps.get(key) {
        Some(a) => a,
        None => {
            let a = svc.store.app(key).await.map_err(|e| {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            })?;
            svc.apps.insert(key.to_string(), a.clone());
            a
        }
    };
    let Some(app) = app else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown app key",
        ));
    };
    let c = canonical(
        req.method.as_str(),
        req.uri.path(),
        req.uri.query(),
        ts,
        nonce,
        body,
    );
    if !app.secrets.iter().any(|s| verify(s, &c, sig)) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "bad signature",
        ));
    }
    // a nonce counts only once its request proved genuine
    let seen = (app.key.clone(), nonce.to_string());
    // (nodes sharing a Redis engine share the nonces too: a replay to another node fails)
    let shared = svc
        .store
        .nonce_seen(&app.key, nonce, SKEW_S * 2 + 60)
        .await
        .transpose()
        .map_err(|e| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        })?;
    if shared == Some(true) || svc.nonces.contains_key(&seen) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "replayed",
            "this X-Nonce was already used",
        ));
    }
    svc.nonces.insert(seen, ());
    Ok(Caller { app })
}

async fn handle(
    svc: Arc<Service>,
    req: Request<RequestBody>,
    ctx: ServiceContext,
) -> Response<Body> {
    use http_body_util::BodyExt;
    // the API's paths start at /v1/, wherever the route is mounted (`/`, `/notify/`,
    // or `/v1/` itself)
    let base = ctx.prefix.trim_end_matches('/');
    let path = req.uri().path();
    let rel = match path.strip_prefix(base) {
        Some(r) if r.starts_with("/v1/") => r.to_string(),
        _ if path.starts_with("/v1/") => path.to_string(),
        Some(r) => r.to_string(),
        None => String::new(),
    };
    let max = svc.config.read().max_body.0 as usize;
    let (parts, body) = req.into_parts();
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is at most {max} bytes"),
        )
    };
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > max as u64)
    {
        svc.metrics.invalid.fetch_add(1, Ordering::Relaxed);
        return too_big();
    }
    let body = match http_body_util::Limited::new(body, max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            svc.metrics.invalid.fetch_add(1, Ordering::Relaxed);
            return too_big();
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", e.to_string()),
    };
    let segments: Vec<&str> = rel.trim_start_matches('/').split('/').collect();
    // provider callbacks are signed by the provider, not by an app
    if let ["v1", "callbacks", provider] = segments.as_slice() {
        return callback(&svc, &parts, provider, &body).await;
    }
    let known = rel == "/v1/events"
        || matches!(
            segments.as_slice(),
            ["v1", "messages"]
                | ["v1", "messages", _]
                | ["v1", "messages", _, "retry"]
                | ["v1", "endpoints", "enable"]
                | ["v1", "analytics"]
        );
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint {rel:?}"),
        );
    }
    let caller = match authenticate(&svc, &parts, &body).await {
        Ok(c) => c,
        Err(r) => {
            svc.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
            return r;
        }
    };
    let app = caller.app.key.clone();
    match (&parts.method, segments.as_slice()) {
        (&Method::POST, ["v1", "messages"]) => send(&svc, &caller, &parts, body).await,
        (&Method::GET, ["v1", "messages"]) => list(&svc, &app, parts.uri.query()).await,
        (&Method::GET, ["v1", "messages", id]) => match svc.store.get(&app, id).await {
            Ok((m, attempts, changes)) => json(
                StatusCode::OK,
                &serde_json::json!({"message": m, "attempts": attempts, "timeline": changes}),
            ),
            Err(e) => store_error(e),
        },
        (&Method::POST, ["v1", "messages", "retry"]) => {
            retry_many(&svc, &app, parts.uri.query()).await
        }
        (&Method::POST, ["v1", "messages", id, "retry"]) => {
            match svc.store.replay(&app, id, now_ms()).await {
                Ok(()) => {
                    svc.wake.notify_one();
                    json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({"id": id, "status": "queued"}),
                    )
                }
                Err(e) => store_error(e),
            }
        }
        (&Method::DELETE, ["v1", "messages", id]) => {
            match svc.store.cancel(&app, id, now_ms()).await {
                Ok(()) => json(
                    StatusCode::OK,
                    &serde_json::json!({"id": id, "status": "cancelled"}),
                ),
                Err(e) => store_error(e),
            }
        }
        (&Method::POST, ["v1", "endpoints", "enable"]) => {
            let url = query_pairs(parts.uri.query())
                .into_iter()
                .find(|(k, _)| k == "url")
                .map(|(_, v)| v);
            match url {
                None => error(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    "url: the webhook endpoint to enable again",
                ),
                Some(url) => match svc.store.enable(&url).await {
                    Ok(was) => json(
                        StatusCode::OK,
                        &serde_json::json!({"url": url, "enabled": true, "was_disabled": was}),
                    ),
                    Err(e) => store_error(e),
                },
            }
        }
        (&Method::GET, ["v1", "analytics"]) => analytics(&svc, &app, parts.uri.query()).await,
        (&Method::GET, ["v1", "events"]) => events(&svc, app).await,
        _ => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed here", parts.method),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            r
        }
    }
}

/// `GET /v1/events`: Server-Sent Events of the app's status changes, as they happen
/// (`event: status`, `data: {"id","status","attempt","at_ms"}`), with a comment every 15 s.
async fn events(svc: &Service, app: String) -> Response<Body> {
    let mut feed = svc.events.subscribe().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"retry: 2000\n: ok\n\n")).await;
        let mut ping = tokio::time::interval(std::time::Duration::from_secs(15));
        ping.tick().await;
        loop {
            let frame = tokio::select! {
                e = feed.recv() => match e {
                    Ok(e) if e.app == app => Bytes::from(format!(
                        "event: status\ndata: {}\n\n",
                        serde_json::to_string(&*e).unwrap_or_default()
                    )),
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        Bytes::from(format!(": {n} changes skipped (the client was slow); GET /v1/messages has them\n\n"))
                    }
                    Err(_) => return,
                },
                _ = ping.tick() => Bytes::from_static(b": ping\n\n"),
                _ = tx.closed() => return,
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    Body::feed(rx).event_stream()
}

/// `POST /v1/callbacks/{sms|push}`: a provider's delivery report
/// `{"id": "msg_…", "status": "delivered" | "failed" | "bounced"}`, signed by the provider
/// with `X-Signature: hex(hmac_sha256(callback_secret, body))`. Unknown providers and
/// unsigned or badly signed reports → 401, nothing changed.
async fn callback(
    svc: &Service,
    parts: &http::request::Parts,
    provider: &str,
    body: &[u8],
) -> Response<Body> {
    if parts.method != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "callbacks are POSTed",
        );
    }
    let secret = {
        let cfg = svc.config.read();
        match provider {
            "sms" => cfg.sms.as_ref().map(|p| p.callback_secret.clone()),
            "push" => cfg.push.as_ref().map(|p| p.callback_secret.clone()),
            "email" => cfg.email.as_ref().map(|p| p.callback_secret.clone()),
            _ => None,
        }
    };
    let Some(secret) = secret else {
        svc.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("no provider {provider:?} takes callbacks here"),
        );
    };
    let signature = parts
        .headers
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let valid = (0..signature.len())
        .step_by(2)
        .map(|i| {
            signature
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .is_some_and(|raw| ring::hmac::verify(&key, body, &raw).is_ok());
    if !valid {
        svc.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or bad X-Signature",
        );
    }
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    let (Some(id), Some(status)) = (v["id"].as_str(), v["status"].as_str()) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "id and status are required",
        );
    };
    let status = match status {
        "delivered" => crate::model::Status::Delivered,
        "failed" => crate::model::Status::Failed,
        "bounced" => crate::model::Status::Bounced,
        s => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("status {s:?}: delivered, failed or bounced"),
            );
        }
    };
    let now = now_ms();
    match svc.store.callback(id, provider, status, now).await {
        Ok(app) => {
            svc.events.send(StatusChange {
                app,
                id: id.to_string(),
                status: status.as_str(),
                attempt: 0,
                at_ms: now,
            });
            json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "status": status.as_str()}),
            )
        }
        Err(e) => store_error(e),
    }
}

fn store_error(e: StoreError) -> Response<Body> {
    match e {
        StoreError::NotFound => error(StatusCode::NOT_FOUND, "not_found", "no such message"),
        StoreError::Conflict(m) => error(StatusCode::CONFLICT, "conflict", m),
        StoreError::IdempotencyMismatch => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_mismatch",
            e.to_string(),
        ),
        e => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

/// `POST /v1/messages`: the message checked (its JSON, the app's channels, a provider for
/// its channel, the rate limits, the Idempotency-Key), then stored: 202.
async fn send(
    svc: &Service,
    caller: &Caller,
    parts: &http::request::Parts,
    body: Bytes,
) -> Response<Body> {
    let now = now_ms();
    let msg = match checked_message(svc, caller, &body, now) {
        Ok(m) => m,
        Err(refused) => return *refused,
    };
    if let Some(refused) = rate_limited(svc, caller, &msg).await {
        return refused;
    }
    let idempotency = match idempotency_key(svc, parts, &body) {
        Ok(k) => k,
        Err(refused) => return *refused,
    };
    accept(svc, caller, msg, idempotency, now).await
}

/// The message a send request's body asks for, valid, on a channel the app may use and
/// that has a provider here; or the answer that refuses it.
fn checked_message(
    svc: &Service,
    caller: &Caller,
    body: &[u8],
    now: u64,
) -> Result<NewMessage, Box<Response<Body>>> {
    let req: SendRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            svc.metrics.invalid.fetch_add(1, Ordering::Relaxed);
            let code = if e.is_data() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            return Err(Box::new(error(code, "invalid_json", e.to_string())));
        }
    };
    let max = svc.config.read().max_body.0 as usize;
    let msg = match validate(req, now, max) {
        Ok(m) => m,
        Err(e) => {
            svc.metrics.invalid.fetch_add(1, Ordering::Relaxed);
            let status = if e.field == "channel" && !e.message.starts_with("unknown") {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let mut r = error(status, "invalid", e.to_string());
            if let Ok(v) = HeaderValue::from_str(e.field) {
                r.headers_mut().insert("x-invalid-field", v);
            }
            return Err(Box::new(r));
        }
    };
    if let Some(allowed) = &caller.app.channels
        && !allowed.iter().any(|c| c == msg.channel.as_str())
    {
        svc.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this app may not use channel {}", msg.channel.as_str()),
        )));
    }
    let provided = {
        let cfg = svc.config.read();
        match msg.channel {
            Channel::Webhook => true,
            Channel::Sms => cfg.sms.is_some(),
            Channel::Push => cfg.push.is_some(),
            Channel::Email => cfg.email.is_some(),
        }
    };
    if !provided {
        svc.metrics.invalid.fetch_add(1, Ordering::Relaxed);
        return Err(Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_provider",
            format!(
                "channel {} has no provider here ({})",
                msg.channel.as_str(),
                "configure [notify.NAME.email], [notify.NAME.sms] or [notify.NAME.push]"
            ),
        )));
    }
    Ok(msg)
}

/// The 429 when the app's or the recipient's rate limit refuses `msg` (GCRA; shared
/// through Redis if so set), or None.
async fn rate_limited(svc: &Service, caller: &Caller, msg: &NewMessage) -> Option<Response<Body>> {
    let keys = [
        caller.app.key.clone(),
        format!(
            "{}\u{1f}{}\u{1f}{}",
            caller.app.key,
            msg.channel.as_str(),
            msg.to
        ),
    ];
    for (limiter, (key, what)) in svc
        .limits
        .iter()
        .zip(keys.iter().zip(["this app", "this recipient"]))
    {
        if let Some(l) = limiter {
            let d = l.check(key).await;
            if !d.allowed {
                svc.metrics.limited.fetch_add(1, Ordering::Relaxed);
                let secs = d.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many messages for {what}; retry after {secs} s"),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return Some(r);
            }
        }
    }
    None
}

/// The request's Idempotency-Key with the hash of its body (None without a key), or the
/// 400 for a malformed key.
fn idempotency_key(
    svc: &Service,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<Option<(String, String)>, Box<Response<Body>>> {
    Ok(
        match parts.headers.get("idempotency-key").map(|v| v.to_str()) {
            None => None,
            Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => {
                let digest = ring::digest::digest(&ring::digest::SHA256, body);
                Some((k.to_string(), hex(digest.as_ref())))
            }
            Some(_) => {
                svc.metrics.invalid.fetch_add(1, Ordering::Relaxed);
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "bad_idempotency_key",
                    "Idempotency-Key must be 1 to 255 visible characters",
                )));
            }
        },
    )
}

/// Store the message: 202 with its id (again for a repeated Idempotency-Key), or the
/// store's error.
async fn accept(
    svc: &Service,
    caller: &Caller,
    msg: NewMessage,
    idempotency: Option<(String, String)>,
    now: u64,
) -> Response<Body> {
    match svc.submit(&caller.app.key, msg, idempotency, now).await {
        Ok(Accepted::New(id)) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({"id": id, "status": "queued"}),
        ),
        Ok(Accepted::Again(id)) => {
            let mut r = json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"id": id, "status": "queued"}),
            );
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            r
        }
        Err(e) => store_error(e),
    }
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn time_param(v: &str) -> Option<u64> {
    v.parse::<u64>()
        .ok()
        .map(|s| s * 1000)
        .or_else(|| crate::model::parse_rfc3339_ms(v))
}

async fn list(svc: &Service, app: &str, query: Option<&str>) -> Response<Body> {
    let (mut status, mut channel, mut since, mut before, mut limit) =
        (None, None, None, None, 50usize);
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "status" => status = Some(v),
            "channel" => channel = Some(v),
            "since" => match since_param(&v) {
                Ok(t) => since = Some(t),
                Err(r) => return r,
            },
            "before" => before = Some(v),
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=500).contains(&n) => limit = n,
                _ => return error(StatusCode::BAD_REQUEST, "bad_query", "limit: 1 to 500"),
            },
            _ => {}
        }
    }
    match svc
        .store
        .list(app, status, channel, since, before, limit)
        .await
    {
        Ok(ms) => {
            let next = (ms.len() == limit)
                .then(|| ms.last().map(|m| m.id.clone()))
                .flatten();
            json(
                StatusCode::OK,
                &serde_json::json!({"messages": ms, "next_before": next}),
            )
        }
        Err(e) => store_error(e),
    }
}

/// `since=`: Unix seconds or RFC 3339, or the 400 that says so.
#[allow(clippy::result_large_err)] // a refusal, made once per request at most
fn since_param(v: &str) -> Result<u64, Response<Body>> {
    time_param(v).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "since: Unix seconds or RFC 3339",
        )
    })
}

/// Most messages one bulk retry queues again.
const RETRY_MANY_MAX: usize = 10_000;

/// `POST /v1/messages/retry?status=dead,failed&since=&channel=&to=`: every message of the
/// app in those statuses (default dead and failed; `expired` may be asked) accepted since
/// `since`, of that channel and to that recipient (an endpoint's URL), queued again —
/// at most 10,000 a call (`"more": true` when there were more: call again).
async fn retry_many(svc: &Service, app: &str, query: Option<&str>) -> Response<Body> {
    let (mut statuses, mut channel, mut since, mut to) = (
        vec!["dead".to_string(), "failed".to_string()],
        None,
        None,
        None,
    );
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "status" => {
                statuses = v.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = statuses
                    .iter()
                    .find(|s| !matches!(s.as_str(), "dead" | "failed" | "expired"))
                {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_query",
                        format!("status: dead, failed or expired (comma separated), not {bad:?}"),
                    );
                }
            }
            "channel" => channel = Some(v),
            "to" => to = Some(v),
            "since" => match since_param(&v) {
                Ok(t) => since = Some(t),
                Err(r) => return r,
            },
            _ => {}
        }
    }
    let now = now_ms();
    let mut ids: Vec<String> = Vec::new();
    let mut more = false;
    'statuses: for status in &statuses {
        let mut before: Option<String> = None;
        loop {
            let page = match svc
                .store
                .list(
                    app,
                    Some(status.clone()),
                    channel.clone(),
                    since,
                    before.clone(),
                    500,
                )
                .await
            {
                Ok(p) => p,
                Err(e) => return store_error(e),
            };
            let last = page.last().map(|m| m.id.clone());
            let full = page.len() == 500;
            for m in page {
                if to.as_deref().is_some_and(|t| t != m.to) {
                    continue;
                }
                if ids.len() == RETRY_MANY_MAX {
                    more = true;
                    break 'statuses;
                }
                if let Err(e) = svc.store.replay(app, &m.id, now).await {
                    return store_error(e);
                }
                ids.push(m.id);
            }
            if !full {
                break;
            }
            before = last;
        }
    }
    if !ids.is_empty() {
        svc.wake.notify_one();
    }
    json(
        StatusCode::ACCEPTED,
        &serde_json::json!({"retried": ids.len(), "ids": ids, "more": more}),
    )
}

fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[((v.len() - 1) as f64 * p).round() as usize])
}

async fn analytics(svc: &Service, app: &str, query: Option<&str>) -> Response<Body> {
    let now = now_ms();
    let (mut from, mut to) = (now.saturating_sub(86_400_000), now + 1);
    for (k, v) in query_pairs(query) {
        match (k.as_str(), time_param(&v)) {
            ("from", Some(t)) => from = t,
            ("to", Some(t)) => to = t,
            ("from" | "to", None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    format!("{k}: Unix seconds or RFC 3339"),
                );
            }
            _ => {}
        }
    }
    match svc.store.analytics(app, from, to).await {
        Ok(groups) => {
            let rows: Vec<serde_json::Value> = groups
                .into_iter()
                .map(|(channel, status, count, mut sent, mut delivered)| {
                    serde_json::json!({
                        "channel": channel, "status": status, "count": count,
                        "accepted_to_sent_ms": {"p50": percentile(&mut sent, 0.5), "p99": percentile(&mut sent, 0.99)},
                        "sent_to_delivered_ms": {"p50": percentile(&mut delivered, 0.5), "p99": percentile(&mut delivered, 0.99)},
                    })
                })
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({"from": from / 1000, "to": to / 1000, "groups": rows}),
            )
        }
        Err(e) => store_error(e),
    }
}
