//! The Blindfold runtime: everything both sides of an encrypted inference
//! need, and nothing of the compiler.
//!
//! * [`params`]: the vetted tfhe-rs parameter sets and their noise model;
//! * [`circuit`]: the compiled model artifact and the client's view of it;
//! * [`harden`]: the owner's output policy compiled into circuit stages;
//! * [`eval`]: the clear and FHE evaluators, keys and ciphertexts;
//! * [`dp`]: the privacy accountant of PATE answers;
//! * [`data`]: datasets, preprocessing, size-limited reads.

pub mod circuit;
pub mod data;
pub mod dp;
pub mod error;
pub mod eval;
pub mod harden;
pub mod params;
pub mod quant_config;
pub mod report;

pub use error::{Error, Result};
