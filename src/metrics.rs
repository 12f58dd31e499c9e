//! Prometheus metrics for `GET /metrics`, built at scrape time from the state the daemon already keeps (the hub's
//! snapshot and tallies, the supervised tasks, the store writer's figures and outbox, the MQTT link status, the
//! dashboard's stream count, `/proc/self`): nothing is counted twice. Every metric is documented in
//! `docs/operations.md`; names follow Prometheus conventions (`vigil_` prefix, `_total` for counters, base
//! units), and the process metrics use the standard `process_` names.
//!
//! Encoding with [`prometheus_client`]: the Prometheus text format (0.0.4) by default, OpenMetrics when the
//! scraper asks for it in `Accept`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::event::{LinkState as SourceLink, Priority};
use crate::health::{Health, Heartbeat};
use crate::hub::{Hub, ALARM_PHASES};
use crate::mqtt::{LinkState, LinkStatus};
use crate::store::Store;

/// `Content-Type` of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything the metrics are read from.
#[derive(Clone)]
pub struct Sources {
    /// Beds: snapshot (sources, alarms, latest vitals) and tallies (events announced, heartbeats).
    pub hub: Arc<Hub>,
    /// Supervised tasks and the store's health.
    pub health: Health,
    /// The store: writer figures and the outbox.
    pub store: Store,
    /// The MQTT link and the publisher's heartbeat; `None` when MQTT is disabled.
    pub mqtt: Option<(watch::Receiver<LinkStatus>, Heartbeat)>,
    /// Open dashboard event streams.
    pub sse_clients: Arc<AtomicUsize>,
    /// MLLP connections refused by `mllp.allow`; `None` without an MLLP listener.
    pub mllp_refused: Option<Arc<AtomicU64>>,
    /// The self-test's last result and counts.
    pub selftest: Option<watch::Receiver<crate::selftest::Status>>,
    /// Notification targets; `None` without `[[notify.targets]]`.
    pub notify: Option<crate::notify::delivery::Handle>,
}

/// The registry behind `/metrics`.
pub struct Exporter {
    registry: Registry,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter over `sources`.
    pub fn new(sources: Sources) -> Exporter {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Ward(sources)));
        registry.register_collector(Box::new(Process));
        Exporter { registry }
    }

    /// The metrics as text: OpenMetrics when `openmetrics`, else the Prometheus text format. Reads the store
    /// (the outbox): call it off the async runtime.
    pub fn encode(&self, openmetrics: bool) -> Result<String, fmt::Error> {
        let mut out = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        }
        Ok(out)
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family with its samples.
fn family<V: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result
where
    ConstCounter<V>: EncodeMetric,
    ConstGauge<V>: EncodeMetric,
{
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        let f = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(f)?,
            _ => ConstGauge::new(v).encode(f)?,
        }
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, samples)
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Counter, samples)
}

fn one<V>(v: V) -> [(Labels, V); 1] {
    [(Vec::new(), v)]
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Low => "low",
        Priority::Medium => "medium",
        Priority::High => "high",
    }
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The daemon's own state, read at scrape time.
#[derive(Debug)]
struct Ward(Sources);

impl Collector for Ward {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let now = Utc::now();
        let snapshot = s.hub.snapshot();
        let tallies = s.hub.tallies();
        gauge(
            &mut enc,
            "vigil_build_info",
            "Always 1; the version in a label.",
            [(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1.0)],
        )?;

        // Sources.
        let devices: Vec<_> = snapshot.beds.iter().flat_map(|b| b.devices.values()).collect();
        let source_labels = |d: &crate::event::DeviceStatus| -> Labels {
            vec![
                ("bed", d.bed.to_string()),
                ("source", d.source.clone()),
                ("kind", d.kind.clone()),
                ("device", d.device.clone()),
            ]
        };
        counter(
            &mut enc,
            "vigil_source_frames_decoded",
            "Frames decoded from the source since start.",
            devices.iter().map(|d| (source_labels(d), d.frames_ok)),
        )?;
        counter(
            &mut enc,
            "vigil_source_frames_rejected",
            "Frames from the source that could not be decoded (malformed, over-long) since start.",
            devices.iter().map(|d| (source_labels(d), d.frames_bad)),
        )?;
        counter(
            &mut enc,
            "vigil_source_values_rejected",
            "Values removed as physiologically impossible since start.",
            devices.iter().map(|d| (source_labels(d), d.values_rejected)),
        )?;
        gauge(
            &mut enc,
            "vigil_source_connected",
            "1 while the source's link is connected, else 0.",
            devices.iter().map(|d| (source_labels(d), flag(d.link == SourceLink::Connected))),
        )?;
        gauge(
            &mut enc,
            "vigil_source_last_frame_age_seconds",
            "Seconds since the source's last valid frame (absent before the first).",
            devices.iter().filter_map(|d| {
                d.last_frame.map(|t| (source_labels(d), (now - t).num_milliseconds().max(0) as f64 / 1000.0))
            }),
        )?;

