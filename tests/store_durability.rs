//! The store keeps what the publisher and the dashboard need, across restarts, within retention.

use chrono::{Duration, TimeZone, Utc};
use serde_json::Map;
use vigil::event::{
    AlarmEvent, AlarmKind, AlarmPhase, AlarmState, BedAlarms, Command, Event, LinkState, Priority, SessionEvent,
    SessionPhase, VitalValue, VitalsUpdate,
};
use vigil::store::{Store, StoreError};
use vigil::vitals::{Parameter, Timestamp, ValueStatus};

fn t(s: i64) -> Timestamp {
    Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
}

fn alarm(bed: &str, bed_seq: u64, seq: u32, time: Timestamp) -> AlarmEvent {
    AlarmEvent {
        time,
        bed: bed.into(),
        alarm_id: format!("{bed}-a1"),
        seq,
        bed_seq,
        kind: AlarmKind::Threshold,
        source: vigil::event::AlarmSource::Vigil,
        condition: "spo2_low".into(),
        parameter: Some(Parameter::Spo2),
        priority: Priority::High,
        phase: if seq == 1 { AlarmPhase::Start } else { AlarmPhase::Update },
        state: AlarmState::Active,
        value: Some(85.0),
        limit: Some(88.0),
        evidence: Map::new(),
        message: "SpO2 85 < 88".into(),
        by: None,
        audio_paused_until: None,
        test: false,
    }
}

fn session(bed: &str, time: Timestamp) -> SessionEvent {
    SessionEvent {
        session_seq: 1,
        time,
        bed: bed.into(),
        session_id: "s1".into(),
        action: "session_start".into(),
        phase: SessionPhase::PreInfusion,
        started: Some(time),
        infusion_started: None,
        patient: None,
        baseline: None,
        detail: None,
        by: Some("nurse".into()),
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    (dir, store)
}

#[test]
fn alarm_and_session_events_enter_the_log_and_the_outbox_and_survive_a_reopen() {
    let (dir, store) = open();
    assert_eq!(store.next_bed_seq("chair-1").unwrap(), 1);
    store.append(&[Event::Alarm(alarm("chair-1", 1, 1, t(0))), Event::Session(session("chair-1", t(1)))]).unwrap();
    store.append(&[Event::Alarm(alarm("chair-1", 2, 2, t(2)))]).unwrap();
    drop(store);

    let store = Store::open(&dir.path().join("vigil.db")).unwrap();
    assert_eq!(store.next_bed_seq("chair-1").unwrap(), 3);
    assert_eq!(store.next_bed_seq("chair-2").unwrap(), 1);
    let pending = store.pending(100).unwrap();
    assert_eq!(pending.len(), 3);
    assert!(matches!(&pending[0].event, Event::Alarm(a) if a.bed_seq == 1));
    assert!(matches!(&pending[1].event, Event::Session(_)));
    assert_eq!(store.alarm_events("chair-1", t(0), t(10)).unwrap().len(), 2);
    assert_eq!(store.session_events("chair-1", t(0), t(10)).unwrap().len(), 1);
    assert_eq!(store.latest_session("chair-1").unwrap().unwrap().session_id, "s1");

    store.mark_delivered(&[pending[0].id, pending[1].id], t(3)).unwrap();
    let rest = store.pending(100).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, pending[2].id);
    assert_eq!(store.pending_after(pending[2].id, 100).unwrap().len(), 0);
    assert_eq!(store.pending_count().unwrap(), 1);
}

#[test]
fn a_bed_seq_that_repeats_is_refused_and_nothing_of_the_batch_is_written() {
    let (_dir, store) = open();
    store.append(&[Event::Alarm(alarm("chair-1", 1, 1, t(0)))]).unwrap();
    let err = store
        .append(&[Event::Session(session("chair-1", t(1))), Event::Alarm(alarm("chair-1", 1, 2, t(1)))])
        .unwrap_err();
    assert!(matches!(err, StoreError::BedSeq { last: 1, got: 1, .. }), "{err}");
    assert!(store.append(&[Event::Alarm(alarm("chair-1", 0, 2, t(1)))]).is_err(), "going back is a repeat too");
    assert_eq!(store.pending(100).unwrap().len(), 1, "the session of the refused batch was rolled back");
    assert_eq!(store.next_bed_seq("chair-1").unwrap(), 2);
}

