//! IntelliVue captures as a real monitor's traffic is recorded: a pcap and a pcapng of the LAN interface (both
//! directions, other traffic mixed in), the serial link with both directions, and datagram payloads back to
//! back; each through `vigil decode` (the library's `decode::run`, as the binary calls it) and `vigil replay`'s
//! reader. The messages are laid out by hand from the Data Export structures (VSCaptureMP and OpenICE read them
//! the same way); the host's requests are Vigil's own encoders. The monitor's absolute time is left unset in the
//! poll result (VSCaptureMP: several monitors do), so its time comes from the MDS Create event's clock.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use vigil::ingest::protocol::intellivue::{
    association_request, frame, mds_create_result, poll_request, IntelliVueDecoder, LAN_DATA_PORT,
};

const MONITOR: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 50);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 9);
const HOST_PORT: u16 = 50111;

fn be(parts: &[u16]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.to_be_bytes()).collect()
}

/// `E1 00 00 02`, ROapdus (type, length) and `body`.
fn data(ro_type: u16, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xE1, 0x00, 0x00, 0x02];
    out.extend(be(&[ro_type, body.len() as u16]));
    out.extend_from_slice(body);
    out
}

/// The association response: AC SPDU, its length indicator and (here) an opaque rest.
fn accept() -> Vec<u8> {
    vec![0x0E, 0x04, 0xC1, 0x02, 0x00, 0x00]
}

/// The MDS Create event (ROIV, CMD_CONFIRMED_EVENT_REPORT) with NOM_ATTR_TIME_ABS 2026-03-05 10:00:00.00 and
/// NOM_ATTR_TIME_REL 0x10000 (1/8 ms).
fn mds_create() -> Vec<u8> {
    let mut attrs = be(&[0x0987, 8]);
    attrs.extend([0x20, 0x26, 0x03, 0x05, 0x10, 0x00, 0x00, 0x00]);
    attrs.extend(be(&[0x098F, 4, 0x0001, 0x0000]));
    let mut info = be(&[0x0021, 0, 0]); // MdsCreateInfo: the MDS
    info.extend(be(&[2, attrs.len() as u16]));
    info.extend(attrs);
    let mut event = be(&[0x0021, 0, 0, 0, 0, 0x0D06, info.len() as u16]);
    event.extend(info);
    let mut roiv = be(&[1, 1, event.len() as u16]);
    roiv.extend(event);
    data(1, &roiv)
}

/// An extended poll result for numerics at relative time 0x10000 + 8000 (one second after the MDS Create),
/// absolute time unset (zeros): SpO2 85 % at handle 0x50.
fn numerics_result() -> Vec<u8> {
    let value = be(&[0x4BB8, 0x0000, 0x0220, 0x0000, 85]);
    let mut attr = be(&[0x0950, value.len() as u16]);
    attr.extend(value);
    let mut object = be(&[0x0050, 1, attr.len() as u16]);
    object.extend(attr);
    let mut context = be(&[0, 1, object.len() as u16]);
    context.extend(object);
    let mut reply = be(&[1, 0, 0x0001, 8000]); // poll number, sequence, relative time
    reply.extend([0; 8]); // absolute time unset
    reply.extend(be(&[1, 6, 0x0803, 1, context.len() as u16]));
    reply.extend(context);
    let mut action = be(&[0x0021, 0, 0, 0xF13B, reply.len() as u16]);
    action.extend(reply);
    let mut rors = be(&[5, 7, action.len() as u16]);
    rors.extend(action);
    data(2, &rors)
}

/// The conversation in order: (from the monitor?, payload).
fn conversation() -> Vec<(bool, Vec<u8>)> {
    vec![
        (false, association_request()),
        (true, accept()),
        (true, mds_create()),
        (false, mds_create_result(1)),
        (false, poll_request(2, 1, 6, 0x0803)),
        (true, numerics_result()),
    ]
}

fn udp_packet(from_monitor: bool, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sp, dp) = if from_monitor {
        (MONITOR, HOST, LAN_DATA_PORT, HOST_PORT)
    } else {
        (HOST, MONITOR, HOST_PORT, LAN_DATA_PORT)
    };
    udp_between(src, dst, sp, dp, payload)
}

fn udp_between(src: Ipv4Addr, dst: Ipv4Addr, sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sp, dp);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

/// Capture start: 2026-03-05T09:00:00Z, a packet every 100 ms, a DNS query in between.
const T0: u32 = 1_772_701_200;

fn packets() -> Vec<(u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for (k, (from_monitor, payload)) in conversation().into_iter().enumerate() {
        out.push((T0, k as u32 * 100_000, udp_packet(from_monitor, &payload)));
        if k == 2 {
            out.push((T0, k as u32 * 100_000 + 50_000, udp_between(HOST, MONITOR, 40000, 53, b"dns?")));
        }
    }
    out
}

/// A little-endian microsecond pcap of Ethernet packets (libpcap file format).
fn pcap(packets: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xA1B2_C3D4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0; 8]);
    out.extend(65535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (secs, micros, data) in packets {
        for v in [*secs, *micros, data.len() as u32, data.len() as u32] {
            out.extend(v.to_le_bytes());
        }
        out.extend(data);
    }
    out
}

