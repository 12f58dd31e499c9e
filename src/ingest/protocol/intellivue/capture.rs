//! IntelliVue captures, in whichever layout they were recorded: the MIB/RS-232 byte stream (the monitor → host
//! direction, or both directions interleaved frame by frame, as a tap that records each line's frames writes
//! them), LAN datagram payloads written back to back, or a pcap/pcapng file of the UDP traffic to and from port
//! [`LAN_DATA_PORT`] (both directions, each packet with its capture time). The host's own messages in a
//! capture of both directions (association request, MDS Create result, poll requests) parse as
//! [`Pdu::AssociationRequest`] and [`Pdu::Other`]: they carry no reading and do not disturb the decoder.

use bytes::BytesMut;

use super::{spdu, Deframer, IntelliVueDecoder, BOF, LAN_DATA_PORT, MSG_TYPE, PROTOCOL_ID};
use crate::ingest::protocol::DecodeError;
use crate::pcap::{self, PcapError};
use crate::vitals::Timestamp;

/// How a capture is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// MIB/RS-232 frames.
    Serial,
    /// Datagram payloads back to back.
    Lan,
    /// A pcap or pcapng file.
    Pcap,
}

/// One message of a capture: its user data (or why it is not one), and the packet time where the capture has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// The capture time (pcap), `None` for a raw stream.
    pub time: Option<Timestamp>,
    /// The message's user data, or the decode error.
    pub message: Result<Vec<u8>, DecodeError>,
}

/// The layout of `bytes`: pcap magic; or a first byte that starts a Data Export message with no serial frame
/// header (`C0 11 01`) anywhere; or else the serial stream (whose deframer counts what is not a frame).
pub fn layout(bytes: &[u8]) -> Layout {
    let session_types =
        [spdu::DATA, spdu::CONNECT, spdu::ACCEPT, spdu::REFUSE, spdu::FINISH, spdu::DISCONNECT, spdu::ABORT];
    if pcap::is_capture(bytes) {
        Layout::Pcap
    } else if bytes.first().is_some_and(|b| session_types.contains(b))
        && memchr::memmem::find(bytes, &[BOF, PROTOCOL_ID, MSG_TYPE]).is_none()
    {
        Layout::Lan
    } else {
        Layout::Serial
    }
}

/// Every message of the capture, in order, with the packets skipped (pcap: other traffic).
pub fn messages(bytes: &[u8]) -> Result<(Vec<Captured>, usize), PcapError> {
    let untimed = |message| Captured { time: None, message };
    let mut out = Vec::new();
    match layout(bytes) {
        Layout::Pcap => {
            let found = pcap::udp_datagrams(bytes, LAN_DATA_PORT)?;
            for d in found.datagrams {
                out.push(Captured { time: Some(d.time), message: Ok(d.payload) });
            }
            return Ok((out, found.skipped));
        }
        Layout::Lan => {
            let mut buf = BytesMut::from(bytes);
            while let Some(m) = IntelliVueDecoder::next_lan(&mut buf) {
                out.push(untimed(m));
            }
            if !buf.is_empty() {
                let n = buf.len();
                out.push(untimed(Err(DecodeError::Malformed(format!("intellivue: {n} bytes of a cut message")))));
            }
        }
        Layout::Serial => {
            let mut deframer = Deframer::new();
            let mut buf = BytesMut::from(bytes);
            while let Some(m) = deframer.next(&mut buf) {
                out.push(untimed(m));
            }
            out.extend(deframer.finish_stream().map(|e| untimed(Err(e))));
        }
    }
    Ok((out, 0))
}
