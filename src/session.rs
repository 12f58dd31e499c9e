//! One chair's infusion session: phases, baseline and the NIBP cycle expected in each phase. Pure: commands and
//! readings in, [`SessionEvent`]s out; the alarm engine owns one and asks it for the baseline and the cycle.
//!
//! Phases follow CLINICAL.md "The setting": pre-infusion (baseline readings), infusion (40 min – 2 h, NIBP every
//! 5–10 min), observation (30 min – 2 h, NIBP every 15 min), end. The baseline for the rise-from-baseline rule is
//! the median of the pre-infusion NIBP readings (robust to one agitated first reading), or what a nurse enters.

use statrs::statistics::{Data, OrderStatistics};

use crate::alarm::profile::NibpCycle;
use crate::event::{Baseline, BaselineSource, SessionEvent, SessionPhase};
use crate::vitals::{BedId, Parameter, Timestamp};

/// Why a session command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// A session is already running.
    #[error("a session is already running (phase {0:?}); end it first")]
    AlreadyRunning(SessionPhase),
    /// The command needs a running session.
    #[error("no session is running")]
    NoSession,
    /// The command does not fit the phase.
    #[error("cannot {action} in phase {phase:?}")]
    WrongPhase {
        /// What was asked.
        action: &'static str,
        /// The phase the session is in.
        phase: SessionPhase,
    },
    /// A baseline that cannot be a blood pressure.
    #[error("baseline {sys}/{dia} mmHg is not plausible (need 60..=250 / 30..=150 with systolic above diastolic)")]
    ImplausibleBaseline {
        /// Systolic.
        sys: f64,
        /// Diastolic.
        dia: f64,
    },
    /// Only one half of a baseline was given.
    #[error("a baseline needs both systolic and diastolic")]
    HalfBaseline,
}

/// The session state of one chair.
#[derive(Debug, Clone)]
pub struct Session {
    bed: BedId,
    id: String,
    phase: SessionPhase,
    started: Option<Timestamp>,
    infusion_started: Option<Timestamp>,
    infusion_stopped: Option<Timestamp>,
    patient: Option<String>,
    baseline: Option<Baseline>,
    pre_sys: Vec<f64>,
    pre_dia: Vec<f64>,
}

fn check_baseline(sys: f64, dia: f64) -> Result<(), SessionError> {
    if (60.0..=250.0).contains(&sys) && (30.0..=150.0).contains(&dia) && sys > dia {
        Ok(())
    } else {
        Err(SessionError::ImplausibleBaseline { sys, dia })
    }
}

/// Median with statrs (in place on a copy; pre-infusion sets are a handful of readings).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    Some(Data::new(&mut v[..]).median())
}

impl Session {
    /// An idle chair.
    pub fn new(bed: BedId) -> Session {
        Session {
            bed,
            id: String::new(),
            phase: SessionPhase::Idle,
            started: None,
            infusion_started: None,
            infusion_stopped: None,
            patient: None,
            baseline: None,
            pre_sys: Vec::new(),
            pre_dia: Vec::new(),
        }
    }

    /// Resumes the session a stored event describes (after a restart), if it was running; an ended or idle
    /// one leaves the chair idle. The pre-infusion NIBP readings are not stored, so a baseline not yet taken is
    /// taken from the readings after the restart.
    pub fn restore(&mut self, ev: &SessionEvent) {
        if !matches!(ev.phase, SessionPhase::PreInfusion | SessionPhase::Infusion | SessionPhase::Observation) {
            return;
        }
        self.id = ev.session_id.clone();
        self.phase = ev.phase;
        self.started = ev.started;
        self.infusion_started = ev.infusion_started;
        self.infusion_stopped = (ev.phase == SessionPhase::Observation).then_some(ev.time);
        self.patient = ev.patient.clone();
        self.baseline = ev.baseline;
    }

    /// The phase.
    pub fn phase(&self) -> SessionPhase {
        self.phase
    }

