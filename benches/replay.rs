//! `vigil replay` throughput over a generated recording of the shape in issue 10: beds at 1 Hz SpO2 + PR, NIBP
//! every 5 min, a session with an infusion, and once an hour per bed a desaturation a nurse acknowledges.
//!
//! `cargo bench --bench replay` measures CPU time per reading on 200 beds x 10 min (criterion). To write the full
//! recording (1,000 beds x 2 h, 14.5 M rows) for `/usr/bin/time -v vigil replay --summary-only FILE`:
//! `VIGIL_REPLAY_WRITE=/tmp/replay-1000x2h.csv cargo bench --bench replay` (writes the file and exits; optionally
//! `VIGIL_REPLAY_BEDS` and `VIGIL_REPLAY_SECONDS`). `docs/performance.md` has the figures and the method.

use std::io::{BufWriter, Write};

use criterion::{Criterion, Throughput};
#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::ThreadCpuTime;
use vigil::replay::{run, ReplayArgs};

/// Writes the recording; returns the number of readings (rows that are not events).
fn write_recording(w: &mut impl Write, beds: u32, seconds: u32) -> std::io::Result<u64> {
    writeln!(w, "timestamp,bed,parameter,value")?;
    let mut readings = 0u64;
    for t in 0..seconds {
        for b in 0..beds {
            if t == 0 {
                writeln!(w, "0,bed-{b:04},event,session_start")?;
            }
            if t == 600 {
                writeln!(w, "600,bed-{b:04},event,infusion_start")?;
            }
            // Once an hour per bed, at a bed-specific minute, 60 s of SpO2 85, acknowledged after 20 s.
            let phase = (t + b * 37) % 3600;
            let wobble = [0, 1, 2, 1, 0, -1, -2, -1][((t + b) % 8) as usize];
            let spo2 = if (1800..1860).contains(&phase) { 85 } else { 97 + wobble / 2 };
            if phase == 1820 {
                writeln!(w, "{t},bed-{b:04},event,acknowledge")?;
            }
            writeln!(w, "{t},bed-{b:04},spo2,{spo2}")?;
            writeln!(w, "{t},bed-{b:04},pr,{}", 72 + wobble + (b % 10) as i32)?;
            readings += 2;
            if (t + b) % 300 == 0 {
                let sys = 122 + (b % 7) + (t / 600) % 5;
                let dia = 76 + (b % 5);
                writeln!(w, "{t},bed-{b:04},nibp_sys,{sys}")?;
                writeln!(w, "{t},bed-{b:04},nibp_dia,{dia}")?;
                writeln!(w, "{t},bed-{b:04},nibp_mean,{}", (sys + 2 * dia) / 3)?;
                readings += 3;
            }
        }
    }
    Ok(readings)
}

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
