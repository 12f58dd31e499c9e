//! Properties every decoder must have, whatever a device sends: no panic, buffers bounded by the decoder's
//! maximum, and valid frames still found after arbitrary garbage.

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;
use vigil::ingest::protocol::hl7::{self, Hl7Decoder};
use vigil::ingest::protocol::masimo::{self, MasimoDecoder};
use vigil::ingest::protocol::mllp::{self, MllpCodec};
use vigil::ingest::protocol::nonin::{self, NoninDecoder};
use vigil::ingest::protocol::{plausibility, DecodeError, Frame};
use vigil::vitals::{Parameter, ValueStatus};

/// Feeds `chunks` one after another like socket reads, draining the decoder after each, and checks that the
/// buffer left behind never exceeds `bound`. Returns the items.
fn feed<D>(d: &mut D, chunks: &[Vec<u8>], bound: usize) -> Vec<Result<Frame, DecodeError>>
where
    D: Decoder<Item = Result<Frame, DecodeError>, Error = std::io::Error>,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = d.decode(&mut buf).expect("decoders never fail the stream") {
            out.push(item);
        }
        assert!(buf.len() <= bound, "buffer {} > bound {bound}", buf.len());
    }
    while let Some(item) = d.decode_eof(&mut buf).expect("decoders never fail the stream") {
        out.push(item);
    }
    assert!(buf.is_empty(), "end of stream leaves nothing behind");
    out
}

/// Reads of arbitrary bytes. Generated from a seed and chunk sizes rather than byte by byte: proptest keeps a
/// shrink tree per generated element, which made byte-wise strategies cost seconds per test in debug builds.
fn chunks() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (any::<u64>(), prop::collection::vec(0usize..600, 0..12)).prop_map(|(seed, sizes)| bytes(seed, &sizes, &[]))
}

/// Bytes biased towards the ones the decoders care about, so the state machines get exercised.
fn spicy_chunks() -> impl Strategy<Value = Vec<Vec<u8>>> {
    const SPICY: &[u8] = &[0x0B, 0x1C, b'\r', b'\n', b'|', b'^', b'=', b'~', 0x80, 0xFF, b'M', b'S', b'H', b'0', b'9'];
    (any::<u64>(), prop::collection::vec(0usize..400, 0..12)).prop_map(|(seed, sizes)| bytes(seed, &sizes, SPICY))
}

/// xorshift bytes; with an alphabet, half of them are drawn from it.
fn bytes(seed: u64, sizes: &[usize], alphabet: &[u8]) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    sizes
        .iter()
        .map(|n| {
            (0..*n)
                .map(|_| {
                    let r = next();
                    if !alphabet.is_empty() && r & 1 == 0 {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    } else {
                        (r >> 24) as u8
                    }
                })
                .collect()
        })
        .collect()
}