        // Beds.
        let bed = |id: &str| -> Labels { vec![("bed", id.to_owned())] };
        counter(
            &mut enc,
            "vigil_bed_vitals_updates",
            "Vitals updates the bed announced (one per decoded frame with values) since start.",
            tallies.iter().map(|(id, t)| (bed(id), t.vitals_updates)),
        )?;
        gauge(
            &mut enc,
            "vigil_bed_last_reading_age_seconds",
            "Seconds since the bed's latest vitals update (absent before the first).",
            snapshot.beds.iter().filter_map(|b| {
                b.vitals.as_ref().map(|v| (bed(&b.info.id), (now - v.time).num_milliseconds().max(0) as f64 / 1000.0))
            }),
        )?;
        gauge(
            &mut enc,
            "vigil_bed_task_heartbeat_age_seconds",
            "Seconds since the bed task last beat (every second while it runs; the watchdog gives up at 10).",
            tallies.iter().filter_map(|(id, t)| t.last_beat.map(|at| (bed(id), at.elapsed().as_secs_f64()))),
        )?;
        let mut active: BTreeMap<(String, &'static str, String, String), u64> = BTreeMap::new();
        for b in &snapshot.beds {
            // A self-test's alarm is not a patient alarm: never counted.
            for a in b.alarms.iter().flat_map(|a| a.alarms.iter()).filter(|a| !a.test) {
                *active
                    .entry((b.info.id.to_string(), priority_name(a.priority), snake(&a.kind), a.condition.clone()))
                    .or_default() += 1;
            }
        }
        gauge(
            &mut enc,
            "vigil_alarms_active",
            "Alarms present now, by bed, priority, kind and condition (absent when none).",
            active.into_iter().map(|((b, p, k, c), n)| {
                (vec![("bed", b), ("priority", p.to_owned()), ("kind", k), ("condition", c)], n as f64)
            }),
        )?;
        counter(
            &mut enc,
            "vigil_alarm_events",
            "Alarm lifecycle events announced since start, by bed and phase.",
            tallies.iter().flat_map(|(id, t)| {
                ALARM_PHASES
                    .iter()
                    .zip(t.alarm_events)
                    .map(move |(p, n)| (vec![("bed", id.to_string()), ("phase", snake(p))], n))
            }),
        )?;

        // Tasks.
        let health = s.health.snapshot();
        gauge(
            &mut enc,
            "vigil_task_up",
            "1 while the supervised task runs (sources, listeners, publisher, retention), else 0.",
            health.tasks.iter().map(|(name, t)| (vec![("task", name.clone())], flag(t.running))),
        )?;

        // Store.
        let stats = s.store.writer_stats();
        gauge(
            &mut enc,
            "vigil_store_writable",
            "1 while store writes succeed, 0 while they fail (disk full, read-only, I/O error).",
            one(flag(health.store.as_ref().is_some_and(|h| h.ok))),
        )?;
        gauge(
            &mut enc,
            "vigil_store_queue_depth",
            "Store jobs waiting for the writer thread.",
            one(stats.queued.load(Ordering::Relaxed) as f64),
        )?;
        counter(
            &mut enc,
            "vigil_store_background_dropped",
            "Background writes (vitals history, delivery marks) dropped because too many waited.",
            one(health.store.as_ref().map_or(0, |h| h.background_dropped)),
        )?;
        {
            let m = enc.encode_descriptor(
                "vigil_store_commit_duration_seconds",
                "Duration of each group commit of the store (its jobs and the fsync).",
                None,
                MetricType::Histogram,
            )?;
            stats.commit_seconds.encode(m)?;
        }
        match s.store.outbox_backlog() {
            Ok((pending, oldest)) => {
                gauge(
                    &mut enc,
                    "vigil_outbox_pending",
                    "Alarm and session events stored but not yet acknowledged by the MQTT broker.",
                    one(pending as f64),
                )?;
                gauge(
                    &mut enc,
                    "vigil_outbox_oldest_age_seconds",
                    "Age of the oldest unacknowledged outbox event (0 when the outbox is empty).",
                    one(oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)),
                )?;
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the outbox"),
        }

        // Notification targets.
        if let Some(n) = &s.notify {
            let target = |name: &str| -> Labels { vec![("target", name.to_owned())] };
            let load = |f: fn(&crate::notify::TargetStats) -> u64| {
                n.stats.iter().map(move |(name, t)| (target(name), f(t))).collect::<Vec<_>>()
            };
            counter(
                &mut enc,
                "vigil_notify_attempts",
                "Delivery attempts to the notification target since start.",
                load(|t| t.attempts.load(Ordering::Relaxed)),
            )?;
            counter(
                &mut enc,
                "vigil_notify_delivered",
                "Notifications the target took since start.",
                load(|t| t.delivered.load(Ordering::Relaxed)),
            )?;
            counter(
                &mut enc,
                "vigil_notify_failures",
                "Delivery attempts that failed (unreachable, refused, timed out) since start; each is retried.",
                load(|t| t.failed.load(Ordering::Relaxed)),
            )?;
            counter(
                &mut enc,
                "vigil_notify_acknowledged",
                "Alarms acknowledged through the target (its acknowledge link or its receipt) since start.",
                load(|t| t.acknowledged.load(Ordering::Relaxed)),
            )?;
            let health = n.health(now);
            gauge(
                &mut enc,
                "vigil_notify_target_failing",
                "1 while the target is failing: 3 failed attempts in a row or failures for 30 s (for ACM, unanswered heartbeats count too), else 0.",
                health.iter().map(|h| (target(&h.target), flag(h.failing))),
            )?;
            let acm: Vec<_> =
                n.targets.iter().filter_map(|t| t.acm.as_ref().map(|l| (t.name.clone(), l.borrow().clone()))).collect();
            if !acm.is_empty() {
                gauge(
                    &mut enc,
                    "vigil_acm_link_up",
                    "1 while the ACM target's link to its Alert Manager is connected and answering, else 0.",
                    acm.iter().map(|(name, l)| (target(name), flag(l.connected))),
                )?;
                counter(
                    &mut enc,
                    "vigil_acm_heartbeats_missed",
                    "ACM heartbeats the Alert Manager did not answer in time since start.",
                    acm.iter().map(|(name, l)| (target(name), l.heartbeats_missed)).collect::<Vec<_>>(),
                )?;
                counter(
                    &mut enc,
                    "vigil_acm_malformed",
                    "Messages from the Alert Manager that could not be read (skipped) since start.",
                    acm.iter().map(|(name, l)| (target(name), l.malformed)).collect::<Vec<_>>(),
                )?;
            }
            match s.store.notify_backlog() {
                Ok(backlog) => {
                    let of = |name: &str| backlog.iter().find(|b| b.target == name);
                    gauge(
                        &mut enc,
                        "vigil_notify_pending",
                        "Notifications queued for the target and not yet delivered.",
                        n.stats.keys().map(|name| (target(name), of(name).map_or(0.0, |b| b.pending as f64))),
                    )?;
                    gauge(
                        &mut enc,
                        "vigil_notify_oldest_pending_age_seconds",
                        "Age of the target's oldest undelivered notification (0 when none waits).",
                        n.stats.keys().map(|name| {
                            let age = of(name)
                                .and_then(|b| b.oldest)
                                .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
                            (target(name), age)
                        }),
                    )?;
                }
                Err(e) => tracing::warn!(error = %e, "metrics: cannot read the notification queue"),
            }
        }

        // MQTT.
        if let Some((link, _)) = &s.mqtt {
            let l = link.borrow().clone();
            gauge(
                &mut enc,
                "vigil_mqtt_connected",
                "1 while connected to the broker, else 0.",
                one(flag(l.state == LinkState::Connected)),
            )?;
            gauge(
                &mut enc,
                "vigil_mqtt_link_state",
                "The broker link's state: 1 for the present state, 0 for the others.",
                [LinkState::Connecting, LinkState::Connected, LinkState::Refused, LinkState::Stopped]
                    .into_iter()
                    .map(|st| (vec![("state", snake(&st))], flag(l.state == st))),
            )?;
            let d = l.delivery;
            counter(
                &mut enc,
                "vigil_mqtt_connections",
                "Connections made to a broker since start (reconnects are this minus one).",
                one(d.connections),
            )?;
            counter(&mut enc, "vigil_mqtt_publishes", "Publishes handed to the broker since start.", one(d.publishes))?;
            counter(
                &mut enc,
                "vigil_mqtt_outbox_acknowledged",
                "Outbox events (alarms, sessions) the broker acknowledged since start.",
                one(d.acknowledged),
            )?;
            counter(
                &mut enc,
                "vigil_mqtt_vitals_shed",
                "Vitals messages (QoS 0) not sent: superseded, missed or waiting at a disconnect. Never alarms.",
                one(d.vitals_shed),
            )?;
            counter(
                &mut enc,
                "vigil_mqtt_replies_dropped",
                "Command replies dropped because too many waited for room.",
                one(d.replies_dropped),
            )?;
            counter(
                &mut enc,
                "vigil_mqtt_quarantined",
                "Outbox events set aside because the broker can never take them.",
                one(d.quarantined),
            )?;
            counter(
                &mut enc,
                "vigil_mqtt_hub_events_missed",
                "Hub events the publisher missed by lagging (alarms still go from the outbox).",
                one(d.hub_events_missed),
            )?;
            gauge(&mut enc, "vigil_mqtt_parked", "Publishes waiting for room right now.", one(d.parked as f64))?;
        }

        // Dashboard and MLLP.
        gauge(
            &mut enc,
            "vigil_dashboard_sse_clients",
            "Open dashboard event streams (browsers showing the ward).",
            one(s.sse_clients.load(Ordering::Relaxed) as f64),
        )?;
        if let Some(refused) = &s.mllp_refused {
            counter(
                &mut enc,
                "vigil_mllp_refused_connections",
                "MLLP connections refused because the peer is not in mllp.allow.",
                one(refused.load(Ordering::Relaxed)),
            )?;
        }

        // Self-test.
        if let Some(status) = &s.selftest {
            let st = status.borrow().clone();
            counter(
                &mut enc,
                "vigil_selftest_runs",
                "Self-tests run since start, by result (passed, failed).",
                [
                    (vec![("result", "passed".to_owned())], st.passed),
                    (vec![("result", "failed".to_owned())], st.failed),
                ],
            )?;
            // Every family is described from the start; the samples appear with the first run.
            let last = st.last.as_ref();
            gauge(
                &mut enc,
                "vigil_selftest_last_passed",
                "1 when the last self-test passed every hop, else 0 (absent before the first run).",
                last.map(|l| (Labels::new(), flag(l.passed))),
            )?;
            gauge(
                &mut enc,
                "vigil_selftest_last_run_timestamp_seconds",
                "When the last self-test started, seconds since the Unix epoch.",
                last.map(|l| (Labels::new(), l.started.timestamp_millis() as f64 / 1000.0)),
            )?;
            let hops = || {
                last.into_iter()
                    .flat_map(|l| l.hops.iter().map(move |h| (vec![("bed", l.bed.clone()), ("hop", h.hop.clone())], h)))
            };
            gauge(
                &mut enc,
                "vigil_selftest_hop_passed",
                "1 when the hop confirmed the last self-test's alarm, else 0.",
                hops().map(|(labels, h)| (labels, flag(h.ok))),
            )?;
            gauge(
                &mut enc,
                "vigil_selftest_hop_duration_seconds",
                "Seconds from raising the last self-test's alarm to the hop's confirmation (or giving up).",
                hops().map(|(labels, h)| (labels, h.ms as f64 / 1000.0)),
            )?;
        }
        Ok(())
    }
}

