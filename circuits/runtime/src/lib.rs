//! The Blindfold runtime: everything both sides of an encrypted inference
//! need, and nothing of the compiler. In data-flow order:
//!
//! * [`params`]: the vetted tfhe-rs parameter sets and their noise model;
//! * [`circuit`], [`report`], [`quant_config`]: the compiled model
//!   artifact, its report, and the client's view of it ([`circuit::ClientSpec`]);
//! * [`keys`], [`ciphertext`], [`serial`]: keys and ciphertexts, in
//!   versioned, size-limited, conformance-checked bytes;
//! * [`policy`], [`harden`]: the owner's output policy, lowered with the
//!   model into one [`program::Program`] of bootstraps;
//! * [`eval`]: the scheduler and its two interpreters, clear and FHE;
//! * [`answer`]: the answer protocol every caller goes through;
//! * [`dp`]: the privacy accountant of PATE answers;
//! * [`data`]: datasets, preprocessing, size-limited reads.

pub mod answer;
pub mod ciphertext;
pub mod circuit;
pub mod data;
pub mod dp;
pub mod error;
pub mod eval;
pub mod harden;
pub mod keys;
pub mod params;
pub mod policy;
pub mod program;
pub mod quant_config;
pub mod report;
pub mod serial;

pub use error::{Error, Result};
