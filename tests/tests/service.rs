//! The service end to end: a real server on loopback, the real client.

use std::sync::Arc;
use std::time::Duration;

use blindfold_client::crypto;
use blindfold_client::{ConnectOptions, Remote};
use blindfold_proto::v1;
use blindfold_runtime::eval::clear;
use blindfold_tests::*;
use tonic::Code;

/// Encrypts digits rows for the fast model with the shared test keys.
fn encrypt_rows(n: usize) -> (Vec<Vec<u8>>, Vec<Vec<i64>>) {
    let keys = fast_keys();
    let circuit = fast_circuit();
    let spec = circuit.client_spec();
    let mut cts = Vec::new();
    let mut expected = Vec::new();
    for (x, _) in digits_rows(n) {
        cts.push(crypto::encrypt_row(&keys.client, &spec, &x).unwrap());
        let q = circuit.input.quantize(&x).unwrap();
        expected.push(clear::evaluate(circuit, &q).unwrap());
    }
    (cts, expected)
}

async fn register(client: &Remote, keys: &Keys) -> v1::RegisterKeyResponse {
    client
        .register_key(keys.evaluation.clone(), "2_2", no_progress())
        .await
        .expect("register")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_predict_batch_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path(), "")).await;
    let alice = server.client(Some(ALICE)).await;
    let keys = fast_keys();

    let models = alice.list_models().await.unwrap();
    let names: Vec<_> = models.iter().map(|m| m.name.as_str()).collect();
    // names come sorted (the registry is a BTreeMap)
    assert_eq!(names, [SLOW_NO_CLEAR, LABEL, FAST, NOISY_TOP2, PATE]);
    let (proto, spec) = alice.get_model(FAST).await.unwrap();
    let mut want = fast_circuit().client_spec();
    want.name = FAST.into();
    assert_eq!(spec, want);
    assert_eq!(proto.bootstraps_per_inference, 42);

    let r = register(&alice, keys).await;
    assert_eq!(r.key_id, keys.key_id);
    assert!(!r.already_registered);
    // a held key is answered after the first chunk; progress still ends at
    // the whole key
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = {
        let seen = seen.clone();
        Arc::new(move |sent: u64, total: u64| seen.lock().unwrap().push((sent, total)))
    };
    let again = alice
        .register_key(keys.evaluation.clone(), "2_2", record)
        .await
        .unwrap();
    assert_eq!(again.key_id, keys.key_id);
    assert!(again.already_registered, "registration is idempotent");
    let total = keys.evaluation.len() as u64;
    assert_eq!(seen.lock().unwrap().last(), Some(&(total, total)));
    let status = alice.key_status(&keys.key_id).await.unwrap();
    assert_eq!(status.bytes, keys.evaluation.len() as u64);
    assert!(status.cached);

    // one input, then a batch of three: decryptions equal the clear evaluator
    let (cts, expected) = encrypt_rows(4);
    let one = alice
        .predict(FAST, &keys.key_id, vec![cts[0].clone()])
        .await
        .unwrap();
    let timing = one.timing.unwrap();
    assert_eq!(timing.bootstraps, 42);
    assert_eq!(timing.keyswitches, 10);
    assert!(timing.evaluation_ms > 0.0);
    let p = crypto::decrypt_output(&keys.client, &spec, &one.outputs[0]).unwrap();
    assert_eq!(p.raw, expected[0]);

    let batch = alice
        .predict(FAST, &keys.key_id, cts[1..].to_vec())
        .await
        .unwrap();
    assert_eq!(batch.outputs.len(), 3);
    assert_eq!(batch.timing.unwrap().bootstraps, 3 * 42);
    let mut labels = Vec::new();
    for (out, want) in batch.outputs.iter().zip(&expected[1..]) {
        let p = crypto::decrypt_output(&keys.client, &spec, out).unwrap();
        assert_eq!(&p.raw, want);
        labels.push(p.label);
    }

    // the clear endpoint on the same rows gives the same labels and logits
    let rows: Vec<Vec<f64>> = digits_rows(4).into_iter().map(|(x, _)| x).collect();
    let clear = alice.predict_clear(FAST, rows[1..].to_vec()).await.unwrap();
    for ((c, label), want) in clear.predictions.iter().zip(&labels).zip(&expected[1..]) {
        assert_eq!(c.label as usize, *label);
        assert_eq!(c.logits, spec.decode_output(want));
    }

    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("blindfold_bootstraps_total 168"),
        "{metrics}"
    );
    assert!(metrics.contains("blindfold_requests_total{method=\"Predict\",code=\"Ok\"} 2"));
    assert!(metrics.contains("blindfold_key_cache_entries 1"));

    // standard health service
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "blindfold.v1.Inference".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_restart_and_deletion_is_per_identity() {
    let dir = tempfile::tempdir().unwrap();
    let keys = fast_keys();
    let (cts, expected) = encrypt_rows(1);
    {
        let server = TestServer::start(config(dir.path(), "")).await;
        let alice = server.client(Some(ALICE)).await;
        register(&alice, keys).await;
        // bob registers the very same bytes: same id, his own registration
        let bob = server.client(Some(BOB)).await;
        let r = register(&bob, keys).await;
        assert_eq!(r.key_id, keys.key_id);
        assert!(!r.already_registered);
        server.stop().await;
    }
    let server = TestServer::start(config(dir.path(), "")).await;
    let alice = server.client(Some(ALICE)).await;
    let status = alice.key_status(&keys.key_id).await.unwrap();
    assert!(!status.cached, "a fresh server loads keys on demand");
    let r = alice
        .predict(FAST, &keys.key_id, cts.clone())
        .await
        .expect("predict after restart without re-registering");
    let spec = fast_circuit().client_spec();
    let p = crypto::decrypt_output(&keys.client, &spec, &r.outputs[0]).unwrap();
    assert_eq!(p.raw, expected[0]);

    // alice deletes hers; bob's registration of the same bytes still works
    alice.delete_key(&keys.key_id).await.unwrap();
    let e = alice.key_status(&keys.key_id).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));
    let bob = server.client(Some(BOB)).await;
    bob.predict(FAST, &keys.key_id, cts)
        .await
        .expect("bob's key");
    bob.delete_key(&keys.key_id).await.unwrap();
    assert!(!dir
        .path()
        .join(format!("keys/{}.key", keys.key_id))
        .exists());
    server.stop().await;
}

