//! The complete output of `vigil replay` (every alarm event line, the summary and the comparison) on a set of
//! recordings, held against the streams recorded from main before the replay speed work (issue 10: "at least 2 M
//! readings per CPU-second ... without changing alarm behaviour"). A speed change that moves any event, any
//! evidence field or any count changes a hash here.
//!
//! The recorded hashes are in `tests/fixtures/replay/event_streams.blake2b` (one line per recording: name, line
//! count, BLAKE2b-256 of stdout). To see what changed, run the command printed on failure on main and on the
//! branch and diff the outputs.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::process::Command;

use blake2::{Blake2b, Digest};

#[path = "../benches/support/replay_recording.rs"]
mod replay_recording;

type Blake2b256 = Blake2b<blake2::digest::consts::U32>;

/// Each recording with the arguments it is replayed with, and whether it is the generated one (replayed from
/// the temporary directory by its bare name, since the summary names the file).
fn cases(config: &str) -> Vec<(&'static str, Vec<String>, bool)> {
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let fixtures = vec![
        ("three_beds", a(&["tests/fixtures/replay/three_beds.csv"])),
        (
            "nibp_climb_session_compare_strict",
            a(&["--compare", "ketamine-chair-strict", "tests/fixtures/replay/nibp_climb_session.csv"]),
        ),
        ("nurse_actions", a(&["tests/fixtures/replay/nurse_actions.csv"])),
        ("pcd01_samples", a(&["--format", "hl7", "tests/fixtures/captures/pcd01_samples.txt"])),
        ("rad_serial_samples", a(&["--format", "masimo", "tests/fixtures/captures/rad_serial_samples.txt"])),
        ("s5_desaturation", a(&["--format", "s5", "tests/fixtures/captures/s5_desaturation.bin"])),
    ];
    let generated = vec![
        ("generated_12_beds_2h", a(&["--profile-dir", config, "generated.csv"])),
        (
            "generated_12_beds_2h_compare_strict",
            a(&["--profile-dir", config, "--compare", "ketamine-chair-strict", "generated.csv"]),
        ),
    ];
    fixtures.into_iter().map(|(n, a)| (n, a, false)).chain(generated.into_iter().map(|(n, a)| (n, a, true))).collect()
}

fn expected() -> Vec<(String, usize, String)> {
    std::fs::read_to_string("tests/fixtures/replay/event_streams.blake2b")
        .expect("the recorded hashes")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().expect("line count"), f[2].to_string())
        })
        .collect()
}

#[test]
fn replay_gives_the_same_event_stream_as_before_the_speed_work_on_every_recording() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("generated.csv");
    let mut w = BufWriter::new(std::fs::File::create(&generated).unwrap());
    replay_recording::write_recording(&mut w, 12, 7200).unwrap();
    w.flush().unwrap();
    drop(w);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut got = String::new();
    let mut failures = Vec::new();
    let expected = expected();
    for (name, args, in_temp) in cases(config) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
        if in_temp {
            cmd.current_dir(dir.path());
        }
        let out = cmd.arg("replay").args(&args).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let lines = out.stdout.iter().filter(|b| **b == b'\n').count();
        let hash: String = Blake2b256::digest(&out.stdout).iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        // Each recording must give events, or the comparison proves nothing about alarm behaviour.
        assert!(lines > 1, "{name}: only the summary ({lines} lines)");
        writeln!(got, "{name} {lines} {hash}").unwrap();
        match expected.iter().find(|(n, ..)| n == name) {
            Some((_, l, h)) if *l == lines && *h == hash => {}
            Some((_, l, h)) => failures.push(format!(
                "{name}: {lines} lines, {hash}; recorded {l} lines, {h} (vigil replay {})",
                args.join(" ")
            )),
            None => failures.push(format!("{name}: no recorded hash")),
        }
    }
    assert!(failures.is_empty(), "event streams changed:\n{}\nthis run:\n{got}", failures.join("\n"));
}
