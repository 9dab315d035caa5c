//! How a circuit was quantized: recorded in the circuit artifact.

use serde::{Deserialize, Serialize};

/// How weights are rounded to integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rounding {
    Nearest,
    ErrorFeedback,
}

/// Bit widths and options of the quantizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantConfig {
    /// Bits of each quantized input feature.
    pub input_bits: u32,
    /// Bits of each hidden activation (default for every hidden stage).
    pub activation_bits: u32,
    /// Per hidden stage overrides of `activation_bits` (stage index → bits).
    #[serde(default)]
    pub stage_activation_bits: Vec<(usize, u32)>,
    /// Accumulator window: every accumulator must take at most
    /// `2^accumulator_bits` distinct values on the calibration set.
    pub accumulator_bits: u32,
    /// Bits of the requantized logits the client decrypts.
    pub output_bits: u32,
    /// Spare accumulator values kept on each side of the calibrated range.
    pub margin: u32,
    pub rounding: Rounding,
    /// Sweeps of greedy rounding refinement on the calibration set (0 = off).
    #[serde(default)]
    pub refine_sweeps: usize,
    /// Accumulator bits below the window, rounded away by each bootstrap
    /// (approximate rounding): accumulators take up to
    /// `2^(accumulator_bits + rounding_bits)` values, so weights are that
    /// much finer. 0 is the exact mode.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rounding_bits: u32,
    /// Per stage overrides of `rounding_bits` (stage index → bits): each
    /// layer's weight and accumulator precision chosen under its own noise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage_rounding_bits: Vec<(usize, u32)>,
    /// Clip input and activation ranges to the tail quantiles that minimize
    /// the mean squared quantization error on the calibration set (instead
    /// of the full calibrated min..max).
    #[serde(default, skip_serializing_if = "is_false")]
    pub clip_ranges: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Default for QuantConfig {
    fn default() -> Self {
        Self {
            input_bits: 3,
            activation_bits: 3,
            stage_activation_bits: Vec::new(),
            accumulator_bits: 6,
            output_bits: 10,
            margin: 1,
            rounding: Rounding::ErrorFeedback,
            refine_sweeps: 2,
            rounding_bits: 0,
            stage_rounding_bits: Vec::new(),
            clip_ranges: false,
        }
    }
}

impl QuantConfig {
    /// Rounding bits of stage `stage` (its override, else `rounding_bits`).
    pub fn rounding_bits_for(&self, stage: usize) -> u32 {
        self.stage_rounding_bits
            .iter()
            .find(|(s, _)| *s == stage)
            .map_or(self.rounding_bits, |(_, b)| *b)
    }
}
