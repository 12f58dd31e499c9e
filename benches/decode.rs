//! Decode throughput per format (issue #4 targets per core: 1 M Masimo lines/s, 1 M Nonin frames/s, 200 k HL7
//! messages/s; S/5 DRI records and IntelliVue poll results without a target). Inputs are the real samples from
//! `tests/fixtures/`; S/5 records are built by the decoder's record builder, IntelliVue numerics poll results
//! laid out here from the Data Export structures (no real capture of either exists). Figures: `docs/performance.md`.
//!
//! Every benchmark runs twice: `decode/…` in wall-clock time (criterion's default) and `decode_cpu/…` in the
//! benchmark thread's CPU time. On a shared machine the wall clock also counts time the thread spent waiting for
//! a core, so the CPU-time figure is the one that answers "per core".

use std::hint::black_box;

use bytes::BytesMut;
use criterion::measurement::Measurement;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio_util::codec::Decoder;
#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::ThreadCpuTime;
use vigil::ingest::protocol::hl7::{self, Hl7Decoder};
use vigil::ingest::protocol::intellivue::{self, IntelliVueDecoder};
use vigil::ingest::protocol::masimo::MasimoDecoder;
use vigil::ingest::protocol::mllp;
use vigil::ingest::protocol::nonin::{self, NoninDecoder};
use vigil::ingest::protocol::plausibility;
use vigil::ingest::protocol::s5::{self, S5Decoder};

const BATCH: usize = 1000;

const MASIMO_LINE: &[u8] = b"02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% \
DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800\r\n";

fn be(parts: &[u16]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.to_be_bytes()).collect()
}

/// One IntelliVue extended poll result for numerics as an MP90 sends it each second: SpO2, pleth pulse, ECG HR,
/// RR (one `NOM_ATTR_NU_VAL_OBS` each) and the NIBP compound (`NOM_ATTR_NU_CMPD_VAL_OBS`, three values), in
/// one context; `spo2` varies so the frames differ. About 190 bytes of user data, MIB/RS-232 framed.
fn intellivue_result(spo2: u16) -> Vec<u8> {
    let mut objects = Vec::new();
    for (handle, physio, unit, value) in [
        (0x50, 0x4BB8, 0x0220, spo2),
        (0x51, 0x4822, 0x0AA0, 72),
        (0x52, 0x4182, 0x0AA0, 71),
        (0x53, 0x500A, 0x0AE0, 14),
    ] {
        objects.extend(be(&[handle, 1, 14, 0x0950, 10, physio, 0, unit, 0, value]));
    }
    let cmpd = be(&[3, 30, 0x4A05, 0, 0x0F20, 0, 120, 0x4A06, 0, 0x0F20, 0, 80, 0x4A07, 0, 0x0F20, 0, 93]);
    objects.extend(be(&[0x54, 1, 4 + cmpd.len() as u16, 0x094B, cmpd.len() as u16]));
    objects.extend(cmpd);
    let mut context = be(&[0, 5, objects.len() as u16]);
    context.extend(objects);
    let mut reply = be(&[1, 0, 0, 0x1000, 0x2026, 0x0301, 0x1000, 0x0000, 1, 6, 0x0803, 1, context.len() as u16]);
    reply.extend(context);
    let mut action = be(&[0x0021, 0, 0, 0xF13B, reply.len() as u16]);
    action.extend(reply);
    let mut rors = be(&[5, 7, action.len() as u16]);
    rors.extend(action);
    let mut message = vec![0xE1, 0x00, 0x00, 0x02];
    message.extend(be(&[2, rors.len() as u16]));
    message.extend(rors);
    intellivue::frame(&message)
}

