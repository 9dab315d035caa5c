use blindfold_circuits::compile::CompileOptions;
use blindfold_circuits::params::ParamSet;
use blindfold_circuits::pipeline::{circuit_accuracy, compile_bundle, DataOverride, ModelBundle};
use blindfold_circuits::quant::{QuantConfig, Rounding};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = &args[1];
    let b = ModelBundle::load(model.as_ref(), &DataOverride::default()).unwrap();
    println!("float {:?}", b.float_accuracy().unwrap());
    let (x, y) = b.dataset.rows(b.test).unwrap();
    for p in [5u32, 6, 7] {
        for ib in [2u32, 3] {
            for ab in [2u32, 3, 4] {
                for r in [Rounding::Nearest, Rounding::ErrorFeedback] {
                    let q = QuantConfig {
                        input_bits: ib,
                        activation_bits: ab,
                        accumulator_bits: p,
                        rounding: r,
                        ..Default::default()
                    };
                    let opts = CompileOptions {
                        params: ParamSet::Message2Carry2,
                        quant: q,
                    };
                    match compile_bundle(&b, &opts) {
                        Ok(c) => {
                            let acc = circuit_accuracy(&c.circuit, &x, &y).unwrap();
                            println!(
                                "p={p} in={ib} act={ab} {r:?}: {acc:?} pfail={:.2e} worst={:.2e}",
                                c.circuit.report.p_fail_inference,
                                c.circuit.report.p_fail_inference_worst
                            );
                        }
                        Err(e) => println!("p={p} in={ib} act={ab} {r:?}: {e}"),
                    }
                }
            }
        }
    }
}
