//! Scenario files: a scripted session (markers, NIBP schedule) and per-patient events, in TOML.
//!
//! The files live in `simulator/scenarios/` and are embedded with `include_str!`, so the binary and the daemon's
//! demo mode carry them without a file system. All times are seconds from the start of the scenario.

use serde::Deserialize;

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// No bundled scenario has that name.
    #[error("unknown scenario '{name}' (known: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The bundled names, comma separated.
        known: String,
    },
    /// The TOML does not match the schema.
    #[error("scenario '{name}': {source}")]
    Parse {
        /// Scenario name.
        name: String,
        /// The parser's message (with line and column).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The TOML parses but its content is inconsistent.
    #[error("scenario '{name}': {message}")]
    Invalid {
        /// Scenario name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// The bundled scenario files, `(name, TOML text)`.
pub const BUNDLED: &[(&str, &str)] = &[
    ("calm-session", include_str!("../scenarios/calm-session.toml")),
    ("hypertensive-surge", include_str!("../scenarios/hypertensive-surge.toml")),
    ("desaturation", include_str!("../scenarios/desaturation.toml")),
    ("probe-off-and-artefacts", include_str!("../scenarios/probe-off-and-artefacts.toml")),
    ("monitor-disconnect", include_str!("../scenarios/monitor-disconnect.toml")),
    ("ward-of-six", include_str!("../scenarios/ward-of-six.toml")),
    ("stress", include_str!("../scenarios/stress.toml")),
];

/// A parsed scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line for `--list-scenarios`.
    pub description: String,
    /// How many beds the scenario runs by default; patients are reused cyclically when there are more beds than
    /// patients (each bed still gets its own random stream). Defaults to the number of patients.
    #[serde(default)]
    pub beds: Option<usize>,
    /// Session timing and NIBP schedule, shared by all beds.
    pub session: Session,
    /// One entry per patient (bed). At least one.
    #[serde(rename = "patients")]
    pub patients: Vec<PatientSpec>,
}

/// Session timing (seconds from the scenario start) and the NIBP cuff schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Length of the scenario; the byte stream ends here.
    pub duration_s: u32,
    /// When the nurse starts the session (marker `SessionStart`).
    #[serde(default)]
    pub session_start_s: u32,
    /// Infusion start (marker `InfusionStart`); the pressor response is timed from here.
    pub infusion_start_s: u32,
    /// Infusion stop (marker `InfusionStop`).
    pub infusion_stop_s: u32,
    /// Session end (marker `SessionEnd`), at most `duration_s`.
    pub session_end_s: u32,
    /// NIBP cycle interval during the infusion: 5–10 min in CLINICAL.md ("The setting").
    #[serde(default = "default_nibp_infusion_interval_s")]
    pub nibp_infusion_interval_s: u32,
    /// NIBP cycle interval after the infusion: 15 min in CLINICAL.md ("The setting").
    #[serde(default = "default_nibp_observation_interval_s")]
    pub nibp_observation_interval_s: u32,
    /// Additional cycle start times (pre-infusion baseline readings, or a compressed schedule for demos).
    #[serde(default)]
    pub nibp_extra_s: Vec<u32>,
    /// How long a cuff cycle takes from inflation to result (about 30 s).
    #[serde(default = "default_nibp_cycle_s")]
    pub nibp_cycle_s: u32,
    /// Probability that any automatic cycle fails (cuff failure), 0–1.
    #[serde(default = "default_cuff_failure_probability")]
    pub cuff_failure_probability: f64,
}

fn default_nibp_infusion_interval_s() -> u32 {
    300
}
fn default_nibp_observation_interval_s() -> u32 {
    900
}
fn default_nibp_cycle_s() -> u32 {
    30
}
fn default_cuff_failure_probability() -> f64 {
    0.02
}

/// One patient: optional fixed baseline and pressor response (otherwise drawn from the seed) and scripted events.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PatientSpec {
    /// A label for the README and logs.
    #[serde(default)]
    pub label: Option<String>,
    /// Baseline vitals; any field left out is drawn from the seed.
    #[serde(default)]
    pub baseline: BaselineSpec,
    /// The ketamine pressor response; any field left out is drawn from the seed.
    #[serde(default)]
    pub pressor: PressorSpec,
    /// Scripted events.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// Baseline vitals (all optional).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    /// Systolic mmHg.
    pub systolic: Option<f64>,
    /// Diastolic mmHg.
    pub diastolic: Option<f64>,
    /// Heart rate /min.
    pub hr: Option<f64>,
    /// SpO2 %.
    pub spo2: Option<f64>,
    /// Respiration rate /min.
    pub resp: Option<f64>,
    /// Perfusion index %.
    pub pi: Option<f64>,
}

