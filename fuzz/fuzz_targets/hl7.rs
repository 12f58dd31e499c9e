#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_fuzz::protocol::hl7::{self, Hl7Decoder};

fuzz_target!(|data: &[u8]| {
    let header = hl7::parse_header(data).ok();
    let code = match hl7::parse_oru(data) {
        Ok(_) => hl7::AckCode::Accept,
        Err(e) => e.ack_code(),
    };
    // Every ACK Vigil builds, whatever it answers, must itself be readable HL7.
    let ack = hl7::build_ack(header.as_ref(), code, Some((hl7::ErrorCode::DataType, "fuzz")), chrono::Utc::now());
    assert!(hl7::parse_ack(&ack).is_some());
    vigil_fuzz::drive(Hl7Decoder::new(1024), data, 1025);
});
