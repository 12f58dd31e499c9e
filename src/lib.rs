//! Vigil: a vital-signs alarm daemon for ketamine infusion chairs. A secondary notification aid: the bedside
//! monitor remains the primary alarm.
//!
//! Data flow (see `docs/architecture.md`): device bytes → [`ingest`] → [`vitals::Reading`] → per-bed
//! [`alarm`] engine → [`event::Event`] → [`store`] (durable) → [`mqtt`] and [`dashboard`].

pub mod alarm;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod event;
pub mod hub;
pub mod ingest;
pub mod mqtt;
pub mod replay;
pub mod session;
pub mod store;
pub mod vitals;
