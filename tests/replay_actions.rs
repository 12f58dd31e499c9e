//! `vigil replay` with the nurse's actions and the fifth `status` column (issue 10, "Replay with the nurse's
//! actions"), the streaming reader's time-order rule, and old 4-column files giving the output they gave before
//! the reader was rewritten.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vigil::replay::{run, ReplayArgs, REORDER_WINDOW_S};

/// A 5-column recording under construction: `timestamp,bed,parameter,value,status`, written in time order
/// (rows of the same second in the order they were added).
#[derive(Default)]
struct Recording(Vec<(u32, String)>);

impl Recording {
    fn row(&mut self, t: u32, bed: &str, parameter: &str, value: impl std::fmt::Display, status: &str) -> &mut Self {
        self.0.push((t, format!("{t},{bed},{parameter},{value},{status}\n")));
        self
    }
    fn event(&mut self, t: u32, bed: &str, what: &str) -> &mut Self {
        self.row(t, bed, "event", what, "")
    }
    /// One second of calm continuous values on a bed, unless `spo2`/`pr` are given.
    fn second(&mut self, t: u32, bed: &str, spo2: f64, pr: f64, status: &str) -> &mut Self {
        self.row(t, bed, "spo2", spo2, status).row(t, bed, "pr", pr, status).row(t, bed, "hr", pr, status)
    }
    fn text(&self) -> String {
        let mut rows: Vec<&(u32, String)> = self.0.iter().collect();
        rows.sort_by_key(|r| r.0);
        let mut text = String::from("timestamp,bed,parameter,value,status\n");
        rows.into_iter().for_each(|r| text.push_str(&r.1));
        text
    }
    fn replay(&self) -> Output {
        replay_text(&self.text())
    }
}

/// A replay's lines: alarm events, refused-action lines, the summary.
struct Output {
    events: Vec<Value>,
    refused: Vec<Value>,
    summary: Value,
}

impl Output {
    fn starts(&self) -> Vec<(f64, &str, &str)> {
        self.events
            .iter()
            .filter(|e| e["phase"] == "start")
            .map(|e| (e["offset_s"].as_f64().unwrap(), e["condition"].as_str().unwrap(), e["kind"].as_str().unwrap()))
            .collect()
    }
    /// (offset, state) of every event of the alarms of this condition on this bed.
    fn states(&self, bed: &str, condition: &str) -> Vec<(f64, String)> {
        self.events
            .iter()
            .filter(|e| e["bed"] == bed && e["condition"] == condition)
            .map(|e| (e["offset_s"].as_f64().unwrap(), e["state"].as_str().unwrap().to_owned()))
            .collect()
    }
}

fn parse(out: Vec<u8>) -> Output {
    let lines: Vec<Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut o = Output { events: Vec::new(), refused: Vec::new(), summary: Value::Null };
    for l in lines {
        if l.get("alarm_id").is_some() {
            o.events.push(l);
        } else if let Some(r) = l.get("refused") {
            o.refused.push(r.clone());
        } else if let Some(s) = l.get("summary") {
            o.summary = s.clone();
        }
    }
    o
}

fn replay_text(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recording.csv");
    std::fs::write(&path, text).unwrap();
    let mut out = Vec::new();
    run(&ReplayArgs::new(&path), &mut out).unwrap();
    parse(out)
}

/// Calm on `bed` over [from, to), with SpO2 85 and PR 150 over `bad` (valid unless `status` says otherwise).
fn episode(r: &mut Recording, bed: &str, from: u32, to: u32, bad: std::ops::Range<u32>, status: &str) {
    for t in from..to {
        if bad.contains(&t) {
            r.second(t, bed, 85.0, 150.0, status);
        } else {
            r.second(t, bed, 97.0, 76.0, "");
        }
    }
}

#[test]
fn a_questionable_value_does_not_alarm_where_the_same_value_valid_does() {
    let mut valid = Recording::default();
    episode(&mut valid, "chair-1", 0, 200, 60..120, "valid");
    let mut questionable = Recording::default();
    episode(&mut questionable, "chair-1", 0, 200, 60..120, "questionable");
    let valid = valid.replay();
    let questionable = questionable.replay();
    // SpO2 85 and HR/PR 150 for a minute, measured valid: threshold alarms (HR and PR are one heart-rate alarm).
    let rate = |s: &(f64, &str, &str)| s.2 == "threshold" && (s.1.starts_with("pr") || s.1.starts_with("hr"));
    assert!(valid.starts().iter().any(|s| s.2 == "threshold" && s.1.starts_with("spo2")), "{:?}", valid.starts());
    assert!(valid.starts().iter().any(rate), "{:?}", valid.starts());
    // The same values flagged questionable by the device: no heart-rate threshold alarm, and no high SpO2 alarm
    // (a poor-signal SpO2 condition, if the engine raises one, is not the plain valid-value alarm).
    let q = questionable.starts();
    assert!(!q.iter().any(rate), "{q:?}");
    assert!(!q.iter().any(|s| s.1 == "spo2_low"), "{q:?}");
}

