//! Compilation: a [`QuantizedNet`] becomes a [`Circuit`] — the versioned
//! artifact both sides execute (see [`blindfold_runtime::circuit`] for the
//! encoding).

pub mod report;

use serde::{Deserialize, Serialize};

pub use blindfold_runtime::circuit::{
    Circuit, CircuitLayer, ClientSpec, InputSpec, LayerReport, LogitStats, OutputKind, Report,
    CIRCUIT_FORMAT_VERSION,
};

use crate::quant::{QuantConfig, QuantizedNet};
use crate::{Error, Result};
use blindfold_runtime::data::Preprocessing;
use blindfold_runtime::params::ParamSet;

/// Compiler options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompileOptions {
    pub params: ParamSet,
    pub quant: QuantConfig,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            params: ParamSet::Message2Carry2,
            quant: QuantConfig::default(),
        }
    }
}

/// Compiles a quantized network. `calibration` are the quantized calibration
/// inputs; they give each bootstrap's input distribution for the failure
/// report.
pub fn compile(
    name: &str,
    qnet: &QuantizedNet,
    preprocessing: Preprocessing,
    params: ParamSet,
    calibration: &[Vec<i64>],
) -> Result<Circuit> {
    let p = qnet.config.accumulator_bits;
    let n = params.polynomial_size() as u64;
    if (1u64 << p) > n {
        return Err(Error::Compile(format!(
            "a {p}-bit accumulator needs a lookup table of {} entries, more than N = {n} of {}",
            1u64 << p,
            params.name()
        )));
    }
    let window = 1i64 << p;
    let mut layers = Vec::with_capacity(qnet.stages.len());
    for (l, s) in qnet.stages.iter().enumerate() {
        let mut offset = Vec::with_capacity(s.out_len);
        let mut lut = Vec::with_capacity(s.out_len);
        // accumulator units per box: the bootstrap rounds the rest away
        let unit = 1i64 << s.shift;
        let margin = (s.margin as i64) << s.shift;
        for j in 0..s.out_len {
            let lo = s.window_lo(j);
            if s.acc_max[j] + margin - lo >= window * unit {
                return Err(Error::Compile(format!(
                    "layer {l} neuron {j}: calibrated accumulator range [{}, {}] does not fit {} bits",
                    s.acc_min[j],
                    s.acc_max[j],
                    p + s.shift
                )));
            }
            offset.push(s.bias[j] - lo);
            // box m holds the accumulators that round to lo + m·unit
            lut.push(
                (0..window)
                    .map(|m| s.requantize(j, lo + m * unit))
                    .collect(),
            );
        }
        if !s.is_output && s.out.bits > p {
            return Err(Error::Compile(format!(
                "layer {l}: {}-bit activations exceed the {p}-bit encoding",
                s.out.bits
            )));
        }
        layers.push(crate::compile::CircuitLayer {
            label: s.label.clone(),
            in_len: s.in_len,
            out_len: s.out_len,
            weight: s.weight.clone(),
            offset,
            lut,
            lut_output_bits: s.out.bits,
            keyswitch: l > 0,
            is_output: s.is_output,
            acc_shift: s.shift,
        });
    }
    let last = qnet
        .stages
        .last()
        .ok_or_else(|| Error::Compile("empty network".into()))?;
    let mut circuit = Circuit {
        format_version: CIRCUIT_FORMAT_VERSION,
        name: name.to_string(),
        params,
        precision_bits: p,
        output_bits: qnet.config.output_bits,
        input: InputSpec {
            shape: qnet.input_shape.clone(),
            bits: qnet.input.bits,
            scale: qnet.input.scale.clone(),
            zero_point: qnet.input.zero_point.clone(),
            preprocessing,
        },
        layers,
        classes: last.out_len,
        output_scale: last.out.scale[0],
        output_zero_point: last.out.zero_point[0],
        dropped_softmax: qnet.dropped_softmax,
        quant_config: qnet.config.clone(),
        report: Report::default(),
    };
    circuit.validate()?;
    circuit.report = report::build(&circuit, calibration)?;
    Ok(circuit)
}
