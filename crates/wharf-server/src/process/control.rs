//! The control channel between a worker and its supervisor, both halves: one Unix socket pair
//! per worker, JSON lines. Workers report readiness, heartbeats, metrics and requests to be
//! replaced; the supervisor asks for metrics; the supervisor going away (EOF) tells a worker
//! to drain and exit.

use std::os::fd::OwnedFd;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::observe::Snapshot;

/// How often a worker proves its I/O loop is alive.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RecycleReason {
    MaxRequests,
    Timeout,
}

impl RecycleReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecycleReason::MaxRequests => "max_requests",
            RecycleReason::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum WorkerMessage {
    /// The app is imported and the worker accepts connections.
    Ready,
    Heartbeat {
        served: u64,
    },
    /// Please start a replacement and then drain this worker.
    Recycle {
        reason: RecycleReason,
    },
    /// The worker's metrics, answering `Snapshot { seq }` (or `seq: u64::MAX` as the last word
    /// of an exiting worker).
    Metrics {
        seq: u64,
        snapshot: Box<Snapshot>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum SupervisorMessage {
    /// Send your metrics now, tagged with `seq`.
    Snapshot { seq: u64 },
}

struct Outgoing {
    msg: WorkerMessage,
    written: Option<oneshot::Sender<()>>,
}

/// Worker side: sends what it is given plus heartbeats, and answers metrics requests.
pub(crate) struct ControlClient {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl ControlClient {
    /// Starts the channel's task; must run inside the tokio runtime. `served` is read for
    /// each heartbeat and `snapshot` for each metrics request; `on_supervisor_gone` fires
    /// once if the supervisor disappears.
    pub(crate) fn start(
        fd: OwnedFd,
        served: impl Fn() -> u64 + Send + 'static,
        snapshot: impl Fn() -> Snapshot + Send + 'static,
        on_supervisor_gone: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<ControlClient> {
        let std_stream = std::os::unix::net::UnixStream::from(fd);
        std_stream.set_nonblocking(true)?;
        let stream = UnixStream::from_std(std_stream)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
            loop {
                let (msg, written) = tokio::select! {
                    _ = beat.tick() => (WorkerMessage::Heartbeat { served: served() }, None),
                    out = rx.recv() => match out { Some(o) => (o.msg, o.written), None => return },
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => match parse::<SupervisorMessage>(&line) {
                            Ok(SupervisorMessage::Snapshot { seq }) => {
                                (WorkerMessage::Metrics { seq, snapshot: Box::new(snapshot()) }, None)
                            }
                            Err(err) => {
                                tracing::warn!("unreadable message from the supervisor: {err}");
                                continue;
                            }
                        },
                        _ => break,
                    },
                };
                let Some(line) = json_line(&msg) else { continue };
                if write.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                if let Some(written) = written {
                    written.send(()).ok();
                }
            }
            on_supervisor_gone();
        });
        Ok(ControlClient { tx })
    }

    pub(crate) fn send(&self, msg: WorkerMessage) {
        // The task only ends when the supervisor is gone; then nobody is listening anyway.
        self.tx.send(Outgoing { msg, written: None }).ok();
    }

    /// Sends the worker's last metrics and waits (bounded) until they are written.
    pub(crate) async fn final_report(&self, snapshot: Snapshot) {
        let (written, done) = oneshot::channel();
        let msg = WorkerMessage::Metrics { seq: u64::MAX, snapshot: Box::new(snapshot) };
        if self.tx.send(Outgoing { msg, written: Some(written) }).is_ok() {
            tokio::time::timeout(Duration::from_secs(1), done).await.ok();
        }
    }
}

/// Supervisor side: what the supervisor sends to one worker.
#[derive(Clone)]
pub(super) struct WorkerChannel {
    tx: mpsc::UnboundedSender<SupervisorMessage>,
}

impl WorkerChannel {
    /// Starts both directions of `worker`'s channel on `stream`; must run inside the tokio
    /// runtime. Every message from the worker goes to `on_message` until it returns `false`;
    /// `on_end` runs once the worker's side is closed (it exited).
    pub(super) fn start(
        worker: u32,
        stream: std::os::unix::net::UnixStream,
        mut on_message: impl FnMut(WorkerMessage) -> bool + Send + 'static,
        on_end: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<WorkerChannel> {
        stream.set_nonblocking(true)?;
        let (read, mut write) = UnixStream::from_std(stream)?.into_split();
        let (tx, mut outgoing) = mpsc::unbounded_channel::<SupervisorMessage>();
        tokio::spawn(async move {
            while let Some(msg) = outgoing.recv().await {
                let Some(line) = json_line(&msg) else { continue };
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match parse::<WorkerMessage>(&line) {
                    Ok(msg) => {
                        if !on_message(msg) {
                            break;
                        }
                    }
                    Err(err) => tracing::warn!(worker, "unreadable control message {line:?}: {err}"),
                }
            }
            on_end();
        });
        Ok(WorkerChannel { tx })
    }

    /// Queues `msg` for the worker; `false` once its channel is closed.
    pub(super) fn send(&self, msg: SupervisorMessage) -> bool {
        self.tx.send(msg).is_ok()
    }
}

fn json_line(msg: &impl Serialize) -> Option<String> {
    let mut line = serde_json::to_string(msg).ok()?;
    line.push('\n');
    Some(line)
}

fn parse<T: DeserializeOwned>(line: &str) -> serde_json::Result<T> {
    serde_json::from_str(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_json_lines() {
        let msg = WorkerMessage::Recycle { reason: RecycleReason::MaxRequests };
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(text, r#"{"type":"recycle","reason":"max_requests"}"#);
        assert_eq!(serde_json::from_str::<WorkerMessage>(&text).expect("parses"), msg);
        assert!(serde_json::from_str::<WorkerMessage>(r#"{"type":"nope"}"#).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_two_halves_talk() {
        let (supervisor_end, worker_end) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let (got_tx, mut got) = mpsc::unbounded_channel();
        let (ended_tx, ended) = oneshot::channel();
        let channel = WorkerChannel::start(
            1,
            supervisor_end,
            move |msg| got_tx.send(msg).is_ok(),
            move || {
                ended_tx.send(()).ok();
            },
        )
        .expect("supervisor half");
        let client =
            ControlClient::start(OwnedFd::from(worker_end), || 3, Snapshot::default, || {}).expect("worker half");
        client.send(WorkerMessage::Ready);
        assert!(channel.send(SupervisorMessage::Snapshot { seq: 7 }));
        let mut seen = Vec::new();
        while !seen.iter().any(|m| matches!(m, WorkerMessage::Metrics { seq: 7, .. })) {
            let msg = tokio::time::timeout(Duration::from_secs(10), got.recv()).await;
            seen.push(msg.ok().flatten().expect("a message from the worker"));
        }
        assert!(seen.contains(&WorkerMessage::Ready));
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(10), ended).await;
        assert!(ended.is_ok(), "the supervisor half notices the worker is gone");
    }
}
