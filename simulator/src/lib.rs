//! vigil-sim: a bedside-monitor simulator.

/// Names of the bundled scenarios.
pub fn scenario_names() -> Vec<&'static str> {
    vec![
        "calm-session",
        "hypertensive-surge",
        "desaturation",
        "probe-off-and-artefacts",
        "monitor-disconnect",
        "ward-of-six",
        "stress",
    ]
}
