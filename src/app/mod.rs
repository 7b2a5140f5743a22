//! The application layer, between the domain's decisions and the ways in (routes, jobs,
//! CLI): the callback pipeline that runs a decision under the deadline and commits it,
//! the follow-up work decisions imply, orchestrations over the marketplace client and the
//! store, and the operational service. Here too: shared state, the router with its
//! middleware, and `serve`, which takes a bound listener and a shutdown future so tests
//! run the real server on port 0.

pub mod callback;
pub mod evidence;
pub mod license_activation;
pub mod ops;
pub mod server;

use crate::app::callback::Services;

use crate::clock;
use crate::config::{ApiTokens, Keys, Settings};
use crate::domain::events::{DELIVER_KIND, FETCH_KIND, UPLOAD_KIND};
use crate::domain::license_request::Licensing;
use crate::domain::provision::Provisioner;
use crate::domain::usage::WindowSize;
use crate::jobs::event_delivery::{EventDelivery, Schedule};
use crate::jobs::license_upload::LicenseUploads;
use crate::jobs::usage_push::{self, UsagePush};
use crate::jobs::{self, Worker, order_fetch::OrderFetch};
use crate::marketplace;
use crate::metrics::Metrics;
use crate::protocol::crypto::KeySize;
use crate::protocol::signature::Accept;
use crate::protocol::webhook::WebhookSecret;
use crate::routes;
use crate::store::health::{self, Health};
use crate::store::refused::{self, RefusedWriter};
use crate::store::{self, PoolOptions, Store, StoreError};
use axum::Router;
use axum::http::HeaderName;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Everything a request handler needs; cloned into each request.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub keys: Arc<Keys>,
    /// What a signature may match besides variant A over the raw body (D1, D1a).
    pub accept: Accept,
    pub max_body_bytes: usize,
    /// SaaS 1.0 field-encryption key size (`encryptType`).
    pub saas_v1_key_size: KeySize,
    /// D3: the SaaS 1.0 `timeStamp` window; 0 disables it.
    pub saas_v1_window_secs: u64,
    /// D6: the key size SaaS 2.0 `queryInstance` encrypts credentials with, if any.
    pub saas_v2_key_size: Option<KeySize>,
    /// The open-API client the background jobs call KooGallery with.
    pub marketplace: marketplace::Client,
    pub job_policy: jobs::Policy,
    /// How long callback records are kept, if not for ever.
    pub audit_retention: Option<Duration>,
    /// What the public listener allows each connection.
    pub connections: server::Limits,
    /// Writes the records of refused requests; taken by [`serve`].
    refused_writer: Arc<std::sync::Mutex<Option<RefusedWriter>>>,
    /// How long events are kept, if not for ever.
    pub event_retention: Option<Duration>,
    /// How long finished jobs are kept, if not for ever.
    pub job_retention: Option<Duration>,
    /// How long buyer personal data is kept after a release, if not for ever.
    pub buyer_data_retention: Option<Duration>,
    /// Where events are delivered, if anywhere.
    pub webhook: Option<Webhook>,
    /// The management API's bearer tokens.
    pub api_tokens: Arc<ApiTokens>,
    /// This server's metrics (also in `services`, for the callback pipeline).
    pub metrics: Metrics,
    /// The window pay-per-use usage is summed and pushed in.
    pub usage_window: WindowSize,
    /// The sessions of the admin pages.
    pub admin: Arc<routes::admin::session::Sessions>,
    /// Mark the admin session cookie `Secure` whatever the request says of its scheme.
    pub admin_secure_cookie: bool,
}

/// The merchant's webhook endpoint (merchant-api.md §2.2).
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub secrets: Arc<Vec<WebhookSecret>>,
    pub schedule: Schedule,
    pub timeout: Duration,
}

