//! hopline-notify: the notification service of the seed notes — a signed JSON API (app
//! key and secret), idempotency, durable per-channel queues with priorities, scheduling
//! and expiry (embedded SQLite), workers with retries and a dead-letter state, webhook
//! delivery signed per Standard Webhooks, and message status with its timeline and
//! analytics. Mounted on the edge as a route service (`notify = "NAME"`).
//!
//! - [`model`]: validation, statuses, retry schedule, signatures — no I/O;
//! - [`store`]: the store behind one trait — SQLite with one group-committing writer,
//!   or Redis shared by several nodes;
//! - [`events`]: the feed of status changes;
//! - [`worker`]: the dispatcher and the providers (webhook, SMS, push, email);
//! - [`service`]: one running service (store, workers, purge);
//! - [`api`]: the HTTP API as an edge [`hopline_edge::RouteService`].

pub mod api;
pub mod clock;
pub mod config;
pub mod events;
pub mod metrics;
pub mod model;
pub mod product;
pub mod service;
pub mod store;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use clock::{http_date_ms, now_ms};
pub use config::NotifyConfig;
pub use events::{StatusChange, StatusEvent};
pub use service::Service;

use crate::api::NotifyApi;
use crate::service::worker_settings;
use crate::store::records::StoreError;
/// The notification services running for a config, one per `[notify.NAME]` section,
/// kept across reloads (a section still there keeps its store and workers; its limits
/// are re-read).
#[derive(Debug, Default)]
pub struct RunningServices {
    running: parking_lot::Mutex<BTreeMap<String, Arc<Service>>>,
}

impl RunningServices {
    /// None yet.
    pub fn new() -> RunningServices {
        RunningServices::default()
    }

    /// Start (or update) a service per section and register each as a `notify` route
    /// service.
    pub fn apply(
        &self,
        sections: &BTreeMap<String, NotifyConfig>,
        services: &mut hopline_edge::Services,
    ) -> Result<(), StoreError> {
        let mut running = self.running.lock();
        let mut next = BTreeMap::new();
        for (name, cfg) in sections {
            let svc = match running.get(name) {
                Some(s)
                    if s.config.read().database == cfg.database
                        && s.config.read().engine == cfg.engine =>
                {
                    // retry schedule, providers and the SSRF guard apply to the next attempt
                    *s.live.write() = Arc::new(worker_settings(cfg, &s.events)?);
                    s.retention.send_replace(cfg.retention());
                    s.store.set_retention(cfg.retention());
                    *s.config.write() = cfg.clone();
                    s.clone()
                }
                _ => Service::start(name, cfg)?,
            };
            services.insert("notify", name, Arc::new(NotifyApi::new(svc.clone())));
            next.insert(name.clone(), svc);
        }
        // a section the file no longer has (or one restarted on another store) stops now
        for (name, old) in running.iter() {
            if next.get(name).is_none_or(|s| !Arc::ptr_eq(s, old)) {
                old.shutdown();
            }
        }
        *running = next;
        Ok(())
    }

    /// Stop every service (the server stops).
    pub fn shutdown_all(&self) {
        for svc in std::mem::take(&mut *self.running.lock()).into_values() {
            svc.shutdown();
        }
    }

    /// The service named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.running.lock().get(name).cloned()
    }
}
