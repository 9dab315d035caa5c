//! A bounded soak on the real server binary: mixed encrypted and clear load
//! from two identities, key uploads and deletions, a `kill -9` and restart
//! in the middle, then an audit of what the server holds.
//!
//! Workers (each a loop): encrypted `Predict` for alice and for bob on their
//! own keys, checked against the clear evaluator; `PredictClear` for both;
//! a budgeted model (alice) until its budget is spent; and bob cycling three
//! extra keys through register, predict, delete. Phase 1 runs, the server is
//! killed with SIGKILL while requests are in flight, a new one starts on the
//! same directory and phase 2 runs. Outside the kill window every call must
//! succeed (or, for the budget, be refused as exhausted). The audit: every
//! acknowledged key usable, every acknowledged deletion gone, no orphan blob
//! or upload, SQLite's integrity check ok, the ledger equal to the answers
//! received (plus at most the budgeted calls cut by the kill), and resident
//! memory within the key memory budget plus the constant `limits.rs`
//! states, sampled throughout. `BLINDFOLD_SOAK_SECS` sets each phase's
//! length (default 20).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blindfold_client::{crypto, ClientError, Remote};
use blindfold_runtime::eval::clear;
use blindfold_tests::*;
use tonic::Code;

const BUDGETED: &str = "soak-budget";
const BUDGET: u64 = 12;
const SLACK: u64 = 64 << 20;

#[derive(Default)]
struct Tally {
    ok: u64,
    cut_by_kill: u64,
    refused: u64,
    latencies: Vec<Duration>,
}

#[derive(Default)]
struct Books {
    tallies: BTreeMap<&'static str, Tally>,
    unexpected: Vec<String>,
    wrong: u64,
}

struct Ctx {
    books: Mutex<Books>,
    /// set once the kill is under way: errors from then on are the kill's
    killing: AtomicBool,
    stop: AtomicBool,
}

