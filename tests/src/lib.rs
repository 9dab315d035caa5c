//! End-to-end test harness: real servers on `127.0.0.1:0`, each with its
//! own data directory, driven by the real client library, CLI and (in one
//! test) a Python grpcio client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use blindfold_client::{Bytes, ClientKey, ConnectOptions, Remote};
use blindfold_runtime::circuit::Circuit;
use blindfold_server::{Config, Server, ServerError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ALICE: &str = "alice-token-0123456789";
pub const BOB: &str = "bob-token-0123456789ab";

/// The fast model (2_2 parameters) the tests encrypt for.
pub const FAST: &str = "digits-mlp-fast";
/// A 3_3 model (R3, exact compile) with `PredictClear` disabled.
pub const SLOW_NO_CLEAR: &str = "cancer-mlp";
/// The fast circuit under the default policy (label only).
pub const LABEL: &str = "digits-label";
/// The fast circuit: top-2 labels, Gaussian noise σ = 1, and a budget of
/// [`NOISY_BUDGET`] answers per identity.
pub const NOISY_TOP2: &str = "digits-noisy-top2";
pub const NOISY_BUDGET: u64 = 6;
/// Five 2_2 PATE teachers, votes, Gaussian noise σ = [`PATE_SIGMA`] votes,
/// an ε budget of [`PATE_EPSILON`] at δ = [`PATE_DELTA`].
pub const PATE: &str = "digits-pate-fast";
pub const PATE_SIGMA: f64 = 2.0;
pub const PATE_EPSILON: f64 = 10.0;
pub const PATE_DELTA: f64 = 1e-5;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A config serving the fast digits model and cancer-mlp (clear endpoint
/// off), two identities, no anonymous access; `extra` is appended.
pub fn config_text(data_dir: &Path, extra: &str) -> String {
    let models = repo().join("models");
    format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data}"
metrics_listen = "127.0.0.1:0"
{extra}

[[clients]]
name = "alice"
token = "{ALICE}"

[[clients]]
name = "bob"
token = "{BOB}"

[[models]]
name = "{FAST}"
circuit = "{fast}"
description = "R1 on 2_2"

[models.policy]
output = "raw"

[[models]]
name = "{SLOW_NO_CLEAR}"
circuit = "{cancer}"
predict_clear = false

[[models]]
name = "{LABEL}"
circuit = "{fast}"

[[models]]
name = "{NOISY_TOP2}"
circuit = "{fast}"
policy = {{ output = "top_k", k = 2, noise = "gaussian", noise_scale = 1.0 }}
budget = {{ answers = {NOISY_BUDGET} }}

[[models]]
name = "{PATE}"
circuits = [{teachers}]
policy = {{ output = "label", aggregate = "votes", noise = "gaussian", noise_scale = {PATE_SIGMA:?} }}
budget = {{ epsilon = {PATE_EPSILON:?}, delta = {PATE_DELTA:e} }}
"#,
        teachers = (0..5)
            .map(|i| format!(
                "\"{}\"",
                models
                    .join(format!("digits-pate-fast-t{i}.circuit.json"))
                    .display()
            ))
            .collect::<Vec<_>>()
            .join(", "),
        data = data_dir.display(),
        fast = models.join("digits-mlp-fast.circuit.json").display(),
        cancer = models.join("cancer-mlp-exact.circuit.json").display(),
    )
}

pub fn config(data_dir: &Path, extra: &str) -> Config {
    Config::from_toml(&config_text(data_dir, extra)).expect("test config parses")
}

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let server = Server::bind(config, listener).await.expect("server starts");
        let addr = server.local_addr().expect("local addr");
        let metrics = server.metrics_addr();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            metrics,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self, token: Option<&str>) -> Remote {
        Remote::connect(
            &self.url(),
            ConnectOptions {
                token: token.map(str::to_string),
                ..Default::default()
            },
        )
        .await
        .expect("client connects")
    }

    /// Graceful shutdown; waits until the server has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server stops cleanly");
        }
    }

    /// The Prometheus text from the metrics endpoint.
    pub async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics.expect("metrics enabled");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Starts the server binary `bin` (a test's `CARGO_BIN_EXE_...`) on
/// `port`, its log in `log`, and waits until it accepts connections.
pub fn spawn_server_binary(
    bin: &Path,
    config: &Path,
    port: u16,
    log: &Path,
) -> std::process::Child {
    let log = std::fs::File::create(log).expect("log file");
    let child = std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("BLINDFOLD_METRICS_LISTEN")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("server binary starts");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "server did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
pub fn resident_memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib << 10)
            .expect("a memory field")
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Keys for the 2_2 parameter set, made once per test binary.
pub struct Keys {
    pub client: ClientKey,
    pub evaluation: Arc<Vec<u8>>,
    pub key_id: String,
}

pub fn fast_keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| new_keys(fast_circuit().params))
}

