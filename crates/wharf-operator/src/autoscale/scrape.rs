//! Reads one pod's saturation from wharf's admin `/metrics`: three gauges out of the Prometheus text.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const BUSY: &str = "wharf_python_threads_busy";
const THREADS: &str = "wharf_python_threads_total";
const QUEUED: &str = "wharf_requests_queued";
/// wharf's whole `/metrics` page is a few kB; anything this large is not wharf.
const MAX_BODY: usize = 1 << 20;

/// The three gauges the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturation {
    pub busy: u32,
    pub queued: u32,
    pub threads: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("cannot read http://{addr}/metrics: {source}")]
    Http {
        addr: SocketAddr,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("http://{addr}/metrics answered {status}")]
    Status {
        addr: SocketAddr,
        status: http::StatusCode,
    },
    #[error("http://{addr}/metrics has no {metric} (is this wharf's admin port?)")]
    Missing {
        addr: SocketAddr,
        metric: &'static str,
    },
}

/// GET `http://addr/metrics` within `timeout` (connect included) and pick the gauges out.
pub async fn scrape(addr: SocketAddr, timeout: Duration) -> Result<Saturation, ScrapeError> {
    let text = tokio::time::timeout(timeout, get_metrics(addr))
        .await
        .map_err(|_| ScrapeError::Timeout { addr, timeout })??;
    parse(&text).map_err(|metric| ScrapeError::Missing { addr, metric })
}

async fn get_metrics(addr: SocketAddr) -> Result<String, ScrapeError> {
    let http =
        |source: Box<dyn std::error::Error + Send + Sync>| ScrapeError::Http { addr, source };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| http(Box::new(e)))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(Box::new(e)))?;
    // The connection task ends with the response (the request says `Connection: close`).
    let driver = tokio::spawn(connection);
    let request = http::Request::get("/metrics")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(Box::new(e)))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http(Box::new(e)))?;
    let status = response.status();
    if !status.is_success() {
        driver.abort();
        return Err(ScrapeError::Status { addr, status });
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    driver.abort();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The three gauges from Prometheus text; `Err` names the first one missing.
pub fn parse(text: &str) -> Result<Saturation, &'static str> {
    let (mut busy, mut queued, mut threads) = (None, None, None);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let slot = match name {
            BUSY => &mut busy,
            QUEUED => &mut queued,
            THREADS => &mut threads,
            _ => continue,
        };
        // Gauges are written as integers by wharf; a float or garbage is clamped, not trusted.
        *slot = value
            .parse::<f64>()
            .ok()
            .map(|v| v.max(0.0).min(f64::from(u32::MAX)) as u32);
    }
    Ok(Saturation {
        busy: busy.ok_or(BUSY)?,
        queued: queued.ok_or(QUEUED)?,
        threads: threads.ok_or(THREADS)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_three_gauges_out_of_wharf_text() {
        let text = "# HELP wharf_requests_queued requests waiting\n# TYPE wharf_requests_queued gauge\n\
            wharf_requests_total{method=\"GET\",status=\"200\"} 12\n\
            wharf_requests_queued 3\nwharf_python_threads_busy 8\nwharf_python_threads_total 8\n";
        assert_eq!(
            parse(text),
            Ok(Saturation {
                busy: 8,
                queued: 3,
                threads: 8
            })
        );
    }

    #[test]
    fn names_the_missing_gauge() {
        assert_eq!(
            parse("wharf_python_threads_busy 1\nwharf_python_threads_total 4\n"),
            Err(QUEUED)
        );
        assert_eq!(parse("<html>not metrics</html>"), Err(BUSY));
    }

    #[test]
    fn garbage_values_do_not_count_as_present() {
        let text = "wharf_requests_queued -4\nwharf_python_threads_busy NaN\nwharf_python_threads_total 1e12\n";
        let s = parse(text).expect("all three present");
        assert_eq!((s.queued, s.threads), (0, u32::MAX));
        assert_eq!(s.busy, 0, "NaN clamps to 0");
    }

    #[tokio::test]
    async fn a_closed_port_is_an_error_not_a_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let err = scrape(addr, Duration::from_secs(2))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, ScrapeError::Http { .. } | ScrapeError::Timeout { .. }),
            "{err}"
        );
    }
}
