//! The IntelliVue Data Export session through real pseudo-terminals: the daemon's serial source opens the pty by
//! path exactly as it would a MIB/RS-232 adapter, and `vigil-sim`'s IntelliVue personality (or the test, playing
//! the monitor) is on the other side. Then the whole daemon: the simulated monitor's own "SpO2 LOW" reaches MQTT
//! and the dashboard's snapshot as a `source: monitor` alarm beside Vigil's own.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use common::{free_port, wait_for_publish};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil::config::{Config, SourceConfig};
use vigil::event::LinkState;
use vigil::ingest::{serial, SourceEvent, SourceId, SourceReceiver};
use vigil::vitals::Parameter;
use vigil_sim::devices::intellivue as monitor;
use vigil_sim::output::Pty;
use vigil_sim::{scenario, Device, FeedOptions, Simulation, Speed};

fn source_config(path: &Path) -> SourceConfig {
    toml::from_str(&format!("kind = \"serial\"\ndevice = \"intellivue\"\npath = \"{}\"", path.display()))
        .expect("source config")
}

fn simulation(scenario_text: &str, speed: f64) -> Simulation {
    let scenario = scenario::parse("test", scenario_text).expect("scenario");
    let opts = FeedOptions {
        scenario: "test".into(),
        device: Device::Intellivue,
        seed: 3,
        speed: Speed::Factor(speed),
        patient: 0,
        device_id: None,
    };
    Simulation::from_scenario(&scenario, &opts, chrono::Utc::now()).expect("simulation")
}

/// A calm patient; the monitor "restarts" (silent, then forgets the association) at 10 s for 16 s.
const RESTART: &str = r#"
description = "intellivue restart"
[session]
duration_s = 120
session_start_s = 0
infusion_start_s = 20
infusion_stop_s = 100
session_end_s = 120
[[patients]]
label = "calm"
[[patients.events]]
kind = "disconnect"
at_s = 10
duration_s = 16
"#;

/// The next event that matches within `secs`, skipping others.
async fn next(rx: &mut SourceReceiver, secs: u64, what: &str, pred: impl Fn(&SourceEvent) -> bool) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let e = *rx.recv().await.expect("the source keeps its inbox open");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {secs} s"))
}

fn spo2_of(e: &SourceEvent) -> Option<f64> {
    match e {
        SourceEvent::Frame { frame, .. } => {
            frame.measurements.iter().find(|m| m.parameter == Parameter::Spo2).and_then(|m| m.value)
        }
        _ => None,
    }
}

