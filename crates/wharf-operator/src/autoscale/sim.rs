//! `wharf-operator autoscale-sim`: the operator's own scrape and decision code driven over
//! stdin/stdout, so a harness can close the loop on real wharf processes without a cluster
//! (bench/autoscale.py). One JSON object per line in, one per line out.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::decide::{self, Observation, Params, PodSample, State};
use super::scrape;

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    #[arg(long, default_value_t = 1)]
    pub min_replicas: u32,
    #[arg(long, default_value_t = 10)]
    pub max_replicas: u32,
    #[arg(long, default_value_t = 70)]
    pub target_utilization_percent: u32,
    #[arg(long, default_value_t = 60)]
    pub scale_down_delay_seconds: u64,
    #[arg(long, default_value_t = 6)]
    pub panic_window_seconds: u64,
    #[arg(long, default_value_t = 200)]
    pub panic_threshold_percent: u32,
    #[arg(long, default_value_t = 1000)]
    pub max_scale_up_rate: u32,
    #[arg(long, default_value_t = 2)]
    pub max_scale_down_rate: u32,
    /// Per-pod scrape timeout, as the operator uses.
    #[arg(long, default_value_t = 500)]
    pub scrape_timeout_ms: u64,
}

impl SimArgs {
    fn params(&self) -> Params {
        Params {
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            target_utilization_percent: self.target_utilization_percent,
            scale_down_delay: Duration::from_secs(self.scale_down_delay_seconds),
            panic_window: Duration::from_secs(self.panic_window_seconds),
            panic_threshold_percent: self.panic_threshold_percent,
            max_scale_up_rate: self.max_scale_up_rate,
            max_scale_down_rate: self.max_scale_down_rate,
        }
    }
}

/// One tick of the harness: the clock, the replica counts, and either admin addresses of the ready
/// pods to scrape or samples it measured itself (for models that infer load another way).
#[derive(Debug, Deserialize)]
struct Tick {
    now: f64,
    current: u32,
    ready: u32,
    #[serde(default)]
    admin: Vec<SocketAddr>,
    #[serde(default)]
    samples: Vec<GivenSample>,
}

#[derive(Debug, Deserialize)]
struct GivenSample {
    busy: u32,
    #[serde(default)]
    queued: u32,
    threads: u32,
}

#[derive(Debug, Serialize)]
struct Answer {
    desired: u32,
    mode: &'static str,
    reason: &'static str,
    load: Option<f64>,
    capacity: Option<f64>,
    message: String,
    scrape_errors: Vec<String>,
}

/// Reads ticks until stdin closes. A malformed line gets an `{"error": …}` line back and is skipped.
pub async fn run(args: SimArgs) -> std::io::Result<()> {
    let params = args.params();
    let timeout = Duration::from_millis(args.scrape_timeout_ms);
    let mut state = State::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Tick>(&line) {
            Ok(tick) => one_tick(&mut state, &params, tick, timeout).await,
            Err(error) => serde_json::json!({ "error": format!("bad tick: {error}") }),
        };
        out.write_all(format!("{reply}\n").as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

async fn one_tick(
    state: &mut State,
    params: &Params,
    tick: Tick,
    timeout: Duration,
) -> serde_json::Value {
    let now = Duration::try_from_secs_f64(tick.now).unwrap_or_default();
    let mut samples: Vec<PodSample> = tick
        .samples
        .iter()
        .map(|s| PodSample {
            busy: s.busy,
            queued: s.queued,
            threads: s.threads,
            scraped_at: now,
        })
        .collect();
    let mut scrape_errors = Vec::new();
    for result in join_all(tick.admin.iter().map(|a| scrape::scrape(*a, timeout))).await {
        match result {
            Ok(s) => samples.push(PodSample {
                busy: s.busy,
                queued: s.queued,
                threads: s.threads,
                scraped_at: now,
            }),
            Err(error) => scrape_errors.push(error.to_string()),
        }
    }
    let decision = decide::decide(
        state,
        params,
        &Observation {
            now,
            current: tick.current,
            ready: tick.ready,
            samples: &samples,
        },
    );
    serde_json::to_value(Answer {
        desired: decision.desired,
        mode: decision.mode.as_str(),
        reason: decision.reason.code(),
        load: decision.load,
        capacity: decision.capacity,
        message: decision.to_string(),
        scrape_errors,
    })
    .unwrap_or_else(|error| serde_json::json!({ "error": error.to_string() }))
}
