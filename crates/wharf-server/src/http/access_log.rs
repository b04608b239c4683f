//! Access log: one line per finished response, written by a dedicated thread so a slow
//! stdout never blocks a request. Lines that do not fit in the buffer are dropped and counted
//! (`wharf_access_log_lines_dropped_total`).

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::response_body::OnFinish;
use crate::bridge::{Client, Forwarded, Peer};
use crate::config::AccessLogFormat;

const BUFFERED_LINES: usize = 16 * 1024;

#[derive(Clone)]
pub(crate) struct AccessLog {
    tx: SyncSender<String>,
    format: AccessLogFormat,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    pub(crate) fn start(format: AccessLogFormat) -> std::io::Result<AccessLog> {
        let (tx, rx) = mpsc::sync_channel::<String>(BUFFERED_LINES);
        thread::Builder::new().name("wharf-access-log".into()).spawn(move || {
            let mut out = BufWriter::new(std::io::stdout().lock());
            while let Ok(line) = rx.recv() {
                let mut ok = writeln!(out, "{line}").is_ok();
                while let Ok(line) = rx.try_recv() {
                    ok &= writeln!(out, "{line}").is_ok();
                }
                if !(ok && out.flush().is_ok()) {
                    return;
                }
            }
        })?;
        Ok(AccessLog { tx, format, dropped: Arc::new(AtomicU64::new(0)) })
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn write(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What one access-log line describes; written when the response body is done.
pub(crate) struct AccessRecord {
    pub(crate) log: AccessLog,
    /// Who sent the request (through trusted proxies, the original client).
    pub(crate) client: Client,
    /// `None` for a request the HTTP parser refused before it had one.
    pub(crate) request: Option<RequestLine>,
    pub(crate) status: u16,
    pub(crate) referer: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) started: Instant,
    pub(crate) started_wall: SystemTime,
    /// The request's trace id, when tracing is on.
    pub(crate) trace_id: Option<String>,
}

pub(crate) struct RequestLine {
    pub(crate) method: http::Method,
    pub(crate) target: String,
    pub(crate) version: http::Version,
}

impl AccessLog {
    /// A line for a request refused while its head was parsed (hyper answered `status`
    /// itself), or for a connection wharf answered without a request (an HTTP/2 preface):
    /// without a request there are no proxy headers, so the client is the socket peer.
    pub(crate) fn unparsed(&self, peer: &Arc<Peer>, status: u16) {
        let record = AccessRecord {
            log: self.clone(),
            client: Client { peer: Arc::clone(peer), forwarded: Forwarded::default() },
            request: None,
            status,
            referer: None,
            user_agent: None,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            trace_id: None,
        };
        Box::new(record).finish(0, true);
    }
}

impl OnFinish for AccessRecord {
    fn finish(self: Box<Self>, bytes_sent: u64, completed: bool) {
        let line = match self.log.format {
            AccessLogFormat::Combined => self.combined(bytes_sent, self.started.elapsed()),
            AccessLogFormat::Json => self.json(bytes_sent, self.started.elapsed(), completed),
        };
        self.log.write(line);
    }
}

fn version_str(v: http::Version) -> &'static str {
    if v == http::Version::HTTP_10 { "HTTP/1.0" } else { "HTTP/1.1" }
}

/// Quotes a client-controlled value for the combined format without letting it break the line.
fn quoted(value: Option<&str>) -> String {
    match value {
        None => "\"-\"".to_owned(),
        Some(v) => format!("\"{}\"", v.escape_default()),
    }
}

impl AccessRecord {
    fn combined(&self, bytes: u64, elapsed: Duration) -> String {
        let request = self.request.as_ref().map(|r| format!("{} {} {}", r.method, r.target, version_str(r.version)));
        format!(
            "{} - - [{}] {} {} {} {} {} {:.6}",
            self.client.address().as_deref().unwrap_or("-"),
            clf_time(self.started_wall),
            quoted(request.as_deref()),
            self.status,
            if bytes == 0 { "-".to_owned() } else { bytes.to_string() },
            quoted(self.referer.as_deref()),
            quoted(self.user_agent.as_deref()),
            elapsed.as_secs_f64(),
        )
    }

    fn json(&self, bytes: u64, elapsed: Duration, completed: bool) -> String {
        serde_json::json!({
            "time": rfc3339(self.started_wall),
            "remote_addr": self.client.address(),
            "remote_port": self.client.port(),
            "method": self.request.as_ref().map(|r| r.method.as_str()),
            "target": self.request.as_ref().map(|r| r.target.as_str()),
            "protocol": self.request.as_ref().map(|r| version_str(r.version)),
            "status": self.status,
            "bytes": bytes,
            "duration_s": elapsed.as_secs_f64(),
            "referer": self.referer,
            "user_agent": self.user_agent,
            "completed": completed,
            "trace_id": self.trace_id,
        })
        .to_string()
    }
}

/// Days since 1970-01-01 to a (year, month, day) civil date (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    micros: u32,
}

fn utc(t: SystemTime) -> Utc {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Utc { year, month, day, hour: rem / 3600, minute: rem % 3600 / 60, second: rem % 60, micros: since.subsec_micros() }
}

fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let u = utc(t);
    let month = MONTHS.get(u.month as usize - 1).copied().unwrap_or("Jan");
    format!("{:02}/{month}/{}:{:02}:{:02}:{:02} +0000", u.day, u.year, u.hour, u.minute, u.second)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    let u = utc(t);
    format!("{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", u.year, u.month, u.day, u.hour, u.minute, u.second, u.micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(971_182_536); // 2000-10-10T12:55:36Z
        assert_eq!(clf_time(t), "10/Oct/2000:12:55:36 +0000");
        assert_eq!(rfc3339(t), "2000-10-10T12:55:36.000000Z");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn quoting_keeps_lines_intact() {
        assert_eq!(quoted(Some("a\"b\nc")), "\"a\\\"b\\nc\"");
        assert_eq!(quoted(None), "\"-\"");
    }
}
