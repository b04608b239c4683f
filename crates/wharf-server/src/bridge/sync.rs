//! The synchronisation primitives of the hand-written cross-thread types (job queue, outbox,
//! pipe): std's, or loom's when they are model-checked (`RUSTFLAGS="--cfg loom"`, see the
//! README's development section), the way tokio does it.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread;

/// Runs `f` under loom for every interleaving with up to three preemptions: enough to find a
/// lost wake-up between two threads, small enough to finish in seconds.
#[cfg(all(test, loom))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}
