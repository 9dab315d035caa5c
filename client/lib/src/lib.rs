//! Blindfold client library: key generation (the secret key never leaves
//! the client), encryption and decryption against a model's client spec,
//! and a typed async gRPC client ([`remote::Remote`]) including streaming
//! key upload. The `blindfold` CLI (`blindfold-cli`) and the attack lab
//! (`blindfold-lab`) are built on it; it needs neither the compiler nor the lab.

pub use blindfold_runtime::ciphertext::{EncryptedInput, EncryptedOutput};
pub use blindfold_runtime::circuit::ClientSpec;
pub use blindfold_runtime::keys::{ClientKey, CompressedEvaluationKey};
pub use blindfold_runtime::serial::Bytes;

pub mod crypto;
pub mod error;
pub mod keys;
pub mod remote;
pub mod session;
pub mod spec;

pub use error::{ClientError, ErrorKind};
pub use remote::{ConnectOptions, Remote, DEFAULT_MAX_ANSWER_BYTES};
