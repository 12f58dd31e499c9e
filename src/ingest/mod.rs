//! Transports: bytes from serial ports, the MLLP listener and the in-process simulator become [`SourceEvent`]s
//! for a bed's inbox. Decoding lives in [`protocol`].

pub mod protocol;
