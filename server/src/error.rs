//! Typed errors of the server library.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("key store database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("key store i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key store: {0}")]
    Corrupt(String),
    /// Another server holds the data directory.
    #[error("{0}")]
    Locked(String),
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("model {name}: {source}")]
    Model {
        name: String,
        #[source]
        source: Box<blindfold_runtime::Error>,
    },
    #[error("tls: {0}")]
    Tls(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("internal: {0}")]
    Internal(String),
}

/// Why a request failed: the one error type of the gRPC handlers. The
/// whole mapping to gRPC status codes is `From<ServiceError> for Status`
/// below; handlers only say what went wrong.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// Missing, malformed or unknown credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// An unknown model, or a key not registered for this identity.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is malformed (ids, counts, stream framing).
    #[error("{0}")]
    InvalidArgument(String),
    /// What the client sent, as the runtime judged it (bytes that do not
    /// parse or conform, wrong feature counts or values); `context` names
    /// which part ("input 3").
    #[error("{context}: {source}")]
    Input {
        context: String,
        #[source]
        source: blindfold_runtime::Error,
    },
    /// A size, count or rate limit, or a full queue.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller's query or privacy budget for a model is spent:
    /// `RESOURCE_EXHAUSTED` with trailer `blindfold-error: budget-exhausted`,
    /// so clients can tell it from a full queue (which is worth a retry).
    #[error("{0}")]
    BudgetExhausted(String),
    /// A valid request that does not fit the state (a key of another
    /// parameter set than the model's).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Forbidden by the model's owner.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The caller went away and the work was abandoned.
    #[error("evaluation cancelled")]
    Cancelled,
    #[error("{0}")]
    Unavailable(String),
    /// The request stream itself failed; the transport's own status (e.g.
    /// `OUT_OF_RANGE` for a message over the size limit) is passed on.
    #[error("request stream: {}", .0.message())]
    Stream(tonic::Status),
    /// The server failed (storage, a bug): logged in full, reported to the
    /// client as "`context`: internal error".
    #[error("{context}: {message}")]
    Internal {
        context: &'static str,
        message: String,
    },
}

impl ServiceError {
    pub fn internal(context: &'static str, e: impl std::fmt::Display) -> Self {
        ServiceError::Internal {
            context,
            message: e.to_string(),
        }
    }

    /// A runtime error about the client's input `context`, or a server
    /// failure if the runtime says it was not the caller's fault.
    pub fn input(context: impl Into<String>, source: blindfold_runtime::Error) -> Self {
        match source {
            blindfold_runtime::Error::Cancelled => ServiceError::Cancelled,
            e if e.is_caller_fault() => ServiceError::Input {
                context: context.into(),
                source: e,
            },
            e => ServiceError::internal("evaluation", e),
        }
    }
}

impl ServiceError {
    /// The same error again, for one that several waiters share (a key
    /// load many requests waited for).
    pub fn shared(e: &ServiceError) -> Self {
        use ServiceError::*;
        match e {
            Unauthenticated(m) => Unauthenticated(m.clone()),
            NotFound(m) => NotFound(m.clone()),
            InvalidArgument(m) => InvalidArgument(m.clone()),
            Input { context, source } => InvalidArgument(format!("{context}: {source}")),
            ResourceExhausted(m) => ResourceExhausted(m.clone()),
            BudgetExhausted(m) => BudgetExhausted(m.clone()),
            FailedPrecondition(m) => FailedPrecondition(m.clone()),
            PermissionDenied(m) => PermissionDenied(m.clone()),
            DeadlineExceeded(m) => DeadlineExceeded(m.clone()),
            Cancelled => Cancelled,
            Unavailable(m) => Unavailable(m.clone()),
            Stream(s) => Stream(s.clone()),
            Internal { context, message } => Internal {
                context,
                message: message.clone(),
            },
        }
    }
}

impl From<blindfold_runtime::Error> for ServiceError {
    fn from(e: blindfold_runtime::Error) -> Self {
        ServiceError::input("request", e)
    }
}

/// What kind of storage fault an error is, for naming it to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No space left (or the quota is spent) on the data directory's disk.
    Full,
    /// Any other i/o failure of the disk: worth a retry.
    Io,
    /// Not a storage fault (corruption, a bug).
    Other,
}

