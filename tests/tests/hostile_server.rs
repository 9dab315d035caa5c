//! A client that distrusts its server: a fake `blindfold.v1` server sends
//! malformed model specs and answers to the client library and to the
//! `blindfold` CLI. Every one must end in a clear error, never a panic or a
//! huge allocation; a genuine answer through the same fake server is
//! decrypted correctly (the control that makes the refusals meaningful).
//!
//! The genuine material comes from a real server first: the label model's
//! spec and answers of the 2_2 key to one digits row.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use blindfold_client::{crypto, ClientError, ClientSpec};
use blindfold_proto::v1;
use blindfold_tests::*;
use tonic::{Request, Response, Status};

/// What the fake server says.
#[derive(Clone)]
struct Script {
    spec: v1::ModelSpec,
    /// The outputs of any `Predict`, whatever the inputs.
    outputs: Vec<Vec<u8>>,
}

#[derive(Clone)]
struct Fake(Arc<Script>);

#[tonic::async_trait]
impl v1::models_server::Models for Fake {
    async fn list_models(
        &self,
        _: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        Ok(Response::new(v1::ListModelsResponse { models: vec![] }))
    }

    async fn get_model(
        &self,
        _: Request<v1::GetModelRequest>,
    ) -> Result<Response<v1::ModelSpec>, Status> {
        Ok(Response::new(self.0.spec.clone()))
    }
}

#[tonic::async_trait]
impl v1::inference_server::Inference for Fake {
    async fn predict(
        &self,
        _: Request<v1::PredictRequest>,
    ) -> Result<Response<v1::PredictResponse>, Status> {
        Ok(Response::new(v1::PredictResponse {
            outputs: self.0.outputs.clone(),
            timing: None,
            budget: None,
        }))
    }

    async fn predict_clear(
        &self,
        request: Request<v1::PredictClearRequest>,
    ) -> Result<Response<v1::PredictClearResponse>, Status> {
        // a label far outside the model's classes, and a NaN score
        let n = request.get_ref().inputs.len();
        Ok(Response::new(v1::PredictClearResponse {
            predictions: (0..n)
                .map(|_| v1::ClearPrediction {
                    label: 4_000_000,
                    logits: vec![f64::NAN],
                    labels: vec![],
                })
                .collect(),
            timing: None,
            budget: None,
        }))
    }

    async fn get_budget(
        &self,
        _: Request<v1::GetBudgetRequest>,
    ) -> Result<Response<v1::Budget>, Status> {
        Err(Status::unimplemented("no budgets here"))
    }
}

/// Serves `script` on a loopback port until the returned sender drops.
async fn serve(script: Script) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Fake(Arc::new(script));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(v1::models_server::ModelsServer::new(fake.clone()))
            .add_service(
                v1::inference_server::InferenceServer::new(fake)
                    .max_encoding_message_size(usize::MAX),
            )
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    (addr, tx)
}

/// The position of the last occurrence of `v` (little endian) in `bytes`.
fn last_u64(bytes: &[u8], v: u64) -> usize {
    let pat = v.to_le_bytes();
    bytes
        .windows(8)
        .rposition(|w| w == pat)
        .expect("value present")
}

/// Genuine material: the label model's spec, a label answer and a raw
/// (ten-logit) answer to one row, under the fast keys.
async fn genuine(row: &[f64]) -> (v1::ModelSpec, ClientSpec, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path(), "")).await;
    let alice = server.client(Some(ALICE)).await;
    let keys = fast_keys();
    alice
        .register_key(
            keys.evaluation.clone(),
            fast_circuit().params.name(),
            no_progress(),
        )
        .await
        .unwrap();
    let (proto, spec) = alice.get_model(LABEL).await.unwrap();
    let ct = crypto::encrypt_row(&keys.client, &spec, row).unwrap();
    let label = alice.predict(LABEL, &keys.key_id, vec![ct]).await.unwrap();
    let (_, raw_spec) = alice.get_model(FAST).await.unwrap();
    let ct = crypto::encrypt_row(&keys.client, &raw_spec, row).unwrap();
    let raw = alice.predict(FAST, &keys.key_id, vec![ct]).await.unwrap();
    server.stop().await;
    (
        proto,
        spec,
        label.outputs[0].clone(),
        raw.outputs[0].clone(),
    )
}

