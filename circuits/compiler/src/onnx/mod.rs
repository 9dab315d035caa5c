//! ONNX import: decodes an `.onnx` file and lowers its graph to the
//! per-sample [`Graph`] IR.
//!
//! The importer accepts models that are a single chain of supported ops from
//! the one graph input to the one graph output (the *data path*), with
//! weights stored as initializers or `Constant` nodes. Shape arithmetic that
//! exporters emit for dynamic batch sizes (`Shape → Gather → Unsqueeze →
//! Concat → Reshape`) is folded at import time: every tensor name is tracked
//! either as the runtime data tensor or as a known constant, and `Shape` of
//! the data tensor yields `[batch, d1, d2, ...]` where `batch` is a symbolic
//! marker that a `Reshape` may use only as its leading (batch) entry.
//!
//! The graph input must be `[batch, ...]` with a symbolic or unit batch axis;
//! the IR drops that axis, so every IR shape is the shape of one sample.
//!
//! Supported ops are listed in one registry ([`supported_ops`]); see
//! `import.rs` for the exact semantics of each. Notable choices:
//!
//! * `Gemm` with `alpha != 1` or `beta != 1` folds the factors into the
//!   weight and bias (float results can differ in the last bit).
//!   `transA = 1` is rejected: the batch axis must stay first.
//! * `MatMul` by a constant `[in, out]` matrix becomes a Dense op with a
//!   zero bias; an `Add` of a constant right after it is folded into that
//!   bias (this is exact: `sum + 0 + b == sum + b`).
//! * `Add`/`Sub`/`Mul` with one constant operand become [`Op::Affine`];
//!   the constant is broadcast (numpy rules) to the per-sample shape and
//!   must not broadcast over the batch axis.
//! * `Softmax` is accepted only as the last op. It is monotone, so it never
//!   changes the argmax: the float evaluator applies it, while the FHE path
//!   drops it and compares logits.
//! * `Identity`, `Dropout` (inference mode; the mask output is not
//!   available) and `Cast` to float of the data tensor emit nothing.

mod import;
mod tensor;

pub mod builder;

/// Prost types for our ONNX reading subset (`circuits/proto/onnx.proto`).
/// Field numbers match the real ONNX schema, so they also encode models.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use std::io::Read;
use std::path::Path;

use prost::Message;

use crate::ir::Graph;

pub use import::supported_ops;

/// Largest model file the importer reads (64 MiB). Checked before decoding.
pub const MAX_MODEL_BYTES: u64 = 64 << 20;

/// Why an ONNX model could not be imported. Node references read like
/// `node #3 "fc1" (Gemm)`: the node's position in the graph, its name if it
/// has one, and its op type.
#[derive(thiserror::Error, Debug)]
pub enum ImportError {
    #[error("not a valid ONNX model: {0}")]
    Decode(String),
    #[error(
        "model file is {size} bytes, more than the {limit}-byte limit; Blindfold serves small \
         models only"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error("not a valid ONNX model: the model has no graph")]
    MissingGraph,
    #[error(
        "the graph has no input (besides initializers); expected one float input of shape \
         [batch, ...]"
    )]
    NoInput,
    #[error(
        "the graph has {} inputs ({}) besides initializers; only models with exactly one input \
         are supported",
        names.len(),
        names.join(", ")
    )]
    MultipleInputs { names: Vec<String> },
    #[error("graph input '{name}': {message}")]
    Input { name: String, message: String },
    #[error("graph output: {0}")]
    Output(String),
    #[error("{node} is not supported{detail}; supported ops: {supported}")]
    UnsupportedOp {
        node: String,
        op_type: String,
        /// Extra explanation, empty or starting with a space / punctuation.
        detail: String,
        supported: String,
    },
    #[error("{node}: unsupported attribute {attribute} = {value}: {reason}")]
    UnsupportedAttribute {
        node: String,
        attribute: String,
        value: String,
        reason: String,
    },
    #[error("{node}: {message}")]
    InvalidNode { node: String, message: String },
    #[error(
        "{node}: input '{input}' is not defined (not an initializer, graph input, Constant or \
         output of an earlier node)"
    )]
    UnknownTensor { node: String, input: String },
    #[error("{node}: missing required input #{index} ({what})")]
    MissingInput {
        node: String,
        index: usize,
        what: &'static str,
    },
    #[error("{node}: {what} '{input}' must be a constant (initializer or Constant), but it is computed from the model input")]
    NotConstant {
        node: String,
        input: String,
        what: &'static str,
    },
    #[error("{node}: {what} '{input}' has element type {dtype}; only float32 is supported")]
    NonFloat {
        node: String,
        input: String,
        what: &'static str,
        dtype: String,
    },
    #[error("{node}: cannot fold '{input}' at import time: {reason}")]
    CannotFold {
        node: String,
        input: String,
        reason: String,
    },
    #[error(
        "{node}: the data path branches ({message}); only single-chain graphs from the input to \
         the output are supported"
    )]
    Branching { node: String, message: String },
    #[error("{node}: shape error: {message}")]
    Shape { node: String, message: String },
    #[error("tensor '{name}': {message}")]
    BadTensor { name: String, message: String },
}

/// Reads and imports an ONNX file; the graph is named after the file stem.
/// Files larger than [`MAX_MODEL_BYTES`] are refused before being read.
pub fn import_onnx_file(path: &Path) -> Result<Graph, crate::Error> {
    let io_err = |source| crate::Error::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    if size > MAX_MODEL_BYTES {
        return Err(ImportError::TooLarge {
            size,
            limit: MAX_MODEL_BYTES,
        }
        .into());
    }
    // Bound the read too, in case the file grows while we read it.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_MODEL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string());
    Ok(import_onnx_bytes(&bytes, &name)?)
}

/// Imports an ONNX model from its serialized bytes; `name` becomes
/// [`Graph::name`].
pub fn import_onnx_bytes(bytes: &[u8], name: &str) -> Result<Graph, ImportError> {
    let size = bytes.len() as u64;
    if size > MAX_MODEL_BYTES {
        return Err(ImportError::TooLarge {
            size,
            limit: MAX_MODEL_BYTES,
        });
    }
    if bytes.is_empty() {
        return Err(ImportError::Decode("the input is empty".into()));
    }
    let model = proto::ModelProto::decode(bytes).map_err(|e| {
        ImportError::Decode(format!(
            "protobuf decoding failed ({e}); the file may be truncated or not an ONNX model"
        ))
    })?;
    import_model(&model, name)
}

/// Imports an already decoded model.
pub fn import_model(model: &proto::ModelProto, name: &str) -> Result<Graph, ImportError> {
    import::import(model, name)
}
