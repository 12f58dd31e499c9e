//! Each bundled scenario produces the event it promises, at the time the demo relies on.

mod common;

use common::{nibp, opts, samples, ticks};
use vigil_sim::{Device, MarkerKind, SensorState};

const SEEDS: std::ops::Range<u64> = 1..21;

#[test]
fn every_bundled_scenario_parses_and_has_a_one_line_description() {
    let listed = vigil_sim::scenario_descriptions().unwrap();
    assert_eq!(listed.len(), vigil_sim::scenario_names().len());
    for (name, description) in listed {
        assert!(!description.is_empty() && !description.contains('\n'), "{name}");
    }
}

#[test]
fn every_scenario_file_on_disk_is_bundled() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".toml").to_owned())
        .collect();
    on_disk.sort();
    let mut bundled: Vec<String> = vigil_sim::scenario_names().into_iter().map(String::from).collect();
    bundled.sort();
    assert_eq!(on_disk, bundled);
    for required in [
        "calm-session",
        "hypertensive-surge",
        "desaturation",
        "probe-off-and-artefacts",
        "monitor-disconnect",
        "ward-of-six",
        "stress",
    ] {
        assert!(bundled.iter().any(|b| b == required), "{required} missing");
    }
}

#[test]
fn desaturation_falls_below_88_within_two_minutes_and_recovers() {
    for seed in SEEDS {
        let s = samples("desaturation", seed);
        let first_low = s.iter().find(|x| x.shown.spo2.is_some_and(|v| v < 88)).expect("a reading below 88");
        assert!((60..=120).contains(&first_low.offset_s), "seed {seed}: first < 88 at {} s", first_low.offset_s);
        let recovered = s[first_low.offset_s as usize..].iter().find(|x| x.shown.spo2.is_some_and(|v| v >= 94));
        let recovered = recovered.expect("recovery to 94 %");
        assert!(recovered.offset_s < 300, "seed {seed}: recovered only at {} s", recovered.offset_s);
        // And it stays recovered until the next scripted dip at 900 s.
        assert!(s[recovered.offset_s as usize + 10..880].iter().all(|x| x.shown.spo2.is_some_and(|v| v >= 92)));
    }
}

#[test]
fn desaturation_pulse_rises_a_little_while_spo2_falls() {
    let s = samples("desaturation", 3);
    let before: f64 = s[20..55].iter().map(|x| x.truth.pulse).sum::<f64>() / 35.0;
    let during: f64 = s[100..120].iter().map(|x| x.truth.pulse).sum::<f64>() / 20.0;
    assert!(during > before + 3.0, "before {before:.1}, during {during:.1}");
}

#[test]
fn hypertensive_surge_rises_40_over_its_baseline_within_five_minutes_and_shows_185_112() {
    for seed in SEEDS {
        let readings = nibp(&samples("hypertensive-surge", seed));
        let (t0, base_sys, base_dia) = readings[0];
        assert!(t0 < 40, "seed {seed}: the baseline reading must come before the infusion starts");
        let early: Vec<_> = readings.iter().filter(|(t, _, _)| *t < 300).collect();
        assert!(early.len() >= 4, "seed {seed}: {readings:?}");
        let peak = early.iter().map(|r| r.1).max().unwrap();
        assert!(peak >= base_sys + 40, "seed {seed}: baseline {base_sys}, early peak {peak}");
        assert!(early.iter().any(|r| r.1 == 185 && r.2 == 112), "seed {seed}: {early:?}");
        // The rise is monotone over the compressed cycles, as a pressor response is.
        assert!(early.windows(2).all(|w| w[1].1 + 8 >= w[0].1), "seed {seed}: {early:?}");
        assert!(base_dia < 100);
    }
}

#[test]
fn monitor_disconnect_goes_silent_and_comes_back_within_two_minutes() {
    let t = ticks(&opts("monitor-disconnect", Device::Masimo, 5));
    let markers: Vec<(u32, MarkerKind)> =
        t.iter().flat_map(|x| x.sample.markers.iter().map(move |m| (x.sample.offset_s, *m))).collect();
    assert!(markers.contains(&(60, MarkerKind::Disconnected)), "{markers:?}");
    assert!(markers.contains(&(105, MarkerKind::Reconnected)), "{markers:?}");
    assert!(t[..60].iter().all(|x| !x.bytes.is_empty()));
    assert!(t[60..105].iter().all(|x| x.bytes.is_empty() && !x.sample.connected));
    assert!(t[105..].iter().take(30).all(|x| !x.bytes.is_empty()));
    // Line noise on reconnection, then clean lines.
    assert!(t[105].sample.garbage > 0);
    assert!(t[106].bytes.starts_with(b"01/01/26 "));
}