/// The ketamine pressor response (all optional).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PressorSpec {
    /// Peak systolic rise, mmHg.
    pub systolic: Option<f64>,
    /// Peak diastolic rise, mmHg.
    pub diastolic: Option<f64>,
    /// Time from infusion start to the peak; about 40 min in CLINICAL.md (Yale 2024, esketamine label).
    pub peak_after_s: Option<u32>,
    /// Decay time constant after the peak; the esketamine label reports BP raised for about 4 h.
    pub decay_s: Option<u32>,
}

/// The shape of a transient event: ramp in over `onset_s`, hold, ramp out over `recovery_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Envelope {
    /// Start of the ramp in.
    pub at_s: u32,
    /// Ramp-in length (short for a sudden event).
    pub onset_s: u32,
    /// Time at full effect.
    pub hold_s: u32,
    /// Ramp-out length.
    pub recovery_s: u32,
}

impl Envelope {
    /// Effect strength 0–1 at time `t` (smoothstep ramps, so values change like physiology, not in steps).
    pub fn level(&self, t: f64) -> f64 {
        let a = f64::from(self.at_s);
        let on = f64::from(self.onset_s.max(1));
        let hold_end = a + on + f64::from(self.hold_s);
        let off = f64::from(self.recovery_s.max(1));
        let smooth = |x: f64| {
            let x = x.clamp(0.0, 1.0);
            x * x * (3.0 - 2.0 * x)
        };
        if t < a {
            0.0
        } else if t < a + on {
            smooth((t - a) / on)
        } else if t < hold_end {
            1.0
        } else {
            1.0 - smooth((t - hold_end) / off)
        }
    }

    /// When the effect is fully over.
    pub fn end_s(&self) -> u32 {
        self.at_s + self.onset_s.max(1) + self.hold_s + self.recovery_s.max(1)
    }
}

/// A scripted event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawEvent")]
pub enum Event {
    /// SpO2 falls to `nadir` (gradual with a long onset, sudden with a short one); pulse rises a little.
    Desaturation {
        /// Timing.
        envelope: Envelope,
        /// Lowest true SpO2, %.
        nadir: f64,
    },
    /// Respiration slows to `resp`; SpO2 follows about 30 s later down to `nadir`.
    RespiratoryDepression {
        /// Timing.
        envelope: Envelope,
        /// Lowest respiration rate, /min.
        resp: f64,
        /// Lowest true SpO2, %.
        nadir: f64,
    },
    /// Heart rate moves to `hr` (bradycardia or tachycardia).
    HeartRate {
        /// Timing.
        envelope: Envelope,
        /// Target heart rate, /min.
        hr: f64,
    },
    /// Blood pressure rises by `systolic`/`diastolic` on top of the pressor response.
    HypertensiveSurge {
        /// Timing.
        envelope: Envelope,
        /// Extra systolic rise, mmHg.
        systolic: f64,
        /// Extra diastolic rise, mmHg.
        diastolic: f64,
    },
    /// The oximeter probe comes off the finger for `duration_s`.
    ProbeOff {
        /// Start.
        at_s: u32,
        /// Length.
        duration_s: u32,
    },
    /// The sensor cable is pulled out of the monitor for `duration_s` (Masimo "no sensor", Nonin "sensor
    /// disconnected"), unlike a probe that slips off the finger.
    SensorUnplugged {
        /// Start.
        at_s: u32,
        /// Length.
        duration_s: u32,
    },
    /// Motion artefacts: the oximeter displays false values, flagged as doubtful.
    Artefacts {
        /// Start.
        at_s: u32,
        /// Length.
        duration_s: u32,
    },
    /// The NIBP cycle running at `at_s`, or the next one, fails (no reading).
    CuffFailure {
        /// When.
        at_s: u32,
    },
    /// An extra NIBP cycle starting at `at_s`; with values, its result is scripted exactly.
    Nibp {
        /// Cycle start.
        at_s: u32,
        /// Scripted (systolic, diastolic), mmHg.
        values: Option<(f64, f64)>,
    },
    /// The monitor's cable is unplugged: no bytes for `duration_s`.
    Disconnect {
        /// Start.
        at_s: u32,
        /// Length.
        duration_s: u32,
    },
    /// The monitor is switched into demo mode (HL7 OBX-8 `DEMO`) for `duration_s` (absent: to the end).
    DemoMode {
        /// Start.
        at_s: u32,
        /// Length.
        duration_s: Option<u32>,
    },
    /// Line noise: `bytes` random bytes appear on the wire before the frame at `at_s`.
    Garbage {
        /// When.
        at_s: u32,
        /// How many bytes.
        bytes: usize,
    },
}