fn mindray() -> Vec<u8> {
    include_str!("../tests/fixtures/hl7/pcd01_samples.txt")
        .lines()
        .skip_while(|l| !l.starts_with("MSH|^~\\&|MINDRAY_VS900^00A0370098007A80"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\r")
        .into_bytes()
}

/// `n` displayed-values records as an S/5 frames them (ECG, NIBP and SpO2 groups live, SpO2 varying so the NIBP
/// repeats but the frames differ), built with the decoder's own record builder.
fn s5_records(n: usize) -> Vec<u8> {
    let live = s5::status::EXISTS | s5::status::ACTIVE;
    (0..n)
        .flat_map(|i| {
            let mut class = s5::build::empty_class();
            s5::build::group(&mut class, s5::phdb::ECG_AT, live, &[72, 0, 0, 0, 14]);
            s5::build::group(&mut class, s5::phdb::NIBP_AT, live, &[12000, 8000, 9333, 70]);
            s5::build::group(&mut class, s5::phdb::SPO2_AT, live, &[9000 + (i % 900) as i16, 71, 0, 0]);
            s5::frame(&s5::build::phdb_record(1_767_254_400 + 5 * i as u32, s5::phdb::DISPLAYED, &class))
        })
        .collect()
}

/// Decodes a whole buffer, as the pump does after a read, and checks every item decoded. The buffer is filled
/// outside the measurement (`iter_batched`): copying bytes in is the read's cost, not the decoder's.
fn drain<D: Decoder<Item = Result<vigil::ingest::protocol::Frame, vigil::ingest::protocol::DecodeError>>>(
    d: &mut D,
    mut buf: BytesMut,
) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut n = 0;
    while let Some(item) = d.decode(&mut buf).unwrap() {
        let mut frame = item.unwrap();
        plausibility::check(&mut frame);
        black_box(&frame);
        n += 1;
    }
    n
}

fn decode<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(BATCH as u64));

    let masimo_wire = MASIMO_LINE.repeat(BATCH);
    g.bench_function("masimo_lines", |b| {
        b.iter_batched(
            || BytesMut::from(&masimo_wire[..]),
            |buf| assert_eq!(drain(&mut MasimoDecoder::new(), black_box(buf)), BATCH),
            BatchSize::LargeInput,
        )
    });

    let nonin_wire: Vec<u8> = (0..BATCH).flat_map(|i| nonin::encode_frame(60 + (i % 100) as u16, 97, 0, 0)).collect();
    g.bench_function("nonin_frames", |b| {
        b.iter_batched(
            || BytesMut::from(&nonin_wire[..]),
            |buf| assert_eq!(drain(&mut NoninDecoder::new(), black_box(buf)), BATCH),
            BatchSize::LargeInput,
        )
    });

    let msg = mindray();
    let hl7_wire = mllp::frame(&msg).repeat(BATCH);
    g.bench_function("hl7_messages_mllp", |b| {
        b.iter_batched(
            || BytesMut::from(&hl7_wire[..]),
            |buf| assert_eq!(drain(&mut Hl7Decoder::new(mllp::DEFAULT_MAX), black_box(buf)), BATCH),
            BatchSize::LargeInput,
        )
    });

    // Displayed-values records (about 320 bytes framed each).
    let s5_wire = s5_records(BATCH);
    g.bench_function("s5_records", |b| {
        b.iter_batched(
            || BytesMut::from(&s5_wire[..]),
            |buf| assert_eq!(drain(&mut S5Decoder::new(), black_box(buf)), BATCH),
            BatchSize::LargeInput,
        )
    });

    // Numerics poll results (SpO2, pulse, HR, RR, NIBP compound): about 200 bytes framed each.
    let intellivue_wire: Vec<u8> = (0..BATCH).flat_map(|i| intellivue_result(80 + (i % 20) as u16)).collect();
    g.bench_function("intellivue_poll_results", |b| {
        b.iter_batched(
            || BytesMut::from(&intellivue_wire[..]),
            |buf| assert_eq!(drain(&mut IntelliVueDecoder::new(), black_box(buf)), BATCH),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group(format!("{name}_hl7"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_oru_and_build_ack", |b| {
        b.iter(|| {
            let oru = hl7::parse_oru(black_box(&msg)).unwrap();
            black_box(hl7::build_ack(Some(&oru.header), hl7::AckCode::Accept, None, oru.frame.device_time.unwrap()))
        })
    });
    g.finish();
}

fn wall(c: &mut Criterion) {
    decode(c, "decode");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    decode(c, "decode_cpu");
}

criterion_group!(wall_benches, wall);
criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_benches, cpu_benches);
