//! Typed errors of the circuits crate.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    #[error("input has {got} values, the model expects {expected}")]
    InputLength { expected: usize, got: usize },
    #[error("data error: {0}")]
    Data(String),
    #[error("compilation error: {0}")]
    Compile(String),
    #[error("evaluation error: {0}")]
    Eval(String),
    #[error("evaluation cancelled")]
    Cancelled,
    #[error("circuit artifact error: {0}")]
    Artifact(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