#[test]
fn probe_off_shows_dashes_and_artefacts_show_flagged_false_values_within_two_minutes() {
    let s = samples("probe-off-and-artefacts", 4);
    let off: Vec<_> = s.iter().filter(|x| matches!(x.sensor, SensorState::ProbeOff { .. })).collect();
    assert_eq!(off.first().map(|x| x.offset_s), Some(45));
    assert!(off.iter().all(|x| x.shown.spo2.is_none() && x.shown.pulse.is_none()));
    // After the probe goes back on the device searches for a pulse before showing values again.
    assert_eq!(s[85].sensor, SensorState::PulseSearch);
    let art: Vec<_> = s[110..135].iter().collect();
    assert!(art.iter().all(|x| x.sensor == SensorState::Artefact));
    let false_values = art
        .iter()
        .filter(|x| {
            let dspo2 = (f64::from(x.shown.spo2.unwrap()) - x.truth.spo2).abs();
            let dpulse = (f64::from(x.shown.pulse.unwrap()) - x.truth.pulse).abs();
            dspo2 > 3.0 || dpulse > 10.0
        })
        .count();
    assert!(false_values > 15, "only {false_values} of 25 artefact seconds were false");
}

#[test]
fn calm_session_stays_within_normal_limits_for_90_minutes() {
    for seed in 1..41 {
        let s = samples("calm-session", seed);
        assert!(s.len() >= 5400);
        for x in &s {
            let spo2 = x.shown.spo2.unwrap();
            let pulse = x.shown.pulse.unwrap();
            assert!(spo2 >= 94, "seed {seed} at {} s: SpO2 {spo2}", x.offset_s);
            assert!((55..=100).contains(&pulse), "seed {seed} at {} s: pulse {pulse}", x.offset_s);
        }
        let readings = nibp(&s);
        assert!(readings.len() >= 10, "seed {seed}: {} NIBP readings", readings.len());
        for (t, sys, dia) in readings {
            assert!((100..=150).contains(&sys), "seed {seed} at {t} s: {sys}/{dia}");
        }
    }
}

#[test]
fn nibp_cycles_every_five_minutes_during_and_fifteen_after_the_infusion() {
    let s = samples("calm-session", 9);
    let starts: Vec<u32> = s.iter().filter_map(|x| x.nibp.map(|n| n.started_offset_s)).collect();
    // Two baseline readings, infusion 300–2700 s every 300 s, observation from 2700 s every 900 s.
    let expected: Vec<u32> =
        [30, 240].into_iter().chain((600..2700).step_by(300)).chain((2700..5400).step_by(900)).collect();
    assert_eq!(starts, expected);
    // Each cycle takes about 30 s and reports its start time.
    for x in s.iter().filter(|x| x.nibp.is_some()) {
        let took = x.offset_s - x.nibp.unwrap().started_offset_s;
        assert!((27..=33).contains(&took), "{took}");
    }
}

#[test]
fn session_markers_come_in_order() {
    for name in vigil_sim::scenario_names() {
        let s = samples(name, 1);
        let kinds: Vec<MarkerKind> = s
            .iter()
            .flat_map(|x| x.markers.iter().copied())
            .filter(|k| !matches!(k, MarkerKind::Disconnected | MarkerKind::Reconnected))
            .collect();
        assert_eq!(
            kinds,
            [MarkerKind::SessionStart, MarkerKind::InfusionStart, MarkerKind::InfusionStop, MarkerKind::SessionEnd],
            "{name}"
        );
    }
}

#[test]
fn ward_of_six_scripts_six_different_patients() {
    let o = |patient| vigil_sim::FeedOptions { patient, ..opts("ward-of-six", Device::Hl7, 1) };
    let runs: Vec<Vec<vigil_sim::Sample>> = (0..6).map(|p| vigil_sim::timeline(&o(p)).unwrap().collect()).collect();
    let min_spo2 = |r: &[vigil_sim::Sample]| r.iter().filter_map(|x| x.shown.spo2).min().unwrap();
    let max_pulse = |r: &[vigil_sim::Sample]| r.iter().filter_map(|x| x.shown.pulse).max().unwrap();
    let min_pulse = |r: &[vigil_sim::Sample]| r.iter().filter_map(|x| x.shown.pulse).min().unwrap();
    let max_sys = |r: &[vigil_sim::Sample]| nibp(r).iter().map(|x| x.1).max().unwrap();
    assert!(max_sys(&runs[1]) >= nibp(&runs[1])[0].1 + 40, "bed 2 is a tail responder");
    assert!(min_pulse(&runs[2]) < 48, "bed 3 bradycardia");
    assert!(max_pulse(&runs[3]) > 125, "bed 4 tachycardia");
    assert!(runs[3].iter().any(|x| x.nibp.is_some_and(|n| n.values.is_none())), "bed 4 cuff failure");
    assert!(min_spo2(&runs[4]) < 88, "bed 5 respiratory depression");
    assert!(runs[4].iter().any(|x| x.truth.resp < 8.0));
    assert!(runs[5].iter().any(|x| x.demo), "bed 6 demo mode");
    assert!(min_spo2(&runs[0]) >= 94 && max_sys(&runs[0]) <= 150, "bed 1 calm");
}

#[test]
fn stress_runs_many_beds_by_default() {
    let s = vigil_sim::scenario::load("stress").unwrap();
    assert!(s.default_beds() >= 32);
}

#[test]
fn unknown_scenario_is_a_clear_error() {
    let err = vigil_sim::timeline(&opts("no-such", Device::Masimo, 1)).err().unwrap().to_string();
    assert!(err.contains("unknown scenario 'no-such'") && err.contains("calm-session"), "{err}");
}
