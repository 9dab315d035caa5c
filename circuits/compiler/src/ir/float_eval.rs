//! Float reference evaluator for the graph IR.
//!
//! Runs a [`Graph`] on one sample in `f32` or `f64` (see [`Scalar`]), and
//! checks every op's parameters against the shape that reaches it
//! ([`Graph::shapes`]).
//!
//! Numerics follow ONNX / PyTorch closely enough that argmax predictions
//! match the exported models: dot products (Dense, Conv2d) are accumulated
//! from zero in increasing input index order and the bias is added to the
//! finished sum (`sum + bias`, like `addmm`); average pooling sums the window
//! row-major and divides by the element count; [`Op::Affine`] computes
//! `x * scale + shift` without fusing. Empty `bias` vectors mean "no bias".

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

use super::{Activation, Graph, Op};
use crate::Error;

/// A float type the evaluator can run in.
pub trait Scalar:
    Copy
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Send
    + Sync
    + 'static
{
    fn zero() -> Self;
    fn one() -> Self;
    fn from_f32(v: f32) -> Self;
    /// Exact conversion of small counts (pool window sizes).
    fn from_usize(v: usize) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn tanh(self) -> Self;
}

impl Scalar for f32 {
    fn zero() -> Self {
        0.0
    }
    fn one() -> Self {
        1.0
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_usize(v: usize) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn tanh(self) -> Self {
        f32::tanh(self)
    }
}

impl Scalar for f64 {
    fn zero() -> Self {
        0.0
    }
    fn one() -> Self {
        1.0
    }
    fn from_f32(v: f32) -> Self {
        f64::from(v)
    }
    fn from_usize(v: usize) -> Self {
        v as f64
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
}

/// Applies an activation in the evaluator's precision.
fn activate<T: Scalar>(act: Activation, x: T) -> T {
    match act {
        Activation::Relu => {
            if x > T::zero() {
                x
            } else {
                T::zero()
            }
        }
        Activation::Sigmoid => T::one() / (T::one() + (-x).exp()),
        Activation::Tanh => x.tanh(),
    }
}

/// Output spatial size of a 2-D window sweep, or `None` when the window
/// does not fit even once.
fn window_out(input: usize, pad: usize, extent: usize, stride: usize) -> Option<usize> {
    let padded = input.checked_add(pad)?;
    if stride == 0 || extent == 0 || padded < extent {
        return None;
    }
    Some((padded - extent) / stride + 1)
}

fn check_bias(bias: &[f32], out: usize) -> Result<(), String> {
    if bias.is_empty() || bias.len() == out {
        Ok(())
    } else {
        Err(format!(
            "bias has {} values, expected {out} (or none)",
            bias.len()
        ))
    }
}

impl Op {
    /// Short lowercase name of the op kind, for messages and reports:
    /// `dense`, `conv2d`, `avgpool2d`, `affine`, `activation`, `reshape`,
    /// `softmax`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Dense { .. } => "dense",
            Op::Conv2d { .. } => "conv2d",
            Op::AvgPool2d { .. } => "avgpool2d",
            Op::Affine { .. } => "affine",
            Op::Activation(_) => "activation",
            Op::Reshape { .. } => "reshape",
            Op::Softmax => "softmax",
        }
    }

    /// True for ops that are affine maps of their input (everything but
    /// activations and softmax).
    pub fn is_linear(&self) -> bool {
        !matches!(self, Op::Activation(_) | Op::Softmax)
    }

    /// Output shape of this op for a per-sample input of shape `in_shape`,
    /// after checking the op's parameters against it.
    pub fn output_shape(&self, in_shape: &[usize]) -> Result<Vec<usize>, Error> {
        self.out_shape(in_shape).map_err(|message| Error::Shape {
            index: 0,
            op: self.kind(),
            message,
        })
    }

