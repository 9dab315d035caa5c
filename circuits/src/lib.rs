//! Blindfold circuits: ONNX model → graph IR → quantized network → circuit,
//! and the two evaluators (clear and FHE) that run one circuit.

pub mod error;
pub mod ir;
pub mod onnx;

pub use error::{Error, Result};
