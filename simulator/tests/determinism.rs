//! Same seed, same bytes; different seeds, different bytes.

mod common;

use common::{opts, ticks};
use vigil_sim::Device;

fn bytes(scenario: &str, device: Device, seed: u64) -> Vec<u8> {
    ticks(&opts(scenario, device, seed)).into_iter().flat_map(|t| t.bytes).collect()
}

#[test]
fn same_seed_gives_identical_bytes() {
    for device in [Device::Masimo, Device::Nonin, Device::Hl7] {
        for scenario in ["desaturation", "monitor-disconnect", "ward-of-six"] {
            let a = bytes(scenario, device, 42);
            assert!(a.len() > 1000);
            assert_eq!(a, bytes(scenario, device, 42), "{scenario} {device:?}");
        }
    }
}

#[test]
fn different_seeds_give_different_bytes() {
    for device in [Device::Masimo, Device::Nonin, Device::Hl7] {
        assert_ne!(bytes("calm-session", device, 1), bytes("calm-session", device, 2), "{device:?}");
    }
}

#[test]
fn the_device_personality_does_not_change_the_patient() {
    let values = |d| -> Vec<_> { ticks(&opts("ward-of-six", d, 3)).into_iter().map(|t| t.sample).collect() };
    let masimo = values(Device::Masimo);
    assert_eq!(masimo, values(Device::Nonin));
    assert_eq!(masimo, values(Device::Hl7));
}

#[test]
fn beds_of_one_scenario_get_their_own_random_streams() {
    let bed = |patient| {
        let o = vigil_sim::FeedOptions { patient, ..opts("stress", Device::Masimo, 1) };
        vigil_sim::timeline(&o).unwrap().take(600).map(|s| s.truth.pulse).collect::<Vec<_>>()
    };
    // Beds 0 and 6 share the stress scenario's first patient template but not their randomness.
    assert_ne!(bed(0), bed(6));
}

#[test]
fn cli_at_max_speed_with_a_seed_prints_identical_bytes_every_run() {
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-sim"))
            .args(["--scenario", "desaturation", "--device", "masimo", "--output", "stdout", "--speed", "max"])
            .args(["--seed", "7"])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let first = run();
    assert!(first.starts_with(b"01/01/26 08:00:00 SN="));
    assert_eq!(first, run());
}

#[test]
fn cli_output_is_byte_identical_for_the_same_seed_and_start_time() {
    let run = |seed: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-sim"))
            .args(["--scenario", "probe-off-and-artefacts", "--device", "nonin", "--speed", "max", "--seed", seed])
            .args(["--start-time", "2026-03-01T10:00:00Z"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let a = run("11");
    assert_eq!(a.len(), 4 * 3601);
    assert_eq!(a, run("11"));
    assert_ne!(a, run("12"));
}
