//! Post-training quantization: a [`LinearNet`] plus a calibration set becomes
//! a [`QuantizedNet`] of integer weights, integer accumulators and
//! per-neuron requantizing activations.
//!
//! * Inputs: per-feature affine quantization to `input_bits` unsigned bits,
//!   range taken from the calibration set.
//! * Stage `l`, neuron `j`: `a_j = Σ_i w_ji·q_i + c_j` with integer `w`, `c`;
//!   the real pre-activation is `≈ σ_j·a_j`. The input scales and zero points
//!   are folded into the float weights first, the bias is folded into the
//!   accumulator constant `c_j`, and `σ_j` (per neuron = per output channel)
//!   is the smallest scale for which the accumulator's calibrated range fits
//!   in `accumulator_bits` with `margin` spare values on each side.
//! * Rounding of the weights uses error feedback (each rounding error is
//!   compensated on the not-yet-rounded weights through the calibration
//!   inputs' second-moment matrix, as in OBQ/GPTQ), followed by bias
//!   correction; plain round-to-nearest is available for comparison.
//! * Hidden activations are requantized per neuron to `activation_bits`;
//!   logits to `output_bits` with one scale shared by all classes (so argmax
//!   compares like with like).

pub mod lower;
pub mod refine;

use serde::{Deserialize, Serialize};

pub use lower::{lower, LinearNet, Stage};

use crate::ir::Activation;
use crate::{Error, Result};

pub use blindfold_runtime::quant_config::{QuantConfig, Rounding};

/// The compiler's checks and lookups on a [`QuantConfig`] (the type lives in
/// the runtime because circuits record it).
trait ConfigExt {
    fn activation_bits_for(&self, stage: usize) -> u32;
    fn validate(&self) -> Result<()>;
}

impl ConfigExt for QuantConfig {
    fn activation_bits_for(&self, stage: usize) -> u32 {
        self.stage_activation_bits
            .iter()
            .find(|(s, _)| *s == stage)
            .map_or(self.activation_bits, |(_, b)| *b)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Quantize(m));
        if !(1..=8).contains(&self.input_bits) {
            return bad(format!("input_bits {} must be in 1..=8", self.input_bits));
        }
        if !(1..=10).contains(&self.accumulator_bits) {
            return bad(format!(
                "accumulator_bits {} must be in 1..=10",
                self.accumulator_bits
            ));
        }
        for b in std::iter::once(self.activation_bits)
            .chain(self.stage_activation_bits.iter().map(|x| x.1))
        {
            if b < 1 || b > self.accumulator_bits {
                return bad(format!(
                    "activation bits {b} must be in 1..={} (the accumulator width)",
                    self.accumulator_bits
                ));
            }
        }
        if self.input_bits > self.accumulator_bits {
            return bad(format!(
                "input_bits {} exceed accumulator_bits {}",
                self.input_bits, self.accumulator_bits
            ));
        }
        for (stage, b) in std::iter::once((None, self.rounding_bits))
            .chain(self.stage_rounding_bits.iter().map(|(s, b)| (Some(*s), *b)))
        {
            if b > 8 {
                let at = stage.map_or(String::new(), |s| format!(" (stage {s})"));
                return bad(format!("rounding_bits {b}{at} must be in 0..=8"));
            }
        }
        if !(1..=20).contains(&self.output_bits) {
            return bad(format!(
                "output_bits {} must be in 1..=20",
                self.output_bits
            ));
        }
        if 2 * self.margin as u64 + 2 > 1u64 << self.accumulator_bits {
            return bad(format!(
                "margin {} leaves no room in a {}-bit accumulator",
                self.margin, self.accumulator_bits
            ));
        }
        Ok(())
    }
}

/// Affine quantization `q = clamp(round(x/scale) + zero_point, 0, 2^bits-1)`,
/// real value `x ≈ scale·(q - zero_point)`; per element.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AffineQuant {
    pub bits: u32,
    pub scale: Vec<f64>,
    pub zero_point: Vec<i64>,
}

