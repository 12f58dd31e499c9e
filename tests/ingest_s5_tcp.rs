//! The S/5 and the serial device server through real parts: a pseudo-terminal opened by the daemon's serial
//! source at the S/5 defaults (19200 8E1 RTS/CTS), and `kind = "tcp"` sources against real TCP servers on
//! loopback (a hand-written server that drops and comes back, and the simulator's own `tcp-listen` output).

mod ingest_support;
use ingest_support::{is_link, next, spo2_of};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil::config::SourceConfig;
use vigil::event::LinkState;
use vigil::ingest::protocol::s5::{self, build};
use vigil::ingest::{serial, tcp, SourceEvent, SourceId};
use vigil::vitals::Parameter;
use vigil_sim::{Device, FeedOptions, Simulation, Speed};

fn config(text: &str) -> SourceConfig {
    toml::from_str(text).expect("source config")
}

/// One framed displayed-values record with SpO2 and pulse.
fn spo2_record(spo2: i16, pr: i16) -> Vec<u8> {
    let mut class = build::empty_class();
    build::group(&mut class, s5::phdb::SPO2_AT, s5::status::EXISTS | s5::status::ACTIVE, &[spo2 * 100, pr, 0, 0]);
    s5::frame(&build::phdb_record(1_767_254_400, s5::phdb::DISPLAYED, &class))
}

/// The host's requests in `bytes`: (main type, first sub-record type, first data byte) of each good frame.
fn requests(bytes: &[u8]) -> Vec<(i16, u8, u8)> {
    let mut out = Vec::new();
    for body in bytes.split(|b| *b == s5::FLAG).filter(|b| !b.is_empty()) {
        let mut plain = Vec::new();
        let mut it = body.iter();
        while let Some(&b) = it.next() {
            plain.push(if b == s5::ESCAPE { it.next().map_or(0, |n| n ^ s5::ESCAPE_XOR) } else { b });
        }
        let Some(sum) = plain.pop() else { continue };
        assert_eq!(s5::checksum(&plain), sum, "a request with a bad checksum");
        let h = s5::parse_header(&plain).expect("a request with a good header");
        out.push((h.maintype, h.subrecords[0].1, plain[s5::HEADER_LEN]));
    }
    out
}

