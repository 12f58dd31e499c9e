//! Packet captures (libpcap `.pcap` and `.pcapng`, as tcpdump, dumpcap and Wireshark write them): the UDP
//! datagrams to or from one port, in file order, with each packet's capture time. Pure: bytes in, datagrams out.
//!
//! The file containers are read here (both byte orders; pcap with micro- or nanosecond stamps; pcapng sections,
//! interfaces with their `if_tsresol`, enhanced and simple packet blocks); the link, IP and UDP layers by
//! `etherparse` (Ethernet with VLAN tags, Linux cooked capture, raw IPv4/IPv6, BSD loopback). Why not the
//! `pcap-file` crate: its 2.0.0 reads every pcapng packet time as nanoseconds whatever the interface's
//! `if_tsresol` (Wireshark writes microseconds), so its times would be a thousand times too small. Formats:
//! the libpcap file format and the pcapng draft (IETF opsawg), `docs/sources.md`.

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Utc};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::vitals::Timestamp;

/// Why a capture could not be read at all (a packet that cannot be read is counted in [`Datagrams::skipped`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcapError {
    /// Neither pcap nor pcapng magic at the start.
    #[error("not a pcap or pcapng file (no magic number at the start)")]
    NotACapture,
    /// A header or block runs past the end of the file, or says a length it cannot have.
    #[error("capture cut or damaged at byte {0}")]
    Damaged(usize),
}

/// One UDP datagram from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// When it was captured.
    pub time: Timestamp,
    /// Sender.
    pub source: SocketAddr,
    /// Receiver.
    pub destination: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// The datagrams of a capture that concern one port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Datagrams {
    /// In file order.
    pub datagrams: Vec<Datagram>,
    /// Packets of other ports or protocols, of unknown link types, cut by the snap length, or IP fragments.
    pub skipped: usize,
}

const PCAP_MICRO: u32 = 0xA1B2_C3D4;
const PCAP_NANO: u32 = 0xA1B2_3C4D;
const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_BYTE_ORDER: u32 = 0x1A2B_3C4D;

/// Whether `bytes` starts like a pcap or pcapng file.
pub fn is_capture(bytes: &[u8]) -> bool {
    let Some(head) = bytes.get(..4) else { return false };
    let be = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let le = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    be == PCAPNG_SHB || [PCAP_MICRO, PCAP_NANO].contains(&be) || [PCAP_MICRO, PCAP_NANO].contains(&le)
}

/// The UDP datagrams of `bytes` whose source or destination port is `port`.
pub fn udp_datagrams(bytes: &[u8], port: u16) -> Result<Datagrams, PcapError> {
    let mut out = Datagrams::default();
    let mut keep = |link: u32, time: Option<Timestamp>, data: &[u8], cut: bool| match (
        cut,
        time.and_then(|t| udp(link, data).map(|d| (t, d))),
    ) {
        (false, Some((time, (source, destination, payload))))
            if source.port() == port || destination.port() == port =>
        {
            out.datagrams.push(Datagram { time, source, destination, payload: payload.to_vec() })
        }
        _ => out.skipped += 1,
    };
    let head = bytes.get(..4).ok_or(PcapError::NotACapture)?;
    if u32::from_be_bytes([head[0], head[1], head[2], head[3]]) == PCAPNG_SHB {
        read_pcapng(bytes, &mut keep)?;
    } else {
        read_pcap(bytes, &mut keep)?;
    }
    Ok(out)
}

/// A little reader over one byte order.
#[derive(Clone, Copy)]
struct Order {
    little: bool,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> Result<u16, PcapError> {
        let s: [u8; 2] = b.get(at..at + 2).and_then(|s| s.try_into().ok()).ok_or(PcapError::Damaged(at))?;
        Ok(if self.little { u16::from_le_bytes(s) } else { u16::from_be_bytes(s) })
    }

    fn u32(self, b: &[u8], at: usize) -> Result<u32, PcapError> {
        let s: [u8; 4] = b.get(at..at + 4).and_then(|s| s.try_into().ok()).ok_or(PcapError::Damaged(at))?;
        Ok(if self.little { u32::from_le_bytes(s) } else { u32::from_be_bytes(s) })
    }
}

fn slice(b: &[u8], at: usize, len: usize) -> Result<&[u8], PcapError> {
    at.checked_add(len).and_then(|end| b.get(at..end)).ok_or(PcapError::Damaged(at))
}

/// `units` of 10^-`decimal` s (or 2^-`binary` s) since 1970 as a time.
fn time_of(units: u64, resolution: u8) -> Option<Timestamp> {
    let (per_second, nanos_per_unit) = if resolution & 0x80 == 0 {
        let per = 10u64.checked_pow(u32::from(resolution))?;
        (per, if resolution <= 9 { 10u64.pow(9 - u32::from(resolution)) } else { 0 })
    } else {
        (1u64.checked_shl(u32::from(resolution & 0x7F))?, 0)
    };
    let secs = i64::try_from(units / per_second).ok()?;
    let rest = units % per_second;
    let nanos = if nanos_per_unit > 0 { rest * nanos_per_unit } else { rest * 1_000_000_000 / per_second };
    DateTime::<Utc>::from_timestamp(secs, u32::try_from(nanos).ok()?)
}

type Keep<'k> = dyn FnMut(u32, Option<Timestamp>, &[u8], bool) + 'k;

