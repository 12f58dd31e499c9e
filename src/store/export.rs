//! A bed's whole history over a window, one record at a time in time order, for the session export: read on a
//! connection of its own, so a slow download never holds the shared read connection the MQTT outbox uses.

use rusqlite::{params, Connection, OpenFlags};

use super::{from_ms, ms, status_from, ActionRecord, Store, StoreError};
use crate::event::{AlarmEvent, SessionEvent, VitalValue};
use crate::vitals::{Parameter, Timestamp};

/// One record of a bed's history.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryRecord {
    /// A stored vital value.
    Vital(VitalValue),
    /// An alarm lifecycle event.
    Alarm(AlarmEvent),
    /// A session lifecycle event.
    Session(SessionEvent),
    /// A command someone sent (the audit trail).
    Action(ActionRecord),
}

impl HistoryRecord {
    /// When it happened.
    pub fn time(&self) -> Timestamp {
        match self {
            HistoryRecord::Vital(v) => v.time,
            HistoryRecord::Alarm(a) => a.time,
            HistoryRecord::Session(s) => s.time,
            HistoryRecord::Action(a) => a.time,
        }
    }

    /// The order of kinds at equal times: vitals, alarms, session events, actions.
    pub fn rank(&self) -> u8 {
        match self {
            HistoryRecord::Vital(_) => 0,
            HistoryRecord::Alarm(_) => 1,
            HistoryRecord::Session(_) => 2,
            HistoryRecord::Action(_) => 3,
        }
    }
}

/// The four tables as one time-ordered list: SQLite merges the four arms. Within a time: vitals by parameter,
/// alarms by `bed_seq`, session events and actions as stored. The list is ordered by the second first (`s`, the
/// floor of `time_ms` / 1000; the same order, as it rises with `time_ms`) so the vitals arm, by far the largest,
/// streams from its primary key (bed, second, parameter) with a sort within each second only; the three event
/// arms are sorted whole (they hold few rows). `?5` and `?6` are the seconds of `?2` and `?3`.
pub(super) const RECORDS: &str = "
    SELECT second AS s, time_ms, 0 AS kind, parameter AS k, parameter AS a, value AS v, status AS b, NULL AS c,
           NULL AS ok, NULL AS d
      FROM vitals WHERE bed = ?1 AND second >= ?5 AND second <= ?6 AND time_ms >= ?2 AND time_ms < ?3
    UNION ALL
    SELECT time_ms / 1000 - (time_ms % 1000 < 0), time_ms, 1, bed_seq, json, NULL, NULL, NULL, NULL, NULL
      FROM alarm_events WHERE bed = ?1 AND time_ms >= ?2 AND time_ms < ?3
    UNION ALL
    SELECT time_ms / 1000 - (time_ms % 1000 < 0), time_ms, 2, id, json, NULL, NULL, NULL, NULL, NULL
      FROM session_events WHERE bed = ?1 AND time_ms >= ?2 AND time_ms < ?3
    UNION ALL
    SELECT time_ms / 1000 - (time_ms % 1000 < 0), time_ms, 3, id, actor, NULL, request, command, ok, reason
      FROM actions WHERE bed = ?1 AND time_ms >= ?2 AND time_ms < ?3 AND ?4
    ORDER BY s, time_ms, kind, k";

impl Store {
    /// Passes every record of `bed` with `from <= time < to` to `each`, in time order, until `each` returns
    /// false; actions only with `actions`. Blocking: runs the query on a new read-only connection (one read
    /// transaction, so the export is one consistent snapshot). Returns how many records were passed.
    pub fn for_each_record(
        &self,
        bed: &str,
        from: Timestamp,
        to: Timestamp,
        actions: bool,
        mut each: impl FnMut(HistoryRecord) -> bool,
    ) -> Result<u64, StoreError> {
        let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut stmt = conn.prepare(RECORDS)?;
        let (from, to) = (ms(&from), ms(&to));
        let mut rows = stmt.query(params![bed, from, to, actions, from.div_euclid(1000), to.div_euclid(1000)])?;
        let mut passed = 0;
        while let Some(r) = rows.next()? {
            let time = from_ms(r.get(1)?);
            let record = match r.get::<_, i64>(2)? {
                0 => {
                    let Some(parameter) = Parameter::from_name(&r.get::<_, String>(4)?) else { continue };
                    let status = status_from(&r.get::<_, String>(6)?);
                    HistoryRecord::Vital(VitalValue { parameter, value: r.get(5)?, status, time })
                }
                1 => HistoryRecord::Alarm(serde_json::from_str(&r.get::<_, String>(4)?)?),
                2 => HistoryRecord::Session(serde_json::from_str(&r.get::<_, String>(4)?)?),
                _ => {
                    let command = r.get::<_, Option<String>>(7)?.map(|c| serde_json::from_str(&c)).transpose()?;
                    HistoryRecord::Action(ActionRecord {
                        time,
                        actor: r.get(4)?,
                        bed: bed.to_owned(),
                        command,
                        request: r.get(6)?,
                        ok: r.get(8)?,
                        reason: r.get(9)?,
                    })
                }
            };
            passed += 1;
            if !each(record) {
                break;
            }
        }
        Ok(passed)
    }
}