fn link_reason(e: &SourceEvent, state: LinkState) -> Option<String> {
    match e {
        SourceEvent::Link { state: s, reason, .. } if *s == state => Some(reason.clone().unwrap_or_default()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_associates_over_a_pty_and_after_a_monitor_restart_says_so_reassociates_and_readings_resume() {
    let pty = Pty::open().expect("a pseudo-terminal");
    let path = pty.path.clone();
    let sim = tokio::spawn(pty.run(simulation(RESTART, 2.0), Speed::Factor(2.0)));
    let source = SourceId::new("chair-1", 0);
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serial::run(source, source_config(&path), tx, cancel.clone()));

    // The port opens, the association comes up and SpO2 flows before the monitor's restart at 5 s.
    let spo2 = next(&mut rx, 4, "SpO2", |e| spo2_of(e).is_some()).await;
    assert!((90.0..=100.0).contains(&spo2_of(&spo2).unwrap()));

    // The monitor goes quiet at 5 s (virtual 10 s): the session says why, loudly, as a lost link.
    let lost = next(&mut rx, 20, "a lost association", |e| link_reason(e, LinkState::Disconnected).is_some()).await;
    let reason = link_reason(&lost, LinkState::Disconnected).unwrap();
    assert!(reason.contains("no poll result"), "{reason}");

    // It is back after 8 s (virtual 16 s): the session associates again and readings resume.
    next(&mut rx, 20, "the association again", |e| link_reason(e, LinkState::Connected).is_some()).await;
    let again = next(&mut rx, 10, "SpO2 after the restart", |e| spo2_of(e).is_some()).await;
    assert!(spo2_of(&again).is_some());
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").unwrap().unwrap();
    sim.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_line_is_counted_and_a_shutdown_releases_the_association() {
    // The test plays the monitor on the master side of a pty.
    let pair = nix::pty::openpty(None, None).expect("openpty");
    let path = std::fs::read_link(format!("/proc/self/fd/{}", pair.slave.as_raw_fd())).expect("slave path");
    let mut master = std::fs::File::from(pair.master);
    let tick = simulation(RESTART, 1.0).next().expect("a second of simulation");
    let source = SourceId::new("chair-1", 0);
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serial::run(source, source_config(&path), tx, cancel.clone()));

    let releases = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = releases.clone();
    let playing = std::thread::spawn(move || {
        let mut m = monitor::Monitor::new();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        let mut garbage_sent = false;
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            for request in monitor::host_frames(&mut received) {
                if request[0] == 0x09 {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                for reply in m.answer(&request, &tick.sample, None) {
                    if m.associated() && !garbage_sent {
                        // Line noise and a frame with a broken checksum between good frames.
                        let mut broken = monitor::frame(&reply);
                        let at = broken.len() - 3;
                        broken[at] ^= 0x55;
                        master.write_all(b"\x00\x13noise").unwrap();
                        master.write_all(&broken).unwrap();
                        garbage_sent = true;
                    }
                    master.write_all(&monitor::frame(&reply)).unwrap();
                }
            }
        }
    });
    next(&mut rx, 15, "SpO2", |e| spo2_of(e).is_some()).await;
    let counted = next(
        &mut rx,
        15,
        "bad frames counted",
        |e| matches!(e, SourceEvent::Counters { frames_bad, .. } if *frames_bad >= 2),
    )
    .await;
    let SourceEvent::Counters { last_error, frames_ok, .. } = counted else { unreachable!() };
    assert!(last_error.is_some_and(|e| e.contains("intellivue")));
    assert!(frames_ok >= 1);
    next(&mut rx, 10, "SpO2 after the garbage", |e| spo2_of(e).is_some()).await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").unwrap().unwrap();
    // The release went out before the port closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while releases.load(std::sync::atomic::Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(releases.load(std::sync::atomic::Ordering::SeqCst), 1, "one release request at shutdown");
    drop(pair.slave);
    let _ = playing.join();
}

fn daemon_config(port: u16, dir: &Path, pty: &Path) -> Config {
    let source = format!("kind = \"serial\"\ndevice = \"intellivue\"\npath = \"{}\"", pty.display());
    common::one_bed_config("embedded", port, dir, &source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_intellivues_own_spo2_low_reaches_mqtt_and_the_dashboard_beside_vigils_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let pty = Pty::open().expect("a pseudo-terminal");
    let path = pty.path.clone();
    let scenario = scenario::load("desaturation").unwrap();
    let opts = FeedOptions {
        scenario: "desaturation".into(),
        device: Device::Intellivue,
        seed: 7,
        speed: Speed::Factor(10.0),
        patient: 0,
        device_id: None,
    };
    let sim = Simulation::from_scenario(&scenario, &opts, chrono::Utc::now()).unwrap();
    let simulator = tokio::spawn(pty.run(sim, Speed::Factor(10.0)));
    let port = free_port();
    let shutdown = CancellationToken::new();
    let running = vigil::start(daemon_config(port, dir.path(), &path), shutdown.clone()).await.unwrap();
    let dashboard = running.dashboard;
    let daemon = tokio::spawn(running.wait());

    let mut opts = MqttOptions::new(format!("test-sub-{port}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5)).set_credentials("victor", "rotciv");
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client.subscribe("vigil/v1/test-site/test-ward/bed/chair-1/alarm", QoS::AtLeastOnce).await.unwrap();
    let alarm = wait_for_publish(&mut eventloop, Duration::from_secs(40), |_, payload| {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        v["source"] == "monitor" && v["phase"] == "start"
    })
    .await
    .expect("the monitor's own alarm on MQTT within 40 s");
    let alarm: serde_json::Value = serde_json::from_slice(&alarm).unwrap();
    assert_eq!(alarm["kind"], "device");
    assert_eq!(alarm["condition"], "monitor_alarm");
    assert_eq!(alarm["evidence"]["text"], "SpO2 LOW");
    assert_eq!(alarm["parameter"]["name"], "spo2");
    assert!(alarm["value"].as_f64().is_some_and(|v| v < 90.0), "the reading that explains it: {alarm}");

    // The dashboard's snapshot shows SpO2, pulse and the monitor's alarm; Vigil's own SpO2 alarm is a separate one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = common::http_get(dashboard, "/api/snapshot").await;
        let body: serde_json::Value =
            serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap_or("null")).unwrap_or_default();
        let bed = &body["beds"][0];
        let alarms = bed["alarms"]["alarms"].as_array().cloned().unwrap_or_default();
        let monitor_alarm = alarms.iter().any(|a| a["source"] == "monitor" && a["message"] == "Monitor: SpO2 LOW");
        let vigil_alarm = alarms.iter().any(|a| a["source"] == "vigil" && a["parameter"] == "spo2");
        let values = bed["vitals"]["values"].as_array().cloned().unwrap_or_default();
        let has = |p: &str| values.iter().any(|v| v["parameter"] == p && v["value"].is_number());
        if monitor_alarm && vigil_alarm && has("spo2") && has("pr") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "snapshot never showed both alarms and the values: {bed}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), daemon).await.expect("stops").unwrap();
    simulator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_that_is_none_of_vigils_parameters_is_published_in_the_vitals_by_its_mdc_code_and_never_alarmed() {
    // The test plays the monitor on the master side of a pty: the simulator's answers, and after each numerics
    // result one more with a temperature (`NOM_TEMP`, 36.9 °C), which Vigil has no parameter for.
    let dir = tempfile::tempdir().unwrap();
    let pair = nix::pty::openpty(None, None).expect("openpty");
    let path = std::fs::read_link(format!("/proc/self/fd/{}", pair.slave.as_raw_fd())).expect("slave path");
    let mut master = std::fs::File::from(pair.master);
    let tick = simulation(RESTART, 1.0).next().expect("a second of simulation");
    let playing = std::thread::spawn(move || {
        let mut m = monitor::Monitor::new();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            for request in monitor::host_frames(&mut received) {
                for reply in m.answer(&request, &tick.sample, None) {
                    if master.write_all(&monitor::frame(&reply)).is_err() {
                        return;
                    }
                    if m.associated() {
                        let temperature = monitor::nu_obs(0x4B48, 0, 0x17A0, monitor::float(Some(36.9), -1));
                        let object = monitor::observation(0x0060, &[(0x0950, temperature)]);
                        let time = monitor::abs_time(chrono::Utc::now());
                        let extra = monitor::poll_result(0x7F00, 1, 6, 0x0803, time, &[object]);
                        if master.write_all(&monitor::frame(&extra)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let port = free_port();
    let shutdown = CancellationToken::new();
    let running = vigil::start(daemon_config(port, dir.path(), &path), shutdown.clone()).await.unwrap();
    let daemon = tokio::spawn(running.wait());

    let mut opts = MqttOptions::new(format!("test-sub-{port}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5)).set_credentials("victor", "rotciv");
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client.subscribe("vigil/v1/test-site/test-ward/bed/chair-1/vitals", QoS::AtMostOnce).await.unwrap();
    client.subscribe("vigil/v1/test-site/test-ward/bed/chair-1/alarm", QoS::AtLeastOnce).await.unwrap();
    let mut alarms = Vec::new();
    let vitals = wait_for_publish(&mut eventloop, Duration::from_secs(30), |topic, payload| {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        if topic.ends_with("/alarm") {
            alarms.push(v);
            return false;
        }
        let other = v["other"].as_array().cloned().unwrap_or_default();
        let has_spo2 = v["values"].as_array().is_some_and(|a| a.iter().any(|x| x["parameter"]["name"] == "spo2"));
        has_spo2 && other.iter().any(|o| o["mdc_code"] == 150_344)
    })
    .await
    .expect("vitals with SpO2 and the temperature on MQTT within 30 s");
    let vitals: serde_json::Value = serde_json::from_slice(&vitals).unwrap();
    let temperature = &vitals["other"][0];
    assert_eq!(temperature["unit_code"], 268_192, "MDC_DIM_DEGC: {vitals}");
    assert!(temperature["value"].as_f64().is_some_and(|v| (v - 36.9).abs() < 1e-9), "{vitals}");
    assert_eq!(temperature["status"], "valid");
    let names: Vec<_> = vitals["values"].as_array().unwrap().iter().map(|x| x["parameter"]["name"].clone()).collect();
    assert!(!names.iter().any(|n| n == "temp" || n.is_null()), "the temperature is no parameter: {names:?}");
    assert!(!alarms.iter().any(|a| a.to_string().contains("150344")), "nothing alarms on the temperature: {alarms:?}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), daemon).await.expect("stops").unwrap();
    drop(pair.slave);
    let _ = playing.join();
}

fn udp_config(address: &str) -> SourceConfig {
    toml::from_str(&format!("kind = \"udp\"\ndevice = \"intellivue\"\naddress = \"{address}\"")).expect("udp config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_runs_over_udp_on_loopback_and_reassociates_after_a_monitor_restart() {
    let port = free_udp_port();
    let sim = tokio::spawn(vigil_sim::output::run_udp(simulation(RESTART, 2.0), Speed::Factor(2.0), port));
    let source = SourceId::new("chair-1", 0);
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let cfg = udp_config(&format!("127.0.0.1:{port}"));
    let task = tokio::spawn(vigil::ingest::udp::run(source, cfg, tx, cancel.clone()));

    let spo2 = next(&mut rx, 4, "SpO2 over udp", |e| spo2_of(e).is_some()).await;
    assert!((90.0..=100.0).contains(&spo2_of(&spo2).unwrap()));
    let lost = next(&mut rx, 20, "a lost association", |e| link_reason(e, LinkState::Disconnected).is_some()).await;
    assert!(link_reason(&lost, LinkState::Disconnected).unwrap().contains("no poll result"));
    next(&mut rx, 20, "the association again", |e| link_reason(e, LinkState::Connected).is_some()).await;
    next(&mut rx, 10, "SpO2 after the restart", |e| spo2_of(e).is_some()).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").unwrap().unwrap();
    sim.abort();
}

/// A UDP port of 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_runs_through_a_device_server_to_a_tcp_source() {
    let port = free_port();
    let sim = simulation(RESTART, 2.0);
    let server = tokio::spawn(vigil_sim::output::run_tcp_listen(
        sim,
        Speed::Factor(2.0),
        format!("127.0.0.1:{port}"),
        "bed 1 (intellivue)".into(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let source = SourceId::new("chair-1", 0);
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let cfg: SourceConfig =
        toml::from_str(&format!("kind = \"tcp\"\ndevice = \"intellivue\"\naddress = \"127.0.0.1:{port}\"")).unwrap();
    let task = tokio::spawn(vigil::ingest::tcp::run(source, cfg, tx, cancel.clone()));
    let spo2 = next(&mut rx, 4, "SpO2 through the device server", |e| spo2_of(e).is_some()).await;
    assert!((90.0..=100.0).contains(&spo2_of(&spo2).unwrap()));
    let lost = next(&mut rx, 20, "a lost association", |e| link_reason(e, LinkState::Disconnected).is_some()).await;
    assert!(link_reason(&lost, LinkState::Disconnected).is_some());
    next(&mut rx, 30, "SpO2 after the restart", |e| spo2_of(e).is_some()).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").unwrap().unwrap();
    server.abort();
}

/// A connect indication laid out as OpenICE's IntelliVue adapter reads it (nomenclature `00 00 01 00`, an
/// event report `NOM_NOTI_CONN_INDIC`, protocol support with Data Export over UDP on `port`, the network
/// address 127.0.0.1).
fn connect_indication(port: u16) -> Vec<u8> {
    let be = |v: &[u16]| v.iter().flat_map(|p| p.to_be_bytes()).collect::<Vec<u8>>();
    let mut attrs = be(&[0xF101, 20, 2, 16, 1, 1, port, 0, 5, 1, port, 0]);
    attrs.extend(be(&[0xF100, 14]));
    attrs.extend([0x00, 0x09, 0xFB, 0x01, 0x02, 0x03, 127, 0, 0, 1, 255, 0, 0, 0]);
    let mut info = be(&[2, attrs.len() as u16]);
    info.extend(attrs);
    let mut event = be(&[0x0021, 0, 0, 0, 0, 0x0D17, info.len() as u16]);
    event.extend(info);
    let mut roiv = be(&[0, 0, event.len() as u16]);
    roiv.extend(event);
    let mut out = vec![0x00, 0x00, 0x01, 0x00];
    out.extend(be(&[1, roiv.len() as u16]));
    out.extend(roiv);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_source_without_an_address_associates_with_the_monitor_whose_connect_indication_arrives() {
    // The "monitor": a UDP socket on loopback that records what reaches it.
    let monitor = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let monitor_port = monitor.local_addr().unwrap().port();
    let listen = free_udp_port();
    let cfg: SourceConfig = toml::from_str(&format!(
        "kind = \"udp\"\ndevice = \"intellivue\"\ndiscover_listen = \"127.0.0.1:{listen}\"\nmonitor_ip = \"127.0.0.1\""
    ))
    .expect("udp discovery config");
    let (tx, _rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(vigil::ingest::udp::run(SourceId::new("chair-1", 0), cfg, tx, cancel.clone()));

    // Nothing is sent before a connect indication arrives.
    let mut buf = [0u8; 2048];
    let quiet = tokio::time::timeout(Duration::from_millis(500), monitor.recv_from(&mut buf)).await;
    assert!(quiet.is_err(), "an association request before any connect indication");

    // Broadcast stand-in: connect indications sent to the discovery port until the association request comes.
    let beacon = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let request = loop {
        assert!(tokio::time::Instant::now() < deadline, "no association request after the connect indications");
        beacon.send_to(b"not a connect indication", ("127.0.0.1", listen)).unwrap();
        beacon.send_to(&connect_indication(monitor_port), ("127.0.0.1", listen)).unwrap();
        if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(300), monitor.recv_from(&mut buf)).await {
            break buf[..n].to_vec();
        }
    };
    assert_eq!(request, vigil::ingest::protocol::intellivue::association_request(), "the association starts");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").unwrap().unwrap();
}
