//! The ONNX → IR lowering: value tracking, the op registry and one handler
//! per supported ONNX op.
//!
//! Nodes are visited in file order (ONNX requires topological order). Every
//! tensor name maps to a [`Value`]: the runtime data tensor (with its
//! per-sample shape) or a constant known at import time. Exactly one data
//! tensor is "live" at any time — the head of the chain; a node that reads
//! a data tensor someone else already read is a branch and is rejected.

use std::collections::HashMap;

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
};
use super::tensor::{self, BinOp, Const, Data, SymInt};
use super::ImportError;
use crate::ir::{Activation, Graph, Op, Tensor};

/// A handler lowers one node.
type Handler = fn(&mut Importer, &NodeCtx) -> Result<(), ImportError>;

/// The op registry: every supported ONNX op type and its handler. The list
/// of supported ops in error messages comes from here.
const OPS: &[(&str, Handler)] = &[
    ("Gemm", gemm),
    ("MatMul", matmul),
    ("Add", add),
    ("Sub", sub),
    ("Mul", mul),
    ("Relu", relu),
    ("Sigmoid", sigmoid),
    ("Tanh", tanh),
    ("Conv", conv),
    ("AveragePool", average_pool),
    ("Flatten", flatten),
    ("Reshape", reshape),
    ("Softmax", softmax),
    ("Identity", identity),
    ("Dropout", dropout),
    ("Constant", constant),
    ("Shape", shape),
    ("Gather", gather),
    ("Unsqueeze", unsqueeze),
    ("Squeeze", squeeze),
    ("Concat", concat),
    ("Cast", cast),
];

/// The ONNX op types the importer accepts (some only in restricted forms:
/// see the module documentation).
pub fn supported_ops() -> Vec<&'static str> {
    OPS.iter().map(|(name, _)| *name).collect()
}

fn supported_list() -> String {
    supported_ops().join(", ")
}

/// Largest kernel size, stride, pad or dilation accepted (guards the shape
/// arithmetic against absurd values in malformed files).
const MAX_WINDOW_PARAM: i64 = 1 << 16;

/// Largest per-sample input accepted (values).
const MAX_INPUT_LEN: usize = 1 << 24;

/// What a tensor name stands for during import.
enum Value {
    /// The runtime tensor; `shape` is per sample (batch axis removed).
    Data {
        shape: Vec<usize>,
    },
    Const(Const),
    /// A name that exists but cannot be used (e.g. Dropout's mask).
    Unavailable(String),
}

/// One node being lowered, with helpers for inputs, attributes and errors.
struct NodeCtx<'n> {
    node: &'n NodeProto,
    /// `node #3 "fc1" (Gemm)`.
    label: String,
}

impl<'n> NodeCtx<'n> {
    fn new(index: usize, node: &'n NodeProto) -> Self {
        let label = if node.name.is_empty() {
            format!("node #{index} ({})", node.op_type)
        } else {
            format!("node #{index} \"{}\" ({})", node.name, node.op_type)
        };
        Self { node, label }
    }

    fn op_type(&self) -> &str {
        &self.node.op_type
    }

