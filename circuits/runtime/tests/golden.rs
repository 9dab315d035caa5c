//! Bytes written today must load tomorrow.
//!
//! `tests/golden/` holds files written by this release: a 2_2 client key
//! (current format and the release-0.1 legacy format), an encrypted input
//! under it, and a label answer of `digits-mlp-fast` to that input, with
//! `manifest.json` saying what they decode to. The 2_2 evaluation key
//! (30 MB) is not committed: it is regenerated from the golden client key
//! with a fixed seed and must hash to the committed SHA-256, so a change of
//! its byte format (or of its generation) fails here too.
//!
//! A deliberate format change adds a version to the type's `…Versions`
//! enum (see `blindfold_runtime::serial`) and keeps these files loading;
//! only then are new golden files written, next to the old ones:
//! `cargo test --release -p blindfold-runtime --test golden -- --ignored write_golden_files`.

use std::path::PathBuf;

use blindfold_runtime::answer::{Query, Reply, Responder};
use blindfold_runtime::ciphertext::{EncryptedInput, EncryptedOutput};
use blindfold_runtime::circuit::Circuit;
use blindfold_runtime::eval::never;
use blindfold_runtime::harden::{Hardened, Policy};
use blindfold_runtime::keys::{ClientKey, CompressedEvaluationKey};
use blindfold_runtime::params::ParamSet;
use blindfold_runtime::serial::{legacy_encode, Bytes, Conformant};
use sha2::{Digest, Sha256};
use tfhe::core_crypto::commons::generators::DeterministicSeeder;
use tfhe::core_crypto::commons::math::random::Seed;
use tfhe::core_crypto::prelude::DefaultRandomGenerator;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

const KEY_SEED: u128 = 0x0b11_7df0_1d00_0001;
const EVAL_SEED: u128 = 0x0b11_7df0_1d00_0002;

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    params: String,
    evaluation_key_sha256: String,
    evaluation_key_bytes: usize,
    /// The quantized input the encrypted input holds.
    input: Vec<i64>,
    /// The label answer decrypted under the golden key.
    answer: Vec<i64>,
}

fn golden_client_key() -> ClientKey {
    let mut seeder = DeterministicSeeder::<DefaultRandomGenerator>::new(Seed(KEY_SEED));
    ClientKey::generate_with(ParamSet::Message2Carry2, &mut seeder)
}

fn regenerated_evaluation_key(ck: &ClientKey) -> Vec<u8> {
    let mut seeder = DeterministicSeeder::<DefaultRandomGenerator>::new(Seed(EVAL_SEED));
    ck.evaluation_key_with(&mut seeder).to_bytes().unwrap()
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn label_model() -> Responder {
    let c = Circuit::load(&repo("models/digits-mlp-fast.circuit.json")).unwrap();
    Responder::new(Hardened::new("golden", vec![c], Policy::default()).unwrap())
}

#[test]
fn golden_bytes_still_load() {
    let manifest: Manifest =
        serde_json::from_slice(&read("manifest.json")).expect("golden manifest");
    let params = ParamSet::from_name(&manifest.params).unwrap();
    // the client key, current and legacy format: the same key
    let ck = ClientKey::from_bytes(&read("client-key-2_2.bin"), 1 << 20).unwrap();
    let legacy = ClientKey::from_stored(&read("client-key-2_2.legacy.bin"), 1 << 20).unwrap();
    assert_eq!(ck.params, params);
    assert_eq!(ck.to_bytes().unwrap(), legacy.to_bytes().unwrap());
    // the network never gets the legacy reader
    assert!(ClientKey::from_bytes(&read("client-key-2_2.legacy.bin"), 1 << 20).is_err());
    // the committed key is the one the seed gives (so the evaluation key
    // regenerated from it is the golden one)
    assert_eq!(
        ck.to_bytes().unwrap(),
        golden_client_key().to_bytes().unwrap()
    );
    let ek = regenerated_evaluation_key(&ck);
    assert_eq!(ek.len(), manifest.evaluation_key_bytes);
    assert_eq!(
        hex::encode(Sha256::digest(&ek)),
        manifest.evaluation_key_sha256,
        "the evaluation key's bytes changed"
    );
    let key = CompressedEvaluationKey::from_bytes(&ek, 1 << 30).unwrap();
    key.conform(params).unwrap();
    // the encrypted input and the answer
    let model = label_model();
    let spec = model.spec();
    let input = EncryptedInput::from_bytes(&read("encrypted-input-2_2.bin"), 1 << 20).unwrap();
    input
        .conform(params, spec.precision_bits, spec.input.len())
        .unwrap();
    let answer = EncryptedOutput::from_bytes(&read("label-answer-2_2.bin"), 1 << 20).unwrap();
    answer.check().unwrap();
    assert_eq!(ck.decrypt(spec, &answer).unwrap(), manifest.answer);
    // and the model still answers that input the same way, in the clear
    let (reply, _) = model
        .answer_with(Query::Clear(&manifest.input), &Default::default(), &never)
        .unwrap();
    match reply {
        Reply::Clear { values, .. } => assert_eq!(values, manifest.answer),
        Reply::Encrypted(_) => panic!("a clear query answered encrypted"),
    }
}

/// Writes the golden files (run by hand, see the module docs).
#[test]
#[ignore]
fn write_golden_files() {
    std::fs::create_dir_all(dir()).unwrap();
    let ck = golden_client_key();
    std::fs::write(dir().join("client-key-2_2.bin"), ck.to_bytes().unwrap()).unwrap();
    std::fs::write(
        dir().join("client-key-2_2.legacy.bin"),
        legacy_encode(&ck, "client-key").unwrap(),
    )
    .unwrap();
    let ek_bytes = regenerated_evaluation_key(&ck);
    let ek = CompressedEvaluationKey::from_bytes(&ek_bytes, 1 << 30)
        .unwrap()
        .decompress();
    let model = label_model();
    let spec = model.spec().clone();
    let c = &model.model().members[0];
    let ds = blindfold_runtime::data::Dataset::from_csv(&repo("data/digits.csv")).unwrap();
    let q = c.input.quantize(&ds.features[1347]).unwrap();
    let input = ck.encrypt(&spec, &q).unwrap();
    std::fs::write(
        dir().join("encrypted-input-2_2.bin"),
        input.to_bytes().unwrap(),
    )
    .unwrap();
    let (reply, _) = model
        .answer_with(
            Query::Encrypted {
                input: &input,
                key: &ek,
            },
            &Default::default(),
            &never,
        )
        .unwrap();
    let Reply::Encrypted(out) = reply else {
        panic!("an encrypted query answered in the clear")
    };
    std::fs::write(dir().join("label-answer-2_2.bin"), out.to_bytes().unwrap()).unwrap();
    let manifest = Manifest {
        params: ParamSet::Message2Carry2.name().into(),
        evaluation_key_sha256: hex::encode(Sha256::digest(&ek_bytes)),
        evaluation_key_bytes: ek_bytes.len(),
        input: q,
        answer: ck.decrypt(&spec, &out).unwrap(),
    };
    std::fs::write(
        dir().join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}
