//! `service-bench`: latency and throughput of a running Blindfold server,
//! measured through gRPC with the real client.
//!
//! ```text
//! cargo run --release -p blindfold-server -- --config server/quickstart.toml &
//! cargo run --release -p blindfold-benches --bin service-bench -- --model digits-mlp
//! ```
//! Reports: one client's end-to-end latency against the server-side
//! evaluation time (service overhead), key upload size and time, client
//! encrypt/decrypt times; then N concurrent clients with their own keys:
//! inferences and bootstraps per second against one client and against the
//! machine's bootstrap capacity measured here with all cores busy; and the
//! server's memory with the N keys loaded (from its metrics endpoint).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use blindfold_client::crypto;
use blindfold_client::keys::KeyDir;
use blindfold_client::{Bytes, ConnectOptions, Remote};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = blindfold_client::remote::DEFAULT_SERVER)]
    server: String,
    #[arg(long, env = "BLINDFOLD_TOKEN")]
    token: Option<String>,
    /// The server's metrics address (for its memory), e.g. 127.0.0.1:9464
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: String,
    #[arg(long, default_value = "digits-mlp")]
    model: String,
    /// Concurrent clients, each with its own keys
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Sequential requests of the single client
    #[arg(long, default_value_t = 10)]
    single: usize,
    /// Requests per client in the concurrent phase
    #[arg(long, default_value_t = 6)]
    requests: usize,
    /// Where the clients' keys are kept between runs
    #[arg(long, default_value = "target/service-bench-keys")]
    keys: std::path::PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    parameter_set: String,
    bootstraps_per_inference: u32,
    keygen_s: Option<f64>,
    key_upload_bytes: u64,
    key_upload_s: f64,
    encrypt_ms: f64,
    decrypt_ms: f64,
    input_bytes: usize,
    output_bytes: usize,
    single_round_trip_ms_median: f64,
    single_server_evaluation_ms_median: f64,
    service_overhead: f64,
    single_inferences_per_s: f64,
    clients: usize,
    concurrent_inferences: usize,
    concurrent_wall_s: f64,
    concurrent_inferences_per_s: f64,
    concurrent_speedup: f64,
    concurrent_bootstraps_per_s: f64,
    machine_bootstraps_per_s: f64,
    capacity_used: f64,
    server_resident_mb: Option<f64>,
    server_key_cache_mb: Option<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