    /// Input `i`, or `None` when absent or given as the empty name.
    fn input(&self, i: usize) -> Option<&'n str> {
        self.node
            .input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn required_input(&self, i: usize, what: &'static str) -> Result<&'n str, ImportError> {
        self.input(i).ok_or_else(|| ImportError::MissingInput {
            node: self.label.clone(),
            index: i,
            what,
        })
    }

    fn output(&self) -> Result<&'n str, ImportError> {
        self.node
            .output
            .first()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.invalid("the node has no output"))
    }

    fn invalid(&self, message: impl Into<String>) -> ImportError {
        ImportError::InvalidNode {
            node: self.label.clone(),
            message: message.into(),
        }
    }

    fn shape_err(&self, message: impl Into<String>) -> ImportError {
        ImportError::Shape {
            node: self.label.clone(),
            message: message.into(),
        }
    }

    fn unsupported(&self, detail: impl Into<String>) -> ImportError {
        ImportError::UnsupportedOp {
            node: self.label.clone(),
            op_type: self.node.op_type.clone(),
            detail: detail.into(),
            supported: supported_list(),
        }
    }

    fn unsupported_attr(&self, attribute: &str, value: impl ToString, reason: &str) -> ImportError {
        ImportError::UnsupportedAttribute {
            node: self.label.clone(),
            attribute: attribute.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    fn cannot_fold(&self, input: &str, reason: impl Into<String>) -> ImportError {
        ImportError::CannotFold {
            node: self.label.clone(),
            input: input.to_string(),
            reason: reason.into(),
        }
    }

    /// Rejects attributes the handler does not know: ignoring one could
    /// silently change the model's meaning.
    fn allow_attrs(&self, allowed: &[&str]) -> Result<(), ImportError> {
        for a in &self.node.attribute {
            if !allowed.contains(&a.name.as_str()) {
                let known = if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                };
                return Err(self.invalid(format!(
                    "unknown attribute '{}' (attributes understood for {}: {known})",
                    a.name,
                    self.op_type()
                )));
            }
        }
        Ok(())
    }

    fn attr(
        &self,
        name: &str,
        want: AttributeType,
    ) -> Result<Option<&'n AttributeProto>, ImportError> {
        let Some(a) = self.node.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        // IR version 1 files leave `type` unset; trust the field we read.
        if a.r#type != AttributeType::Undefined as i32 && a.r#type != want as i32 {
            let got = AttributeType::try_from(a.r#type)
                .map(|t| t.as_str_name().to_string())
                .unwrap_or_else(|_| a.r#type.to_string());
            return Err(self.invalid(format!(
                "attribute '{name}' has type {got}, expected {}",
                want.as_str_name()
            )));
        }
        Ok(Some(a))
    }

    fn attr_int(&self, name: &str, default: i64) -> Result<i64, ImportError> {
        Ok(self
            .attr(name, AttributeType::Int)?
            .map_or(default, |a| a.i))
    }

    fn attr_float(&self, name: &str, default: f32) -> Result<f32, ImportError> {
        Ok(self
            .attr(name, AttributeType::Float)?
            .map_or(default, |a| a.f))
    }

    fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>, ImportError> {
        Ok(self
            .attr(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    fn attr_string(&self, name: &str) -> Result<Option<String>, ImportError> {
        Ok(self
            .attr(name, AttributeType::String)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    /// An ints attribute of exactly `n` non-negative entries, or `default`.
    fn attr_usizes<const N: usize>(
        &self,
        name: &str,
        default: [usize; N],
        min: usize,
    ) -> Result<[usize; N], ImportError> {
        let Some(v) = self.attr_ints(name)? else {
            return Ok(default);
        };
        if v.len() != N {
            return Err(self.invalid(format!(
                "attribute '{name}' has {} entries, expected {N} (only 2-D is supported)",
                v.len()
            )));
        }
        let mut out = default;
        for (o, &x) in out.iter_mut().zip(&v) {
            if x > MAX_WINDOW_PARAM {
                return Err(self.invalid(format!(
                    "attribute '{name}' = {v:?} has an entry above {MAX_WINDOW_PARAM}"
                )));
            }
            *o = usize::try_from(x)
                .ok()
                .filter(|&x| x >= min)
                .ok_or_else(|| {
                    self.invalid(format!(
                        "attribute '{name}' = {v:?} has an entry below {min}"
                    ))
                })?;
        }
        Ok(out)
    }
}

/// Import state.
struct Importer {
    values: HashMap<String, Value>,
    /// Which node consumed each data tensor (to detect branches).
    consumed: HashMap<String, String>,
    ops: Vec<Op>,
    /// Name of the live data tensor.
    head: String,
    /// Default-domain opset version.
    opset: i64,
    /// The graph input's batch axis is the literal 1 (not symbolic).
    static_batch: bool,
    /// Label of the Softmax node once one was lowered.
    softmax: Option<String>,
}

pub(super) fn import(model: &ModelProto, name: &str) -> Result<Graph, ImportError> {
    let graph = model.graph.as_ref().ok_or(ImportError::MissingGraph)?;
    let opset = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(13);

    let mut values = HashMap::new();
    for init in &graph.initializer {
        let value = match Const::from_proto(init) {
            Ok(c) => Value::Const(c),
            Err(message) => {
                return Err(ImportError::BadTensor {
                    name: init.name.clone(),
                    message,
                })
            }
        };
        values.insert(init.name.clone(), value);
    }

    let (input_name, input_shape, static_batch) = graph_input(graph, &values)?;
    values.insert(
        input_name.clone(),
        Value::Data {
            shape: input_shape.clone(),
        },
    );

    let mut imp = Importer {
        values,
        consumed: HashMap::new(),
        ops: Vec::new(),
        head: input_name,
        opset,
        static_batch,
        softmax: None,
    };

    for (index, node) in graph.node.iter().enumerate() {
        let ctx = NodeCtx::new(index, node);
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(ctx.unsupported(format!(" (custom domain '{}')", node.domain)));
        }
        let handler = OPS
            .iter()
            .find(|(op, _)| *op == node.op_type)
            .map(|(_, h)| *h)
            .ok_or_else(|| ctx.unsupported(""))?;
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if imp.values.contains_key(out) {
                return Err(ctx.invalid(format!("output '{out}' is already defined")));
            }
        }
        handler(&mut imp, &ctx)?;
    }

    imp.finish(graph)?;
    Ok(Graph {
        name: name.to_string(),
        input_shape,
        ops: imp.ops,
    })
}

/// Finds the one graph input that is not an initializer and returns its
/// name, per-sample shape, and whether its batch axis is the literal 1.
fn graph_input(
    graph: &GraphProto,
    values: &HashMap<String, Value>,
) -> Result<(String, Vec<usize>, bool), ImportError> {
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !values.contains_key(&i.name))
        .collect();
    let input = match inputs[..] {
        [] => return Err(ImportError::NoInput),
        [one] => one,
        _ => {
            return Err(ImportError::MultipleInputs {
                names: inputs.iter().map(|i| i.name.clone()).collect(),
            })
        }
    };
    let err = |message: String| ImportError::Input {
        name: input.name.clone(),
        message,
    };
    let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        None => return Err(err("the input has no tensor type".into())),
    };
    if tensor_type.elem_type != DataType::Float as i32 {
        return Err(err(format!(
            "element type is {}, only float32 inputs are supported",
            tensor::dtype_name(tensor_type.elem_type)
        )));
    }
    let dims = tensor_type
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .ok_or_else(|| err("the input has no shape; expected [batch, ...]".into()))?;
    let Some((batch, rest)) = dims.split_first() else {
        return Err(err(
            "the input is a scalar; expected a shape [batch, ...] with a leading batch axis".into(),
        ));
    };
    if rest.is_empty() {
        return Err(err(
            "the input has rank 1; expected [batch, features...] with a leading batch axis".into(),
        ));
    }
    let static_batch = match &batch.value {
        Some(dimension::Value::DimValue(1)) => true,
        Some(dimension::Value::DimValue(v)) => {
            return Err(err(format!(
                "the batch axis (axis 0) has the fixed size {v}; it must be symbolic or 1"
            )))
        }
        Some(dimension::Value::DimParam(_)) | None => false,
    };
    let mut shape = Vec::with_capacity(rest.len());
    for (axis, d) in rest.iter().enumerate() {
        match &d.value {
            Some(dimension::Value::DimValue(v)) if *v > 0 => shape.push(*v as usize),
            Some(dimension::Value::DimValue(v)) => {
                return Err(err(format!("axis {} has invalid size {v}", axis + 1)))
            }
            Some(dimension::Value::DimParam(p)) => {
                return Err(err(format!(
                    "axis {} has the symbolic size '{p}'; only the batch axis (axis 0) may be \
                     dynamic",
                    axis + 1
                )))
            }
            None => {
                return Err(err(format!(
                    "axis {} has an unknown size; only the batch axis may be dynamic",
                    axis + 1
                )))
            }
        }
    }
    match tensor::element_count(&shape) {
        Some(n) if n <= MAX_INPUT_LEN => {}
        _ => {
            return Err(err(format!(
                "per-sample shape {shape:?} has more than {MAX_INPUT_LEN} values"
            )))
        }
    }
    Ok((input.name.clone(), shape, static_batch))
}

/// A float32 constant as (dims, values).
type FloatConst = (Vec<usize>, Vec<f32>);

/// How a node's input resolved.
enum Operand<'a> {
    Data(Vec<usize>),
    Const(&'a Const),
}

impl Importer {
    fn value(&self, ctx: &NodeCtx, name: &str) -> Result<&Value, ImportError> {
        match self.values.get(name) {
            Some(Value::Unavailable(why)) => {
                Err(ctx.invalid(format!("input '{name}' cannot be used: {why}")))
            }
            Some(v) => Ok(v),
            None => Err(ImportError::UnknownTensor {
                node: ctx.label.clone(),
                input: name.to_string(),
            }),
        }
    }

    fn operand(&self, ctx: &NodeCtx, name: &str) -> Result<Operand<'_>, ImportError> {
        match self.value(ctx, name)? {
            Value::Data { shape } => Ok(Operand::Data(shape.clone())),
            Value::Const(c) => Ok(Operand::Const(c)),
            Value::Unavailable(_) => Err(ctx.invalid(format!("input '{name}' cannot be used"))),
        }
    }

    /// A required constant input.
    fn const_input(
        &self,
        ctx: &NodeCtx,
        i: usize,
        what: &'static str,
    ) -> Result<&Const, ImportError> {
        let name = ctx.required_input(i, what)?;
        match self.operand(ctx, name)? {
            Operand::Const(c) => Ok(c),
            Operand::Data(_) => Err(ImportError::NotConstant {
                node: ctx.label.clone(),
                input: name.to_string(),
                what,
            }),
        }
    }

    /// A constant float32 input: (dims, values).
    fn float_input(
        &self,
        ctx: &NodeCtx,
        i: usize,
        what: &'static str,
    ) -> Result<FloatConst, ImportError> {
        let c = self.const_input(ctx, i, what)?;
        as_float(ctx, c, ctx.required_input(i, what)?, what)
    }

    /// An optional constant float32 input.
    fn opt_float_input(
        &self,
        ctx: &NodeCtx,
        i: usize,
        what: &'static str,
    ) -> Result<Option<FloatConst>, ImportError> {
        match ctx.input(i) {
            Some(_) => self.float_input(ctx, i, what).map(Some),
            None => Ok(None),
        }
    }

    /// A constant integer input whose values are all known.
    fn ints_input(
        &self,
        ctx: &NodeCtx,
        i: usize,
        what: &'static str,
    ) -> Result<Vec<i64>, ImportError> {
        let name = ctx.required_input(i, what)?;
        self.const_input(ctx, i, what)?
            .known_ints()
            .map_err(|reason| ctx.cannot_fold(name, reason))
    }

    /// Reads data input `i` of `ctx`, marking it consumed; fails on a
    /// second consumer (a branch). Returns its per-sample shape.
    fn take_data(&mut self, ctx: &NodeCtx, name: &str) -> Result<Vec<usize>, ImportError> {
        let shape = match self.value(ctx, name)? {
            Value::Data { shape } => shape.clone(),
            _ => return Err(ctx.invalid(format!("input '{name}' is not the data tensor"))),
        };
        if let Some(prev) = self.consumed.get(name) {
            return Err(ImportError::Branching {
                node: ctx.label.clone(),
                message: format!("tensor '{name}' is already used by {prev}"),
            });
        }
        if name != self.head {
            // Unreachable by construction (one unconsumed data tensor at a
            // time), but report it rather than build a wrong chain.
            return Err(ImportError::Branching {
                node: ctx.label.clone(),
                message: format!(
                    "tensor '{name}' is not the end of the data path '{}'",
                    self.head
                ),
            });
        }
        self.consumed.insert(name.to_string(), ctx.label.clone());
        Ok(shape)
    }

    /// Appends `op`, applied to data input `in_name`, producing the node's
    /// first output.
    fn emit(&mut self, ctx: &NodeCtx, in_name: &str, op: Op) -> Result<(), ImportError> {
        let in_shape = self.take_data(ctx, in_name)?;
        self.push(ctx, &in_shape, op)
    }

    /// Appends `op` on an already consumed input of shape `in_shape`.
    fn push(&mut self, ctx: &NodeCtx, in_shape: &[usize], op: Op) -> Result<(), ImportError> {
        if let Some(sm) = &self.softmax {
            return Err(ctx.invalid(format!(
                "Softmax is only supported as the last op of the model, but this node follows \
                 {sm}"
            )));
        }
        let shape = op.out_shape(in_shape).map_err(|m| ctx.shape_err(m))?;
        self.ops.push(op);
        self.define_data(ctx, shape)
    }

    /// Defines the node's first output as the new data tensor.
    fn define_data(&mut self, ctx: &NodeCtx, shape: Vec<usize>) -> Result<(), ImportError> {
        let out = ctx.output()?;
        self.values.insert(out.to_string(), Value::Data { shape });
        self.head = out.to_string();
        Ok(())
    }

    fn define_const(&mut self, ctx: &NodeCtx, c: Const) -> Result<(), ImportError> {
        let out = ctx.output()?;
        self.values.insert(out.to_string(), Value::Const(c));
        Ok(())
    }

    /// Forwards input 0 to output 0 unchanged (data or constant).
    fn pass_through(&mut self, ctx: &NodeCtx) -> Result<(), ImportError> {
        let name = ctx.required_input(0, "input")?;
        match self.operand(ctx, name)? {
            Operand::Const(c) => {
                let c = c.clone();
                self.define_const(ctx, c)
            }
            Operand::Data(_) => {
                let shape = self.take_data(ctx, name)?;
                self.define_data(ctx, shape)
            }
        }
    }

    fn finish(&self, graph: &GraphProto) -> Result<(), ImportError> {
        let out = match &graph.output[..] {
            [one] => &one.name,
            outs => {
                return Err(ImportError::Output(format!(
                    "the graph has {} outputs; exactly one is supported",
                    outs.len()
                )))
            }
        };
        match self.values.get(out) {
            Some(Value::Data { .. }) if *out == self.head => Ok(()),
            Some(Value::Data { .. }) => Err(ImportError::Output(format!(
                "'{out}' is not the end of the data path (the last op writes '{}')",
                self.head
            ))),
            Some(_) => Err(ImportError::Output(format!(
                "'{out}' does not depend on the model input"
            ))),
            None => Err(ImportError::Output(format!(
                "'{out}' is not produced by any node"
            ))),
        }
    }
}

