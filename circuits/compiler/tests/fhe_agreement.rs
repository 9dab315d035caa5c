//! Clear vs FHE evaluator on real ciphertexts: the decrypted outputs must
//! equal the clear evaluator's, bit for bit.

use blindfold_compiler::compile::{Circuit, CompileOptions};
use blindfold_compiler::pipeline::{compile_bundle, DataOverride, ModelBundle};
use blindfold_compiler::quant::QuantConfig;
use blindfold_runtime::ciphertext::EncryptedInput;
use blindfold_runtime::eval::fhe::{evaluate, Fhe, FheTables};
use blindfold_runtime::eval::{clear, never};
use blindfold_runtime::keys::{ClientKey, CompressedEvaluationKey};
use blindfold_runtime::params::ParamSet;
use blindfold_runtime::program::{Program, TableSet};
use blindfold_runtime::serial::{Bytes, Conformant};

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// R1 with the given parameter set and quantization.
fn digits_mlp(params: ParamSet, quant: QuantConfig) -> (ModelBundle, Circuit) {
    let bundle =
        ModelBundle::load(&repo("models/digits-mlp.onnx"), &DataOverride::default()).unwrap();
    let circuit = compile_bundle(&bundle, &CompileOptions { params, quant })
        .unwrap()
        .circuit;
    (bundle, circuit)
}

/// Encrypts each quantized input under fresh keys, evaluates it, and asserts
/// the decryption equals the clear evaluator's output and the bootstrap
/// count equals the circuit's.
fn assert_fhe_matches_clear(circuit: &Circuit, inputs: &[Vec<i64>]) {
    let ck = ClientKey::generate(circuit.params);
    let ek = ck.evaluation_key().decompress();
    let program = Program::from_circuit(circuit).unwrap();
    let tables = FheTables::new(&program);
    let backend = Fhe::new(&ek, &tables).unwrap();
    for q in inputs {
        let expected = clear::evaluate(circuit, q).unwrap();
        let enc = ck.encrypt(&circuit.client_spec(), q).unwrap();
        let (out, stats) =
            evaluate(&program, &backend, &TableSet::default(), &enc, &never).unwrap();
        assert_eq!(stats.bootstraps, circuit.pbs_per_inference());
        assert_eq!(ck.decrypt(&circuit.client_spec(), &out).unwrap(), expected);
    }
}

