//! Lowering: a [`Graph`] becomes a chain of affine stages, each followed by
//! an activation (or nothing, for the logits).
//!
//! Consecutive linear ops (Dense, Conv2d, AvgPool2d, Affine, Reshape) compose
//! into one affine map, obtained by running them on the basis vectors in
//! f64. So `Conv → ReLU → AvgPool → Flatten → Dense` lowers to two stages:
//! `conv` with ReLU, then `avgpool·dense` producing logits — no bootstrap is
//! spent between the pooling and the dense layer.

use crate::ir::{Activation, Graph, Op};
use crate::{Error, Result};

/// One affine map followed by an optional activation.
#[derive(Clone, Debug)]
pub struct Stage {
    pub in_len: usize,
    pub out_len: usize,
    /// Row-major `[out_len][in_len]`.
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
    /// `None` for the final stage when the model ends in logits.
    pub activation: Option<Activation>,
    /// Human-readable provenance, e.g. `"Conv2d+Relu"`.
    pub label: String,
}

impl Stage {
    pub fn row(&self, j: usize) -> &[f64] {
        &self.weight[j * self.in_len..(j + 1) * self.in_len]
    }

    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        (0..self.out_len)
            .map(|j| {
                let z = self.row(j).iter().zip(x).map(|(w, v)| w * v).sum::<f64>() + self.bias[j];
                match self.activation {
                    Some(a) => a.apply(z),
                    None => z,
                }
            })
            .collect()
    }
}

/// A lowered network.
#[derive(Clone, Debug)]
pub struct LinearNet {
    pub input_shape: Vec<usize>,
    pub stages: Vec<Stage>,
    /// The graph ended in Softmax, which was dropped (argmax is unchanged).
    pub dropped_softmax: bool,
}

impl LinearNet {
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.stages.last().map_or(0, |s| s.out_len)
    }

    /// f64 evaluation of the lowered net (logits; softmax dropped).
    pub fn eval(&self, x: &[f64]) -> Vec<f64> {
        let mut v = x.to_vec();
        for s in &self.stages {
            v = s.apply(&v);
        }
        v
    }
}

/// Lowers `graph` into affine stages.
pub fn lower(graph: &Graph) -> Result<LinearNet> {
    let mut stages = Vec::new();
    let mut pending: Vec<(usize, &Op)> = Vec::new();
    let mut shape = graph.input_shape.clone();
    let mut pending_in_shape = shape.clone();
    let mut labels: Vec<&'static str> = Vec::new();
    let mut dropped_softmax = false;
    let n_ops = graph.ops.len();
    for (index, op) in graph.ops.iter().enumerate() {
        match op {
            Op::Activation(act) => {
                let (stage, out_shape) = compose(&pending, &pending_in_shape, Some(*act), &labels)?;
                stages.push(stage);
                shape = out_shape;
                pending.clear();
                labels.clear();
                pending_in_shape = shape.clone();
            }
            Op::Softmax => {
                if index + 1 != n_ops {
                    return Err(Error::Quantize(format!(
                        "Softmax at op #{index} is not the last op; only a trailing Softmax is supported"
                    )));
                }
                dropped_softmax = true;
            }
            _ => {
                pending.push((index, op));
                labels.push(op.kind());
            }
        }
    }
    if !pending.is_empty() || stages.is_empty() {
        let (stage, _) = compose(&pending, &pending_in_shape, None, &labels)?;
        stages.push(stage);
    }
    Ok(LinearNet {
        input_shape: graph.input_shape.clone(),
        stages,
        dropped_softmax,
    })
}

fn run_linear(
    ops: &[(usize, &Op)],
    in_shape: &[usize],
    x: &[f64],
) -> Result<(Vec<usize>, Vec<f64>)> {
    let mut shape = in_shape.to_vec();
    let mut v = x.to_vec();
    for (_, op) in ops {
        let (s, out) = op.apply::<f64>(&shape, &v)?;
        shape = s;
        v = out;
    }
    Ok((shape, v))
}

fn compose(
    ops: &[(usize, &Op)],
    in_shape: &[usize],
    activation: Option<Activation>,
    labels: &[&'static str],
) -> Result<(Stage, Vec<usize>)> {
    let in_len: usize = in_shape.iter().product();
    let zero = vec![0.0; in_len];
    let (out_shape, bias) = run_linear(ops, in_shape, &zero)?;
    let out_len = bias.len();
    let mut weight = vec![0.0; out_len * in_len];
    let mut basis = vec![0.0; in_len];
    for i in 0..in_len {
        basis[i] = 1.0;
        let (_, col) = run_linear(ops, in_shape, &basis)?;
        basis[i] = 0.0;
        for j in 0..out_len {
            weight[j * in_len + i] = col[j] - bias[j];
        }
    }
    let mut label = if labels.is_empty() {
        "Identity".to_string()
    } else {
        labels.join("·")
    };
    if let Some(a) = activation {
        label.push('+');
        label.push_str(a.name());
    }
    Ok((
        Stage {
            in_len,
            out_len,
            weight,
            bias,
            activation,
            label,
        },
        out_shape,
    ))
}
