//! Typed errors of the compiler.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// The ONNX file could not be imported (its fault, or an unsupported op).
    #[error(transparent)]
    Import(#[from] crate::onnx::ImportError),
    #[error("shape error in op #{index} ({op}): {message}")]
    Shape {
        index: usize,
        op: &'static str,
        message: String,
    },
    #[error("input has {got} values, the model expects {expected}")]
    InputLength { expected: usize, got: usize },
    /// The dataset or manifest is unusable.
    #[error("data error: {0}")]
    Data(String),
    #[error("quantization error: {0}")]
    Quantize(String),
    #[error("compilation error: {0}")]
    Compile(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] blindfold_runtime::Error),
}
