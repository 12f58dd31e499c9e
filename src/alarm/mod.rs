//! The pure alarm engine: no I/O, no tokio, no wall clock. Readings and time in, events out.
