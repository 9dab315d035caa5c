//! Faults an operator meets, on the real server: a full disk, a `kill -9`
//! between a debit and its answer, and sockets that never speak.
//!
//! * Disk full: the data directory on a small tmpfs (mounting needs root;
//!   without it the test says so and passes only if
//!   `BLINDFOLD_REQUIRE_TMPFS` is unset — `.ci/run` sets it). An upload
//!   that does not fit is `RESOURCE_EXHAUSTED` naming the full disk; a key
//!   already held re-registers without writing a byte; `DeleteKey` works
//!   on the full disk (the store's space reserve); afterwards the store is
//!   whole.
//! * Crash debits: a `Predict` on a budgeted model is debited, the server
//!   is killed mid-evaluation, and after the restart the answers are back.
//! * Idle connections: 200 sockets that never send a byte are closed
//!   within the preface timeout, the server's descriptors return to where
//!   they were, and a real client is served meanwhile.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use blindfold_client::{crypto, ClientError, Remote};
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

async fn connect(port: u16) -> Remote {
    Remote::connect(
        &format!("http://127.0.0.1:{port}"),
        blindfold_client::ConnectOptions {
            token: Some(ALICE.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={}k", bytes.div_ceil(1024)))
            .arg("tmpfs")
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(at))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` until a write fails for space.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    loop {
        match f.write_all(&block).and_then(|_| f.sync_all()) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    path
}

fn is_full_error(e: &ClientError) -> bool {
    e.code() == Some(Code::ResourceExhausted) && e.to_string().contains("disk is full")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_named_and_keys_can_still_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let a = fast_keys();
    let b = new_keys(a.client.params);
    let key = a.evaluation.len() as u64;
    // room for one key, the database and the reserve, not for two keys
    let size = key + (blindfold_server::store::RESERVE_BYTES as u64) + (key / 2).max(16 << 20);
    let Some(fs) = Tmpfs::mount(dir.path().join("disk"), size) else {
        assert!(
            std::env::var_os("BLINDFOLD_REQUIRE_TMPFS").is_none(),
            "cannot mount a tmpfs (needs root) and BLINDFOLD_REQUIRE_TMPFS is set"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = fs.0.join("data");
    let server = TestServer::start(config(&data, "")).await;
    let alice = server.client(Some(ALICE)).await;
    alice
        .register_key(a.evaluation.clone(), "2_2", no_progress())
        .await
        .expect("the first key fits");

    // a second key does not fit: named, and nothing of it is left
    let e = alice
        .register_key(b.evaluation.clone(), "2_2", no_progress())
        .await
        .unwrap_err();
    assert!(is_full_error(&e), "{e}");
    assert_eq!(std::fs::read_dir(data.join("uploads")).unwrap().count(), 0);

    // now the disk is full to the last block
    let filler = fill(&fs.0);
    // re-registering a held key writes nothing, so it works
    let again = alice
        .register_key(a.evaluation.clone(), "2_2", no_progress())
        .await
        .expect("a held key re-registers on a full disk");
    assert!(again.already_registered);
    // a prediction either works or names the full disk (its debit must be
    // written): never INTERNAL
    let spec = alice.get_model(FAST).await.unwrap().1;
    let (x, _) = &digits_rows(1)[0];
    let ct = crypto::encrypt_row(&a.client, &spec, x).unwrap();
    match alice.predict(FAST, &a.key_id, vec![ct]).await {
        Ok(r) => assert_eq!(r.outputs.len(), 1),
        Err(e) => assert!(is_full_error(&e), "{e}"),
    }
    // deletion frees space even now
    alice
        .delete_key(&a.key_id)
        .await
        .expect("DeleteKey works on a full disk");
    let e = alice.key_status(&a.key_id).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));
    assert!(!data.join("keys").join(format!("{}.key", a.key_id)).exists());

    // space back: the store works and survives a restart
    std::fs::remove_file(filler).unwrap();
    alice
        .register_key(b.evaluation.clone(), "2_2", no_progress())
        .await
        .expect("B fits once A is gone");
    server.stop().await;
    let server = TestServer::start(config(&data, "")).await;
    let alice = server.client(Some(ALICE)).await;
    let ct = crypto::encrypt_row(&b.client, &spec, x).unwrap();
    let r = alice.predict(FAST, &b.key_id, vec![ct]).await.unwrap();
    let p = crypto::decrypt_output(&b.client, &spec, &r.outputs[0]).unwrap();
    let q = fast_circuit().input.quantize(x).unwrap();
    assert_eq!(
        p.raw,
        blindfold_runtime::eval::clear::evaluate(fast_circuit(), &q).unwrap()
    );
    assert!(
        data.join("reserve").exists(),
        "the reserve is written again"
    );
    server.stop().await;
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debit_lost_to_kill_9_is_refunded_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = config_text(&data, "").replace("metrics_listen = \"127.0.0.1:0\"\n", "");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("server.log");
    let port = free_port();
    let mut child = spawn_server(&config, port, &log);
    let alice = connect(port).await;
    let a = fast_keys();
    alice
        .register_key(a.evaluation.clone(), "2_2", no_progress())
        .await
        .unwrap();
    let spec = alice.get_model(NOISY_TOP2).await.unwrap().1;
    let rows = digits_rows(4);
    let inputs: Vec<Vec<u8>> = rows
        .iter()
        .map(|(x, _)| crypto::encrypt_row(&a.client, &spec, x).unwrap())
        .collect();
    let n = inputs.len() as u64;
    let predict = {
        let alice = alice.clone();
        let key = a.key_id.clone();
        tokio::spawn(async move { alice.predict(NOISY_TOP2, &key, inputs).await })
    };
    // the debit is on disk before the evaluation starts
    let start = Instant::now();
    loop {
        let b = alice.get_budget(NOISY_TOP2).await.unwrap();
        if b.answers_used == n {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never debited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(predict.await.unwrap().is_err(), "no answer was sent");

    let port = free_port();
    let mut child = spawn_server(&config, port, &log);
    let alice = connect(port).await;
    let b = alice.get_budget(NOISY_TOP2).await.unwrap();
    assert_eq!(b.answers_used, 0, "the lost request's debit is refunded");
    assert_eq!(b.answers_remaining, Some(NOISY_BUDGET));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("refunded the debits"), "{text}");
    // an answered request stays debited across a restart
    let (x, _) = &rows[0];
    let ct = crypto::encrypt_row(&a.client, &spec, x).unwrap();
    alice
        .predict(NOISY_TOP2, &a.key_id, vec![ct])
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let port = free_port();
    let mut child = spawn_server(&config, port, &log);
    let alice = connect(port).await;
    assert_eq!(alice.get_budget(NOISY_TOP2).await.unwrap().answers_used, 1);
    child.kill().unwrap();
    child.wait().unwrap();
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_within_the_preface_timeout() {
    const SILENT: usize = 200;
    const TIMEOUT_SECS: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[limits]\nconnection_preface_timeout_secs = {TIMEOUT_SECS}\nmax_connections = 150"
    );
    let text = config_text(&dir.path().join("data"), &extra)
        .replace("metrics_listen = \"127.0.0.1:0\"\n", "");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, text).unwrap();
    let port = free_port();
    let mut child = spawn_server(&config, port, &dir.path().join("server.log"));
    let pid = child.id();
    let alice = connect(port).await;
    alice.list_models().await.unwrap();
    let before = open_fds(pid);

    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    // the client already connected is served meanwhile (it holds a slot)
    alice.list_models().await.unwrap();
    let peak = open_fds(pid);
    // every silent socket sees the server close it, within the timeout
    let mut closed_after = Vec::new();
    for s in &mut silent {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(TIMEOUT_SECS + 5), s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection stayed open"
        );
        closed_after.push(opened.elapsed());
    }
    let last = closed_after.iter().max().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = open_fds(pid);
    println!(
        "idle connections: {SILENT} opened, descriptors {before} -> {peak} -> {after}, \
         all closed by {:.2} s (timeout {TIMEOUT_SECS} s, cap 150)",
        last.as_secs_f64()
    );
    assert!(*last < Duration::from_secs(TIMEOUT_SECS + 3));
    assert!(
        peak <= before + 150 + 5,
        "the cap bounds descriptors: {peak}"
    );
    assert!(after <= before + 2, "descriptors back: {before} -> {after}");
    alice.list_models().await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}