fn read_pcap(b: &[u8], keep: &mut Keep<'_>) -> Result<(), PcapError> {
    let magic_le = Order { little: true }.u32(b, 0)?;
    let magic_be = Order { little: false }.u32(b, 0)?;
    let (order, nano) = match (magic_le, magic_be) {
        (PCAP_MICRO, _) => (Order { little: true }, false),
        (PCAP_NANO, _) => (Order { little: true }, true),
        (_, PCAP_MICRO) => (Order { little: false }, false),
        (_, PCAP_NANO) => (Order { little: false }, true),
        _ => return Err(PcapError::NotACapture),
    };
    // Global header: magic, version (2 + 2), reserved (4 + 4), snap length, link type (the FCS bits above 28).
    let link = order.u32(b, 20)? & 0x0FFF_FFFF;
    let mut at = 24;
    while at < b.len() {
        let secs = order.u32(b, at)?;
        let frac = order.u32(b, at + 4)?;
        let captured = order.u32(b, at + 8)? as usize;
        let original = order.u32(b, at + 12)? as usize;
        let data = slice(b, at + 16, captured)?;
        let units = u64::from(secs) * if nano { 1_000_000_000 } else { 1_000_000 } + u64::from(frac);
        keep(link, time_of(units, if nano { 9 } else { 6 }), data, captured < original);
        at += 16 + captured;
    }
    Ok(())
}

fn read_pcapng(b: &[u8], keep: &mut Keep<'_>) -> Result<(), PcapError> {
    let mut order = Order { little: true };
    // Per interface of the current section: link type and time resolution.
    let mut interfaces: Vec<(u32, u8)> = Vec::new();
    let mut at = 0;
    while at < b.len() {
        if (Order { little: false }).u32(b, at)? == PCAPNG_SHB {
            let magic = slice(b, at + 8, 4)?;
            order = match u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]) {
                PCAPNG_BYTE_ORDER => Order { little: true },
                _ if u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]]) == PCAPNG_BYTE_ORDER => {
                    Order { little: false }
                }
                _ => return Err(PcapError::Damaged(at + 8)),
            };
            interfaces.clear();
        }
        let kind = order.u32(b, at)?;
        let len = order.u32(b, at + 4)? as usize;
        if len < 12 || len % 4 != 0 {
            return Err(PcapError::Damaged(at + 4));
        }
        let body = slice(b, at + 8, len - 12)?;
        match kind {
            // Interface description: link type, reserved, snap length, options.
            1 => {
                let link = u32::from(order.u16(body, 0)?);
                let mut resolution = 6;
                let mut opt = 8;
                while opt + 4 <= body.len() {
                    let (code, olen) = (order.u16(body, opt)?, usize::from(order.u16(body, opt + 2)?));
                    if code == 0 {
                        break;
                    }
                    if code == 9 && olen >= 1 {
                        resolution = slice(body, opt + 4, 1)?[0];
                    }
                    opt += 4 + olen.div_ceil(4) * 4;
                }
                interfaces.push((link, resolution));
            }
            // Enhanced packet: interface, time (high, low), captured and original length, data.
            6 => {
                let interface = order.u32(body, 0)? as usize;
                let units = u64::from(order.u32(body, 4)?) << 32 | u64::from(order.u32(body, 8)?);
                let captured = order.u32(body, 12)? as usize;
                let original = order.u32(body, 16)? as usize;
                let data = slice(body, 20, captured)?;
                match interfaces.get(interface) {
                    Some(&(link, resolution)) => keep(link, time_of(units, resolution), data, captured < original),
                    None => keep(u32::MAX, None, data, true),
                }
            }
            // Simple packet: no time, so it cannot be placed: skipped.
            3 => keep(u32::MAX, None, &[], true),
            _ => {}
        }
        at += len;
    }
    Ok(())
}

/// Source, destination and payload of a UDP packet on link type `link`.
fn udp(link: u32, data: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let packet = match link {
        1 => SlicedPacket::from_ethernet(data),
        113 => SlicedPacket::from_linux_sll(data),
        // Raw IP (DLT_RAW on its several numbers, LINKTYPE_IPV4, LINKTYPE_IPV6).
        101 | 12 | 14 | 228 | 229 => SlicedPacket::from_ip(data),
        // BSD loopback: a 4-byte address family in host order, then IP.
        0 | 108 => SlicedPacket::from_ip(data.get(4..)?),
        _ => return None,
    }
    .ok()?;
    let (source, destination) = match packet.net? {
        NetSlice::Ipv4(ip) => (IpAddr::V4(ip.header().source_addr()), IpAddr::V4(ip.header().destination_addr())),
        NetSlice::Ipv6(ip) => (IpAddr::V6(ip.header().source_addr()), IpAddr::V6(ip.header().destination_addr())),
        _ => return None,
    };
    match packet.transport? {
        TransportSlice::Udp(u) => Some((
            SocketAddr::new(source, u.source_port()),
            SocketAddr::new(destination, u.destination_port()),
            u.payload(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_times_follow_the_interfaces_resolution() {
        assert_eq!(time_of(1_500_000, 6).map(|t| t.timestamp_millis()), Some(1500));
        assert_eq!(time_of(1_500_000_000, 9).map(|t| t.timestamp_millis()), Some(1500));
        assert_eq!(time_of(3 << 9, 0x80 | 10).map(|t| t.timestamp_millis()), Some(1500));
    }

    #[test]
    fn a_file_that_is_no_capture_is_refused() {
        assert!(!is_capture(b"\xC0\x11\x01"));
        assert_eq!(udp_datagrams(b"\xC0\x11\x01\x00\x00", 24105), Err(PcapError::NotACapture));
    }
}
