//! TLS (rustls): a server with a certificate, a client that trusts it.

use blindfold_client::{ConnectOptions, Remote};
use blindfold_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key_pem).unwrap();
    let extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let server = TestServer::start(config(&dir.path().join("data"), &extra)).await;
    let url = format!("https://{}", server.addr);
    let options = ConnectOptions {
        token: Some(ALICE.into()),
        ca_certificate: Some(cert_pem.into_bytes()),
        ..Default::default()
    };
    let client = Remote::connect(&url, options).await.expect("TLS connect");
    let models = client.list_models().await.expect("list over TLS");
    assert!(models.iter().any(|m| m.name == FAST));

    // a plaintext client gets nowhere
    let plain = Remote::connect(
        &server.url(),
        ConnectOptions {
            token: Some(ALICE.into()),
            ..Default::default()
        },
    )
    .await;
    let refused = match plain {
        Err(_) => true,
        Ok(c) => c.list_models().await.is_err(),
    };
    assert!(
        refused,
        "a plaintext client must not get answers from a TLS server"
    );
    // https without a CA to trust is refused by the client library
    let e = Remote::connect(&url, ConnectOptions::default()).await.err();
    assert!(e.is_some_and(|e| e.to_string().contains("CA certificate")));
    server.stop().await;
}
