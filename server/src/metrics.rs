//! Prometheus text-format metrics and a minimal HTTP endpoint for them
//! (`GET /metrics`). No payloads, key ids or identities appear here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// All server metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    evaluation: Mutex<Histogram>,
    queue_wait: Mutex<Histogram>,
    auth_failures: AtomicU64,
    bootstraps: AtomicU64,
    keyswitches: AtomicU64,
    inferences: AtomicU64,
    key_upload_bytes: AtomicU64,
    queue_depth: AtomicI64,
    running_jobs: AtomicI64,
    key_cache_bytes: AtomicI64,
    key_cache_entries: AtomicI64,
}

impl Metrics {
    /// One finished RPC: its method, gRPC status code name and latency.
    pub fn request(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method, format!("{code:?}"))).or_default() += 1;
        }
        if let Ok(mut h) = self.latency.lock() {
            h.entry(method).or_default().observe(elapsed.as_secs_f64());
        }
    }

    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn evaluated(&self, inferences: u64, bootstraps: u64, keyswitches: u64, seconds: f64) {
        self.inferences.fetch_add(inferences, Ordering::Relaxed);
        self.bootstraps.fetch_add(bootstraps, Ordering::Relaxed);
        self.keyswitches.fetch_add(keyswitches, Ordering::Relaxed);
        if let Ok(mut h) = self.evaluation.lock() {
            h.observe(seconds);
        }
    }

    pub fn queue_waited(&self, seconds: f64) {
        if let Ok(mut h) = self.queue_wait.lock() {
            h.observe(seconds);
        }
    }

    pub fn key_bytes_received(&self, n: u64) {
        self.key_upload_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn queue_depth_add(&self, d: i64) {
        self.queue_depth.fetch_add(d, Ordering::Relaxed);
    }

    pub fn running_add(&self, d: i64) {
        self.running_jobs.fetch_add(d, Ordering::Relaxed);
    }

    pub fn set_key_cache(&self, bytes: usize, entries: usize) {
        self.key_cache_bytes.store(bytes as i64, Ordering::Relaxed);
        self.key_cache_entries
            .store(entries as i64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP blindfold_requests_total Finished RPCs by method and gRPC status.\n");
        out.push_str("# TYPE blindfold_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((method, code), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "blindfold_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP blindfold_request_duration_seconds RPC latency by method.\n");
        out.push_str("# TYPE blindfold_request_duration_seconds histogram\n");
        if let Ok(m) = self.latency.lock() {
            for (method, h) in m.iter() {
                h.render(
                    &mut out,
                    "blindfold_request_duration_seconds",
                    &format!("method=\"{method}\""),
                );
            }
        }
        out.push_str(
            "# HELP blindfold_evaluation_seconds Encrypted evaluation time per Predict batch.\n",
        );
        out.push_str("# TYPE blindfold_evaluation_seconds histogram\n");
        if let Ok(h) = self.evaluation.lock() {
            h.render(&mut out, "blindfold_evaluation_seconds", "");
        }
        out.push_str("# HELP blindfold_queue_wait_seconds Time jobs waited for a compute slot.\n");
        out.push_str("# TYPE blindfold_queue_wait_seconds histogram\n");
        if let Ok(h) = self.queue_wait.lock() {
            h.render(&mut out, "blindfold_queue_wait_seconds", "");
        }
        let counters: [(&str, &str, u64); 5] = [
            (
                "blindfold_auth_failures_total",
                "Requests refused for a missing or invalid token.",
                self.auth_failures.load(Ordering::Relaxed),
            ),
            (
                "blindfold_bootstraps_total",
                "Programmable bootstraps performed.",
                self.bootstraps.load(Ordering::Relaxed),
            ),
            (
                "blindfold_keyswitches_total",
                "Keyswitches performed.",
                self.keyswitches.load(Ordering::Relaxed),
            ),
            (
                "blindfold_inferences_total",
                "Encrypted inferences completed.",
                self.inferences.load(Ordering::Relaxed),
            ),
            (
                "blindfold_key_upload_bytes_total",
                "Evaluation-key bytes received.",
                self.key_upload_bytes.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let gauges: [(&str, &str, i64); 4] = [
            (
                "blindfold_queue_depth",
                "Jobs waiting for a compute slot.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "blindfold_running_jobs",
                "Jobs on the compute pool now.",
                self.running_jobs.load(Ordering::Relaxed),
            ),
            (
                "blindfold_key_cache_bytes",
                "Bytes of decompressed evaluation keys in memory.",
                self.key_cache_bytes.load(Ordering::Relaxed),
            ),
            (
                "blindfold_key_cache_entries",
                "Decompressed evaluation keys in memory.",
                self.key_cache_entries.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        if let Some(rss) = resident_memory_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                 # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        out
    }
}

/// Resident set size of this process (Linux `/proc/self/statm`).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Serves `GET /metrics` on `listener` until the task is dropped. Only the
/// request line is read (at most 8 KiB, 5 s); anything else gets 404.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            if !matches!(
                tokio::time::timeout(Duration::from_secs(5), read).await,
                Ok(Ok(()))
            ) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let line = head.lines().next().unwrap_or("");
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next(), parts.next());
            let (status, body) = if method == Some("GET") && path == Some("/metrics") {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "not found; try GET /metrics\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
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
        assert!(text.contains("blindfold_requests_total{method=\"Predict\",code=\"Ok\"} 1"));
        assert!(text.contains("code=\"InvalidArgument\"} 1"));
        assert!(text.contains("blindfold_bootstraps_total 84"));
        assert!(text.contains(
            "blindfold_request_duration_seconds_bucket{method=\"Predict\",le=\"0.5\"} 2"
        ));
        assert!(text.contains(
            "blindfold_request_duration_seconds_bucket{method=\"Predict\",le=\"0.1\"} 1"
        ));
        assert!(text.contains("blindfold_evaluation_seconds_count 1"));
    }
}
