//! Blindfold circuits: ONNX model → graph IR → quantized network → circuit,
//! and the two evaluators (clear and FHE) that run one circuit.

pub mod compile;
pub mod data;
pub mod dp;
pub mod error;
pub mod eval;
pub mod harden;
pub mod ir;
pub mod onnx;
pub mod params;
pub mod pipeline;
pub mod quant;

pub use error::{Error, Result};
