//! Hardening end to end: the owner's output policies (label, top-k with
//! noise, PATE vote ensembles) applied by a real server on ciphertexts and
//! in `PredictClear`, and the per-identity budgets (answers and privacy
//! loss) it debits before any work, checked with the real client library.

use std::collections::BTreeSet;

use blindfold_client::crypto;
use blindfold_client::{ClientError, Remote};
use blindfold_proto::v1;
use blindfold_runtime::circuit::OutputKind;
use blindfold_runtime::harden::{Hardened, Noise, NoiseKind, OutputMode, Policy};
use blindfold_runtime::program::TableSet;
use blindfold_tests::*;
use tonic::Code;

async fn register(client: &Remote, keys: &Keys) {
    client
        .register_key(keys.evaluation.clone(), "2_2", no_progress())
        .await
        .expect("register");
}

/// The code and message of a refused call.
fn refusal(e: &ClientError) -> (Code, String) {
    match e {
        ClientError::Rpc { status, .. } => (status.code(), status.message().to_string()),
        other => panic!("expected an RPC status, got {other}"),
    }
}

/// Asserts that `r` was refused with `RESOURCE_EXHAUSTED` naming `what`.
fn assert_exhausted<T: std::fmt::Debug>(r: Result<T, ClientError>, what: &str) {
    let e = r.expect_err("the budget should refuse this request");
    let (code, message) = refusal(&e);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains(what), "{message:?} does not say {what:?}");
}

/// The value of an unlabelled metric (a counter, or a histogram's
/// `_count`) in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
        .trim()
        .parse()
        .expect("a numeric metric")
}

/// Metrics that move whenever the server evaluates anything encrypted:
/// jobs started on the compute pool, bootstraps, inferences.
async fn work_done(server: &TestServer) -> [f64; 3] {
    let text = server.metrics_text().await;
    [
        metric(&text, "blindfold_queue_wait_seconds_count"),
        metric(&text, "blindfold_bootstraps_total"),
        metric(&text, "blindfold_inferences_total"),
    ]
}

/// The fast circuit under `policy`, as the library builds it.
fn fast_under(name: &str, policy: Policy) -> Hardened {
    Hardened::new(name, vec![fast_circuit().clone()], policy).expect("policy compiles")
}

/// What `LABEL` answers for `x`: the label policy without noise, in the
/// clear, on the quantized row.
fn clear_label(h: &Hardened, x: &[f64]) -> (usize, Vec<i64>) {
    let q = fast_circuit().input.quantize(x).expect("quantize");
    let plan = h.tables(&vec![0.0; h.noise_len()]);
    let out = h.evaluate_clear(&plan, &q).expect("clear evaluation");
    (h.decode(&out).label, out)
}

fn rows(n: usize) -> Vec<Vec<f64>> {
    digits_rows(n).into_iter().map(|(x, _)| x).collect()
}

fn noisy_top2_policy() -> Policy {
    Policy {
        output: OutputMode::TopK { k: 2 },
        noise: Noise {
            kind: NoiseKind::Gaussian,
            scale: 1.0,
        },
        ..Policy::default()
    }
}

/// Two distinct labels of a 10-class model, no scores.
fn assert_top2(labels: &[usize], label: usize, logits: &[f64]) {
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert_ne!(labels[0], labels[1], "top-2 repeats a label: {labels:?}");
    assert!(labels.iter().all(|l| *l < 10), "{labels:?}");
    assert_eq!(label, labels[0]);
    assert!(
        logits.is_empty(),
        "a label policy leaked scores: {logits:?}"
    );
}