impl AffineQuant {
    pub fn max_q(&self) -> i64 {
        (1i64 << self.bits) - 1
    }

    pub fn quantize(&self, i: usize, x: f64) -> i64 {
        let q = (x / self.scale[i]).round() + self.zero_point[i] as f64;
        if q.is_nan() {
            return 0;
        }
        (q.max(0.0) as i64).min(self.max_q())
    }

    pub fn dequantize(&self, i: usize, q: i64) -> f64 {
        self.scale[i] * (q - self.zero_point[i]) as f64
    }

    /// Range `[lo, hi]` (real values) → scale and zero point for `bits`.
    fn fit(bits: u32, lo: f64, hi: f64) -> (f64, i64) {
        let levels = ((1u64 << bits) - 1) as f64;
        let lo = lo.min(0.0).min(hi);
        let hi = hi.max(lo);
        if hi - lo <= f64::EPSILON * (1.0 + hi.abs()) {
            return (1.0, (-lo).round() as i64);
        }
        let scale = (hi - lo) / levels;
        let zp = (-lo / scale).round() as i64;
        (scale, zp.clamp(0, levels as i64))
    }

    /// Scale and zero point for `bits` from sample values, clipping the range
    /// to the pair of tail quantiles (none, 0.1 % … 10 % on either side) with
    /// the least mean squared quantization error over the samples.
    pub fn fit_values(bits: u32, values: &[f64]) -> (f64, i64) {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return Self::fit(bits, 0.0, 0.0);
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let at = |q: f64| sorted[((q * (n - 1) as f64).round() as usize).min(n - 1)];
        const TAILS: [f64; 7] = [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1];
        let levels = (1i64 << bits) - 1;
        let mut best = (f64::INFINITY, Self::fit(bits, sorted[0], sorted[n - 1]));
        for lo_tail in TAILS {
            for hi_tail in TAILS {
                let (s, z) = Self::fit(bits, at(lo_tail), at(1.0 - hi_tail));
                let err: f64 = sorted
                    .iter()
                    .map(|v| {
                        let q = ((v / s).round() + z as f64).clamp(0.0, levels as f64);
                        let d = v - s * (q - z as f64);
                        d * d
                    })
                    .sum();
                if err < best.0 {
                    best = (err, (s, z));
                }
            }
        }
        best.1
    }
}

/// One quantized stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantStage {
    pub label: String,
    pub in_len: usize,
    pub out_len: usize,
    /// Row-major integer weights `[out][in]`.
    pub weight: Vec<i64>,
    /// Accumulator constant `c_j` (bias and input zero points folded in).
    pub bias: Vec<i64>,
    /// `σ_j`: the real pre-activation is `σ_j·a_j`.
    pub acc_scale: Vec<f64>,
    /// Calibrated accumulator range, per neuron.
    pub acc_min: Vec<i64>,
    pub acc_max: Vec<i64>,
    pub activation: Option<Activation>,
    /// Requantization of this stage's outputs.
    pub out: AffineQuant,
    /// Whether this is the final (logit) stage.
    pub is_output: bool,
    /// Accumulator bits the bootstrap rounds away (0: exact).
    #[serde(default)]
    pub shift: u32,
    /// Spare window boxes on each side of the calibrated range.
    #[serde(default)]
    pub margin: u32,
}

impl QuantStage {
    pub fn row(&self, j: usize) -> &[i64] {
        &self.weight[j * self.in_len..(j + 1) * self.in_len]
    }

    pub fn accumulate(&self, j: usize, q: &[i64]) -> i64 {
        self.row(j).iter().zip(q).map(|(w, x)| w * x).sum::<i64>() + self.bias[j]
    }

    /// The bottom of neuron `j`'s window, in accumulator units.
    pub fn window_lo(&self, j: usize) -> i64 {
        self.acc_min[j] - ((self.margin as i64) << self.shift)
    }