    /// Whether a session is running (pre-infusion, infusion or observation).
    pub fn is_running(&self) -> bool {
        matches!(self.phase, SessionPhase::PreInfusion | SessionPhase::Infusion | SessionPhase::Observation)
    }

    /// Session id (empty when none ever started).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the session started.
    pub fn started(&self) -> Option<Timestamp> {
        self.started
    }

    /// The baseline in force.
    pub fn baseline(&self) -> Option<Baseline> {
        self.baseline
    }

    /// Seconds between expected NIBP readings in the current phase; `None` when no session runs (an idle chair
    /// expects nothing).
    pub fn nibp_cycle_s(&self, cycle: &NibpCycle) -> Option<u64> {
        match self.phase {
            SessionPhase::PreInfusion => Some(cycle.pre_infusion),
            SessionPhase::Infusion => Some(cycle.infusion),
            SessionPhase::Observation => Some(cycle.observation),
            SessionPhase::Idle | SessionPhase::Ended => None,
        }
    }

    /// The current state as an event.
    pub fn snapshot(&self, action: &str, time: Timestamp, by: Option<&str>) -> SessionEvent {
        SessionEvent {
            session_seq: 0,
            time,
            bed: self.bed.clone(),
            session_id: self.id.clone(),
            action: action.to_owned(),
            phase: self.phase,
            started: self.started,
            infusion_started: self.infusion_started,
            patient: self.patient.clone(),
            baseline: self.baseline,
            by: by.map(str::to_owned),
            detail: None,
        }
    }

    /// Starts a session, optionally with an entered baseline.
    pub fn start(
        &mut self,
        patient: Option<String>,
        baseline: Option<(f64, f64)>,
        actor: &str,
        now: Timestamp,
    ) -> Result<SessionEvent, SessionError> {
        if self.is_running() {
            return Err(SessionError::AlreadyRunning(self.phase));
        }
        if let Some((s, d)) = baseline {
            check_baseline(s, d)?;
        }
        *self = Session::new(self.bed.clone());
        self.id = format!("{}-{}", self.bed, now.format("%Y%m%dT%H%M%SZ"));
        self.phase = SessionPhase::PreInfusion;
        self.started = Some(now);
        self.patient = patient;
        self.baseline = baseline.map(|(sys, dia)| Baseline { sys, dia, source: BaselineSource::Entered });
        Ok(self.snapshot("session_start", now, Some(actor)))
    }

    /// A valid NIBP value: kept for the baseline while pre-infusion.
    pub fn note_nibp(&mut self, parameter: Parameter, value: f64) {
        if self.phase != SessionPhase::PreInfusion {
            return;
        }
        match parameter {
            Parameter::NibpSys => self.pre_sys.push(value),
            Parameter::NibpDia => self.pre_dia.push(value),
            _ => {}
        }
    }

    /// The infusion starts; the baseline becomes the median of the pre-infusion readings unless one was entered.
    pub fn infusion_start(&mut self, actor: &str, now: Timestamp) -> Result<SessionEvent, SessionError> {
        match self.phase {
            SessionPhase::PreInfusion => {}
            SessionPhase::Idle | SessionPhase::Ended => return Err(SessionError::NoSession),
            phase => return Err(SessionError::WrongPhase { action: "start the infusion", phase }),
        }
        if self.baseline.is_none() {
            if let (Some(sys), Some(dia)) = (median(&self.pre_sys), median(&self.pre_dia)) {
                self.baseline = Some(Baseline { sys, dia, source: BaselineSource::MedianOfPreInfusion });
            }
        }
        self.phase = SessionPhase::Infusion;
        self.infusion_started = Some(now);
        Ok(self.snapshot("infusion_start", now, Some(actor)))
    }