/// `data` as 1 MiB chunks, the header on the first.
fn chunks(params: &str, total: u64, data: &[u8]) -> Vec<v1::RegisterKeyChunk> {
    data.chunks(1 << 20)
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                chunk(params, total, c.to_vec())
            } else {
                chunk("", 0, c.to_vec())
            }
        })
        .collect()
}

fn chunk(params: &str, total: u64, data: Vec<u8>) -> v1::RegisterKeyChunk {
    v1::RegisterKeyChunk {
        parameter_set: params.into(),
        total_bytes: total,
        sha256: String::new(),
        data,
    }
}

async fn raw_register(
    client: &Remote,
    chunks: impl tokio_stream::Stream<Item = v1::RegisterKeyChunk> + Send + 'static,
) -> Code {
    match client.keys_client().register_key(chunks).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

async fn raw_predict(client: &Remote, model: &str, key_id: &str, inputs: Vec<Vec<u8>>) -> Code {
    match client
        .inference_client()
        .predict(v1::PredictRequest {
            model: model.into(),
            key_id: key_id.into(),
            inputs,
        })
        .await
    {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_get_specific_statuses_and_change_nothing() {
    use tokio_stream::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[limits]\nmax_key_bytes = 67108864\nmax_ciphertext_bytes = 65536\n\
                 max_keys_per_client = 2\nupload_idle_timeout_secs = 2";
    let server = TestServer::start(config(dir.path(), extra)).await;
    let alice = server.client(Some(ALICE)).await;
    let bob = server.client(Some(BOB)).await;
    let keys = fast_keys();
    register(&alice, keys).await;
    let (cts, expected) = encrypt_rows(1);
    let ek = keys.evaluation.clone();
    let total = ek.len() as u64;
    let it = |v: Vec<v1::RegisterKeyChunk>| tokio_stream::iter(v);

    // --- keys ---
    let garbage = vec![7u8; 1000];
    assert_eq!(
        raw_register(&alice, it(vec![chunk("2_2", 1000, garbage)])).await,
        Code::InvalidArgument,
        "garbage key"
    );
    let half = ek[..ek.len() / 2].to_vec();
    assert_eq!(
        raw_register(&alice, it(chunks("2_2", total, &half))).await,
        Code::InvalidArgument,
        "stream ends before total_bytes"
    );
    assert_eq!(
        raw_register(&alice, it(chunks("2_2", half.len() as u64, &half))).await,
        Code::InvalidArgument,
        "a truncated key that claims to be complete"
    );
    assert_eq!(
        raw_register(&alice, it(vec![chunk("2_2", 65 << 20, vec![0; 16])])).await,
        Code::ResourceExhausted,
        "declared size over the key limit"
    );
    assert_eq!(
        raw_register(
            &alice,
            it(vec![chunk("2_2", 8 << 20, vec![0; (4 << 20) + 1])])
        )
        .await,
        Code::ResourceExhausted,
        "chunk over the chunk limit"
    );
    assert_eq!(
        raw_register(&alice, it(vec![chunk("2_2", 8 << 20, vec![0; 5 << 20])])).await,
        Code::OutOfRange,
        "message over the gRPC message limit (refused by the transport before decoding)"
    );
    assert_eq!(
        raw_register(&alice, it(vec![chunk("2_2", 10, vec![0; 20])])).await,
        Code::InvalidArgument,
        "more bytes than declared"
    );
    assert_eq!(
        raw_register(&alice, it(vec![chunk("9_9", 10, vec![0; 10])])).await,
        Code::InvalidArgument,
        "unknown parameter set"
    );
    assert_eq!(
        raw_register(&alice, it(chunks("3_3", total, &ek))).await,
        Code::InvalidArgument,
        "a 2_2 key declared as 3_3"
    );
    assert_eq!(
        raw_register(&alice, it(vec![])).await,
        Code::InvalidArgument,
        "empty stream"
    );
    // a stream that never ends: cut off as soon as it passes the declared size
    let endless = tokio_stream::iter(std::iter::once(chunk("2_2", 2 << 20, vec![1; 65536]))).chain(
        tokio_stream::iter(std::iter::repeat_with(|| chunk("", 0, vec![1; 65536]))),
    );
    assert_eq!(
        raw_register(&alice, endless).await,
        Code::InvalidArgument,
        "endless stream"
    );
    // a stream that stalls: aborted after the idle timeout
    let stalled = tokio_stream::iter(vec![chunk("2_2", total, ek[..1 << 20].to_vec())])
        .chain(tokio_stream::pending());
    assert_eq!(
        raw_register(&alice, stalled).await,
        Code::DeadlineExceeded,
        "stalled stream"
    );

    // --- ciphertexts ---
    assert_eq!(
        raw_predict(&alice, FAST, &keys.key_id, vec![vec![1, 2, 3]]).await,
        Code::InvalidArgument,
        "garbage ciphertext"
    );
    let ct = &cts[0];
    assert_eq!(
        raw_predict(
            &alice,
            FAST,
            &keys.key_id,
            vec![ct[..ct.len() - 9].to_vec()]
        )
        .await,
        Code::InvalidArgument,
        "truncated ciphertext"
    );
    assert_eq!(
        raw_predict(&alice, FAST, &keys.key_id, vec![vec![0; 70_000]]).await,
        Code::ResourceExhausted,
        "oversized ciphertext"
    );
    let mut other_spec = fast_circuit().client_spec();
    other_spec.params = blindfold_runtime::params::ParamSet::Message3Carry3;
    let other_ck = blindfold_client::ClientKey::generate(other_spec.params);
    let x = &digits_rows(1)[0].0;
    let foreign = crypto::encrypt_row(&other_ck, &other_spec, x).unwrap();
    assert_eq!(
        raw_predict(&alice, FAST, &keys.key_id, vec![foreign]).await,
        Code::InvalidArgument,
        "ciphertext for another parameter set"
    );
    let mut short_spec = fast_circuit().client_spec();
    short_spec.input.scale.truncate(63);
    short_spec.input.zero_point.truncate(63);
    short_spec.input.shape = vec![63];
    let short = crypto::encrypt_row(&keys.client, &short_spec, &x[..63]).unwrap();
    assert_eq!(
        raw_predict(&alice, FAST, &keys.key_id, vec![short]).await,
        Code::InvalidArgument,
        "63 features"
    );
    assert_eq!(
        raw_predict(&alice, FAST, &keys.key_id, vec![]).await,
        Code::InvalidArgument,
        "no inputs"
    );
    assert_eq!(
        raw_predict(&alice, FAST, &keys.key_id, vec![ct.clone(); 17]).await,
        Code::InvalidArgument,
        "batch over the limit"
    );
    assert_eq!(
        raw_predict(&alice, "no-such-model", &keys.key_id, cts.clone()).await,
        Code::NotFound
    );
    assert_eq!(
        raw_predict(&alice, FAST, &"ab".repeat(32), cts.clone()).await,
        Code::NotFound,
        "unknown key"
    );
    assert_eq!(
        raw_predict(&alice, FAST, "../../etc/passwd", cts.clone()).await,
        Code::InvalidArgument
    );
    assert_eq!(
        raw_predict(&alice, SLOW_NO_CLEAR, &keys.key_id, cts.clone()).await,
        Code::FailedPrecondition,
        "a 2_2 key for a 3_3 model"
    );

    // --- identities ---
    assert_eq!(
        raw_predict(&bob, FAST, &keys.key_id, cts.clone()).await,
        Code::NotFound,
        "another identity's key"
    );
    assert_eq!(
        bob.key_status(&keys.key_id).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    assert_eq!(
        bob.delete_key(&keys.key_id).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    let anonymous = server.client(None).await;
    assert_eq!(
        anonymous.list_models().await.unwrap_err().code(),
        Some(Code::Unauthenticated)
    );
    let forged = server.client(Some("not-a-valid-token-at-all")).await;
    assert_eq!(
        raw_predict(&forged, FAST, &keys.key_id, cts.clone()).await,
        Code::Unauthenticated
    );

    // --- the clear endpoint ---
    let e = alice
        .predict_clear(SLOW_NO_CLEAR, vec![vec![0.0; 30]])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied));
    let e = alice
        .predict_clear(FAST, vec![vec![0.0; 10]])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    let e = alice
        .predict_clear(FAST, vec![vec![f64::NAN; 64]])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));

    // --- quota: two keys per identity ---
    let second = new_keys(keys.client.params);
    register(&alice, &second).await;
    let third = new_keys(keys.client.params);
    let e = alice
        .register_key(third.evaluation.clone(), "2_2", no_progress())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::ResourceExhausted));

    // nothing stored was lost, nothing half-uploaded is left, still serving
    let r = alice.predict(FAST, &keys.key_id, cts).await.unwrap();
    let p =
        crypto::decrypt_output(&keys.client, &fast_circuit().client_spec(), &r.outputs[0]).unwrap();
    assert_eq!(p.raw, expected[0]);
    assert_eq!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("keys")).unwrap().count(),
        2
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_and_expired_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[compute]\nconcurrent_jobs = 1\nqueue_capacity = 0";
    let server = TestServer::start(config(dir.path(), extra)).await;
    let alice = server.client(Some(ALICE)).await;
    let keys = fast_keys();
    register(&alice, keys).await;
    let (cts, _) = encrypt_rows(1);

    // three at once with no queue: the first runs, the others are refused
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let (c, id, ct) = (alice.clone(), keys.key_id.clone(), cts.clone());
            tokio::spawn(async move { c.predict(FAST, &id, ct).await.map_err(|e| e.code()) })
        })
        .collect();
    let mut codes = Vec::new();
    for c in calls {
        codes.push(match c.await.unwrap() {
            Ok(_) => None,
            Err(code) => code,
        });
    }
    assert!(codes.contains(&None), "{codes:?}");
    assert!(codes.contains(&Some(Code::ResourceExhausted)), "{codes:?}");

    // a 20 ms deadline cannot be met (one inference takes ~300 ms)
    let hurried = Remote::connect(
        &server.url(),
        ConnectOptions {
            token: Some(ALICE.into()),
            timeout: Some(Duration::from_millis(20)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = hurried
        .predict(FAST, &keys.key_id, cts.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Some(Code::DeadlineExceeded | Code::Cancelled)),
        "{e}"
    );
    // the abandoned job stops and the slot frees up
    let mut ok = false;
    for _ in 0..50 {
        if alice.predict(FAST, &keys.key_id, cts.clone()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the server serves again after a cancelled request");
    let metrics = server.metrics_text().await;
    assert!(metrics.contains("blindfold_running_jobs 0"), "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_cache_evicts_under_its_budget_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let a = fast_keys();
    // a budget that holds one 2_2 key, not two
    let one = {
        let ck = &a.client;
        ck.evaluation_key().decompress().memory_bytes()
    };
    assert_eq!(one, a.client.params.evaluation_key_memory_bytes());
    let mib = (one * 3 / 2) >> 20;
    let extra = format!("[compute]\nkey_cache_mib = {mib}");
    let server = TestServer::start(config(dir.path(), &extra)).await;
    let alice = server.client(Some(ALICE)).await;
    let b = new_keys(a.client.params);
    register(&alice, a).await;
    register(&alice, &b).await;
    assert!(
        !alice.key_status(&a.key_id).await.unwrap().cached,
        "a was evicted"
    );
    assert!(alice.key_status(&b.key_id).await.unwrap().cached);
    let (cts, expected) = encrypt_rows(1);
    let r = alice.predict(FAST, &a.key_id, cts).await.unwrap();
    let p =
        crypto::decrypt_output(&a.client, &fast_circuit().client_spec(), &r.outputs[0]).unwrap();
    assert_eq!(p.raw, expected[0]);
    assert!(
        alice.key_status(&a.key_id).await.unwrap().cached,
        "reloaded"
    );
    assert!(
        !alice.key_status(&b.key_id).await.unwrap().cached,
        "b made room"
    );
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(&format!("blindfold_key_cache_bytes {one}")),
        "{metrics}"
    );
    server.stop().await;
}

/// Keys that requests are using count against the key memory budget even
/// after the cache evicts them: a request whose key does not fit waits for
/// memory (`compute.key_wait_secs`), then is refused with a message that
/// names the budget; once the memory is free the same request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_fit_waits_then_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = fast_keys();
    let one = a.client.params.evaluation_key_memory_bytes();
    let mib = (one * 3 / 2) >> 20; // one key, not two
    let extra = format!("[compute]\nkey_cache_mib = {mib}\nkey_wait_secs = 1");
    let server = TestServer::start(config(dir.path(), &extra)).await;
    let alice = server.client(Some(ALICE)).await;
    let b = new_keys(a.client.params);
    register(&alice, a).await;
    register(&alice, &b).await; // a is evicted for b
                                // a long request on a: it loads a (evicting idle b) and holds it
    let (cts, _) = encrypt_rows(12);
    let long = {
        let alice = alice.clone();
        let key = a.key_id.clone();
        tokio::spawn(async move { alice.predict(FAST, &key, cts).await })
    };
    let started = std::time::Instant::now();
    while !server
        .metrics_text()
        .await
        .contains("blindfold_running_jobs 1")
    {
        assert!(started.elapsed() < Duration::from_secs(60), "a never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alice.key_status(&b.key_id).await.unwrap().cached);
    let spec = fast_circuit().client_spec();
    let (x, _) = &digits_rows(1)[0];
    let ct = crypto::encrypt_row(&b.client, &spec, x).unwrap();
    let e = alice
        .predict(FAST, &b.key_id, vec![ct.clone()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::ResourceExhausted), "{e}");
    assert!(e.to_string().contains("key memory budget"), "{e}");
    assert!(!long.is_finished(), "refused while a was still in use");
    let metrics = server.metrics_text().await;
    let reserved = metrics
        .lines()
        .find_map(|l| l.strip_prefix("blindfold_key_memory_bytes "))
        .and_then(|v| v.parse::<usize>().ok())
        .expect("the key memory gauge");
    assert!(reserved <= mib << 20, "{reserved} reserved over the budget");
    assert_eq!(long.await.unwrap().unwrap().outputs.len(), 12);
    // a is idle now: b's request evicts it and is answered
    let r = alice.predict(FAST, &b.key_id, vec![ct]).await.unwrap();
    let p = crypto::decrypt_output(&b.client, &spec, &r.outputs[0]).unwrap();
    let q = fast_circuit().input.quantize(x).unwrap();
    assert_eq!(p.raw, clear::evaluate(fast_circuit(), &q).unwrap());
    server.stop().await;
}

/// Tokens are compared exactly as sent (no trimming), and a request with
/// two `authorization` headers is refused whatever they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_exact_and_unambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path(), "")).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut models = v1::models_client::ModelsClient::new(channel);
    let call = |values: Vec<String>| {
        let mut r = tonic::Request::new(v1::ListModelsRequest {});
        for v in values {
            r.metadata_mut().append("authorization", v.parse().unwrap());
        }
        r
    };
    let ok = models
        .list_models(call(vec![format!("Bearer {ALICE}")]))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    for values in [
        vec![format!("Bearer  {ALICE}")],
        vec![format!("Bearer {ALICE} ")],
        vec![format!("Bearer {ALICE}"), format!("Bearer {BOB}")],
        vec![format!("Bearer {ALICE}"), format!("Bearer {ALICE}")],
    ] {
        let e = models
            .list_models(call(values.clone()))
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{values:?}: {e:?}");
        if values.len() == 2 {
            assert!(e.message().contains("more than one"), "{}", e.message());
        }
    }
    server.stop().await;
}

/// One identity cannot hold every upload slot: with the default limit of
/// one upload per identity, alice's stalled uploads take one slot, her
/// others are refused at once, and bob registers meanwhile (issue 14's
/// finding: four slow streams of one identity blocked everyone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_uploader_does_not_block_other_identities() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path(), "")).await;
    let alice = server.client(Some(ALICE)).await;
    let bob = server.client(Some(BOB)).await;
    // a stream that never sends a chunk, held open by its sender
    let stall = |c: &Remote| {
        let (tx, rx) = tokio::sync::mpsc::channel::<v1::RegisterKeyChunk>(1);
        let mut keys = c.keys_client();
        let call = tokio::spawn(async move {
            keys.register_key(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        (tx, call)
    };
    let (held_tx, held) = stall(&alice);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..3 {
        let (_tx, call) = stall(&alice);
        let e = call
            .await
            .unwrap()
            .expect_err("a second upload of one identity");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("this identity"), "{}", e.message());
    }
    // bob is not blocked by alice's stalled upload
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        register(&bob, fast_keys()),
    )
    .await
    .expect("bob's upload is not starved");
    assert!(!r.key_id.is_empty());
    // alice's slot comes back when her stalled upload ends
    drop(held_tx);
    let ended = held.await.unwrap();
    assert!(ended.is_err(), "an empty upload registers nothing");
    let r = register(&alice, fast_keys()).await;
    assert!(!r.key_id.is_empty());
    server.stop().await;
}