/// Whether an i/o error means the disk or the quota is full.
pub fn io_fault(e: &std::io::Error) -> Fault {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    {
        Fault::Full
    } else {
        Fault::Io
    }
}

/// SQLite's view of the same: `SQLITE_FULL`, or an `SQLITE_IOERR`.
pub fn sqlite_fault(e: &rusqlite::Error) -> Fault {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Fault::Full,
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => Fault::Io,
        _ => Fault::Other,
    }
}

impl StoreError {
    pub fn fault(&self) -> Fault {
        match self {
            StoreError::Io { source, .. } => io_fault(source),
            StoreError::Db(e) => sqlite_fault(e),
            _ => Fault::Other,
        }
    }
}

impl crate::ledger::LedgerError {
    pub fn fault(&self) -> Fault {
        use crate::ledger::LedgerError;
        match self {
            LedgerError::Io { source, .. } => io_fault(source),
            LedgerError::Db(e) => sqlite_fault(e),
            _ => Fault::Other,
        }
    }
}

/// A storage error as the client hears it: a full disk is
/// `RESOURCE_EXHAUSTED` naming what is full, another i/o failure
/// `UNAVAILABLE` (retry), anything else internal. The operator's log gets
/// the path and the OS error.
fn storage_error(context: &'static str, fault: Fault, e: impl std::fmt::Display) -> ServiceError {
    match fault {
        Fault::Full => {
            tracing::warn!(context, error = %e, "storage full");
            ServiceError::ResourceExhausted(format!(
                "{context}: the server's disk is full (no space left in its data directory); \
                 delete keys you no longer need, or ask the operator to free space"
            ))
        }
        Fault::Io => {
            tracing::error!(context, error = %e, "storage i/o error");
            ServiceError::Unavailable(format!(
                "{context}: the server's storage failed an i/o operation; retry later"
            ))
        }
        Fault::Other => ServiceError::internal(context, e),
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        storage_error("key store", e.fault(), e)
    }
}

impl From<crate::ledger::LedgerError> for ServiceError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        storage_error("budget ledger", e.fault(), e)
    }
}

impl From<crate::cache::AdmissionError> for ServiceError {
    fn from(e: crate::cache::AdmissionError) -> Self {
        ServiceError::ResourceExhausted(e.to_string())
    }
}

impl From<crate::pool::PoolError> for ServiceError {
    fn from(e: crate::pool::PoolError) -> Self {
        use crate::pool::PoolError;
        match e {
            PoolError::QueueFull(_) => ServiceError::ResourceExhausted(e.to_string()),
            PoolError::Closed => ServiceError::Unavailable(e.to_string()),
            PoolError::Panicked => ServiceError::internal("compute pool", e),
        }
    }
}

/// Trailer naming the kind of an error where the status code alone is
/// ambiguous (see `proto/README.md`).
pub const ERROR_KIND_KEY: &str = "blindfold-error";
/// [`ERROR_KIND_KEY`]'s value for a spent budget.
pub const BUDGET_EXHAUSTED: &str = "budget-exhausted";

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        use tonic::Status;
        match e {
            ServiceError::Unauthenticated(m) => Status::unauthenticated(m),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::InvalidArgument(m) => Status::invalid_argument(m),
            e @ ServiceError::Input { .. } => Status::invalid_argument(e.to_string()),
            ServiceError::ResourceExhausted(m) => Status::resource_exhausted(m),
            ServiceError::BudgetExhausted(m) => {
                let mut meta = tonic::metadata::MetadataMap::new();
                meta.insert(
                    ERROR_KIND_KEY,
                    tonic::metadata::MetadataValue::from_static(BUDGET_EXHAUSTED),
                );
                Status::with_metadata(tonic::Code::ResourceExhausted, m, meta)
            }
            ServiceError::FailedPrecondition(m) => Status::failed_precondition(m),
            ServiceError::PermissionDenied(m) => Status::permission_denied(m),
            ServiceError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
            ServiceError::Cancelled => Status::cancelled("evaluation cancelled"),
            ServiceError::Unavailable(m) => Status::unavailable(m),
            ServiceError::Stream(status) => status,
            ServiceError::Internal { context, message } => {
                tracing::error!(context, error = %message, "internal error");
                Status::internal(format!("{context}: internal error"))
            }
        }
    }
}