fn as_float(
    ctx: &NodeCtx,
    c: &Const,
    name: &str,
    what: &'static str,
) -> Result<FloatConst, ImportError> {
    match &c.data {
        Data::F32(v) => Ok((c.dims.clone(), v.clone())),
        _ => Err(ImportError::NonFloat {
            node: ctx.label.clone(),
            input: name.to_string(),
            what,
            dtype: tensor::dtype_name(c.dtype),
        }),
    }
}

/// Broadcasts a constant to the per-sample shape of a data tensor whose
/// full shape is `[batch, ...shape]`; the constant may not expand the data.
fn broadcast_to_sample(
    ctx: &NodeCtx,
    dims: &[usize],
    values: &[f32],
    shape: &[usize],
) -> Result<Vec<f32>, ImportError> {
    let mut full = vec![1];
    full.extend_from_slice(shape);
    tensor::expand(values, dims, &full).ok_or_else(|| {
        ctx.shape_err(format!(
            "constant of shape {dims:?} does not broadcast to the data shape [batch, {}] \
             without changing it",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

// ---------------------------------------------------------------- handlers

/// Gemm: `Y = alpha * A' B' + beta * C` with A the data tensor.
fn gemm(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["alpha", "beta", "transA", "transB"])?;
    let alpha = ctx.attr_float("alpha", 1.0)?;
    let beta = ctx.attr_float("beta", 1.0)?;
    let trans_a = ctx.attr_int("transA", 0)?;
    let trans_b = ctx.attr_int("transB", 0)?;
    if trans_a != 0 {
        return Err(ctx.unsupported_attr(
            "transA",
            trans_a,
            "the first operand must be the [batch, in] data tensor, not transposed",
        ));
    }
    if !matches!(trans_b, 0 | 1) {
        return Err(ctx.invalid(format!("transB = {trans_b}, expected 0 or 1")));
    }
    let a = ctx.required_input(0, "A (data)")?;
    let in_shape = match imp.operand(ctx, a)? {
        Operand::Data(shape) => shape,
        Operand::Const(_) => {
            return Err(ctx.unsupported(
                " with a constant first operand (the first operand must be the data tensor)",
            ))
        }
    };
    let (b_dims, b) = imp.float_input(ctx, 1, "weight B")?;
    let [r, c] = b_dims[..] else {
        return Err(ctx.shape_err(format!("weight B must be 2-D, got shape {b_dims:?}")));
    };
    let (n, k) = if trans_b == 1 { (r, c) } else { (c, r) };
    if in_shape != [k] {
        return Err(ctx.shape_err(format!(
            "data input has per-sample shape {in_shape:?}, the weight expects [{k}]"
        )));
    }
    let mut weight = if trans_b == 1 { b } else { transpose(&b, r, c) };
    if alpha != 1.0 {
        weight.iter_mut().for_each(|w| *w *= alpha);
    }
    let mut bias = match imp.opt_float_input(ctx, 2, "bias C")? {
        Some((dims, values)) => tensor::expand(&values, &dims, &[1, n]).ok_or_else(|| {
            ctx.shape_err(format!(
                "bias C of shape {dims:?} does not broadcast to [1, {n}] (per-sample bias)"
            ))
        })?,
        None => vec![0.0; n],
    };
    if beta != 1.0 {
        bias.iter_mut().for_each(|b| *b *= beta);
    }
    imp.emit(
        ctx,
        a,
        Op::Dense {
            weight: Tensor::new(vec![n, k], weight),
            bias,
        },
    )
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = Vec::with_capacity(m.len());
    for c in 0..cols {
        for r in 0..rows {
            t.push(m[r * cols + c]);
        }
    }
    t
}

/// MatMul of the data vector by a constant `[in, out]` matrix.
fn matmul(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&[])?;
    let a = ctx.required_input(0, "A (data)")?;
    let in_shape = match imp.operand(ctx, a)? {
        Operand::Data(shape) => shape,
        Operand::Const(_) => {
            return Err(ctx.unsupported(
                " with the data tensor as the right operand or with two constants (only \
                 data × constant matrix is supported)",
            ))
        }
    };
    let (b_dims, b) = imp.float_input(ctx, 1, "weight B")?;
    let [k, n] = b_dims[..] else {
        return Err(ctx.shape_err(format!(
            "the constant right operand must be a 2-D [in, out] matrix, got shape {b_dims:?}"
        )));
    };
    if in_shape != [k] {
        return Err(ctx.shape_err(format!(
            "data input has per-sample shape {in_shape:?}, the weight expects [{k}] (MatMul on \
             per-sample tensors of rank > 1 is not supported)"
        )));
    }
    imp.emit(
        ctx,
        a,
        Op::Dense {
            weight: Tensor::new(vec![n, k], transpose(&b, k, n)),
            bias: vec![0.0; n],
        },
    )
}

fn add(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    binary(imp, ctx, BinOp::Add)
}

fn sub(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    binary(imp, ctx, BinOp::Sub)
}

fn mul(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    binary(imp, ctx, BinOp::Mul)
}

/// Add/Sub/Mul: constant folding, or an Affine op when one side is data.
fn binary(imp: &mut Importer, ctx: &NodeCtx, op: BinOp) -> Result<(), ImportError> {
    ctx.allow_attrs(&[])?;
    let a = ctx.required_input(0, "A")?;
    let b = ctx.required_input(1, "B")?;
    let (data_name, data_first, shape, (c_dims, c)) =
        match (imp.operand(ctx, a)?, imp.operand(ctx, b)?) {
            (Operand::Const(x), Operand::Const(y)) => {
                let folded = tensor::binary(op, x, y).map_err(|r| ctx.cannot_fold(a, r))?;
                return imp.define_const(ctx, folded);
            }
            (Operand::Data(_), Operand::Data(_)) => {
                return Err(ImportError::Branching {
                    node: ctx.label.clone(),
                    message: format!(
                        "it combines two runtime tensors '{a}' and '{b}', e.g. a residual \
                         connection"
                    ),
                })
            }
            (Operand::Data(shape), Operand::Const(c)) => {
                (a, true, shape, as_float(ctx, c, b, "constant operand")?)
            }
            (Operand::Const(c), Operand::Data(shape)) => {
                (b, false, shape, as_float(ctx, c, a, "constant operand")?)
            }
        };
    let c = broadcast_to_sample(ctx, &c_dims, &c, &shape)?;
    let n = c.len();
    let (scale, shift) = match (op, data_first) {
        (BinOp::Add, _) => (vec![1.0; n], c),
        (BinOp::Sub, true) => (vec![1.0; n], c.iter().map(|v| -v).collect()),
        (BinOp::Sub, false) => (vec![-1.0; n], c),
        (BinOp::Mul, _) => (c, vec![0.0; n]),
    };

    // `Dense` (zero bias) followed by `+ constant`: fold into the bias.
    // Exact, since `sum + 0 + b == sum + b`.
    let foldable = imp.softmax.is_none()
        && scale.iter().all(|&s| s == 1.0)
        && matches!(imp.ops.last(), Some(Op::Dense { bias, .. }) if bias.iter().all(|&b| b == 0.0));
    if foldable {
        imp.take_data(ctx, data_name)?;
        if let Some(Op::Dense { bias, .. }) = imp.ops.last_mut() {
            *bias = shift;
        }
        return imp.define_data(ctx, shape);
    }
    imp.emit(ctx, data_name, Op::Affine { scale, shift })
}

fn activation(imp: &mut Importer, ctx: &NodeCtx, act: Activation) -> Result<(), ImportError> {
    ctx.allow_attrs(&[])?;
    let x = ctx.required_input(0, "X")?;
    if let Operand::Const(_) = imp.operand(ctx, x)? {
        return Err(ctx.cannot_fold(x, "activations of constants are not folded"));
    }
    imp.emit(ctx, x, Op::Activation(act))
}

fn relu(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    activation(imp, ctx, Activation::Relu)
}

fn sigmoid(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    activation(imp, ctx, Activation::Sigmoid)
}

fn tanh(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    activation(imp, ctx, Activation::Tanh)
}

/// Checks `auto_pad` (only explicit padding) and returns whether it was
/// `VALID` (no padding).
fn check_auto_pad(ctx: &NodeCtx) -> Result<bool, ImportError> {
    match ctx.attr_string("auto_pad")?.as_deref() {
        None | Some("") | Some("NOTSET") => Ok(false),
        Some("VALID") => Ok(true),
        Some(other) => Err(ctx.unsupported_attr(
            "auto_pad",
            other,
            "only NOTSET (explicit `pads`) or VALID is supported; re-export with explicit \
             padding",
        )),
    }
}

fn conv(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&[
        "auto_pad",
        "dilations",
        "group",
        "kernel_shape",
        "pads",
        "strides",
    ])?;
    let group = ctx.attr_int("group", 1)?;
    if group != 1 {
        return Err(ctx.unsupported_attr(
            "group",
            group,
            "only group = 1 convolutions are supported (no grouped or depthwise convolutions)",
        ));
    }
    let valid = check_auto_pad(ctx)?;
    let x = ctx.required_input(0, "X (data)")?;
    if let Operand::Const(_) = imp.operand(ctx, x)? {
        return Err(ctx.unsupported(" on a constant input (the input must be the data tensor)"));
    }
    let (w_dims, w) = imp.float_input(ctx, 1, "weight W")?;
    if w_dims.len() != 4 {
        return Err(ctx.unsupported(format!(
            " with a weight of shape {w_dims:?}: only 2-D convolutions ([C_out, C_in, kH, kW] \
             weights) are supported"
        )));
    }
    if let Some(ks) = ctx.attr_ints("kernel_shape")? {
        if ks.len() != 2 || ks[0] != w_dims[2] as i64 || ks[1] != w_dims[3] as i64 {
            return Err(ctx.invalid(format!(
                "kernel_shape {ks:?} does not match the weight shape {w_dims:?}"
            )));
        }
    }
    let stride = ctx.attr_usizes("strides", [1, 1], 1)?;
    let dilation = ctx.attr_usizes("dilations", [1, 1], 1)?;
    let pads = ctx.attr_usizes("pads", [0; 4], 0)?;
    if valid && pads != [0; 4] {
        return Err(ctx.invalid("auto_pad = VALID together with non-zero pads"));
    }
    let c_out = w_dims[0];
    let bias = match imp.opt_float_input(ctx, 2, "bias B")? {
        Some((dims, b)) if dims == [c_out] => b,
        Some((dims, _)) => {
            return Err(ctx.shape_err(format!("bias has shape {dims:?}, expected [{c_out}]")))
        }
        None => vec![0.0; c_out],
    };
    imp.emit(
        ctx,
        x,
        Op::Conv2d {
            weight: Tensor::new(w_dims, w),
            bias,
            stride,
            pads,
            dilation,
        },
    )
}

fn average_pool(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&[
        "auto_pad",
        "ceil_mode",
        "count_include_pad",
        "dilations",
        "kernel_shape",
        "pads",
        "strides",
    ])?;
    let valid = check_auto_pad(ctx)?;
    let ceil_mode = ctx.attr_int("ceil_mode", 0)?;
    if ceil_mode != 0 {
        return Err(ctx.unsupported_attr(
            "ceil_mode",
            ceil_mode,
            "only ceil_mode = 0 (floor) is supported",
        ));
    }
    if let Some(d) = ctx.attr_ints("dilations")? {
        if d.iter().any(|&v| v != 1) {
            return Err(ctx.unsupported_attr(
                "dilations",
                format!("{d:?}"),
                "dilated pooling is not supported",
            ));
        }
    }
    let count_include_pad = match ctx.attr_int("count_include_pad", 0)? {
        0 => false,
        1 => true,
        v => return Err(ctx.invalid(format!("count_include_pad = {v}, expected 0 or 1"))),
    };
    let kernel = match ctx.attr_ints("kernel_shape")? {
        Some(k) if k.len() == 2 => ctx.attr_usizes("kernel_shape", [1, 1], 1)?,
        Some(k) => {
            return Err(ctx.unsupported(format!(
                " with kernel_shape {k:?}: only 2-D pooling is supported"
            )))
        }
        None => return Err(ctx.invalid("the required attribute kernel_shape is missing")),
    };
    let stride = ctx.attr_usizes("strides", [1, 1], 1)?;
    let pads = ctx.attr_usizes("pads", [0; 4], 0)?;
    if valid && pads != [0; 4] {
        return Err(ctx.invalid("auto_pad = VALID together with non-zero pads"));
    }
    let x = ctx.required_input(0, "X (data)")?;
    if let Operand::Const(_) = imp.operand(ctx, x)? {
        return Err(ctx.unsupported(" on a constant input (the input must be the data tensor)"));
    }
    imp.emit(
        ctx,
        x,
        Op::AvgPool2d {
            kernel,
            stride,
            pads,
            count_include_pad,
        },
    )
}

fn flatten(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["axis"])?;
    let axis = ctx.attr_int("axis", 1)?;
    let x = ctx.required_input(0, "input")?;
    match imp.operand(ctx, x)? {
        Operand::Const(c) => {
            let rank = c.dims.len();
            let a = if axis < 0 { axis + rank as i64 } else { axis };
            let a = usize::try_from(a)
                .ok()
                .filter(|&a| a <= rank)
                .ok_or_else(|| ctx.invalid(format!("axis {axis} is out of range")))?;
            let mut c = c.clone();
            c.dims = vec![c.dims[..a].iter().product(), c.dims[a..].iter().product()];
            imp.define_const(ctx, c)
        }
        Operand::Data(shape) => {
            // Full shape is [batch, ...shape]; Flatten(axis) gives
            // [prod(full[..axis]), prod(full[axis..])].
            let rank = shape.len() + 1;
            let a = if axis < 0 { axis + rank as i64 } else { axis };
            let a = usize::try_from(a)
                .ok()
                .filter(|&a| a <= rank)
                .ok_or_else(|| {
                    ctx.invalid(format!("axis {axis} is out of range for rank {rank}"))
                })?;
            if a == 0 || shape[..a - 1].iter().product::<usize>() != 1 {
                return Err(ctx.unsupported_attr(
                    "axis",
                    axis,
                    "it would merge the batch axis with feature axes; only axis = 1 is \
                     supported",
                ));
            }
            let len = shape.iter().product();
            imp.emit(ctx, x, Op::Reshape { shape: vec![len] })
        }
    }
}

