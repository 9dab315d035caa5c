//! Developer tool: clear-circuit test accuracy and training-set fidelity of
//! quantization variants (the CLI never selects on test rows; this prints
//! them for inspection).
use blindfold_compiler::compile::CompileOptions;
use blindfold_compiler::pipeline::{circuit_accuracy, compile_bundle, DataOverride, ModelBundle};
use blindfold_compiler::quant::{QuantConfig, Rounding};
use blindfold_runtime::params::ParamSet;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = &args[1];
    let params = ParamSet::from_name(args.get(2).map(String::as_str).unwrap_or("3_3")).unwrap();
    let p: u32 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(7);
    let b = ModelBundle::load(model.as_ref(), &DataOverride::default()).unwrap();
    println!("float {:?}", b.float_accuracy().unwrap());
    let (x, y) = b.dataset.rows(b.test).unwrap();
    for ib in [2u32, 3] {
        for ab in [2u32, 3, 4] {
            for sweeps in [0usize, 2] {
                let q = QuantConfig {
                    input_bits: ib,
                    activation_bits: ab,
                    accumulator_bits: p,
                    rounding: Rounding::ErrorFeedback,
                    refine_sweeps: sweeps,
                    ..Default::default()
                };
                let opts = CompileOptions { params, quant: q };
                match compile_bundle(&b, &opts) {
                    Ok(c) => {
                        let acc = circuit_accuracy(&c.circuit, &x, &y).unwrap();
                        let kl = blindfold_compiler::pipeline::fidelity(&b, &c.circuit, b.train)
                            .unwrap()
                            .kl;
                        println!(
                            "in={ib} act={ab} refine={sweeps}: test {acc:?} train-KL {kl:.4} pfail={:.2e}",
                            c.circuit.report.p_fail_inference
                        );
                    }
                    Err(e) => println!("in={ib} act={ab}: {e}"),
                }
            }
        }
    }
}