impl AppState {
    /// State over an opened store, with the given provisioner.
    #[expect(
        clippy::expect_used,
        reason = "Settings::load checked the key sizes and the event schedule"
    )]
    pub fn new(
        settings: &Settings,
        store: Arc<dyn Store>,
        provisioner: Arc<dyn Provisioner>,
    ) -> Self {
        let (refused, refused_writer) = refused::channel(store.clone(), refused::CAPACITY);
        let metrics = Metrics::new();
        Self {
            refused_writer: Arc::new(std::sync::Mutex::new(Some(refused_writer))),
            services: Services {
                refused,
                store,
                provisioner,
                deadline: settings.callback_deadline(),
                clock: clock::system_clock(),
                wake_jobs: Arc::new(tokio::sync::Notify::new()),
                health: Health::new(true),
                deliver_events: !settings.events.url.is_empty(),
                provisioned: Arc::new(tokio::sync::Notify::new()),
                provisioning_wait: Duration::from_millis(settings.provisioning_wait_ms),
                licensing: Arc::new(Licensing {
                    mode: settings.license.mode,
                    key: settings.license_key.clone(),
                    require_fingerprint: settings.license.require_fingerprint,
                    max_bytes: settings.license.max_bytes,
                }),
                licensed: Arc::new(tokio::sync::Notify::new()),
                metrics: metrics.clone(),
            },
            keys: Arc::new(settings.keys.clone()),
            accept: Accept {
                variant_b: settings.signature.accept_variant_b,
                canonical: settings.signature.accept_canonical,
            },
            max_body_bytes: settings.http.max_body_bytes,
            saas_v1_key_size: settings
                .saas_v1_key_size()
                .expect("checked when the settings were loaded"),
            saas_v1_window_secs: settings.saas_v1.timestamp_window_secs,
            saas_v2_key_size: settings
                .saas_v2_key_size()
                .expect("checked when the settings were loaded"),
            marketplace: marketplace::Client::from_settings(settings).with_metrics(metrics.clone()),
            job_policy: settings.job_policy(),
            audit_retention: settings.audit_retention(),
            connections: settings.connection_limits(),
            event_retention: settings.event_retention(),
            job_retention: settings.job_retention(),
            buyer_data_retention: settings.buyer_data_retention(),
            webhook: (!settings.events.url.is_empty()).then(|| Webhook {
                url: settings.events.url.clone(),
                secrets: Arc::new(settings.event_secrets.clone()),
                schedule: settings
                    .event_schedule()
                    .expect("checked when the settings were loaded"),
                timeout: Duration::from_millis(settings.events.timeout_ms),
            }),
            api_tokens: Arc::new(settings.api_tokens.clone()),
            metrics,
            usage_window: settings.usage.window,
            admin: Arc::new(routes::admin::session::Sessions::new(Duration::from_secs(
                u64::from(settings.admin_pages.session_minutes) * 60,
            ))),
            admin_secure_cookie: settings.admin_pages.secure_cookie,
        }
    }

    /// The usage push (merchant-api.md §6), for the worker and `koogate usage push`.
    pub fn usage_push(&self) -> UsagePush {
        let services = &self.services;
        UsagePush {
            client: self.marketplace.clone(),
            store: services.store.clone(),
            clock: services.clock.clone(),
            merchant_key: self.keys.saas.primary().cloned(),
            deliver_events: services.deliver_events,
            policy: self.job_policy.clone(),
        }
    }

    /// The job worker of this replica, with a handler for every job kind.
    pub fn worker(&self) -> Worker {
        let services = &self.services;
        let order_fetch = OrderFetch {
            client: self.marketplace.clone(),
            store: services.store.clone(),
            clock: services.clock.clone(),
            deliver_events: services.deliver_events,
            asks_app: services.provisioner.asks_app(),
        };
        let worker = Worker::new(
            services.store.clone(),
            self.job_policy.clone(),
            services.clock.clone(),
            services.wake_jobs.clone(),
        )
        .handle(FETCH_KIND, Arc::new(order_fetch))
        .handle(usage_push::PUSH_KIND, Arc::new(self.usage_push()))
        .handle(
            UPLOAD_KIND,
            Arc::new(LicenseUploads {
                client: self.marketplace.clone(),
                store: services.store.clone(),
                clock: services.clock.clone(),
                policy: self.job_policy.clone(),
                deliver_events: services.deliver_events,
                licensed: services.licensed.clone(),
            }),
        );
        match &self.webhook {
            Some(webhook) => worker.handle(
                DELIVER_KIND,
                Arc::new(EventDelivery {
                    store: services.store.clone(),
                    http: EventDelivery::client(webhook.timeout),
                    url: webhook.url.clone(),
                    secrets: webhook.secrets.clone(),
                    schedule: webhook.schedule.clone(),
                    clock: services.clock.clone(),
                    provisioned: services.provisioned.clone(),
                    licensing: services.licensing.clone(),
                    metrics: self.metrics.clone(),
                }),
            ),
            None => worker,
        }
    }
}

