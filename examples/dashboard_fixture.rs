//! A scripted ward for the dashboard's browser tests: six chairs with a hub, fake bed tasks that answer commands
//! the way a bed would, and a fixed script of alarms. No devices, no alarm engine, no broker.
//!
//! ```text
//! cargo run --example dashboard_fixture -- --listen 127.0.0.1:8089
//! ```
//! Users: `nina` / `vigil-nurse` (nurse), `vic` / `vigil-viewer` (viewer).
//!
//! Script (seconds after start): chair-1 desaturates to SpO2 84 at `--desat-after` (high alarm, latched until
//! acknowledged, recovers 90 s later), chair-2 reads NIBP 168/101 at 10 (medium), chair-4 loses its SpO2 sensor
//! at 15 (low technical), chair-5's monitor disconnects at 20 (medium technical, values go stale), chair-3 is
//! taking its baseline, chair-6 is empty.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use chrono::{DateTime, Utc};
use clap::Parser;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil::config::Config;
use vigil::dashboard::{self, ActionRecord, DashboardState, MemoryHistory};
use vigil::event::{
    AlarmEvent, AlarmKind, AlarmPhase, AlarmState, Baseline, BaselineSource, BedAlarms, Command, DeviceStatus, Event,
    LinkState, Priority, SessionEvent, SessionPhase, VitalValue, VitalsUpdate,
};
use vigil::hub::{BedCommand, BedInfo, CommandError, Hub};
use vigil::vitals::{Parameter, ValueStatus};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: String,
    /// Seconds until chair-1 desaturates.
    #[arg(long, default_value_t = 6)]
    desat_after: u64,
    /// Allow actions without sign-in (loopback only), like the embedded demo.
    #[arg(long)]
    demo_actions: bool,
    /// Require sign-in to see the ward at all.
    #[arg(long)]
    private: bool,
}

