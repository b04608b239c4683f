//! What crosses between the I/O thread and the Python threads.
//!
//! A request leaves the I/O side as a [`Job`] through the [`JobQueue`], carrying its [`Client`]
//! view and its [`SharedBody`] (its target with raw high bytes escaped, see [`target`]); its
//! answer comes back as a [`Reply`], complete ones batched through the [`Outbox`], streamed
//! bodies through a [`Pipe`], on which a response waiting for a slow client can park and come
//! back through the queue as [`Work::Resume`]. Python threads wait on these with
//! [`park`]'s park/unpark (they are plain OS threads, not tokio tasks); [`sched`] keeps the
//! hand-offs from preempting each other. The [`Watchdog`] notices calls that outlive `--timeout`.
//! [`Stamp`] is the lock-free "optional duration" several of them share; `sync` swaps in loom's
//! primitives when the queue, outbox and pipe are model-checked.

mod client;
mod exchange;
mod outbox;
pub(crate) mod park;
mod pipe;
mod queue;
mod request_body;
pub(crate) mod sched;
mod stamp;
mod sync;
pub(crate) mod target;
mod watchdog;

pub(crate) use client::{Client, Forwarded, Peer};
pub(crate) use exchange::{Job, JobTrace, Reply, ReplyBody, StreamAborted, Work};
pub(crate) use outbox::Outbox;
pub(crate) use pipe::{End, Pipe, PipeReader, Taken};
pub(crate) use queue::{JobQueue, PushError};
pub(crate) use request_body::{BodyFailure, RequestBody, Settled, SharedBody};
pub(crate) use stamp::Stamp;
pub(crate) use watchdog::{Request as LoggedRequest, Watchdog};