#[test]
fn a_bed_seq_gap_after_a_failed_write_is_stored_so_later_alarms_are_not_lost_and_the_gap_shows() {
    let (_dir, store) = open();
    store.append(&[Event::Alarm(alarm("chair-1", 1, 1, t(0)))]).unwrap();
    // bed_seq 2 never reached the store (say the disk was full); the engine has moved on to 3.
    store.append(&[Event::Alarm(alarm("chair-1", 3, 2, t(1)))]).unwrap();
    store.append(&[Event::Alarm(alarm("chair-1", 4, 3, t(2)))]).unwrap();
    let seqs: Vec<u64> = store
        .pending(100)
        .unwrap()
        .into_iter()
        .filter_map(|item| match item.event {
            Event::Alarm(a) => Some(a.bed_seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![1, 3, 4], "the gap at 2 is what tells a consumer an event was lost");
    assert_eq!(store.next_bed_seq("chair-1").unwrap(), 5);
}

#[test]
fn vitals_are_thinned_to_one_row_per_parameter_per_second() {
    let (_dir, store) = open();
    for i in 0..5 {
        let time = t(0) + Duration::milliseconds(i * 300);
        store
            .append(&[Event::Vitals(VitalsUpdate {
                bed: "chair-1".into(),
                time,
                values: vec![
                    VitalValue {
                        parameter: Parameter::Spo2,
                        value: Some(97.0 - i as f64),
                        status: ValueStatus::Valid,
                        time,
                    },
                    VitalValue {
                        parameter: Parameter::NibpSys,
                        value: Some(120.0),
                        status: ValueStatus::Valid,
                        time: t(-30),
                    },
                ],
                other: Vec::new(),
            })])
            .unwrap();
    }
    let rows = store.vitals("chair-1", t(-60), t(10)).unwrap();
    let spo2: Vec<_> = rows.iter().filter(|r| r.1 == Parameter::Spo2).collect();
    let sys: Vec<_> = rows.iter().filter(|r| r.1 == Parameter::NibpSys).collect();
    assert_eq!(spo2.len(), 2, "0.0 to 0.9 s share one second, 1.2 s is the next: {rows:?}");
    assert_eq!(sys.len(), 1, "a repeated NIBP value is stored once");
    assert_eq!((spo2[0].2, spo2[1].2), (Some(94.0), Some(93.0)), "the latest value of each second is kept");
}

#[test]
fn latest_alarm_snapshot_and_device_status_are_kept_per_bed() {
    let (_dir, store) = open();
    let snap = BedAlarms { bed: "chair-1".into(), time: t(5), bed_seq: 1, alarms: vec![alarm("chair-1", 1, 1, t(0))] };
    let dev = vigil::event::DeviceStatus {
        bed: "chair-1".into(),
        source: "chair-1/0".into(),
        kind: "simulated".into(),
        device: "masimo".into(),
        link: LinkState::Connected,
        frames_ok: 10,
        frames_bad: 0,
        values_rejected: 0,
        last_error: None,
        last_frame: Some(t(4)),
        time: t(5),
    };
    store.append(&[Event::Alarms(snap.clone()), Event::Device(dev.clone())]).unwrap();
    assert_eq!(store.latest_alarms("chair-1").unwrap(), Some(snap));
    assert_eq!(store.latest_alarms("chair-2").unwrap(), None);
    assert_eq!(store.latest_devices("chair-1").unwrap(), vec![dev]);
    assert_eq!(store.pending(10).unwrap().len(), 0, "snapshots are not outbox events");
}

#[test]
fn actions_are_recorded_with_their_outcome_including_malformed_requests() {
    let (_dir, store) = open();
    store.record_action(t(0), "alice", "chair-1", &Command::Acknowledge { alarm_id: None }, Ok(())).unwrap();
    store.record_action(t(1), "bob", "chair-1", &Command::SessionEnd, Err("role viewer may not".into())).unwrap();
    store.record_rejected(t(2), "bob", "chair-1", "{not json", "malformed").unwrap();
    let a = store.actions("chair-1", t(0), t(10)).unwrap();
    assert_eq!(a.len(), 3);
    assert!(a[0].ok && a[0].command == Some(Command::Acknowledge { alarm_id: None }));
    assert_eq!(a[1].reason.as_deref(), Some("role viewer may not"));
    assert_eq!(a[2].command, None);
    assert_eq!(a[2].request, "{not json");
}

#[test]
fn pruning_removes_old_rows_but_keeps_the_bed_seq_counter_and_latest_state() {
    let (_dir, store) = open();
    store.append(&[Event::Alarm(alarm("chair-1", 1, 1, t(0))), Event::Session(session("chair-1", t(0)))]).unwrap();
    store.append(&[Event::Alarm(alarm("chair-1", 2, 2, t(100)))]).unwrap();
    let ids: Vec<i64> = store.pending(10).unwrap().iter().map(|i| i.id).collect();
    store.mark_delivered(&ids[..1], t(1)).unwrap();
    store.record_action(t(0), "alice", "chair-1", &Command::SessionEnd, Ok(())).unwrap();
    let stats = store.prune(t(50)).unwrap();
    assert_eq!(stats.events, 2);
    assert_eq!(stats.actions, 1);
    assert_eq!(stats.delivered, 1);
    assert_eq!(stats.undelivered, 1, "the session's outbox row outlived retention undelivered");
    assert_eq!(store.next_bed_seq("chair-1").unwrap(), 3);
    assert!(store.latest_session("chair-1").unwrap().is_some());
    assert_eq!(store.pending(10).unwrap().len(), 1);
}

#[test]
fn a_store_path_that_cannot_be_opened_is_an_error_naming_store_path() {
    let err = Store::open(std::path::Path::new("/nonexistent-dir/vigil.db")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("store.path: cannot open '/nonexistent-dir/vigil.db'"), "{msg}");
}

#[test]
fn a_store_written_by_a_newer_vigil_is_refused_rather_than_misread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.db");
    drop(Store::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }), "{err}");
    assert!(err.to_string().starts_with("store.path: "), "{err}");
}

