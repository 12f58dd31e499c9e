//! Serial transport through real pseudo-terminals: the daemon opens the slave side by path with tokio-serial
//! exactly as it would open `/dev/ttyUSB0`; the test plays the monitor on the master side. A symlink stands for
//! the device path so that "replugging" can bring a new pty up at the same path.

mod ingest_support;
use ingest_support::{is_link, next, spo2_of};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil::config::SourceConfig;
use vigil::event::LinkState;
use vigil::ingest::protocol::nonin;
use vigil::ingest::{serial, SourceEvent, SourceId};
use vigil::vitals::Parameter;

/// The monitor's side of a pty, and the path of the daemon's side.
struct Pty {
    master: File,
    _slave: OwnedFd,
    path: PathBuf,
}

fn pty() -> Pty {
    let r = nix::pty::openpty(None, None).expect("openpty");
    let path = std::fs::read_link(format!("/proc/self/fd/{}", r.slave.as_raw_fd())).expect("slave path");
    Pty { master: File::from(r.master), _slave: r.slave, path }
}

fn point(link: &Path, target: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

fn source_config(device: &str, path: &Path) -> SourceConfig {
    toml::from_str(&format!("kind = \"serial\"\ndevice = \"{device}\"\npath = \"{}\"", path.display()))
        .expect("source config")
}

const LINE: &[u8] = b"02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% DESAT=-- \
PIDELTA=+-- ALARM=0000 EXC=000800\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_port_is_retried_readings_arrive_unplug_raises_disconnected_and_replug_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyMASIMO");
    let source = SourceId::new("chair-1", 0);
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serial::run(source.clone(), source_config("masimo", &link), tx, cancel.clone()));

    // Not plugged in yet: reported, not fatal.
    let e = next(&mut rx, "disconnected", is_link(LinkState::Disconnected)).await;
    let SourceEvent::Link { reason: Some(reason), source: s, .. } = e else { panic!("{e:?}") };
    assert!(reason.contains("cannot open"), "{reason}");
    assert_eq!(s.to_string(), "chair-1/0");

    // Plugged in.
    let mut first = pty();
    point(&link, &first.path);
    next(&mut rx, "connected", is_link(LinkState::Connected)).await;
    for _ in 0..3 {
        first.master.write_all(LINE).unwrap();
    }
    for _ in 0..3 {
        let e = next(&mut rx, "a frame", |e| matches!(e, SourceEvent::Frame { .. })).await;
        assert_eq!(spo2_of(&e), Some(98.0));
    }

    // Unplugged: the other end goes away.
    drop(first);
    next(&mut rx, "disconnected after unplug", is_link(LinkState::Disconnected)).await;

    // Replugged as a new device node at the same path.
    let mut second = pty();
    point(&link, &second.path);
    next(&mut rx, "connected after replug", is_link(LinkState::Connected)).await;
    second.master.write_all(LINE).unwrap();
    let e = next(&mut rx, "a frame after replug", |e| matches!(e, SourceEvent::Frame { .. })).await;
    assert_eq!(spo2_of(&e), Some(98.0));

    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_flood_on_one_port_leaves_another_sources_frames_flowing_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (noisy, quiet) = (pty(), pty());
    let (noisy_link, quiet_link) = (dir.path().join("ttyNOISY"), dir.path().join("ttyQUIET"));
    point(&noisy_link, &noisy.path);
    point(&quiet_link, &quiet.path);
    let cancel = CancellationToken::new();
    let (tx1, mut rx1) = mpsc::channel(64);
    let (tx2, mut rx2) = mpsc::channel(64);
    let noisy_id = SourceId::new("chair-1", 0);
    let t1 = tokio::spawn(serial::run(noisy_id.clone(), source_config("masimo", &noisy_link), tx1, cancel.clone()));
    let t2 = tokio::spawn(serial::run(
        SourceId::new("chair-2", 0),
        source_config("nonin", &quiet_link),
        tx2,
        cancel.clone(),
    ));
    next(&mut rx1, "noisy connected", is_link(LinkState::Connected)).await;
    next(&mut rx2, "quiet connected", is_link(LinkState::Connected)).await;

    // 200 kB of random bytes, written from a thread as a monitor gone mad would.
    let Pty { master: mut noisy_master, _slave: noisy_slave, .. } = noisy;
    let flood = std::thread::spawn(move || {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let bytes: Vec<u8> = (0..200 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        noisy_master.write_all(&bytes).unwrap();
        noisy_master.write_all(b"\r\n").unwrap();
        noisy_master.write_all(LINE).unwrap();
        noisy_master
    });

    // Meanwhile the other bed's oximeter keeps sending, and every frame arrives.
    let mut quiet_master = quiet.master;
    for i in 0..50u8 {
        quiet_master.write_all(&nonin::encode_frame(60 + u16::from(i), 95, 0, 0)).unwrap();
    }
    for i in 0..50u8 {
        let e = next(&mut rx2, "a nonin frame", |e| matches!(e, SourceEvent::Frame { .. })).await;
        let SourceEvent::Frame { frame, .. } = e else { unreachable!() };
        let pr = frame.measurements.iter().find(|m| m.parameter == Parameter::Pr).unwrap().value;
        assert_eq!(pr, Some(f64::from(60 + i)), "frames arrive complete and in order");
    }

    // The noisy source survived: its valid line after the flood still decodes, and the garbage was counted
    // without one inbox event per bad line.
    let _noisy_master = flood.join().unwrap();
    let mut counter_events = 0usize;
    let frame = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match *rx1.recv().await.expect("inbox open") {
                SourceEvent::Counters { .. } => counter_events += 1,
                e @ SourceEvent::Frame { .. } => return e,
                SourceEvent::Link { state, .. } => {
                    assert_eq!(state, LinkState::Connected, "the flood is no disconnect")
                }
            }
        }
    })
    .await
    .expect("the valid line after the flood arrives");
    assert_eq!(spo2_of(&frame), Some(98.0));
    let counters = next(
        &mut rx1,
        "counters including the valid frame",
        |e| matches!(e, SourceEvent::Counters { frames_ok, .. } if *frames_ok >= 1),
    )
    .await;
    let SourceEvent::Counters { frames_bad, last_error, source, .. } = counters else { unreachable!() };
    assert_eq!(source, noisy_id);
    assert!(frames_bad > 100, "random bytes hold many broken lines: {frames_bad}");
    assert!(last_error.is_some());
    assert!(
        (counter_events as u64) < frames_bad / 10,
        "{counter_events} counter events for {frames_bad} bad lines: counters must be rate-limited"
    );

    cancel.cancel();
    t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
    drop(noisy_slave);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nonin_format_selection_is_sent_at_open_and_frames_after_the_ack_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyNONIN");
    let p = pty();
    point(&link, &p.path);
    let mut cfg = source_config("nonin", &link);
    cfg.nonin_select_format = Some(true);
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serial::run(SourceId::new("chair-5", 0), cfg, tx, cancel.clone()));
    next(&mut rx, "connected", is_link(LinkState::Connected)).await;

    let Pty { master, _slave, .. } = p;
    let mut master = tokio::task::spawn_blocking(move || {
        let mut master = master;
        let mut request = [0u8; 6];
        std::io::Read::read_exact(&mut master, &mut request).unwrap();
        assert_eq!(request, nonin::SELECT_FORMAT_8, "the host asks for data format #8");
        master
    })
    .await
    .unwrap();
    master.write_all(&[nonin::ACK]).unwrap();
    master.write_all(&nonin::encode_frame(88, 93, 0, 0)).unwrap();
    let e = next(&mut rx, "a frame", |e| matches!(e, SourceEvent::Frame { .. })).await;
    assert_eq!(spo2_of(&e), Some(93.0));
    cancel.cancel();
    task.await.unwrap().unwrap();
    drop(_slave);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_in_mllp_framing_over_a_serial_line_is_decoded_and_acknowledged_on_the_same_line() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyHL7");
    let mut p = pty();
    point(&link, &p.path);
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serial::run(SourceId::new("chair-6", 0), source_config("hl7", &link), tx, cancel.clone()));
    next(&mut rx, "connected", is_link(LinkState::Connected)).await;
    let msg = include_str!("fixtures/hl7/pcd01_samples.txt")
        .lines()
        .skip_while(|l| !l.starts_with("MSH|^~\\&|MINDRAY_VS900^00A0370098007A80"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\r");
    p.master.write_all(&vigil::ingest::protocol::mllp::frame(msg.as_bytes())).unwrap();
    let e = next(&mut rx, "a frame", |e| matches!(e, SourceEvent::Frame { .. })).await;
    let SourceEvent::Frame { frame, .. } = e else { unreachable!() };
    let sys = frame.measurements.iter().find(|m| m.parameter == Parameter::NibpSys).and_then(|m| m.value);
    assert_eq!(sys, Some(147.0));
    assert_eq!(frame.device_id.as_deref(), Some("00A0370098007A80"));
    let master = p.master;
    let ack = tokio::task::spawn_blocking(move || {
        let mut master = master;
        let mut ack = Vec::new();
        let mut byte = [0u8; 1];
        while !ack.ends_with(&[0x1C, 0x0D]) {
            std::io::Read::read_exact(&mut master, &mut byte).unwrap();
            ack.push(byte[0]);
        }
        ack
    })
    .await
    .unwrap();
    assert_eq!(ack[0], 0x0B, "the ACK is MLLP-framed");
    let (code, id) = vigil::ingest::protocol::hl7::parse_ack(&ack[1..ack.len() - 2]).expect("an HL7 ACK");
    assert_eq!((code.as_str(), id.as_str()), ("AA", "1914"));
    cancel.cancel();
    task.await.unwrap().unwrap();
}