#[test]
fn a_five_column_file_with_empty_status_gives_the_same_events_as_the_four_column_file() {
    let four = std::fs::read_to_string("tests/fixtures/replay/nibp_climb_session.csv").unwrap();
    let five: String = four
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 0 { format!("{l},status\n") } else { format!("{l},\n") })
        .collect();
    let (a, b) = (replay_text(&four), replay_text(&five));
    assert!(!a.events.is_empty());
    assert_eq!(a.events, b.events);
}

#[test]
fn a_zero_with_a_valid_status_is_a_measured_value_and_without_status_is_no_value() {
    // Without a status 0 is "no value" (the monitor-export convention) and counts towards no-data; the summary
    // counts an empty value as missing, not a 0.
    let mut r = Recording::default();
    for t in 0..60 {
        r.second(t, "chair-1", if t >= 20 { 0.0 } else { 97.0 }, 76.0, "");
    }
    r.row(60, "chair-1", "spo2", "", "");
    let o = r.replay();
    assert!(o.starts().iter().any(|s| s.1 == "spo2_no_data"), "{:?}", o.starts());
    assert_eq!(o.summary["missing_values"], 1);
}

#[test]
fn an_acknowledge_row_acknowledges_every_sounding_alarm_of_its_bed_and_only_that_bed() {
    let mut r = Recording::default();
    for t in 0..200 {
        for bed in ["chair-1", "chair-2"] {
            let bad = (60..150).contains(&t);
            r.second(t, bed, if bad { 85.0 } else { 97.0 }, if bad { 150.0 } else { 76.0 }, "");
        }
        if t == 100 {
            r.event(t, "chair-1", "acknowledge");
        }
    }
    let o = r.replay();
    let live_at_100: Vec<&Value> = o
        .events
        .iter()
        .filter(|e| e["bed"] == "chair-1" && e["offset_s"].as_f64().unwrap() <= 100.0)
        .filter(|e| e["phase"] == "start")
        .collect();
    assert!(live_at_100.len() >= 2, "two alarms sound on chair-1 before the acknowledge: {live_at_100:?}");
    for a in &live_at_100 {
        let id = &a["alarm_id"];
        assert!(
            o.events.iter().any(|e| &e["alarm_id"] == id && e["offset_s"] == 100.0 && e["state"] == "acknowledged"),
            "{} not acknowledged at 100 s",
            a["condition"]
        );
    }
    // chair-2 was not acknowledged.
    assert!(!o.events.iter().any(|e| e["bed"] == "chair-2" && e["state"] == "acknowledged"));
    assert!(o.refused.is_empty(), "{:?}", o.refused);
    assert_eq!(o.summary["actions"], 1);
}

#[test]
fn acknowledge_with_a_condition_acknowledges_only_that_condition() {
    let mut r = Recording::default();
    episode(&mut r, "chair-1", 0, 200, 60..150, "");
    r.event(100, "chair-1", "acknowledge:spo2_low");
    let o = r.replay();
    let spo2 = o.states("chair-1", "spo2_low");
    assert!(spo2.contains(&(100.0, "acknowledged".into())), "{spo2:?}");
    let others: Vec<&Value> =
        o.events.iter().filter(|e| e["condition"] != "spo2_low" && e["kind"] == "threshold").collect();
    assert!(!others.is_empty(), "the pulse-rate alarm sounds too");
    assert!(others.iter().all(|e| e["state"] != "acknowledged"), "{others:?}");
}

