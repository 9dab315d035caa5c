//! Choosing compile options for a model.
//!
//! `auto` tries the cheapest vetted parameter set first (2_2, N = 2048, a
//! 5-bit window) and moves to the larger one (3_3, N = 8192, a 7-bit window)
//! only when the cheaper one loses more than `max_loss` accuracy on the
//! **training** rows (the test rows are never used to choose). Within a
//! parameter set, input and activation widths are chosen the same way.

use blindfold_circuits::compile::CompileOptions;
use blindfold_circuits::params::ParamSet;
use blindfold_circuits::pipeline::{circuit_accuracy, compile_bundle, Compiled, ModelBundle};
use blindfold_circuits::quant::QuantConfig;

/// Window bits used with each parameter set (largest with a tiny failure rate).
pub fn default_window(params: ParamSet) -> u32 {
    match params {
        ParamSet::Message2Carry2 => 5,
        ParamSet::Message3Carry3 => 7,
    }
}

/// Training-row accuracy of the float graph.
fn float_train_accuracy(bundle: &ModelBundle) -> anyhow::Result<f64> {
    let (x, y) = bundle.rows(bundle.train)?;
    let mut ok = 0;
    for (r, l) in x.iter().zip(&y) {
        let xf: Vec<f32> = r.iter().map(|v| *v as f32).collect();
        if blindfold_circuits::data::argmax(&bundle.graph.eval_logits::<f32>(&xf)?) == *l {
            ok += 1;
        }
    }
    Ok(ok as f64 / y.len() as f64)
}

/// Picks options: `params = None` means auto.
pub fn choose(
    bundle: &ModelBundle,
    params: Option<ParamSet>,
    base: &QuantConfig,
    fixed_widths: bool,
    explicit_window: bool,
    max_loss: f64,
    log: &mut dyn FnMut(String),
) -> anyhow::Result<(CompileOptions, Compiled)> {
    let candidates: Vec<ParamSet> = match params {
        Some(p) => vec![p],
        None => vec![ParamSet::Message2Carry2, ParamSet::Message3Carry3],
    };
    let float_acc = float_train_accuracy(bundle)?;
    let (xtr, ytr) = bundle.dataset.rows(bundle.train)?;
    let mut best: Option<(f64, CompileOptions, Compiled)> = None;
    for (ci, ps) in candidates.iter().enumerate() {
        let mut variants = Vec::new();
        if fixed_widths {
            variants.push(base.clone());
        } else {
            for ib in [2u32, 3] {
                for ab in [2u32, 3, 4] {
                    let mut q = base.clone();
                    q.input_bits = ib;
                    q.activation_bits = ab;
                    variants.push(q);
                }
            }
        }
        let mut best_here: Option<(f64, CompileOptions, Compiled)> = None;
        for mut q in variants {
            if !explicit_window {
                q.accumulator_bits = default_window(*ps);
            }
            let opts = CompileOptions {
                params: *ps,
                quant: q,
            };
            let compiled = match compile_bundle(bundle, &opts) {
                Ok(c) => c,
                Err(e) => {
                    log(format!("  {} {:?}: {e}", ps.short_name(), opts.quant));
                    continue;
                }
            };
            let (ok, n) = circuit_accuracy(&compiled.circuit, &xtr, &ytr)?;
            let acc = ok as f64 / n as f64;
            if best_here.as_ref().is_none_or(|(a, _, _)| acc > *a) {
                best_here = Some((acc, opts, compiled));
            }
        }
        let Some((acc, opts, compiled)) = best_here else {
            continue;
        };
        log(format!(
            "params {}: best training accuracy {:.4} (float {:.4}) with {}-bit inputs, {}-bit activations, {}-bit window",
            ps.short_name(),
            acc,
            float_acc,
            opts.quant.input_bits,
            opts.quant.activation_bits,
            opts.quant.accumulator_bits
        ));
        let good = float_acc - acc <= max_loss;
        let last = ci + 1 == candidates.len();
        if good || last {
            return Ok((opts, compiled));
        }
        if best.as_ref().is_none_or(|(a, _, _)| acc > *a) {
            best = Some((acc, opts, compiled));
        }
    }
    best.map(|(_, o, c)| (o, c))
        .ok_or_else(|| anyhow::anyhow!("no candidate configuration compiled"))
}