async fn metric(addr: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let options = ConnectOptions {
        token: a.token.clone(),
        ..Default::default()
    };
    let remote = Remote::connect(&a.server, options.clone()).await?;
    let (proto, spec) = remote.get_model(&a.model).await?;
    let rows = blindfold_runtime::data::Dataset::from_csv(std::path::Path::new("data/digits.csv"))
        .and_then(|d| d.rows("1347..1796".parse().expect("range")))
        .context("reading data/digits.csv (run from the repository root)")?
        .0;
    anyhow::ensure!(
        rows[0].len() == spec.input.len(),
        "service-bench feeds digits rows; pick a digits model"
    );

    // keys: one directory per client, reused between runs
    let mut keygen_s = None;
    let mut clients = Vec::new();
    for i in 0..a.clients.max(1) {
        let dir = KeyDir::new(a.keys.join(spec.params.short_name()).join(i.to_string()));
        if !dir.exists() {
            eprintln!("client {i}: generating {} keys", spec.params.name());
            let t = Instant::now();
            dir.generate(spec.params, false, &mut |_| {})?;
            keygen_s.get_or_insert(t.elapsed().as_secs_f64());
        }
        clients.push((
            dir.client_key()?,
            Arc::new(dir.evaluation_key()?),
            dir.key_id()?,
        ));
    }

    // upload: delete first so the full path (upload, check, decompress) is timed
    let mut upload_s = 0.0;
    for (i, (_, ek, id)) in clients.iter().enumerate() {
        let _ = remote.delete_key(id).await;
        let t = Instant::now();
        remote
            .register_key(ek.clone(), spec.params.name(), Arc::new(|_, _| {}))
            .await?;
        if i == 0 {
            upload_s = t.elapsed().as_secs_f64();
        }
        eprintln!(
            "client {i}: registered {:.1} MB in {:.1} s",
            ek.len() as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
    }

    // machine capacity: batched blind rotations on every core at once
    let ek = blindfold_client::CompressedEvaluationKey::from_bytes(&clients[0].1, u64::MAX)?
        .decompress();
    let threads = rayon::current_num_threads();
    let per_pbs: Vec<f64> = {
        use rayon::prelude::*;
        (0..threads)
            .into_par_iter()
            .map(|_| blindfold_runtime::eval::fhe::time_batched_bootstrap(&ek, 16))
            .collect()
    };
    let machine_bootstraps_per_s: f64 = per_pbs.iter().map(|t| 1.0 / t).sum();
    drop(ek);

    // one client, sequential
    let (ck, _, id) = &clients[0];
    let mut rtt = Vec::new();
    let mut server = Vec::new();
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    let (mut input_bytes, mut output_bytes) = (0, 0);
    for (i, x) in rows.iter().cycle().take(a.single + 1).enumerate() {
        let t = Instant::now();
        let ct = crypto::encrypt_row(ck, &spec, x)?;
        enc.push(t.elapsed().as_secs_f64() * 1e3);
        input_bytes = ct.len();
        let t = Instant::now();
        let r = remote.predict(&a.model, id, vec![ct]).await?;
        let round_trip = t.elapsed().as_secs_f64() * 1e3;
        output_bytes = r.outputs[0].len();
        let t = Instant::now();
        crypto::decrypt_output(ck, &spec, &r.outputs[0])?;
        dec.push(t.elapsed().as_secs_f64() * 1e3);
        if i > 0 {
            // the first request is a warm-up
            rtt.push(round_trip);
            server.push(r.timing.unwrap_or_default().evaluation_ms);
        }
    }
    let rtt_med = median(&mut rtt);
    let server_med = median(&mut server);
    let single_rate = 1e3 / rtt_med;

    // N clients at once, each with its own key
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, (ck, _, id)) in clients.iter().enumerate() {
        let (remote, spec, model, id, ck) = (
            Remote::connect(&a.server, options.clone()).await?,
            spec.clone(),
            a.model.clone(),
            id.clone(),
            ck.clone(),
        );
        let inputs: Vec<Vec<f64>> = rows.iter().skip(c * 50).take(a.requests).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for x in inputs {
                let ct = crypto::encrypt_row(&ck, &spec, &x)?;
                let r = remote.predict(&model, &id, vec![ct]).await?;
                crypto::decrypt_output(&ck, &spec, &r.outputs[0])?;
            }
            Ok::<_, blindfold_client::ClientError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let wall = start.elapsed().as_secs_f64();
    let total = clients.len() * a.requests;
    let rate = total as f64 / wall;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = Report {
        model: a.model.clone(),
        parameter_set: spec.params.name().into(),
        bootstraps_per_inference: proto.bootstraps_per_inference,
        keygen_s,
        key_upload_bytes: clients[0].1.len() as u64,
        key_upload_s: upload_s,
        encrypt_ms: median(&mut enc),
        decrypt_ms: median(&mut dec),
        input_bytes,
        output_bytes,
        single_round_trip_ms_median: rtt_med,
        single_server_evaluation_ms_median: server_med,
        service_overhead: (rtt_med - server_med) / server_med,
        single_inferences_per_s: single_rate,
        clients: clients.len(),
        concurrent_inferences: total,
        concurrent_wall_s: wall,
        concurrent_inferences_per_s: rate,
        concurrent_speedup: rate / single_rate,
        concurrent_bootstraps_per_s: rate * proto.bootstraps_per_inference as f64,
        machine_bootstraps_per_s,
        capacity_used: rate * proto.bootstraps_per_inference as f64 / machine_bootstraps_per_s,
        server_resident_mb: metric(&a.metrics, "process_resident_memory_bytes")
            .await
            .map(|b| b / 1e6),
        server_key_cache_mb: metric(&a.metrics, "blindfold_key_cache_bytes")
            .await
            .map(|b| b / 1e6),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let r = &report;
        println!(
            "model {} on {} ({} bootstraps per inference)",
            r.model, r.parameter_set, r.bootstraps_per_inference
        );
        println!(
            "key upload {:.1} MB in {:.1} s (upload, check, decompress)",
            r.key_upload_bytes as f64 / 1e6,
            r.key_upload_s
        );
        println!(
            "client encrypt {:.2} ms ({} B), decrypt {:.2} ms ({} B)",
            r.encrypt_ms, r.input_bytes, r.decrypt_ms, r.output_bytes
        );
        println!(
            "one client: round trip {:.0} ms, server evaluation {:.0} ms, service overhead {:.1}%",
            r.single_round_trip_ms_median,
            r.single_server_evaluation_ms_median,
            r.service_overhead * 100.0
        );
        println!(
            "{} clients: {} inferences in {:.1} s = {:.2}/s ({:.2}x one client); {:.1} bootstraps/s = {:.0}% of the {:.1}/s this machine does with all cores batched",
            r.clients, r.concurrent_inferences, r.concurrent_wall_s, r.concurrent_inferences_per_s, r.concurrent_speedup,
            r.concurrent_bootstraps_per_s, r.capacity_used * 100.0, r.machine_bootstraps_per_s
        );
        if let (Some(rss), Some(cache)) = (r.server_resident_mb, r.server_key_cache_mb) {
            println!(
                "server memory {rss:.0} MB resident, {cache:.0} MB of decompressed keys ({} keys)",
                r.clients
            );
        }
    }
    Ok(())
}
