//! The generic pump over in-memory streams (as the in-process simulator uses it): decoding, plausibility,
//! counting, and how it ends.

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil::config::DeviceKind;
use vigil::ingest::protocol::{mllp, nonin};
use vigil::ingest::{pump, PumpEnd, SourceEvent, SourceId, SourceReceiver};
use vigil::vitals::{Parameter, ValueStatus};

fn drain(rx: &mut SourceReceiver) -> Vec<SourceEvent> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv().map(|e| *e) {
        v.push(e);
    }
    v
}

fn frames(events: &[SourceEvent]) -> Vec<&vigil::ingest::protocol::Frame> {
    events.iter().filter_map(|e| if let SourceEvent::Frame { frame, .. } = e { Some(frame) } else { None }).collect()
}

fn last_counters(events: &[SourceEvent]) -> (u64, u64, u64, Option<String>) {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            SourceEvent::Counters { frames_ok, frames_bad, values_rejected, last_error, .. } => {
                Some((*frames_ok, *frames_bad, *values_rejected, last_error.clone()))
            }
            _ => None,
        })
        .expect("counters were sent")
}

#[tokio::test]
async fn bad_lines_are_counted_impossible_values_rejected_and_good_lines_still_flow_until_end_of_stream() {
    let input: &[u8] = b"SPO2=097% BPM=070\r\n\
        \x00\x01 line noise\r\n\
        SPO2=101% BPM=070\r\n\
        SPO2=000% BPM=000 EXC=000020\r\n\
        SPO2=095% BPM=072\r\n";
    let (tx, mut rx) = mpsc::channel(64);
    let source = SourceId::new("chair-1", 0);
    let end = pump(input, DeviceKind::Masimo, &source, &tx, &CancellationToken::new()).await;
    assert_eq!(end, PumpEnd::Eof);
    let events = drain(&mut rx);
    let frames = frames(&events);
    assert_eq!(frames.len(), 4, "the noise line is the only one lost");
    let spo2 =
        |i: usize| frames[i].measurements.iter().find(|m| m.parameter == Parameter::Spo2).map(|m| (m.value, m.status));
    assert_eq!(spo2(0), Some((Some(97.0), ValueStatus::Valid)));
    assert_eq!(spo2(1), None, "SpO2 101 was removed, the pulse of that line kept");
    assert_eq!(frames[1].measurements.len(), 1);
    assert_eq!(spo2(2), Some((None, ValueStatus::Unavailable)), "0 with sensor off is no value, not a rejection");
    assert_eq!(spo2(3), Some((Some(95.0), ValueStatus::Valid)));
    let (ok, bad, rejected, last_error) = last_counters(&events);
    assert_eq!((ok, bad, rejected), (4, 1, 1), "final counters are flushed when the stream ends");
    assert!(last_error.unwrap().contains("spo2 101"));
}

#[tokio::test]
async fn nonin_and_mllp_framed_hl7_go_through_the_same_pump() {
    let (tx, mut rx) = mpsc::channel(64);
    let source = SourceId::new("chair-2", 1);
    let wire: Vec<u8> = [nonin::encode_frame(64, 96, 0, 0), nonin::encode_frame(65, 96, 0, 0)].concat();
    assert_eq!(pump(&wire[..], DeviceKind::Nonin, &source, &tx, &CancellationToken::new()).await, PumpEnd::Eof);
    assert_eq!(frames(&drain(&mut rx)).len(), 2);

    let msg = b"MSH|^~\\&|MON^0011223344556677^EUI-64||||20240101120000||ORU^R01|1|P|2.6\r\
        OBX|1|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.1.150021|80|266016^MDC_DIM_MMHG^MDC\r\
        OBX|2|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.1.150022|95|266016^MDC_DIM_MMHG^MDC";
    let wire = mllp::frame(msg);
    assert_eq!(pump(&wire[..], DeviceKind::Hl7, &source, &tx, &CancellationToken::new()).await, PumpEnd::Eof);
    let events = drain(&mut rx);
    let frames = frames(&events);
    assert_eq!(frames.len(), 1);
    assert!(frames[0].measurements.is_empty(), "systolic 80 under diastolic 95: both rejected");
    assert_eq!(frames[0].device_id.as_deref(), Some("0011223344556677"));
    let (_, _, rejected, _) = last_counters(&events);
    assert_eq!(rejected, 2);
}

#[tokio::test]
async fn the_pump_ends_on_cancellation_and_when_the_bed_is_gone() {
    let source = SourceId::new("chair-3", 0);
    let (client, server) = tokio::io::duplex(64);
    let (tx, _rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    cancel.cancel();
    assert_eq!(pump(server, DeviceKind::Masimo, &source, &tx, &cancel).await, PumpEnd::Cancelled);
    drop(client);

    let (mut client, server) = tokio::io::duplex(64);
    let (tx, rx) = mpsc::channel(4);
    drop(rx);
    client.write_all(b"SPO2=097% BPM=070\r\n").await.unwrap();
    assert_eq!(
        pump(server, DeviceKind::Masimo, &source, &tx, &CancellationToken::new()).await,
        PumpEnd::ReceiverClosed
    );
}

#[test]
fn source_ids_display_as_bed_slash_index() {
    assert_eq!(SourceId::new("chair-1", 0).to_string(), "chair-1/0");
}