    /// [`Op::output_shape`] with a plain-text error (the importer and the
    /// graph walkers attach their own context).
    pub(crate) fn out_shape(&self, in_shape: &[usize]) -> Result<Vec<usize>, String> {
        let in_len: usize = in_shape.iter().product();
        match self {
            Op::Dense { weight, bias } => {
                let [out, inp] = weight.shape[..] else {
                    return Err(format!(
                        "weight must be [out, in], got shape {:?}",
                        weight.shape
                    ));
                };
                if weight.data.len() != out * inp {
                    return Err(format!(
                        "weight shape {:?} needs {} values, has {}",
                        weight.shape,
                        out * inp,
                        weight.data.len()
                    ));
                }
                if in_shape != [inp] {
                    return Err(format!(
                        "input must be a vector of {inp} values, got shape {in_shape:?}"
                    ));
                }
                check_bias(bias, out)?;
                Ok(vec![out])
            }
            Op::Conv2d {
                weight,
                bias,
                stride,
                pads,
                dilation,
            } => {
                let [c_out, c_in, kh, kw] = weight.shape[..] else {
                    return Err(format!(
                        "weight must be [C_out, C_in, kH, kW], got shape {:?}",
                        weight.shape
                    ));
                };
                if weight.data.len() != c_out * c_in * kh * kw {
                    return Err(format!(
                        "weight shape {:?} needs {} values, has {}",
                        weight.shape,
                        c_out * c_in * kh * kw,
                        weight.data.len()
                    ));
                }
                let [c, h, w] = in_shape[..] else {
                    return Err(format!("input must be [C, H, W], got shape {in_shape:?}"));
                };
                if c != c_in {
                    return Err(format!("input has {c} channels, the weight expects {c_in}"));
                }
                if dilation.contains(&0) {
                    return Err("dilation must be at least 1".into());
                }
                check_bias(bias, c_out)?;
                let extent = |d: usize, k: usize| d.checked_mul(k.max(1) - 1)?.checked_add(1);
                let oh = pads[0]
                    .checked_add(pads[2])
                    .and_then(|p| window_out(h, p, extent(dilation[0], kh)?, stride[0]));
                let ow = pads[1]
                    .checked_add(pads[3])
                    .and_then(|p| window_out(w, p, extent(dilation[1], kw)?, stride[1]));
                match (oh, ow) {
                    (Some(oh), Some(ow)) if kh > 0 && kw > 0 => Ok(vec![c_out, oh, ow]),
                    _ => Err(format!(
                        "kernel {kh}x{kw} (dilation {dilation:?}, stride {stride:?}, pads \
                         {pads:?}) does not fit the {h}x{w} input"
                    )),
                }
            }
            Op::AvgPool2d {
                kernel,
                stride,
                pads,
                ..
            } => {
                let [c, h, w] = in_shape[..] else {
                    return Err(format!("input must be [C, H, W], got shape {in_shape:?}"));
                };
                if pads[0] >= kernel[0].max(1)
                    || pads[2] >= kernel[0].max(1)
                    || pads[1] >= kernel[1].max(1)
                    || pads[3] >= kernel[1].max(1)
                {
                    return Err(format!(
                        "pads {pads:?} must be smaller than the kernel {kernel:?}"
                    ));
                }
                let oh = pads[0]
                    .checked_add(pads[2])
                    .and_then(|p| window_out(h, p, kernel[0], stride[0]));
                let ow = pads[1]
                    .checked_add(pads[3])
                    .and_then(|p| window_out(w, p, kernel[1], stride[1]));
                match (oh, ow) {
                    (Some(oh), Some(ow)) => Ok(vec![c, oh, ow]),
                    _ => Err(format!(
                        "kernel {kernel:?} (stride {stride:?}, pads {pads:?}) does not fit \
                         the {h}x{w} input"
                    )),
                }
            }
            Op::Affine { scale, shift } => {
                if scale.len() != in_len || shift.len() != in_len {
                    return Err(format!(
                        "scale/shift have {}/{} values, the input has {in_len}",
                        scale.len(),
                        shift.len()
                    ));
                }
                Ok(in_shape.to_vec())
            }
            Op::Activation(_) => Ok(in_shape.to_vec()),
            Op::Reshape { shape } => {
                let out_len: usize = shape.iter().product();
                if out_len != in_len {
                    return Err(format!(
                        "cannot reshape {in_shape:?} ({in_len} values) to {shape:?} \
                         ({out_len} values)"
                    ));
                }
                Ok(shape.clone())
            }
            Op::Softmax => {
                if in_shape.last().is_none_or(|&n| n == 0) {
                    return Err(format!(
                        "softmax needs a non-empty last axis, got shape {in_shape:?}"
                    ));
                }
                Ok(in_shape.to_vec())
            }
        }
    }

    /// Runs this op on one sample `x` of shape `in_shape`; returns the
    /// output shape and values. Shape errors carry index 0 (use
    /// [`Graph::eval`] for errors that name the op's position).
    pub fn apply<T: Scalar>(
        &self,
        in_shape: &[usize],
        x: &[T],
    ) -> Result<(Vec<usize>, Vec<T>), Error> {
        self.apply_at(0, in_shape, x)
    }