/// A big-endian pcapng: section header, one Ethernet interface with no `if_tsresol` (microseconds), enhanced
/// packet blocks.
fn pcapng(packets: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(len.to_be_bytes());
        out.extend(body);
        out.resize(8 + padded, 0);
        out.extend(len.to_be_bytes());
        out
    }
    let mut shb = 0x1A2B_3C4Du32.to_be_bytes().to_vec();
    shb.extend(be(&[1, 0]));
    shb.extend(u64::MAX.to_be_bytes()); // section length unknown
    let mut out = block(0x0A0D_0D0A, &shb);
    let mut idb = be(&[1, 0]);
    idb.extend(0u32.to_be_bytes());
    out.extend(block(1, &idb));
    for (secs, micros, data) in packets {
        let units = u64::from(*secs) * 1_000_000 + u64::from(*micros);
        let mut epb = 0u32.to_be_bytes().to_vec();
        epb.extend(((units >> 32) as u32).to_be_bytes());
        epb.extend((units as u32).to_be_bytes());
        epb.extend((data.len() as u32).to_be_bytes());
        epb.extend((data.len() as u32).to_be_bytes());
        epb.extend(data);
        out.extend(block(6, &epb));
    }
    out
}

fn decode(bytes: &[u8]) -> (vigil::decode::Summary, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture");
    std::fs::write(&path, bytes).unwrap();
    let mut out = Vec::new();
    let summary = vigil::decode::run("intellivue", &path, &mut out).unwrap();
    let lines = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (summary, lines)
}

fn spo2_lines(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines.iter().filter(|l| l["kind"] == "reading" && l["parameter"] == "spo2").collect()
}

#[test]
fn a_pcap_of_both_directions_decodes_the_monitors_spo2_with_the_time_from_its_relative_clock() {
    let (summary, lines) = decode(&pcap(&packets()));
    assert_eq!(summary.frames_bad, 0, "{lines:?}");
    assert_eq!(summary.frames_ok, 6, "every message of both directions, the DNS packet left out: {lines:?}");
    let spo2 = spo2_lines(&lines);
    assert_eq!(spo2.len(), 1, "{lines:?}");
    assert_eq!(spo2[0]["value"], 85.0);
    assert_eq!(spo2[0]["device_time"], "2026-03-05T10:00:01.000Z", "MDS Create clock + 8000 × 1/8 ms");
    assert_eq!(spo2[0]["received"], "2026-03-05T09:00:00.500Z", "the packet's capture time");
}

#[test]
fn a_pcapng_with_microsecond_stamps_reads_the_same_times() {
    let (summary, lines) = decode(&pcapng(&packets()));
    assert_eq!((summary.frames_ok, summary.frames_bad), (6, 0), "{lines:?}");
    let spo2 = spo2_lines(&lines);
    assert_eq!(spo2.len(), 1);
    assert_eq!(spo2[0]["received"], "2026-03-05T09:00:00.500Z");
}

#[test]
fn a_serial_capture_of_both_directions_interleaved_decodes_without_bad_frames() {
    let bytes: Vec<u8> = conversation().iter().flat_map(|(_, p)| frame(p)).collect();
    let (summary, lines) = decode(&bytes);
    assert_eq!((summary.frames_ok, summary.frames_bad), (6, 0), "{lines:?}");
    assert_eq!(spo2_lines(&lines)[0]["value"], 85.0);
}

#[test]
fn datagram_payloads_back_to_back_decode_as_lan_messages() {
    let bytes: Vec<u8> = conversation().into_iter().flat_map(|(_, p)| p).collect();
    let (summary, lines) = decode(&bytes);
    assert_eq!((summary.frames_ok, summary.frames_bad), (6, 0), "{lines:?}");
    assert_eq!(spo2_lines(&lines)[0]["device_time"], "2026-03-05T10:00:01.000Z");
}

#[test]
fn replay_reads_a_pcap_with_the_packet_time_as_the_receive_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lan.pcap");
    std::fs::write(&path, pcap(&packets())).unwrap();
    let start = chrono::Utc::now();
    let mut input = vigil::replay::input::open(&path, start, "intellivue", "chair-1").unwrap();
    let mut spo2 = Vec::new();
    while let Some(row) = input.next_row().unwrap() {
        if let vigil::replay::input::RowKind::Device(d) = row.kind {
            if d.parameter == vigil::vitals::Parameter::Spo2 {
                spo2.push((row.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), d.value));
            }
        }
    }
    assert_eq!(spo2, [("2026-03-05T09:00:00.500Z".to_owned(), Some(85.0))]);
}

#[test]
fn the_listening_decoder_fills_a_missing_absolute_time_from_the_mds_create_clock() {
    let mut decoder = IntelliVueDecoder::new();
    for (_, p) in conversation() {
        if let Some(frame) = decoder.decode_payload(&p) {
            let frame = frame.unwrap();
            let t = frame.device_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            assert_eq!(t.as_deref(), Some("2026-03-05T10:00:01.000Z"));
            return;
        }
    }
    panic!("no poll result decoded");
}