#[test]
fn the_database_file_is_left_in_wal_mode() {
    let (dir, store) = open();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("vigil.db")).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal", "WAL persists in the file");
}

#[test]
fn a_version_one_file_is_migrated_in_place_and_keeps_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        // A file as version 1 wrote it: the original schema, user_version 1, one undelivered alarm event.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../src/store/schema.sql")).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let ev = Event::Alarm(alarm("chair-1", 1, 1, t(0)));
        conn.execute(
            "INSERT INTO outbox (bed, created_ms, json) VALUES ('chair-1', 0, ?1)",
            [serde_json::to_string(&ev).unwrap()],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.pending_count().unwrap(), 1, "the undelivered event is still pending after the migration");
    let version: i64 =
        rusqlite::Connection::open(&path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, vigil::store::SCHEMA_VERSION);
    const { assert!(vigil::store::SCHEMA_VERSION >= 2) };
    // Opening again is a no-op.
    drop(store);
    assert_eq!(Store::open(&path).unwrap().pending_count().unwrap(), 1);
}

#[test]
fn writes_from_many_threads_are_committed_in_batches_and_none_is_lost() {
    let (_dir, store) = open();
    let threads: Vec<_> = (0..8)
        .map(|b| {
            let store = store.clone();
            std::thread::spawn(move || {
                let bed = format!("chair-{b}");
                for i in 1..=50 {
                    store.append(&[Event::Alarm(alarm(&bed, i, i as u32, t(i as i64)))]).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(store.pending_count().unwrap(), 400);
    for b in 0..8 {
        assert_eq!(store.next_bed_seq(&format!("chair-{b}")).unwrap(), 51);
    }
}

/// A tmpfs of a fixed size, mounted for the test (needs root); `None` with a visible skip otherwise.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            use std::io::Write;
            // Straight to stderr, past libtest's capture, so the skip shows in `cargo test` output.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED a_full_disk_…: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)"
            );
            return None;
        }
        Some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_is_a_visible_store_failure_and_writes_resume_with_nothing_lost_when_space_returns() {
    let Some(disk) = SmallDisk::mount("2m") else { return };
    let store = Store::open(&disk.dir.path().join("vigil.db")).unwrap();
    let health = store.health();
    store.append(&[Event::Alarm(alarm("chair-1", 1, 1, t(0)))]).unwrap();
    assert!(health.borrow().ok);

    // Fill the file system to the last byte.
    let filler = disk.dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let mut byte = [0u8; 1];
        while f.write_all(&byte).is_ok() {
            byte[0] = 1;
        }
        let _ = f.sync_all();
    }
    let mut big = alarm("chair-1", 2, 2, t(1));
    big.message = "x".repeat(256 * 1024);
    let err = store.append(&[Event::Alarm(big.clone())]).unwrap_err();
    assert!(err.to_string().contains("full"), "{err}");
    let failed = health.borrow().clone();
    assert!(!failed.ok, "the failure is visible in the store's health");
    assert!(failed.last_error.unwrap().contains("full"));
    assert_eq!(store.pending_count().unwrap(), 1, "what was stored before is still there");

    // Space returns: the same event is written (nothing lost, no gap), and the store is healthy again.
    std::fs::remove_file(&filler).unwrap();
    store.append(&[Event::Alarm(big)]).unwrap();
    assert!(health.borrow().ok, "healthy again once the disk is");
    assert_eq!(store.pending_count().unwrap(), 2);
    assert_eq!(store.next_bed_seq("chair-1").unwrap(), 3);
}

#[test]
fn a_write_that_meets_another_connections_write_lock_waits_for_it_instead_of_failing_busy() {
    // Two processes on one store (the daemon and a helper, or a tool) take turns at the write lock.
    let (dir, store) = open();
    store.append(&[Event::Alarm(alarm("chair-1", 1, 1, t(0)))]).unwrap();
    let other = rusqlite::Connection::open(dir.path().join("vigil.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; UPDATE bed_counters SET last_bed_seq = last_bed_seq").unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    for seq in 2..=4 {
        store.append(&[Event::Alarm(alarm("chair-1", seq, seq as u32, t(seq as i64)))]).unwrap();
    }
    holder.join().unwrap();
    assert_eq!(store.next_bed_seq("chair-1").unwrap(), 5);
    assert!(store.health().borrow().ok, "waiting for a lock is not a store failure");
}

/// One vitals update of `bed` holding `parameter` = `value`, received at `time`.
fn vital(bed: &str, parameter: Parameter, value: f64, time: Timestamp) -> Event {
    Event::Vitals(VitalsUpdate {
        bed: bed.into(),
        time,
        values: vec![VitalValue { parameter, value: Some(value), status: ValueStatus::Valid, time }],
        other: Vec::new(),
    })
}

fn ms(s: i64, ms: i64) -> Timestamp {
    t(s) + Duration::milliseconds(ms)
}

#[test]
fn vitals_history_and_the_export_are_exact_at_the_range_ends_and_in_time_order_across_second_boundaries() {
    let (_dir, store) = open();
    let (pr, spo2) = (Parameter::Pr, Parameter::Spo2);
    let rows = [
        (pr, 70.0, ms(0, 100)),
        (spo2, 90.0, ms(0, 900)),
        (spo2, 91.0, ms(1, 0)),
        (pr, 71.0, ms(1, 999)),
        (pr, 72.0, ms(2, 0)),
        (spo2, 92.0, ms(2, 500)),
        (spo2, 93.0, ms(3, 0)),
        (pr, 73.0, ms(3, 0)),
    ];
    for bed in ["chair-1", "chair-2"] {
        let offset = if bed == "chair-2" { 1.0 } else { 0.0 };
        store.append(&rows.map(|(p, v, time)| vital(bed, p, v + offset, time))).unwrap();
    }
    store
        .append(&[Event::Alarm(alarm("chair-1", 1, 1, ms(1, 0))), Event::Session(session("chair-1", ms(1, 500)))])
        .unwrap();
    let got = |from, to| -> Vec<(Timestamp, Parameter, f64)> {
        store.vitals("chair-1", from, to).unwrap().into_iter().map(|(t, p, v, _)| (t, p, v.unwrap())).collect()
    };
    // From is inclusive, to exclusive; within a second by time (spo2 at 1.000 before pr at 1.999), at an equal
    // time by parameter.
    assert_eq!(
        got(ms(0, 900), ms(2, 0)),
        vec![(ms(0, 900), spo2, 90.0), (ms(1, 0), spo2, 91.0), (ms(1, 999), pr, 71.0)]
    );
    assert_eq!(got(ms(0, 901), ms(1, 999)), vec![(ms(1, 0), spo2, 91.0)]);
    assert_eq!(got(ms(2, 0), ms(2, 0)), vec![]);
    let all = got(t(-10), t(10));
    let mut expected: Vec<_> = rows.iter().map(|&(p, v, time)| (time, p, v)).collect();
    expected.sort_by(|a, b| (a.0, a.1.name()).cmp(&(b.0, b.1.name())));
    assert_eq!(all, expected, "the other bed's rows stay out");
    assert_eq!(all[6..], [(ms(3, 0), pr, 73.0), (ms(3, 0), spo2, 93.0)]);

    let mut export = Vec::new();
    store
        .for_each_record("chair-1", ms(0, 900), ms(2, 0), true, |r| {
            export.push(match r {
                vigil::store::HistoryRecord::Vital(v) => (v.time, v.parameter.name().to_string()),
                other => (other.time(), format!("kind {}", other.rank())),
            });
            true
        })
        .unwrap();
    assert_eq!(
        export,
        vec![
            (ms(0, 900), "spo2".to_string()),
            (ms(1, 0), "spo2".to_string()),
            (ms(1, 0), "kind 1".to_string()),
            (ms(1, 500), "kind 2".to_string()),
            (ms(1, 999), "pr".to_string()),
        ],
        "vitals before an alarm at the same time; the range ends as for the history"
    );
}

#[test]
fn the_prune_deletes_exactly_the_old_vitals_of_every_bed_including_one_that_no_longer_writes() {
    let (_dir, store) = open();
    for bed in ["chair-1", "chair-2"] {
        store
            .append(&[
                vital(bed, Parameter::Spo2, 90.0, t(49)),
                vital(bed, Parameter::Spo2, 91.0, ms(50, 499)),
                vital(bed, Parameter::Pr, 70.0, ms(50, 500)),
                vital(bed, Parameter::Spo2, 92.0, t(51)),
            ])
            .unwrap();
    }
    // A bed taken out of the configuration: only old rows, nothing new will come.
    store.append(&[vital("gone", Parameter::Spo2, 95.0, t(-100)), vital("gone", Parameter::Pr, 60.0, t(49))]).unwrap();
    let stats = store.prune(ms(50, 500)).unwrap();
    assert_eq!(stats.vitals, 6, "two rows of each of the three beds");
    for bed in ["chair-1", "chair-2"] {
        let left: Vec<_> = store.vitals(bed, t(-1000), t(1000)).unwrap().into_iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(left, vec![(ms(50, 500), Parameter::Pr), (t(51), Parameter::Spo2)], "{bed}");
    }
    assert_eq!(store.vitals("gone", t(-1000), t(1000)).unwrap(), vec![]);
    assert_eq!(store.prune(ms(50, 500)).unwrap().vitals, 0, "a second prune finds nothing");
}