impl Ctx {
    fn record(&self, kind: &'static str, started: Instant, r: &Result<(), ClientError>) {
        let mut b = self.books.lock().unwrap();
        let killing = self.killing.load(Ordering::SeqCst);
        let t = b.tallies.entry(kind).or_default();
        match r {
            Ok(()) => {
                t.ok += 1;
                t.latencies.push(started.elapsed());
            }
            Err(e)
                if kind == "budgeted"
                    && e.code() == Some(Code::ResourceExhausted)
                    && !e.to_string().contains("key memory") =>
            {
                t.refused += 1
            }
            Err(_) if killing => t.cut_by_kill += 1,
            Err(e) => b.unexpected.push(format!("{kind}: {e}")),
        }
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Held {
    Registered,
    Deleted,
    /// an operation on it was cut by the kill
    Unknown,
}

async fn connect(port: u16, token: &str) -> Remote {
    Remote::connect(
        &format!("http://127.0.0.1:{port}"),
        blindfold_client::ConnectOptions {
            token: Some(token.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn encrypted_once(
    remote: &Remote,
    model: &str,
    keys: &Keys,
    row: &[f64],
) -> Result<bool, ClientError> {
    let spec = fast_circuit().client_spec();
    let ct = crypto::encrypt_row(&keys.client, &spec, row).unwrap();
    let r = remote.predict(model, &keys.key_id, vec![ct]).await?;
    if model != FAST {
        return Ok(r.outputs.len() == 1);
    }
    let p = crypto::decrypt_output(&keys.client, &spec, &r.outputs[0]).unwrap();
    let q = fast_circuit().input.quantize(row).unwrap();
    Ok(p.raw == clear::evaluate(fast_circuit(), &q).unwrap())
}

/// Runs the workers until `ctx.stop`.
async fn phase(
    port: u16,
    ctx: Arc<Ctx>,
    alice_key: &'static Keys,
    bob_key: Arc<Keys>,
    churn: Arc<Vec<Arc<Keys>>>,
    held: Arc<Mutex<Vec<Held>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let rows: Arc<Vec<Vec<f64>>> = Arc::new(digits_rows(20).into_iter().map(|r| r.0).collect());
    let alice = connect(port, ALICE).await;
    let bob = connect(port, BOB).await;
    let mut tasks = Vec::new();
    for (who, remote, keys) in [
        ("encrypted alice", alice.clone(), None),
        ("encrypted bob", bob.clone(), Some(bob_key.clone())),
    ] {
        let (ctx, rows) = (ctx.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            let keys: &Keys = keys.as_deref().unwrap_or(alice_key);
            let mut i = 0;
            while ctx.running() {
                let t = Instant::now();
                let r = encrypted_once(&remote, FAST, keys, &rows[i % rows.len()]).await;
                if matches!(r, Ok(false)) {
                    ctx.books.lock().unwrap().wrong += 1;
                }
                ctx.record(who, t, &r.map(|_| ()));
                i += 1;
            }
        }));
    }
    for (who, remote) in [("clear alice", alice.clone()), ("clear bob", bob.clone())] {
        let (ctx, rows) = (ctx.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while ctx.running() {
                let t = Instant::now();
                let r = remote
                    .predict_clear(FAST, vec![rows[i % rows.len()].clone()])
                    .await;
                ctx.record(who, t, &r.map(|_| ()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    {
        let (ctx, rows, alice) = (ctx.clone(), rows.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while ctx.running() {
                let t = Instant::now();
                let r = encrypted_once(&alice, BUDGETED, alice_key, &rows[i % rows.len()]).await;
                ctx.record("budgeted", t, &r.map(|_| ()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    {
        let (ctx, rows, bob) = (ctx.clone(), rows.clone(), bob.clone());
        // on a blocking thread: the upload's future is not `Send` for every
        // lifetime the spawn wants (a rustc limitation), block_on does not care
        let handle = tokio::runtime::Handle::current();
        tasks.push(tokio::task::spawn_blocking(move || {
            handle.block_on(async move {
                let mut i = 0;
                while ctx.running() {
                    let n = i % churn.len();
                    let t = Instant::now();
                    let r = churn_once(
                        bob.clone(),
                        churn[n].clone(),
                        n,
                        held.clone(),
                        ctx.clone(),
                        rows[n].clone(),
                    )
                    .await;
                    if r.is_err() {
                        held.lock().unwrap()[n] = Held::Unknown;
                    }
                    ctx.record("key churn", t, &r);
                    i += 1;
                }
            })
        }));
    }
    tasks
}

async fn churn_once(
    bob: Remote,
    k: Arc<Keys>,
    n: usize,
    held: Arc<Mutex<Vec<Held>>>,
    ctx: Arc<Ctx>,
    row: Vec<f64>,
) -> Result<(), ClientError> {
    bob.register_key(k.evaluation.clone(), "2_2", no_progress())
        .await?;
    held.lock().unwrap()[n] = Held::Registered;
    if !encrypted_once(&bob, FAST, &k, &row).await? {
        ctx.books.lock().unwrap().wrong += 1;
    }
    held.lock().unwrap()[n] = Held::Unknown;
    bob.delete_key(&k.key_id).await?;
    held.lock().unwrap()[n] = Held::Deleted;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Samples a process's resident memory until stopped; the peak.
fn sample_memory(
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                for name in ["VmRSS:", "VmHWM:"] {
                    if let Some(kib) = s
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    {
                        peak.fetch_max(kib << 10, Ordering::SeqCst);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_a_kill_9_then_audit() {
    let secs: u64 = std::env::var("BLINDFOLD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let params = fast_circuit().params;
    let one = params.evaluation_key_memory_bytes() as u64;
    let mib = (one * 5 / 2) >> 20; // two keys decompressed, not three
    let extra = format!(
        "[compute]\nkey_cache_mib = {mib}\n\n[[models]]\nname = \"{BUDGETED}\"\ncircuit = \"{}\"\n\
         policy = {{ output = \"label\" }}\nbudget = {{ answers = {BUDGET} }}\n",
        repo().join("models/digits-mlp-fast.circuit.json").display()
    );
    let text = config_text(&data, &extra).replace("metrics_listen = \"127.0.0.1:0\"\n", "");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("server.log");
    let bin = Path::new(env!("CARGO_BIN_EXE_blindfold-e2e-server"));

    let alice_key = fast_keys();
    let bob_key = Arc::new(new_keys(params));
    let churn = Arc::new(
        (0..3)
            .map(|_| Arc::new(new_keys(params)))
            .collect::<Vec<_>>(),
    );
    let held = Arc::new(Mutex::new(vec![Held::Deleted; churn.len()]));
    let compressed = alice_key.evaluation.len() as u64;

    let port = free_port();
    let mut child = spawn_server_binary(bin, &config, port, &log);
    let (at_rest, _) = resident_memory(child.id());
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_memory(child.id(), sampling.clone(), peak.clone());
    for (token, k) in [(ALICE, alice_key), (BOB, &*bob_key)] {
        connect(port, token)
            .await
            .register_key(k.evaluation.clone(), "2_2", no_progress())
            .await
            .unwrap();
    }

    let ctx = Arc::new(Ctx {
        books: Mutex::default(),
        killing: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let tasks = phase(
        port,
        ctx.clone(),
        alice_key,
        bob_key.clone(),
        churn.clone(),
        held.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    // kill -9 with requests in flight
    ctx.killing.store(true, Ordering::SeqCst);
    child.kill().unwrap();
    child.wait().unwrap();
    sampling.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    ctx.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let budget_cut = ctx
        .books
        .lock()
        .unwrap()
        .tallies
        .get("budgeted")
        .map_or(0, |t| t.cut_by_kill);

    // restart on the same directory and go on
    let port = free_port();
    let mut child = spawn_server_binary(bin, &config, port, &log);
    assert_eq!(
        std::fs::read_dir(data.join("uploads")).unwrap().count(),
        0,
        "no partial upload survives the restart"
    );
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_memory(child.id(), sampling.clone(), peak.clone());
    ctx.killing.store(false, Ordering::SeqCst);
    ctx.stop.store(false, Ordering::SeqCst);
    let tasks = phase(
        port,
        ctx.clone(),
        alice_key,
        bob_key.clone(),
        churn.clone(),
        held.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    ctx.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();

    // audit through the API
    let alice = connect(port, ALICE).await;
    let bob = connect(port, BOB).await;
    let row = digits_rows(1).remove(0).0;
    assert!(encrypted_once(&alice, FAST, alice_key, &row).await.unwrap());
    assert!(encrypted_once(&bob, FAST, &bob_key, &row).await.unwrap());
    let mut present = 2;
    let held_now = held.lock().unwrap().clone();
    for (k, h) in churn.iter().zip(&held_now) {
        match (h, bob.key_status(&k.key_id).await) {
            (Held::Registered | Held::Unknown, Ok(_)) => {
                assert!(
                    encrypted_once(&bob, FAST, k, &row).await.unwrap(),
                    "a held key works"
                );
                present += 1;
            }
            (Held::Deleted | Held::Unknown, Err(e)) if e.code() == Some(Code::NotFound) => {}
            (h, r) => panic!("key {h:?} on the books, server says {r:?}"),
        }
    }
    let used = alice.get_budget(BUDGETED).await.unwrap().answers_used;
    sampling.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    // audit on disk
    let blobs = std::fs::read_dir(data.join("keys")).unwrap().count();
    assert_eq!(blobs, present, "one blob per held key, no orphan");
    let db = rusqlite::Connection::open(data.join("blindfold.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");

    let books = ctx.books.lock().unwrap();
    let mb = |b: u64| b as f64 / (1u64 << 20) as f64;
    let bound = at_rest
        + (mib << 20)
        + params.key_decompression_transient_bytes() as u64
        + compressed
        + SLACK;
    let (mut requests, mut cut) = (0, 0);
    println!(
        "soak: 2 phases of {secs} s around a kill -9, {:.0} s in all",
        elapsed.as_secs_f64()
    );
    for (kind, t) in &books.tallies {
        let mut l = t.latencies.clone();
        l.sort();
        requests += t.ok + t.refused + t.cut_by_kill;
        cut += t.cut_by_kill;
        println!(
            "  {kind:16} ok {:5}  refused {:3}  cut by the kill {:2}  p50 {:7.1} ms  p99 {:7.1} ms",
            t.ok,
            t.refused,
            t.cut_by_kill,
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        );
    }
    let answered = books.tallies.get("budgeted").map_or(0, |t| t.ok);
    println!(
        "  requests {requests}, unexpected errors {}, cut by the kill {cut}, wrong answers {}; \
         budget {BUDGET}: {answered} answers received, ledger {used}; peak resident {:.0} MiB, \
         bound {:.0} MiB (budget {mib} MiB)",
        books.unexpected.len(),
        books.wrong,
        mb(peak.load(Ordering::SeqCst)),
        mb(bound)
    );
    assert!(books.unexpected.is_empty(), "{:#?}", books.unexpected);
    assert_eq!(books.wrong, 0);
    assert!(used <= BUDGET, "never more than the budget");
    assert!(
        used >= answered && used <= answered + budget_cut,
        "ledger {used}: {answered} received, {budget_cut} cut by the kill"
    );
    assert!(peak.load(Ordering::SeqCst) <= bound);
    for kind in [
        "encrypted alice",
        "encrypted bob",
        "clear alice",
        "key churn",
    ] {
        assert!(
            books.tallies.get(kind).is_some_and(|t| t.ok > 0),
            "{kind} made progress"
        );
    }
}
