//! Memory harness for the streamed CSV export: fills a real store with a full 24-hour window for one chair (one
//! value per second for four parameters, the longest window one request may ask for), starts the daemon in this
//! process on it, and downloads `/api/beds/chair-1/export.csv` over a real socket, reading slowly. Reports the
//! rows, bytes and time, and how much the process's peak RSS grew during the download (`VmHWM` after resetting
//! it through `/proc/self/clear_refs`). Method and recorded figures: `docs/performance.md`.
//!
//! ```text
//! cargo run --example export-memory
//! ```

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;
use vigil::event::{Event, VitalValue, VitalsUpdate};
use vigil::vitals::{Parameter, ValueStatus};

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("vigil.db");
    let hash = vigil::auth::hash_password("harness-pass").expect("a hash");
    let text = format!(
        "[site]\nname = \"h\"\nward = \"w\"\n[mqtt]\nmode = \"disabled\"\n[dashboard]\nlisten = \"127.0.0.1:0\"\n\
         [store]\npath = \"{}\"\n[[users]]\nname = \"nina\"\nrole = \"nurse\"\npassword_hash = \"{hash}\"\n\
         [[beds]]\nid = \"chair-1\"\n",
        db.display()
    );
    let config = vigil::config::Config::parse(&text, "harness.toml", dir.path()).expect("a valid config");

    let seconds = 24 * 3600 - 60;
    let now = Utc::now();
    let start = now - chrono::Duration::seconds(seconds);
    {
        let store = vigil::store::Store::open(&db).expect("the store");
        for batch in (0..seconds).collect::<Vec<_>>().chunks(3600) {
            let events: Vec<Event> = batch
                .iter()
                .map(|i| {
                    let time = start + chrono::Duration::seconds(*i);
                    let v = |parameter, x| VitalValue { parameter, value: Some(x), status: ValueStatus::Valid, time };
                    Event::Vitals(VitalsUpdate {
                        bed: "chair-1".into(),
                        time,
                        values: vec![
                            v(Parameter::Spo2, 97.0),
                            v(Parameter::Pr, 71.0),
                            v(Parameter::Hr, 72.0),
                            v(Parameter::Rr, 14.0),
                        ],
                        other: Vec::new(),
                    })
                })
                .collect();
            store.append(&events).expect("append");
        }
        store.flush().expect("flush");
    }

    let shutdown = CancellationToken::new();
    let running = vigil::start(config, shutdown.clone()).await.expect("the daemon starts");
    let dash = running.dashboard;
    let body = r#"{"name":"nina","password":"harness-pass"}"#;
    let mut s = tokio::net::TcpStream::connect(dash).await.expect("connect");
    let req = format!(
        "POST /api/session HTTP/1.1\r\nHost: {dash}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = status_kib("VmRSS:");
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM (Linux)");
    let hwm_before = status_kib("VmHWM:");
    let window = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let path = format!("/api/beds/chair-1/export.csv?from={}&to={}", window(start), window(now));
    let began = Instant::now();
    let s = tokio::net::TcpStream::connect(dash).await.expect("connect");
    let mut s = BufReader::with_capacity(4096, s);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {dash}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
    s.get_mut().write_all(req.as_bytes()).await.expect("write");
    let (mut lines, mut bytes, mut line) = (0u64, 0u64, String::new());
    let mut first_row = None;
    while s.read_line(&mut line).await.expect("read") > 0 {
        bytes += line.len() as u64;
        if line.contains(",vital,") {
            lines += 1;
            first_row.get_or_insert_with(|| began.elapsed());
            // A slow reader: the export waits for it instead of buffering ahead.
            if lines % 20_000 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        line.clear();
    }
    let took = began.elapsed();
    let hwm_after = status_kib("VmHWM:");
    println!("rows {lines}, bytes {bytes} ({:.1} MiB)", bytes as f64 / 1048576.0);
    println!(
        "first row after {:.0} ms, whole export in {:.2} s ({:.0} rows/s)",
        first_row.unwrap_or_default().as_secs_f64() * 1e3,
        took.as_secs_f64(),
        lines as f64 / took.as_secs_f64()
    );
    println!(
        "RSS before {rss_before} KiB; peak RSS during the export {hwm_after} KiB (reset to {hwm_before} KiB): grew {} KiB",
        hwm_after.saturating_sub(hwm_before)
    );
    shutdown.cancel();
    running.wait().await;
}
