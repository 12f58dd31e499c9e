//! The simulation engine: one bed's patient model, sensor behaviour, NIBP cuff and device encoder, stepped once per
//! second of virtual time. Pure and synchronous; [`crate::feed`] and the CLI add real time on top.

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::SimRng;

use crate::devices::{hl7, intellivue, masimo, nonin, s5};
use crate::physiology::{normal, Patient, Vitals};
use crate::scenario::{Event, Scenario, Session};
use crate::{Device, FeedOptions, MarkerKind, SimError};

/// What the sensor is doing this second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorState {
    /// Measuring normally.
    Ok,
    /// The probe is off the finger; `searching` in the first seconds while the device still looks for a pulse.
    ProbeOff {
        /// Still searching for a pulse.
        searching: bool,
    },
    /// The sensor cable is not plugged into the monitor.
    NoSensor,
    /// Probe back on, the device searches for a pulse before it shows values again.
    PulseSearch,
    /// Motion artefact: values shown are false and flagged as doubtful.
    Artefact,
}

/// An NIBP cycle's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NibpReading {
    /// Cycle start (the measurement time the device reports).
    pub started: DateTime<Utc>,
    /// Cycle start in scenario seconds.
    pub started_offset_s: u32,
    /// `None` when the cuff failed.
    pub values: Option<NibpValues>,
}

/// A successful NIBP measurement, as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NibpValues {
    /// Systolic mmHg.
    pub systolic: u16,
    /// Diastolic mmHg.
    pub diastolic: u16,
    /// Mean arterial pressure mmHg.
    pub mean: u16,
    /// Pulse rate measured by the cuff /min.
    pub pulse: u16,
}

/// What the device displays (and therefore encodes) this second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shown {
    /// SpO2 %.
    pub spo2: Option<u8>,
    /// Pulse rate /min.
    pub pulse: Option<u16>,
    /// Perfusion index %, two decimals.
    pub pi: Option<f64>,
    /// Respiration /min (HL7 monitors only).
    pub resp: Option<u8>,
}

/// One second of a bed: the model's truth, what the device showed, and what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the scenario start.
    pub offset_s: u32,
    /// The device clock.
    pub device_time: DateTime<Utc>,
    /// True values.
    pub truth: Vitals,
    /// Displayed values (after device averaging, probe-off and artefacts).
    pub shown: Shown,
    /// Sensor state.
    pub sensor: SensorState,
    /// An NIBP cycle completed this second.
    pub nibp: Option<NibpReading>,
    /// The cable is plugged in (bytes flow).
    pub connected: bool,
    /// The monitor is in demo mode.
    pub demo: bool,
    /// Bytes of line noise sent before this second's frame.
    pub garbage: usize,
    /// Scripted moments that pass this second.
    pub markers: Vec<MarkerKind>,
}

/// One second of output: the sample and the bytes the device put on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// The model's state.
    pub sample: Sample,
    /// Wire bytes (empty while disconnected).
    pub bytes: Vec<u8>,
    /// Complete HL7 messages inside `bytes` (each expects an MLLP ACK); 0 for serial devices.
    pub messages: u32,
    /// The last successful NIBP measurement so far (a monitor shows it until the next; IntelliVue polls report
    /// it every second).
    pub last_nibp: Option<NibpReading>,
}

#[derive(Debug, Clone)]
struct Cycle {
    start: u32,
    end: u32,
    forced: Option<(f64, f64)>,
    fails: bool,
}

/// Averaging time constants: a Masimo default averaging of about 8 s behaves like an exponential filter of ~3 s.
const SPO2_TAU_S: f64 = 3.0;
const PULSE_TAU_S: f64 = 2.0;
/// Seconds of pulse search after the probe goes back on.
const SEARCH_AFTER_PROBE_S: u32 = 6;
/// Seconds of "searching" at the start of a probe-off, before it is plain "sensor off".
const SEARCH_AT_PROBE_OFF_S: u32 = 3;
/// NIBP measurement scatter (sd, mmHg): cuff readings differ from the true pressure by a few mmHg.
const NIBP_SCATTER_SYS: f64 = 4.0;
const NIBP_SCATTER_DIA: f64 = 3.0;

