//! The compiled circuits shipped in `models/` (which the server loads) are
//! what the current compiler produces from the shipped ONNX models, with the
//! options `models/README.md` gives.

use std::path::Path;

use blindfold_compiler::pipeline::{DataOverride, ModelBundle};
use blindfold_compiler::quant::QuantConfig;
use blindfold_compiler::select;
use blindfold_runtime::circuit::Circuit;
use blindfold_runtime::params::ParamSet;

fn recompile(model: &str, params: Option<ParamSet>) -> Circuit {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bundle = ModelBundle::load(
        &root.join(format!("models/{model}.onnx")),
        &DataOverride::default(),
    )
    .unwrap();
    let (_, compiled) = select::choose(
        &bundle,
        params,
        &QuantConfig::default(),
        &select::Widths::default(),
        0.015,
        &mut |_| {},
    )
    .unwrap();
    compiled.circuit
}

fn shipped(file: &str) -> Circuit {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Circuit::load(&root.join("models").join(file)).unwrap()
}

#[test]
fn shipped_circuits_match_a_fresh_compile() {
    assert_eq!(
        recompile("cancer-mlp", None),
        shipped("cancer-mlp.circuit.json")
    );
    assert_eq!(
        recompile("digits-mlp", Some(ParamSet::Message2Carry2)),
        shipped("digits-mlp-fast.circuit.json")
    );
}
