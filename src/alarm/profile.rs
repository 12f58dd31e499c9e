//! Alarm profiles: the limits, delays and lifecycle settings a clinic reviews and signs off.
//!
//! Profiles are TOML (`config/profiles/<name>.toml`). The defaults come from docs/sources.md ("Default
//! ketamine-chair profile"); every number in the shipped files carries a comment naming its source. Unknown keys
//! are errors, so a misspelt limit can never silently fall back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::Priority;
use crate::vitals::Parameter;

/// The built-in default profile, so `ketamine-chair` resolves from any directory.
pub const KETAMINE_CHAIR: &str = include_str!("../../config/profiles/ketamine-chair.toml");
/// A stricter variant (tighter SpO2 and BP limits, shorter delays) for `vigil replay --compare`.
pub const KETAMINE_CHAIR_STRICT: &str = include_str!("../../config/profiles/ketamine-chair-strict.toml");

/// Built-in profiles by name.
pub const BUILT_IN: [(&str, &str); 2] =
    [("ketamine-chair", KETAMINE_CHAIR), ("ketamine-chair-strict", KETAMINE_CHAIR_STRICT)];

/// Where the Debian package installs the shipped profiles (`config/profiles/`); searched after the profiles
/// next to the config file.
pub const SYSTEM_PROFILE_DIR: &str = "/usr/share/vigil/profiles";

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type.
    #[error("{file}: {path}: {reason}")]
    Parse {
        /// The file.
        file: String,
        /// Key path, e.g. `limits.spo2.low.medium`.
        path: String,
        /// Why.
        reason: String,
    },
    /// A value that parses but makes no sense (a high band inside the medium band, a zero window …).
    #[error("{file}: {path}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// Key path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No file of that name and no built-in profile.
    #[error("profile '{name}' not found (looked in {searched} and the built-in profiles: ketamine-chair, ketamine-chair-strict)")]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where we looked.
        searched: String,
    },
}

/// A complete alarm profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name shown on the dashboard.
    pub name: String,
    /// What the profile is for.
    #[serde(default)]
    pub description: String,
    /// Latching, escalation, audio pause.
    pub lifecycle: LifecycleConfig,
    /// Threshold limits per parameter.
    pub limits: Limits,
    /// Nellcor-style SatSeconds for the SpO2 low medium band.
    pub satseconds: SatSecondsConfig,
    /// Trend detectors.
    pub trend: TrendConfig,
    /// Technical alarms.
    pub technical: TechnicalConfig,
    /// Infusion-session expectations.
    pub session: SessionConfig,
    /// Advisory NEWS2 score.
    pub news2: News2Config,
    /// How far SpO2 values are trusted.
    #[serde(default)]
    pub spo2: Spo2Config,
}

/// SpO2 trust settings (issue 10 item 5: use the perfusion index where the device sends it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spo2Config {
    /// An SpO2 value that arrives with a perfusion index below this (percent; in the same frame or at most
    /// 5 s older) is questionable: it holds a running SpO2 alarm, cannot end one, and when low raises
    /// "SpO2 low, poor signal" instead of a threshold alarm. 0 turns the rule off. Default 0.6: below a PI of
    /// 0.6 % the SpO2–SaO2 difference exceeds ±5 points significantly more often (docs/sources.md, "Perfusion
    /// index").
    pub min_perfusion_index: f64,
}

impl Default for Spo2Config {
    fn default() -> Self {
        Spo2Config { min_perfusion_index: 0.6 }
    }
}

/// Lifecycle settings (IEC 60601-1-8 inactivation states, CLINICAL.md "Alarm semantics").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Priorities whose alarms latch: they keep signalling after the condition ends until acknowledged.
    pub latching: Vec<Priority>,
    /// An unanswered medium physiological alarm escalates to high after this many seconds; 0 = never.
    pub escalate_medium_after_s: u64,
    /// Longest audio pause a nurse may ask for, seconds.
    pub audio_pause_max_s: u32,
    /// An acknowledged alarm whose condition persists sounds again after this long, seconds (0 = never).
    #[serde(default)]
    pub reminder_s: Reminder,
    /// A present alarm sounds again when its value worsens this far beyond the value last announced or
    /// acknowledged, in the parameter's unit (0 = never by value).
    #[serde(default)]
    pub reannounce_step: ReannounceStep,
}

/// Reminder times per priority (issue 10: defaults to be reviewed, 120 s high, 300 s medium).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reminder {
    /// High-priority alarms.
    pub high: u64,
    /// Medium-priority alarms.
    pub medium: u64,
}