/// A seeded random stream for one purpose of one bed, so changing the device does not change the physiology.
/// ChaCha's numbered streams keep the beds' and purposes' seeds apart; each stream then seeds a [`SimRng`].
fn stream(seed: u64, patient: usize, purpose: u64) -> SimRng {
    let mut chacha = ChaCha8Rng::seed_from_u64(seed);
    chacha.set_stream((patient as u64) << 4 | purpose);
    SimRng::from_rng(&mut chacha)
}

/// One bed's simulation; iterate it for one [`Tick`] per second, `0..=duration_s`.
#[derive(Debug, Clone)]
pub struct Simulation {
    session: Session,
    events: Vec<Event>,
    patient: Patient,
    device: Device,
    start: DateTime<Utc>,
    t: u32,
    phys_rng: SimRng,
    sensor_rng: SimRng,
    nibp_rng: SimRng,
    noise_rng: SimRng,
    cycles: Vec<Cycle>,
    spo2_filter: Option<f64>,
    pulse_filter: Option<f64>,
    search_left: u32,
    was_probe_off: bool,
    masimo_serial: u64,
    device_id: String,
    control_id: u64,
    bed: usize,
    s5: s5::S5State,
    last_nibp: Option<NibpReading>,
}

impl Simulation {
    /// Builds bed `opts.patient` of `opts.scenario`, with the device clock starting at `start`.
    pub fn new(opts: &FeedOptions, start: DateTime<Utc>) -> Result<Simulation, SimError> {
        let scenario = crate::scenario::load(&opts.scenario)?;
        Self::from_scenario(&scenario, opts, start)
    }

