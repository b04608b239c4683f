//! The I/O thread: accepts connections, parses HTTP/1 with hyper, checks each request, hands it
//! to the Python side through the bridge and writes the response.
//!
//! `server` runs the accept loops and one watcher per connection (idle, header and write
//! timeouts, drain); `inbound` follows what the connection reads before hyper parses it (raw
//! bytes in request lines, strict chunked framing); `service` is the hyper service of one
//! request; `forwarded` reads trusted proxy headers into the request's client view;
//! `access_log` writes one line per response.

mod access_log;
mod forwarded;
mod inbound;
mod limits;
mod listener;
mod response_body;
mod server;
mod service;

pub(crate) use access_log::AccessLog;
pub(crate) use forwarded::TrustedProxies;
pub(crate) use limits::Limits;
pub(crate) use listener::{BindSpec, Listener, SocketKind};
pub(crate) use server::{Drained, Server, Timeouts};
pub(crate) use service::Shared;
