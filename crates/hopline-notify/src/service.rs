//! One running notification service: its store, its workers, the purge of old messages,
//! and what its API keeps between requests (counters, seen nonces, apps, rate limits).

use std::sync::Arc;

use crate::clock::now_ms;
use crate::config::NotifyConfig;
use crate::events::{EventTasks, Events};
use crate::metrics::Metrics;
use crate::model::SKEW_S;
use crate::store::Store;
use crate::store::records::{App, StoreError};
use crate::worker::{LiveSettings, Mailer, WorkerSettings, spawn};

/// One running service: its store, its workers and its API.
#[derive(Debug)]
pub struct Service {
    /// The section's name.
    pub name: String,
    /// The store.
    pub store: Arc<Store>,
    /// The config it runs with (the database and engine are fixed at start).
    pub config: parking_lot::RwLock<NotifyConfig>,
    /// Woken when a message is accepted.
    pub wake: Arc<tokio::sync::Notify>,
    /// Status changes as they happen.
    pub events: Events,
    /// Counters.
    pub metrics: Metrics,
    pub(crate) nonces: moka::sync::Cache<(String, String), ()>,
    /// Per-app and per-recipient limits (GCRA).
    pub(crate) limits: [Option<hopline_edge::limits::limiter::Limiter>; 2],
    /// What the workers run with now (replaced on reload).
    pub(crate) live: LiveSettings,
    pub(crate) apps: moka::sync::Cache<String, Option<App>>,
    _workers: tokio::task::JoinHandle<()>,
    _purger: tokio::task::JoinHandle<()>,
    /// How long finished messages are kept (the purge loop and the Redis scripts follow
    /// a reload's value).
    pub(crate) retention: tokio::sync::watch::Sender<Option<std::time::Duration>>,
    _event_tasks: EventTasks,
}

impl Service {
    /// Open the store and start the workers.
    pub fn start(name: &str, config: &NotifyConfig) -> Result<Arc<Service>, StoreError> {
        let store = if config.engine.starts_with("redis://") {
            Arc::new(Store::redis(
                &config.engine,
                name,
                config.claim_idle_ms(),
                config.retention(),
            )?)
        } else {
            if let Some(dir) = config.database.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            Arc::new(Store::sqlite(
                &config.database,
                config.max_database_size.map(|s| s.0),
            )?)
        };
        let wake = Arc::new(tokio::sync::Notify::new());
        let (events, event_tasks) = store.events();
        let live: LiveSettings = Arc::new(parking_lot::RwLock::new(Arc::new(worker_settings(
            config, &events,
        )?)));
        let workers = spawn(store.clone(), live.clone(), wake.clone());
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
            .map_err(StoreError::Unavailable)?;
        let recipient_limit = limiter(
            &format!("{name}-recipient"),
            &config.recipient_rate,
            config.recipient_burst,
        )
        .transpose()
        .map_err(StoreError::Unavailable)?;
        Ok(Arc::new(Service {
            limits: [app_limit, recipient_limit],
            live,
            name: name.to_string(),
            store,
            config: parking_lot::RwLock::new(config.clone()),
            wake,
            events,
            _event_tasks: event_tasks,
            metrics: Metrics::default(),
            nonces: moka::sync::Cache::builder()
                .time_to_live(std::time::Duration::from_secs(SKEW_S * 2 + 60))
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
    store: Arc<Store>,
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

impl Service {
    /// Accept one message for `app` as the API does: store it (once per idempotency key),
    /// count it, wake a worker and announce it as queued. For callers inside the process
    /// (`hopline up`'s demo order) as much as for the API, so the counters tell the truth.
    pub async fn submit(
        &self,
        app: &str,
        msg: crate::model::NewMessage,
        idempotency: Option<(String, String)>,
        now: u64,
    ) -> Result<crate::store::Accepted, StoreError> {
        use std::sync::atomic::Ordering;
        let accepted = self.store.accept(app, msg, idempotency, now).await;
        match &accepted {
            Ok(crate::store::Accepted::New(id)) => {
                self.metrics.accepted.fetch_add(1, Ordering::Relaxed);
                self.wake.notify_one();
                self.events.send(crate::events::StatusChange {
                    app: app.to_string(),
                    id: id.clone(),
                    status: "queued",
                    attempt: 0,
                    at_ms: now,
                });
            }
            Ok(crate::store::Accepted::Again(_)) => {
                self.metrics.repeats.fetch_add(1, Ordering::Relaxed);
            }
            Err(StoreError::Unavailable(_)) => {
                self.metrics.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        accepted
    }

    /// Whether its workers still run (false once shut down).
    pub fn is_running(&self) -> bool {
        !self._workers.is_finished()
    }

    /// Stop the workers and the purge loop: nothing more is delivered from this service
    /// (what is queued stays in its store for the next start).
    pub fn shutdown(&self) {
        self._workers.abort();
        self._purger.abort();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The workers' settings for a section.
pub(crate) fn worker_settings(
    config: &NotifyConfig,
    events: &Events,
) -> Result<WorkerSettings, StoreError> {
    let timeout = std::time::Duration::from_millis(config.webhook_timeout_ms.max(100));
    Ok(WorkerSettings {
        schedule: config.schedule(),
        allow_private_targets: config.allow_private_targets,
        webhook_timeout: timeout,
        concurrency: config.concurrency.max(1),
        events: events.clone(),
        sms: config.sms.clone(),
        push: config.push.clone(),
        email: match &config.email {
            Some(e) => Some(Arc::new(
                Mailer::new(e, timeout).map_err(StoreError::Unavailable)?,
            )),
            None => None,
        },
    })
}
