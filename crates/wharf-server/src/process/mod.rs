//! The supervisor side: the process the user starts owns the sockets and runs worker
//! processes, and a worker's link back to it.
//!
//! `supervisor` is the reconcile loop over workers; `control` is the channel between a worker
//! and the supervisor (both halves); `handoff` passes sockets to workers; `admin` answers
//! /livez, /readyz and /metrics from `health` and `scrape`; `reload` watches sources.

mod admin;
mod control;
mod handoff;
mod health;
mod reload;
mod scrape;
mod supervise;
mod supervisor;

pub(crate) use control::{ControlClient, RecycleReason, WorkerMessage};
pub(crate) use handoff::Handoff;
pub(crate) use supervise::supervise;
