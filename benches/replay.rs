//! `vigil replay` throughput over a generated recording of the shape in issue 10: beds at 1 Hz SpO2 + PR, NIBP
//! every 5 min, a session with an infusion, and once an hour per bed a desaturation a nurse acknowledges.
//!
//! `cargo bench --bench replay` measures CPU time per reading on 200 beds x 10 min (criterion). To write the full
//! recording (1,000 beds x 2 h, 14.5 M rows) for `/usr/bin/time -v vigil replay --summary-only FILE`:
//! `VIGIL_REPLAY_WRITE=/tmp/replay-1000x2h.csv cargo bench --bench replay` (writes the file and exits; optionally
//! `VIGIL_REPLAY_BEDS` and `VIGIL_REPLAY_SECONDS`). `docs/performance.md` has the figures and the method.

use std::io::{BufWriter, Write};

#[path = "support/replay_recording.rs"]
mod replay_recording;
use replay_recording::write_recording;

use criterion::{Criterion, Throughput};
#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::ThreadCpuTime;
use vigil::replay::{run, ReplayArgs};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if let Ok(path) = std::env::var("VIGIL_REPLAY_WRITE") {
        let beds = env_u32("VIGIL_REPLAY_BEDS", 1000);
        let seconds = env_u32("VIGIL_REPLAY_SECONDS", 7200);
        let mut w = BufWriter::new(std::fs::File::create(&path).expect("create the recording"));
        let readings = write_recording(&mut w, beds, seconds).expect("write the recording");
        w.flush().expect("write the recording");
        println!("{path}: {beds} beds x {seconds} s, {readings} readings");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("recording.csv");
    let mut w = BufWriter::new(std::fs::File::create(&path).expect("create"));
    let readings = write_recording(&mut w, 200, 600).expect("write");
    w.flush().expect("write");
    drop(w);
    let mut args = ReplayArgs::new(&path);
    args.summary_only = true;
    let mut c = Criterion::default().with_measurement(ThreadCpuTime).sample_size(10).configure_from_args();
    let mut g = c.benchmark_group("replay_cpu");
    g.throughput(Throughput::Elements(readings));
    g.bench_function("csv_200_beds_10_min_full_engine", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            run(&args, &mut out).expect("replay");
            out
        })
    });
    g.finish();
    c.final_summary();
}
