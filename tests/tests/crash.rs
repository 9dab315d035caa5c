//! `kill -9` during a key upload: the server process (the real binary) is
//! killed mid-stream, restarted on the same data directory, and must have
//! kept the key registered before, with the half-uploaded one invisible.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use blindfold_client::crypto;
use blindfold_proto::v1;
use blindfold_tests::*;
use tonic::Code;

fn spawn_server(config: &Path, port: u16, log: &Path) -> Child {
    spawn_server_binary(
        Path::new(env!("CARGO_BIN_EXE_blindfold-e2e-server")),
        config,
        port,
        log,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_keeps_registered_keys_and_hides_the_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = config_text(&data, "").replace("metrics_listen = \"127.0.0.1:0\"\n", "");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("server.log");

    let port = free_port();
    let mut child = spawn_server(&config, port, &log);
    let url = format!("http://127.0.0.1:{port}");
    let connect = |url: String| async move {
        blindfold_client::Remote::connect(
            &url,
            blindfold_client::ConnectOptions {
                token: Some(ALICE.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
    };
    let alice = connect(url.clone()).await;
    let a = fast_keys();
    alice
        .register_key(a.evaluation.clone(), "2_2", no_progress())
        .await
        .unwrap();

    // start uploading B, stop sending halfway, and kill the server
    let b = new_keys(a.client.params);
    let (tx, rx) = tokio::sync::mpsc::channel::<v1::RegisterKeyChunk>(4);
    let mut keys_client = alice.keys_client();
    let upload = tokio::spawn(async move {
        keys_client
            .register_key(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let total = b.evaluation.len() as u64;
    for (i, c) in b.evaluation.chunks(1 << 20).take(12).enumerate() {
        tx.send(v1::RegisterKeyChunk {
            parameter_set: if i == 0 { "2_2".into() } else { String::new() },
            total_bytes: if i == 0 { total } else { 0 },
            sha256: String::new(),
            data: c.to_vec(),
        })
        .await
        .unwrap();
    }
    let uploads = data.join("uploads");
    let start = Instant::now();
    loop {
        let size: u64 = std::fs::read_dir(&uploads)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        if size >= 8 << 20 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "upload did not reach the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let failed = upload.await.unwrap();
    assert!(failed.is_err(), "the upload cannot have succeeded");
    drop(tx);
    assert_eq!(
        std::fs::read_dir(&uploads).unwrap().count(),
        1,
        "the partial file is there"
    );

    // restart on the same directory
    let port = free_port();
    let mut child = spawn_server(&config, port, &log);
    let alice = connect(format!("http://127.0.0.1:{port}")).await;
    assert_eq!(
        std::fs::read_dir(&uploads).unwrap().count(),
        0,
        "partial upload cleaned up"
    );
    let e = alice.key_status(&b.key_id).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(Code::NotFound),
        "the half-uploaded key is not visible"
    );
    let spec = fast_circuit().client_spec();
    let (x, _) = &digits_rows(1)[0];
    let ct = crypto::encrypt_row(&a.client, &spec, x).unwrap();
    let r = alice
        .predict(FAST, &a.key_id, vec![ct])
        .await
        .expect("key A survived kill -9");
    let p = crypto::decrypt_output(&a.client, &spec, &r.outputs[0]).unwrap();
    let q = fast_circuit().input.quantize(x).unwrap();
    assert_eq!(
        p.raw,
        blindfold_runtime::eval::clear::evaluate(fast_circuit(), &q).unwrap()
    );
    // and B can be registered in full now
    alice
        .register_key(b.evaluation.clone(), "2_2", no_progress())
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}
