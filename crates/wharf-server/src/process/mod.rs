//! The supervisor side: the process the user starts owns the sockets and runs worker
//! processes, and a worker's link back to it.
//!
//! `supervisor` is the reconcile loop over workers; `control` is the channel between a worker
//! and the supervisor (both halves); `sockets` holds the listening sockets (one
//! set per worker slot, so the kernel spreads connections) and `handoff` passes them to workers; `admin` answers
//! /livez, /readyz and /metrics from `health` and `scrape`; `reload` watches sources;
//! `zygote_link` is the channel to the zygote that forks workers (both halves).

mod admin;
mod control;
mod handoff;
mod health;
mod reload;
mod scrape;
mod sockets;
mod supervise;
mod supervisor;
mod zygote_link;

pub(crate) use control::{ControlClient, RecycleReason, WorkerMessage};
pub(crate) use handoff::Handoff;
pub(crate) use supervise::supervise;
pub(crate) use zygote_link::{ZygoteMessage, parse_request, recv_packet, send_message};
