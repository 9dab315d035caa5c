//! The compiled model: the versioned artifact ([`Circuit`]) the compiler
//! writes and both sides read, and the client's view of it ([`ClientSpec`]).
//!
//! Encoding (ours; the security parameters are tfhe-rs's): with accumulator
//! window `p` bits, every value travels on the 64-bit torus as a multiple of
//! `Δ = 2^(63-p)`, so the top bit is padding and values live modulo
//! `2^(p+1)`. Neuron `j`'s accumulator `a_j = Σ w·x + c_j` is shifted by the
//! offset `-lo_j` (the bottom of its calibrated range minus the margin), so
//! that in normal operation `m_j = a_j - lo_j ∈ [0, 2^p)` and no negative
//! value relies on the padding bit. One programmable bootstrap then maps
//! `m_j` through a table `T_j` that fuses the activation and the
//! requantization to the next layer's input. The bootstrap's modulus switch
//! to `2N` drops every bit below the `p+1` encoded ones, so the low-order
//! noise bits are rounded away by the bootstrap itself.
//!
//! Out-of-window accumulators (inputs unlike anything in the calibration
//! set) are not silently clipped: both evaluators compute the negacyclic
//! result the torus gives, `-T_j[m - 2^p]` for `m ∈ [2^p, 2^(p+1))`, so the
//! clear evaluator stays bit-exact with the encrypted one.

use serde::{Deserialize, Serialize};

pub use crate::report::{LayerReport, LogitStats, Report};

use crate::data::Preprocessing;
use crate::params::ParamSet;
use crate::quant_config::QuantConfig;
use crate::{Error, Result};

/// Format version of the serialized [`Circuit`].
pub const CIRCUIT_FORMAT_VERSION: u32 = 1;

/// Client-side input description: preprocessing then affine quantization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub shape: Vec<usize>,
    pub bits: u32,
    pub scale: Vec<f64>,
    pub zero_point: Vec<i64>,
    pub preprocessing: Preprocessing,
}

impl InputSpec {
    pub fn len(&self) -> usize {
        self.scale.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
    }

    /// Raw features → quantized integers in `[0, 2^bits)`.
    pub fn quantize(&self, raw: &[f64]) -> Result<Vec<i64>> {
        if raw.len() != self.len() {
            return Err(Error::InputLength {
                expected: self.len(),
                got: raw.len(),
            });
        }
        let x = self.preprocessing.apply(raw)?;
        let max = (1i64 << self.bits) - 1;
        Ok(x.iter()
            .enumerate()
            .map(|(i, v)| {
                let q = (v / self.scale[i]).round() + self.zero_point[i] as f64;
                if q.is_nan() {
                    0
                } else {
                    (q.max(0.0) as i64).min(max)
                }
            })
            .collect())
    }
}

/// One layer: a dot product per neuron, then one bootstrap per neuron.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitLayer {
    pub label: String,
    pub in_len: usize,
    pub out_len: usize,
    /// Row-major integer weights `[out][in]` (cleartext, server side).
    pub weight: Vec<i64>,
    /// Per neuron: accumulator constant minus the window bottom, so the
    /// bootstrap input is `m = Σ w·x + offset` (in units of `Δ_(p+acc_shift)`).
    pub offset: Vec<i64>,
    /// Per neuron: `2^p` table entries (in output units).
    pub lut: Vec<Vec<i64>>,
    /// Bits of the values the tables produce.
    pub lut_output_bits: u32,
    /// Whether the dot product's inputs are bootstrap outputs under the big
    /// key (then keyswitched before bootstrapping) or the client's fresh
    /// small-key encryptions (first layer: no keyswitch).
    pub keyswitch: bool,
    pub is_output: bool,
    /// Accumulator bits below the window (approximate rounding): the dot
    /// product is in units of `Δ_(p+acc_shift)` and the bootstrap rounds it
    /// to the window's `2^p` boxes, `m = round(a / 2^acc_shift)`, for free.
    /// Values near a box boundary may land one box either way under noise.
    /// 0 is the exact mode: the accumulator fits the window and FHE is
    /// bit-exact with the clear path.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub acc_shift: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl CircuitLayer {
    pub fn row(&self, j: usize) -> &[i64] {
        &self.weight[j * self.in_len..(j + 1) * self.in_len]
    }

    /// Squared 2-norm of neuron `j`'s weights.
    pub fn norm2_sq(&self, j: usize) -> f64 {
        self.row(j).iter().map(|w| (w * w) as f64).sum()
    }
}

