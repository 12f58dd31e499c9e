//! Vigil: a vital-signs alarm daemon for ketamine infusion chairs. A secondary notification aid: the bedside
//! monitor remains the primary alarm.
//!
//! Data flow (see `docs/architecture.md`): device bytes → [`ingest`] → [`vitals::Reading`] → per-bed
//! [`alarm`] engine → [`event::Event`] → [`store`] (durable) → [`mqtt`] and [`dashboard`].

pub mod alarm;
pub mod auth;
pub mod bed;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod decode;
pub mod event;
pub mod health;
pub mod hub;
pub mod ingest;
pub mod listen;
pub mod metrics;
pub mod mqtt;
pub mod notify;
pub mod pcap;
pub mod replay;
pub mod selftest;
pub mod service;
pub mod session;
pub mod store;
pub mod tls;
pub mod vitals;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MqttMode, SourceKind};
use crate::hub::{BedInfo, Hub};
use crate::ingest::{SourceEvent, SourceId};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A bed's alarm profile could not be loaded.
    #[error("beds[{index}].profile: {source}")]
    Profile {
        /// Bed index in the config.
        index: usize,
        /// Why.
        source: alarm::ProfileError,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The embedded broker or the MQTT publisher failed.
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    /// The MLLP listener could not start.
    #[error(transparent)]
    Ingest(#[from] ingest::IngestError),
    /// A listener's TLS certificate or key cannot be used (`dashboard.tls`, `mllp.tls`).
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A notification target cannot be set up (`notify.targets`).
    #[error(transparent)]
    Notify(#[from] notify::NotifyError),
    /// The metrics listener could not listen.
    #[error("metrics.listen: cannot listen on {addr}: {reason} (set metrics.listen to a free address)")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The dashboard could not listen.
    #[error("dashboard.listen: cannot listen on {addr}: {reason} (set dashboard.listen to a free address)")]
    Dashboard {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// A started daemon: its addresses, and the handle to wait for it.
pub struct Running {
    /// Where the dashboard listens.
    pub dashboard: SocketAddr,
    /// Where the MQTT broker is (embedded or external), if MQTT is enabled.
    pub mqtt: Option<String>,
    /// Where the MLLP listener listens, if configured.
    pub mllp: Option<SocketAddr>,
    /// The hub, for in-process observers (tests, embedding).
    pub hub: Arc<Hub>,
    tasks: JoinSet<()>,
    beds: JoinSet<()>,
    store: store::Store,
    stop_sources: CancellationToken,
    stop_rest: CancellationToken,
    shutdown: CancellationToken,
    _broker: Option<mqtt::broker::Broker>,
}

/// Starts everything and returns once every listener is bound: a port in use fails here, with the setting to change.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, RunError> {
    let config = Arc::new(config);
    let mut profiles = Vec::with_capacity(config.beds.len());
    // Resolved once per name and shared: beds on the same profile need no copy each (a limit override makes the
    // bed its own).
    let mut resolved: HashMap<&str, Arc<alarm::Profile>> = HashMap::new();
    for (index, bed) in config.beds.iter().enumerate() {
        let profile = match resolved.get(bed.profile.as_str()) {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(
                    alarm::Profile::resolve(&bed.profile, &config.base_dir)
                        .map_err(|source| RunError::Profile { index, source })?,
                );
                resolved.insert(&bed.profile, p.clone());
                p
            }
        };
        profiles.push(profile);
    }
    let notifier = build_notifier(&config).await?;
    // Off the runtime's threads, keeping systemd waiting: opening may migrate a big file's schema (minutes).
    let path = config.store.path.clone();
    let mut store = tokio::task::spawn_blocking(move || service::extending_start_timeout(|| store::Store::open(&path)))
        .await
        .map_err(|e| store::StoreError::Failed(format!("opening the store: {e}")))??;
    if let Some(n) = &notifier {
        store = store.with_notify_router(n.router());
    }
    let broker = match config.mqtt.mode {
        MqttMode::Embedded => Some(mqtt::broker::start(&config)?),
        _ => None,
    };
    let dashboard_listener = tokio::net::TcpListener::bind(&config.dashboard.listen)
        .await
        .map_err(|e| RunError::Dashboard { addr: config.dashboard.listen.clone(), reason: e.to_string() })?;
    let dashboard_addr = dashboard_listener
        .local_addr()
        .map_err(|e| RunError::Dashboard { addr: config.dashboard.listen.clone(), reason: e.to_string() })?;
    let metrics_listener = match &config.metrics.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Metrics { addr: addr.clone(), reason: e.to_string() })?,
        ),
        None => None,
    };
    let mllp = match &config.mllp {
        Some(m) => Some(ingest::mllp_listener::MllpListener::bind(m)?),
        None => None,
    };
    let (dashboard_tls, mllp_tls) = load_tls(&config).await?;
    let mllp = match mllp_tls {
        Some(tls) => mllp.map(|l| l.with_tls(tls)),
        None => mllp,
    };
    let mllp_addr = mllp.as_ref().map(|l| l.local_addr());
    let mllp_refused = mllp.as_ref().map(|l| l.refused_peers());
    let mllp_failed_handshakes =
        mllp.as_ref().filter(|_| config.mllp.as_ref().is_some_and(|m| m.tls.is_some())).map(|l| l.failed_handshakes());

    let infos = config
        .beds
        .iter()
        .map(|b| BedInfo { id: b.id.as_str().into(), label: b.label().to_owned(), profile: b.profile.clone() })
        .collect();
    let hub = Hub::new(&config.site.name, &config.site.ward, infos);

    // Sources stop first; beds drain when their inputs close; the publisher and dashboard stop last.
    let stop_sources = CancellationToken::new();
    let stop_rest = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut beds = JoinSet::new();
    let health = health::Health::new(Some(store.health()));
    let mut routes = HashMap::new();
    let mut pins = HashMap::new();
    for (bed, profile) in config.beds.iter().zip(profiles.iter().cloned()) {
        let bed_id: vitals::BedId = bed.id.as_str().into();
        let engine = bed::restored_engine(&bed_id, profile.clone(), &store)?;
        let (source_tx, source_rx) = mpsc::channel::<Box<SourceEvent>>(1024);
        let (command_tx, command_rx) = mpsc::channel(64);
        hub.register_bed(bed_id.clone(), command_tx);
        let mut descriptions = HashMap::new();
        let mut silence = HashMap::new();
        for (i, src) in bed.sources.iter().enumerate() {
            let id = SourceId { bed: bed_id.clone(), index: i };
            descriptions.insert(id.to_string(), (src.kind.name().to_owned(), src.device.name().to_owned()));
            if src.kind != SourceKind::Simulated {
                silence.insert(id.to_string(), std::time::Duration::from_secs(src.silence_alarm_s()));
            }
            match src.kind {
                SourceKind::Serial | SourceKind::Tcp | SourceKind::Udp => {
                    let name = format!("source {id}");
                    let run = ingest::run_source(id, src.clone(), source_tx.clone(), stop_sources.clone());
                    // Mapped, not awaited in an `async move` block, which would hold the source's future twice.
                    let logged = run.map(|r| {
                        if let Err(e) = r {
                            tracing::error!(error = %e, "source stopped");
                        }
                    });
                    health.spawn(&mut tasks, name, stop_sources.clone(), logged);
                }
                SourceKind::Simulated => {
                    health.spawn(
                        &mut tasks,
                        format!("source {id}"),
                        stop_sources.clone(),
                        ingest::sim::run(id, src.clone(), source_tx.clone(), hub.clone(), stop_sources.clone()),
                    );
                }
                SourceKind::Mllp => {
                    let device_id = src.device_id.clone().unwrap_or_default().to_ascii_uppercase();
                    if let Some(ip) = src.peer.as_deref().and_then(|p| p.parse::<std::net::IpAddr>().ok()) {
                        pins.insert(device_id.clone(), ip);
                    }
                    routes.insert(device_id, (id, source_tx.clone()));
                }
            }
        }
        drop(source_tx);
        let task = bed::BedTask {
            bed: bed_id,
            engine,
            profile,
            store: store.clone(),
            hub: hub.clone(),
            sources: source_rx,
            commands: command_rx,
            descriptions,
            silence,
            session_seq: store.last_session_seq(&bed.id)?,
            unstored: Vec::new(),
        };
        beds.spawn(task.run(stop_rest.clone()));
    }
    if let Some(listener) = mllp {
        health.spawn(
            &mut tasks,
            "mllp-listener".into(),
            stop_sources.clone(),
            listener.with_pins(pins).run(routes, stop_sources.clone()),
        );
    }
    let notify = notifier.map(|n| n.spawn(&mut tasks, &health, hub.clone(), store.clone(), stop_rest.clone()));
    let retention = store::run_retention(store.clone(), config.store.retention_days, stop_rest.clone());
    health.spawn(&mut tasks, "store-retention".into(), stop_rest.clone(), retention);
    let (mqtt_addr, mqtt_link, mqtt_beat) = if config.mqtt.mode == MqttMode::Disabled {
        (None, None, None)
    } else {
        let mqtt = mqtt::spawn(config.clone(), hub.clone(), store.clone(), stop_rest.clone())?;
        let task = mqtt.task;
        health.spawn(&mut tasks, "mqtt-publisher".into(), stop_rest.clone(), async move {
            if let Err(e) = task.await {
                if let Ok(panic) = e.try_into_panic() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
        (Some(format!("{}:{}", config.mqtt.host, config.mqtt.port)), Some(mqtt.link), Some(mqtt.heartbeat))
    };
    let history: Arc<dyn dashboard::history::History> = Arc::new(store.clone());
    let mut dash_state = dashboard::DashboardState::new(hub.clone(), config.clone(), history)
        .map_err(|e| RunError::Dashboard { addr: config.dashboard.listen.clone(), reason: e.to_string() })?;
    if let Some(link) = mqtt_link.clone() {
        dash_state = dash_state.with_mqtt_link(link);
    }
    dash_state = dash_state.with_health(health.clone());
    if let Some(n) = notify.clone() {
        dash_state = dash_state.with_notify(n);
    }
    if let Some(tls) = dashboard_tls {
        dash_state = dash_state.with_tls(tls);
    }
    if let Some(failed) = mllp_failed_handshakes {
        dash_state = dash_state.with_mllp_failed_handshakes(failed);
    }
    if let Some(refused) = mllp_refused.clone() {
        dash_state = dash_state.with_mllp_refused(refused);
    }
    let selftest = selftest::SelfTest::new(
        hub.clone(),
        store.clone(),
        mqtt_link.clone(),
        dash_state.sse_clients(),
        &config.notify,
    );
    dash_state = dash_state.with_selftest(selftest.clone());
    if let Some(period) = config.selftest.period() {
        let bed = match &config.selftest.bed {
            Some(b) => Some(b.clone()),
            None => selftest.default_bed().ok(),
        };
        if let Some(bed) = bed {
            tasks.spawn(selftest::run_schedule(selftest.clone(), bed, period, stop_rest.clone()));
        }
    }
    let mqtt_probe = mqtt_link.zip(mqtt_beat);
    let probes = service::Probes {
        hub: hub.clone(),
        health: health.clone(),
        store: store.clone(),
        mqtt: mqtt_probe.clone(),
        stall: service::STALL,
    };
    let exporter = metrics::Exporter::new(metrics::Sources {
        hub: hub.clone(),
        health: health.clone(),
        store: store.clone(),
        mqtt: mqtt_probe,
        sse_clients: dash_state.sse_clients(),
        mllp_refused,
        selftest: Some(selftest.status()),
        notify: notify.clone(),
    });
    dash_state = dash_state.with_metrics(Arc::new(exporter)).with_probes(probes.clone());
    if let Some(listener) = metrics_listener {
        let (state, cancel) = (dash_state.clone(), stop_rest.clone());
        tasks.spawn(async move {
            if let Err(e) = dashboard::ops::serve(listener, state, cancel).await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
    }
    let dash_cancel = stop_rest.clone();
    tasks.spawn(async move {
        if let Err(e) = dashboard::serve(dashboard_listener, dash_state, dash_cancel).await {
            tracing::error!(error = %e, "dashboard stopped");
        }
    });
    let scheme = if config.dashboard.tls.is_some() { "https" } else { "http" };
    tracing::info!(
        dashboard = %format!("{scheme}://{dashboard_addr}"),
        mqtt = %mqtt_addr.as_deref().unwrap_or("disabled"),
        mllp = %mllp_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        beds = config.beds.len(),
        "Vigil is running: dashboard {scheme}://{dashboard_addr}, MQTT broker {}",
        mqtt_addr.as_deref().unwrap_or("disabled")
    );
    service::notify_ready(&format!("{} beds, dashboard http://{dashboard_addr}", config.beds.len()));
    // Fed only after READY=1 (systemd ignores a watchdog ping before readiness, and tools expect READY first).
    if let Some(interval) = service::watchdog_interval() {
        tracing::info!(?interval, "systemd watchdog enabled: fed while beds, publisher and store writer are alive");
        tasks.spawn(service::run_watchdog(probes, interval, service::feed_systemd, stop_rest.clone()));
    }
    Ok(Running {
        dashboard: dashboard_addr,
        mqtt: mqtt_addr,
        mllp: mllp_addr,
        hub,
        tasks,
        beds,
        store,
        stop_sources,
        stop_rest,
        shutdown,
        _broker: broker,
    })
}

/// Builds `[notify]`'s targets on a blocking thread (CA files, the system's roots); `None` without targets.
async fn build_notifier(config: &Arc<Config>) -> Result<Option<notify::delivery::Notifier>, RunError> {
    let config = config.clone();
    let built = tokio::task::spawn_blocking(move || {
        let labels = config.beds.iter().map(|b| (b.id.clone(), b.label().to_owned())).collect();
        let ward = format!("{}/{}", config.site.name, config.site.ward);
        notify::delivery::Notifier::build(&config.notify, &config.base_dir, labels, ward)
    })
    .await
    .map_err(|e| notify::NotifyError::Setup {
        key: "notify".into(),
        reason: format!("setting up the targets failed: {e}"),
    })?;
    Ok(built?)
}

type ServerTls = Option<Arc<tokio_rustls::rustls::ServerConfig>>;

/// Reads `dashboard.tls` and `mllp.tls` on a blocking thread (file I/O stays off the async workers).
async fn load_tls(config: &Arc<Config>) -> Result<(ServerTls, ServerTls), RunError> {
    let config = config.clone();
    let loaded = tokio::task::spawn_blocking(move || -> Result<(ServerTls, ServerTls), tls::TlsError> {
        let dashboard = config
            .dashboard
            .tls
            .as_ref()
            .map(|t| tls::load_server_config(&config, "dashboard.tls", t, &[b"http/1.1"]))
            .transpose()?;
        let mllp = config
            .mllp
            .as_ref()
            .and_then(|m| m.tls.as_ref())
            .map(|t| tls::load_server_config(&config, "mllp.tls", t, &[]))
            .transpose()?;
        Ok((dashboard, mllp))
    })
    .await
    .map_err(|e| tls::TlsError::Invalid { key: "tls".into(), reason: format!("reading the TLS files failed: {e}") })?;
    Ok(loaded?)
}

impl Running {
    /// Waits for the shutdown token, then stops in order: sources, beds (draining), publisher and dashboard.
    pub async fn wait(mut self) {
        self.shutdown.cancelled().await;
        service::notify_stopping();
        self.stop_sources.cancel();
        // Give the beds a moment to take what the sources had in flight before they stop.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        self.stop_rest.cancel();
        while self.beds.join_next().await.is_some() {}
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await {}
        self.tasks.abort_all();
        // What the writer still has queued (vitals history, delivery marks) is committed before exit.
        let store = self.store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || store.flush()).await.unwrap_or(Ok(())) {
            tracing::error!(error = %e, "the store could not commit its last writes");
        }
        tracing::info!("Vigil stopped");
    }
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
