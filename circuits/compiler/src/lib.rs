//! The Blindfold compiler: ONNX model → graph IR → quantized network →
//! [`Circuit`](blindfold_runtime::circuit::Circuit), with width and
//! parameter-set selection and the compilation report. What runs a circuit
//! (parameter sets, keys, the program and its interpreters) is the runtime,
//! `blindfold-runtime`; the server and the client library need only that.

pub mod compile;
pub mod error;
pub mod ir;
pub mod manifest;
pub mod onnx;
pub mod pipeline;
pub mod quant;
pub mod select;

pub use error::{Error, Result};
