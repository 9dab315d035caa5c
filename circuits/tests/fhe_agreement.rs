//! Clear vs FHE evaluator on real ciphertexts: the decrypted outputs must
//! equal the clear evaluator's, bit for bit.

use blindfold_circuits::compile::CompileOptions;
use blindfold_circuits::eval::clear;
use blindfold_circuits::eval::fhe::{
    Blob, ClientKey, CompressedEvaluationKey, EncryptedInput, FheEvaluator,
};
use blindfold_circuits::params::ParamSet;
use blindfold_circuits::pipeline::{compile_bundle, DataOverride, ModelBundle};
use blindfold_circuits::quant::QuantConfig;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

#[test]
fn digits_mlp_fhe_matches_clear() {
    let bundle =
        ModelBundle::load(&repo("models/digits-mlp.onnx"), &DataOverride::default()).unwrap();
    let opts = CompileOptions {
        params: ParamSet::Message2Carry2,
        quant: QuantConfig {
            accumulator_bits: 5,
            input_bits: 2,
            activation_bits: 2,
            ..Default::default()
        },
    };
    let circuit = compile_bundle(&bundle, &opts).unwrap().circuit;
    assert_eq!(circuit.pbs_per_inference(), 42);
    let ck = ClientKey::generate(circuit.params);
    let ek_bytes = ck.evaluation_key().to_bytes().unwrap();
    // what the server receives: bytes, size-limited and version-checked
    let ek = CompressedEvaluationKey::from_bytes(&ek_bytes, 1 << 30).unwrap();
    ek.check_conformance().unwrap();
    let ek = ek.decompress();
    let eval = FheEvaluator::new(&circuit, &ek).unwrap();
    let (rows, _) = bundle.dataset.rows(bundle.test).unwrap();
    let mut agree = 0;
    let n = 6;
    for raw in rows.iter().take(n) {
        let q = circuit.input.quantize(raw).unwrap();
        let expected = clear::evaluate(&circuit, &q).unwrap();
        let enc = ck.encrypt(&circuit, &q).unwrap();
        let enc = EncryptedInput::from_bytes(&enc.to_bytes().unwrap(), 1 << 20).unwrap();
        let (out, stats) = eval.evaluate(&enc).unwrap();
        assert_eq!(stats.bootstraps, 42);
        assert_eq!(stats.keyswitches, 10);
        let got = ck.decrypt(&circuit, &out).unwrap();
        if got == expected {
            agree += 1;
        } else {
            eprintln!("disagreement: clear {expected:?} fhe {got:?}");
        }
    }
    // predicted p_fail per inference for this circuit is ~2^-30: expect all to agree
    assert!(
        circuit.report.p_fail_inference < 1e-6,
        "{}",
        circuit.report.p_fail_inference
    );
    assert_eq!(agree, n);
}

/// Inputs unlike the calibration set push accumulators out of their window;
/// the clear evaluator must still predict the encrypted result exactly
/// (negacyclic wrap, no silent clipping).
#[test]
fn out_of_window_inputs_wrap_identically() {
    let bundle =
        ModelBundle::load(&repo("models/digits-mlp.onnx"), &DataOverride::default()).unwrap();
    let opts = CompileOptions {
        params: ParamSet::Message2Carry2,
        quant: QuantConfig {
            accumulator_bits: 5,
            input_bits: 2,
            activation_bits: 2,
            refine_sweeps: 0,
            ..Default::default()
        },
    };
    let circuit = compile_bundle(&bundle, &opts).unwrap().circuit;
    let n = circuit.input.len();
    let max = (1i64 << circuit.input.bits) - 1;
    let probes: Vec<Vec<i64>> = vec![
        vec![max; n],
        vec![0; n],
        (0..n).map(|i| if i % 2 == 0 { max } else { 0 }).collect(),
    ];
    // at least one probe must actually leave the window somewhere
    let window = circuit.window();
    let overflowing = probes
        .iter()
        .filter(|q| {
            let l = &circuit.layers[0];
            (0..l.out_len).any(|j| {
                let a: i64 = l
                    .row(j)
                    .iter()
                    .zip(q.iter())
                    .map(|(w, x)| w * x)
                    .sum::<i64>()
                    + l.offset[j];
                !(0..window).contains(&a)
            })
        })
        .count();
    assert!(overflowing > 0, "no probe left the window");
    let ck = ClientKey::generate(circuit.params);
    let ek = ck.evaluation_key().decompress();
    let eval = FheEvaluator::new(&circuit, &ek).unwrap();
    for q in &probes {
        let expected = clear::evaluate(&circuit, q).unwrap();
        let (out, _) = eval.evaluate(&ck.encrypt(&circuit, q).unwrap()).unwrap();
        assert_eq!(ck.decrypt(&circuit, &out).unwrap(), expected);
    }
}
