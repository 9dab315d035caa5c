//! Post-training quantization: accuracy of the quantized clear circuit
//! against the float model, on the full test split.

use blindfold_compiler::compile::{Circuit, CompileOptions};
use blindfold_compiler::pipeline::{circuit_accuracy, compile_bundle, DataOverride, ModelBundle};
use blindfold_compiler::quant::QuantConfig;
use blindfold_runtime::params::ParamSet;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn compiled(model: &str, params: ParamSet, quant: QuantConfig) -> (ModelBundle, Circuit) {
    let bundle = ModelBundle::load(&repo(model), &DataOverride::default()).unwrap();
    let c = compile_bundle(&bundle, &CompileOptions { params, quant })
        .unwrap()
        .circuit;
    (bundle, c)
}

#[test]
fn digits_mlp_quantized_within_one_and_a_half_points() {
    // the configuration `blindfold bench` selects for R1 (on training rows only)
    let (bundle, circuit) = compiled(
        "models/digits-mlp.onnx",
        ParamSet::Message3Carry3,
        QuantConfig {
            accumulator_bits: 7,
            input_bits: 3,
            activation_bits: 4,
            ..Default::default()
        },
    );
    let (x, y) = bundle.dataset.rows(bundle.test).unwrap();
    let (q, n) = circuit_accuracy(&circuit, &x, &y).unwrap();
    let (f, _) = bundle.float_accuracy().unwrap();
    eprintln!("digits-mlp: float {f}/{n}, quantized {q}/{n}");
    assert_eq!(n, 450);
    assert!(
        (f as f64 - q as f64) / n as f64 <= 0.015,
        "float {f}, quantized {q}"
    );
    assert_eq!(circuit.pbs_per_inference(), 42);
    // every accumulator's calibrated range fits the window
    for l in &circuit.report.layers {
        assert!(l.accumulator_bits <= circuit.precision_bits);
    }
    assert!(circuit.report.p_fail_inference < 1e-6);
}

#[test]
fn error_feedback_rounding_beats_nearest_at_low_precision() {
    let base = QuantConfig {
        accumulator_bits: 5,
        input_bits: 2,
        activation_bits: 2,
        refine_sweeps: 0,
        ..Default::default()
    };
    let nearest = QuantConfig {
        rounding: blindfold_compiler::quant::Rounding::Nearest,
        ..base.clone()
    };
    let (bundle, ef) = compiled("models/digits-mlp.onnx", ParamSet::Message2Carry2, base);
    let (_, rn) = compiled("models/digits-mlp.onnx", ParamSet::Message2Carry2, nearest);
    let (x, y) = bundle.dataset.rows(bundle.train).unwrap();
    let (a, _) = circuit_accuracy(&ef, &x, &y).unwrap();
    let (b, _) = circuit_accuracy(&rn, &x, &y).unwrap();
    eprintln!("training rows: error feedback {a}, nearest {b}");
    assert!(a > b);
}

#[test]
fn cnn_lowers_pooling_into_the_dense_stage() {
    let (bundle, circuit) = compiled(
        "models/digits-cnn.onnx",
        ParamSet::Message3Carry3,
        QuantConfig {
            accumulator_bits: 7,
            input_bits: 3,
            activation_bits: 2,
            refine_sweeps: 0,
            ..Default::default()
        },
    );
    assert!(circuit.dropped_softmax);
    assert_eq!(circuit.layers.len(), 2);
    assert_eq!(circuit.layers[0].out_len, 4 * 6 * 6);
    assert_eq!(circuit.pbs_per_inference(), 144 + 10);
    let (x, y) = bundle.dataset.rows(bundle.test).unwrap();
    let (q, n) = circuit_accuracy(&circuit, &x, &y).unwrap();
    let (f, _) = bundle.float_accuracy().unwrap();
    eprintln!("digits-cnn: float {f}/{n}, quantized {q}/{n}");
    assert!((f as f64 - q as f64) / (n as f64) < 0.05);
}

#[test]
fn circuit_artifact_roundtrips_and_rejects_other_versions() {
    let (_, circuit) = compiled(
        "models/cancer-mlp.onnx",
        ParamSet::Message2Carry2,
        QuantConfig {
            accumulator_bits: 5,
            refine_sweeps: 0,
            ..Default::default()
        },
    );
    let json = circuit.to_json().unwrap();
    let back = Circuit::from_json(&json).unwrap();
    assert_eq!(back, circuit);
    let mut other = circuit.clone();
    other.format_version += 1;
    let err = Circuit::from_json(&other.to_json().unwrap()).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
    let mut broken = circuit.clone();
    broken.layers[1].lut.pop();
    assert!(Circuit::from_json(&broken.to_json().unwrap()).is_err());
    assert!(Circuit::from_json("{\"format_version\": 1").is_err());
    let report = circuit.report.render(&circuit.name);
    assert!(report.contains("V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128"));
    assert!(report.contains("p_fail"));
}

#[test]
fn lowering_preserves_the_float_model() {
    for model in [
        "models/digits-mlp.onnx",
        "models/digits-cnn.onnx",
        "models/cancer-mlp.onnx",
    ] {
        let bundle = ModelBundle::load(&repo(model), &DataOverride::default()).unwrap();
        let net = blindfold_compiler::quant::lower(&bundle.graph).unwrap();
        let (x, _) = bundle.rows(bundle.test).unwrap();
        for row in x.iter().take(20) {
            let lowered = net.eval(row);
            let graph = bundle.graph.eval_logits::<f64>(row).unwrap();
            assert_eq!(lowered.len(), graph.len());
            for (a, b) in lowered.iter().zip(&graph) {
                assert!(
                    (a - b).abs() < 1e-9 * (1.0 + b.abs()),
                    "{model}: {a} vs {b}"
                );
            }
        }
    }
}
