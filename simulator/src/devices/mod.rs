//! Device personalities: pure encoders from a displayed value to the bytes a real monitor puts on the wire.
//! No I/O and no randomness here, so round-trip tests can feed a model value through an encoder and a decoder.

pub mod hl7;
pub mod intellivue;
pub mod masimo;
pub mod nonin;
pub mod s5;