    /// Like [`Simulation::new`] for a scenario you parsed yourself (e.g. a file outside the bundle).
    pub fn from_scenario(
        scenario: &Scenario,
        opts: &FeedOptions,
        start: DateTime<Utc>,
    ) -> Result<Simulation, SimError> {
        let device_id = match &opts.device_id {
            Some(id) => {
                if id.is_empty()
                    || id.len() > 64
                    || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(SimError::BadDeviceId(id.clone()));
                }
                id.clone()
            }
            None => crate::derived_device_id(opts.seed, opts.patient),
        };
        let spec = &scenario.patients[opts.patient % scenario.patients.len()];
        let mut phys_rng = stream(opts.seed, opts.patient, 0);
        let patient = Patient::new(spec, scenario.session.infusion_start_s, &mut phys_rng);
        let mut nibp_rng = stream(opts.seed, opts.patient, 2);
        let cycles = schedule(&scenario.session, &spec.events, &mut nibp_rng);
        let masimo_serial = stream(opts.seed, opts.patient, 4).random_range(10_000..10_000_000);
        Ok(Simulation {
            session: scenario.session.clone(),
            events: spec.events.clone(),
            patient,
            device: opts.device,
            start,
            t: 0,
            phys_rng,
            sensor_rng: stream(opts.seed, opts.patient, 1),
            nibp_rng,
            noise_rng: stream(opts.seed, opts.patient, 3),
            cycles,
            spo2_filter: None,
            pulse_filter: None,
            search_left: 0,
            was_probe_off: false,
            masimo_serial,
            device_id,
            control_id: 0,
            last_nibp: None,
            bed: opts.patient + 1,
            s5: s5::S5State::default(),
        })
    }

    /// The HL7 device id (MSH-3 EUI-64) this bed uses.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The device personality.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The patient model (baseline and pressor response as drawn).
    pub fn patient(&self) -> &Patient {
        &self.patient
    }

    /// Scenario length in seconds.
    pub fn duration_s(&self) -> u32 {
        self.session.duration_s
    }

    fn markers(&self, t: u32) -> Vec<MarkerKind> {
        let s = &self.session;
        let mut m = Vec::new();
        for (at, kind) in [
            (s.session_start_s, MarkerKind::SessionStart),
            (s.infusion_start_s, MarkerKind::InfusionStart),
            (s.infusion_stop_s, MarkerKind::InfusionStop),
            (s.session_end_s, MarkerKind::SessionEnd),
        ] {
            if at == t {
                m.push(kind);
            }
        }
        for e in &self.events {
            if let Event::Disconnect { at_s, duration_s } = e {
                if *at_s == t {
                    m.push(MarkerKind::Disconnected);
                }
                if at_s + duration_s == t {
                    m.push(MarkerKind::Reconnected);
                }
            }
        }
        m
    }

    fn within(&self, t: u32, pick: impl Fn(&Event) -> Option<(u32, Option<u32>)>) -> Option<u32> {
        self.events
            .iter()
            .filter_map(pick)
            .find_map(|(at, dur)| (t >= at && dur.is_none_or(|d| t < at + d)).then(|| t - at))
    }

    fn step(&mut self) -> Tick {
        let t = self.t;
        let truth = self.patient.step(t, &mut self.phys_rng);
        let probe_off = self.within(t, |e| match e {
            Event::ProbeOff { at_s, duration_s } => Some((*at_s, Some(*duration_s))),
            _ => None,
        });
        let unplugged = self
            .within(t, |e| match e {
                Event::SensorUnplugged { at_s, duration_s } => Some((*at_s, Some(*duration_s))),
                _ => None,
            })
            .is_some();
        let artefact = self
            .within(t, |e| match e {
                Event::Artefacts { at_s, duration_s } => Some((*at_s, Some(*duration_s))),
                _ => None,
            })
            .is_some();
        let connected = self
            .within(t, |e| match e {
                Event::Disconnect { at_s, duration_s } => Some((*at_s, Some(*duration_s))),
                _ => None,
            })
            .is_none();
        let demo = self
            .within(t, |e| match e {
                Event::DemoMode { at_s, duration_s } => Some((*at_s, *duration_s)),
                _ => None,
            })
            .is_some();
        let garbage: usize = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Garbage { at_s, bytes } if *at_s == t => Some(*bytes),
                _ => None,
            })
            .sum();

        // What the oximeter shows. The sensor stream is drawn the same way for every device.
        let jitter: f64 = self.sensor_rng.random();
        let false_spo2: f64 = self.sensor_rng.random_range(3.0..22.0);
        let false_pulse: f64 = self.sensor_rng.random_range(0.55..1.7);
        let (sensor, spo2, pulse) = if unplugged {
            self.was_probe_off = true;
            (SensorState::NoSensor, None, None)
        } else if let Some(since) = probe_off {
            self.was_probe_off = true;
            (SensorState::ProbeOff { searching: since < SEARCH_AT_PROBE_OFF_S }, None, None)
        } else {
            if std::mem::take(&mut self.was_probe_off) {
                self.search_left = SEARCH_AFTER_PROBE_S;
                self.spo2_filter = None;
                self.pulse_filter = None;
            }
            if self.search_left > 0 {
                self.search_left -= 1;
                (SensorState::PulseSearch, None, None)
            } else {
                let follow = |f: &mut Option<f64>, v: f64, tau: f64| {
                    let k = 1.0 - (-1.0 / tau).exp();
                    let next = f.map_or(v, |old| old + (v - old) * k);
                    *f = Some(next);
                    next
                };
                let s = follow(&mut self.spo2_filter, truth.spo2, SPO2_TAU_S);
                let p = follow(&mut self.pulse_filter, truth.pulse, PULSE_TAU_S);
                if artefact {
                    // Motion makes the device show false values: a spurious dip and an erratic pulse.
                    let s = if jitter < 0.7 { s - false_spo2 } else { s };
                    (SensorState::Artefact, Some(s), Some(p * false_pulse))
                } else {
                    (SensorState::Ok, Some(s), Some(p))
                }
            }
        };
        let shown = Shown {
            spo2: spo2.map(|v| v.round().clamp(0.0, 100.0) as u8),
            pulse: pulse.map(|v| v.round().clamp(0.0, 300.0) as u16),
            pi: spo2.map(|_| (truth.pi * 100.0).round() / 100.0),
            resp: Some(truth.resp.round().clamp(0.0, 99.0) as u8),
        };

        let nibp = self.nibp_at(t, &truth);
        let markers = self.markers(t);
        let device_time = self.start + Duration::seconds(i64::from(t));
        let sample = Sample { offset_s: t, device_time, truth, shown, sensor, nibp, connected, demo, garbage, markers };
        let noise: Vec<u8> = (0..garbage).map(|_| self.noise_rng.random()).collect();
        if let Some(n) = sample.nibp.filter(|n| n.values.is_some()) {
            self.last_nibp = Some(n);
        }
        let (bytes, messages) = if connected { self.encode(&sample, noise) } else { (Vec::new(), 0) };
        Tick { sample, bytes, messages, last_nibp: self.last_nibp }
    }

    fn nibp_at(&mut self, t: u32, truth: &Vitals) -> Option<NibpReading> {
        let cycle = self.cycles.iter().find(|c| c.end == t)?.clone();
        let scatter_s = normal(&mut self.nibp_rng, 0.0, NIBP_SCATTER_SYS);
        let scatter_d = normal(&mut self.nibp_rng, 0.0, NIBP_SCATTER_DIA);
        let values = (!cycle.fails).then(|| {
            let (s, d) = cycle.forced.unwrap_or((truth.systolic + scatter_s, truth.diastolic + scatter_d));
            let (s, d) = (s.round(), d.round().min(s - 10.0));
            NibpValues {
                systolic: s as u16,
                diastolic: d as u16,
                mean: (d + (s - d) / 3.0).round() as u16,
                pulse: truth.pulse.round() as u16,
            }
        });
        Some(NibpReading {
            started: self.start + Duration::seconds(i64::from(cycle.start)),
            started_offset_s: cycle.start,
            values,
        })
    }

    fn encode(&mut self, s: &Sample, mut bytes: Vec<u8>) -> (Vec<u8>, u32) {
        match self.device {
            Device::Masimo => {
                bytes.extend(masimo::encode(&masimo::MasimoLine::from_sample(s, self.masimo_serial)));
                (bytes, 0)
            }
            Device::Nonin => {
                bytes.extend(nonin::encode(&nonin::NoninFrame::from_sample(s)));
                (bytes, 0)
            }
            Device::Intellivue => {
                self.control_id += 1;
                let n = self.control_id as u16;
                bytes.extend(intellivue::second_of_output(s, self.last_nibp.as_ref(), n));
                (bytes, 0)
            }
            Device::Hl7 => {
                // MLLP noise: keep the framing bytes out so the noise sits between frames, as on a real line.
                for b in &mut bytes {
                    if *b == hl7::MLLP_START || *b == hl7::MLLP_END {
                        *b = b'?';
                    }
                }
                self.control_id += 1;
                let msg = hl7::OruMessage::from_sample(s, &self.device_id, self.control_id, self.bed);
                bytes.extend(hl7::encode_framed(&msg));
                (bytes, 1)
            }
            Device::S5 => {
                // Line noise never contains a flag, so it sits between frames as on a real line.
                for b in &mut bytes {
                    if *b == 0x7E {
                        *b = 0x3F;
                    }
                }
                bytes.extend(self.s5.encode(s));
                (bytes, 0)
            }
        }
    }
}