/// Fixture users get cheap argon2 parameters so a debug build starts at once; real hashes use the defaults.
fn hash(password: &str) -> String {
    let salt = SaltString::encode_b64(b"fixture-salt-123").expect("valid salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(1024, 1, 1, None).expect("valid params"))
        .hash_password(password.as_bytes(), &salt)
        .expect("hashing works")
        .to_string()
}

struct Bed {
    id: Arc<str>,
    hub: Arc<Hub>,
    history: Arc<MemoryHistory>,
    phase: SessionPhase,
    session_id: Option<String>,
    started: Option<DateTime<Utc>>,
    infusion_started: Option<DateTime<Utc>>,
    baseline: Option<Baseline>,
    alarms: BTreeMap<String, AlarmEvent>,
    bed_seq: u64,
    next_alarm: u64,
    spo2: Option<f64>,
    spo2_status: ValueStatus,
    pr: f64,
    nibp: (f64, f64, DateTime<Utc>),
    connected: bool,
}

impl Bed {
    fn session_event(&mut self, action: &str, by: Option<String>) {
        let ev = SessionEvent {
            time: Utc::now(),
            bed: self.id.clone(),
            session_id: self.session_id.clone().unwrap_or_default(),
            action: action.into(),
            phase: self.phase,
            started: self.started,
            infusion_started: self.infusion_started,
            patient: None,
            baseline: self.baseline,
            detail: None,
            by,
        };
        self.hub.publish(Event::Session(ev));
    }

    fn vitals(&self) {
        if !self.connected {
            return;
        }
        let now = Utc::now();
        let v = |parameter, value, status, time| VitalValue { parameter, value, status, time };
        let (sys, dia, at) = self.nibp;
        let values = vec![
            v(Parameter::Spo2, self.spo2, self.spo2_status, now),
            v(
                Parameter::Pr,
                (self.spo2_status == ValueStatus::Valid).then_some(self.pr.round()),
                self.spo2_status,
                now,
            ),
            v(Parameter::NibpSys, Some(sys), ValueStatus::Valid, at),
            v(Parameter::NibpDia, Some(dia), ValueStatus::Valid, at),
            v(Parameter::NibpMean, Some(((sys + 2.0 * dia) / 3.0).round()), ValueStatus::Valid, at),
        ];
        self.hub.publish(Event::Vitals(VitalsUpdate { bed: self.id.clone(), time: now, values }));
    }

    fn alarm_changed(&mut self, mut ev: AlarmEvent) {
        self.bed_seq += 1;
        ev.bed_seq = self.bed_seq;
        ev.time = Utc::now();
        if ev.phase == AlarmPhase::End {
            self.alarms.remove(&ev.alarm_id);
        } else {
            self.alarms.insert(ev.alarm_id.clone(), ev.clone());
        }
        self.hub.publish(Event::Alarm(ev));
        self.hub.publish(Event::Alarms(BedAlarms {
            bed: self.id.clone(),
            time: Utc::now(),
            bed_seq: self.bed_seq,
            alarms: self.alarms.values().cloned().collect(),
        }));
    }

    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        kind: AlarmKind,
        condition: &str,
        parameter: Option<Parameter>,
        priority: Priority,
        value: Option<f64>,
        limit: Option<f64>,
        message: &str,
    ) {
        self.next_alarm += 1;
        let ev = AlarmEvent {
            time: Utc::now(),
            bed: self.id.clone(),
            alarm_id: format!("{}-{}", self.id, self.next_alarm),
            seq: 1,
            bed_seq: 0,
            kind,
            condition: condition.into(),
            parameter,
            priority,
            phase: AlarmPhase::Start,
            state: AlarmState::Active,
            value,
            limit,
            evidence: Default::default(),
            message: message.into(),
            by: None,
            audio_paused_until: None,
        };
        self.alarm_changed(ev);
    }

    /// The condition is over: acknowledged alarms end, unacknowledged ones latch.
    fn condition_gone(&mut self, condition: &str) {
        let Some(mut ev) = self.alarms.values().find(|a| a.condition == condition).cloned() else { return };
        ev.seq += 1;
        ev.by = None;
        if ev.state == AlarmState::Acknowledged {
            ev.phase = AlarmPhase::End;
            ev.state = AlarmState::Cleared;
        } else {
            ev.phase = AlarmPhase::Update;
            ev.state = AlarmState::Latched;
        }
        self.alarm_changed(ev);
    }

    fn command(&mut self, command: &Command, actor: &str) -> Result<(), CommandError> {
        let refuse = |why: &str| Err(CommandError::Refused(why.into()));
        match command {
            Command::SetLimit { .. } => return refuse("the fixture has no limits to override"),
            Command::Acknowledge { alarm_id } => {
                let ids: Vec<String> = match alarm_id {
                    Some(id) if self.alarms.contains_key(id) => vec![id.clone()],
                    Some(id) => return refuse(&format!("no alarm '{id}' on this bed")),
                    None => self.alarms.keys().cloned().collect(),
                };
                for id in ids {
                    let mut ev = self.alarms[&id].clone();
                    ev.seq += 1;
                    ev.by = Some(actor.into());
                    ev.audio_paused_until = None;
                    if ev.state == AlarmState::Latched {
                        ev.phase = AlarmPhase::End;
                        ev.state = AlarmState::Cleared;
                    } else {
                        ev.phase = AlarmPhase::Update;
                        ev.state = AlarmState::Acknowledged;
                    }
                    self.alarm_changed(ev);
                }
            }
            Command::PauseAudio { seconds } => {
                let until = Utc::now() + chrono::Duration::seconds(i64::from((*seconds).min(120)));
                for mut ev in
                    self.alarms.values().filter(|a| a.state == AlarmState::Active).cloned().collect::<Vec<_>>()
                {
                    ev.seq += 1;
                    ev.phase = AlarmPhase::Update;
                    ev.state = AlarmState::AudioPaused;
                    ev.by = Some(actor.into());
                    ev.audio_paused_until = Some(until);
                    self.alarm_changed(ev);
                }
            }
            Command::ResumeAudio => self.resume_audio(Some(actor)),
            Command::SessionStart { patient, baseline_sys, baseline_dia } => {
                if matches!(self.phase, SessionPhase::PreInfusion | SessionPhase::Infusion | SessionPhase::Observation)
                {
                    return refuse("a session is already running");
                }
                self.phase = SessionPhase::PreInfusion;
                self.session_id = Some(format!("{}-{}", self.id, Utc::now().format("%Y%m%d%H%M%S")));
                self.started = Some(Utc::now());
                self.infusion_started = None;
                self.baseline = match (baseline_sys, baseline_dia) {
                    (Some(sys), Some(dia)) => Some(Baseline { sys: *sys, dia: *dia, source: BaselineSource::Entered }),
                    _ => None,
                };
                let _ = patient;
                self.session_event("session_start", Some(actor.into()));
            }
            Command::InfusionStart => {
                if self.phase != SessionPhase::PreInfusion {
                    return refuse("infusion can start only after session start");
                }
                self.phase = SessionPhase::Infusion;
                self.infusion_started = Some(Utc::now());
                self.session_event("infusion_start", Some(actor.into()));
            }
            Command::InfusionStop => {
                if self.phase != SessionPhase::Infusion {
                    return refuse("no infusion is running");
                }
                self.phase = SessionPhase::Observation;
                self.session_event("infusion_stop", Some(actor.into()));
            }
            Command::SessionEnd => {
                if matches!(self.phase, SessionPhase::Idle | SessionPhase::Ended) {
                    return refuse("no session is running");
                }
                self.phase = SessionPhase::Ended;
                self.session_event("session_end", Some(actor.into()));
            }
            Command::SetBaseline { sys, dia } => {
                if !(40.0..=250.0).contains(sys) || !(20.0..=150.0).contains(dia) || dia >= sys {
                    return refuse("baseline out of range");
                }
                self.baseline = Some(Baseline { sys: *sys, dia: *dia, source: BaselineSource::Entered });
                self.session_event("baseline_set", Some(actor.into()));
            }
        }
        Ok(())
    }

    fn resume_audio(&mut self, actor: Option<&str>) {
        let paused: Vec<_> = self.alarms.values().filter(|a| a.state == AlarmState::AudioPaused).cloned().collect();
        for mut ev in paused {
            if actor.is_none() && ev.audio_paused_until.is_some_and(|t| t > Utc::now()) {
                continue;
            }
            ev.seq += 1;
            ev.phase = AlarmPhase::Update;
            ev.state = AlarmState::Active;
            ev.by = actor.map(str::to_owned);
            ev.audio_paused_until = None;
            self.alarm_changed(ev);
        }
    }
}