/// Opens and migrates the configured store.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StoreError> {
    let store = connect_store(settings).await?;
    store.migrate().await?;
    Ok(store)
}

async fn connect_store(settings: &Settings) -> Result<Arc<dyn Store>, StoreError> {
    let options = PoolOptions {
        max_connections: settings.database.max_connections,
        acquire_timeout: settings.acquire_timeout(),
    };
    let (sealer, file) = settings.sealer()?;
    match file {
        Some((path, true)) => tracing::warn!(
            path = %path.display(),
            "created the data key that encrypts credentials and buyer data in the database \
             (mode 0600): back it up with the database, which cannot be read without it"
        ),
        Some((path, false)) => {
            tracing::debug!(path = %path.display(), "data key beside the database")
        }
        None => {}
    }
    store::connect(settings.database_url.expose(), &options, sealer).await
}

/// Longest wait between two attempts to migrate a database that cannot be reached.
const MIGRATE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Opens the configured store for `serve`. A database that cannot be reached yet (say,
/// PostgreSQL still starting) does not stop the start: the migrations are retried in the
/// background with a backoff, and until they are applied the returned health says the
/// database is down (callbacks `000005`, `/readyz` 503). Any other failure is returned.
pub async fn open_store_for_serving(
    settings: &Settings,
) -> Result<(Arc<dyn Store>, Arc<Health>), StoreError> {
    let store = connect_store(settings).await?;
    match store.migrate().await {
        Ok(()) => return Ok((store, Health::new(true))),
        Err(error) if !health::unreachable(&error) => return Err(error),
        Err(error) => tracing::warn!(%error, "database unreachable: serving, migrations retried"),
    }
    let health = Health::new(false);
    let (retrying, ready) = (store.clone(), health.clone());
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(500);
        loop {
            tokio::time::sleep(wait).await;
            match retrying.migrate().await {
                Ok(()) => {
                    tracing::info!("database reachable: migrations applied, ready");
                    ready.set_migrated();
                    return;
                }
                Err(error) => {
                    wait = (wait * 2).min(MIGRATE_BACKOFF_MAX);
                    tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "still waiting for the database to apply migrations");
                }
            }
        }
    });
    Ok((store, health))
}

/// The public router with its middleware: request ids outermost (a client's kept only
/// when it is a short printable token), then one span per request.
pub fn router(state: AppState) -> Router {
    traced(routes::router(state))
}

/// The internal router (merchant-api.md §1): the management API, the metrics and the
/// admin pages.
pub fn admin_router(state: AppState) -> Router {
    traced(
        routes::api::router(state.clone())
            .merge(routes::metrics::router(state.clone()))
            .merge(routes::admin::router(state))
            .layer(axum::middleware::map_request(
                routes::api::refuse_control_characters,
            )),
    )
}

fn traced(router: Router) -> Router {
    let x_request_id = HeaderName::from_static(routes::REQUEST_ID);
    router
        .layer(TraceLayer::new_for_http().make_span_with(crate::telemetry::request_span))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        // Outermost: an unfit client id is dropped, so the layer above generates one.
        .layer(axum::middleware::map_request(routes::drop_unfit_request_id))
}

/// The bound listeners: the public one KooGallery calls, and the internal one.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