#[test]
fn digits_mlp_fhe_matches_clear() {
    let (bundle, circuit) = digits_mlp(
        ParamSet::Message2Carry2,
        QuantConfig {
            accumulator_bits: 5,
            input_bits: 2,
            activation_bits: 2,
            ..Default::default()
        },
    );
    assert_eq!(circuit.pbs_per_inference(), 42);
    let ck = ClientKey::generate(circuit.params);
    let ek_bytes = ck.evaluation_key().to_bytes().unwrap();
    // what the server receives: bytes, size-limited and version-checked
    let ek = CompressedEvaluationKey::from_bytes(&ek_bytes, 1 << 30).unwrap();
    ek.check().unwrap();
    let ek = ek.decompress();
    let program = Program::from_circuit(&circuit).unwrap();
    let tables = FheTables::new(&program);
    let backend = Fhe::new(&ek, &tables).unwrap();
    let (rows, _) = bundle.dataset.rows(bundle.test).unwrap();
    let mut agree = 0;
    let n = 6;
    for raw in rows.iter().take(n) {
        let q = circuit.input.quantize(raw).unwrap();
        let expected = clear::evaluate(&circuit, &q).unwrap();
        let enc = ck.encrypt(&circuit.client_spec(), &q).unwrap();
        let enc = EncryptedInput::from_bytes(&enc.to_bytes().unwrap(), 1 << 20).unwrap();
        let (out, stats) =
            evaluate(&program, &backend, &TableSet::default(), &enc, &never).unwrap();
        assert_eq!(stats.bootstraps, 42);
        assert_eq!(stats.keyswitches, 10);
        let got = ck.decrypt(&circuit.client_spec(), &out).unwrap();
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
    let (_, circuit) = digits_mlp(
        ParamSet::Message2Carry2,
        QuantConfig {
            accumulator_bits: 5,
            input_bits: 2,
            activation_bits: 2,
            refine_sweeps: 0,
            ..Default::default()
        },
    );
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
    assert_fhe_matches_clear(&circuit, &probes);
}

/// A three-stage model with sigmoid and tanh activations, built by hand:
/// every activation kind goes through lowering, quantization, compilation
/// and both evaluators.
#[test]
fn sigmoid_tanh_three_layer_model_matches() {
    use blindfold_compiler::compile::compile;
    use blindfold_compiler::onnx::builder::*;
    use blindfold_compiler::onnx::import_onnx_bytes;
    use blindfold_compiler::quant::{lower, quantize};
    use blindfold_runtime::data::Preprocessing;

    // deterministic pseudo-random weights
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let mut dense = |name: &str, out: usize, inp: usize| {
        let w: Vec<f32> = (0..out * inp).map(|_| rnd() as f32).collect();
        let b: Vec<f32> = (0..out).map(|_| (rnd() * 0.5) as f32).collect();
        (
            tensor_f32(&format!("{name}_w"), &[out as i64, inp as i64], &w),
            tensor_f32(&format!("{name}_b"), &[out as i64], &b),
        )
    };
    let (w1, b1) = dense("l1", 6, 8);
    let (w2, b2) = dense("l2", 4, 6);
    let (w3, b3) = dense("l3", 3, 4);
    let m = model(
        "input",
        &[8],
        "y",
        vec![
            node(
                "Gemm",
                "g1",
                &["input", "l1_w", "l1_b"],
                &["a"],
                vec![attr_int("transB", 1)],
            ),
            node("Sigmoid", "s", &["a"], &["b"], vec![]),
            node(
                "Gemm",
                "g2",
                &["b", "l2_w", "l2_b"],
                &["c"],
                vec![attr_int("transB", 1)],
            ),
            node("Tanh", "t", &["c"], &["d"], vec![]),
            node(
                "Gemm",
                "g3",
                &["d", "l3_w", "l3_b"],
                &["y"],
                vec![attr_int("transB", 1)],
            ),
        ],
        vec![w1, b1, w2, b2, w3, b3],
    );
    let graph = import_onnx_bytes(&encode(&m), "sig-tanh").unwrap();
    let net = lower(&graph).unwrap();
    assert_eq!(net.stages.len(), 3);
    let calib: Vec<Vec<f64>> = (0..300)
        .map(|_| (0..8).map(|_| rnd() * 2.0).collect())
        .collect();
    let config = QuantConfig {
        accumulator_bits: 5,
        input_bits: 3,
        activation_bits: 3,
        output_bits: 8,
        ..Default::default()
    };
    let qnet = quantize(&net, &calib, &config).unwrap();
    let qcalib: Vec<Vec<i64>> = calib
        .iter()
        .map(|x| qnet.quantize_input(x).unwrap())
        .collect();
    let circuit = compile(
        "sig-tanh",
        &qnet,
        Preprocessing::None,
        ParamSet::Message2Carry2,
        &qcalib,
    )
    .unwrap();
    assert_eq!(circuit.pbs_per_inference(), 6 + 4 + 3);
    assert_eq!(circuit.ks_per_inference(), 4 + 3);
    // the quantized circuit mostly agrees with the float model
    let agree = calib
        .iter()
        .zip(&qcalib)
        .filter(|(x, q)| {
            let f = blindfold_runtime::data::argmax(&net.eval(x));
            f == circuit.predict_class(&clear::evaluate(&circuit, q).unwrap())
        })
        .count();
    assert!(agree * 10 >= calib.len() * 8, "{agree}/{}", calib.len());
    assert_fhe_matches_clear(&circuit, &qcalib[..4]);
}

/// The configuration `blindfold bench` ships for R1 (3_3, 7-bit window).
#[test]
fn digits_mlp_on_message3_carry3_matches_clear() {
    let (bundle, circuit) = digits_mlp(
        ParamSet::Message3Carry3,
        QuantConfig {
            accumulator_bits: 7,
            input_bits: 3,
            activation_bits: 4,
            ..Default::default()
        },
    );
    let (rows, _) = bundle.dataset.rows(bundle.test).unwrap();
    let inputs: Vec<Vec<i64>> = rows[..2]
        .iter()
        .map(|r| circuit.input.quantize(r).unwrap())
        .collect();
    assert_fhe_matches_clear(&circuit, &inputs);
}

/// A purely linear model (softmax regression): one stage, whose bootstrap
/// requantizes the logits — the client still decrypts only bootstrap outputs.
#[test]
fn single_linear_layer_model_matches() {
    use blindfold_compiler::compile::compile;
    use blindfold_compiler::onnx::builder::*;
    use blindfold_compiler::onnx::import_onnx_bytes;
    use blindfold_compiler::quant::{lower, quantize};
    use blindfold_runtime::data::Preprocessing;

    let w: Vec<f32> = (0..5 * 3)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0)
        .collect();
    let m = model(
        "input",
        &[5],
        "p",
        vec![
            node(
                "Gemm",
                "g",
                &["input", "w", "b"],
                &["z"],
                vec![attr_int("transB", 1)],
            ),
            node("Softmax", "sm", &["z"], &["p"], vec![attr_int("axis", 1)]),
        ],
        vec![
            tensor_f32("w", &[3, 5], &w),
            tensor_f32("b", &[3], &[0.1, -0.2, 0.05]),
        ],
    );
    let graph = import_onnx_bytes(&encode(&m), "softmax-regression").unwrap();
    let net = lower(&graph).unwrap();
    assert_eq!(net.stages.len(), 1);
    assert!(net.dropped_softmax);
    let calib: Vec<Vec<f64>> = (0..64)
        .map(|i| {
            (0..5)
                .map(|k| ((i * (k + 3)) % 9) as f64 / 4.0 - 1.0)
                .collect()
        })
        .collect();
    let qnet = quantize(
        &net,
        &calib,
        &QuantConfig {
            accumulator_bits: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let qcalib: Vec<Vec<i64>> = calib
        .iter()
        .map(|x| qnet.quantize_input(x).unwrap())
        .collect();
    let circuit = compile(
        "lin",
        &qnet,
        Preprocessing::None,
        ParamSet::Message2Carry2,
        &qcalib,
    )
    .unwrap();
    assert_eq!(circuit.pbs_per_inference(), 3);
    assert_eq!(circuit.ks_per_inference(), 0);
    assert_fhe_matches_clear(&circuit, &qcalib[..3]);
}

/// R1 on an N = 4096 set (6-bit window): the Gaussian-noise sets run the
/// same program bit-exactly.
#[test]
fn digits_mlp_on_a_4096_set_matches_clear() {
    let (bundle, circuit) = digits_mlp(
        ParamSet::Message2Carry3,
        QuantConfig {
            accumulator_bits: 6,
            input_bits: 2,
            activation_bits: 3,
            ..Default::default()
        },
    );
    assert!(
        circuit.report.p_fail_inference < 1e-6,
        "{}",
        circuit.report.p_fail_inference
    );
    let (rows, _) = bundle.dataset.rows(bundle.test).unwrap();
    let inputs: Vec<Vec<i64>> = rows[..3]
        .iter()
        .map(|r| circuit.input.quantize(r).unwrap())
        .collect();
    assert_fhe_matches_clear(&circuit, &inputs);
}

/// Approximate rounding on real ciphertexts: a softmax regression on 2_2
/// with accumulators 3 bits wider than the 5-bit window. Its one layer's
/// bootstraps read fresh encryptions and are the outputs, so every
/// rounding flip is visible: the number of decrypted outputs that differ
/// from the clear path must match the noise model's prediction for the
/// actual accumulators (per row, per output), within 5 standard
/// deviations of the sum of Bernoulli trials.
#[test]
fn rounding_flips_match_the_noise_model() {
    use blindfold_runtime::eval::clear::{run_on, Clear};
    use blindfold_runtime::report::{bootstrap_change_probabilities, neuron_sigma};
    let bundle =
        ModelBundle::load(&repo("models/digits-logreg.onnx"), &DataOverride::default()).unwrap();
    let circuit = compile_bundle(
        &bundle,
        &CompileOptions {
            params: ParamSet::Message2Carry2,
            quant: QuantConfig {
                accumulator_bits: 5,
                input_bits: 3,
                rounding_bits: 3,
                ..Default::default()
            },
        },
    )
    .unwrap()
    .circuit;
    assert_eq!(circuit.layers.len(), 1);
    let layer = &circuit.layers[0];
    assert_eq!(layer.acc_shift, 3);
    let program = Program::from_circuit(&circuit).unwrap();
    let ck = ClientKey::generate(circuit.params);
    let ek = ck.evaluation_key().decompress();
    let tables = FheTables::new(&program);
    let backend = Fhe::new(&ek, &tables).unwrap();
    let (rows, _) = bundle.dataset.rows(bundle.test).unwrap();
    let p = circuit.precision_bits;
    let out_modulus = circuit.layer_modulus(0);
    let (mut expected, mut variance, mut measured, mut labels_equal) = (0.0, 0.0, 0usize, 0usize);
    let n = 150;
    for raw in rows.iter().take(n) {
        let q = circuit.input.quantize(raw).unwrap();
        let mut accs = vec![0u64; layer.out_len];
        let mut trace = |k: usize, acc: u64| accs[k] = acc;
        let (clear, _) = run_on(
            &Clear::traced(&mut trace),
            &program,
            &TableSet::default(),
            &q,
        )
        .unwrap();
        for (j, acc) in accs.iter().enumerate() {
            let fine = blindfold_runtime::eval::clear::accumulator(*acc, p + layer.acc_shift);
            let (flip, fail) = bootstrap_change_probabilities(
                &layer.lut[j],
                p,
                fine,
                layer.acc_shift,
                neuron_sigma(&circuit, 0, j),
                out_modulus,
            );
            expected += flip + fail;
            variance += (flip + fail) * (1.0 - flip - fail);
        }
        let enc = ck.encrypt(&circuit.client_spec(), &q).unwrap();
        let (out, _) = evaluate(&program, &backend, &TableSet::default(), &enc, &never).unwrap();
        let got = ck.decrypt(&circuit.client_spec(), &out).unwrap();
        measured += got.iter().zip(&clear).filter(|(a, b)| a != b).count();
        labels_equal += usize::from(circuit.predict_class(&got) == circuit.predict_class(&clear));
    }
    let sd = variance.sqrt();
    eprintln!(
        "{n} rows x {} outputs: predicted {expected:.1} ± {sd:.1} changed outputs, measured {measured}; labels equal {labels_equal}/{n}",
        layer.out_len
    );
    assert!(expected > 5.0, "the test needs flips to count: {expected}");
    assert!(
        (measured as f64 - expected).abs() <= 5.0 * sd.max(1.0),
        "measured {measured}, predicted {expected:.1} ± {sd:.1}"
    );
    assert!(labels_equal * 100 >= n * 95, "{labels_equal}/{n}");
}

/// A hardened answer on a circuit with approximate rounding: the label
/// policy's stage reads the members' rounded outputs. Every encrypted
/// answer is a class, costs the policy's bootstraps and (rounding flips
/// may move a near tie) equals the clear label on nearly every row; the
/// clamp is refused (it reads inputs at the window's precision).
#[test]
fn label_policy_on_an_approximate_circuit() {
    use blindfold_runtime::answer::{Query, Reply, Responder};
    use blindfold_runtime::harden::{Hardened, Policy};
    let (bundle, circuit) = digits_mlp(
        ParamSet::Message2Carry2,
        QuantConfig {
            accumulator_bits: 5,
            input_bits: 3,
            activation_bits: 3,
            rounding_bits: 3,
            ..Default::default()
        },
    );
    assert!(circuit.layers.iter().all(|l| l.acc_shift == 3));
    assert!(Hardened::new(
        "m",
        vec![circuit.clone()],
        Policy {
            clamp_inputs: true,
            ..Policy::default()
        }
    )
    .is_err());
    let model =
        Responder::new(Hardened::new("m", vec![circuit.clone()], Policy::default()).unwrap());
    let ck = ClientKey::generate(circuit.params);
    let ek = ck.evaluation_key().decompress();
    let (rows, _) = bundle.dataset.rows(bundle.test).unwrap();
    let none = TableSet::default();
    let mut equal = 0;
    for raw in rows.iter().take(8) {
        let q = circuit.input.quantize(raw).unwrap();
        let clear = match model
            .answer_with(Query::Clear(&q), &none, &never)
            .unwrap()
            .0
        {
            Reply::Clear { values, .. } => values,
            Reply::Encrypted(_) => panic!("clear query answered encrypted"),
        };
        let input = ck.encrypt(model.spec(), &q).unwrap();
        let (reply, stats) = model
            .answer_with(
                Query::Encrypted {
                    input: &input,
                    key: &ek,
                },
                &none,
                &never,
            )
            .unwrap();
        let Reply::Encrypted(out) = reply else {
            panic!("encrypted query answered in the clear")
        };
        assert_eq!(stats.bootstraps, model.model().cost().bootstraps());
        let got = ck.decrypt(model.spec(), &out).unwrap();
        assert!(got.len() == 1 && (0..10).contains(&got[0]), "{got:?}");
        equal += usize::from(got == clear);
    }
    assert!(
        equal >= 6,
        "{equal}/8 encrypted labels equal the clear ones"
    );
}
