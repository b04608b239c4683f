//! The admin listener: /livez, /readyz and /metrics answered by the supervisor in Rust, apart
//! from application traffic, so probes never wait behind the app or a full request queue.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use super::health::Health;
use super::scrape::Scraper;
use crate::http::Listener;
use crate::observe::{ProcessStats, render_metrics};

/// How long a scrape waits for workers to report fresh numbers.
const SCRAPE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

async fn route(req: Request<Incoming>, health: Arc<Health>, scraper: Arc<Scraper>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "{\"error\":\"method not allowed\"}".into());
    }
    let snap = health.snapshot();
    if req.uri().path() == "/metrics" {
        let (totals, resources) = scraper.collect(SCRAPE_WAIT).await;
        let process = ProcessStats { workers: snap.ready_workers, restarts: scraper.restarts(), resources };
        let mut response = reply(StatusCode::OK, render_metrics(&totals, &process));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
        return response;
    }
    let detail = serde_json::json!({
        "ready_workers": snap.ready_workers,
        "stale_workers": snap.stale_workers,
        "draining": snap.draining,
    });
    let (ok, name) = match req.uri().path() {
        "/livez" => (snap.live(), "live"),
        "/readyz" => (snap.ready(), "ready"),
        _ => return reply(StatusCode::NOT_FOUND, "{\"error\":\"not found\"}".into()),
    };
    let mut body = detail;
    body[name] = serde_json::Value::Bool(ok);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    reply(status, body.to_string())
}

/// Serves the admin endpoints until the runtime stops.
pub(crate) async fn serve(listener: Listener, health: Arc<Health>, scraper: Arc<Scraper>) {
    tracing::info!("admin listener on {}", listener.describe());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(std::time::Duration::from_secs(10));
    loop {
        let (io, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!("admin accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let health = Arc::clone(&health);
        let scraper = Arc::clone(&scraper);
        let conn = http.serve_connection(
            TokioIo::new(io),
            service_fn(move |req| {
                let (health, scraper) = (Arc::clone(&health), Arc::clone(&scraper));
                async move { Ok::<_, Infallible>(route(req, health, scraper).await) }
            }),
        );
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!("admin connection: {err}");
            }
        });
    }
}