/// Serves until `shutdown` resolves, then finishes the requests in flight and stops the
/// background work. Both listeners, the job worker and the maintenance run in this one
/// future, so dropping it (a crash) stops them all at once.
pub async fn serve(
    listeners: Listeners,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let purger = maintain(
        state.services.store.clone(),
        Retention {
            callbacks: state.audit_retention,
            events: state.event_retention,
            jobs: state.job_retention,
            buyer_data: state.buyer_data_retention,
        },
        stop_rx.clone(),
    );
    let probe = {
        let (health, store, stop) = (
            state.services.health.clone(),
            state.services.store.clone(),
            stop_rx.clone(),
        );
        async move { health.probe(store, stop).await }
    };
    let writer = state
        .refused_writer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let refused = {
        let stop = stop_rx.clone();
        async move {
            if let Some(writer) = writer {
                writer.run(stop).await;
            }
        }
    };
    let worker = state.worker().run(stop_rx.clone());
    let usage = usage_push::schedule(
        state.services.store.clone(),
        state.services.clock.clone(),
        state.services.wake_jobs.clone(),
        stop_rx.clone(),
    );
    let mut admin_stop = stop_rx;
    let admin = axum::serve(listeners.admin, admin_router(state.clone())).with_graceful_shutdown(
        async move {
            let _ = admin_stop.changed().await;
        },
    );
    let server = async move {
        let limits = state.connections.clone();
        let key = state.keys.saas.primary().cloned();
        let result = server::run(listeners.public, router(state), limits, key, shutdown).await;
        // A stop said, not just a sender gone: a replica torn down mid-way (its task
        // aborted) drops the sender unsaid, and its attempts then record nothing, as a
        // killed process would not.
        let _ = stop_tx.send(());
        drop(stop_tx);
        result
    };
    let (result, admin, (), (), (), (), ()) =
        tokio::join!(server, admin, purger, worker, probe, refused, usage);
    result.and(admin)
}

/// Callback records deleted per statement, so that a purge never holds the (SQLite)
/// writer long enough to delay a callback.
const PURGE_BATCH: u32 = 1_000;

/// How long records are kept, if not for ever.
#[derive(Debug, Clone, Copy)]
struct Retention {
    callbacks: Option<Duration>,
    events: Option<Duration>,
    jobs: Option<Duration>,
    /// After an instance's release.
    buyer_data: Option<Duration>,
}

/// Background maintenance, once a minute: forgets expired nonces, so the shared nonce
/// table stays small, makes due the jobs still waiting behind a lane that has cleared
/// (see [`crate::store::Queue::release_waiting`]), deletes callback records, finished jobs and events older than
/// their retention, if any, and clears the buyer personal data of instances released
/// longer ago than its retention.
async fn maintain(
    store: Arc<dyn Store>,
    retention: Retention,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        match store.purge_nonces().await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "expired nonces forgotten"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not purge expired nonces"),
        }
        match store.release_waiting(now_ms).await {
            Ok(n) if n > 0 => {
                tracing::info!(
                    released = n,
                    "jobs left waiting behind a finished lane made due"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not release waiting jobs"),
        }
        if let Some(keep) = retention.callbacks {
            let purged = purge(now_ms, keep, |before| {
                store.purge_callbacks(before, PURGE_BATCH)
            })
            .await;
            if purged > 0 {
                tracing::info!(purged, "callback records past the retention deleted");
            }
        }
        if let Some(keep) = retention.jobs {
            let purged = purge(now_ms, keep, |before| store.purge_jobs(before, PURGE_BATCH)).await;
            if purged > 0 {
                tracing::info!(purged, "finished jobs past the retention deleted");
            }
        }
        if let Some(keep) = retention.events {
            let purged = purge(now_ms, keep, |before| {
                store.purge_events(before, PURGE_BATCH)
            })
            .await;
            if purged > 0 {
                tracing::info!(purged, "events past the retention deleted");
            }
        }
        if let Some(keep) = retention.buyer_data {
            let purged = purge(now_ms, keep, |before| {
                store.purge_buyer_data(before, PURGE_BATCH)
            })
            .await;
            if purged > 0 {
                tracing::info!(
                    instances = purged,
                    "buyer personal data of instances released past the retention cleared"
                );
            }
        }
    }
}

/// Deletes what is older than `keep`, a batch at a time; returns how many went.
async fn purge<F, Fut>(now_ms: i64, keep: Duration, batch: F) -> u64
where
    F: Fn(i64) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let before_ms = now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    let mut purged = 0;
    loop {
        match batch(before_ms).await {
            Ok(n) => {
                purged += n;
                if n < u64::from(PURGE_BATCH) {
                    return purged;
                }
                tokio::task::yield_now().await;
            }
            Err(error) => {
                tracing::warn!(%error, "could not delete old records");
                return purged;
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
