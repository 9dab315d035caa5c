//! Graph IR: a trained float model as a chain of per-sample operations.
//!
//! The ONNX importer produces a [`Graph`]; the float evaluator runs it; the
//! quantizer lowers it to integer stages. Batch dimensions are removed: every
//! shape here is the shape of one sample (e.g. `[64]` or `[1, 8, 8]`).

mod float_eval;

pub use float_eval::Scalar;

/// A dense float tensor, row-major.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A univariate activation evaluated by programmable bootstrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
}

impl Activation {
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        }
    }
}

/// One per-sample operation. Linear operations (everything but
/// [`Op::Activation`] and [`Op::Softmax`]) are affine maps of their input.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// `y = W·x + b`, `weight` of shape `[out, in]`, `bias` of length `out`.
    Dense {
        weight: Tensor,
        bias: Vec<f32>,
    },
    /// 2-D convolution on a `[C, H, W]` input, groups = 1.
    /// `weight` is `[C_out, C_in, kH, kW]`; `pads` are `[top, left, bottom, right]`.
    Conv2d {
        weight: Tensor,
        bias: Vec<f32>,
        stride: [usize; 2],
        pads: [usize; 4],
        dilation: [usize; 2],
    },
    /// Average pooling on `[C, H, W]`; `pads` are `[top, left, bottom, right]`.
    AvgPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: [usize; 4],
        count_include_pad: bool,
    },
    /// Element-wise `y = x * scale + shift`, constants already broadcast to
    /// the per-sample input length (from Add/Sub/Mul by constants).
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Activation(Activation),
    /// Flatten / Reshape / Identity-like shape change; data unchanged.
    Reshape {
        shape: Vec<usize>,
    },
    /// Trailing softmax over the last axis. Monotone, so it never changes the
    /// argmax: the quantizer drops it (logits are compared instead of
    /// probabilities) and the float evaluator applies it.
    Softmax,
}

/// An imported model: a chain of ops applied to one sample.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    pub name: String,
    /// Per-sample input shape (no batch dimension).
    pub input_shape: Vec<usize>,
    pub ops: Vec<Op>,
}

impl Graph {
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }
}
