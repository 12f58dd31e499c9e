#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use vigil_fuzz::protocol::mllp::MllpCodec;

fuzz_target!(|data: &[u8]| {
    let mut codec = MllpCodec::new(512);
    let mut buf = BytesMut::new();
    for chunk in data.chunks(97) {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf).expect("never fails the stream") {
            if let Ok(msg) = item {
                assert!(msg.len() <= 512);
            }
        }
        assert!(buf.len() <= 513);
    }
});