fn reshape(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["allowzero"])?;
    let allowzero = ctx.attr_int("allowzero", 0)? != 0;
    let x = ctx.required_input(0, "data")?;
    let s = ctx.required_input(1, "shape")?;
    let target = match imp.operand(ctx, s)? {
        Operand::Const(c) => match &c.data {
            Data::Int(v) => v.clone(),
            _ => return Err(ctx.invalid(format!("shape '{s}' is not an integer tensor"))),
        },
        Operand::Data(_) => {
            return Err(ctx.cannot_fold(
                s,
                "the target shape is computed from the data values, not from shapes",
            ))
        }
    };
    if allowzero && target.contains(&SymInt::Lit(0)) {
        return Err(ctx.unsupported_attr(
            "allowzero",
            1,
            "zero-sized dimensions are not supported",
        ));
    }
    match imp.operand(ctx, x)? {
        Operand::Const(c) => {
            let mut ints = Vec::with_capacity(target.len());
            for t in &target {
                match t {
                    SymInt::Lit(v) => ints.push(*v),
                    SymInt::Batch => {
                        return Err(
                            ctx.cannot_fold(s, "a constant cannot be reshaped by the batch size")
                        )
                    }
                }
            }
            let dims = resolve_shape(&c.dims, &ints).map_err(|m| ctx.shape_err(m))?;
            let mut c = c.clone();
            c.dims = dims;
            imp.define_const(ctx, c)
        }
        Operand::Data(shape) => {
            let out =
                reshape_data(imp.static_batch, &shape, &target).map_err(|m| ctx.shape_err(m))?;
            imp.emit(ctx, x, Op::Reshape { shape: out })
        }
    }
}

