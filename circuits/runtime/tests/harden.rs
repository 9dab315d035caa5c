//! Hardening stages: every policy's answer decrypted from real ciphertexts
//! equals the clear evaluator's with the same noise; everything the client
//! decrypts is a bootstrap output; the tournament is the argmax; the input
//! clamp holds hostile inputs in range; the noise has the configured
//! statistics.

use blindfold_runtime::answer::{Query, Reply, Responder};
use blindfold_runtime::ciphertext::EncryptedInput;
use blindfold_runtime::circuit::{Circuit, OutputKind};
use blindfold_runtime::data::{argmax, Dataset};
use blindfold_runtime::eval::{never, EvalStats};
use blindfold_runtime::harden::{
    argmax_bootstraps, clamp_input, tournament_clear, Aggregate, Hardened, Noise, NoiseKind,
    OutputMode, Policy,
};
use blindfold_runtime::keys::{ClientKey, EvaluationKey};
use blindfold_runtime::program::{Role, TableSet};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn fast() -> Circuit {
    Circuit::load(&repo("models/digits-mlp-fast.circuit.json")).unwrap()
}

/// Quantized digits test rows (the split's first `n`) and labels.
fn test_rows(c: &Circuit, n: usize) -> Vec<(Vec<i64>, usize)> {
    let ds = Dataset::from_csv(&repo("data/digits.csv")).unwrap();
    (1347..1347 + n)
        .map(|i| (c.input.quantize(&ds.features[i]).unwrap(), ds.labels[i]))
        .collect()
}

fn policy(output: OutputMode, noise: Noise, clamp_inputs: bool) -> Policy {
    Policy {
        output,
        noise,
        clamp_inputs,
        aggregate: Aggregate::Logits,
    }
}

fn gaussian(sigma: f64) -> Noise {
    Noise {
        kind: NoiseKind::Gaussian,
        scale: sigma,
    }
}

#[test]
fn tournament_is_the_first_index_argmax() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    for p in [5u32, 7] {
        let top = 1u64 << (p - 1);
        for classes in [2usize, 3, 10, 17, 32] {
            for _ in 0..200 {
                // few distinct values, so ties are common
                let spread = 1 + rng.next_u64() % top;
                let v: Vec<i64> = (0..classes)
                    .map(|_| (rng.next_u64() % spread) as i64)
                    .collect();
                let f: Vec<f64> = v.iter().map(|x| *x as f64).collect();
                assert_eq!(tournament_clear(&v, p), argmax(&f), "p={p} {v:?}");
            }
        }
    }
    let v: Vec<i64> = (0..100).map(|i| (i * 37 % 61) as i64).collect();
    let f: Vec<f64> = v.iter().map(|x| *x as f64).collect();
    assert_eq!(tournament_clear(&v, 7), argmax(&f));
    // bootstraps: 2 classes is one comparison table plus the refresh
    assert_eq!(argmax_bootstraps(2, 7), 2);
    assert!(argmax_bootstraps(10, 7) < 10 * 9 / 2);
    assert!(argmax_bootstraps(100, 7) < 4 * 100);
}

#[test]
fn label_mode_agrees_with_the_clear_argmax() {
    let c = fast();
    let model = Hardened::new("m", vec![c.clone()], Policy::default()).unwrap();
    let plan = model.tables(&[0.0; 10]);
    let rows = test_rows(&c, 200);
    let mut same = 0;
    for (q, _) in &rows {
        let out = model.evaluate_clear(&plan, q).unwrap();
        assert_eq!(out.len(), 1);
        if out[0] as usize
            == c.predict_class(&blindfold_runtime::eval::clear::evaluate(&c, q).unwrap())
        {
            same += 1;
        }
    }
    // comparisons use p-1 = 4 bits on this parameter set: ties may differ
    assert!(same >= 180, "{same}/200");
}

