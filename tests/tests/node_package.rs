//! The Node.js package (`client/node`, napi) against a real server: node's
//! test runner runs `client/node/test/` — keygen, register, encrypted
//! predictions equal to the clear evaluator's, budgets and every error
//! class.
//!
//! If `client/node/blindfold.node` is missing, this test builds it the way
//! the README says (`npm install` in `client/node`, whose install script
//! runs cargo; `.ci/run` does it before the tests).

use std::process::Command;

use blindfold_tests::*;

fn addon() {
    let dir = repo().join("client/node");
    if dir.join("blindfold.node").exists() {
        return;
    }
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .expect("npm runs");
    assert!(
        out.status.success(),
        "npm install in client/node failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_test_suite_against_a_real_server() {
    tokio::task::spawn_blocking(addon).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&dir.path().join("data"), "")).await;
    let url = server.url();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("node");
        cmd.arg("--test")
            .arg("--test-reporter=tap")
            .arg(repo().join("client/node/test/client.test.js"))
            .current_dir(repo().join("client/node"));
        run_package_suite(cmd, &url, &["# pass 9", "# fail 0", "# skipped 0"], &[]);
    })
    .await
    .unwrap();
    server.stop().await;
}
