//! Server metrics in a `prometheus-client` registry (one per server, so
//! servers in one process never mix counts), served at `GET /metrics` by
//! axum. No payloads, key ids or identities appear here.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// All server metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    evaluation: Histogram,
    queue_wait: Histogram,
    auth_failures: Counter,
    bootstraps: Counter,
    keyswitches: Counter,
    inferences: Counter,
    key_upload_bytes: Counter,
    queue_depth: Gauge<i64, AtomicI64>,
    running_jobs: Gauge<i64, AtomicI64>,
    key_cache_bytes: Gauge<i64, AtomicI64>,
    key_cache_entries: Gauge<i64, AtomicI64>,
    key_memory: Gauge<i64, AtomicI64>,
    resident_memory: Gauge<i64, AtomicI64>,
    connections_open: Gauge<i64, AtomicI64>,
    connections_refused: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "blindfold_requests",
            "Finished RPCs by method and gRPC status",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "blindfold_request_duration_seconds",
            "RPC latency by method",
            latency.clone(),
        );
        let evaluation = latency_histogram();
        registry.register(
            "blindfold_evaluation_seconds",
            "Encrypted evaluation time per Predict batch",
            evaluation.clone(),
        );
        let queue_wait = latency_histogram();
        registry.register(
            "blindfold_queue_wait_seconds",
            "Time jobs waited for a compute slot",
            queue_wait.clone(),
        );
        let [auth_failures, bootstraps, keyswitches, inferences, key_upload_bytes] = [
            (
                "blindfold_auth_failures",
                "Requests refused for a missing or invalid token",
            ),
            ("blindfold_bootstraps", "Programmable bootstraps performed"),
            ("blindfold_keyswitches", "Keyswitches performed"),
            ("blindfold_inferences", "Encrypted inferences completed"),
            (
                "blindfold_key_upload_bytes",
                "Evaluation-key bytes received",
            ),
        ]
        .map(|(name, help)| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        });
        let [queue_depth, running_jobs, key_cache_bytes, key_cache_entries, key_memory, resident_memory] =
            [
                ("blindfold_queue_depth", "Jobs waiting for a compute slot"),
                ("blindfold_running_jobs", "Jobs on the compute pool now"),
                (
                    "blindfold_key_cache_bytes",
                    "Bytes of decompressed evaluation keys in memory",
                ),
                (
                    "blindfold_key_cache_entries",
                    "Decompressed evaluation keys in memory",
                ),
                (
                    "blindfold_key_memory_bytes",
                    "Bytes of decompressed evaluation keys reserved against compute.key_cache_mib \
                 (cached or in use)",
                ),
                (
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                ),
            ]
            .map(|(name, help)| {
                let g = Gauge::<i64, AtomicI64>::default();
                registry.register(name, help, g.clone());
                g
            });
        let connections_open = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "blindfold_connections_open",
            "Open client connections (at most limits.max_connections)",
            connections_open.clone(),
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "blindfold_connections_refused",
            "Connections closed by the server before serving: at the cap, or no preface in time",
            connections_refused.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            evaluation,
            queue_wait,
            auth_failures,
            bootstraps,
            keyswitches,
            inferences,
            key_upload_bytes,
            queue_depth,
            running_jobs,
            key_cache_bytes,
            key_cache_entries,
            key_memory,
            resident_memory,
            connections_open,
            connections_refused,
        }
    }
}

impl Metrics {
    /// One finished RPC: its method, gRPC status code name and latency.
    pub fn request(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code: format!("{code:?}"),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn connections_add(&self, d: i64) {
        self.connections_open.inc_by(d);
    }

    /// A connection closed before serving, for `reason` (`cap`,
    /// `preface_timeout`).
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    pub fn evaluated(&self, inferences: u64, bootstraps: u64, keyswitches: u64, seconds: f64) {
        self.inferences.inc_by(inferences);
        self.bootstraps.inc_by(bootstraps);
        self.keyswitches.inc_by(keyswitches);
        self.evaluation.observe(seconds);
    }

    pub fn queue_waited(&self, seconds: f64) {
        self.queue_wait.observe(seconds);
    }

    pub fn key_bytes_received(&self, n: u64) {
        self.key_upload_bytes.inc_by(n);
    }

    pub fn queue_depth_add(&self, d: i64) {
        self.queue_depth.inc_by(d);
    }

    pub fn running_add(&self, d: i64) {
        self.running_jobs.inc_by(d);
    }

    pub fn set_key_cache(&self, bytes: usize, entries: usize) {
        self.key_cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.key_cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    pub fn set_key_memory(&self, bytes: usize) {
        self.key_memory
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The exposition (OpenMetrics text).
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Resident set size of this process (Linux `/proc/self/statm`; kept by
/// hand: `prometheus-client` has no process collector).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Serves `GET /metrics` on `listener` until the task is dropped; any other
/// path is 404.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("Predict", tonic::Code::Ok, Duration::from_millis(300));
        m.request(
            "Predict",
            tonic::Code::InvalidArgument,
            Duration::from_millis(2),
        );
        m.evaluated(2, 84, 20, 0.5);
        let text = m.render();
        assert!(
            text.contains("blindfold_requests_total{method=\"Predict\",code=\"Ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("code=\"InvalidArgument\"} 1"));
        assert!(text.contains("blindfold_bootstraps_total 84"));
        // prometheus-client writes the bucket bound before the family labels
        assert!(
            text.contains(
                "blindfold_request_duration_seconds_bucket{le=\"0.5\",method=\"Predict\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "blindfold_request_duration_seconds_bucket{le=\"0.1\",method=\"Predict\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("blindfold_evaluation_seconds_count 1"),
            "{text}"
        );
    }
}
