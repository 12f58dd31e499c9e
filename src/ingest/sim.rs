//! The in-process simulated monitor for the embedded demo: the simulator library produces real device bytes, and
//! they go through the same decoders as bytes from a serial port. Like a bedside monitor's demo mode, the
//! scenario's script also drives the chair's session (start, infusion start and stop) and link state.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use vigil_sim::{Device, FeedOptions, MarkerKind, Speed};

use crate::config::{DeviceKind, SourceConfig};
use crate::event::{Command, CommandRequest, LinkState};
use crate::hub::Hub;
use crate::ingest::{pump, SourceEvent, SourceId, SourceSender};

/// The actor name recorded for session steps the simulator's script takes.
pub const ACTOR: &str = "simulator";

/// Runs a simulated source until `cancel` fires, repeating the scenario with the next seed when it ends.
pub async fn run(source: SourceId, cfg: SourceConfig, tx: SourceSender, hub: Arc<Hub>, cancel: CancellationToken) {
    let mut seed = cfg.seed();
    while !cancel.is_cancelled() && run_once(&source, &cfg, seed, &tx, &hub, &cancel).await {
        seed = seed.wrapping_add(1);
    }
}

async fn run_once(
    source: &SourceId,
    cfg: &SourceConfig,
    seed: u64,
    tx: &SourceSender,
    hub: &Arc<Hub>,
    cancel: &CancellationToken,
) -> bool {
    let device = match cfg.device {
        DeviceKind::Masimo => Device::Masimo,
        DeviceKind::Nonin => Device::Nonin,
        DeviceKind::Hl7 => Device::Hl7,
        DeviceKind::S5 => Device::S5,
        // Refused by the config check: an IntelliVue only speaks when associated (use vigil-sim's pty output).
        DeviceKind::Intellivue => {
            tracing::error!(source = %source, "the in-process simulator has no intellivue personality");
            return false;
        }
    };
    let opts = FeedOptions {
        scenario: cfg.scenario.clone().unwrap_or_else(|| "calm-session".into()),
        device,
        seed,
        speed: Speed::Factor(cfg.speed()),
        patient: cfg.patient.unwrap_or(0),
        device_id: None,
    };
    let feed = match vigil_sim::feed(opts) {
        Ok(feed) => feed,
        Err(e) => {
            tracing::error!(source = %source, error = %e, "simulated source cannot start");
            return false;
        }
    };
    let connected =
        SourceEvent::Link { source: source.clone(), state: LinkState::Connected, reason: None, at: Utc::now() };
    if tx.send(connected.into()).await.is_err() {
        return false;
    }
    let mut markers = feed.markers;
    let script = {
        let source = source.clone();
        let tx = tx.clone();
        let cancel = cancel.clone();
        async move {
            while let Some(marker) = tokio::select! { m = markers.recv() => m, _ = cancel.cancelled() => None } {
                let command = match marker.kind {
                    MarkerKind::SessionStart => {
                        Command::SessionStart { patient: None, baseline_sys: None, baseline_dia: None }
                    }
                    MarkerKind::InfusionStart => Command::InfusionStart,
                    MarkerKind::InfusionStop => Command::InfusionStop,
                    MarkerKind::SessionEnd => Command::SessionEnd,
                    MarkerKind::Disconnected | MarkerKind::Reconnected => {
                        let state = if marker.kind == MarkerKind::Disconnected {
                            LinkState::Disconnected
                        } else {
                            LinkState::Connected
                        };
                        let reason = (state == LinkState::Disconnected).then(|| "simulated monitor unplugged".into());
                        let event = SourceEvent::Link { source: source.clone(), state, reason, at: Utc::now() };
                        let _ = tx.send(event.into()).await;
                        continue;
                    }
                };
                let request = CommandRequest { bed: source.bed.clone(), command, actor: ACTOR.into() };
                if let Err(e) = hub.command(request).await {
                    tracing::debug!(source = %source, error = %e, "scripted session step not applied");
                }
            }
        }
    };
    let bytes = pump(feed.reader, cfg.device, source, tx, cancel);
    let (_, end) = tokio::join!(script, bytes);
    tracing::info!(source = %source, seed, end = ?end, "simulated scenario ended; starting it again");
    !tx.is_closed()
}
