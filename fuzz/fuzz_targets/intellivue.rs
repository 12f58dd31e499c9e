#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_fuzz::protocol::intellivue::session::Link;
use vigil_fuzz::protocol::intellivue::{parse_pdu, IntelliVueDecoder, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    // The serial byte stream, with the session listening (it must accept any message without panicking), and
    // the LAN case: the same bytes as one datagram.
    vigil_fuzz::drive(IntelliVueDecoder::with_session(Link::Serial), data, 0);
    // The LAN byte stream (datagrams back to back) keeps at most one message's worth.
    vigil_fuzz::drive(IntelliVueDecoder::with_session(Link::Lan), data, MAX_PAYLOAD + 8);
    let _ = parse_pdu(data);
    let mut lan = IntelliVueDecoder::with_session(Link::Lan);
    let _ = lan.decode_payload(data);
    if let Some(s) = lan.session_mut() {
        s.poll(10_000);
        while s.take_outgoing(10_000).is_some() {}
    }
});
