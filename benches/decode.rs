//! Decode throughput per format (issue #4 targets per core: 1 M Masimo lines/s, 1 M Nonin frames/s, 200 k HL7
//! messages/s). Inputs are the real samples from `tests/fixtures/`. Figures: `docs/performance.md`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio_util::codec::Decoder;
use vigil::ingest::protocol::hl7::{self, Hl7Decoder};
use vigil::ingest::protocol::masimo::MasimoDecoder;
use vigil::ingest::protocol::mllp;
use vigil::ingest::protocol::nonin::{self, NoninDecoder};
use vigil::ingest::protocol::plausibility;

const BATCH: usize = 1000;

const MASIMO_LINE: &[u8] = b"02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% \
DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800\r\n";

fn mindray() -> Vec<u8> {
    include_str!("../tests/fixtures/hl7/pcd01_samples.txt")
        .lines()
        .skip_while(|l| !l.starts_with("MSH|^~\\&|MINDRAY_VS900^00A0370098007A80"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\r")
        .into_bytes()
}

/// Decodes a whole buffer, as the pump does after a read, and checks every item decoded.
fn drain<D: Decoder<Item = Result<vigil::ingest::protocol::Frame, vigil::ingest::protocol::DecodeError>>>(
    d: &mut D,
    wire: &[u8],
) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::from(wire);
    let mut n = 0;
    while let Some(item) = d.decode(&mut buf).unwrap() {
        let mut frame = item.unwrap();
        plausibility::check(&mut frame);
        black_box(&frame);
        n += 1;
    }
    n
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(BATCH as u64));

    let masimo_wire = MASIMO_LINE.repeat(BATCH);
    g.bench_function("masimo_lines", |b| {
        b.iter(|| assert_eq!(drain(&mut MasimoDecoder::new(), black_box(&masimo_wire)), BATCH))
    });

    let nonin_wire: Vec<u8> = (0..BATCH).flat_map(|i| nonin::encode_frame(60 + (i % 100) as u16, 97, 0, 0)).collect();
    g.bench_function("nonin_frames", |b| {
        b.iter(|| assert_eq!(drain(&mut NoninDecoder::new(), black_box(&nonin_wire)), BATCH))
    });

    let msg = mindray();
    let hl7_wire = mllp::frame(&msg).repeat(BATCH);
    g.bench_function("hl7_messages_mllp", |b| {
        b.iter(|| assert_eq!(drain(&mut Hl7Decoder::new(mllp::DEFAULT_MAX), black_box(&hl7_wire)), BATCH))
    });
    g.finish();

    let mut g = c.benchmark_group("hl7");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_oru_and_build_ack", |b| {
        b.iter(|| {
            let oru = hl7::parse_oru(black_box(&msg)).unwrap();
            black_box(hl7::build_ack(Some(&oru.header), hl7::AckCode::Accept, None, oru.frame.device_time.unwrap()))
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