#[test]
fn every_answer_is_a_bootstrap_output() {
    let c = fast();
    for output in [
        OutputMode::Raw,
        OutputMode::Scores { bits: 2 },
        OutputMode::Label,
        OutputMode::TopK { k: 3 },
    ] {
        for members in [1, 3] {
            for aggregate in [Aggregate::Logits, Aggregate::Votes] {
                let model = Hardened::new(
                    "m",
                    vec![c.clone(); members],
                    Policy {
                        output,
                        noise: gaussian(1.0),
                        clamp_inputs: true,
                        aggregate,
                    },
                )
                .unwrap();
                let program = model.program();
                assert_eq!(program.outputs.len(), model.client_spec().output_count());
                for k in &program.outputs {
                    // a node of the program is a bootstrap, at the answer's precision
                    let node = &program.nodes[*k];
                    assert_eq!(
                        program.tables[node.table].out_bits, program.output_bits,
                        "{output:?} {members} {aggregate:?}"
                    );
                    if members > 1 {
                        // ensemble outputs come out of the stage, not a member
                        assert_eq!(node.role, Role::Stage, "{output:?} {aggregate:?}");
                    }
                }
                // the noise rewrites tables of the program only
                let tables = model.tables(&[0.5; 10]);
                program.check_overrides(&tables).unwrap();
                assert!(!tables.is_empty());
            }
        }
    }
}

/// Clear and FHE with the same noise, for each mode, on real ciphertexts.
#[test]
fn every_mode_fhe_equals_clear_with_the_same_noise() {
    let c = fast();
    let ck = ClientKey::generate(c.params);
    let ek = ck.evaluation_key().decompress();
    let rows = test_rows(&c, 3);
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let cases: Vec<(Policy, usize)> = vec![
        (policy(OutputMode::Raw, gaussian(1.0), false), 1),
        (
            policy(OutputMode::Scores { bits: 2 }, gaussian(0.5), false),
            1,
        ),
        (policy(OutputMode::Label, Noise::NONE, false), 1),
        (policy(OutputMode::Label, gaussian(2.0), true), 1),
        (policy(OutputMode::TopK { k: 2 }, gaussian(1.0), false), 1),
        (
            Policy {
                aggregate: Aggregate::Votes,
                ..policy(OutputMode::Label, gaussian(1.0), false)
            },
            3,
        ),
        (policy(OutputMode::Label, gaussian(1.0), false), 3),
    ];
    for (pol, members) in cases {
        let model = Responder::new(Hardened::new("m", vec![c.clone(); members], pol).unwrap());
        let spec = model.spec().clone();
        for (q, _) in &rows {
            let noise = pol.noise.sample(model.model().noise_len(), &mut rng);
            let plan = model.model().tables(&noise);
            let expected = model.model().evaluate_clear(&plan, q).unwrap();
            let (out, stats) = encrypted(&model, &ck.encrypt(&spec, q).unwrap(), &ek, &plan);
            assert_eq!(
                stats.bootstraps,
                model.model().cost().bootstraps(),
                "{pol:?}"
            );
            let got = ck.decrypt(&spec, &out).unwrap();
            assert_eq!(got, expected, "{pol:?} members={members}");
            if let OutputKind::Labels { k } = spec.output {
                assert_eq!(got.len(), k);
            }
        }
    }
}