impl Default for Reminder {
    fn default() -> Self {
        Reminder { high: 120, medium: 300 }
    }
}

/// Worsening steps per parameter (issue 10 defaults to be reviewed: SpO2 3 points, systolic 20 mmHg, diastolic
/// and mean 10 mmHg, HR/PR 20 /min, RR 5 /min).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReannounceStep {
    /// Heart rate, /min.
    pub hr: f64,
    /// Pulse rate, /min.
    pub pr: f64,
    /// SpO2, points.
    pub spo2: f64,
    /// NIBP systolic, mmHg.
    pub nibp_sys: f64,
    /// NIBP diastolic, mmHg.
    pub nibp_dia: f64,
    /// NIBP mean, mmHg.
    pub nibp_mean: f64,
    /// Respiration rate, /min.
    pub rr: f64,
}

impl Default for ReannounceStep {
    fn default() -> Self {
        ReannounceStep { hr: 20.0, pr: 20.0, spo2: 3.0, nibp_sys: 20.0, nibp_dia: 10.0, nibp_mean: 10.0, rr: 5.0 }
    }
}

impl ReannounceStep {
    /// The step of one parameter.
    pub fn get(&self, p: Parameter) -> f64 {
        match p {
            Parameter::Hr => self.hr,
            Parameter::Pr => self.pr,
            Parameter::Spo2 => self.spo2,
            Parameter::NibpSys => self.nibp_sys,
            Parameter::NibpDia => self.nibp_dia,
            Parameter::NibpMean => self.nibp_mean,
            Parameter::Rr => self.rr,
            Parameter::Pi => 0.0,
        }
    }
}

/// One band pair: the medium and high limits of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    /// Medium-priority limit (strict comparison: `> medium` for a high limit, `< medium` for a low limit).
    #[serde(default)]
    pub medium: Option<f64>,
    /// High-priority limit.
    #[serde(default)]
    pub high: Option<f64>,
}

/// Limits of one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterLimits {
    /// Alarm above these.
    #[serde(default)]
    pub high: Option<Band>,
    /// Alarm below these.
    #[serde(default)]
    pub low: Option<Band>,
    /// The value must come back this far inside the limit before the alarm clears (or de-escalates).
    pub hysteresis: f64,
    /// Alarm condition delay, seconds: the condition must last this long. Must be 0 for NIBP (spot readings).
    pub delay_s: u64,
}

/// Limits per parameter; a parameter without a table has no threshold alarms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Heart rate (ECG).
    #[serde(default)]
    pub hr: Option<ParameterLimits>,
    /// Pulse rate.
    #[serde(default)]
    pub pr: Option<ParameterLimits>,
    /// SpO2.
    #[serde(default)]
    pub spo2: Option<ParameterLimits>,
    /// NIBP systolic.
    #[serde(default)]
    pub nibp_sys: Option<ParameterLimits>,
    /// NIBP diastolic.
    #[serde(default)]
    pub nibp_dia: Option<ParameterLimits>,
    /// NIBP mean.
    #[serde(default)]
    pub nibp_mean: Option<ParameterLimits>,
    /// Respiration rate.
    #[serde(default)]
    pub rr: Option<ParameterLimits>,
}

impl Limits {
    /// The limits of one parameter.
    pub fn get(&self, p: Parameter) -> Option<&ParameterLimits> {
        self.slot(p).as_ref()
    }

    /// Mutable access, for per-bed overrides; `None` for a parameter that is never alarmed (the perfusion index).
    pub fn get_mut(&mut self, p: Parameter) -> Option<&mut Option<ParameterLimits>> {
        Some(match p {
            Parameter::Hr => &mut self.hr,
            Parameter::Pr => &mut self.pr,
            Parameter::Spo2 => &mut self.spo2,
            Parameter::NibpSys => &mut self.nibp_sys,
            Parameter::NibpDia => &mut self.nibp_dia,
            Parameter::NibpMean => &mut self.nibp_mean,
            Parameter::Rr => &mut self.rr,
            Parameter::Pi => return None,
        })
    }

    fn slot(&self, p: Parameter) -> &Option<ParameterLimits> {
        match p {
            Parameter::Hr => &self.hr,
            Parameter::Pr => &self.pr,
            Parameter::Spo2 => &self.spo2,
            Parameter::NibpSys => &self.nibp_sys,
            Parameter::NibpDia => &self.nibp_dia,
            Parameter::NibpMean => &self.nibp_mean,
            Parameter::Rr => &self.rr,
            Parameter::Pi => &None,
        }
    }
}

