//! Another language: a Python grpcio client (stubs generated from the
//! `.proto` files at run time) drives the server, with the `blindfold` CLI
//! doing the cryptography (keygen, register, encrypt, decrypt).
//!
//! Python comes from `BLINDFOLD_PYTHON` if set (it must have grpcio-tools,
//! grpcio-health-checking and grpcio-reflection), else from a virtual
//! environment under `target/e2e-python` (made by `.ci/run`, or by this test
//! if missing) with the packages of `tests/python/requirements.txt`.

use std::path::PathBuf;
use std::process::Command;

use blindfold_runtime::eval::clear;
use blindfold_tests::*;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn python() -> PathBuf {
    e2e_python(
        "grpc_tools, grpc_health, grpc_reflection",
        &[
            "-r".into(),
            repo()
                .join("tests/python/requirements.txt")
                .into_os_string(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_with_cli_cryptography() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(&dir.path().join("data"), "")).await;
    let url = server.url();
    let keys = dir.path().join("keys");
    let csv = repo().join("data/examples/digits-test-5.csv");
    let work = dir.path().to_path_buf();
    let addr = server.addr.to_string();

    let (clear_labels, decrypted, summary) = tokio::task::spawn_blocking(move || {
        let cli = || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_blindfold-e2e-cli"));
            c.args(["--server", &url, "--token", ALICE]);
            c
        };
        run(cli().args(["keygen", FAST, "--keys"]).arg(&keys));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(keys.join("client.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "secret key readable by others");
        }
        let key_id = run(cli().arg("register").arg("--keys").arg(&keys))
            .trim()
            .to_string();
        let listing = run(cli()
            .args(["encrypt", FAST, "--keys"])
            .arg(&keys)
            .arg("--input")
            .arg(&csv)
            .arg("--out")
            .arg(work.join("in")));
        let inputs: Vec<&str> = listing.lines().collect();
        assert_eq!(inputs.len(), 5);
        let out = run(Command::new(&python)
            .arg(repo().join("tests/python/client.py"))
            .args([
                "--server", &addr, "--token", ALICE, "--model", FAST, "--key-id", &key_id,
            ])
            .arg("--proto-root")
            .arg(repo().join("proto"))
            .arg("--csv")
            .arg(&csv)
            .arg("--out")
            .arg(work.join("out"))
            .args(&inputs));
        let summary: serde_json::Value =
            serde_json::from_str(out.trim()).expect("python prints JSON");
        let outputs: Vec<String> = summary["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let decrypted = run(cli()
            .args(["decrypt", FAST, "--json", "--keys"])
            .arg(&keys)
            .args(&outputs));
        let decrypted: serde_json::Value = serde_json::from_str(&decrypted).unwrap();
        let clear_labels = summary["clear_labels"].clone();
        (clear_labels, decrypted, summary)
    })
    .await
    .unwrap();

    assert_eq!(summary["health"], "SERVING");
    let services: Vec<&str> = summary["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for s in [
        "blindfold.v1.Inference",
        "blindfold.v1.Keys",
        "blindfold.v1.Models",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&s),
            "{s} not listed by reflection: {services:?}"
        );
    }
    assert_eq!(summary["anonymous"], "UNAUTHENTICATED");
    assert_eq!(summary["bootstraps"], 5 * 42);
    assert!(summary["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == FAST));

    // what the CLI decrypted equals the clear evaluator, and PredictClear
    let circuit = fast_circuit();
    let rows = blindfold_client::crypto::read_csv(
        &repo().join("data/examples/digits-test-5.csv"),
        64,
        false,
    )
    .unwrap()
    .0;
    let decrypted = decrypted.as_array().unwrap();
    assert_eq!(decrypted.len(), 5);
    for (i, (row, d)) in rows.iter().zip(decrypted).enumerate() {
        let q = circuit.input.quantize(row).unwrap();
        let logits = circuit.decode_output(&clear::evaluate(circuit, &q).unwrap());
        let got: Vec<f64> = d["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got, logits, "row {i}");
        assert_eq!(d["label"], clear_labels[i], "row {i}");
    }
    server.stop().await;
}