    /// The accumulator value a bootstrap rounds `acc` to: the centre of its
    /// box of `2^shift` values (itself in exact mode).
    pub fn bucket(&self, j: usize, acc: i64) -> i64 {
        if self.shift == 0 {
            return acc;
        }
        let unit = 1i64 << self.shift;
        let lo = self.window_lo(j);
        lo + (acc - lo + unit / 2).div_euclid(unit) * unit
    }

    /// What neuron `j`'s bootstrap outputs for accumulator `acc`: the
    /// activation and requantization of the value it rounds to.
    pub fn output(&self, j: usize, acc: i64) -> i64 {
        self.requantize(j, self.bucket(j, acc))
    }

    /// The fused activation + requantization a bootstrap of neuron `j`
    /// computes, as a function of the accumulator value.
    pub fn requantize(&self, j: usize, acc: i64) -> i64 {
        let z = self.acc_scale[j] * acc as f64;
        let y = match self.activation {
            Some(a) => a.apply(z),
            None => z,
        };
        self.out.quantize(j, y)
    }

    /// Squared 2-norm of neuron `j`'s integer weights (drives its noise).
    pub fn norm2_sq(&self, j: usize) -> f64 {
        self.row(j).iter().map(|w| (w * w) as f64).sum()
    }
}

/// The quantized network: client-side input quantization plus integer stages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizedNet {
    pub input: AffineQuant,
    pub input_shape: Vec<usize>,
    pub stages: Vec<QuantStage>,
    pub config: QuantConfig,
    pub dropped_softmax: bool,
}

impl QuantizedNet {
    pub fn quantize_input(&self, x: &[f64]) -> Result<Vec<i64>> {
        if x.len() != self.input.scale.len() {
            return Err(Error::InputLength {
                expected: self.input.scale.len(),
                got: x.len(),
            });
        }
        Ok(x.iter()
            .enumerate()
            .map(|(i, v)| self.input.quantize(i, *v))
            .collect())
    }

    /// Integer evaluation with unbounded accumulators (the quantized model's
    /// intended semantics; the circuit adds the finite window).
    pub fn eval_int(&self, q: &[i64]) -> Vec<i64> {
        let mut v = q.to_vec();
        for s in &self.stages {
            v = (0..s.out_len)
                .map(|j| s.output(j, s.accumulate(j, &v)))
                .collect();
        }
        v
    }

    /// Dequantized logits for a quantized output vector.
    pub fn dequantize_output(&self, out: &[i64]) -> Vec<f64> {
        let last = &self.stages[self.stages.len() - 1];
        out.iter()
            .enumerate()
            .map(|(i, q)| last.out.dequantize(i, *q))
            .collect()
    }
}

