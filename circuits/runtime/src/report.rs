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
    /// Accumulator bits below the window, rounded away by the bootstrap.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub acc_shift: u32,
    /// Mean probability that noise moves a bootstrap one box from the
    /// clear path's rounding and changes its output (a rounding flip;
    /// only with an accumulator shift), worst neuron.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub p_flip_mean: f64,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
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
    /// Expected rounding flips per inference (bootstraps one box from the
    /// clear path's rounding; only layers with an accumulator shift). What
    /// the clear path's simulation samples.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub flips_per_inference: f64,
    pub calibration_samples: usize,
    /// Range of the decoded logits on the calibration set (absent in
    /// circuits compiled before it was recorded).
    #[serde(default)]
    pub logits: Option<LogitStats>,
    /// Why the compile options were chosen (`auto`): one line per candidate
    /// parameter set tried, then the decision. Empty when nothing was chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selection: Vec<String>,
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

/// What noise does to one bootstrap whose accumulator is `fine` in units of
/// `2^shift` per box (`shift = 0`: exactly box `fine`): the probability of
/// a rounding flip (one box away, a different output) and of a failure
/// (two boxes or more away with a different output; in exact mode any
/// box). Returns `(flip, fail)`.
pub fn bootstrap_change_probabilities(
    table: &[i64],
    precision_bits: u32,
    fine: i64,
    shift: u32,
    sigma: f64,
    out_modulus: i64,
) -> (f64, f64) {
    if shift == 0 {
        return (
            0.0,
            bootstrap_failure_probability(table, precision_bits, fine, sigma, out_modulus),
        );
    }
    let unit = 1i64 << shift;
    let m = (fine + unit / 2).div_euclid(unit);
    let offset = (fine - m * unit) as f64 / unit as f64;
    let reach = (sigma * 40.0).ceil() as i64 + 2;
    let here = bootstrap_value(table, precision_bits, m, out_modulus);
    let (mut flip, mut fail) = (0.0, 0.0);
    for d in -reach..=reach {
        if d == 0 || bootstrap_value(table, precision_bits, m + d, out_modulus) == here {
            continue;
        }
        let pd = crate::params::shift_probability_at(d, sigma, offset);
        if d.abs() == 1 {
            flip += pd;
        } else {
            fail += pd;
        }
    }
    (flip, fail)
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
        if self.layers.iter().any(|l| l.acc_shift > 0) {
            let _ = writeln!(
                s,
                "approximate rounding: accumulator bits below the window per layer [{}]; rounding flips (one box, a different output) per bootstrap, mean of the worst neuron: [{}]; {:.3} flips per inference expected",
                self.layers
                    .iter()
                    .map(|l| l.acc_shift.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.layers
                    .iter()
                    .map(|l| format!("{:.4}", l.p_flip_mean))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.flips_per_inference
            );
        }
        let _ = writeln!(
            s,
            "(σ in box units; p_fail per bootstrap: probability the noise changes the table's output{}; from {} calibration samples)",
            if self.layers.iter().any(|l| l.acc_shift > 0) {
                " beyond a one-box rounding flip"
            } else {
                ""
            },
            self.calibration_samples
        );
        if !self.selection.is_empty() {
            let _ = writeln!(s, "\nselection:");
            for line in &self.selection {
                let _ = writeln!(s, "  {line}");
            }
        }
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
