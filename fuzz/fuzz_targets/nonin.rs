#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_fuzz::protocol::nonin::{NoninDecoder, FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    vigil_fuzz::drive(NoninDecoder::new(), data, FRAME_LEN - 1);
});