/// ONNX Reshape on known dims: `0` copies the input dim, one `-1` is
/// inferred.
fn resolve_shape(dims: &[usize], target: &[i64]) -> Result<Vec<usize>, String> {
    let total: usize = dims.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            0 => {
                out.push(*dims.get(i).ok_or_else(|| {
                    format!("entry {i} is 0 but the input has rank {}", dims.len())
                })?)
            }
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            -1 => return Err("more than one -1 in the target shape".into()),
            t if t > 0 => out.push(t as usize),
            t => return Err(format!("invalid target dimension {t}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || (total / known) * known != total {
            return Err(format!("cannot infer -1 reshaping {dims:?} to {target:?}"));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {dims:?} to {target:?}"));
    }
    Ok(out)
}

/// Reshape of the data tensor (per-sample `shape`) to `target`, whose
/// first entry must denote the batch axis; returns the per-sample shape.
fn reshape_data(
    static_batch: bool,
    shape: &[usize],
    target: &[SymInt],
) -> Result<Vec<usize>, String> {
    let total: usize = shape.iter().product();
    let Some((lead, rest)) = target.split_first() else {
        return Err("the target shape is empty; the batch axis must stay first".into());
    };
    let mut rest_ints = Vec::with_capacity(rest.len());
    for t in rest {
        match t {
            SymInt::Lit(v) => rest_ints.push(*v),
            SymInt::Batch => {
                return Err(
                    "the batch size appears in a non-leading entry of the target shape".into(),
                )
            }
        }
    }
    // Per-sample dims for `0` entries: full axis i+1 ↔ per-sample axis i.
    let per_sample_target: Vec<i64> = rest_ints.clone();
    let explain = || {
        format!(
            "target shape [{}] does not keep the batch axis first (per-sample shape {shape:?})",
            target
                .iter()
                .map(|t| match t {
                    SymInt::Lit(v) => v.to_string(),
                    SymInt::Batch => "batch".to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    match lead {
        // Batch, copy-dim 0, or a literal 1 on a fixed batch of 1.
        SymInt::Batch | SymInt::Lit(0) => {}
        SymInt::Lit(1) if static_batch => {}
        SymInt::Lit(-1) => {
            // -1 infers batch * total / prod(rest); that is the batch size
            // only if the rest holds exactly one sample.
            if rest_ints.iter().any(|&v| v == -1 || v == 0) {
                return Err(explain());
            }
            let known: i64 = rest_ints.iter().product();
            if known != total as i64 {
                return Err(explain());
            }
        }
        _ => return Err(explain()),
    }
    // Resolve `0` entries against the per-sample dims (shifted by the batch).
    let mut full_dims = vec![1usize];
    full_dims.extend_from_slice(shape);
    let mut resolved = Vec::with_capacity(per_sample_target.len());
    for (i, &t) in per_sample_target.iter().enumerate() {
        if t == 0 {
            resolved.push(*full_dims.get(i + 1).ok_or_else(|| {
                format!(
                    "entry {} is 0 but the input has rank {}",
                    i + 1,
                    full_dims.len()
                )
            })? as i64);
        } else {
            resolved.push(t);
        }
    }
    resolve_shape(shape, &resolved)
}

fn softmax(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["axis"])?;
    let x = ctx.required_input(0, "input")?;
    let shape = match imp.operand(ctx, x)? {
        Operand::Data(shape) => shape,
        Operand::Const(_) => return Err(ctx.cannot_fold(x, "Softmax of a constant is not folded")),
    };
    let rank = shape.len() + 1;
    let default_axis = if imp.opset >= 13 { -1 } else { 1 };
    let axis = ctx.attr_int("axis", default_axis)?;
    let last = tensor::norm_axis(axis, rank) == Some(rank - 1);
    // Before opset 13, Softmax flattened everything from `axis` on; that
    // equals last-axis softmax only for per-sample vectors.
    if !last || (imp.opset < 13 && shape.len() != 1) {
        return Err(ctx.unsupported_attr(
            "axis",
            axis,
            "only softmax over the last axis is supported",
        ));
    }
    imp.emit(ctx, x, Op::Softmax)?;
    imp.softmax = Some(ctx.label.clone());
    Ok(())
}

fn identity(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&[])?;
    imp.pass_through(ctx)
}

/// Dropout at inference: the identity. The mask output is not available.
fn dropout(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["ratio", "seed", "is_test"])?;
    if let Some(mode) = ctx.input(2) {
        let training = imp
            .const_input(ctx, 2, "training_mode")?
            .known_ints()
            .map_err(|r| ctx.cannot_fold(mode, r))?;
        if training.iter().any(|&t| t != 0) {
            return Err(ctx.unsupported_attr(
                "training_mode",
                "true",
                "only inference-mode Dropout (the identity) is supported",
            ));
        }
    }
    imp.pass_through(ctx)?;
    if let Some(mask) = ctx.node.output.get(1).filter(|m| !m.is_empty()) {
        imp.values.insert(
            mask.clone(),
            Value::Unavailable(format!(
                "it is the mask output of {}, which is not computed at inference",
                ctx.label
            )),
        );
    }
    Ok(())
}

fn constant(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    let attr = match &ctx.node.attribute[..] {
        [one] => one,
        attrs => {
            return Err(ctx.invalid(format!(
                "a Constant needs exactly one value attribute, it has {}",
                attrs.len()
            )))
        }
    };
    let c = match attr.name.as_str() {
        "value" => {
            let t = ctx
                .attr("value", AttributeType::Tensor)?
                .and_then(|a| a.t.as_ref())
                .ok_or_else(|| ctx.invalid("attribute 'value' holds no tensor"))?;
            Const::from_proto(t).map_err(|m| ctx.invalid(format!("value tensor {m}")))?
        }
        "value_float" => Const::f32(vec![], vec![ctx.attr_float("value_float", 0.0)?]),
        "value_floats" => {
            let v = ctx
                .attr("value_floats", AttributeType::Floats)?
                .map(|a| a.floats.clone())
                .unwrap_or_default();
            Const::f32(vec![v.len()], v)
        }
        "value_int" => Const::int(vec![], vec![SymInt::Lit(ctx.attr_int("value_int", 0)?)]),
        "value_ints" => {
            let v = ctx.attr_ints("value_ints")?.unwrap_or_default();
            Const::int(vec![v.len()], v.into_iter().map(SymInt::Lit).collect())
        }
        other => {
            return Err(ctx.unsupported_attr(
                other,
                "(given)",
                "only value, value_float(s) and value_int(s) constants are supported",
            ))
        }
    };
    imp.define_const(ctx, c)
}

fn shape(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["start", "end"])?;
    let x = ctx.required_input(0, "data")?;
    let full: Vec<SymInt> = match imp.operand(ctx, x)? {
        Operand::Data(shape) => std::iter::once(SymInt::Batch)
            .chain(shape.iter().map(|&d| SymInt::Lit(d as i64)))
            .collect(),
        Operand::Const(c) => c.dims.iter().map(|&d| SymInt::Lit(d as i64)).collect(),
    };
    let rank = full.len() as i64;
    let clamp = |v: i64| if v < 0 { (v + rank).max(0) } else { v.min(rank) } as usize;
    let start = clamp(ctx.attr_int("start", 0)?);
    let end = clamp(ctx.attr_int("end", rank)?);
    let picked = full[start..end.max(start)].to_vec();
    imp.define_const(ctx, Const::int(vec![picked.len()], picked))
}

fn gather(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["axis"])?;
    let axis = ctx.attr_int("axis", 0)?;
    let x = ctx.required_input(0, "data")?;
    let data = match imp.operand(ctx, x)? {
        Operand::Const(c) => c,
        Operand::Data(_) => {
            return Err(ctx.unsupported(
                " on the data path (Gather is only folded when its inputs are constants, e.g. \
                 shape arithmetic)",
            ))
        }
    };
    let indices = imp.const_input(ctx, 1, "indices")?;
    let out = tensor::gather(data, indices, axis).map_err(|r| ctx.cannot_fold(x, r))?;
    imp.define_const(ctx, out)
}