/// The file form of an event: one flat table with `kind`, checked into [`Event`] so errors name the field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    kind: String,
    at_s: u32,
    onset_s: Option<u32>,
    hold_s: Option<u32>,
    recovery_s: Option<u32>,
    duration_s: Option<u32>,
    nadir: Option<f64>,
    resp: Option<f64>,
    hr: Option<f64>,
    systolic: Option<f64>,
    diastolic: Option<f64>,
    bytes: Option<usize>,
}

const EVENT_KINDS: &str = "desaturation, respiratory_depression, bradycardia, tachycardia, hypertensive_surge, \
                           probe_off, sensor_unplugged, artefacts, cuff_failure, nibp, disconnect, demo_mode, garbage";

impl TryFrom<RawEvent> for Event {
    type Error = String;

    fn try_from(r: RawEvent) -> Result<Self, String> {
        let kind = r.kind.as_str();
        let need = |v: Option<f64>, field: &str, lo: f64, hi: f64| -> Result<f64, String> {
            match v {
                None => Err(format!("event '{kind}' at {} s needs `{field}`", r.at_s)),
                Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
                Some(x) => Err(format!("event '{kind}' at {} s: {field} = {x} is outside {lo}–{hi}", r.at_s)),
            }
        };
        let need_duration = || {
            r.duration_s
                .filter(|d| *d > 0)
                .ok_or_else(|| format!("event '{kind}' at {} s needs a positive `duration_s`", r.at_s))
        };
        let envelope = Envelope {
            at_s: r.at_s,
            onset_s: r.onset_s.unwrap_or(30),
            hold_s: r.hold_s.unwrap_or(0),
            recovery_s: r.recovery_s.unwrap_or(60),
        };
        let event = match kind {
            "desaturation" => Event::Desaturation { envelope, nadir: need(r.nadir, "nadir", 50.0, 100.0)? },
            "respiratory_depression" => Event::RespiratoryDepression {
                envelope,
                resp: need(r.resp, "resp", 0.0, 40.0)?,
                nadir: need(r.nadir, "nadir", 50.0, 100.0)?,
            },
            "bradycardia" => Event::HeartRate { envelope, hr: need(r.hr, "hr", 25.0, 60.0)? },
            "tachycardia" => Event::HeartRate { envelope, hr: need(r.hr, "hr", 90.0, 220.0)? },
            "hypertensive_surge" => Event::HypertensiveSurge {
                envelope,
                systolic: need(r.systolic, "systolic", 0.0, 120.0)?,
                diastolic: need(r.diastolic, "diastolic", 0.0, 80.0)?,
            },
            "probe_off" => Event::ProbeOff { at_s: r.at_s, duration_s: need_duration()? },
            "artefacts" => Event::Artefacts { at_s: r.at_s, duration_s: need_duration()? },
            "sensor_unplugged" => Event::SensorUnplugged { at_s: r.at_s, duration_s: need_duration()? },
            "cuff_failure" => Event::CuffFailure { at_s: r.at_s },
            "nibp" => {
                let values = match (r.systolic, r.diastolic) {
                    (None, None) => None,
                    (Some(_), Some(_)) => {
                        let s = need(r.systolic, "systolic", 40.0, 280.0)?;
                        let d = need(r.diastolic, "diastolic", 20.0, 200.0)?;
                        if d >= s {
                            return Err(format!("event 'nibp' at {} s: diastolic must be below systolic", r.at_s));
                        }
                        Some((s, d))
                    }
                    _ => {
                        return Err(format!(
                            "event 'nibp' at {} s: give both systolic and diastolic, or neither",
                            r.at_s
                        ))
                    }
                };
                Event::Nibp { at_s: r.at_s, values }
            }
            "disconnect" => Event::Disconnect { at_s: r.at_s, duration_s: need_duration()? },
            "demo_mode" => Event::DemoMode { at_s: r.at_s, duration_s: r.duration_s },
            "garbage" => {
                let bytes = r.bytes.unwrap_or(48);
                if bytes == 0 || bytes > 4096 {
                    return Err(format!("event 'garbage' at {} s: bytes must be 1–4096", r.at_s));
                }
                Event::Garbage { at_s: r.at_s, bytes }
            }
            other => return Err(format!("unknown event kind '{other}' (known: {EVENT_KINDS})")),
        };
        Ok(event)
    }
}

/// Names of the bundled scenarios, in file order.
pub fn names() -> Vec<&'static str> {
    BUNDLED.iter().map(|(n, _)| *n).collect()
}

/// Loads a bundled scenario by name.
pub fn load(name: &str) -> Result<Scenario, ScenarioError> {
    let text = BUNDLED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| ScenarioError::Unknown { name: name.to_owned(), known: names().join(", ") })?;
    parse(name, text)
}

/// Parses and validates scenario TOML (public so tests and users can try their own files).
pub fn parse(name: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let scenario: Scenario =
        toml::from_str(text).map_err(|e| ScenarioError::Parse { name: name.to_owned(), source: Box::new(e) })?;
    scenario.validate().map_err(|message| ScenarioError::Invalid { name: name.to_owned(), message })?;
    Ok(scenario)
}