/// Quantizes `net` with `calibration` inputs (already preprocessed).
pub fn quantize(
    net: &LinearNet,
    calibration: &[Vec<f64>],
    config: &QuantConfig,
) -> Result<QuantizedNet> {
    config.validate()?;
    if calibration.is_empty() {
        return Err(Error::Quantize("the calibration set is empty".into()));
    }
    let n_in = net.input_len();
    if let Some(bad) = calibration.iter().find(|x| x.len() != n_in) {
        return Err(Error::InputLength {
            expected: n_in,
            got: bad.len(),
        });
    }
    // Input quantization, per feature.
    let mut scale = Vec::with_capacity(n_in);
    let mut zero_point = Vec::with_capacity(n_in);
    for i in 0..n_in {
        let lo = calibration
            .iter()
            .map(|x| x[i])
            .fold(f64::INFINITY, f64::min);
        let hi = calibration
            .iter()
            .map(|x| x[i])
            .fold(f64::NEG_INFINITY, f64::max);
        let (s, z) = if config.clip_ranges {
            let values: Vec<f64> = calibration.iter().map(|x| x[i]).collect();
            AffineQuant::fit_values(config.input_bits, &values)
        } else {
            AffineQuant::fit(config.input_bits, lo, hi)
        };
        scale.push(s);
        zero_point.push(z);
    }
    let input = AffineQuant {
        bits: config.input_bits,
        scale,
        zero_point,
    };
    let mut q_calib: Vec<Vec<i64>> = calibration
        .iter()
        .map(|x| {
            x.iter()
                .enumerate()
                .map(|(i, v)| input.quantize(i, *v))
                .collect()
        })
        .collect();
    let mut in_quant = input.clone();
    let mut stages = Vec::with_capacity(net.stages.len());
    let n_stages = net.stages.len();
    for (l, stage) in net.stages.iter().enumerate() {
        let is_output = l + 1 == n_stages;
        let qs = quantize_stage(stage, &in_quant, &q_calib, config, l, is_output)?;
        q_calib = q_calib
            .iter()
            .map(|q| {
                (0..qs.out_len)
                    .map(|j| qs.output(j, qs.accumulate(j, q)))
                    .collect()
            })
            .collect();
        in_quant = qs.out.clone();
        stages.push(qs);
    }
    let mut qnet = QuantizedNet {
        input,
        input_shape: net.input_shape.clone(),
        stages,
        config: config.clone(),
        dropped_softmax: net.dropped_softmax,
    };
    if config.refine_sweeps > 0 {
        let inputs: Vec<Vec<i64>> = calibration
            .iter()
            .map(|x| qnet.quantize_input(x))
            .collect::<Result<_>>()?;
        let logits: Vec<Vec<f64>> = calibration.iter().map(|x| net.eval(x)).collect();
        let nonzero: Vec<Vec<bool>> = net
            .stages
            .iter()
            .map(|s| s.weight.iter().map(|w| *w != 0.0).collect())
            .collect();
        refine::refine(&mut qnet, &inputs, &logits, &nonzero, config.refine_sweeps);
    }
    Ok(qnet)
}

