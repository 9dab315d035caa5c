//! Blindfold client library: key generation, encryption and decryption
//! against a compiled circuit. (The gRPC client comes with the service.)

pub use blindfold_circuits::eval::fhe::{
    Blob, ClientKey, CompressedEvaluationKey, EncryptedInput, EncryptedOutput,
};

pub mod bench;
pub mod select;