/// SatSeconds (Nellcor): integrate points below the SpO2 low medium limit × seconds; alarm past `setting`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SatSecondsConfig {
    /// Off: the SpO2 medium band uses `limits.spo2.delay_s` like any continuous parameter.
    pub enabled: bool,
    /// 10, 25, 50 or 100 (Nellcor's settings).
    pub setting: u32,
    /// Safety net: this many crossings below the limit within `crossing_window_s` alarm anyway.
    pub crossings: u32,
    /// Safety-net window, seconds.
    pub crossing_window_s: u64,
    /// A value this many points under the medium limit alarms high at once (rapid desaturation).
    pub deep_drop_points: f64,
}

/// Trend detectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendConfig {
    /// Rise from the session baseline.
    pub rise: RiseConfig,
    /// Robust (Theil–Sen) slope of NIBP systolic.
    pub nibp_slope: SlopeConfig,
    /// Robust (Theil–Sen) slope of SpO2 over short buckets.
    pub spo2_slope: SlopeConfig,
    /// CUSUM for sustained heart-rate drift.
    pub hr_drift: DriftConfig,
}

/// Rise from the session baseline (esketamine label: systolic +40 and/or diastolic +25 mmHg).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiseConfig {
    /// Off switch.
    pub enabled: bool,
    /// Systolic rise that alarms, mmHg (at or above).
    pub sys: f64,
    /// Diastolic rise that alarms, mmHg (at or above).
    pub dia: f64,
    /// The rise must fall this far under the threshold before the alarm clears.
    pub hysteresis: f64,
    /// Priority.
    pub priority: Priority,
}

/// A robust-slope detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlopeConfig {
    /// Off switch.
    pub enabled: bool,
    /// Window, seconds.
    pub window_s: u64,
    /// Points are averaged into buckets of this many seconds (0 = every reading is a point).
    pub bucket_s: u64,
    /// Fewer points than this: no verdict.
    pub min_points: usize,
    /// Alarm when the slope (units per minute) is at least this steep in the alarming direction. Positive for
    /// a rise detector, negative for a fall detector.
    pub slope_per_min: f64,
    /// And the fitted change across the window is at least this large (absolute units).
    pub min_change: f64,
    /// And the latest point is beyond this value (above for a rise, below for a fall); None = no gate.
    #[serde(default)]
    pub gate: Option<f64>,
    /// Priority.
    pub priority: Priority,
}

/// Two-sided CUSUM of heart rate against a slow reference (after Yang, Dumont & Ansermino 2010).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// Off switch.
    pub enabled: bool,
    /// Time constant of the exponentially weighted reference, seconds.
    pub reference_tau_s: f64,
    /// Seconds of data before the detector may alarm.
    pub warmup_s: u64,
    /// Allowance k, bpm: deviations smaller than this never accumulate.
    pub k: f64,
    /// Decision interval h, bpm·s.
    pub h: f64,
    /// Longest gap credited for one sample, seconds.
    pub max_dt_s: f64,
    /// Priority.
    pub priority: Priority,
}

/// Technical alarms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TechnicalConfig {
    /// A continuous parameter seen before with no valid value for this long raises `<param>_no_data`.
    pub no_data_s: u64,
    /// Seconds added to the phase's NIBP cycle before `nibp_overdue` (the latest it can fire).
    pub nibp_grace_s: u64,
    /// `nibp_overdue` also fires after this many times the cuff interval actually seen, when that is sooner.
    #[serde(default = "default_overdue_factor")]
    pub nibp_overdue_factor: f64,
    /// Respiration rate 0 from a source that measures it, for this long, raises high `apnoea`, seconds.
    #[serde(default = "default_apnoea_delay_s")]
    pub apnoea_delay_s: u64,
    /// During an infusion, an unanswered technical alarm that leaves the chair unwatched (no data, sensor off,
    /// disconnected, demo) escalates to high after this long, seconds (0 = never).
    #[serde(default = "default_escalate_in_infusion_s")]
    pub escalate_in_infusion_s: u64,
    /// Sensor off / pulse search must last this long, seconds (a patient adjusting the probe is not an alarm).
    pub sensor_delay_s: u64,
    /// Priority of technical alarms (low battery and input errors are always low).
    pub priority: Priority,
    /// Window for the input error rate, seconds.
    pub input_error_window_s: u64,
    /// Frames needed in the window before judging the rate.
    pub input_error_min_frames: u64,
    /// Bad/total ratio that alarms.
    pub input_error_ratio: f64,
}