    fn apply_at<T: Scalar>(
        &self,
        index: usize,
        in_shape: &[usize],
        x: &[T],
    ) -> Result<(Vec<usize>, Vec<T>), Error> {
        let shape_err = |message: String| Error::Shape {
            index,
            op: self.kind(),
            message,
        };
        let in_len: usize = in_shape.iter().product();
        if x.len() != in_len {
            return Err(shape_err(format!(
                "input has {} values, its shape {in_shape:?} needs {in_len}",
                x.len()
            )));
        }
        let out_shape = self.out_shape(in_shape).map_err(shape_err)?;
        let out = match self {
            Op::Dense { weight, bias } => dense(weight.shape[0], &weight.data, bias, x),
            Op::Conv2d {
                weight,
                bias,
                stride,
                pads,
                dilation,
            } => conv2d(
                &weight.shape,
                &weight.data,
                bias,
                *stride,
                *pads,
                *dilation,
                in_shape,
                &out_shape,
                x,
            ),
            Op::AvgPool2d {
                kernel,
                stride,
                pads,
                count_include_pad,
            } => avg_pool2d(
                *kernel,
                *stride,
                *pads,
                *count_include_pad,
                in_shape,
                &out_shape,
                x,
            ),
            Op::Affine { scale, shift } => x
                .iter()
                .zip(scale.iter().zip(shift))
                .map(|(&v, (&s, &b))| v * T::from_f32(s) + T::from_f32(b))
                .collect(),
            Op::Activation(act) => x.iter().map(|&v| activate(*act, v)).collect(),
            Op::Reshape { .. } => x.to_vec(),
            Op::Softmax => softmax(in_shape, x),
        };
        Ok((out_shape, out))
    }
}

fn dense<T: Scalar>(out: usize, w: &[f32], bias: &[f32], x: &[T]) -> Vec<T> {
    let inp = x.len();
    (0..out)
        .map(|o| {
            let row = &w[o * inp..(o + 1) * inp];
            let mut acc = T::zero();
            for (&wi, &xi) in row.iter().zip(x) {
                acc = acc + T::from_f32(wi) * xi;
            }
            match bias.get(o) {
                Some(&b) => acc + T::from_f32(b),
                None => acc,
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn conv2d<T: Scalar>(
    w_shape: &[usize],
    w: &[f32],
    bias: &[f32],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    in_shape: &[usize],
    out_shape: &[usize],
    x: &[T],
) -> Vec<T> {
    let (c_out, c_in, kh, kw) = (w_shape[0], w_shape[1], w_shape[2], w_shape[3]);
    let (h, wd) = (in_shape[1], in_shape[2]);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut y = Vec::with_capacity(c_out * oh * ow);
    for co in 0..c_out {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = T::zero();
                for ci in 0..c_in {
                    for ky in 0..kh {
                        // Row in the unpadded input; skip rows in the padding.
                        let Some(iy) = (oy * stride[0] + ky * dilation[0]).checked_sub(pads[0])
                        else {
                            continue;
                        };
                        if iy >= h {
                            continue;
                        }
                        for kx in 0..kw {
                            let Some(ix) = (ox * stride[1] + kx * dilation[1]).checked_sub(pads[1])
                            else {
                                continue;
                            };
                            if ix >= wd {
                                continue;
                            }
                            let wv = w[((co * c_in + ci) * kh + ky) * kw + kx];
                            acc = acc + T::from_f32(wv) * x[(ci * h + iy) * wd + ix];
                        }
                    }
                }
                y.push(match bias.get(co) {
                    Some(&b) => acc + T::from_f32(b),
                    None => acc,
                });
            }
        }
    }
    y
}

fn avg_pool2d<T: Scalar>(
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    count_include_pad: bool,
    in_shape: &[usize],
    out_shape: &[usize],
    x: &[T],
) -> Vec<T> {
    let (c, h, w) = (in_shape[0], in_shape[1], in_shape[2]);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut y = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = T::zero();
                let mut count = 0usize;
                for ky in 0..kernel[0] {
                    let Some(iy) = (oy * stride[0] + ky).checked_sub(pads[0]) else {
                        continue;
                    };
                    if iy >= h {
                        continue;
                    }
                    for kx in 0..kernel[1] {
                        let Some(ix) = (ox * stride[1] + kx).checked_sub(pads[1]) else {
                            continue;
                        };
                        if ix >= w {
                            continue;
                        }
                        acc = acc + x[(ch * h + iy) * w + ix];
                        count += 1;
                    }
                }
                let divisor = if count_include_pad {
                    kernel[0] * kernel[1]
                } else {
                    count.max(1)
                };
                y.push(acc / T::from_usize(divisor));
            }
        }
    }
    y
}