fn device(bed: &Arc<str>, link: LinkState, error: Option<&str>) -> Event {
    Event::Device(DeviceStatus {
        bed: bed.clone(),
        source: format!("{bed}/0"),
        kind: "simulated".into(),
        device: "masimo".into(),
        link,
        frames_ok: 0,
        frames_bad: 0,
        values_rejected: 0,
        last_error: error.map(str::to_owned),
        last_frame: Some(Utc::now()),
        time: Utc::now(),
    })
}

/// Fills the history with the session so far, so the chair view has trends from the start.
fn backfill(history: &MemoryHistory, bed: &Bed, n: usize) {
    let Some(started) = bed.started else { return };
    let now = Utc::now();
    let mut t = started - chrono::Duration::minutes(5);
    let mut i = 0usize;
    while t < now - chrono::Duration::seconds(2) {
        let wobble = ((i as f64) / 40.0 + n as f64).sin();
        let mut values = vec![
            VitalValue {
                parameter: Parameter::Spo2,
                value: Some(97.0 + wobble.round()),
                status: ValueStatus::Valid,
                time: t,
            },
            VitalValue {
                parameter: Parameter::Pr,
                value: Some((bed.pr + 4.0 * wobble).round()),
                status: ValueStatus::Valid,
                time: t,
            },
        ];
        if i % 60 == 0 {
            let rise = if bed.infusion_started.is_some_and(|s| t > s) { 12.0 } else { 0.0 };
            let sys = 122.0 + rise + 3.0 * wobble + n as f64;
            let dia = 78.0 + rise / 2.0 + 2.0 * wobble;
            values.push(VitalValue {
                parameter: Parameter::NibpSys,
                value: Some(sys.round()),
                status: ValueStatus::Valid,
                time: t,
            });
            values.push(VitalValue {
                parameter: Parameter::NibpDia,
                value: Some(dia.round()),
                status: ValueStatus::Valid,
                time: t,
            });
            values.push(VitalValue {
                parameter: Parameter::NibpMean,
                value: Some(((sys + 2.0 * dia) / 3.0).round()),
                status: ValueStatus::Valid,
                time: t,
            });
        }
        history.record(&Event::Vitals(VitalsUpdate { bed: bed.id.clone(), time: t, values }));
        t += chrono::Duration::seconds(10);
        i += 10;
    }
}