fn quantize_stage(
    stage: &Stage,
    in_quant: &AffineQuant,
    q_calib: &[Vec<i64>],
    config: &QuantConfig,
    index: usize,
    is_output: bool,
) -> Result<QuantStage> {
    let (n_in, n_out) = (stage.in_len, stage.out_len);
    // Fold the input scales and zero points: z_j = Σ W'_ji q_i + b'_j.
    let mut wf = vec![0.0; n_out * n_in];
    let mut bf = stage.bias.clone();
    for j in 0..n_out {
        for i in 0..n_in {
            let w = stage.weight[j * n_in + i] * in_quant.scale[i];
            wf[j * n_in + i] = w;
            bf[j] -= w * in_quant.zero_point[i] as f64;
        }
    }
    let n = q_calib.len() as f64;
    let xs: Vec<Vec<f64>> = q_calib
        .iter()
        .map(|q| q.iter().map(|v| *v as f64).collect())
        .collect();
    // Second moments of the (integer) inputs, for error-feedback rounding.
    let hinv_chol = if config.rounding == Rounding::ErrorFeedback {
        let mut h = vec![0.0; n_in * n_in];
        for x in &xs {
            for a in 0..n_in {
                if x[a] == 0.0 {
                    continue;
                }
                for b in 0..n_in {
                    h[a * n_in + b] += x[a] * x[b] / n;
                }
            }
        }
        let mean_diag = (0..n_in).map(|i| h[i * n_in + i]).sum::<f64>() / n_in as f64;
        let damp = 0.01 * mean_diag.max(1e-6);
        for i in 0..n_in {
            h[i * n_in + i] += damp;
        }
        Some(upper_cholesky_of_inverse(&h, n_in)?)
    } else {
        None
    };
    // the window in accumulator units: 2^p boxes of 2^shift values each
    let shift = config.rounding_bits_for(index);
    let window = 1i64 << (config.accumulator_bits + shift);
    let usable = window - ((2 * config.margin as i64) << shift);
    let mut weight = vec![0i64; n_out * n_in];
    let mut bias = vec![0i64; n_out];
    let mut acc_scale = vec![1.0; n_out];
    let mut acc_min = vec![0i64; n_out];
    let mut acc_max = vec![0i64; n_out];
    for j in 0..n_out {
        let row = &wf[j * n_in..(j + 1) * n_in];
        let zs: Vec<f64> = xs
            .iter()
            .map(|x| row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>() + bf[j])
            .collect();
        let zmin = zs.iter().copied().fold(f64::INFINITY, f64::min);
        let zmax = zs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sigma = if zmax - zmin > 1e-12 {
            (zmax - zmin) / (usable - 1) as f64
        } else {
            // constant neuron: any scale works; keep the bias representable
            (zmax.abs() / (usable / 2) as f64).max(1e-6)
        };
        let mut found = None;
        for _ in 0..400 {
            let w_int = round_row(row, sigma, hinv_chol.as_deref(), n_in);
            // bias correction: the mean rounding error goes into the constant
            let mean_err = xs
                .iter()
                .map(|x| {
                    row.iter()
                        .zip(&w_int)
                        .zip(x)
                        .map(|((w, q), v)| (w - sigma * *q as f64) * v)
                        .sum::<f64>()
                })
                .sum::<f64>()
                / n;
            let c = ((bf[j] + mean_err) / sigma).round() as i64;
            let accs: Vec<i64> = q_calib
                .iter()
                .map(|q| w_int.iter().zip(q).map(|(w, x)| w * x).sum::<i64>() + c)
                .collect();
            let lo = *accs.iter().min().unwrap_or(&0);
            let hi = *accs.iter().max().unwrap_or(&0);
            if hi - lo < usable {
                found = Some((w_int, c, lo, hi));
                break;
            }
            sigma *= 1.02;
        }
        let (w_int, c, lo, hi) = found.ok_or_else(|| {
            Error::Quantize(format!(
                "stage {index} neuron {j}: could not fit the accumulator in {} bits",
                config.accumulator_bits
            ))
        })?;
        weight[j * n_in..(j + 1) * n_in].copy_from_slice(&w_int);
        bias[j] = c;
        acc_scale[j] = sigma;
        acc_min[j] = lo;
        acc_max[j] = hi;
    }
    // Output requantization from the calibrated activations (of the values
    // the bootstraps round the accumulators to).
    let unit = 1i64 << shift;
    let margin_fine = (config.margin as i64) << shift;
    let act = |j: usize, a: i64| {
        let lo = acc_min[j] - margin_fine;
        let a = lo + (a - lo + unit / 2).div_euclid(unit) * unit;
        let z = acc_scale[j] * a as f64;
        match stage.activation {
            Some(f) => f.apply(z),
            None => z,
        }
    };
    // calibrated range of each neuron's activation output
    let ranges: Vec<(f64, f64)> = (0..n_out)
        .map(|j| {
            let row = &weight[j * n_in..(j + 1) * n_in];
            q_calib
                .iter()
                .map(|q| {
                    act(
                        j,
                        row.iter().zip(q).map(|(w, x)| w * x).sum::<i64>() + bias[j],
                    )
                })
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
                    (lo.min(y), hi.max(y))
                })
        })
        .collect();
    let out = if is_output {
        // one scale for all classes, also covering every value the window can produce
        let mut lo = ranges.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
        let mut hi = ranges.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
        for j in 0..n_out {
            for a in [acc_min[j] - margin_fine, acc_max[j] + margin_fine] {
                let y = act(j, a);
                lo = lo.min(y);
                hi = hi.max(y);
            }
        }
        let (s, z) = AffineQuant::fit(config.output_bits, lo, hi);
        AffineQuant {
            bits: config.output_bits,
            scale: vec![s; n_out],
            zero_point: vec![z; n_out],
        }
    } else {
        let bits = config.activation_bits_for(index);
        let (scale, zero_point) = if config.clip_ranges {
            (0..n_out)
                .map(|j| {
                    let row = &weight[j * n_in..(j + 1) * n_in];
                    let values: Vec<f64> = q_calib
                        .iter()
                        .map(|q| {
                            act(
                                j,
                                row.iter().zip(q).map(|(w, x)| w * x).sum::<i64>() + bias[j],
                            )
                        })
                        .collect();
                    AffineQuant::fit_values(bits, &values)
                })
                .unzip()
        } else {
            ranges
                .iter()
                .map(|(lo, hi)| AffineQuant::fit(bits, *lo, *hi))
                .unzip()
        };
        AffineQuant {
            bits,
            scale,
            zero_point,
        }
    };
    Ok(QuantStage {
        label: stage.label.clone(),
        in_len: n_in,
        out_len: n_out,
        weight,
        bias,
        acc_scale,
        acc_min,
        acc_max,
        activation: stage.activation,
        out,
        is_output,
        shift,
        margin: config.margin,
    })
}

