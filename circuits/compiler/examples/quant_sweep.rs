//! Developer tool: a grid of quantization variants on one parameter set,
//! printing what the chooser sees (fidelity on the validation rows, the last
//! 20 % of the training rows, clear path simulating the noise) next to the
//! test-row figures it never sees. For checking that the chooser's
//! objective predicts test fidelity; the CLI never selects on test rows.
//!
//! cargo run --release -p blindfold-compiler --example quant_sweep -- MODEL.onnx [SET] [REFINE] [MARGIN]
use blindfold_compiler::compile::CompileOptions;
use blindfold_compiler::pipeline::{
    compile_bundle, fidelity_of, DataOverride, ModelBundle, Reference,
};
use blindfold_compiler::quant::QuantConfig;
use blindfold_compiler::select::default_window;
use blindfold_runtime::data::RowRange;
use blindfold_runtime::params::ParamSet;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .get(1)
        .ok_or("usage: quant_sweep MODEL.onnx [SET] [REFINE] [MARGIN]")?;
    let params = ParamSet::from_name(args.get(2).map(String::as_str).unwrap_or("2_2"))
        .ok_or("unknown parameter set")?;
    let refine: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let margin: u32 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let b = ModelBundle::load(model.as_ref(), &DataOverride::default())?;
    let n = b.train.end - b.train.start + 1;
    let split = b.train.start + n * 4 / 5;
    let calib = RowRange {
        start: b.train.start,
        end: split - 1,
    };
    let val = RowRange {
        start: split,
        end: b.train.end,
    };
    let mut sub = b.clone();
    sub.train = calib;
    let val_ref = Reference::new(&b, val)?;
    let test_ref = Reference::new(&b, b.test)?;
    let window = default_window(params);
    let max_round = params.max_output_bits().saturating_sub(window).min(6);
    println!("float test {:?}", b.float_accuracy()?);
    for round in 0..=max_round {
        for ib in 3..=window.min(6) {
            for ab in 3..=window.min(5) {
                for clip in [false, true] {
                    let q = QuantConfig {
                        input_bits: ib,
                        activation_bits: ab,
                        accumulator_bits: window,
                        rounding_bits: round,
                        clip_ranges: clip,
                        refine_sweeps: refine,
                        margin,
                        ..Default::default()
                    };
                    let opts = CompileOptions { params, quant: q };
                    match compile_bundle(&sub, &opts) {
                        Ok(c) => {
                            let v = fidelity_of(&val_ref, &c.circuit, 2, 7)?;
                            let t = fidelity_of(&test_ref, &c.circuit, 2, 7)?;
                            println!(
                                "K={round} in={ib} act={ab} clip={clip:<5}  val: disagree {:.4} logit {:.4} KL {:.4} | test: disagree {:.4} logit {:.4} acc {:.4} | p_fail {:.1e}",
                                1.0 - v.agreement,
                                v.logit_error,
                                v.kl,
                                1.0 - t.agreement,
                                t.logit_error,
                                t.accuracy,
                                c.circuit.report.p_fail_inference
                            );
                        }
                        Err(e) => println!("K={round} in={ib} act={ab} clip={clip}: {e}"),
                    }
                }
            }
        }
    }
    Ok(())
}
