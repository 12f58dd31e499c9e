#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_fuzz::protocol::masimo::{parse_line, MasimoDecoder};

fuzz_target!(|data: &[u8]| {
    let _ = parse_line(data);
    vigil_fuzz::drive(MasimoDecoder::with_max_line(256), data, 256);
});
