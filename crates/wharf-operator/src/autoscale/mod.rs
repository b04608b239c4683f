//! The concurrency autoscaler: wharf reports exactly how many Python threads are busy and how
//! many requests wait for one, so the operator sizes the Deployment on that instead of on CPU.
//!
//! `decide` is the pure decision (golden rules in its tests); `window` its memory.

pub mod decide;
pub mod handover;
pub mod metrics;
pub mod pods;
pub mod scale;
pub mod scrape;
pub mod sim;
pub mod task;
mod window;
