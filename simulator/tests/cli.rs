//! The binary as a new user meets it: listing, printing, ptys, MLLP, and clear errors for bad input.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil-sim"))
}

#[test]
fn list_scenarios_prints_each_with_a_description() {
    let out = sim().arg("--list-scenarios").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for name in vigil_sim::scenario_names() {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} not listed"));
        assert!(line.len() > name.len() + 10, "{line}");
    }
}

#[test]
fn desaturation_to_stdout_prints_rad8_lines_dipping_below_88() {
    let out = sim()
        .args([
            "--scenario",
            "desaturation",
            "--device",
            "masimo",
            "--output",
            "stdout",
            "--speed",
            "max",
            "--seed",
            "7",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("\r\n").count(), 3601, "one line per second for an hour, and it ends");
    let spo2: Vec<u8> = text
        .lines()
        .filter_map(|l| {
            l.split(' ').find_map(|f| f.strip_prefix("SPO2=")).and_then(|v| v.trim_end_matches('%').parse().ok())
        })
        .collect();
    assert!(spo2.iter().take(120).any(|v| *v < 88), "no dip below 88 in the first two minutes");
    assert!(text.lines().all(|l| l.contains(" SN=") && l.contains(" EXC=")));
}

fn usage_error(args: &[&str]) -> String {
    let out = sim().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(matches!(out.status.code(), Some(2) | Some(64)), "{args:?}: {:?} {stderr}", out.status);
    stderr
}

#[test]
fn bad_input_gives_a_clear_error_not_a_panic() {
    assert!(usage_error(&["--scenario", "nope"]).contains("unknown scenario 'nope'"));
    assert!(usage_error(&["--scenario", "calm-session", "--speed", "fast"]).contains("speed"));
    assert!(usage_error(&["--scenario", "calm-session", "--speed", "0"]).contains("speed"));
    assert!(usage_error(&["--scenario", "calm-session", "--device", "philips"]).contains("philips"));
    assert!(usage_error(&["--scenario", "calm-session", "--output", "tcp:x"]).contains("tcp:x"));
    assert!(usage_error(&["--scenario", "calm-session", "--output", "mllp:localhost"]).contains("mllp:localhost"));
    assert!(usage_error(&["--scenario", "ward-of-six", "--output", "stdout"]).contains("--bed"));
    assert!(usage_error(&["--scenario", "ward-of-six", "--bed", "7"]).contains("6 bed"));
    assert!(usage_error(&["--scenario", "calm-session", "--device", "masimo", "--output", "mllp:127.0.0.1:2575"])
        .contains("HL7 only"));
    assert!(usage_error(&["--scenario", "calm-session", "--start-time", "yesterday"]).contains("--start-time"));
    assert!(usage_error(&["--scenario", "calm-session", "--device", "hl7", "--device-id", "a|b"]).contains("device id"));
    assert!(usage_error(&[]).contains("--scenario"));
}

#[test]
fn one_bed_of_a_ward_can_go_to_stdout() {
    let out = sim()
        .args(["--scenario", "ward-of-six", "--bed", "3", "--device", "nonin", "--speed", "max", "--seed", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 4 * 5401);
}

#[test]
fn a_pty_output_is_readable_by_a_plain_reader_opening_the_printed_path() {
    let mut child = sim()
        .args(["--scenario", "calm-session", "--device", "masimo", "--output", "pty", "--speed", "20", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut path = String::new();
    stdout.read_line(&mut path).unwrap();
    let path = path.trim();
    assert!(path.starts_with("/dev/"), "{path}");
    let mut port = std::fs::File::open(path).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    while got.iter().filter(|b| **b == b'\n').count() < 5 && Instant::now() < deadline {
        let n = port.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = String::from_utf8_lossy(&got);
    let complete: Vec<&str> = text.split("\r\n").filter(|l| l.contains(" SN=") && l.ends_with("EXC=000800")).collect();
    assert!(complete.len() >= 3, "{text}");
}

/// A minimal MLLP receiver: accepts connections, ACKs every message, records each MSH-3.
#[test]
fn mllp_output_feeds_one_connection_per_bed_and_reads_the_acks() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = sim()
        .args(["--scenario", "ward-of-six", "--device", "hl7", "--output", &format!("mllp:{addr}"), "--speed", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    listener.set_nonblocking(false).unwrap();
    let accept = std::thread::spawn(move || {
        for _ in 0..6 {
            let (mut conn, _) = listener.accept().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut acked = 0;
                while acked < 3 {
                    let n = conn.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(2).position(|w| w == [0x1C, 0x0D]) {
                        let frame: Vec<u8> = buf.drain(..end + 2).collect();
                        let text = String::from_utf8_lossy(&frame[1..end]).into_owned();
                        let msh: Vec<&str> = text.split('\r').next().unwrap().split('|').collect();
                        let ack = format!(
                            "\x0bMSH|^~\\&|TEST||||20260101000000||ACK^R01|A{0}|P|2.6\rMSA|AA|{0}\r\x1c\x0d",
                            msh[9]
                        );
                        conn.write_all(ack.as_bytes()).unwrap();
                        acked += 1;
                        tx.send(msh[2].to_owned()).unwrap();
                    }
                }
            });
        }
    });
    let mut ids = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.len() < 6 || ids.values().any(|n| *n < 3) {
        let left = deadline.saturating_duration_since(Instant::now());
        let id = rx.recv_timeout(left).expect("six beds sending");
        *ids.entry(id).or_insert(0) += 1;
    }
    accept.join().unwrap();
    child.kill().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert!(ids.keys().all(|k| k.starts_with("VIGIL_SIM^") && k.ends_with("^EUI-64")), "{ids:?}");
    assert!(!stderr.contains("answered") && !stderr.contains("not an ACK"), "{stderr}");
}

#[test]
fn serial_output_writes_to_an_existing_serial_device() {
    // A pty pair stands in for a USB serial adapter: we hand the simulator the device side and read the other.
    let pair = nix::pty::openpty(None, None).unwrap();
    let path = nix::unistd::ttyname(&pair.slave).unwrap();
    let mut master = std::fs::File::from(pair.master);
    let mut child = sim()
        .args(["--scenario", "calm-session", "--device", "nonin", "--speed", "50", "--seed", "2"])
        .arg("--output")
        .arg(format!("serial:{}", path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 40 {
        let n = master.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Raw mode: the bytes arrive untranslated, four per second, each frame starting with bit 7 set.
    let start = got.iter().position(|b| b & 0x80 != 0).unwrap();
    for frame in got[start..].chunks_exact(4).take(8) {
        assert!(frame[0] & 0x80 != 0 && frame[1..].iter().all(|b| b & 0x80 == 0), "{got:02X?}");
        assert!((90..=100).contains(&frame[2]), "SpO2 byte {}", frame[2]);
    }
}

fn announced_device_ids(extra: &[&str]) -> Vec<String> {
    // Port 1 on loopback refuses connections: the simulator announces its beds, then retries quietly.
    let mut child = sim()
        .args(["--scenario", "ward-of-six", "--device", "hl7", "--output", "mllp:127.0.0.1:1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ids = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(id) = line.split("MSH-3 device id ").nth(1) {
            ids.push(id.to_owned());
        }
        if ids.len() == 6 {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ids
}

#[test]
fn mllp_device_ids_stay_the_same_between_runs_so_a_daemon_config_keeps_matching() {
    let first = announced_device_ids(&[]);
    assert_eq!(first.len(), 6);
    assert_eq!(first.iter().collect::<std::collections::HashSet<_>>().len(), 6);
    assert_eq!(first, announced_device_ids(&[]));
    assert_eq!(first[0], vigil_sim::derived_device_id(0, 0));
    assert_ne!(first, announced_device_ids(&["--seed", "9"]));
}

/// Reads MLLP frames from `conn`, ACKing each, until EOF or `limit` frames; returns each message's MSH-10.
fn receive(conn: &mut std::net::TcpStream, limit: usize) -> Vec<u64> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut buf, mut ids, mut chunk) = (Vec::new(), Vec::new(), [0u8; 4096]);
    while ids.len() < limit {
        let n = conn.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(2).position(|w| w == [0x1C, 0x0D]) {
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            // Line noise may precede the start block: skip to it, as a receiver must.
            let start = frame.iter().position(|b| *b == 0x0B).unwrap() + 1;
            let text = String::from_utf8_lossy(&frame[start..end]).into_owned();
            let id = text.split('\r').next().unwrap().split('|').nth(9).unwrap().to_owned();
            conn.write_all(format!("\x0bMSH|^~\\&|T||||20260101||ACK|{id}|P|2.6\rMSA|AA|{id}\r\x1c\x0d").as_bytes())
                .unwrap();
            ids.push(id.parse().unwrap());
        }
    }
    ids
}

#[test]
fn a_scripted_disconnect_closes_the_mllp_connection_and_the_monitor_reconnects() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = sim()
        .args(["--scenario", "monitor-disconnect", "--device", "hl7", "--speed", "40", "--seed", "5"])
        .arg("--output")
        .arg(format!("mllp:{addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut first, _) = listener.accept().unwrap();
    let before = receive(&mut first, 1000);
    let (mut second, _) = listener.accept().unwrap();
    let after = receive(&mut second, 5);
    child.kill().unwrap();
    child.wait().unwrap();
    // Seconds 0–59 on the first connection (MSH-10 counts from 1), EOF at the unplug, then a new connection
    // carrying the following messages.
    assert_eq!(before, (1..=60).collect::<Vec<u64>>());
    assert_eq!(after, (61..=65).collect::<Vec<u64>>());
}

#[test]
fn a_pty_nobody_reads_does_not_pile_up_a_backlog_of_old_frames() {
    let mut child = sim()
        .args(["--scenario", "calm-session", "--device", "masimo", "--output", "pty", "--speed", "1", "--seed", "3"])
        .args(["--start-time", "2026-01-01T00:00:00Z"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut path = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut path).unwrap();
    // Nobody reads for 4.5 s: the lines of 0 s and 1 s are stale by then and must be gone.
    std::thread::sleep(Duration::from_millis(4500));
    let mut port = std::fs::File::open(path.trim()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"\r\n") {
        let n = port.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = String::from_utf8_lossy(&got);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("01/01/26 00:00:0"), "{first}");
    let second: u32 = first[15..17].parse().unwrap();
    assert!(second >= 2, "a backlog from the start was delivered: {first}");
}

#[test]
fn a_scenario_file_of_your_own_runs_and_a_broken_one_is_explained() {
    let dir = std::env::temp_dir().join(format!("vigil-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("brady.toml");
    std::fs::write(
        &good,
        "description = \"short bradycardia\"\n[session]\nduration_s = 120\ninfusion_start_s = 10\n\
         infusion_stop_s = 100\nsession_end_s = 120\n[[patients]]\n[[patients.events]]\nkind = \"bradycardia\"\n\
         at_s = 20\nonset_s = 10\nhold_s = 60\nhr = 38\n",
    )
    .unwrap();
    let out = sim()
        .arg("--scenario-file")
        .arg(&good)
        .args(["--device", "masimo", "--speed", "max", "--seed", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 121);
    assert!(text.contains("BPM=03"), "the bradycardia shows");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "description = \"x\"\n[session]\nduration_s = \"long\"\n").unwrap();
    let err = usage_error(&["--scenario-file", bad.to_str().unwrap()]);
    assert!(err.contains("duration_s") && err.contains("line 3"), "{err}");
    let err = usage_error(&["--scenario-file", dir.join("missing.toml").to_str().unwrap()]);
    assert!(err.contains("missing.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_nonin_pty_answers_the_hosts_format_select_command() {
    let mut child = sim()
        .args(["--scenario", "calm-session", "--device", "nonin", "--output", "pty", "--speed", "1", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut path = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut path).unwrap();
    let mut port = std::fs::OpenOptions::new().read(true).write(true).open(path.trim()).unwrap();
    let mut ask = |fmt: u8| -> Vec<u8> {
        port.write_all(&[0x02, 0x70, 0x02, 0x02, fmt, 0x03]).unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        // Calm-session frames never contain 0x06 or 0x15 (HR near 70, SpO2 near 98, no flags), so any such byte
        // is the answer.
        while !got.iter().any(|b| *b == 0x06 || *b == 0x15) {
            // Frames arrive every second, so a missing answer fails here instead of hanging.
            assert!(started.elapsed() < Duration::from_secs(3), "no answer to format {fmt}");
            let n = port.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert!(started.elapsed() < Duration::from_millis(900), "answered after {:?}", started.elapsed());
        got
    };
    assert!(ask(8).contains(&0x06));
    assert!(ask(2).contains(&0x15));
    child.kill().unwrap();
    child.wait().unwrap();
}
