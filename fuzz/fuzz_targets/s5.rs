#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_fuzz::protocol::s5::S5Decoder;

// The S/5 decoder keeps at most one record in its own buffer and consumes every byte it is given.
fuzz_target!(|data: &[u8]| {
    vigil_fuzz::drive(S5Decoder::new(), data, 0);
});
