//! The Python package (`client/python`, PyO3) against a real server: the
//! pytest suite `client/python/tests/test_client.py` runs keygen, register,
//! encrypted predictions equal to the clear evaluator's, budgets, NumPy
//! rows and every error class.
//!
//! Python comes from `BLINDFOLD_PYTHON` if set (with `blindfold` and
//! pytest installed), else from the virtual environment `target/e2e-python`
//! that `.ci/run` makes. If that environment lacks the package, this test
//! installs it there (`pip install ./client/python`, which builds it with
//! maturin from PyPI and cargo — a few minutes the first time).

use std::path::{Path, PathBuf};
use std::process::Command;

use blindfold_runtime::eval::clear;
use blindfold_tests::*;

fn ready(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import blindfold, pytest, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn check(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("BLINDFOLD_PYTHON") {
        return PathBuf::from(p);
    }
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
                .arg(repo().join("client/python[test,numpy]")),
        );
    }
    assert!(
        ready(&python),
        "blindfold, pytest or numpy missing in {}",
        venv.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytest_suite_against_a_real_server() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&dir.path().join("data"), "")).await;
    let csv = repo().join("data/examples/digits-test-5.csv");
    // what the encrypted answers must decrypt to: the clear evaluator's logits
    let circuit = fast_circuit();
    let rows = blindfold_client::crypto::read_csv(&csv, 64, false)
        .unwrap()
        .0;
    let logits: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let q = circuit.input.quantize(r).unwrap();
            circuit.decode_output(&clear::evaluate(circuit, &q).unwrap())
        })
        .collect();
    let url = server.url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(repo().join("client/python/tests"))
            .env("BLINDFOLD_URL", url)
            .env("BLINDFOLD_TOKEN", ALICE)
            .env("BLINDFOLD_TOKEN_2", BOB)
            .env("BLINDFOLD_ROWS_CSV", csv)
            .env(
                "BLINDFOLD_CLEAR_JSON",
                serde_json::to_string(&logits).unwrap(),
            )
            .output()
            .expect("pytest runs")
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(
        text.contains("passed") && !text.contains("skipped"),
        "{text}"
    );
    server.stop().await;
}
