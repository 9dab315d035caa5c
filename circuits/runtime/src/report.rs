//! The human-readable compilation report and the failure-probability model.
//!
//! For neuron `j` the noise at the blind-rotation input has variance
//! `‖w_j‖²·σ²_in + σ²_KS + σ²_MS` (tfhe-rs noise formulas; `σ²_in` is the
//! fresh small-key encryption noise for the first layer, the bootstrap output
//! noise after that, and the first layer skips the keyswitch). In accumulator
//! units that is `σ_j = σ·2^(p+1)`. A bootstrap *fails* when the noise moves
//! the accumulator by `d ≠ 0` boxes **and** the table gives a different value
//! there; its probability for input `m` is `Σ_{d≠0} P(shift = d)·[T(m+d) ≠ T(m)]`
//! with Gaussian shift probabilities. We report, per layer, the mean over the
//! calibration set's bootstrap inputs and the worst case over every input
//! value seen; per inference, the sum of the means (union bound).

use serde::{Deserialize, Serialize};

use crate::circuit::Circuit;
use crate::eval::clear::bootstrap_value;
use crate::params::shift_probability;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    pub label: String,
    pub neurons: usize,
    pub input_bits: u32,
    /// Bits needed by the widest calibrated accumulator range.
    pub accumulator_bits: u32,
    /// The encoding window (all layers share it).
    pub window_bits: u32,
    pub lut_output_bits: u32,
    pub bootstraps: usize,
    pub keyswitches: usize,
    pub max_weight_norm2: f64,
    /// Largest noise standard deviation, in accumulator units.
    pub max_sigma: f64,
    /// Mean failure probability per bootstrap (calibration inputs), worst neuron.
    pub p_fail_mean: f64,
    /// Worst failure probability over all calibrated inputs and neurons.
    pub p_fail_worst: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub params: String,
    pub polynomial_size: usize,
    pub small_lwe_dimension: usize,
    pub precision_bits: u32,
    pub output_bits: u32,
    pub layers: Vec<LayerReport>,
    pub pbs_per_inference: usize,
    pub ks_per_inference: usize,
    /// Predicted probability that an inference has any failed bootstrap
    /// (sum over bootstraps of their mean failure probability).
    pub p_fail_inference: f64,
    /// Same with every bootstrap at its worst calibrated input.
    pub p_fail_inference_worst: f64,
    pub calibration_samples: usize,
    /// Range of the decoded logits on the calibration set (absent in
    /// circuits compiled before it was recorded).
    #[serde(default)]
    pub logits: Option<LogitStats>,
}

/// Decoded logits on the calibration set: the range hardening policies
/// quantize into (all logits for truncated scores, the largest logit of
/// each sample for comparisons).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogitStats {
    pub min: f64,
    pub max: f64,
    /// Smallest and largest top logit (the winning class's) of a sample.
    pub top_min: f64,
    pub top_max: f64,
}

/// Failure probability of one bootstrap with table `table` at input `m`.
pub fn bootstrap_failure_probability(
    table: &[i64],
    precision_bits: u32,
    m: i64,
    sigma: f64,
    out_modulus: i64,
) -> f64 {
    let reach = (sigma * 40.0).ceil() as i64 + 2;
    let here = bootstrap_value(table, precision_bits, m, out_modulus);
    let mut p = 0.0;
    for d in -reach..=reach {
        if d == 0 {
            continue;
        }
        if bootstrap_value(table, precision_bits, m + d, out_modulus) != here {
            p += shift_probability(d, sigma);
        }
    }
    p
}

/// Noise standard deviation (accumulator units) at neuron `j` of `layer`.
pub fn neuron_sigma(circuit: &Circuit, layer: usize, j: usize) -> f64 {
    let noise = circuit.params.noise();
    let l = &circuit.layers[layer];
    let var = noise.before_blind_rotation(l.norm2_sq(j), !l.keyswitch);
    var.sqrt() * 2f64.powi(circuit.precision_bits as i32 + 1)
}

impl Report {
    /// Multi-line text for `blindfold inspect`.
    pub fn render(&self, circuit_name: &str) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "circuit {circuit_name}");
        let _ = writeln!(
            s,
            "parameters  {} (N = {}, n = {}, centered-mean modulus switch)",
            self.params, self.polynomial_size, self.small_lwe_dimension
        );
        let _ = writeln!(
            s,
            "encoding    {}-bit accumulator window + padding bit; outputs {} bits",
            self.precision_bits, self.output_bits
        );
        let _ = writeln!(
            s,
            "\n{:<3} {:<28} {:>7} {:>5} {:>5} {:>5} {:>5} {:>5} {:>8} {:>7} {:>10} {:>10}",
            "#", "layer", "neurons", "in", "acc", "win", "lut", "PBS", "KS", "σ", "p_fail", "worst"
        );
        for (i, l) in self.layers.iter().enumerate() {
            let _ = writeln!(
                s,
                "{:<3} {:<28} {:>7} {:>5} {:>5} {:>5} {:>5} {:>5} {:>8} {:>7.3} {:>10} {:>10}",
                i,
                truncate(&l.label, 28),
                l.neurons,
                l.input_bits,
                l.accumulator_bits,
                l.window_bits,
                l.lut_output_bits,
                l.bootstraps,
                l.keyswitches,
                l.max_sigma,
                fmt_p(l.p_fail_mean),
                fmt_p(l.p_fail_worst)
            );
        }
        let _ = writeln!(
            s,
            "\nper inference: {} bootstraps, {} keyswitches; predicted p_fail {} (mean inputs), {} (worst calibrated inputs)",
            self.pbs_per_inference,
            self.ks_per_inference,
            fmt_p(self.p_fail_inference),
            fmt_p(self.p_fail_inference_worst)
        );
        let _ = writeln!(
            s,
            "(σ in accumulator units; p_fail per bootstrap: probability the noise changes the table's output; from {} calibration samples)",
            self.calibration_samples
        );
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// `2^-x` style formatting for probabilities.
pub fn fmt_p(p: f64) -> String {
    if p <= 0.0 {
        "0".to_string()
    } else if p < 1e-300 {
        "<2^-996".to_string()
    } else {
        format!("2^{:.1}", p.log2())
    }
}
