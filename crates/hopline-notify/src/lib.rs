//! hopline-notify: the notification service of the seed notes — a signed JSON API (app
//! key and secret), idempotency, durable per-channel queues with priorities, scheduling
//! and expiry (embedded SQLite), workers with retries and a dead-letter state, webhook
//! delivery signed per Standard Webhooks, and message status with its timeline and
//! analytics. Mounted on the edge as a route service (`notify = "NAME"`).
//!
//! - [`model`]: validation, statuses, retry schedule, signatures — no I/O;
//! - [`store`]: SQLite with one group-committing writer;
//! - [`worker`]: the dispatcher and the webhook provider;
//! - [`api`]: the HTTP API as an edge [`hopline_edge::RouteService`].

pub mod api;
pub mod config;
pub mod events;
pub mod model;
pub mod redis_store;
pub mod store;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use config::NotifyConfig;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An HTTP date (`Retry-After`) as Unix ms.
pub fn http_date_ms(s: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(s).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// A message's status changed (fed to `GET /v1/events`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusChange {
    /// The app's key (the feed shows an app its own messages only).
    #[serde(skip)]
    pub app: String,
    /// The message.
    pub id: String,
    /// Its new status.
    pub status: &'static str,
    /// The attempt that led to it (0: not an attempt, e.g. accepted).
    pub attempt: u32,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// A shared status change.
pub type StatusEvent = Arc<StatusChange>;

/// One running service: its store, its workers and its API.
#[derive(Debug)]
pub struct Service {
    /// The section's name.
    pub name: String,
    /// The store.
    pub store: Arc<store::Store>,
    /// The config it runs with (the database and engine are fixed at start).
    pub config: parking_lot::RwLock<NotifyConfig>,
    /// Woken when a message is accepted.
    pub wake: Arc<tokio::sync::Notify>,
    /// Status changes as they happen.
    pub events: events::Events,
    /// Counters.
    pub metrics: api::Metrics,
    nonces: moka::sync::Cache<(String, String), ()>,
    /// Per-app and per-recipient limits (GCRA).
    pub(crate) limits: [Option<hopline_edge::limits::limiter::Limiter>; 2],
    /// What the workers run with now (replaced on reload).
    live: worker::LiveSettings,
    apps: moka::sync::Cache<String, Option<store::App>>,
    _workers: tokio::task::JoinHandle<()>,
    _purger: tokio::task::JoinHandle<()>,
    /// How long finished messages are kept (the purge loop and the Redis scripts follow
    /// a reload's value).
    retention: tokio::sync::watch::Sender<Option<std::time::Duration>>,
    _event_tasks: events::EventTasks,
}

impl Service {
    /// Open the store and start the workers.
    pub fn start(name: &str, config: &NotifyConfig) -> Result<Arc<Service>, store::StoreError> {
        let store = if config.engine.starts_with("redis://") {
            Arc::new(store::Store::redis(
                &config.engine,
                name,
                config.claim_idle_ms(),
                config.retention(),
            )?)
        } else {
            if let Some(dir) = config.database.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            Arc::new(store::Store::sqlite(
                &config.database,
                config.max_database_size.map(|s| s.0),
            )?)
        };
        let wake = Arc::new(tokio::sync::Notify::new());
        let (events, event_tasks) = store.events();
        let live: worker::LiveSettings = Arc::new(parking_lot::RwLock::new(Arc::new(
            worker_settings(config, &events)?,
        )));
        let workers = worker::spawn(store.clone(), live.clone(), wake.clone());
        let (retention, retention_rx) = tokio::sync::watch::channel(config.retention());
        let purger = tokio::spawn(purge_loop(store.clone(), retention_rx));
        let limiter = |name: &str, rate: &Option<String>, burst: Option<u32>| {
            rate.as_ref().map(|r| {
                hopline_edge::limits::limiter::Limiter::new(
                    name,
                    &hopline_edge::limits::config::LimitConfig {
                        key: "header:x-app-key".into(),
                        rate: r.clone(),
                        burst,
                        store: config.limit_store.clone(),
                        max_keys: 1_000_000,
                    },
                )
            })
        };
        let app_limit = limiter(&format!("{name}-app"), &config.app_rate, config.app_burst)
            .transpose()
            .map_err(store::StoreError::Unavailable)?;
        let recipient_limit = limiter(
            &format!("{name}-recipient"),
            &config.recipient_rate,
            config.recipient_burst,
        )
        .transpose()
        .map_err(store::StoreError::Unavailable)?;
        Ok(Arc::new(Service {
            limits: [app_limit, recipient_limit],
            live,
            name: name.to_string(),
            store,
            config: parking_lot::RwLock::new(config.clone()),
            wake,
            events,
            _event_tasks: event_tasks,
            metrics: api::Metrics::default(),
            nonces: moka::sync::Cache::builder()
                .time_to_live(std::time::Duration::from_secs(api::SKEW_S * 2 + 60))
                .max_capacity(1_000_000)
                .build(),
            apps: moka::sync::Cache::builder()
                .time_to_live(std::time::Duration::from_secs(5))
                .max_capacity(10_000)
                .build(),
            _workers: workers,
            _purger: purger,
            retention,
        }))
    }
}

/// Idempotency keys are answered for 24 h; after that they may go.
const IDEMPOTENCY_KEEP_MS: u64 = 86_400_000;
/// Messages (and as many idempotency keys) one purge round may remove: one operation of
/// the writer, ~10 ms, that accepts queued behind it wait for.
const PURGE_BATCH: usize = 500;
/// The pause between two full purge rounds (a large backlog of old messages is worked
/// off without holding the writer).
const PURGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Remove finished messages past the retention and idempotency keys past their 24 h, a
/// batch at a time (accepts and attempts go between batches), every `retention / 4`
/// (at most a minute, at least 100 ms); a reload's new retention applies at once.
async fn purge_loop(
    store: Arc<store::Store>,
    mut retention: tokio::sync::watch::Receiver<Option<std::time::Duration>>,
) {
    loop {
        let current = *retention.borrow_and_update();
        let every = current.map_or(std::time::Duration::from_secs(60), |r| {
            (r / 4).clamp(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(60),
            )
        });
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = retention.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let now = now_ms();
        let before = current.map_or(0, |r| now.saturating_sub(r.as_millis() as u64));
        loop {
            match store
                .purge(before, now.saturating_sub(IDEMPOTENCY_KEEP_MS), PURGE_BATCH)
                .await
            {
                Ok(p) if p.messages == PURGE_BATCH || p.idempotency_keys == PURGE_BATCH => {
                    tokio::time::sleep(PURGE_PAUSE).await
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("notify: purging old messages failed: {e}");
                    break;
                }
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self._workers.abort();
        self._purger.abort();
    }
}

/// The workers' settings for a section.
fn worker_settings(
    config: &NotifyConfig,
    events: &events::Events,
) -> Result<worker::WorkerSettings, store::StoreError> {
    let timeout = std::time::Duration::from_millis(config.webhook_timeout_ms.max(100));
    Ok(worker::WorkerSettings {
        schedule: config.schedule(),
        allow_private_targets: config.allow_private_targets,
        webhook_timeout: timeout,
        concurrency: config.concurrency.max(1),
        events: events.clone(),
        sms: config.sms.clone(),
        push: config.push.clone(),
        email: match &config.email {
            Some(e) => Some(Arc::new(
                worker::Mailer::new(e, timeout).map_err(store::StoreError::Unavailable)?,
            )),
            None => None,
        },
    })
}

/// The services of a config, kept across reloads (a section still there keeps its store
/// and workers; its limits are re-read).
#[derive(Debug, Default)]
pub struct Services {
    running: parking_lot::Mutex<BTreeMap<String, Arc<Service>>>,
}

impl Services {
    /// None yet.
    pub fn new() -> Services {
        Services::default()
    }

    /// Start (or update) a service per section and register each as a `notify` route
    /// service.
    pub fn apply(
        &self,
        sections: &BTreeMap<String, NotifyConfig>,
        services: &mut hopline_edge::Services,
    ) -> Result<(), store::StoreError> {
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
            services.insert("notify", name, Arc::new(api::NotifyApi::new(svc.clone())));
            next.insert(name.clone(), svc);
        }
        *running = next;
        Ok(())
    }

    /// The service named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.running.lock().get(name).cloned()
    }
}