/// Rounds one row of float weights to integers at scale `sigma`.
fn round_row(row: &[f64], sigma: f64, hinv_chol: Option<&[f64]>, n: usize) -> Vec<i64> {
    match hinv_chol {
        None => row.iter().map(|w| (w / sigma).round() as i64).collect(),
        Some(u) => {
            let mut w = row.to_vec();
            let mut out = vec![0i64; n];
            for i in 0..n {
                let q = (w[i] / sigma).round();
                out[i] = q as i64;
                let err = (w[i] - sigma * q) / u[i * n + i];
                for k in i + 1..n {
                    w[k] -= err * u[i * n + k];
                }
            }
            out
        }
    }
}

/// Upper-triangular `U` with `H⁻¹ = Uᵀ·U`, for a symmetric positive-definite `H`.
fn upper_cholesky_of_inverse(h: &[f64], n: usize) -> Result<Vec<f64>> {
    let l = cholesky_lower(h, n)?;
    // H⁻¹ = L⁻ᵀ L⁻¹: invert L (lower triangular)
    let mut linv = vec![0.0; n * n];
    for i in 0..n {
        linv[i * n + i] = 1.0 / l[i * n + i];
        for j in 0..i {
            let mut s = 0.0;
            for k in j..i {
                s += l[i * n + k] * linv[k * n + j];
            }
            linv[i * n + j] = -s / l[i * n + i];
        }
    }
    let mut hinv = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let mut s = 0.0;
            for k in i.max(j)..n {
                s += linv[k * n + i] * linv[k * n + j];
            }
            hinv[i * n + j] = s;
        }
    }
    // H⁻¹ = Uᵀ U with U upper  ⇔  U = Lᵀ of the lower Cholesky factor of H⁻¹
    let lh = cholesky_lower(&hinv, n)?;
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            u[i * n + j] = lh[j * n + i];
        }
    }
    Ok(u)
}

// Kept by hand (the lab uses nalgebra): a different factorization rounds
// differently, which moves error-feedback decisions and so every shipped
// circuit; the quantizer's rework (issue 11) is where it changes.
fn cholesky_lower(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 {
                    return Err(Error::Quantize(
                        "calibration second-moment matrix is not positive definite".into(),
                    ));
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_inverse_roundtrip() {
        let h = vec![4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let u = upper_cholesky_of_inverse(&h, 3).unwrap();
        // (UᵀU)·H = I
        let mut hinv = [0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                hinv[i * 3 + j] = (0..3).map(|k| u[k * 3 + i] * u[k * 3 + j]).sum();
            }
        }
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| hinv[i * 3 + k] * h[k * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
        }
        for i in 0..3 {
            for j in 0..i {
                assert_eq!(u[i * 3 + j], 0.0);
            }
        }
    }

    #[test]
    fn affine_fit_covers_range() {
        let (s, z) = AffineQuant::fit(2, 0.0, 16.0);
        let q = AffineQuant {
            bits: 2,
            scale: vec![s],
            zero_point: vec![z],
        };
        assert_eq!(q.quantize(0, 0.0), 0);
        assert_eq!(q.quantize(0, 16.0), 3);
        assert_eq!(q.quantize(0, 100.0), 3);
        assert_eq!(q.quantize(0, f64::NAN), 0);
    }
}