async fn run_bed(
    mut bed: Bed,
    n: usize,
    mut inbox: mpsc::Receiver<BedCommand>,
    desat_after: u64,
    cancel: CancellationToken,
) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut desat_at: Option<u64> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(cmd) = inbox.recv() => {
                let BedCommand { request, reply } = cmd;
                let result = bed.command(&request.command, &request.actor);
                bed.history.record_action(ActionRecord {
                    time: Utc::now(),
                    actor: request.actor.clone(),
                    bed: bed.id.to_string(),
                    command: Some(request.command.clone()),
                    request: serde_json::to_string(&request.command).unwrap_or_default(),
                    ok: result.is_ok(),
                    reason: result.as_ref().err().map(ToString::to_string),
                });
                let _ = reply.send(result.map(|()| Vec::new()));
            }
            _ = tick.tick() => {
                let t = start.elapsed().as_secs();
                let phase = t as f64 / 7.0 + n as f64;
                bed.pr = 72.0 + 6.0 * phase.sin() + n as f64 * 2.0;
                if bed.spo2_status == ValueStatus::Valid && desat_at.is_none() {
                    bed.spo2 = Some(97.0 + (phase / 3.0).sin().round());
                }
                match (n, t) {
                    (0, t) if t == desat_after || (t > desat_after && (t - desat_after) % 240 == 0) => {
                        desat_at = Some(t);
                        bed.spo2 = Some(84.0);
                        bed.vitals();
                        bed.raise(AlarmKind::Threshold, "spo2_low", Some(Parameter::Spo2), Priority::High, Some(84.0), Some(88.0), "SpO2 84 < 88");
                        continue;
                    }
                    (0, t) if desat_at.is_some_and(|d| t == d + 90) => {
                        desat_at = None;
                        bed.spo2 = Some(95.0);
                        bed.condition_gone("spo2_low");
                    }
                    (1, 10) => {
                        bed.nibp = (168.0, 101.0, Utc::now());
                        bed.vitals();
                        bed.raise(AlarmKind::Threshold, "nibp_sys_high", Some(Parameter::NibpSys), Priority::Medium, Some(168.0), Some(160.0), "NIBP sys 168 > 160");
                        continue;
                    }
                    (3, 15) => {
                        bed.spo2 = None;
                        bed.spo2_status = ValueStatus::Unavailable;
                        bed.raise(AlarmKind::Technical, "sensor_off", Some(Parameter::Spo2), Priority::Low, None, None, "SpO2 sensor off");
                    }
                    (4, 20) => {
                        bed.vitals();
                        bed.connected = false;
                        bed.hub.publish(device(&bed.id, LinkState::Disconnected, Some("no data for 10 s")));
                        bed.raise(AlarmKind::Technical, "monitor_disconnected", None, Priority::Medium, None, None, "Monitor disconnected");
                    }
                    _ => {}
                }
                if t % 300 == 0 && n != 1 && bed.connected {
                    bed.nibp = (120.0 + n as f64 * 3.0 + (phase.sin() * 4.0).round(), 78.0 + n as f64, Utc::now());
                }
                bed.resume_audio(None);
                bed.vitals();
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args = Args::parse();
    let mut toml = format!(
        "[site]\nname = \"fixture-clinic\"\nward = \"ketamine-suite\"\n[mqtt]\nmode = \"disabled\"\n\
         [dashboard]\nlisten = \"{}\"\nread_only_without_sign_in = {}\ndemo_actions_without_sign_in = {}\n\
         [[users]]\nname = \"nina\"\nrole = \"nurse\"\npassword_hash = \"{}\"\n\
         [[users]]\nname = \"vic\"\nrole = \"viewer\"\npassword_hash = \"{}\"\n",
        args.listen,
        !args.private,
        args.demo_actions,
        hash("vigil-nurse"),
        hash("vigil-viewer"),
    );
    for i in 1..=6 {
        toml.push_str(&format!("[[beds]]\nid = \"chair-{i}\"\nlabel = \"Chair {i}\"\n"));
    }
    let config = Arc::new(Config::parse(&toml, "<fixture>", Path::new("."))?);
    let beds: Vec<BedInfo> = config
        .beds
        .iter()
        .map(|b| BedInfo { id: b.id.as_str().into(), label: b.label().into(), profile: b.profile.clone() })
        .collect();
    let hub = Hub::new(&config.site.name, &config.site.ward, beds.clone());
    let history = MemoryHistory::new();
    let cancel = CancellationToken::new();
    history.clone().follow(hub.clone(), cancel.clone());

    // Limits for the charts come from each bed's profile (the default ketamine-chair).
    let state = DashboardState::new(hub.clone(), config.clone(), history.clone())?;
    for (n, info) in beds.iter().enumerate() {
        let (tx, rx) = mpsc::channel(16);
        hub.register_bed(info.id.clone(), tx);
        let now = Utc::now();
        let (phase, started, infusion) = match n {
            5 => (SessionPhase::Idle, None, None),
            2 => (SessionPhase::PreInfusion, Some(now - chrono::Duration::minutes(4)), None),
            _ => {
                let started = now - chrono::Duration::minutes(20 + 7 * n as i64);
                (SessionPhase::Infusion, Some(started), Some(started + chrono::Duration::minutes(10)))
            }
        };
        let mut bed = Bed {
            id: info.id.clone(),
            hub: hub.clone(),
            history: history.clone(),
            phase,
            session_id: started.map(|s| format!("{}-{}", info.id, s.format("%Y%m%d%H%M"))),
            started,
            infusion_started: infusion,
            baseline: started.map(|_| Baseline {
                sys: 122.0 + n as f64,
                dia: 78.0,
                source: BaselineSource::MedianOfPreInfusion,
            }),
            alarms: BTreeMap::new(),
            bed_seq: 0,
            next_alarm: 0,
            spo2: Some(97.0),
            spo2_status: ValueStatus::Valid,
            pr: 72.0,
            nibp: (124.0 + n as f64, 79.0, now - chrono::Duration::minutes(2 + n as i64)),
            connected: true,
        };
        backfill(&history, &bed, n);
        if started.is_some() {
            bed.session_event("session_start", Some("nina".into()));
            if infusion.is_some() {
                bed.session_event("infusion_start", Some("nina".into()));
            }
        }
        hub.publish(device(&bed.id, LinkState::Connected, None));
        tokio::spawn(run_bed(bed, n, rx, args.desat_after, cancel.clone()));
    }

    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let stop = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    dashboard::serve(listener, state, cancel).await?;
    Ok(())
}
