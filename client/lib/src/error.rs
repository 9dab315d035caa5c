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
    #[error("{method} failed: {} ({})", printable(.status.message()), code_name(.status.code()))]
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

/// What kind of failure an error is, for bindings that map each kind to
/// an exception class (Python, Node.js) and for callers deciding whether
/// a retry can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The address is malformed or the server cannot be reached.
    Connection,
    /// gRPC `INVALID_ARGUMENT` / `OUT_OF_RANGE`: the server refused the request.
    InvalidArgument,
    /// gRPC `NOT_FOUND`: no such model or key.
    NotFound,
    /// gRPC `UNAUTHENTICATED`: no token or an unknown one.
    Unauthenticated,
    /// gRPC `PERMISSION_DENIED`: forbidden by the model's owner or the
    /// key's owner.
    PermissionDenied,
    /// gRPC `RESOURCE_EXHAUSTED` with `blindfold-error: budget-exhausted`:
    /// the caller's budget for the model is spent (no retry helps).
    BudgetExhausted,
    /// gRPC `RESOURCE_EXHAUSTED` otherwise: a limit or a full queue.
    ResourceExhausted,
    /// gRPC `FAILED_PRECONDITION`: e.g. a key of another parameter set.
    FailedPrecondition,
    /// gRPC `UNAVAILABLE`: the server is shutting down or unreachable.
    Unavailable,
    /// gRPC `DEADLINE_EXCEEDED` / `CANCELLED`.
    DeadlineExceeded,
    /// gRPC `INTERNAL` and every other code: the server failed.
    Server,
    /// The server's answer or model spec failed the client's checks.
    InvalidAnswer,
    /// The caller's own input (rows, features) is unusable.
    InvalidInput,
    /// Keys missing, unreadable, or for another parameter set.
    Keys,
    /// A local file could not be read or written.
    Io,
    /// The client library itself failed (a bug).
    Internal,
}

impl ClientError {
    /// The kind of failure (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        use tonic::Code;
        match self {
            ClientError::Address { .. } | ClientError::Connect { .. } => ErrorKind::Connection,
            ClientError::Rpc { status, .. } => match status.code() {
                Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
                Code::NotFound => ErrorKind::NotFound,
                Code::Unauthenticated => ErrorKind::Unauthenticated,
                Code::PermissionDenied => ErrorKind::PermissionDenied,
                Code::ResourceExhausted if self.is_budget_exhausted() => ErrorKind::BudgetExhausted,
                Code::ResourceExhausted => ErrorKind::ResourceExhausted,
                Code::FailedPrecondition => ErrorKind::FailedPrecondition,
                Code::Unavailable => ErrorKind::Unavailable,
                Code::DeadlineExceeded | Code::Cancelled => ErrorKind::DeadlineExceeded,
                _ => ErrorKind::Server,
            },
            ClientError::Spec(_) | ClientError::Answer(_) => ErrorKind::InvalidAnswer,
            ClientError::Crypto(e) => {
                use blindfold_runtime::Error as E;
                match e {
                    E::InputLength { .. } | E::InputRange { .. } | E::Data(_) => {
                        ErrorKind::InvalidInput
                    }
                    // bytes from the server (answers, specs) that fail the checks
                    E::Decode { .. } | E::Conformance { .. } | E::Spec(_) | E::Policy(_) => {
                        ErrorKind::InvalidAnswer
                    }
                    E::Io { .. } => ErrorKind::Io,
                    E::Cancelled => ErrorKind::DeadlineExceeded,
                    E::Artifact(_) | E::Internal(_) => ErrorKind::Internal,
                }
            }
            ClientError::Io { .. } => ErrorKind::Io,
            ClientError::Keys(_) => ErrorKind::Keys,
            ClientError::Input(_) => ErrorKind::InvalidInput,
        }
    }

    /// Whether the server said the caller's budget is spent (trailer
    /// `blindfold-error: budget-exhausted` on `RESOURCE_EXHAUSTED`).
    pub fn is_budget_exhausted(&self) -> bool {
        match self {
            ClientError::Rpc { status, .. } => {
                status.code() == tonic::Code::ResourceExhausted
                    && status
                        .metadata()
                        .get("blindfold-error")
                        .is_some_and(|v| v.as_bytes() == b"budget-exhausted")
            }
            _ => false,
        }
    }

    /// The server's own message, made printable ([`printable`]), for
    /// errors the server returned.
    pub fn server_message(&self) -> Option<String> {
        match self {
            ClientError::Rpc { status, .. } => Some(printable(status.message())),
            _ => None,
        }
    }

    /// The gRPC status code name (`NOT_FOUND`…), for errors the server
    /// returned.
    pub fn code_name(&self) -> Option<String> {
        self.code().map(code_name)
    }

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

/// Text from a server, safe to print: control characters (terminal escape
/// sequences, carriage returns, newlines that could fake further output)
/// are shown escaped (`\u{1b}`), and the text is cut at 1,000 characters.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(1000));
    for (i, c) in text.chars().enumerate() {
        if i == 1000 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_printable() {
        let hostile = "no such model\u{1b}[2J\u{1b}]0;owned\u{7}\r\nrow 0: label 3";
        let e = ClientError::Rpc {
            method: "GetModel",
            status: tonic::Status::not_found(hostile),
        };
        let shown = e.to_string();
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.contains("\\u{1b}[2J"), "{shown}");
        assert_eq!(
            e.server_message().as_deref(),
            Some(printable(hostile).as_str())
        );
        let long = "x".repeat(5000);
        assert_eq!(printable(&long).chars().count(), 1001);
        assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
    }
}
