//! Helpers shared by the integration tests.
#![allow(dead_code)]

use vigil_sim::{Device, FeedOptions, Sample, Speed, Tick};

pub fn opts(scenario: &str, device: Device, seed: u64) -> FeedOptions {
    FeedOptions { scenario: scenario.into(), device, seed, speed: Speed::Max, patient: 0, device_id: None }
}

pub fn samples(scenario: &str, seed: u64) -> Vec<Sample> {
    vigil_sim::timeline(&opts(scenario, Device::Masimo, seed)).unwrap().collect()
}

pub fn ticks(o: &FeedOptions) -> Vec<Tick> {
    vigil_sim::Simulation::new(o, vigil_sim::fixed_epoch()).unwrap().collect()
}

/// NIBP readings (start offset, systolic, diastolic) of a run.
pub fn nibp(samples: &[Sample]) -> Vec<(u32, u16, u16)> {
    samples
        .iter()
        .filter_map(|s| s.nibp)
        .filter_map(|n| n.values.map(|v| (n.started_offset_s, v.systolic, v.diastolic)))
        .collect()
}