#[test]
fn input_clamp_holds_hostile_inputs_in_range() {
    let c = fast();
    let bits = c.input.bits;
    let p = c.precision_bits;
    // the clamp's clear model: in range for every residue
    for m in -200..200 {
        let v = clamp_input(m, bits, p);
        assert!((0..1 << bits).contains(&v));
        if (0..1 << bits).contains(&m) {
            assert_eq!(v, m);
        }
    }
    let model = Hardened::new(
        "m",
        vec![c.clone()],
        policy(OutputMode::Raw, Noise::NONE, true),
    )
    .unwrap();
    let spec = model.client_spec();
    let ck = ClientKey::generate(c.params);
    let ek = ck.evaluation_key().decompress();
    let plan = model.tables(&[0.0; 10]);
    let model = Responder::new(model);
    let (q, _) = &test_rows(&c, 1)[0];
    // a probe: one feature far above the range, one below, one at the antipode
    let mut hostile = q.clone();
    hostile[10] = 25;
    hostile[20] = -3;
    hostile[30] = 1 << p;
    let clamped: Vec<i64> = hostile.iter().map(|x| clamp_input(*x, bits, p)).collect();
    let expected = model.model().evaluate_clear(&plan, &clamped).unwrap();
    let (out, _) = encrypted(
        &model,
        &ck.encrypt_unchecked(&spec, &hostile).unwrap(),
        &ek,
        &plan,
    );
    assert_eq!(ck.decrypt(&spec, &out).unwrap(), expected);
    // without the clamp the probe moves the logits out of the clamped answer
    let open = Hardened::new(
        "m",
        vec![c.clone()],
        policy(OutputMode::Raw, Noise::NONE, false),
    )
    .unwrap();
    let plan = open.tables(&[0.0; 10]);
    let (out, _) = encrypted(
        &Responder::new(open),
        &ck.encrypt_unchecked(&spec, &hostile).unwrap(),
        &ek,
        &plan,
    );
    assert_ne!(ck.decrypt(&spec, &out).unwrap(), expected);
}

/// One encrypted answer with the given tables, through the answer protocol.
fn encrypted(
    model: &Responder,
    input: &EncryptedInput,
    key: &EvaluationKey,
    tables: &TableSet,
) -> (blindfold_runtime::ciphertext::EncryptedOutput, EvalStats) {
    match model
        .answer_with(Query::Encrypted { input, key }, tables, &never)
        .unwrap()
    {
        (Reply::Encrypted(out), stats) => (out, stats),
        (Reply::Clear { .. }, _) => panic!("an encrypted query answered in the clear"),
    }
}

/// Mean and variance of the decoded noisy logit against the noise-free one,
/// over many clear queries of one input.
#[test]
fn noise_has_the_configured_mean_and_variance() {
    let c = fast();
    let (q, _) = &test_rows(&c, 1)[0];
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for (noise, var) in [
        (gaussian(1.0), 1.0),
        (gaussian(2.0), 4.0),
        (
            Noise {
                kind: NoiseKind::Laplace,
                scale: 1.0,
            },
            2.0,
        ),
    ] {
        let model =
            Hardened::new("m", vec![c.clone()], policy(OutputMode::Raw, noise, false)).unwrap();
        let spec = model.client_spec();
        let clean =
            spec.decode_output(&model.evaluate_clear(&model.tables(&[0.0; 10]), q).unwrap());
        let step = spec.output_scale;
        let n = 4000;
        let (mut sum, mut sum2) = (0.0, 0.0);
        let mut count = 0.0;
        for _ in 0..n {
            let plan = model.tables(&noise.sample(10, &mut rng));
            let got = spec.decode_output(&model.evaluate_clear(&plan, q).unwrap());
            for (g, c0) in got.iter().zip(&clean) {
                let d = g - c0;
                sum += d;
                sum2 += d * d;
                count += 1.0;
            }
        }
        let mean = sum / count;
        let variance = sum2 / count - mean * mean;
        // rounding to the output step adds step²/12
        let expected = var + step * step / 12.0;
        let sd_mean = (expected / count).sqrt();
        assert!(mean.abs() < 5.0 * sd_mean, "{noise:?}: mean {mean}");
        assert!(
            (variance / expected - 1.0).abs() < 0.08,
            "{noise:?}: variance {variance}, expected {expected}"
        );
    }
}

#[test]
fn policies_that_do_not_fit_are_refused() {
    let c = fast();
    let bad = |p: Policy| Hardened::new("m", vec![c.clone()], p).is_err();
    assert!(bad(policy(OutputMode::TopK { k: 11 }, Noise::NONE, false)));
    assert!(bad(policy(OutputMode::TopK { k: 0 }, Noise::NONE, false)));
    assert!(bad(policy(
        OutputMode::Scores { bits: 0 },
        Noise::NONE,
        false
    )));
    assert!(bad(policy(OutputMode::Label, gaussian(f64::NAN), false)));
    let mut other = c.clone();
    other.input.bits += 1;
    assert!(Hardened::new("m", vec![c.clone(), other], Policy::default()).is_err());
}