/// A pty pair: the monitor's side and the path the daemon opens.
fn pty() -> (File, OwnedFd, PathBuf) {
    let r = nix::pty::openpty(None, None).expect("openpty");
    let path = std::fs::read_link(format!("/proc/self/fd/{}", r.slave.as_raw_fd())).expect("slave path");
    (File::from(r.master), r.slave, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s5_on_a_pty_opened_at_8e1_is_asked_for_its_records_and_asked_again_after_a_silence() {
    let (master, _slave, path) = pty();
    let cfg =
        config(&format!("kind = \"serial\"\ndevice = \"s5\"\npath = \"{}\"\nsilence_alarm_s = 2", path.display()));
    assert_eq!((cfg.baud(), cfg.parity().name(), cfg.flow_control().name()), (19200, "even", "hardware"));
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serial::run(SourceId::new("chair-1", 0), cfg, tx, cancel.clone()));
    next(&mut rx, "Connected", is_link(LinkState::Connected)).await;
    // (A Linux pty keeps its own hardware bits whatever tcsetattr asks, so parity itself cannot be observed here:
    // the settings asked for are the ones above, and the port opened with them.)
    let reader = master.try_clone().unwrap();
    let (heard_tx, mut heard) = mpsc::unbounded_channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 512];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || heard_tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while requests(&got).len() < 5 {
        let chunk = tokio::time::timeout_at(deadline, heard.recv()).await.expect("the requests within 10 s").unwrap();
        got.extend(chunk);
    }
    let reqs = requests(&got);
    assert_eq!(&reqs[..3], &[(0, 0, s5::phdb::DISPLAYED); 3], "displayed values at three DRI levels");
    assert_eq!(reqs[3].0, s5::maintype::ALARM);
    // The monitor answers; the value arrives.
    (&master).write_all(&spo2_record(93, 71)).unwrap();
    let e = next(&mut rx, "SpO2", |e| spo2_of(e).is_some()).await;
    assert_eq!(spo2_of(&e), Some(93.0));
    // Then the monitor restarts and says nothing: after 2 s of silence the daemon asks again.
    got.clear();
    while requests(&got).len() < 5 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await.expect("asked again").unwrap();
        got.extend(chunk);
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_source_sends_the_request_reads_records_and_reconnects_when_the_device_server_drops_and_returns() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = config(&format!("kind = \"tcp\"\ndevice = \"s5\"\naddress = \"{addr}\""));
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(tcp::run(SourceId::new("chair-2", 0), cfg, tx, cancel.clone()));
    for (round, spo2) in [(1, 95), (2, 88)] {
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(15), listener.accept()).await.unwrap().unwrap();
        next(&mut rx, "Connected", is_link(LinkState::Connected)).await;
        let mut got = Vec::new();
        while requests(&got).len() < 5 {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "round {round}: the source closed before sending its request");
            got.extend(&buf[..n]);
        }
        // Garbage and a cut frame first: counted, skipped, the good record still decodes.
        conn.write_all(b"\x01\x02noise").await.unwrap();
        conn.write_all(&spo2_record(50, 60)[..30]).await.unwrap();
        conn.write_all(&spo2_record(spo2, 70)).await.unwrap();
        let e = next(&mut rx, "SpO2", |e| spo2_of(e).is_some()).await;
        assert_eq!(spo2_of(&e), Some(f64::from(spo2)), "round {round}");
        let bad =
            next(&mut rx, "counters", |e| matches!(e, SourceEvent::Counters { frames_bad, .. } if *frames_bad > 0))
                .await;
        assert!(matches!(bad, SourceEvent::Counters { frames_ok, .. } if frames_ok >= 1));
        // The device server goes away.
        drop(conn);
        let e = next(&mut rx, "Disconnected", is_link(LinkState::Disconnected)).await;
        let SourceEvent::Link { reason, .. } = e else { unreachable!() };
        assert!(reason.unwrap_or_default().contains(&addr.to_string()), "the reason names the device server");
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_that_goes_silent_is_closed_and_opened_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = config(&format!("kind = \"tcp\"\ndevice = \"masimo\"\naddress = \"{addr}\"\nsilence_alarm_s = 1"));
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(tcp::run(SourceId::new("chair-3", 0), cfg, tx, cancel.clone()));
    // A half-open socket: accepted, then never a byte and never closed.
    let (_held, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.unwrap().unwrap();
    next(&mut rx, "Connected", is_link(LinkState::Connected)).await;
    let e = next(&mut rx, "Disconnected", is_link(LinkState::Disconnected)).await;
    let SourceEvent::Link { reason, .. } = e else { unreachable!() };
    assert!(reason.unwrap_or_default().contains("no frame for 1 s"));
    let (_again, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.unwrap().unwrap();
    next(&mut rx, "Connected again", is_link(LinkState::Connected)).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_tcp_listen_s5_answers_the_tcp_source_with_the_desaturation() {
    // Find a free port, then let the simulator listen on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let opts = FeedOptions {
        scenario: "desaturation".into(),
        device: Device::S5,
        seed: 7,
        speed: Speed::Max,
        patient: 0,
        device_id: None,
    };
    let sim = Simulation::new(&opts, vigil_sim::fixed_epoch()).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let server = tokio::spawn(vigil_sim::output::run_tcp_listen(sim, Speed::Max, addr.clone(), "test".into()));
    let cfg = config(&format!("kind = \"tcp\"\ndevice = \"s5\"\naddress = \"{addr}\""));
    let (tx, mut rx) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(tcp::run(SourceId::new("chair-4", 0), cfg, tx, cancel.clone()));
    // At full speed the simulator sends nothing until asked: every value here answers the daemon's request.
    let mut lowest = f64::MAX;
    let mut monitor_alarm = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while lowest >= 88.0 || monitor_alarm.is_none() {
        let e = *tokio::time::timeout_at(deadline, rx.recv()).await.expect("desaturation and its alarm").unwrap();
        if let Some(v) = spo2_of(&e) {
            lowest = lowest.min(v);
        }
        if let SourceEvent::Frame { frame, .. } = &e {
            if let Some(a) = frame.device_alarms.as_ref().and_then(|l| l.iter().find(|a| a.text == "SpO2 LOW")) {
                monitor_alarm = Some(a.clone());
            }
        }
    }
    let alarm = monitor_alarm.unwrap();
    assert_eq!(alarm.parameter, Some(Parameter::Spo2));
    assert!(!alarm.technical);
    cancel.cancel();
    task.await.unwrap().unwrap();
    server.abort();
}