fn softmax<T: Scalar>(in_shape: &[usize], x: &[T]) -> Vec<T> {
    let n = in_shape.last().copied().unwrap_or(1).max(1);
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let mut m = row[0];
        for &v in row {
            if v > m {
                m = v;
            }
        }
        let e: Vec<T> = row.iter().map(|&v| (v - m).exp()).collect();
        let mut sum = T::zero();
        for &v in &e {
            sum = sum + v;
        }
        y.extend(e.into_iter().map(|v| v / sum));
    }
    y
}

impl Graph {
    /// Output shape after each op, validating every op's parameters
    /// against the shape that reaches it.
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>, Error> {
        let mut shape = self.input_shape.clone();
        let mut shapes = Vec::with_capacity(self.ops.len());
        for (index, op) in self.ops.iter().enumerate() {
            shape = op.out_shape(&shape).map_err(|message| Error::Shape {
                index,
                op: op.kind(),
                message,
            })?;
            shapes.push(shape.clone());
        }
        Ok(shapes)
    }

    /// Runs the whole graph (including a trailing softmax) on one sample.
    pub fn eval<T: Scalar>(&self, x: &[T]) -> Result<Vec<T>, Error> {
        self.eval_ops(&self.ops, x)
    }

    /// Runs the graph up to, not including, a trailing [`Op::Softmax`]:
    /// the logits, whose argmax is the prediction.
    pub fn eval_logits<T: Scalar>(&self, x: &[T]) -> Result<Vec<T>, Error> {
        let ops = match self.ops.split_last() {
            Some((Op::Softmax, rest)) => rest,
            _ => &self.ops[..],
        };
        self.eval_ops(ops, x)
    }

    fn eval_ops<T: Scalar>(&self, ops: &[Op], x: &[T]) -> Result<Vec<T>, Error> {
        let expected = self.input_len();
        if x.len() != expected {
            return Err(Error::InputLength {
                expected,
                got: x.len(),
            });
        }
        let mut shape = self.input_shape.clone();
        let mut values = x.to_vec();
        for (index, op) in ops.iter().enumerate() {
            let (s, v) = op.apply_at(index, &shape, &values)?;
            shape = s;
            values = v;
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Tensor;

    #[test]
    fn conv_pool_shapes_and_values() {
        // 1x3x3 input, one 2x2 kernel of ones, bias 0.5, stride 1, no pad.
        let conv = Op::Conv2d {
            weight: Tensor::new(vec![1, 1, 2, 2], vec![1.0; 4]),
            bias: vec![0.5],
            stride: [1, 1],
            pads: [0; 4],
            dilation: [1, 1],
        };
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let (s, y) = conv.apply(&[1, 3, 3], &x).expect("conv");
        assert_eq!(s, vec![1, 2, 2]);
        assert_eq!(y, vec![12.5, 16.5, 24.5, 28.5]);

        let pool = Op::AvgPool2d {
            kernel: [2, 2],
            stride: [2, 2],
            pads: [0, 0, 1, 1],
            count_include_pad: false,
        };
        let (s, y) = pool.apply(&[1, 3, 3], &x).expect("pool");
        assert_eq!(s, vec![1, 2, 2]);
        assert_eq!(y, vec![3.0, 4.5, 7.5, 9.0]);
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let (_, y) = Op::Softmax
            .apply(&[2, 2], &[0.0f64, 0.0, 1.0, 1.0])
            .expect("softmax");
        assert_eq!(y, vec![0.5; 4]);
    }

    #[test]
    fn shape_errors_name_the_op() {
        let g = Graph {
            name: "t".into(),
            input_shape: vec![3],
            ops: vec![
                Op::Activation(Activation::Relu),
                Op::Dense {
                    weight: Tensor::new(vec![2, 4], vec![0.0; 8]),
                    bias: vec![],
                },
            ],
        };
        let err = g.shapes().expect_err("mismatch");
        let msg = err.to_string();
        assert!(msg.contains("op #1 (dense)"), "{msg}");
        assert!(matches!(
            g.eval(&[1.0f32]),
            Err(Error::InputLength {
                expected: 3,
                got: 1
            })
        ));
    }
}
