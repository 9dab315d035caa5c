//! Blindfold client library: key generation (the secret key never leaves
//! the client), encryption and decryption against a model's client spec,
//! and a typed async gRPC client ([`remote::Remote`]) including streaming
//! key upload. The `blindfold` CLI is built on it.

pub use blindfold_circuits::compile::ClientSpec;
pub use blindfold_circuits::eval::fhe::{
    Blob, ClientKey, CompressedEvaluationKey, EncryptedInput, EncryptedOutput,
};

pub mod audit;
pub mod bench;
pub mod crypto;
pub mod error;
pub mod keys;
pub mod remote;
pub mod select;
pub mod spec;

pub use error::ClientError;
pub use remote::{ConnectOptions, Remote};