/// Inputs unlike anything calibrated (uniform random images) push
/// accumulators out of the window; every label answer must still be a
/// class, in every label mode and ensemble.
#[test]
fn out_of_window_inputs_still_answer_a_class() {
    let c = fast();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let random: Vec<Vec<i64>> = (0..300)
        .map(|_| {
            (0..64)
                .map(|_| (rng.next_u64() % (1 << c.input.bits)) as i64)
                .collect()
        })
        .collect();
    for (members, aggregate, output) in [
        (1, Aggregate::Logits, OutputMode::Label),
        (1, Aggregate::Logits, OutputMode::TopK { k: 3 }),
        (3, Aggregate::Logits, OutputMode::Label),
        (3, Aggregate::Votes, OutputMode::Label),
    ] {
        let model = Hardened::new(
            "m",
            vec![c.clone(); members],
            Policy {
                aggregate,
                ..policy(output, gaussian(1.0), false)
            },
        )
        .unwrap();
        let spec = model.client_spec();
        for q in &random {
            let noise = model.policy.noise.sample(10, &mut rng);
            let out = model.evaluate_clear(&model.tables(&noise), q).unwrap();
            let a = blindfold_runtime::harden::Answer::decode(&spec, &out);
            assert!(
                a.labels.iter().all(|l| *l < 10),
                "{output:?} {members}: {out:?}"
            );
            let mut sorted = a.labels.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), a.labels.len(), "top-k labels are distinct");
        }
    }
}

/// The input clamp, every member of an ensemble and the hardening stage are
/// nodes of one program, run by the one scheduler over both interpreters:
/// each interpreter runs every node exactly once, and the encrypted answer
/// decrypts to the clear one for the same noise.
#[test]
fn clamp_ensemble_and_stage_run_through_one_interpreter_pair() {
    let c = fast();
    let model = Responder::new(
        Hardened::new(
            "m",
            vec![c.clone(); 3],
            Policy {
                output: OutputMode::Label,
                noise: gaussian(1.0),
                clamp_inputs: true,
                aggregate: Aggregate::Votes,
            },
        )
        .unwrap(),
    );
    let program = model.model().program();
    let roles: Vec<Role> = program.nodes.iter().map(|n| n.role).collect();
    let clamps = roles
        .iter()
        .filter(|r| matches!(r, Role::Clamp { .. }))
        .count();
    assert_eq!(clamps, c.input.len());
    for member in 0..3 {
        let neurons = roles
            .iter()
            .filter(|r| matches!(r, Role::Neuron { member: m, .. } if *m == member))
            .count();
        assert_eq!(neurons, c.pbs_per_inference(), "member {member}");
    }
    let stage = roles.iter().filter(|r| **r == Role::Stage).count();
    assert!(stage > 0);
    assert_eq!(
        clamps + 3 * c.pbs_per_inference() + stage,
        program.nodes.len()
    );
    // the clamp feeds every member's first layer, which keyswitches
    assert!(program
        .nodes
        .iter()
        .filter(|n| matches!(n.role, Role::Neuron { layer: 0, .. }))
        .all(|n| !n.reads_inputs && n.level == 2));

    let ck = ClientKey::generate(c.params);
    let ek = ck.evaluation_key().decompress();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let (q, _) = &test_rows(&c, 1)[0];
    let tables = model.draw(&mut rng);
    let (clear, clear_stats) = match model.answer_with(Query::Clear(q), &tables, &never).unwrap() {
        (Reply::Clear { values, .. }, stats) => (values, stats),
        (Reply::Encrypted(_), _) => panic!("a clear query answered encrypted"),
    };
    let input = ck.encrypt(model.spec(), q).unwrap();
    let (out, fhe_stats) = encrypted(&model, &input, &ek, &tables);
    assert_eq!(clear_stats.bootstraps, program.nodes.len());
    assert_eq!(fhe_stats.bootstraps, program.nodes.len());
    assert_eq!(fhe_stats.keyswitches, clear_stats.keyswitches);
    assert_eq!(ck.decrypt(model.spec(), &out).unwrap(), clear);
}