fn default_overdue_factor() -> f64 {
    1.5
}
fn default_apnoea_delay_s() -> u64 {
    20
}
fn default_escalate_in_infusion_s() -> u64 {
    180
}
fn default_expected() -> Vec<Parameter> {
    vec![Parameter::Spo2, Parameter::Pr]
}
fn default_emergency_total() -> u32 {
    7
}

/// NIBP cycle expectations per session phase (CLINICAL.md: every 5–10 min in infusion, 15 min afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NibpCycle {
    /// Before the infusion (baseline readings).
    pub pre_infusion: u64,
    /// During the infusion.
    pub infusion: u64,
    /// After the infusion.
    pub observation: u64,
}

/// Session settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Seconds between expected NIBP readings, per phase.
    pub nibp_cycle_s: NibpCycle,
    /// Continuous parameters every session must deliver: each raises `<param>_no_data` from session start
    /// when it never arrives.
    #[serde(default = "default_expected")]
    pub expected: Vec<Parameter>,
}

/// Advisory NEWS2 (RCP 2017).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct News2Config {
    /// Off switch.
    pub enabled: bool,
    /// Total that calls for urgent review (RCP: 5), or any single parameter scoring 3.
    pub urgent_total: u32,
    /// Total that calls for emergency review (RCP: 7): the advisory becomes medium.
    #[serde(default = "default_emergency_total")]
    pub emergency_total: u32,
    /// The score must stay at or above the trigger this long, seconds.
    pub delay_s: u64,
    /// An NIBP systolic older than this is not scored, seconds.
    pub max_nibp_age_s: u64,
}

impl Profile {
    /// Resolves a profile: a path ending in `.toml` is loaded as is; a name is looked up in
    /// `<base_dir>/profiles/<name>.toml` (next to the config file: `/etc/vigil/profiles/` when installed), then in
    /// [`SYSTEM_PROFILE_DIR`] (the Debian package's copies), then among the built-in profiles.
    pub fn resolve(name_or_path: &str, base_dir: &Path) -> Result<Profile, ProfileError> {
        Profile::resolve_in(name_or_path, base_dir, Path::new(SYSTEM_PROFILE_DIR))
    }

