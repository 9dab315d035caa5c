//! Typed errors of the runtime. Each variant says whose fault it is:
//! [`Error::is_caller_fault`] is true when what the caller handed in (an
//! input, bytes, a spec, a data file) was wrong, false when the system
//! failed (its own artifacts, i/o, a bug) or the work was cancelled.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// An input with the wrong number of values.
    #[error("input has {got} values, the model expects {expected}")]
    InputLength { expected: usize, got: usize },
    /// A quantized input value outside the model's input range.
    #[error("quantized input {value} at position {index} is outside [0, {limit})")]
    InputRange {
        index: usize,
        value: i64,
        limit: i64,
    },
    /// Bytes that do not parse as a `kind` (malformed, wrong type or
    /// version, over the size limit).
    #[error("{kind}: {message}")]
    Decode { kind: &'static str, message: String },
    /// A well-formed `kind` that does not fit the parameter set, the model
    /// or the key it is used with.
    #[error("{kind} does not match: {message}")]
    Conformance { kind: &'static str, message: String },
    /// A model description from elsewhere (a server, a file) that cannot be
    /// right.
    #[error("invalid model spec: {0}")]
    Spec(String),
    /// Unusable user data (a CSV file, feature values, preprocessing).
    #[error("data error: {0}")]
    Data(String),
    /// A policy that does not fit its model (the owner's configuration).
    #[error("policy: {0}")]
    Policy(String),
    /// A circuit file that cannot be used (the operator's artifact).
    #[error("circuit artifact error: {0}")]
    Artifact(String),
    /// The caller stopped waiting.
    #[error("evaluation cancelled")]
    Cancelled,
    /// An invariant of this crate did not hold: a bug, never the caller's
    /// input.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the caller's input was at fault.
    pub fn is_caller_fault(&self) -> bool {
        matches!(
            self,
            Error::InputLength { .. }
                | Error::InputRange { .. }
                | Error::Decode { .. }
                | Error::Conformance { .. }
                | Error::Spec(_)
                | Error::Data(_)
        )
    }

    pub(crate) fn decode(kind: &'static str, message: impl Into<String>) -> Self {
        Error::Decode {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn conformance(kind: &'static str, message: impl Into<String>) -> Self {
        Error::Conformance {
            kind,
            message: message.into(),
        }
    }
}