impl Iterator for Simulation {
    type Item = Tick;

    fn next(&mut self) -> Option<Tick> {
        if self.t > self.session.duration_s {
            return None;
        }
        let tick = self.step();
        self.t += 1;
        Some(tick)
    }
}

/// The NIBP schedule: scripted extra cycles, then every `nibp_infusion_interval_s` during the infusion and every
/// `nibp_observation_interval_s` after it (CLINICAL.md, "The setting": 5–10 min during, 15 min after).
fn schedule(s: &Session, events: &[Event], rng: &mut SimRng) -> Vec<Cycle> {
    let mut starts: Vec<(u32, Option<(f64, f64)>)> = s.nibp_extra_s.iter().map(|t| (*t, None)).collect();
    let mut t = s.infusion_start_s + s.nibp_infusion_interval_s;
    while t < s.infusion_stop_s {
        starts.push((t, None));
        t += s.nibp_infusion_interval_s;
    }
    let mut t = s.infusion_stop_s;
    while t < s.session_end_s {
        starts.push((t, None));
        t += s.nibp_observation_interval_s;
    }
    for e in events {
        if let Event::Nibp { at_s, values } = e {
            starts.push((*at_s, *values));
        }
    }
    // Scripted values win over an automatic cycle at the same moment.
    starts.sort_by_key(|(t, forced)| (*t, forced.is_none()));
    let mut cycles: Vec<Cycle> = Vec::new();
    for (start, forced) in starts {
        if cycles.last().is_some_and(|c| start < c.end) || start >= s.duration_s {
            continue;
        }
        let jitter: i64 = rng.random_range(-3..=3);
        let len = (i64::from(s.nibp_cycle_s) + jitter).max(5) as u32;
        let random_failure = rng.random_bool(s.cuff_failure_probability);
        let fails = forced.is_none() && random_failure;
        cycles.push(Cycle { start, end: start + len, forced, fails });
    }
    for e in events {
        if let Event::CuffFailure { at_s } = e {
            if let Some(c) = cycles.iter_mut().find(|c| c.end >= *at_s) {
                c.fails = true;
            }
        }
    }
    cycles
}
