//! The compiled circuits shipped in `models/` (which the server loads) are
//! what the current compiler produces from the shipped ONNX models, with the
//! options `models/README.md` gives.

use std::path::Path;

use blindfold_compiler::pipeline::{DataOverride, ModelBundle};
use blindfold_compiler::quant::QuantConfig;
use blindfold_compiler::select;
use blindfold_runtime::circuit::Circuit;
use blindfold_runtime::params::ParamSet;

fn recompile(model: &str, params: Option<ParamSet>, widths: select::Widths) -> Circuit {
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
        &widths,
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
    // R1, R2 and R3 are what `auto` picks
    for m in ["cancer-mlp", "digits-mlp", "digits-cnn"] {
        assert_eq!(
            recompile(m, None, select::Widths::default()),
            shipped(&format!("{m}.circuit.json")),
            "{m}"
        );
    }
    // the exact 2_2 variant some of the lab's privacy tests run on
    let exact = select::Widths {
        input_bits: Some(2),
        activation_bits: Some(2),
        rounding_bits: Some(0),
        clip_ranges: Some(false),
        margin: Some(1),
        ..Default::default()
    };
    assert_eq!(
        recompile("digits-mlp", Some(ParamSet::Message2Carry2), exact),
        shipped("digits-mlp-fast.circuit.json")
    );
    // the exact 3_3 compile the attack lab's R1 victims and the hardening
    // report run on
    let exact = select::Widths {
        input_bits: Some(3),
        activation_bits: Some(4),
        ..exact
    };
    assert_eq!(
        recompile("digits-mlp", Some(ParamSet::Message3Carry3), exact),
        shipped("digits-mlp-exact.circuit.json")
    );
    // R3's exact 3_3 compile, the service tests' 3_3 model
    let exact = select::Widths {
        activation_bits: Some(3),
        ..exact
    };
    assert_eq!(
        recompile("cancer-mlp", Some(ParamSet::Message3Carry3), exact),
        shipped("cancer-mlp-exact.circuit.json")
    );
}
