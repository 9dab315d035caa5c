//! Choosing compile options for a model, without looking at the test rows.
//!
//! The training rows are split: the first 80 % calibrate (and refine) the
//! quantizer, the last 20 % validate it. `auto` tries the cheapest vetted
//! parameter set first (2_2, N = 2048, 5-bit window) and moves to the larger
//! one (3_3, N = 8192, 7-bit window) when the cheaper one loses more than
//! `max_loss` accuracy against the float model on the validation rows.
//! Within a parameter set, the input and activation widths with the best
//! validation accuracy (ties: lowest KL to the float model) win. The chosen
//! configuration is then recompiled on all training rows.

use crate::compile::CompileOptions;
use crate::pipeline::{compile_bundle, fidelity, Compiled, ModelBundle};
use crate::quant::QuantConfig;
use blindfold_runtime::data::RowRange;
use blindfold_runtime::params::ParamSet;

/// Window bits used with each parameter set: the largest at which the
/// modulus switch and keyswitch alone move an accumulator by half a box
/// with probability below about 10⁻¹⁰ (σ ≈ 0.076 box on every set below;
/// the window grows by one bit with each doubling of N).
pub fn default_window(params: ParamSet) -> u32 {
    match params {
        ParamSet::Message2Carry2 => 5,
        ParamSet::Message2Carry3 | ParamSet::Message3Carry2 => 6,
        ParamSet::Message3Carry3 => 7,
    }
}

/// Widths fixed by the user; `None` means chosen here.
#[derive(Clone, Copy, Debug, Default)]
pub struct Widths {
    pub input_bits: Option<u32>,
    pub activation_bits: Option<u32>,
    pub accumulator_bits: Option<u32>,
}

/// Picks options (`params = None` means auto) and compiles with them on all
/// training rows.
pub fn choose(
    bundle: &ModelBundle,
    params: Option<ParamSet>,
    base: &QuantConfig,
    widths: &Widths,
    max_loss: f64,
    log: &mut dyn FnMut(String),
) -> Result<(CompileOptions, Compiled), crate::Error> {
    let candidates: Vec<ParamSet> = match params {
        Some(p) => vec![p],
        None => vec![ParamSet::Message2Carry2, ParamSet::Message3Carry3],
    };
    let input_choices = widths.input_bits.map_or(vec![2, 3], |b| vec![b]);
    let activation_choices = widths.activation_bits.map_or(vec![2, 3, 4], |b| vec![b]);
    let mut variants = Vec::new();
    for ib in &input_choices {
        for ab in &activation_choices {
            let mut q = base.clone();
            q.input_bits = *ib;
            q.activation_bits = *ab;
            variants.push(q);
        }
    }
    if candidates.len() == 1 && variants.len() == 1 {
        // nothing to choose
        let mut q = variants.remove(0);
        q.accumulator_bits = widths
            .accumulator_bits
            .unwrap_or_else(|| default_window(candidates[0]));
        let opts = CompileOptions {
            params: candidates[0],
            quant: q,
        };
        let compiled = compile_bundle(bundle, &opts)?;
        return Ok((opts, compiled));
    }
    let train = bundle.train;
    let n_train = train.end - train.start + 1;
    let split = train.start + (n_train * 4 / 5).max(1);
    let (calib, val) = if split > train.start && split <= train.end {
        (
            RowRange {
                start: train.start,
                end: split - 1,
            },
            RowRange {
                start: split,
                end: train.end,
            },
        )
    } else {
        (train, train)
    };
    let mut sub = bundle.clone();
    sub.train = calib;
    let mut chosen: Option<(f64, CompileOptions)> = None;
    for (ci, ps) in candidates.iter().enumerate() {
        let mut best: Option<(f64, f64, CompileOptions)> = None;
        let mut float_acc = 0.0;
        for v in &variants {
            let mut q = v.clone();
            q.accumulator_bits = widths
                .accumulator_bits
                .unwrap_or_else(|| default_window(*ps));
            let opts = CompileOptions {
                params: *ps,
                quant: q,
            };
            let compiled = match compile_bundle(&sub, &opts) {
                Ok(c) => c,
                Err(e) => {
                    log(format!("  {}: {e}", ps.short_name()));
                    continue;
                }
            };
            let val_res = fidelity(bundle, &compiled.circuit, val)?;
            float_acc = val_res.float_accuracy;
            let better = best.as_ref().is_none_or(|(a, k, _)| {
                val_res.accuracy > *a || (val_res.accuracy == *a && val_res.kl < *k)
            });
            if better {
                best = Some((val_res.accuracy, val_res.kl, opts));
            }
        }
        let Some((acc, kl, opts)) = best else {
            continue;
        };
        log(format!(
            "params {}: validation accuracy {:.4} (float {:.4}, KL {:.4}) with {}-bit inputs, {}-bit activations, {}-bit window (rows {calib} calibrate, {val} validate)",
            ps.short_name(),
            acc,
            float_acc,
            kl,
            opts.quant.input_bits,
            opts.quant.activation_bits,
            opts.quant.accumulator_bits
        ));
        let good = float_acc - acc <= max_loss;
        if good || ci + 1 == candidates.len() {
            chosen = Some((acc, opts));
            break;
        }
        if chosen.as_ref().is_none_or(|(a, _)| acc > *a) {
            chosen = Some((acc, opts));
        }
    }
    let (_, opts) = chosen
        .ok_or_else(|| crate::Error::Compile("no candidate configuration compiled".into()))?;
    let compiled = compile_bundle(bundle, &opts)?;
    Ok((opts, compiled))
}
