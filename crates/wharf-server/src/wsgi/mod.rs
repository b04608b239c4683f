//! The Python side: a pool of threads attached to the interpreter, each taking jobs from the
//! bridge and calling the application.
//!
//! `call` serves one request (environ → app → response → close()); `environ`, `input`
//! (`wsgi.input`), `start_response` with `response_head`, `file_wrapper` and `errors_stream`
//! (`wsgi.errors`) are what PEP 3333 hands the app; `app` imports it.

mod app;
mod call;
mod environ;
mod errors_stream;
mod file_wrapper;
mod input;
mod pool;
mod pyerr;
mod response_head;
mod start_response;
mod stream;

pub(crate) use app::load as load_app;
pub(crate) use call::AppContext;
pub(crate) use environ::{EnvironSettings, EnvironTemplate};
pub(crate) use errors_stream::{ErrorStream, ErrorsLevel};
pub(crate) use file_wrapper::FileWrapper;
pub(crate) use input::WsgiInput;
pub(crate) use pool::Pool;