/// A compiled model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Circuit {
    pub format_version: u32,
    pub name: String,
    pub params: ParamSet,
    /// `p`: accumulator window bits; values travel modulo `2^(p+1)`.
    pub precision_bits: u32,
    /// Bits of the requantized logits; outputs travel modulo `2^(output_bits+1)`.
    pub output_bits: u32,
    pub input: InputSpec,
    pub layers: Vec<CircuitLayer>,
    pub classes: usize,
    /// Logit `k ≈ output_scale·(y_k - output_zero_point)`.
    pub output_scale: f64,
    pub output_zero_point: i64,
    /// The graph ended in Softmax, dropped here: argmax of logits is the
    /// argmax of probabilities.
    pub dropped_softmax: bool,
    pub quant_config: QuantConfig,
    pub report: Report,
}

/// What a client needs to encrypt inputs for a circuit and read its outputs:
/// everything but the weights and tables (the server's secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientSpec {
    pub name: String,
    pub params: ParamSet,
    /// Inputs are encrypted as `q·2^(63-precision_bits)` (the window, plus
    /// the first layer's accumulator shift for approximate rounding).
    pub precision_bits: u32,
    pub input: InputSpec,
    pub classes: usize,
    /// Outputs are integers modulo `2^(output_bits+1)`, read as signed.
    pub output_bits: u32,
    pub output_scale: f64,
    pub output_zero_point: i64,
    /// What the decrypted values mean (set by the server's policy).
    #[serde(default)]
    pub output: OutputKind,
}

/// What a client decrypts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// One value per class: logits, raw or truncated, decoded with the
    /// output scale and zero point.
    #[default]
    Logits,
    /// The `k` best class indices, best first (k = 1: label only).
    Labels { k: usize },
}

/// Output values (integers modulo `2^(bits+1)`, read as signed) to logits
/// `scale·(y - zero_point)`.
fn decode_logits(out: &[i64], bits: u32, scale: f64, zero_point: i64) -> Vec<f64> {
    let modulus = 1i64 << (bits + 1);
    out.iter()
        .map(|v| {
            let v = v.rem_euclid(modulus);
            let signed = if v >= modulus / 2 { v - modulus } else { v };
            scale * (signed - zero_point) as f64
        })
        .collect()
}

impl ClientSpec {
    /// Number of ciphertexts in one answer.
    pub fn output_count(&self) -> usize {
        match self.output {
            OutputKind::Logits => self.classes,
            OutputKind::Labels { k } => k,
        }
    }

    /// Decoded logits (signed output values times the output scale).
    pub fn decode_output(&self, out: &[i64]) -> Vec<f64> {
        decode_logits(
            out,
            self.output_bits,
            self.output_scale,
            self.output_zero_point,
        )
    }

    /// Predicted class for a (decrypted or clear) output vector.
    pub fn predict_class(&self, out: &[i64]) -> usize {
        crate::data::argmax(&self.decode_output(out))
    }

    /// Checks a spec that came from elsewhere (a server, a file) before
    /// keys or ciphertexts are made from it.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Spec(format!("client spec: {m}")));
        if self.precision_bits == 0 || self.precision_bits > self.params.max_output_bits() {
            return bad(format!(
                "precision {} bits out of range",
                self.precision_bits
            ));
        }
        if self.input.bits == 0 || self.input.bits > self.precision_bits {
            return bad(format!("input bits {} out of range", self.input.bits));
        }
        if self.output_bits == 0 || self.output_bits > self.params.max_output_bits() {
            return bad(format!("output bits {} out of range", self.output_bits));
        }
        let len = self.input.len();
        let shape_len = self
            .input
            .shape
            .iter()
            .try_fold(1usize, |a, d| a.checked_mul(*d));
        if len == 0 || len > 1 << 16 || shape_len != Some(len) || self.input.zero_point.len() != len
        {
            return bad("inconsistent input shape, scales and zero points".into());
        }
        if self
            .input
            .scale
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return bad("input scales must be positive and finite".into());
        }
        if self.classes == 0 || self.classes > 1 << 16 || !self.output_scale.is_finite() {
            return bad("invalid output description".into());
        }
        if let OutputKind::Labels { k } = self.output {
            if k == 0 || k > self.classes || (self.classes as u64) > 1u64 << self.output_bits {
                return bad(format!("{k} labels of {} classes", self.classes));
            }
        }
        self.input
            .preprocessing
            .check_len(len)
            .map_err(|e| Error::Spec(e.to_string()))
    }
}