    /// The infusion stops; observation begins.
    pub fn infusion_stop(&mut self, actor: &str, now: Timestamp) -> Result<SessionEvent, SessionError> {
        match self.phase {
            SessionPhase::Infusion => {}
            SessionPhase::Idle | SessionPhase::Ended => return Err(SessionError::NoSession),
            phase => return Err(SessionError::WrongPhase { action: "stop the infusion", phase }),
        }
        self.phase = SessionPhase::Observation;
        self.infusion_stopped = Some(now);
        Ok(self.snapshot("infusion_stop", now, Some(actor)))
    }

    /// Ends the session (from any running phase: a session may be abandoned before the infusion).
    pub fn end(&mut self, actor: &str, now: Timestamp) -> Result<SessionEvent, SessionError> {
        if !self.is_running() {
            return Err(SessionError::NoSession);
        }
        self.phase = SessionPhase::Ended;
        Ok(self.snapshot("session_end", now, Some(actor)))
    }

    /// A nurse enters the baseline.
    pub fn set_baseline(
        &mut self,
        sys: f64,
        dia: f64,
        actor: &str,
        now: Timestamp,
    ) -> Result<SessionEvent, SessionError> {
        if !self.is_running() {
            return Err(SessionError::NoSession);
        }
        check_baseline(sys, dia)?;
        self.baseline = Some(Baseline { sys, dia, source: BaselineSource::Entered });
        Ok(self.snapshot("baseline_set", now, Some(actor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn baseline_is_the_median_of_pre_infusion_readings() {
        let mut s = Session::new("chair-1".into());
        s.start(None, None, "nurse", t(0)).unwrap();
        for (sys, dia) in [(150.0, 95.0), (128.0, 80.0), (132.0, 82.0)] {
            s.note_nibp(Parameter::NibpSys, sys);
            s.note_nibp(Parameter::NibpDia, dia);
        }
        let e = s.infusion_start("nurse", t(600)).unwrap();
        let b = e.baseline.unwrap();
        assert_eq!((b.sys, b.dia, b.source), (132.0, 82.0, BaselineSource::MedianOfPreInfusion));
    }

    #[test]
    fn an_entered_baseline_wins_over_the_median() {
        let mut s = Session::new("chair-1".into());
        s.start(Some("P-17".into()), Some((130.0, 80.0)), "nurse", t(0)).unwrap();
        s.note_nibp(Parameter::NibpSys, 150.0);
        s.note_nibp(Parameter::NibpDia, 95.0);
        let b = s.infusion_start("nurse", t(60)).unwrap().baseline.unwrap();
        assert_eq!((b.sys, b.source), (130.0, BaselineSource::Entered));
    }

    #[test]
    fn commands_out_of_order_are_refused_and_change_nothing() {
        let mut s = Session::new("chair-1".into());
        assert_eq!(s.infusion_start("n", t(0)), Err(SessionError::NoSession));
        s.start(None, None, "n", t(0)).unwrap();
        assert!(matches!(s.start(None, None, "n", t(1)), Err(SessionError::AlreadyRunning(_))));
        assert!(matches!(s.infusion_stop("n", t(2)), Err(SessionError::WrongPhase { .. })));
        assert_eq!(s.phase(), SessionPhase::PreInfusion);
        assert!(matches!(s.set_baseline(80.0, 120.0, "n", t(3)), Err(SessionError::ImplausibleBaseline { .. })));
        assert_eq!(s.baseline(), None);
    }

    #[test]
    fn each_phase_expects_its_own_nibp_cycle() {
        let c = NibpCycle { pre_infusion: 600, infusion: 300, observation: 900 };
        let mut s = Session::new("chair-1".into());
        assert_eq!(s.nibp_cycle_s(&c), None);
        s.start(None, None, "n", t(0)).unwrap();
        assert_eq!(s.nibp_cycle_s(&c), Some(600));
        s.infusion_start("n", t(1)).unwrap();
        assert_eq!(s.nibp_cycle_s(&c), Some(300));
        s.infusion_stop("n", t(2)).unwrap();
        assert_eq!(s.nibp_cycle_s(&c), Some(900));
        s.end("n", t(3)).unwrap();
        assert_eq!(s.nibp_cycle_s(&c), None);
    }
}
