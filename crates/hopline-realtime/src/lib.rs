//! hopline-realtime: real-time channels — one channel log served by short polling, long
//! polling, Server-Sent Events and WebSocket, mounted on the edge as a route service.
//!
//! - [`channel_log`]: the channel log and positions (`epoch:offset`), no I/O;
//! - [`ws`]: RFC 6455 framing and permessage-deflate, no I/O;
//! - [`token`]: HS256 channel tokens;
//! - [`channel`]: a channel's log, its wake-ups and the sockets its publishers write to
//!   directly;
//! - [`engine`]: what orders publications — in memory, or Redis Streams for several
//!   nodes;
//! - [`hub`]: the channels of one section and its engine;
//! - [`hooks`]: the application's say (HTTP) on connections, subscriptions and
//!   publications;
//! - [`service`] and [`session`]: the HTTP (polls and Server-Sent Events) and WebSocket
//!   faces, as an edge [`hopline_edge::RouteService`].
//!
//! ```toml
//! [realtime.live]
//! history = 1000
//! history_ttl = "5m"
//! publish = { jwt_secret = "a-long-shared-secret" }
//! [[site]]
//! listen = ["127.0.0.1:8080"]
//!   [[site.route]]
//!   path = "/live/"
//!   realtime = "live"
//! ```

pub mod channel;
pub mod channel_log;
pub mod config;
mod direct;
pub mod engine;
mod frames;
pub mod hooks;
pub mod hub;
pub mod metrics;
pub mod product;
pub mod request;
pub mod service;
pub mod session;
mod sse;
pub mod token;
pub mod ws;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use config::RealtimeConfig;
pub use hub::Hub;
pub use service::RealtimeService;

use crate::engine::EngineError;

/// The hubs of a config, kept across reloads: a hub whose section is still there keeps
/// its channels and subscribers (its settings are updated); a removed one is shut down.
#[derive(Debug, Default)]
pub struct Hubs {
    hubs: parking_lot::Mutex<BTreeMap<String, Arc<Hub>>>,
}

impl Hubs {
    /// No hubs yet.
    pub fn new() -> Hubs {
        Hubs::default()
    }

    /// Make (or update) a hub per section and register each as a `realtime` route
    /// service in `services`.
    pub fn apply(
        &self,
        sections: &BTreeMap<String, RealtimeConfig>,
        services: &mut hopline_edge::Services,
    ) -> Result<(), EngineError> {
        let mut hubs = self.hubs.lock();
        let mut next = BTreeMap::new();
        for (name, cfg) in sections {
            let hub = match hubs.get(name) {
                Some(h) if h.settings().config.engine == cfg.engine => {
                    h.reconfigure(cfg);
                    h.clone()
                }
                _ => Hub::new(name, cfg)?,
            };
            services.insert(
                "realtime",
                name,
                Arc::new(RealtimeService::new(hub.clone())),
            );
            next.insert(name.clone(), hub);
        }
        for (name, old) in hubs.iter() {
            if next.get(name).is_none_or(|h| !Arc::ptr_eq(h, old)) {
                old.shutdown();
            }
        }
        *hubs = next;
        Ok(())
    }

    /// Shut every hub down (the server stops).
    pub fn shutdown_all(&self) {
        for hub in std::mem::take(&mut *self.hubs.lock()).into_values() {
            hub.shutdown();
        }
    }

    /// The hub named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Hub>> {
        self.hubs.lock().get(name).cloned()
    }
}