fn clear_labels(p: &v1::ClearPrediction) -> Vec<usize> {
    p.labels.iter().map(|l| *l as usize).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_policy_returns_one_ciphertext_equal_to_the_clear_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path(), "")).await;
    let alice = server.client(Some(ALICE)).await;
    let keys = fast_keys();

    let (proto, spec) = alice.get_model(LABEL).await.unwrap();
    let policy = proto.policy.expect("GetModel carries the policy");
    assert_eq!(policy.output, v1::OutputMode::Label as i32);
    assert_eq!(policy.noise, v1::NoiseKind::None as i32);
    assert_eq!(policy.members, 1);
    let output = proto.output.unwrap();
    assert_eq!(output.kind, v1::OutputKind::Labels as i32);
    assert_eq!(output.count, 1);
    assert_eq!(output.classes, 10);
    assert_eq!(spec.output, OutputKind::Labels { k: 1 });
    let hardened = fast_under(LABEL, Policy::default());
    assert_eq!(
        spec,
        hardened.client_spec(),
        "the server's spec is the library's"
    );
    // the circuit plus the argmax stage
    assert_eq!(
        proto.bootstraps_per_inference,
        fast_circuit().pbs_per_inference() as u32 + policy.stage_bootstraps
    );
    assert!(policy.stage_bootstraps > 0);

    register(&alice, keys).await;
    let xs = rows(4);
    let cts: Vec<Vec<u8>> = xs
        .iter()
        .map(|x| crypto::encrypt_row(&keys.client, &spec, x).unwrap())
        .collect();
    let r = alice.predict(LABEL, &keys.key_id, cts).await.unwrap();
    assert_eq!(r.outputs.len(), 4);
    assert_eq!(
        r.timing.unwrap().bootstraps,
        4 * proto.bootstraps_per_inference
    );
    let budget = r.budget.expect("every answer carries the budget");
    assert_eq!(budget.answers_used, 4);
    assert_eq!(budget.answers_limit, None, "LABEL has no budget");
    assert_eq!(budget.epsilon_spent, None);

    let one_ct = (spec.params.big_lwe_dimension() + 1) * 8;
    let mut labels = Vec::new();
    for (bytes, x) in r.outputs.iter().zip(&xs) {
        let p = crypto::decrypt_output(&keys.client, &spec, bytes).unwrap();
        let (want, want_raw) = clear_label(&hardened, x);
        assert_eq!(p.labels, vec![want]);
        assert_eq!(p.label, want);
        assert!(p.logits.is_empty(), "{:?}", p.logits);
        assert_eq!(
            p.raw, want_raw,
            "decryption is bit-exact with the clear plan"
        );
        // exactly one LWE ciphertext on the wire...
        assert!(
            bytes.len() >= one_ct && bytes.len() < 2 * one_ct,
            "{} bytes for {one_ct}-byte ciphertexts",
            bytes.len()
        );
        // ...so the client cannot read it as the raw circuit's ten logits
        let e = crypto::decrypt_output(&keys.client, &fast_circuit().client_spec(), bytes)
            .expect_err("a label answer decrypted as ten logits");
        assert!(
            e.to_string().contains("does not match"),
            "unexpected error: {e}"
        );
        let mut wide = spec.clone();
        wide.output = OutputKind::Labels { k: 10 };
        crypto::decrypt_output(&keys.client, &wide, bytes)
            .expect_err("a one-label answer decrypted as ten labels");
        labels.push(want);
    }

    // PredictClear: the same labels, and no scores either
    let clear = alice.predict_clear(LABEL, xs.clone()).await.unwrap();
    assert_eq!(clear.budget.unwrap().answers_used, 8);
    for (c, want) in clear.predictions.iter().zip(&labels) {
        assert_eq!(c.label as usize, *want);
        assert_eq!(clear_labels(c), vec![*want]);
        assert!(c.logits.is_empty(), "{:?}", c.logits);
    }

    // the raw model next to it still returns all ten logits, bit-exact
    let (_, raw_spec) = alice.get_model(FAST).await.unwrap();
    assert_eq!(raw_spec.output, OutputKind::Logits);
    let ct = crypto::encrypt_row(&keys.client, &raw_spec, &xs[0]).unwrap();
    let r = alice.predict(FAST, &keys.key_id, vec![ct]).await.unwrap();
    let p = crypto::decrypt_output(&keys.client, &raw_spec, &r.outputs[0]).unwrap();
    let q = fast_circuit().input.quantize(&xs[0]).unwrap();
    let want = blindfold_runtime::eval::clear::evaluate(fast_circuit(), &q).unwrap();
    assert_eq!(p.raw, want);
    assert_eq!(p.logits.len(), 10);
    assert!(r.outputs[0].len() >= 10 * one_ct);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_cannot_be_overridden() {
    // No request carries a policy: these patterns list every field and
    // stop compiling if one is added.
    let v1::PredictRequest {
        model: _,
        key_id: _,
        inputs: _,
    } = v1::PredictRequest::default();
    let v1::PredictClearRequest {
        model: _,
        inputs: _,
    } = v1::PredictClearRequest::default();

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path(), "")).await;
    let alice = server.client(Some(ALICE)).await;
    let keys = fast_keys();

    let models = alice.list_models().await.unwrap();
    let names: Vec<_> = models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, [SLOW_NO_CLEAR, LABEL, FAST, NOISY_TOP2, PATE]);
    for m in &models {
        let (spec, _) = alice.get_model(&m.name).await.unwrap();
        assert_eq!(
            spec.policy, m.policy,
            "{}: GetModel and ListModels agree",
            m.name
        );
        let p = m.policy.expect("every model reports its policy");
        let budget = p.budget.unwrap_or_default();
        let output = spec.output.unwrap();
        match m.name.as_str() {
            FAST => {
                assert_eq!(p.output, v1::OutputMode::Raw as i32);
                assert_eq!(p.noise, v1::NoiseKind::None as i32);
                assert_eq!(p.members, 1);
                assert_eq!(p.stage_bootstraps, 0);
                assert_eq!(budget, v1::BudgetLimits::default());
                assert_eq!(output.kind, v1::OutputKind::Logits as i32);
                assert_eq!(output.count, 10);
            }
            SLOW_NO_CLEAR => {
                // no [models.policy]: the default, label only
                assert_eq!(p.output, v1::OutputMode::Label as i32);
                assert!(!m.predict_clear_enabled);
            }
            LABEL => {
                assert_eq!(p.output, v1::OutputMode::Label as i32);
                assert_eq!(p.top_k, 1);
                assert_eq!(p.noise, v1::NoiseKind::None as i32);
                assert_eq!(p.noise_scale, 0.0);
                assert_eq!(p.members, 1);
                assert_eq!(budget, v1::BudgetLimits::default());
                assert_eq!(p.rdp_per_answer, 0.0);
                assert_eq!(output.kind, v1::OutputKind::Labels as i32);
                assert_eq!(output.count, 1);
            }
            NOISY_TOP2 => {
                assert_eq!(p.output, v1::OutputMode::TopK as i32);
                assert_eq!(p.top_k, 2);
                assert_eq!(p.noise, v1::NoiseKind::Gaussian as i32);
                assert_eq!(p.noise_scale, 1.0);
                assert_eq!(p.members, 1);
                assert_eq!(budget.answers, Some(NOISY_BUDGET));
                assert_eq!(budget.epsilon, None);
                assert_eq!(p.rdp_per_answer, 0.0, "top-k noise carries no DP claim");
                assert_eq!(output.kind, v1::OutputKind::Labels as i32);
                assert_eq!(output.count, 2);
            }
            PATE => {
                assert_eq!(p.output, v1::OutputMode::Label as i32);
                assert_eq!(p.aggregate, v1::Aggregate::Votes as i32);
                assert_eq!(p.members, 5);
                assert_eq!(p.noise, v1::NoiseKind::Gaussian as i32);
                assert_eq!(p.noise_scale, PATE_SIGMA);
                assert_eq!(budget.answers, None);
                assert_eq!(budget.epsilon, Some(PATE_EPSILON));
                assert_eq!(budget.delta, Some(PATE_DELTA));
                let per = 1.0 / (PATE_SIGMA * PATE_SIGMA);
                assert!((p.rdp_per_answer - per).abs() <= 1e-12 * per);
                assert_eq!(output.kind, v1::OutputKind::Labels as i32);
                assert_eq!(output.count, 1);
            }
            other => panic!("unexpected model {other}"),
        }
    }

    // NOISY_TOP2 answers, encrypted and clear, hold two labels and nothing else
    register(&alice, keys).await;
    let (_, spec) = alice.get_model(NOISY_TOP2).await.unwrap();
    assert_eq!(
        spec,
        fast_under(NOISY_TOP2, noisy_top2_policy()).client_spec()
    );
    let x = rows(1).remove(0);
    let ct = crypto::encrypt_row(&keys.client, &spec, &x).unwrap();
    let r = alice
        .predict(NOISY_TOP2, &keys.key_id, vec![ct])
        .await
        .unwrap();
    let p = crypto::decrypt_output(&keys.client, &spec, &r.outputs[0]).unwrap();
    assert_top2(&p.labels, p.label, &p.logits);
    assert_eq!(p.raw.len(), 2);
    let one_ct = (spec.params.big_lwe_dimension() + 1) * 8;
    assert!(r.outputs[0].len() >= 2 * one_ct && r.outputs[0].len() < 3 * one_ct);
    crypto::decrypt_output(&keys.client, &fast_circuit().client_spec(), &r.outputs[0])
        .expect_err("a top-2 answer decrypted as ten logits");
    let b = r.budget.unwrap();
    assert_eq!(
        (b.answers_used, b.answers_limit, b.answers_remaining),
        (1, Some(NOISY_BUDGET), Some(NOISY_BUDGET - 1))
    );
    assert_eq!(b.epsilon_spent, None);

    let clear = alice.predict_clear(NOISY_TOP2, vec![x]).await.unwrap();
    let c = &clear.predictions[0];
    assert_top2(&clear_labels(c), c.label as usize, &c.logits);
    assert_eq!(clear.budget.unwrap().answers_used, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_race_grants_exactly_the_remaining() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path(), "")).await;
    let alice = server.client(Some(ALICE)).await;
    let keys = fast_keys();
    register(&alice, keys).await;
    let x = rows(1).remove(0);

    let n = 3 * NOISY_BUDGET as usize;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let calls: Vec<_> = (0..n)
        .map(|i| {
            // half share alice's channel, half open their own
            let (barrier, x, url) = (barrier.clone(), x.clone(), server.url());
            let shared = alice.clone();
            tokio::spawn(async move {
                let client = if i % 2 == 0 {
                    shared
                } else {
                    Remote::connect(
                        &url,
                        blindfold_client::ConnectOptions {
                            token: Some(ALICE.into()),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap()
                };
                barrier.wait().await;
                client.predict_clear(NOISY_TOP2, vec![x]).await
            })
        })
        .collect();
    let mut used = BTreeSet::new();
    let mut refused = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => {
                let b = r.budget.expect("every answer carries the budget");
                assert!((1..=NOISY_BUDGET).contains(&b.answers_used), "{b:?}");
                assert_eq!(b.answers_limit, Some(NOISY_BUDGET));
                assert_eq!(
                    b.answers_remaining,
                    Some(NOISY_BUDGET - b.answers_used),
                    "{b:?}"
                );
                assert!(used.insert(b.answers_used), "two answers saw {b:?}");
                let p = &r.predictions[0];
                assert_top2(&clear_labels(p), p.label as usize, &p.logits);
            }
            Err(e) => {
                let (code, message) = refusal(&e);
                assert_eq!(code, Code::ResourceExhausted, "{message}");
                assert!(
                    message.contains("answer budget exhausted")
                        && message.contains(&format!("model {NOISY_TOP2}")),
                    "{message}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(used, (1..=NOISY_BUDGET).collect::<BTreeSet<_>>());
    assert_eq!(refused, n - NOISY_BUDGET as usize);

    let b = alice.get_budget(NOISY_TOP2).await.unwrap();
    assert_eq!(b.model, NOISY_TOP2);
    assert_eq!(b.answers_used, NOISY_BUDGET);
    assert_eq!(b.answers_remaining, Some(0));

    // an encrypted request is refused too, before anything is evaluated
    let (_, spec) = alice.get_model(NOISY_TOP2).await.unwrap();
    let ct = crypto::encrypt_row(&keys.client, &spec, &x).unwrap();
    let before = work_done(&server).await;
    assert_exhausted(
        alice.predict(NOISY_TOP2, &keys.key_id, vec![ct]).await,
        "answer budget exhausted",
    );
    assert_eq!(
        work_done(&server).await,
        before,
        "no pool job, bootstrap or inference for a refused request"
    );
    assert_eq!(
        alice.get_budget(NOISY_TOP2).await.unwrap().answers_used,
        NOISY_BUDGET
    );

    // bob's budget is his own
    let bob = server.client(Some(BOB)).await;
    assert_eq!(bob.get_budget(NOISY_TOP2).await.unwrap().answers_used, 0);
    let r = bob.predict_clear(NOISY_TOP2, vec![x]).await.unwrap();
    assert_eq!(r.budget.unwrap().answers_used, 1);
    let b = bob.get_budget(NOISY_TOP2).await.unwrap();
    assert_eq!(b.answers_used, 1);
    assert_eq!(b.answers_remaining, Some(NOISY_BUDGET - 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_survives_restart_and_new_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keys = fast_keys();
    let xs = rows(4);
    {
        let server = TestServer::start(config(dir.path(), "")).await;
        let alice = server.client(Some(ALICE)).await;
        register(&alice, keys).await;
        let (_, spec) = alice.get_model(NOISY_TOP2).await.unwrap();
        let ct = crypto::encrypt_row(&keys.client, &spec, &xs[0]).unwrap();
        let r = alice
            .predict(NOISY_TOP2, &keys.key_id, vec![ct])
            .await
            .unwrap();
        assert_eq!(r.budget.unwrap().answers_used, 1);
        let r = alice
            .predict_clear(NOISY_TOP2, vec![xs[1].clone()])
            .await
            .unwrap();
        assert_eq!(r.budget.unwrap().answers_used, 2);
        server.stop().await;
    }
    let server = TestServer::start(config(dir.path(), "")).await;
    let alice = server.client(Some(ALICE)).await;
    let used = || async { alice.get_budget(NOISY_TOP2).await.unwrap().answers_used };
    assert_eq!(used().await, 2, "the ledger is on disk");

    // a new key is still alice: her count goes on
    let fresh = new_keys(fast_circuit().params);
    assert_ne!(fresh.key_id, keys.key_id);
    register(&alice, &fresh).await;
    let (_, spec) = alice.get_model(NOISY_TOP2).await.unwrap();
    let ct = crypto::encrypt_row(&fresh.client, &spec, &xs[2]).unwrap();
    let r = alice
        .predict(NOISY_TOP2, &fresh.key_id, vec![ct.clone()])
        .await
        .unwrap();
    assert_eq!(r.budget.unwrap().answers_used, 3);
    let p = crypto::decrypt_output(&fresh.client, &spec, &r.outputs[0]).unwrap();
    assert_top2(&p.labels, p.label, &p.logits);
    assert_eq!(used().await, 3);

    // requests refused for their input cost nothing
    let e = alice
        .predict_clear(NOISY_TOP2, vec![xs[0][..63].to_vec()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    let e = alice
        .predict_clear(NOISY_TOP2, vec![xs[0].clone(), vec![f64::NAN; 64]])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    let e = alice
        .predict(NOISY_TOP2, &fresh.key_id, vec![ct.clone(), vec![1, 2, 3]])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    let e = alice
        .predict(NOISY_TOP2, &"ab".repeat(32), vec![ct.clone()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));
    assert_eq!(used().await, 3, "refused inputs were not debited");

    // a batch is granted whole or refused whole
    let four: Vec<_> = xs.clone();
    assert_exhausted(
        alice.predict_clear(NOISY_TOP2, four).await,
        "answer budget exhausted: 3 of 6 answers used, 4 requested",
    );
    assert_eq!(used().await, 3);
    let r = alice
        .predict_clear(NOISY_TOP2, xs[..3].to_vec())
        .await
        .unwrap();
    assert_eq!(r.predictions.len(), 3);
    assert_eq!(r.budget.unwrap().answers_remaining, Some(0));
    assert_eq!(used().await, NOISY_BUDGET);
    server.stop().await;
}

/// Mironov's RDP-to-(ε, δ) conversion of `n` GNMax answers at noise
/// `sigma` (each (λ, λ/σ²)-RDP), at one order λ.
fn conversion(lambda: f64, n: u64, sigma: f64, delta: f64) -> f64 {
    lambda * n as f64 / (sigma * sigma) + (1.0 / delta).ln() / (lambda - 1.0)
}

/// ε(n): the conversion minimised over λ > 1 numerically, on a
/// log-spaced grid of λ − 1 refined by golden-section search (the
/// conversion is convex in λ).
fn epsilon_of(n: u64, sigma: f64, delta: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let f = |lambda: f64| conversion(lambda, n, sigma, delta);
    let steps = 4000;
    let point = |i: usize| 1.0 + 10f64.powf(-6.0 + 14.0 * i as f64 / steps as f64);
    let best = (0..=steps)
        .min_by(|a, b| f(point(*a)).total_cmp(&f(point(*b))))
        .unwrap();
    let (mut lo, mut hi) = (point(best.saturating_sub(1)), point((best + 1).min(steps)));
    let golden = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..200 {
        let (a, b) = (hi - golden * (hi - lo), lo + golden * (hi - lo));
        if f(a) < f(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    f((lo + hi) / 2.0)
}

/// The largest n with ε(n) ≤ `limit`.
fn max_answers(sigma: f64, limit: f64, delta: f64) -> u64 {
    let mut n = 0;
    while epsilon_of(n + 1, sigma, delta) <= limit {
        n += 1;
        assert!(n < 10_000, "an ε budget this large is not a test");
    }
    n
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-6 * want.abs().max(1e-300),
        "{what}: got {got}, want {want}"
    );
}

/// The PATE model's ε budget at `epsilon_limit`: an encrypted answer and
/// then clear ones until refused; returns how many were granted.
async fn spend_pate_budget(server: &TestServer, epsilon_limit: f64) -> u64 {
    let alice = server.client(Some(ALICE)).await;
    let keys = fast_keys();
    let (proto, spec) = alice.get_model(PATE).await.unwrap();
    let policy = proto.policy.unwrap();
    assert_eq!(policy.budget.unwrap().epsilon, Some(epsilon_limit));
    let n = max_answers(PATE_SIGMA, epsilon_limit, PATE_DELTA);

    let b = alice.get_budget(PATE).await.unwrap();
    assert_eq!(b.answers_used, 0);
    assert_eq!(b.epsilon_spent, Some(0.0));
    assert_eq!(b.epsilon_limit, Some(epsilon_limit));
    assert_eq!(b.delta, Some(PATE_DELTA));
    assert_eq!(b.answers_limit, None);

    let check = |b: Option<v1::Budget>, i: u64| {
        let b = b.expect("every answer carries the budget");
        assert_eq!(b.answers_used, i);
        assert_close(
            b.epsilon_spent.expect("ε spent"),
            epsilon_of(i, PATE_SIGMA, PATE_DELTA),
            &format!("ε after {i} answers"),
        );
        assert!(b.epsilon_spent.unwrap() <= epsilon_limit);
        assert_eq!(b.epsilon_limit, Some(epsilon_limit));
        assert_eq!(b.delta, Some(PATE_DELTA));
    };

    // first, one encrypted answer (five teachers' votes under FHE)
    register(&alice, keys).await;
    let xs = rows(8);
    let ct = crypto::encrypt_row(&keys.client, &spec, &xs[0]).unwrap();
    let encrypted = alice.predict(PATE, &keys.key_id, vec![ct.clone()]).await;
    let mut granted = 0;
    if n == 0 {
        assert_exhausted(encrypted, "privacy budget exhausted");
    } else {
        let r = encrypted.unwrap();
        let p = crypto::decrypt_output(&keys.client, &spec, &r.outputs[0]).unwrap();
        assert!(p.label < 10 && p.labels == vec![p.label] && p.logits.is_empty());
        granted = 1;
        check(r.budget, 1);
    }
    // then clear answers, one row each, until refused
    loop {
        let i = granted + 1;
        let x = xs[i as usize % xs.len()].clone();
        match alice.predict_clear(PATE, vec![x]).await {
            Ok(r) => {
                assert!(
                    i <= n,
                    "answer {i} granted past the {n} the accountant allows"
                );
                let p = &r.predictions[0];
                assert!(p.label < 10 && clear_labels(p) == vec![p.label as usize]);
                assert!(p.logits.is_empty());
                check(r.budget, i);
                granted = i;
            }
            Err(e) => {
                let (code, message) = refusal(&e);
                assert_eq!(code, Code::ResourceExhausted, "{message}");
                assert!(
                    message.contains("privacy budget exhausted"),
                    "{message:?} after {granted} answers"
                );
                break;
            }
        }
    }
    assert_eq!(granted, n, "answers granted under ε = {epsilon_limit}");
    // exhausted for encrypted requests too, and nothing more was debited
    assert_exhausted(
        alice.predict(PATE, &keys.key_id, vec![ct]).await,
        "privacy budget exhausted",
    );
    let b = alice.get_budget(PATE).await.unwrap();
    assert_eq!(b.answers_used, n);
    assert_close(
        b.epsilon_spent.unwrap().max(1e-300),
        epsilon_of(n, PATE_SIGMA, PATE_DELTA).max(1e-300),
        "final ε",
    );
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pate_spends_privacy_budget_per_the_accountant() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path(), "")).await;
    let n = spend_pate_budget(&server, PATE_EPSILON).await;
    eprintln!("PATE: σ = {PATE_SIGMA}, ε = {PATE_EPSILON}, δ = {PATE_DELTA}: {n} answers");
    assert!(
        n >= 2,
        "the harness's PATE budget should admit several answers: {n}"
    );
    server.stop().await;
}

/// Answers of the noisy top-2 policy on `q` in the clear, over `trials`
/// Gaussian noise draws from a fixed-seed generator: the frequency of
/// the most common answer and of top-1 == `clean`.
fn noisy_statistics(h: &Hardened, q: &[i64], clean: usize, trials: usize) -> (f64, f64) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let scale = h.policy.noise.scale;
    let mut answers = std::collections::BTreeMap::<Vec<usize>, usize>::new();
    let mut top1 = 0;
    for _ in 0..trials {
        let noise: Vec<f64> = (0..h.noise_len())
            .map(|_| {
                let (u1, u2) = (uniform(), uniform());
                scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        let plan: TableSet = h.tables(&noise);
        let a = h.decode(&h.evaluate_clear(&plan, q).unwrap());
        top1 += usize::from(a.label == clean);
        *answers.entry(a.labels).or_default() += 1;
    }
    let modal = answers.values().max().copied().unwrap_or(0);
    (modal as f64 / trials as f64, top1 as f64 / trials as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noisy_answers_vary_and_stay_in_range() {
    // ten identities, NOISY_BUDGET answers each
    let others: Vec<(String, String)> = (0..8)
        .map(|i| (format!("user{i}"), format!("user-{i}-token-0123456789")))
        .collect();
    let extra: String = others
        .iter()
        .map(|(name, token)| format!("[[clients]]\nname = \"{name}\"\ntoken = \"{token}\"\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path(), &extra)).await;
    let alice = server.client(Some(ALICE)).await;

    // no noise: the label policy answers the same every time
    let xs = rows(4);
    let first = alice.predict_clear(LABEL, xs.clone()).await.unwrap();
    let label = fast_under(LABEL, Policy::default());
    for (p, x) in first.predictions.iter().zip(&xs) {
        assert_eq!(p.label as usize, clear_label(&label, x).0);
    }
    for _ in 0..3 {
        let again = alice.predict_clear(LABEL, xs.clone()).await.unwrap();
        assert_eq!(again.predictions, first.predictions);
    }

    // with noise: pick, by simulating the policy in the clear, a row whose
    // answer varies and a row whose top label is stable
    let noisy = fast_under(NOISY_TOP2, noisy_top2_policy());
    let candidates = rows(40);
    let stats: Vec<(f64, f64, usize)> = candidates
        .iter()
        .map(|x| {
            let (clean, _) = clear_label(&label, x);
            let q = fast_circuit().input.quantize(x).unwrap();
            let (modal, top1) = noisy_statistics(&noisy, &q, clean, 1000);
            (modal, top1, clean)
        })
        .collect();
    let varying = (0..stats.len())
        .min_by(|a, b| stats[*a].0.total_cmp(&stats[*b].0))
        .unwrap();
    let stable = (0..stats.len())
        .max_by(|a, b| stats[*a].1.total_cmp(&stats[*b].1).then(b.cmp(a)))
        .unwrap();
    assert!(
        stats[varying].0 <= 0.7,
        "no row among 40 has a varying answer: {:?}",
        stats[varying]
    );
    assert!(stats[stable].1 >= 0.995, "{:?}", stats[stable]);

    let mut tokens: Vec<String> = vec![ALICE.into(), BOB.into()];
    tokens.extend(others.into_iter().map(|(_, t)| t));
    let per = NOISY_BUDGET as usize / 2;
    let mut varied = BTreeSet::new();
    let mut stable_hits = 0;
    for token in &tokens {
        let client = server.client(Some(token)).await;
        let mut batch = vec![candidates[varying].clone(); per];
        batch.extend(vec![
            candidates[stable].clone();
            NOISY_BUDGET as usize - per
        ]);
        let r = client.predict_clear(NOISY_TOP2, batch).await.unwrap();
        assert_eq!(r.budget.unwrap().answers_remaining, Some(0));
        for (i, p) in r.predictions.iter().enumerate() {
            let labels = clear_labels(p);
            assert_top2(&labels, p.label as usize, &p.logits);
            if i < per {
                varied.insert(labels);
            } else {
                stable_hits += usize::from(p.label as usize == stats[stable].2);
            }
        }
    }
    let asked = tokens.len() * per;
    assert!(
        varied.len() > 1,
        "{asked} noisy answers for one row were all {varied:?}: is the noise fresh per answer?"
    );
    let stable_asked = tokens.len() * (NOISY_BUDGET as usize - per);
    assert!(
        stable_hits * 10 >= stable_asked * 9,
        "only {stable_hits} of {stable_asked} noisy answers kept the clean label"
    );
    server.stop().await;
}

/// Polls `alice`'s NOISY_TOP2 usage until it equals `want` (refunds are
/// written in the background); returns the first value read.
async fn settles_at(alice: &Remote, want: u64) -> u64 {
    let first = alice.get_budget(NOISY_TOP2).await.unwrap().answers_used;
    let mut now = first;
    for _ in 0..100 {
        if now == want {
            return first;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        now = alice.get_budget(NOISY_TOP2).await.unwrap().answers_used;
    }
    panic!("answers_used stays at {now} (first read {first}), want {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_produce_no_answer_are_refunded() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[compute]\nconcurrent_jobs = 1\nqueue_capacity = 0";
    let server = TestServer::start(config(dir.path(), extra)).await;
    let alice = server.client(Some(ALICE)).await;
    let keys = fast_keys();
    register(&alice, keys).await;
    let (_, spec) = alice.get_model(NOISY_TOP2).await.unwrap();
    let ct = crypto::encrypt_row(&keys.client, &spec, &rows(1)[0]).unwrap();

    // three at once, one compute slot, no queue: the refused ones were
    // debited (debits come first) and must be given back
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let (c, id, ct) = (alice.clone(), keys.key_id.clone(), ct.clone());
            tokio::spawn(async move { c.predict(NOISY_TOP2, &id, vec![ct]).await })
        })
        .collect();
    let mut answered = 0;
    let mut queue_full = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => {
                crypto::decrypt_output(&keys.client, &spec, &r.outputs[0]).unwrap();
                answered += 1;
            }
            Err(e) => {
                let (code, message) = refusal(&e);
                assert_eq!(code, Code::ResourceExhausted, "{message}");
                assert!(!message.contains("budget"), "{message}");
                queue_full += 1;
            }
        }
    }
    assert!(answered >= 1 && queue_full >= 1, "{answered} {queue_full}");
    let first = settles_at(&alice, answered).await;
    eprintln!("after a full queue: first read {first}, settled at {answered}");

    // a deadline the evaluation cannot meet: cancelled, and refunded
    let hurried = Remote::connect(
        &server.url(),
        blindfold_client::ConnectOptions {
            token: Some(ALICE.into()),
            timeout: Some(std::time::Duration::from_millis(20)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = hurried
        .predict(NOISY_TOP2, &keys.key_id, vec![ct.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Some(Code::DeadlineExceeded | Code::Cancelled)),
        "{e}"
    );
    let first = settles_at(&alice, answered).await;
    eprintln!("after a cancelled request: first read {first}, settled at {answered}");
    server.stop().await;
}
