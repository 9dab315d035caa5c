//! The attack lab end to end: `blindfold audit --short` against a real
//! server serving `server/audit.toml`, through the CLI, with a sample of
//! answers repeated through real encryption.

use std::process::Command;

use blindfold_server::Config;
use blindfold_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_audit_runs_every_attack_against_every_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_file(&repo().join("server/audit.toml")).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().join("data");
    let server = TestServer::start(config).await;
    let out = dir.path().join("audit.json");
    let keys = dir.path().join("keys");
    let url = server.url();
    let repo_dir = repo();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_blindfold-e2e-cli"))
            .args(["--server", &url, "audit", "--short", "--fhe-sample", "1"])
            .arg("--json")
            .arg(&out)
            .arg("--keys")
            .arg(&keys)
            .arg("--repo")
            .arg(&repo_dir)
            .output()
            .map(|o| (o, out))
    })
    .await
    .unwrap()
    .expect("run the CLI");
    let (output, out) = output;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| policy |"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let policies = doc["policies"].as_array().unwrap();
    let names: Vec<&str> = policies
        .iter()
        .map(|p| p["target"]["policy"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let by = |needle: &str| {
        policies
            .iter()
            .find(|p| p["target"]["policy"].as_str().unwrap().starts_with(needle))
            .unwrap()
    };
    let curve = |p: &serde_json::Value, name: &str| -> serde_json::Value {
        p["extraction"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0].as_str().unwrap() == name)
            .unwrap()[1]
            .clone()
    };
    // with no hardening the attacks are real: equation solving copies the
    // softmax regression from its scores within 650 queries
    let raw = by("none");
    let eq = curve(raw, "logreg-raw: equation solving");
    let last = eq["points"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["queries"], 650);
    assert!(last["test_agreement"].as_f64().unwrap() >= 0.95, "{eq}");
    // label-only answers carry no scores to solve for
    let label = by("label");
    assert!(curve(label, "logreg-label: equation solving")["not_applicable"].is_string());
    // the budgeted policy's curves stop at its budget
    let budgeted = policies
        .iter()
        .find(|p| p["target"]["budget"].is_u64())
        .expect("a budgeted policy");
    let b = budgeted["target"]["budget"].as_u64().unwrap();
    for (_, c) in budgeted["extraction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].clone(), e[1].clone()))
    {
        if c["not_applicable"].is_null() {
            assert!(c["queries"].as_u64().unwrap() <= b, "{c}");
        }
    }
    // every attack reported something for the raw policy
    for key in ["exposure", "membership", "inversion", "transfer", "utility"] {
        assert!(!raw[key].is_null(), "{key}");
    }
    let auc = raw["membership"]["auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc));
    // encrypted answers equal the clear ones the attacks used (noise-free
    // policies: exactly)
    for c in doc["encrypted_checks"].as_array().unwrap() {
        let policy = c[0].as_str().unwrap();
        if !policy.contains("noise") && !policy.starts_with("PATE") {
            assert_eq!(c[1]["agree"], c[1]["rows"], "{policy}: {c}");
        }
    }
    server.stop().await;
}
