//! Throughput harness for the store's writer thread: how many beds' vitals history it keeps up with. `--beds N`
//! beds each queue one vitals update a second (SpO2, pulse and a perfusion index, like a Masimo frame) through
//! [`vigil::store::Store::append_background`], as the bed tasks do, for `--seconds S` seconds of simulated time
//! sent as fast as the writer takes them; meanwhile an alarm event is appended and awaited every 100 updates,
//! as a bed would. Reports updates and rows per second of wall time, how many
//! background writes were shed, and the alarm write's latency. Method and recorded figures: `docs/performance.md`.
//!
//! ```text
//! cargo run --release --example store-throughput -- --beds 5000 --seconds 20
//! ```

use std::time::Instant;

use chrono::Utc;
use vigil::event::{Event, VitalValue, VitalsUpdate};
use vigil::vitals::{Parameter, ValueStatus};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)) {
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name} wants a number, got {v:?}");
            std::process::exit(2)
        }),
        None => default,
    }
}

fn alarm(bed: &str, bed_seq: u64, time: chrono::DateTime<Utc>) -> Event {
    use vigil::event::{AlarmEvent, AlarmKind, AlarmPhase, AlarmSource, AlarmState, Priority};
    Event::Alarm(AlarmEvent {
        time,
        bed: bed.into(),
        alarm_id: format!("{bed}-a{bed_seq}"),
        seq: 1,
        bed_seq,
        kind: AlarmKind::Threshold,
        source: AlarmSource::Vigil,
        condition: "spo2_low".into(),
        parameter: Some(Parameter::Spo2),
        priority: Priority::High,
        phase: AlarmPhase::Start,
        state: AlarmState::Active,
        value: Some(85.0),
        limit: Some(88.0),
        evidence: serde_json::Map::new(),
        message: "SpO2 85 < 88".into(),
        by: None,
        audio_paused_until: None,
        test: false,
    })
}

fn main() {
    let beds = arg("--beds", 5000) as usize;
    let seconds = arg("--seconds", 20) as i64;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = vigil::store::Store::open(&dir.path().join("vigil.db")).expect("the store");
    let ids: Vec<String> = (0..beds).map(|i| format!("chair-{i}")).collect();
    let start = Utc::now() - chrono::Duration::seconds(seconds);
    let t0 = Instant::now();
    let mut alarm_ms = Vec::new();
    let mut bed_seq = 0;
    let mut sent = 0u64;
    for s in 0..seconds {
        let time = start + chrono::Duration::seconds(s);
        for (i, bed) in ids.iter().enumerate() {
            let v = |parameter, x| VitalValue { parameter, value: Some(x), status: ValueStatus::Valid, time };
            let values = vec![v(Parameter::Spo2, 97.0), v(Parameter::Pr, 71.0), v(Parameter::Pi, 2.5)];
            store.append_background(vec![Event::Vitals(VitalsUpdate {
                bed: bed.as_str().into(),
                time,
                values,
                other: Vec::new(),
            })]);
            sent += 1;
            if i % 100 == 0 {
                bed_seq += 1;
                let t = Instant::now();
                store.append(&[alarm("alarm-bed", bed_seq, time)]).expect("the alarm is stored");
                alarm_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    store.flush().expect("flush");
    let wall = t0.elapsed().as_secs_f64();
    let dropped = store.health().borrow().background_dropped;
    alarm_ms.sort_by(f64::total_cmp);
    let pct = |q: f64| alarm_ms[((alarm_ms.len() - 1) as f64 * q) as usize];
    let stored = sent - dropped;
    println!(
        "{beds} beds x {seconds} s: {sent} updates ({} rows) in {wall:.1} s wall, {:.0} updates/s; shed {dropped}; \
         alarm write p50 / p99 / max {:.1} / {:.1} / {:.1} ms ({} alarms)",
        stored * 3,
        sent as f64 / wall,
        pct(0.5),
        pct(0.99),
        alarm_ms.last().copied().unwrap_or(f64::NAN),
        alarm_ms.len()
    );
}
