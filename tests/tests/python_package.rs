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

use std::path::PathBuf;
use std::process::Command;

use blindfold_tests::*;

fn python() -> PathBuf {
    e2e_python(
        "blindfold, pytest, numpy",
        &[repo().join("client/python[test,numpy]").into_os_string()],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytest_suite_against_a_real_server() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&dir.path().join("data"), "")).await;
    let url = server.url();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(repo().join("client/python/tests"));
        run_package_suite(cmd, &url, &["10 passed"], &["skipped", "failed"]);
    })
    .await
    .unwrap();
    server.stop().await;
}