impl Scenario {
    /// Number of beds the scenario runs when the user does not say.
    pub fn default_beds(&self) -> usize {
        self.beds.unwrap_or(self.patients.len())
    }

    fn validate(&self) -> Result<(), String> {
        let s = &self.session;
        if self.description.trim().is_empty() || self.description.contains('\n') {
            return Err("description must be one non-empty line".into());
        }
        if self.patients.is_empty() {
            return Err("needs at least one [[patients]] entry".into());
        }
        if self.beds == Some(0) {
            return Err("beds must be at least 1".into());
        }
        if s.duration_s == 0 {
            return Err("session.duration_s must be positive".into());
        }
        if !(s.session_start_s <= s.infusion_start_s
            && s.infusion_start_s <= s.infusion_stop_s
            && s.infusion_stop_s <= s.session_end_s
            && s.session_end_s <= s.duration_s)
        {
            return Err(
                "session times must satisfy session_start_s <= infusion_start_s <= infusion_stop_s <= session_end_s \
                 <= duration_s"
                    .into(),
            );
        }
        if s.nibp_infusion_interval_s == 0 || s.nibp_observation_interval_s == 0 || s.nibp_cycle_s == 0 {
            return Err("NIBP intervals and cycle length must be positive".into());
        }
        if !(0.0..=1.0).contains(&s.cuff_failure_probability) {
            return Err("session.cuff_failure_probability must be between 0 and 1".into());
        }
        for (i, p) in self.patients.iter().enumerate() {
            let b = &p.baseline;
            let in_range = |v: Option<f64>, lo: f64, hi: f64| v.is_none_or(|v| v.is_finite() && (lo..=hi).contains(&v));
            if !(in_range(b.systolic, 70.0, 200.0)
                && in_range(b.diastolic, 40.0, 130.0)
                && in_range(b.hr, 35.0, 150.0)
                && in_range(b.spo2, 80.0, 100.0)
                && in_range(b.resp, 4.0, 40.0)
                && in_range(b.pi, 0.1, 20.0))
            {
                return Err(format!("patients[{i}].baseline has a value outside adult physiological ranges"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "description = \"x\"\n[session]\nduration_s = 100\ninfusion_start_s = 10\ninfusion_stop_s = 50\n\
                        session_end_s = 100\n[[patients]]\n";

    fn err(body: &str) -> String {
        parse("t", &format!("{HEAD}{body}")).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_scenario_parses_with_defaults() {
        let s = parse("t", HEAD).unwrap();
        assert_eq!(s.session.nibp_infusion_interval_s, 300);
        assert_eq!(s.session.nibp_observation_interval_s, 900);
        assert_eq!(s.default_beds(), 1);
    }

    #[test]
    fn event_errors_name_the_event_and_the_field() {
        assert!(err("[[patients.events]]\nkind = \"desaturation\"\nat_s = 5\n").contains("needs `nadir`"));
        assert!(err("[[patients.events]]\nkind = \"bradycardia\"\nat_s = 5\nhr = 80\n").contains("hr = 80"));
        assert!(err("[[patients.events]]\nkind = \"sneeze\"\nat_s = 5\n").contains("unknown event kind 'sneeze'"));
        assert!(err("[[patients.events]]\nkind = \"probe_off\"\nat_s = 5\n").contains("duration_s"));
        assert!(err("[[patients.events]]\nkind = \"nibp\"\nat_s = 5\nsystolic = 120\n").contains("both"));
        assert!(
            err("[[patients.events]]\nkind = \"nibp\"\nat_s = 5\nsystolic = 80\ndiastolic = 90\n").contains("below")
        );
    }

    #[test]
    fn unknown_keys_and_bad_session_times_are_rejected() {
        assert!(err("colour = \"red\"\n").contains("colour"));
        let bad = HEAD.replace("infusion_stop_s = 50", "infusion_stop_s = 5");
        assert!(parse("t", &bad).unwrap_err().to_string().contains("infusion_start_s <= infusion_stop_s"));
        assert!(err("baseline = { systolic = 300 }\n").contains("baseline"));
    }

    #[test]
    fn envelopes_ramp_in_hold_and_ramp_out() {
        let e = Envelope { at_s: 10, onset_s: 10, hold_s: 5, recovery_s: 10 };
        assert_eq!(e.level(9.0), 0.0);
        assert!((e.level(15.0) - 0.5).abs() < 1e-9);
        assert_eq!(e.level(22.0), 1.0);
        assert!(e.level(30.0) > 0.0 && e.level(30.0) < 1.0);
        assert_eq!(e.level(35.0), 0.0);
        assert_eq!(e.end_s(), 35);
    }
}
