//! MLLP framing (HL7 minimal lower layer protocol): `0x0B` message `0x1C 0x0D` (docs/sources.md, "Devices and data").
//!
//! The codec yields message payloads; HL7 parsing is [`super::hl7`]. Bytes outside a frame are skipped (CR/LF
//! silently, anything else reported once per run), a frame larger than the maximum is dropped with
//! [`DecodeError::TooLong`] and the rest of it discarded, and a new `0x0B` inside an unfinished frame starts a
//! fresh one (the sender restarted), so one broken message never costs the next.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::DecodeError;

/// Start block.
pub const START: u8 = 0x0B;
/// End block, followed by [`CR`].
pub const END: u8 = 0x1C;
/// Carriage return after the end block.
pub const CR: u8 = 0x0D;

/// Default maximum message size (matches the `[mllp] max_message_bytes` default of 1 MiB).
pub const DEFAULT_MAX: usize = 1 << 20;

/// MLLP codec with a maximum message size.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max: usize,
    state: State,
    /// Bytes of the current frame's body already searched for the end block.
    scanned: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames.
    Idle,
    /// Inside a frame; the buffer starts with its `0x0B`.
    InFrame,
    /// Inside an over-long frame, discarding until its end or the next start.
    Discarding,
}

impl MllpCodec {
    /// A codec dropping messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        MllpCodec { max: max.max(64), state: State::Idle, scanned: 0 }
    }

    /// The maximum message size.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX)
    }
}

impl Decoder for MllpCodec {
    type Item = Result<Bytes, DecodeError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        loop {
            match self.state {
                State::Idle => {
                    let Some(start) = memchr::memchr(START, buf) else {
                        let garbage = buf.iter().filter(|b| !matches!(**b, CR | b'\n' | END)).count();
                        buf.clear();
                        return Ok(report_garbage(garbage));
                    };
                    let garbage = buf[..start].iter().filter(|b| !matches!(**b, CR | b'\n' | END)).count();
                    buf.advance(start);
                    self.state = State::InFrame;
                    self.scanned = 1;
                    if let Some(item) = report_garbage(garbage) {
                        return Ok(Some(item));
                    }
                }
                State::InFrame => {
                    let found = memchr::memchr2(END, START, &buf[self.scanned..]);
                    match found.map(|i| i + self.scanned) {
                        Some(i) if buf[i] == START => {
                            // The sender began again before finishing: drop the unfinished frame.
                            buf.advance(i);
                            self.scanned = 1;
                            return Ok(Some(Err(DecodeError::Malformed(
                                "mllp: frame restarted before its end".into(),
                            ))));
                        }
                        Some(end) => {
                            let mut frame = buf.split_to(end + 1);
                            // A CR after the end block belongs to it; if it has not arrived yet, the idle state
                            // skips it silently.
                            if buf.first() == Some(&CR) {
                                buf.advance(1);
                            }
                            self.state = State::Idle;
                            self.scanned = 0;
                            frame.truncate(end);
                            frame.advance(1);
                            if frame.len() > self.max {
                                return Ok(Some(Err(DecodeError::TooLong(frame.len()))));
                            }
                            return Ok(Some(Ok(frame.freeze())));
                        }
                        None if buf.len() > self.max + 1 => {
                            let dropped = buf.len() - 1;
                            buf.clear();
                            self.state = State::Discarding;
                            self.scanned = 0;
                            return Ok(Some(Err(DecodeError::TooLong(dropped))));
                        }
                        None => {
                            self.scanned = buf.len();
                            return Ok(None);
                        }
                    }
                }
                State::Discarding => match memchr::memchr2(END, START, buf) {
                    Some(i) if buf[i] == START => {
                        buf.advance(i);
                        self.state = State::Idle;
                    }
                    Some(i) => {
                        buf.advance(i + 1);
                        self.state = State::Idle;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        let unfinished = self.state == State::InFrame && !buf.is_empty();
        buf.clear();
        self.state = State::Idle;
        self.scanned = 0;
        Ok(unfinished.then(|| Err(DecodeError::Malformed("mllp: stream ended inside a frame".into()))))
    }
}

fn report_garbage(garbage: usize) -> Option<Result<Bytes, DecodeError>> {
    (garbage > 0).then(|| Err(DecodeError::Malformed(format!("mllp: {garbage} bytes outside a frame"))))
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = std::io::Error;

    fn encode(&mut self, msg: &[u8], dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.reserve(msg.len() + 3);
        dst.put_u8(START);
        dst.put_slice(msg);
        dst.put_u8(END);
        dst.put_u8(CR);
        Ok(())
    }
}

/// Wraps one message in MLLP framing.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(msg.len() + 3);
    v.push(START);
    v.extend_from_slice(msg);
    v.push(END);
    v.push(CR);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(codec: &mut MllpCodec, buf: &mut BytesMut) -> Vec<Result<Bytes, DecodeError>> {
        let mut out = Vec::new();
        while let Some(item) = codec.decode(buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn messages_are_unwrapped_and_split_reads_are_joined() {
        let mut c = MllpCodec::new(1024);
        let wire = [frame(b"MSH|one"), frame(b"MSH|two")].concat();
        let mut buf = BytesMut::from(&wire[..5]);
        assert_eq!(all(&mut c, &mut buf), vec![]);
        buf.extend_from_slice(&wire[5..]);
        assert_eq!(all(&mut c, &mut buf), vec![Ok(Bytes::from_static(b"MSH|one")), Ok(Bytes::from_static(b"MSH|two"))]);
        assert!(buf.is_empty());
    }

    #[test]
    fn garbage_before_a_start_block_is_reported_once_and_skipped() {
        let mut c = MllpCodec::new(1024);
        let mut buf = BytesMut::from(&b"\r\nnoise"[..]);
        buf.extend_from_slice(&frame(b"MSH|x"));
        let items = all(&mut c, &mut buf);
        assert!(matches!(items[0], Err(DecodeError::Malformed(_))));
        assert_eq!(items[1], Ok(Bytes::from_static(b"MSH|x")));
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn an_over_long_message_is_dropped_and_the_next_one_still_arrives() {
        let mut c = MllpCodec::new(100);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(&[b'a'; 300]));
        buf.extend_from_slice(&frame(b"MSH|ok"));
        let items = all(&mut c, &mut buf);
        assert!(matches!(items[0], Err(DecodeError::TooLong(_))));
        assert_eq!(items[1], Ok(Bytes::from_static(b"MSH|ok")));
    }

    #[test]
    fn a_restart_inside_a_frame_drops_the_unfinished_one() {
        let mut c = MllpCodec::new(100);
        let mut buf = BytesMut::from(&b"\x0bMSH|cut"[..]);
        buf.extend_from_slice(&frame(b"MSH|whole"));
        let items = all(&mut c, &mut buf);
        assert!(matches!(items[0], Err(DecodeError::Malformed(_))));
        assert_eq!(items[1], Ok(Bytes::from_static(b"MSH|whole")));
    }
}
