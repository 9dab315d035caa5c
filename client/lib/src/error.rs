//! Typed errors of the client library.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid server address {url:?}: {message}")]
    Address { url: String, message: String },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{method} failed: {} ({})", .status.message(), code_name(.status.code()))]
    Rpc {
        method: &'static str,
        #[source]
        status: tonic::Status,
    },
    #[error("the server sent an invalid model spec: {0}")]
    Spec(String),
    #[error("the server sent an invalid answer: {0}")]
    Answer(String),
    #[error(transparent)]
    Crypto(#[from] blindfold_runtime::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Keys(String),
    #[error("{0}")]
    Input(String),
}

impl ClientError {
    /// The gRPC status code, for errors the server returned.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ClientError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn code_name(code: tonic::Code) -> String {
    // e.g. NotFound -> NOT_FOUND, as gRPC documentation spells codes
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