#[test]
fn a_refused_action_is_reported_as_a_line_naming_the_csv_line_and_the_replay_goes_on() {
    let mut r = Recording::default();
    episode(&mut r, "chair-1", 0, 120, 0..0, "");
    r.event(50, "chair-1", "acknowledge");
    r.event(60, "chair-1", "acknowledge:spo2_low");
    let text = r.text();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let o = r.replay();
    assert_eq!(o.refused.len(), 2, "{:?}", o.refused);
    assert_eq!(o.refused[0]["line"], line_of(",event,acknowledge,"));
    assert_eq!(o.refused[0]["reason"], "nothing to acknowledge");
    assert_eq!(o.refused[0]["offset_s"], 50.0);
    assert_eq!(o.refused[1]["line"], line_of("acknowledge:spo2_low"));
    assert!(o.refused[1]["reason"].as_str().unwrap().contains("spo2_low"), "{:?}", o.refused[1]);
    assert_eq!((o.summary["actions"].as_u64(), o.summary["refused_actions"].as_u64()), (Some(2), Some(2)));
}

#[test]
fn pause_audio_pauses_for_the_profile_maximum_or_the_seconds_given() {
    for (action, resumes_at) in [("pause_audio", 100.0 + 120.0), ("pause_audio:30", 130.0)] {
        let mut r = Recording::default();
        episode(&mut r, "chair-1", 0, 400, 60..350, "");
        r.event(100, "chair-1", action);
        let o = r.replay();
        let s = o.states("chair-1", "spo2_low");
        assert!(s.contains(&(100.0, "audio-paused".into())), "{action}: {s:?}");
        assert!(s.contains(&(resumes_at, "active".into())), "{action}: {s:?}");
    }
}

/// Ten minutes of pre-infusion with NIBP 128/80, 130/82, 131/81 (median baseline 130/81), the infusion from
/// 620 s, and NIBP 160/95 at 900 s: +30 over the median, under the +40 rise rule.
fn rise_session(baseline_row: Option<&str>) -> Recording {
    let mut r = Recording::default();
    r.event(0, "chair-1", "session_start");
    for t in 0..960 {
        r.second(t, "chair-1", 97.0, 76.0, "");
        r.row(t, "chair-1", "rr", 14, "");
        for (at, s, d) in [(60, 128, 80), (360, 130, 82), (600, 131, 81), (900, 160, 95)] {
            if t == at {
                r.row(t, "chair-1", "nibp_sys", s, "").row(t, "chair-1", "nibp_dia", d, "");
                r.row(t, "chair-1", "nibp_mean", (s + 2 * d) / 3, "");
            }
        }
        if t == 620 {
            r.event(t, "chair-1", "infusion_start");
            if let Some(b) = baseline_row {
                r.event(t, "chair-1", b);
            }
        }
    }
    r
}

#[test]
fn a_baseline_row_changes_the_rise_alarm() {
    let without = rise_session(None).replay();
    assert!(!without.starts().iter().any(|s| s.1 == "nibp_sys_rise"), "{:?}", without.starts());
    // The nurse enters 115/75 as the baseline: 160 is then +45, over the +40 rule.
    let with = rise_session(Some("baseline:115/75")).replay();
    assert!(with.starts().contains(&(900.0, "nibp_sys_rise", "trend")), "{:?}", with.starts());
    let e = with.events.iter().find(|e| e["condition"] == "nibp_sys_rise").unwrap();
    assert_eq!(e["evidence"]["baseline"].as_f64(), Some(115.0), "{e}");
    assert!(with.refused.is_empty(), "{:?}", with.refused);
}

#[test]
fn an_implausible_baseline_row_is_refused_not_fatal() {
    let o = rise_session(Some("baseline:80/120")).replay();
    assert_eq!(o.refused.len(), 1, "{:?}", o.refused);
    assert!(o.refused[0]["reason"].as_str().unwrap().contains("not plausible"), "{:?}", o.refused[0]);
}

#[test]
fn input_out_of_order_beyond_the_window_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unsorted.csv");
    let mut text = String::from("timestamp,bed,parameter,value\n");
    for t in 0..30 {
        writeln!(text, "{t},chair-1,spo2,97").unwrap();
    }
    // Line 32: 29 s, then line 33 goes back 20 s.
    writeln!(text, "9,chair-1,pr,76").unwrap();
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil")).args(["replay", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsorted.csv:32:") && err.contains("out of time order"), "{err}");
    assert!(err.contains("line 31") && err.contains(&format!("within {REORDER_WINDOW_S} s")), "{err}");
}