pub fn new_keys(params: blindfold_runtime::params::ParamSet) -> Keys {
    let client = ClientKey::generate(params);
    let evaluation = client
        .evaluation_key()
        .to_bytes()
        .expect("serialize evaluation key");
    Keys {
        key_id: blindfold_client::keys::key_id(&evaluation),
        client,
        evaluation: Arc::new(evaluation),
    }
}

pub fn fast_circuit() -> &'static Circuit {
    static C: OnceLock<Circuit> = OnceLock::new();
    C.get_or_init(|| {
        Circuit::load(&repo().join("models/digits-mlp-fast.circuit.json")).expect("circuit loads")
    })
}

/// The first `n` test rows of the digits data set (features, label).
pub fn digits_rows(n: usize) -> Vec<(Vec<f64>, usize)> {
    let ds = blindfold_runtime::data::Dataset::from_csv(&repo().join("data/digits.csv"))
        .expect("digits data");
    let range: blindfold_runtime::data::RowRange = "1347..1796".parse().expect("range");
    let (rows, labels) = ds.rows(range).expect("rows");
    rows.into_iter().zip(labels).take(n).collect()
}

pub fn no_progress() -> Arc<dyn Fn(u64, u64) + Send + Sync> {
    Arc::new(|_, _| {})
}

/// The environment the Python and Node.js package suites read: the server,
/// two identities' tokens, the example rows and the clear evaluator's
/// logits for them on the fast circuit (what encrypted answers must
/// decrypt to).
pub fn package_suite_env(url: &str) -> Vec<(&'static str, String)> {
    let csv = repo().join("data/examples/digits-test-5.csv");
    let circuit = fast_circuit();
    let rows = blindfold_client::crypto::read_csv(&csv, 64, false)
        .expect("example rows")
        .0;
    let logits: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let q = circuit.input.quantize(r).expect("quantizes");
            let out = blindfold_runtime::eval::clear::evaluate(circuit, &q).expect("evaluates");
            circuit.decode_output(&out)
        })
        .collect();
    vec![
        ("BLINDFOLD_URL", url.to_string()),
        ("BLINDFOLD_TOKEN", ALICE.to_string()),
        ("BLINDFOLD_TOKEN_2", BOB.to_string()),
        ("BLINDFOLD_ROWS_CSV", csv.display().to_string()),
        (
            "BLINDFOLD_CLEAR_JSON",
            serde_json::to_string(&logits).expect("json"),
        ),
    ]
}

/// Runs a package's test suite (`cmd`, with [`package_suite_env`]) and
/// fails with its output unless it exits 0, its output holds every line of
/// `must` (e.g. the runner's "0 skipped") and none of `must_not`.
pub fn run_package_suite(
    mut cmd: std::process::Command,
    url: &str,
    must: &[&str],
    must_not: &[&str],
) {
    for (k, v) in package_suite_env(url) {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    for m in must {
        assert!(text.contains(m), "{m:?} missing:\n{text}");
    }
    for m in must_not {
        assert!(!text.contains(m), "{m:?} present:\n{text}");
    }
}

/// The Python of the cross-language tests: `BLINDFOLD_PYTHON` if set, else
/// the virtual environment `target/e2e-python` (made by `.ci/run`, or here
/// if missing). When `import <imports>` fails there, `pip install <what>`
/// (arguments as pip takes them) is run first; then the imports must work.
pub fn e2e_python(imports: &str, what: &[std::ffi::OsString]) -> PathBuf {
    use std::process::Command;
    if let Ok(p) = std::env::var("BLINDFOLD_PYTHON") {
        return PathBuf::from(p);
    }
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {imports}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let check = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let venv = repo().join("target/e2e-python");
    let python = venv.join("bin/python");
    if !ready(&python) {
        if !python.exists() {
            check(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        }
        check(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(what),
        );
    }
    assert!(
        ready(&python),
        "import {imports} fails in {}",
        venv.display()
    );
    python
}
