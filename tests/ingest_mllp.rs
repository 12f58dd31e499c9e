//! The MLLP listener over real TCP with a Rust HL7 client: ACKs, routing by MSH-3, bad input, many connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use vigil::config::MllpConfig;
use vigil::event::LinkState;
use vigil::ingest::protocol::hl7;
use vigil::ingest::protocol::mllp::MllpCodec;
use vigil::ingest::{IngestError, MllpListener, SourceEvent, SourceId, SourceReceiver};
use vigil::vitals::Parameter;

const GUARD: Duration = Duration::from_secs(30);

/// Sample [1] of the fixture: the real Mindray VS-900 message, segments joined with CR as on the wire.
fn mindray() -> String {
    include_str!("fixtures/hl7/pcd01_samples.txt")
        .lines()
        .skip_while(|l| !l.starts_with("MSH|^~\\&|MINDRAY_VS900^00A0370098007A80"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\r")
}

struct Ward {
    addr: SocketAddr,
    chair3: SourceReceiver,
    chair4: SourceReceiver,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn ward(idle_timeout_s: u64) -> Ward {
    ward_with(idle_timeout_s, Vec::new(), HashMap::new())
}

fn ward_with(idle_timeout_s: u64, allow: Vec<String>, pins: HashMap<String, std::net::IpAddr>) -> Ward {
    let cfg = MllpConfig {
        listen: "127.0.0.1:0".into(),
        max_message_bytes: 4096,
        idle_timeout_s,
        allow,
        ..Default::default()
    };
    let listener = MllpListener::bind(&cfg).expect("bind").with_pins(pins);
    let addr = listener.local_addr();
    let (tx3, chair3) = mpsc::channel(64);
    let (tx4, chair4) = mpsc::channel(64);
    let mut routes = HashMap::new();
    // Lower case on purpose: ids are matched case-insensitively.
    routes.insert("00a0370098007a80".to_owned(), (SourceId::new("chair-3", 0), tx3));
    routes.insert("00A037009B023649".to_owned(), (SourceId::new("chair-4", 1), tx4));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(listener.run(routes, cancel.clone()));
    Ward { addr, chair3, chair4, cancel, task }
}

async fn connect(addr: SocketAddr) -> Framed<TcpStream, MllpCodec> {
    Framed::new(TcpStream::connect(addr).await.expect("connect"), MllpCodec::new(1 << 16))
}

/// Sends one message and returns (MSA-1, MSA-2, the whole ACK text).
async fn send(client: &mut Framed<TcpStream, MllpCodec>, msg: &[u8]) -> (String, String, String) {
    client.send(msg).await.expect("send");
    let ack =
        tokio::time::timeout(GUARD, client.next()).await.expect("an ACK").expect("open").expect("io").expect("mllp");
    let (code, id) = hl7::parse_ack(&ack).expect("a readable ACK");
    (code, id, String::from_utf8_lossy(&ack).into_owned())
}

async fn next(rx: &mut SourceReceiver, pred: impl Fn(&SourceEvent) -> bool) -> SourceEvent {
    tokio::time::timeout(GUARD, async {
        loop {
            let e = *rx.recv().await.expect("inbox open");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event in time")
}

fn value(e: &SourceEvent, p: Parameter) -> Option<f64> {
    let SourceEvent::Frame { frame, .. } = e else { return None };
    frame.measurements.iter().find(|m| m.parameter == p).and_then(|m| m.value)
}

#[tokio::test]
async fn a_real_mindray_message_gets_aa_with_its_control_id_and_its_nibp_reaches_the_bed_matching_msh3() {
    let mut w = ward(300);
    let mut client = connect(w.addr).await;
    let (code, id, _) = send(&mut client, mindray().as_bytes()).await;
    assert_eq!((code.as_str(), id.as_str()), ("AA", "1914"));

    let link = next(&mut w.chair3, |e| matches!(e, SourceEvent::Link { .. })).await;
    assert!(matches!(link, SourceEvent::Link { state: LinkState::Connected, .. }), "{link:?}");
    let frame = next(&mut w.chair3, |e| matches!(e, SourceEvent::Frame { .. })).await;
    assert_eq!(frame.source().to_string(), "chair-3/0");
    assert_eq!(value(&frame, Parameter::NibpSys), Some(147.0));
    assert_eq!(value(&frame, Parameter::NibpDia), Some(90.0));
    assert_eq!(value(&frame, Parameter::NibpMean), Some(109.0));
    assert_eq!(value(&frame, Parameter::Spo2), Some(99.0));
    assert!(w.chair4.try_recv().is_err(), "nothing for the other bed");

    // Closing the connection is a disconnect for that bed.
    drop(client);
    let link = next(&mut w.chair3, |e| matches!(e, SourceEvent::Link { .. })).await;
    assert!(matches!(link, SourceEvent::Link { state: LinkState::Disconnected, .. }), "{link:?}");
    w.cancel.cancel();
    w.task.await.unwrap();
}

#[tokio::test]
async fn a_broken_message_gets_ae_and_the_connection_keeps_working() {
    let mut w = ward(300);
    let mut client = connect(w.addr).await;
    let (code, id, text) = send(&mut client, b"this is not HL7").await;
    assert_eq!((code.as_str(), id.as_str()), ("AE", ""), "{text}");
    assert!(text.contains("ERR|"), "{text}");

    let broken = "MSH|^~\\&|MINDRAY_VS900^00A0370098007A80^EUI-64||||20191206113452||ORU^R01|77|P|2.6\r\u{1}\u{2}junk";
    let (code, id, text) = send(&mut client, broken.as_bytes()).await;
    assert_eq!((code.as_str(), id.as_str()), ("AE", "77"), "{text}");

    let too_long = format!("{}\r{}", mindray(), "NTE|1||x".repeat(1000));
    let (code, _, text) = send(&mut client, too_long.as_bytes()).await;
    assert_eq!(code, "AE", "{text}");
    assert!(text.contains("too long"), "{text}");

    let (code, id, _) = send(&mut client, mindray().as_bytes()).await;
    assert_eq!((code.as_str(), id.as_str()), ("AA", "1914"));
    next(&mut w.chair3, |e| matches!(e, SourceEvent::Frame { .. })).await;
    let counters =
        next(&mut w.chair3, |e| matches!(e, SourceEvent::Counters { frames_bad, .. } if *frames_bad >= 1)).await;
    let SourceEvent::Counters { frames_bad, last_error, .. } = counters else { unreachable!() };
    assert_eq!(frames_bad, 1, "the broken message from this device counts against it; anonymous garbage cannot");
    assert!(last_error.is_some());
    w.cancel.cancel();
    w.task.await.unwrap();
}

#[tokio::test]
async fn an_unknown_device_id_gets_ar_naming_it_and_reaches_no_bed() {
    let mut w = ward(300);
    let mut client = connect(w.addr).await;
    let stranger = mindray().replace("00A0370098007A80", "00A0370098FFFFFF");
    let (code, id, text) = send(&mut client, stranger.as_bytes()).await;
    assert_eq!((code.as_str(), id.as_str()), ("AR", "1914"), "{text}");
    assert!(text.contains("00A0370098FFFFFF"), "the reason names the id: {text}");
    let adt = "MSH|^~\\&|X^00A0370098007A80^EUI-64||||20240101||ADT^A01|5|P|2.5";
    let (code, id, text) = send(&mut client, adt.as_bytes()).await;
    assert_eq!((code.as_str(), id.as_str()), ("AR", "5"), "{text}");
    // No value reached a bed (link and counter reports of the beds' own sources may, on their own clock).
    for rx in [&mut w.chair3, &mut w.chair4] {
        while let Ok(e) = rx.try_recv().map(|e| *e) {
            assert!(!matches!(e, SourceEvent::Frame { .. }), "a frame was routed: {e:?}");
        }
    }
    w.cancel.cancel();
    w.task.await.unwrap();
}

#[tokio::test]
async fn a_stalled_connection_does_not_block_another_device() {
    let mut w = ward(300);
    // A peer that sends half a frame and then nothing.
    let mut stalled = TcpStream::connect(w.addr).await.unwrap();
    stalled.write_all(b"\x0bMSH|^~\\&|half a message").await.unwrap();
    // A peer that sends garbage and never reads its ACKs.
    let mut rude = TcpStream::connect(w.addr).await.unwrap();
    rude.write_all(&[0x55; 10_000]).await.unwrap();

    let demo = include_str!("fixtures/hl7/pcd01_samples.txt")
        .lines()
        .skip_while(|l| !l.starts_with("MSH|^~\\&|MINDRAY_VS_SERIES^00A037009B023649"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\r");
    let mut a = connect(w.addr).await;
    let mut b = connect(w.addr).await;
    let (code_a, _, _) = send(&mut a, mindray().as_bytes()).await;
    let (code_b, id_b, _) = send(&mut b, demo.as_bytes()).await;
    assert_eq!((code_a.as_str(), code_b.as_str(), id_b.as_str()), ("AA", "AA", "1"));
    let f = next(&mut w.chair4, |e| matches!(e, SourceEvent::Frame { .. })).await;
    let SourceEvent::Frame { frame, .. } = f else { unreachable!() };
    assert!(frame.demo, "sample [3] is a demo-mode message");
    next(&mut w.chair3, |e| matches!(e, SourceEvent::Frame { .. })).await;
    w.cancel.cancel();
    w.task.await.unwrap();
}

#[tokio::test]
async fn an_idle_connection_is_closed_by_the_listener() {
    let w = ward(1);
    let mut idle = TcpStream::connect(w.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(GUARD, idle.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0, "the listener closed the idle connection");
    w.cancel.cancel();
    w.task.await.unwrap();
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_mllp_listen() {
    let w = ward(300);
    let cfg = MllpConfig { listen: w.addr.to_string(), ..MllpConfig::default() };
    let err = MllpListener::bind(&cfg).expect_err("the port is taken");
    assert!(matches!(err, IngestError::Bind { .. }));
    assert!(err.to_string().starts_with("mllp.listen:"), "{err}");
    w.cancel.cancel();
    w.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_limit_a_thousand_monitors_are_served_at_once_and_the_last_one_gets_its_ack() {
    let mut w = ward(300);
    assert_eq!(MllpConfig::default().max_connections, 1024);
    let mut clients = Vec::new();
    for _ in 0..999 {
        clients.push(connect(w.addr).await);
    }
    let mut last = connect(w.addr).await;
    let (code, _, ack) = send(&mut last, mindray().as_bytes()).await;
    assert_eq!(code, "AA", "the 1000th connection is served: {ack}");
    next(&mut w.chair3, |e| matches!(e, SourceEvent::Frame { .. })).await;
    // The first ones are still open and served too.
    let (code, _, _) = send(&mut clients[0], mindray().as_bytes()).await;
    assert_eq!(code, "AA");
    w.cancel.cancel();
    let _ = tokio::time::timeout(GUARD, w.task).await;
}

/// Connects from a chosen loopback source address (Linux routes all of 127.0.0.0/8 to lo).
async fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).expect("bind the source address");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test]
async fn a_peer_outside_mllp_allow_is_refused_at_accept_and_counted_while_an_allowed_one_gets_aa() {
    let listener_cfg =
        MllpConfig { listen: "127.0.0.1:0".into(), allow: vec!["127.0.0.1".into()], ..Default::default() };
    let listener = MllpListener::bind(&listener_cfg).unwrap();
    let refused = listener.refused_peers();
    let addr = listener.local_addr();
    let (tx3, mut chair3) = mpsc::channel(64);
    let routes = HashMap::from([("00A0370098007A80".to_owned(), (SourceId::new("chair-3", 0), tx3))]);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(listener.run(routes, cancel.clone()));

    let mut stranger = connect_from("127.0.0.2", addr).await;
    let _ = stranger.write_all(&hl7_frame(&mindray())).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(GUARD, stranger.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0, "no ACK for a peer outside the allow-list: the connection is closed");
    assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(chair3.try_recv().is_err(), "nothing reached the bed");

    let mut friend = Framed::new(connect_from("127.0.0.1", addr).await, MllpCodec::new(1 << 16));
    let (code, _, _) = send(&mut friend, mindray().as_bytes()).await;
    assert_eq!(code, "AA");
    next(&mut chair3, |e| matches!(e, SourceEvent::Frame { .. })).await;
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_device_pinned_to_a_peer_address_is_refused_from_another_allowed_address() {
    let pins = HashMap::from([("00a0370098007a80".to_owned(), "127.0.0.1".parse().unwrap())]);
    let mut w = ward_with(300, vec!["127.0.0.0/8".into()], pins);
    let mut other = Framed::new(connect_from("127.0.0.3", w.addr).await, MllpCodec::new(1 << 16));
    let (code, _, text) = send(&mut other, mindray().as_bytes()).await;
    assert_eq!(code, "AR", "{text}");
    assert!(text.contains("accepted only from 127.0.0.1"), "{text}");
    let mut pinned = Framed::new(connect_from("127.0.0.1", w.addr).await, MllpCodec::new(1 << 16));
    let (code, _, _) = send(&mut pinned, mindray().as_bytes()).await;
    assert_eq!(code, "AA");
    let frame = next(&mut w.chair3, |e| matches!(e, SourceEvent::Frame { .. })).await;
    assert_eq!(value(&frame, Parameter::NibpSys), Some(147.0));
    w.cancel.cancel();
    w.task.await.unwrap();
}

#[test]
fn the_default_allow_list_is_loopback_and_entries_may_be_addresses_or_blocks() {
    use vigil::ingest::mllp_listener::peer_allowed;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(peer_allowed(&[], ip("127.0.0.1")));
    assert!(peer_allowed(&[], ip("::1")));
    assert!(!peer_allowed(&[], ip("10.1.2.3")));
    let allow: Vec<_> =
        ["10.1.2.0/24", "10.1.3.7"].iter().map(|a| vigil::config::parse_peer_block(a).unwrap()).collect();
    assert!(peer_allowed(&allow, ip("10.1.2.200")));
    assert!(peer_allowed(&allow, ip("::ffff:10.1.3.7")), "IPv4-mapped peers count as IPv4");
    assert!(!peer_allowed(&allow, ip("10.1.3.8")));
    assert!(!peer_allowed(&allow, ip("127.0.0.1")), "an explicit list replaces the loopback default");
    assert!(vigil::config::parse_peer_block("10.1.2.0/33").is_err());
    assert_eq!(MllpConfig::default().listen, "127.0.0.1:2575");
}

fn hl7_frame(msg: &str) -> Vec<u8> {
    let mut v = vec![0x0b];
    v.extend_from_slice(msg.as_bytes());
    v.extend_from_slice(&[0x1c, 0x0d]);
    v
}