/// Axes of Unsqueeze/Squeeze: input #1 from opset 13, else the attribute.
fn axes_of(imp: &Importer, ctx: &NodeCtx) -> Result<Option<Vec<i64>>, ImportError> {
    if ctx.input(1).is_some() {
        return imp.ints_input(ctx, 1, "axes").map(Some);
    }
    ctx.attr_ints("axes")
}

fn unsqueeze(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["axes"])?;
    let x = ctx.required_input(0, "data")?;
    let axes = axes_of(imp, ctx)?.ok_or_else(|| ctx.invalid("no axes given"))?;
    match imp.operand(ctx, x)? {
        Operand::Const(c) => {
            let mut c = c.clone();
            c.dims = tensor::unsqueeze_dims(&c.dims, &axes).map_err(|m| ctx.shape_err(m))?;
            imp.define_const(ctx, c)
        }
        Operand::Data(shape) => {
            let mut full = vec![1];
            full.extend_from_slice(&shape);
            let out_rank = full.len() + axes.len();
            if axes
                .iter()
                .any(|&a| tensor::norm_axis(a, out_rank) == Some(0))
            {
                return Err(ctx.unsupported_attr(
                    "axes",
                    format!("{axes:?}"),
                    "inserting an axis before the batch axis is not supported",
                ));
            }
            let dims = tensor::unsqueeze_dims(&full, &axes).map_err(|m| ctx.shape_err(m))?;
            imp.emit(
                ctx,
                x,
                Op::Reshape {
                    shape: dims[1..].to_vec(),
                },
            )
        }
    }
}