/// Process metrics from `/proc/self`, with the standard names of Prometheus' process collector. Absent where
/// `/proc` is not there.
#[derive(Debug)]
struct Process;

/// `/proc` reports CPU times in clock ticks of `USER_HZ`, which the Linux ABI fixes at 100.
const USER_HZ: f64 = 100.0;

impl Collector for Process {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Ok(()) };
        // Fields after the command name (which is in parentheses and may contain spaces).
        let rest: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            let m = enc.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, seconds.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new((utime + stime) / USER_HZ).encode(m)?;
        }
        if let Some(threads) = field(20) {
            gauge(&mut enc, "process_threads", "OS threads of the process.", one(threads))?;
        }
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok())));
        if let (Some(start), Some(btime)) = (field(22), btime) {
            gauge(
                &mut enc,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, seconds.",
                one(btime + start / USER_HZ),
            )?;
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kb = |key: &str| {
                status.lines().find_map(|l| {
                    l.strip_prefix(key).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                })
            };
            if let Some(rss) = kb("VmRSS:") {
                gauge(&mut enc, "process_resident_memory_bytes", "Resident memory size, bytes.", one(rss * 1024.0))?;
            }
            if let Some(vsz) = kb("VmSize:") {
                gauge(&mut enc, "process_virtual_memory_bytes", "Virtual memory size, bytes.", one(vsz * 1024.0))?;
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(&mut enc, "process_open_fds", "Open file descriptors.", one(fds.count() as f64))?;
        }
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse::<f64>().ok()))
        });
        if let Some(max) = max_fds {
            gauge(&mut enc, "process_max_fds", "Limit of open file descriptors.", one(max))?;
        }
        Ok(())
    }
}