#[test]
fn rows_out_of_order_within_the_window_replay_as_if_sorted() {
    let mut sorted = String::from("timestamp,bed,parameter,value\n");
    let mut shuffled = sorted.clone();
    let mut rows = Vec::new();
    for t in 0..300u32 {
        let spo2 = if (100..160).contains(&t) { 84 } else { 97 };
        rows.push((t, format!("{t},chair-1,spo2,{spo2}\n")));
        rows.push((t, format!("{t},chair-1,pr,76\n")));
    }
    for (_, l) in &rows {
        sorted.push_str(l);
    }
    // Swap blocks of rows up to 4 s apart (same-time rows keep their order).
    for chunk in rows.chunks(10) {
        let mut c: Vec<_> = chunk.to_vec();
        c.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
        for (_, l) in c {
            shuffled.push_str(&l);
        }
    }
    let (a, b) = (replay_text(&sorted), replay_text(&shuffled));
    assert!(!a.events.is_empty());
    assert_eq!(a.events, b.events);
}

/// The output of `file` as JSON values, with the summary's `file` field (a path) dropped.
fn output_of(file: &Path, compare: Option<&str>) -> Vec<Value> {
    let mut args = ReplayArgs::new(file);
    args.compare = compare.map(Into::into);
    let mut out = Vec::new();
    run(&args, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if let Some(s) = v.get_mut("summary").and_then(Value::as_object_mut) {
                s.remove("file");
            }
            v
        })
        .collect()
}

/// Old 4-column recordings give, line for line, what the loading reader (before streaming) printed for them.
/// The expected files were written by the previous `vigil replay` (commit a5a965e). When the alarm engine itself
/// changes what it raises, rewrite them with `VIGIL_BLESS=1 cargo test --test replay_actions` and review the diff.
#[test]
fn old_four_column_files_give_the_same_output_as_before() {
    for (csv, compare, expected) in [
        ("nibp_climb_session.csv", Some("ketamine-chair-strict"), "nibp_climb_session.expected.jsonl"),
        ("three_beds.csv", Some("ketamine-chair-strict"), "three_beds.expected.jsonl"),
    ] {
        let dir = Path::new("tests/fixtures/replay");
        let got = output_of(&dir.join(csv), compare);
        let expected_path = dir.join(expected);
        if std::env::var_os("VIGIL_BLESS").is_some() {
            let text: String = got.iter().map(|v| format!("{v}\n")).collect();
            std::fs::write(&expected_path, text).unwrap();
            continue;
        }
        let want: Vec<Value> = std::fs::read_to_string(&expected_path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                if let Some(s) = v.get_mut("summary").and_then(Value::as_object_mut) {
                    s.remove("file");
                }
                v
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{csv}: line count");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{csv}: output line {} differs", k + 1);
        }
    }
}

/// The example in `docs/replay.md` is the fixture `tests/fixtures/replay/nurse_actions.csv`, and replays as the
/// document says.
#[test]
fn the_docs_example_is_the_fixture_and_replays_as_documented() {
    let doc = std::fs::read_to_string("docs/replay.md").unwrap();
    let block = doc.split("```csv\n").nth(1).expect("a ```csv block in docs/replay.md").split("```").next().unwrap();
    let fixture = std::fs::read_to_string("tests/fixtures/replay/nurse_actions.csv").unwrap();
    assert_eq!(block, fixture, "docs/replay.md's example and the fixture differ");
    let o = parse({
        let mut out = Vec::new();
        run(&ReplayArgs::new("tests/fixtures/replay/nurse_actions.csv"), &mut out).unwrap();
        out
    });
    let spo2 = o.states("chair-1", "spo2_low");
    // As docs/replay.md says: the questionable 84s raise no spo2_low, the valid 85s do ...
    assert_eq!(o.starts().iter().filter(|s| s.1 == "spo2_low").count(), 1, "{:?}", o.starts());
    let start = o.events.iter().find(|e| e["condition"] == "spo2_low").unwrap();
    assert!(start["offset_s"].as_f64().unwrap() >= 20.0, "{start}");
    // ... the pause, the acknowledge ...
    assert!(spo2.contains(&(26.0, "audio-paused".into())), "{spo2:?}");
    assert!(spo2.contains(&(28.0, "acknowledged".into())), "{spo2:?}");
    // ... and the second acknowledge is refused, as a line naming the CSV line.
    assert_eq!(o.refused.len(), 1, "{:?}", o.refused);
    let line = fixture.lines().position(|l| l.starts_with("30,chair-1,event,acknowledge:spo2_low")).unwrap() + 1;
    assert_eq!(o.refused[0]["line"], line);
    assert!(o.refused[0]["reason"].as_str().unwrap().contains("already acknowledged"), "{:?}", o.refused[0]);
}
