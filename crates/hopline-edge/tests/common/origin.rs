//! In-process origin servers for proxy tests: real hyper servers on 127.0.0.1:0 that
//! can be slowed, failed, made unhealthy and killed.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type Resp = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

#[derive(Default)]
pub struct Controls {
    pub hits: AtomicU64,
    pub health_hits: AtomicU64,
    pub delay_ms: AtomicU64,
    pub fail_500: AtomicBool,
    pub unhealthy: AtomicBool,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// `/obj/...`: response headers the test controls
    pub obj_headers: parking_lot::Mutex<Vec<(String, String)>>,
    /// `/obj/...`: the body (its ETag is derived from it)
    pub obj_body: parking_lot::Mutex<String>,
    /// `/obj/...`: requests that carried If-None-Match and got 304
    pub not_modified: AtomicU64,
    /// `/obj/...`: the last request's headers
    pub last_headers: parking_lot::Mutex<Vec<(String, String)>>,
}

pub struct Origin {
    pub name: String,
    pub addr: SocketAddr,
    pub ctl: Arc<Controls>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Origin {
    pub async fn start(name: &str) -> Origin {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str) -> Origin {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctl = Arc::new(Controls::default());
        let (ctl2, name2) = (ctl.clone(), name.to_string());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let (ctl, name) = (ctl2.clone(), name2.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (ctl, name) = (ctl.clone(), name.clone());
                        async move { Ok::<_, Infallible>(serve(req, &ctl, &name).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Origin {
            name: name.into(),
            addr,
            ctl,
            task: Some(task),
        }
    }

    /// Kill it: the listener and every open connection go away.
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub fn hits(&self) -> u64 {
        self.ctl.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

fn full(s: impl Into<Bytes>) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    Full::new(s.into()).boxed()
}

async fn serve(mut req: Request<Incoming>, ctl: &Controls, name: &str) -> Resp {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        ctl.health_hits.fetch_add(1, Ordering::Relaxed);
        let bad = ctl.unhealthy.load(Ordering::Relaxed);
        let mut r = Response::new(full(if bad { "sick" } else { "ok" }));
        *r.status_mut() = if bad {
            hyper::StatusCode::SERVICE_UNAVAILABLE
        } else {
            hyper::StatusCode::OK
        };
        return r;
    }
    ctl.hits.fetch_add(1, Ordering::Relaxed);
    let now = ctl.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    ctl.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = ctl.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let resp = match path.as_str() {
        p if p.starts_with("/obj") => {
            *ctl.last_headers.lock() = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = ctl.obj_body.lock().clone();
            let lang = req
                .headers()
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = if body.contains("{lang}") {
                body.replace("{lang}", &lang)
            } else {
                body
            };
            let etag = format!(
                "\"{:x}\"",
                body.len() * 31 + body.bytes().map(|b| b as usize).sum::<usize>()
            );
            let inm = req
                .headers()
                .get("if-none-match")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.to_string());
            if ctl.fail_500.load(Ordering::Relaxed) {
                let mut r = Response::new(full("origin broken"));
                *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                r
            } else if inm.as_deref() == Some(etag.as_str()) {
                ctl.not_modified.fetch_add(1, Ordering::Relaxed);
                let mut r = Response::new(full(""));
                *r.status_mut() = hyper::StatusCode::NOT_MODIFIED;
                r.headers_mut().insert("etag", etag.parse().unwrap());
                for (k, v) in ctl.obj_headers.lock().iter() {
                    r.headers_mut().append(
                        hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                r
            } else {
                let mut r = Response::new(full(body));
                r.headers_mut().insert("etag", etag.parse().unwrap());
                r.headers_mut()
                    .insert("content-type", "text/plain".parse().unwrap());
                for (k, v) in ctl.obj_headers.lock().iter() {
                    // (`{path}` in a value: the request's path, for per-object fields)
                    r.headers_mut().append(
                        hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.replace("{path}", &path).parse().unwrap(),
                    );
                }
                r
            }
        }
        "/session" => {
            // an application with its own session cookie: set once, then read back
            let cookie = req
                .headers()
                .get_all("cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join("; ");
            let mut r = Response::new(full(format!("{name}|{cookie}")));
            if !cookie.contains("JSESSIONID=") {
                r.headers_mut().insert(
                    "set-cookie",
                    format!("JSESSIONID={name}-sess; Path=/; HttpOnly")
                        .parse()
                        .unwrap(),
                );
            }
            r
        }
        "/echo" => {
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                headers.insert(
                    k.to_string(),
                    serde_json::Value::String(v.to_str().unwrap_or("").into()),
                );
            }
            let method = req.method().to_string();
            let version = format!("{:?}", req.version());
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let digest = {
                use sha2::Digest;
                format!("{:x}", sha2::Sha256::digest(&body))
            };
            let v = serde_json::json!({"origin": name, "method": method, "version": version, "headers": headers, "body_len": body.len(), "sha256": digest});
            let mut r = Response::new(full(v.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r.headers_mut()
                .insert("connection", "x-hop".parse().unwrap());
            r.headers_mut()
                .insert("x-hop", "must not pass".parse().unwrap());
            r
        }
        "/big" => {
            let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
            Response::new(full(data))
        }
        "/sse" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for i in 0..3 {
                    let ev = format!("id: {i}\ndata: event {i}\n\n");
                    if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
            });
            let stream = tokio_stream_from(rx);
            let mut r = Response::new(StreamBody::new(stream).boxed());
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r.headers_mut()
                .insert("cache-control", "no-cache".parse().unwrap());
            r
        }
        "/ws" => {
            use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                let mut r = Response::new(full("not a websocket request"));
                *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
                return r;
            };
            let accept = derive_accept_key(key.as_bytes());
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                use futures::{SinkExt, StreamExt};
                let Ok(up) = on_upgrade.await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(up),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            r.headers_mut()
                .insert("connection", "Upgrade".parse().unwrap());
            r.headers_mut()
                .insert("sec-websocket-accept", accept.parse().unwrap());
            r
        }
        _ => {
            if ctl.fail_500.load(Ordering::Relaxed) {
                let mut r = Response::new(full(format!("{name} failed")));
                *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                r
            } else {
                Response::new(full(name.to_string()))
            }
        }
    };
    ctl.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
