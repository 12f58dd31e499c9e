//! The replay recording of issue 10's shape (beds at 1 Hz SpO2 + PR, NIBP every 5 min, a session with an
//! infusion, and once an hour per bed a desaturation a nurse acknowledges), shared by `benches/replay.rs` and
//! `tests/replay_event_streams.rs` so the benchmark and the event-stream check replay the same shape.

use std::io::Write;

/// Writes the recording; returns the number of readings (rows that are not events).
pub fn write_recording(w: &mut impl Write, beds: u32, seconds: u32) -> std::io::Result<u64> {
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
