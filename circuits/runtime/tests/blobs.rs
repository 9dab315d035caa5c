//! Keys and ciphertexts from bytes: size-limited, versioned, and checked
//! against the parameter set; malformed input is refused without a panic.

use blindfold_runtime::ciphertext::EncryptedInput;
use blindfold_runtime::keys::{ClientKey, CompressedEvaluationKey, EvaluationKey};
use blindfold_runtime::params::ParamSet;
use blindfold_runtime::serial::{Bytes, Conformant};

#[test]
fn malformed_blobs_are_refused() {
    let ck = ClientKey::generate(ParamSet::Message2Carry2);
    let key = ck.evaluation_key().to_bytes().unwrap();
    // garbage, truncated, wrong kind, wrong version, over the limit
    assert!(CompressedEvaluationKey::from_bytes(b"hello world, not a key", 1 << 30).is_err());
    for cut in [0, 5, 12, 40, key.len() / 2, key.len() - 1] {
        assert!(
            CompressedEvaluationKey::from_bytes(&key[..cut], 1 << 30).is_err(),
            "truncated at {cut}"
        );
    }
    assert!(EncryptedInput::from_bytes(&key, 1 << 30).is_err());
    // the header's serialization version (bincode: u64 length, then "0.5")
    let mut v2 = key.clone();
    assert_eq!(&v2[8..11], b"0.5");
    v2[10] = b'9';
    let err = CompressedEvaluationKey::from_bytes(&v2, 1 << 30)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("version"), "{err}");
    // trailing bytes after a valid key
    let mut longer = key.clone();
    longer.push(0);
    assert!(CompressedEvaluationKey::from_bytes(&longer, 1 << 30).is_err());
    assert!(CompressedEvaluationKey::from_bytes(&key, 1024).is_err());
    // a well-formed key for another parameter set is caught by conformance
    let other = ClientKey::generate(ParamSet::Message2Carry2).evaluation_key();
    let ok = CompressedEvaluationKey::from_bytes(&other.to_bytes().unwrap(), 1 << 30).unwrap();
    ok.check().unwrap();
    assert!(ok.conform(ParamSet::Message3Carry3).is_err());
    // flip the declared parameter set inside the blob: dimensions no longer conform
    let mut relabeled = CompressedEvaluationKey::from_bytes(&key, 1 << 30).unwrap();
    relabeled.params = ParamSet::Message3Carry3;
    assert!(relabeled.check().is_err());
    // and serialized so: refused when parsed
    let relabeled = relabeled.to_bytes().unwrap();
    let err = CompressedEvaluationKey::from_bytes(&relabeled, 1 << 30)
        .err()
        .unwrap();
    assert!(err.is_caller_fault(), "{err}");
}

/// The memory a server reserves before decompressing a key is the memory
/// the decompressed key occupies (one set with one PBS level, one with two).
#[test]
fn predicted_key_memory_is_the_decompressed_size() {
    for params in [ParamSet::Message2Carry2, ParamSet::Message2Carry3] {
        let key = ClientKey::generate(params).evaluation_key();
        let bytes = key.to_bytes().unwrap();
        let decompressed = EvaluationKey::from_upload(bytes, params, 1 << 30).unwrap();
        assert_eq!(
            decompressed.memory_bytes(),
            params.evaluation_key_memory_bytes(),
            "{}",
            params.short_name()
        );
        assert!(params.key_decompression_transient_bytes() > 0);
    }
}
