//! Alarm engine throughput (targets per core: 5 M threshold-only observations/s, 1 M full observations/s with
//! trend detectors). Steady in-range data is the common case a bed sees all day; a second stream moves through
//! limits so alarm events are built and returned too.

use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil::alarm::{Engine, Profile};
use vigil::vitals::{Parameter, Reading, ValueStatus};

/// One simulated minute after another: HR, PR, SpO2, RR every second; NIBP every 5 minutes.
fn stream(seconds: usize, excursions: bool) -> Vec<Reading> {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap();
    let mut out = Vec::new();
    let mut seed = 7u64;
    let mut noise = |a: f64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) * a
    };
    for s in 0..seconds {
        // With excursions: every 10 minutes, 40 s of tachycardia and a desaturation.
        let bad = excursions && s % 600 < 40;
        let hr = if bad { 135.0 } else { 75.0 } + noise(4.0);
        let spo2 = if bad { 86.0 } else { 97.0 } + noise(1.0).round();
        let mut push = |p: Parameter, v: f64| {
            out.push(Reading {
                bed: "chair-1".into(),
                parameter: p,
                value: Some(v),
                status: ValueStatus::Valid,
                device_time: None,
                received: t0 + TimeDelta::seconds(s as i64),
                measured: None,
                spot: false,
                source: None,
            })
        };
        push(Parameter::Hr, hr);
        push(Parameter::Pr, hr + noise(2.0));
        push(Parameter::Spo2, spo2.min(100.0));
        push(Parameter::Rr, 14.0 + noise(2.0));
        if s % 300 == 0 {
            push(Parameter::NibpSys, 125.0 + noise(8.0));
            push(Parameter::NibpDia, 78.0 + noise(5.0));
            push(Parameter::NibpMean, 94.0 + noise(5.0));
        }
    }
    out
}

fn threshold_only() -> Profile {
    let mut p = Profile::ketamine_chair();
    p.trend.rise.enabled = false;
    p.trend.nibp_slope.enabled = false;
    p.trend.spo2_slope.enabled = false;
    p.trend.hr_drift.enabled = false;
    p
}

/// Feeds the stream over and over with a clock that never goes back; `tick` once per simulated second if asked.
fn bench_stream(c: &mut Criterion, name: &str, profile: Profile, readings: &[Reading], ticks: bool) {
    let mut group = c.benchmark_group("alarm");
    group.throughput(Throughput::Elements(readings.len() as u64));
    let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap();
    let span = readings.last().map_or(0, |r| (r.received - t0).num_seconds() + 1);
    group.bench_function(name, |b| {
        let mut engine = Engine::new("chair-1".into(), Arc::new(profile.clone()), 1);
        let mut lap = 0i64;
        let mut events = 0usize;
        b.iter(|| {
            let base = TimeDelta::seconds(lap * span);
            let mut last_second = -1;
            for r in readings {
                let now = r.received + base;
                if ticks {
                    let s = (r.received - t0).num_seconds();
                    if s != last_second {
                        last_second = s;
                        events += engine.tick(now).len();
                    }
                }
                events += engine.observe(black_box(r), now).len();
            }
            lap += 1;
            black_box(events)
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let steady = stream(3600, false);
    let eventful = stream(3600, true);
    bench_stream(c, "threshold_only_observe_steady", threshold_only(), &steady, false);
    bench_stream(c, "full_observe_steady", Profile::ketamine_chair(), &steady, false);
    bench_stream(c, "full_observe_with_excursions", Profile::ketamine_chair(), &eventful, false);
    bench_stream(c, "full_observe_and_tick_with_excursions", Profile::ketamine_chair(), &eventful, true);
}

criterion_group!(alarm, benches);
criterion_main!(alarm);