/// The CLI's `predict` against the fake server: (success, stdout, stderr).
fn cli_predict(addr: SocketAddr, keys: &Path, input: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_blindfold-e2e-cli"))
        .args(["--server", &format!("http://{addr}"), "predict", LABEL])
        .arg("--keys")
        .arg(keys)
        .arg("--input")
        .arg(input)
        .output()
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_and_specs_are_refused_clearly() {
    let (row, truth) = digits_rows(2)[1].clone();
    assert!(
        truth >= 3,
        "the probe row's label must exceed a 3-class spec"
    );
    let (proto, spec, label_answer, raw_answer) = genuine(&row).await;
    let keys = fast_keys();
    let ck = &keys.client;

    // the key directory the CLI reads, and the row it encrypts
    let work = tempfile::tempdir().unwrap();
    let key_dir = work.path().join("keys");
    std::fs::create_dir_all(&key_dir).unwrap();
    std::fs::write(
        key_dir.join("client.key"),
        blindfold_client::Bytes::to_bytes(ck).unwrap(),
    )
    .unwrap();
    std::fs::write(key_dir.join("evaluation.key"), keys.evaluation.as_slice()).unwrap();
    let csv = work.path().join("row.csv");
    std::fs::write(
        &csv,
        row.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )
    .unwrap();

    let big = fast_circuit().params.big_lwe_dimension() as u64 + 1;
    let patched = |at: u64, to: u64| {
        let mut b = label_answer.clone();
        let i = last_u64(&b, at);
        b[i..i + 8].copy_from_slice(&to.to_le_bytes());
        b
    };
    let mut three_classes = proto.clone();
    if let Some(o) = three_classes.output.as_mut() {
        o.classes = 3;
    }
    let mut narrower = proto.clone();
    if let Some(o) = narrower.output.as_mut() {
        o.bits -= 1;
    }
    let mut other_params = proto.clone();
    other_params.parameter_set = "V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128".into();
    let mut absurd = proto.clone();
    absurd.precision_bits = 40;
    // 1 << 64 wraps to 1 << 0 in a release build: must still be refused
    let mut wrapping = proto.clone();
    wrapping.precision_bits = 64;
    // a spec may claim 65,536 logits: 4 GiB per input by the spec alone
    let mut huge = proto.clone();
    if let Some(o) = huge.output.as_mut() {
        o.kind = v1::OutputKind::Logits as i32;
        o.classes = 1 << 16;
        o.count = 1 << 16;
    }
    let huge_answer = vec![0u8; blindfold_client::DEFAULT_MAX_ANSWER_BYTES + (32 << 20)];
    // (name, spec, outputs, what the error must mention)
    let cases: Vec<(&str, v1::ModelSpec, Vec<Vec<u8>>, &str)> = vec![
        (
            "garbage bytes",
            proto.clone(),
            vec![b"not an answer at all".to_vec()],
            "encrypted output",
        ),
        (
            "ciphertext size 0",
            proto.clone(),
            vec![patched(big, 0)],
            "encrypted output",
        ),
        (
            "small-key ciphertext size",
            proto.clone(),
            vec![patched(
                big,
                fast_circuit().params.small_lwe_dimension() as u64 + 1,
            )],
            "encrypted output",
        ),
        (
            "two answers for one input",
            proto.clone(),
            vec![label_answer.clone(), label_answer.clone()],
            "2 outputs for 1 inputs",
        ),
        (
            "ten logits where one label is due",
            proto.clone(),
            vec![raw_answer.clone()],
            "bytes",
        ),
        (
            "a 64 MiB answer",
            proto.clone(),
            vec![vec![0u8; 64 << 20]],
            "",
        ),
        (
            "an answer over the client's cap, to a 65,536-logit spec",
            huge,
            vec![huge_answer],
            "limit",
        ),
        (
            "answer precision differs from the spec",
            narrower,
            vec![label_answer.clone()],
            "bit",
        ),
        (
            "label beyond the spec's classes",
            three_classes,
            vec![label_answer.clone()],
            "3-class",
        ),
        (
            "spec for another parameter set",
            other_params,
            vec![label_answer.clone()],
            "",
        ),
        (
            "absurd precision in the spec",
            absurd,
            vec![label_answer.clone()],
            "precision",
        ),
        (
            "a precision that wraps a shift",
            wrapping,
            vec![label_answer.clone()],
            "precision",
        ),
    ];

    // the control: the genuine answer decrypts to the true label
    let (addr, stop) = serve(Script {
        spec: proto.clone(),
        outputs: vec![label_answer.clone()],
    })
    .await;
    let remote = connect(addr).await;
    let (_, fake_spec) = remote.get_model(LABEL).await.unwrap();
    assert_eq!(fake_spec, spec);
    let ct = crypto::encrypt_row(ck, &spec, &row).unwrap();
    let r = remote.predict(LABEL, &keys.key_id, vec![ct]).await.unwrap();
    let p = crypto::decrypt_output(ck, &spec, &r.outputs[0]).unwrap();
    assert_eq!(p.label, truth);
    let (ok, stdout, stderr) = cli_predict(addr, &key_dir, &csv);
    assert!(ok, "control: {stderr}");
    assert!(stdout.contains(&format!("label {truth}")), "{stdout}");
    // a clear answer with a label outside the classes and a NaN score
    let err = remote
        .predict_clear(LABEL, vec![row.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Answer(_)) && err.to_string().contains("label"),
        "{err}"
    );
    drop(stop);

    for (name, bad_spec, outputs, mention) in cases {
        let (addr, stop) = serve(Script {
            spec: bad_spec.clone(),
            outputs: outputs.clone(),
        })
        .await;
        // the library: spec, transport, answer checks, decryption
        let remote = connect(addr).await;
        let lib: Result<(), ClientError> = async {
            let (_, s) = remote.get_model(LABEL).await?;
            let ct = crypto::encrypt_row(ck, &s, &row)?;
            let r = remote.predict(LABEL, &keys.key_id, vec![ct]).await?;
            for o in &r.outputs {
                crypto::decrypt_output(ck, &s, o)?;
            }
            Ok(())
        }
        .await;
        let err = lib.expect_err(name).to_string();
        assert!(err.contains(mention), "{name}: {err}");
        // decrypting the bytes directly, with the genuine spec
        for o in &outputs {
            if o != &label_answer {
                let e = crypto::decrypt_output(ck, &spec, o).expect_err(name);
                assert!(!e.to_string().is_empty(), "{name}");
            }
        }
        // the CLI: a non-zero exit with a message, no panic
        let (ok, stdout, stderr) = cli_predict(addr, &key_dir, &csv);
        assert!(!ok, "{name}: the CLI accepted it:\n{stdout}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(stderr.contains("Error"), "{name}: {stderr}");
        drop(stop);
    }
    // the CLI refuses the over-cap answer without receiving it: its peak
    // memory stays far below the answer's size
    let mut huge = proto.clone();
    if let Some(o) = huge.output.as_mut() {
        o.kind = v1::OutputKind::Logits as i32;
        o.classes = 1 << 16;
        o.count = 1 << 16;
    }
    let answer = blindfold_client::DEFAULT_MAX_ANSWER_BYTES + (32 << 20);
    let (addr, stop) = serve(Script {
        spec: huge,
        outputs: vec![vec![0u8; answer]],
    })
    .await;
    let (ok, peak, stderr) = cli_predict_peak(addr, &key_dir, &csv);
    assert!(!ok && stderr.contains("limit"), "{stderr}");
    println!(
        "the CLI refused a {} MiB answer at {} MiB peak resident memory",
        answer >> 20,
        peak >> 20
    );
    assert!(peak < (answer / 4) as u64, "the CLI peaked at {peak} bytes");
    drop(stop);
}

/// [`cli_predict`], watching the CLI's peak resident memory (`VmHWM`,
/// polled until it exits): (success, peak bytes, stderr).
fn cli_predict_peak(addr: SocketAddr, keys: &Path, input: &Path) -> (bool, u64, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_blindfold-e2e-cli"))
        .args(["--server", &format!("http://{addr}"), "predict", LABEL])
        .arg("--keys")
        .arg(keys)
        .arg("--input")
        .arg(input)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the CLI");
    let mut peak = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib << 10);
            }
        }
        if let Some(status) = child.try_wait().expect("wait for the CLI") {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    (status.success(), peak, stderr)
}

async fn connect(addr: SocketAddr) -> blindfold_client::Remote {
    blindfold_client::Remote::connect(&format!("http://{addr}"), Default::default())
        .await
        .expect("connect to the fake server")
}