impl From<&Circuit> for ClientSpec {
    fn from(c: &Circuit) -> Self {
        Self {
            name: c.name.clone(),
            params: c.params,
            precision_bits: c.input_encoding_bits(),
            input: c.input.clone(),
            classes: c.classes,
            output_bits: c.output_bits,
            output_scale: c.output_scale,
            output_zero_point: c.output_zero_point,
            output: OutputKind::Logits,
        }
    }
}

impl Circuit {
    pub fn window(&self) -> i64 {
        1i64 << self.precision_bits
    }

    /// Inputs are encrypted as `q·2^(63 - bits)`: the window plus the first
    /// layer's accumulator shift.
    pub fn input_encoding_bits(&self) -> u32 {
        self.precision_bits + self.layers.first().map_or(0, |l| l.acc_shift)
    }

    /// Precision of layer `l`'s bootstrap outputs: the next layer's
    /// accumulator unit, or the output precision.
    pub fn layer_out_bits(&self, l: usize) -> u32 {
        match self.layers.get(l + 1) {
            Some(next) => self.precision_bits + next.acc_shift,
            None => self.output_bits,
        }
    }

    /// Whether every accumulator fits its window (FHE bit-exact with clear).
    pub fn is_exact(&self) -> bool {
        self.layers.iter().all(|l| l.acc_shift == 0)
    }

    /// Modulus (in units of its Δ) of the values a layer outputs.
    pub fn layer_modulus(&self, layer: usize) -> i64 {
        1i64 << (self.layer_out_bits(layer) + 1)
    }

    pub fn pbs_per_inference(&self) -> usize {
        self.layers.iter().map(|l| l.out_len).sum()
    }

    pub fn ks_per_inference(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.keyswitch)
            .map(|l| l.out_len)
            .sum()
    }

    /// The client's view of this circuit (no weights, no tables).
    pub fn client_spec(&self) -> ClientSpec {
        ClientSpec::from(self)
    }

    /// The bare circuit's logits for its outputs (what [`ClientSpec`] of a
    /// raw answer decodes too).
    pub fn decode_output(&self, out: &[i64]) -> Vec<f64> {
        let (bits, scale) = (self.output_bits, self.output_scale);
        decode_logits(out, bits, scale, self.output_zero_point)
    }

    /// The class a bare-circuit answer predicts.
    pub fn predict_class(&self, out: &[i64]) -> usize {
        crate::data::argmax(&self.decode_output(out))
    }

    /// Structural checks on a circuit loaded from bytes.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Artifact(m));
        if self.format_version != CIRCUIT_FORMAT_VERSION {
            return bad(format!(
                "circuit format version {} is not supported (this build reads {})",
                self.format_version, CIRCUIT_FORMAT_VERSION
            ));
        }
        let n = self.params.polynomial_size() as u64;
        if self.precision_bits == 0 || 1u64.checked_shl(self.precision_bits).is_none_or(|w| w > n) {
            return bad(format!(
                "precision {} bits does not fit a {}-coefficient lookup table",
                self.precision_bits, n
            ));
        }
        if self.output_bits == 0 || self.output_bits > 20 {
            return bad(format!("output_bits {} out of range", self.output_bits));
        }
        if self.layers.is_empty() {
            return bad("circuit has no layers".into());
        }
        let mut expected_in = self.input.len();
        for (i, l) in self.layers.iter().enumerate() {
            if l.in_len != expected_in
                || l.weight.len() != l.in_len * l.out_len
                || l.offset.len() != l.out_len
                || l.lut.len() != l.out_len
                || l.lut.iter().any(|t| t.len() as i64 != self.window())
            {
                return bad(format!("layer {i} has inconsistent sizes"));
            }
            if l.is_output != (i + 1 == self.layers.len()) || l.keyswitch != (i > 0) {
                return bad(format!("layer {i} has inconsistent flags"));
            }
            if l.acc_shift > 16 || self.precision_bits + l.acc_shift > self.params.max_output_bits()
            {
                return bad(format!(
                    "layer {i}: a {}-bit accumulator shift over a {}-bit window is more than {} carries",
                    l.acc_shift,
                    self.precision_bits,
                    self.params.name()
                ));
            }
            expected_in = l.out_len;
        }
        if expected_in != self.classes {
            return bad("output size differs from the class count".into());
        }
        Ok(())
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Artifact(e.to_string()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let c: Circuit = serde_json::from_str(text).map_err(|e| Error::Artifact(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let text = self.to_json()?;
        std::fs::write(path, text).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = crate::data::read_limited(path, 256 << 20)?;
        Self::from_json(&text)
    }
}