fn squeeze(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["axes"])?;
    let x = ctx.required_input(0, "data")?;
    let axes = axes_of(imp, ctx)?;
    match imp.operand(ctx, x)? {
        Operand::Const(c) => {
            let mut c = c.clone();
            c.dims =
                tensor::squeeze_dims(&c.dims, axes.as_deref()).map_err(|m| ctx.shape_err(m))?;
            imp.define_const(ctx, c)
        }
        Operand::Data(shape) => {
            let Some(axes) = axes else {
                return Err(ctx.invalid(
                    "Squeeze of the data tensor needs explicit axes (the batch axis must stay)",
                ));
            };
            let mut full = vec![1];
            full.extend_from_slice(&shape);
            if axes
                .iter()
                .any(|&a| tensor::norm_axis(a, full.len()) == Some(0))
            {
                return Err(ctx.unsupported_attr(
                    "axes",
                    format!("{axes:?}"),
                    "removing the batch axis is not supported",
                ));
            }
            let dims = tensor::squeeze_dims(&full, Some(&axes)).map_err(|m| ctx.shape_err(m))?;
            imp.emit(
                ctx,
                x,
                Op::Reshape {
                    shape: dims[1..].to_vec(),
                },
            )
        }
    }
}

fn concat(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["axis"])?;
    let axis = ctx
        .attr("axis", AttributeType::Int)?
        .map(|a| a.i)
        .ok_or_else(|| ctx.invalid("the required attribute axis is missing"))?;
    let mut parts = Vec::new();
    for name in ctx.node.input.iter().filter(|n| !n.is_empty()) {
        match imp.operand(ctx, name)? {
            Operand::Const(c) => parts.push(c),
            Operand::Data(_) => {
                return Err(ctx.unsupported(
                    " on the data path (Concat is only folded when all inputs are constants)",
                ))
            }
        }
    }
    let first = ctx.required_input(0, "inputs")?;
    let out = tensor::concat(&parts, axis).map_err(|r| ctx.cannot_fold(first, r))?;
    imp.define_const(ctx, out)
}

