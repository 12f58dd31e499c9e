//! The patient model stays physiological over long runs, and draws its pressor response from the published
//! distributions (CLINICAL.md, "Published magnitudes").

use proptest::prelude::*;
use rand::SeedableRng;
use vigil_sim::physiology::{bounds, Pressor};
use vigil_sim::scenario::PressorSpec;
use vigil_sim::SimRng;
use vigil_sim::{Device, FeedOptions, Speed};

fn within(v: f64, (lo, hi): (f64, f64)) -> bool {
    v.is_finite() && v >= lo && v <= hi
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn physiology_stays_within_physiological_bounds_over_long_runs(
        seed in any::<u64>(),
        scenario in prop::sample::select(vigil_sim::scenario_names()),
        patient in 0usize..12,
    ) {
        let opts = FeedOptions {
            scenario: scenario.into(), device: Device::Hl7, seed, speed: Speed::Max, patient, device_id: None,
        };
        for s in vigil_sim::timeline(&opts).unwrap() {
            let v = s.truth;
            prop_assert!(within(v.spo2, bounds::SPO2), "{scenario} {seed} {}: spo2 {}", s.offset_s, v.spo2);
            prop_assert!(within(v.pulse, bounds::HR), "pulse {}", v.pulse);
            prop_assert!(within(v.systolic, bounds::SYSTOLIC), "sys {}", v.systolic);
            prop_assert!(within(v.diastolic, bounds::DIASTOLIC), "dia {}", v.diastolic);
            prop_assert!(v.diastolic < v.systolic - 10.0, "{} / {}", v.systolic, v.diastolic);
            prop_assert!(within(v.resp, bounds::RESP) && within(v.pi, bounds::PI));
            if let Some(spo2) = s.shown.spo2 { prop_assert!(spo2 <= 100); }
            if let Some(pulse) = s.shown.pulse { prop_assert!((15..=400).contains(&pulse), "shown pulse {pulse}"); }
            if let Some(n) = s.nibp.and_then(|n| n.values) {
                prop_assert!(n.diastolic < n.mean && n.mean < n.systolic, "{n:?}");
                prop_assert!((50..=280).contains(&n.systolic) && (25..=180).contains(&n.diastolic), "{n:?}");
            }
        }
    }

    #[test]
    fn spo2_noise_is_about_one_point_at_rest(seed in any::<u64>()) {
        let opts = FeedOptions {
            scenario: "calm-session".into(), device: Device::Masimo, seed, speed: Speed::Max, patient: 0,
            device_id: None,
        };
        let shown: Vec<u8> = vigil_sim::timeline(&opts).unwrap().filter_map(|s| s.shown.spo2).collect();
        let (lo, hi) = (shown.iter().min().unwrap(), shown.iter().max().unwrap());
        // Baseline 98 %: the display wanders by about a point, never by five.
        prop_assert!(*lo >= 95 && *hi <= 100, "{lo}..{hi}");
        prop_assert!(hi - lo >= 1, "a real SpO2 display is never perfectly flat");
    }
}

#[test]
fn pressor_draws_match_the_published_distributions() {
    let mut rng = SimRng::seed_from_u64(2024);
    let n = 4000;
    let draws: Vec<Pressor> = (0..n).map(|_| Pressor::draw(&PressorSpec::default(), &mut rng)).collect();
    let tail = draws.iter().filter(|p| p.systolic >= 40.0 || p.diastolic >= 25.0).count() as f64 / n as f64;
    // Esketamine label: 8–19 % rose by >= 40 systolic and/or >= 25 diastolic.
    assert!((0.08..=0.19).contains(&tail), "tail share {tail}");
    let mean_sys = draws.iter().map(|p| p.systolic).sum::<f64>() / n as f64;
    let mean_dia = draws.iter().map(|p| p.diastolic).sum::<f64>() / n as f64;
    // Cohort means span +3.3 (Emory) to +16 (Yale) systolic and +3.2 to +11 diastolic.
    assert!((3.3..=16.0).contains(&mean_sys), "mean systolic rise {mean_sys}");
    assert!((3.2..=11.0).contains(&mean_dia), "mean diastolic rise {mean_dia}");
    // Peak about 40 min after the start.
    let mean_peak = draws.iter().map(|p| p.peak_after_s).sum::<f64>() / n as f64;
    assert!((35.0 * 60.0..=45.0 * 60.0).contains(&mean_peak), "mean peak {mean_peak}");
}

#[test]
fn pressor_response_peaks_then_decays_slowly() {
    let p = Pressor { systolic: 40.0, diastolic: 25.0, peak_after_s: 2400.0, decay_s: 5400.0 };
    assert_eq!(p.level(-10.0), 0.0);
    assert!(p.level(1200.0) > 0.3 && p.level(1200.0) < 0.7);
    assert!((p.level(2400.0) - 1.0).abs() < 1e-9);
    // Still clearly raised two hours after the peak (the label: raised for about 4 h).
    assert!(p.level(2400.0 + 7200.0) > 0.2);
}