    /// [`Profile::resolve`] with another system directory (tests).
    pub fn resolve_in(name_or_path: &str, base_dir: &Path, system_dir: &Path) -> Result<Profile, ProfileError> {
        if name_or_path.ends_with(".toml") {
            let path = PathBuf::from(name_or_path);
            let path = if path.is_relative() && !path.exists() { base_dir.join(path) } else { path };
            return Profile::load(&path);
        }
        let candidate = base_dir.join("profiles").join(format!("{name_or_path}.toml"));
        if candidate.exists() {
            return Profile::load(&candidate);
        }
        let system = system_dir.join(format!("{name_or_path}.toml"));
        if system.exists() {
            return Profile::load(&system);
        }
        match BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, text)) => Profile::from_toml(text, &format!("(built-in {n}.toml)")),
            None => {
                let searched = format!("{}, {}", candidate.display(), system.display());
                Err(ProfileError::NotFound { name: name_or_path.to_owned(), searched })
            }
        }
    }

    /// Loads a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read { file: file.clone(), source })?;
        Profile::from_toml(&text, &file)
    }

    /// The built-in default (`ketamine-chair`).
    pub fn ketamine_chair() -> Profile {
        Profile::from_toml(KETAMINE_CHAIR, "(built-in ketamine-chair.toml)").expect("the built-in profile is valid")
    }

    /// Parses and validates profile text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = crate::config::from_toml(text).map_err(|(path, reason)| ProfileError::Parse {
            file: file.to_owned(),
            path,
            reason,
        })?;
        profile.validate().map_err(|(path, reason)| ProfileError::Invalid { file: file.to_owned(), path, reason })?;
        Ok(profile)
    }

    /// Checks what types cannot: band order, NIBP without delay, windows and settings in range.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for p in Parameter::ALL {
            let Some(l) = self.limits.get(p) else { continue };
            let at = format!("limits.{}", p.name());
            if !(l.hysteresis >= 0.0 && l.hysteresis.is_finite()) {
                return Err((format!("{at}.hysteresis"), "must be a finite number >= 0".into()));
            }
            if p.is_nibp() && l.delay_s != 0 {
                return Err((
                    format!("{at}.delay_s"),
                    "must be 0: an NIBP reading is a spot measurement and is never delayed (CLINICAL.md)".into(),
                ));
            }
            if l.delay_s > 15 {
                return Err((format!("{at}.delay_s"), format!("{} exceeds the 15 s monitors allow", l.delay_s)));
            }
            if let Some(Band { medium: Some(m), high: Some(h) }) = l.high {
                if h < m {
                    return Err((format!("{at}.high.high"), format!("{h} is below the medium limit {m}")));
                }
            }
            if let Some(Band { medium: Some(m), high: Some(h) }) = l.low {
                if h > m {
                    return Err((format!("{at}.low.high"), format!("{h} is above the medium limit {m}")));
                }
            }
            if let (Some(hi), Some(lo)) =
                (l.high.and_then(|b| b.medium.or(b.high)), l.low.and_then(|b| b.medium.or(b.high)))
            {
                if lo >= hi {
                    return Err((format!("{at}.low"), format!("low limit {lo} is not below high limit {hi}")));
                }
            }
        }
        if ![10, 25, 50, 100].contains(&self.satseconds.setting) {
            return Err((
                "satseconds.setting".into(),
                format!("{} is not one of Nellcor's settings 10, 25, 50, 100", self.satseconds.setting),
            ));
        }
        if self.satseconds.crossing_window_s == 0 || self.satseconds.crossings < 2 {
            return Err(("satseconds.crossings".into(), "need at least 2 crossings in a non-zero window".into()));
        }
        for (name, s) in [("nibp_slope", &self.trend.nibp_slope), ("spo2_slope", &self.trend.spo2_slope)] {
            if s.min_points < 3 {
                return Err((format!("trend.{name}.min_points"), "must be at least 3".into()));
            }
            if s.window_s == 0 {
                return Err((format!("trend.{name}.window_s"), "must be positive".into()));
            }
            if s.slope_per_min == 0.0 {
                return Err((format!("trend.{name}.slope_per_min"), "must not be 0".into()));
            }
        }
        if self.trend.spo2_slope.bucket_s == 0 {
            return Err(("trend.spo2_slope.bucket_s".into(), "must be positive (SpO2 arrives every second)".into()));
        }
        let d = &self.trend.hr_drift;
        if d.reference_tau_s <= 0.0 || d.h <= 0.0 || d.k < 0.0 || d.max_dt_s <= 0.0 {
            return Err(("trend.hr_drift".into(), "reference_tau_s, h and max_dt_s must be > 0, k >= 0".into()));
        }
        if self.technical.no_data_s == 0 {
            return Err(("technical.no_data_s".into(), "must be positive".into()));
        }
        if !(self.technical.input_error_ratio > 0.0 && self.technical.input_error_ratio <= 1.0) {
            return Err(("technical.input_error_ratio".into(), "must be in (0, 1]".into()));
        }
        let pi = self.spo2.min_perfusion_index;
        if !(pi.is_finite() && (0.0..=20.0).contains(&pi)) {
            return Err((
                "spo2.min_perfusion_index".into(),
                format!("{pi} is outside 0..=20 % (oximeters show a perfusion index of 0.02-20 %)"),
            ));
        }
        if self.lifecycle.audio_pause_max_s == 0 {
            return Err(("lifecycle.audio_pause_max_s".into(), "must be positive".into()));
        }
        if !(self.technical.nibp_overdue_factor >= 1.0 && self.technical.nibp_overdue_factor.is_finite()) {
            return Err(("technical.nibp_overdue_factor".into(), "must be a finite number >= 1".into()));
        }
        if self.technical.apnoea_delay_s > 60 {
            return Err(("technical.apnoea_delay_s".into(), "must be at most 60 s".into()));
        }
        for p in &self.session.expected {
            if !p.is_alarmed() {
                return Err(("session.expected".into(), format!("{p} is never alarmed on, so it cannot be missed")));
            }
            if p.is_nibp() {
                return Err((
                    "session.expected".into(),
                    format!("{p} is a spot measurement: NIBP is watched by nibp_overdue"),
                ));
            }
        }
        let c = &self.session.nibp_cycle_s;
        if c.pre_infusion == 0 || c.infusion == 0 || c.observation == 0 {
            return Err(("session.nibp_cycle_s".into(), "every phase needs a positive cycle".into()));
        }
        Ok(())
    }

    /// Whether alarms that reached `p` latch.
    pub fn latches(&self, p: Priority) -> bool {
        self.lifecycle.latching.contains(&p)
    }
}
