//! The decoders under fuzzing, compiled from the daemon's own source files (same code, lighter dependency
//! tree), plus a helper that drives a streaming decoder the way the pump does.
#![allow(dead_code, missing_docs)]

#[path = "../../src/vitals.rs"]
pub mod vitals;

#[path = "../../src/ingest/protocol/mod.rs"]
pub mod protocol;

#[path = "../../src/pcap.rs"]
pub mod pcap;

/// The daemon's path to the decoders (`crate::ingest::protocol`), for the files that name it.
pub mod ingest {
    pub use crate::protocol;
}

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Splits `data` into reads at the positions its first bytes choose, decodes after each read and asserts the
/// buffer stays within `bound` (the decoder's maximum): bounded memory whatever arrives.
pub fn drive<D>(mut d: D, data: &[u8], bound: usize)
where
    D: Decoder<Item = Result<protocol::Frame, protocol::DecodeError>, Error = std::io::Error>,
{
    let (sizes, body) = data.split_at(data.len().min(4));
    let mut buf = BytesMut::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(sizes.get(i % sizes.len().max(1)).copied().unwrap_or(255)) + 1).min(rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(item) = d.decode(&mut buf).expect("decoders never fail the stream") {
            if let Ok(mut frame) = item {
                protocol::plausibility::check(&mut frame);
            }
        }
        assert!(buf.len() <= bound, "buffer {} over bound {bound}", buf.len());
    }
    while d.decode_eof(&mut buf).expect("decoders never fail the stream").is_some() {}
    assert!(buf.is_empty());
}