fn all_values_plausible_or_absent(items: &mut [Result<Frame, DecodeError>]) {
    for f in items.iter_mut().flatten() {
        plausibility::check(f);
        for m in &f.measurements {
            if let Some(v) = m.value {
                let (lo, hi) = m.parameter.plausible_range();
                assert!(v.is_finite() && v >= lo && v <= hi, "{m:?}");
            }
            if m.value.is_none() {
                assert_eq!(m.status, ValueStatus::Unavailable, "{m:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_the_masimo_decoder_or_grow_its_buffer(c in chunks(), s in spicy_chunks()) {
        let mut items = feed(&mut MasimoDecoder::with_max_line(128), &c, 128);
        items.extend(feed(&mut MasimoDecoder::with_max_line(128), &s, 128));
        all_values_plausible_or_absent(&mut items);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_nonin_decoder_or_grow_its_buffer(c in chunks(), s in spicy_chunks()) {
        feed(&mut NoninDecoder::new(), &c, nonin::FRAME_LEN - 1);
        feed(&mut NoninDecoder::new(), &s, nonin::FRAME_LEN - 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_hl7_decoder_or_grow_its_buffer(c in chunks(), s in spicy_chunks()) {
        let mut items = feed(&mut Hl7Decoder::new(256), &c, 257);
        items.extend(feed(&mut Hl7Decoder::new(256), &s, 257));
        all_values_plausible_or_absent(&mut items);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_mllp_codec_or_grow_its_buffer(s in spicy_chunks()) {
        let mut codec = MllpCodec::new(256);
        let mut buf = BytesMut::new();
        for chunk in &s {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                if let Ok(msg) = item {
                    prop_assert!(msg.len() <= 256);
                }
            }
            prop_assert!(buf.len() <= 257);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_line_and_message_parsers(b in prop::collection::vec(any::<u8>(), 0..800)) {
        let _ = masimo::parse_line(&b);
        let _ = hl7::parse_oru(&b);
        let _ = hl7::parse_header(&b);
        let _ = hl7::parse_ack(&b);
    }

    #[test]
    fn a_mutated_real_hl7_message_never_panics_and_still_gets_an_ack(
        pos in 0usize..1000, byte in any::<u8>(), cut in 0usize..1000
    ) {
        let mut msg = include_str!("fixtures/hl7/pcd01_samples.txt")
            .lines()
            .skip_while(|l| !l.starts_with("MSH|^~\\&|MINDRAY_VS900^00A0370098007A80"))
            .take_while(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\r")
            .into_bytes();
        let len = msg.len();
        msg[pos % len] = byte;
        msg.truncate(cut.max(1) % (len + 1));
        let header = hl7::parse_header(&msg).ok();
        let code = match hl7::parse_oru(&msg) { Ok(_) => hl7::AckCode::Accept, Err(e) => e.ack_code() };
        let ack = hl7::build_ack(header.as_ref(), code, None, chrono::Utc::now());
        let (msa1, _) = hl7::parse_ack(&ack).expect("every ACK Vigil builds is itself readable HL7");
        prop_assert_eq!(msa1, code.as_str());
    }

    #[test]
    fn a_valid_masimo_line_after_garbage_is_still_decoded(garbage in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut d = MasimoDecoder::new();
        let chunks = vec![garbage, b"\r\n02/22/16 22:47:45 SPO2=098% BPM=097 EXC=000800\r\n".to_vec()];
        let items = feed(&mut d, &chunks, masimo::MAX_LINE);
        let last = items.last().expect("an item").as_ref().expect("the valid line decodes");
        prop_assert_eq!(last.measurements[0].value, Some(98.0));
    }

    #[test]
    fn nonin_frames_round_trip_and_survive_garbage_before_them(
        hr in 1u16..=300, spo2 in 1u8..=100, garbage in prop::collection::vec(0u8..0x80, 0..50)
    ) {
        let chunks = vec![garbage, nonin::encode_frame(hr, spo2, 0, 0).to_vec()];
        let items = feed(&mut NoninDecoder::new(), &chunks, nonin::FRAME_LEN - 1);
        let f = items.last().unwrap().as_ref().unwrap();
        let v = |p: Parameter| f.measurements.iter().find(|m| m.parameter == p).unwrap().value;
        prop_assert_eq!(v(Parameter::Pr), Some(f64::from(hr)));
        prop_assert_eq!(v(Parameter::Spo2), Some(f64::from(spo2)));
    }

    #[test]
    fn mllp_frames_split_at_any_point_are_reassembled(split in 0usize..200) {
        let msg = b"MSH|^~\\&|MON^0011223344556677^EUI-64||||20240101120000||ORU^R01|1|P|2.6\rOBX|1|NM|150456^X^MDC|1|97|%";
        let wire = mllp::frame(msg);
        let split = split % wire.len();
        let items = feed(&mut Hl7Decoder::new(1024), &[wire[..split].to_vec(), wire[split..].to_vec()], 1025);
        prop_assert_eq!(items.len(), 1);
        prop_assert_eq!(items[0].as_ref().unwrap().measurements[0].value, Some(97.0));
    }
}