fn cast(imp: &mut Importer, ctx: &NodeCtx) -> Result<(), ImportError> {
    ctx.allow_attrs(&["to", "saturate"])?;
    let to = ctx
        .attr("to", AttributeType::Int)?
        .map(|a| a.i)
        .ok_or_else(|| ctx.invalid("the required attribute 'to' is missing"))?;
    let to = i32::try_from(to).map_err(|_| ctx.invalid(format!("invalid target type {to}")))?;
    let x = ctx.required_input(0, "input")?;
    match imp.operand(ctx, x)? {
        Operand::Const(c) => {
            let out = tensor::cast(c, to).map_err(|r| ctx.cannot_fold(x, r))?;
            imp.define_const(ctx, out)
        }
        Operand::Data(_) if to == DataType::Float as i32 => imp.pass_through(ctx),
        Operand::Data(_) => Err(ctx.unsupported_attr(
            "to",
            tensor::dtype_name(to),
            "the data path is float32; only casts to FLOAT are supported on it",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_rules() {
        use SymInt::{Batch, Lit};
        assert_eq!(
            reshape_data(false, &[4, 3, 3], &[Batch, Lit(-1)]),
            Ok(vec![36])
        );
        assert_eq!(
            reshape_data(false, &[4, 3, 3], &[Lit(0), Lit(4), Lit(9)]),
            Ok(vec![4, 9])
        );
        assert_eq!(
            reshape_data(false, &[4, 3, 3], &[Lit(-1), Lit(36)]),
            Ok(vec![36])
        );
        assert_eq!(
            reshape_data(false, &[4, 3, 3], &[Lit(0), Lit(0), Lit(-1)]),
            Ok(vec![4, 9])
        );
        assert!(reshape_data(false, &[4, 3, 3], &[Lit(1), Lit(-1)]).is_err());
        assert_eq!(
            reshape_data(true, &[4, 3, 3], &[Lit(1), Lit(-1)]),
            Ok(vec![36])
        );
        assert!(reshape_data(false, &[4, 3, 3], &[Lit(-1), Lit(9)]).is_err());
        assert!(reshape_data(false, &[4, 3, 3], &[Lit(-1)]).is_err());
        assert!(reshape_data(false, &[4], &[Batch, Batch]).is_err());
    }
}
