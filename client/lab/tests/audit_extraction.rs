//! Extraction and transfer attacks against local (clear, in-process)
//! oracles over the shipped digits circuits: equation solving steals the
//! softmax regression from raw scores, label-only policies stop equation
//! solving but not retraining, and FGSM examples crafted on a substitute
//! trained from labels transfer.
//!
//! `full_report` (ignored; run with `--ignored --nocapture`) prints the
//! complete curves up to 65,000 queries with timings.

use std::path::{Path, PathBuf};
use std::time::Instant;

use blindfold_lab::adversarial::{papernot_transfer, PapernotConfig, SeedSet};
use blindfold_lab::extraction::{
    equation_solving, retraining, ExtractionCurve, FeatureMap, Setup, Strategy, SurrogateKind,
};
use blindfold_lab::{LocalOracle, Oracle, Rng};
use blindfold_runtime::circuit::Circuit;
use blindfold_runtime::data::{Dataset, RowRange};
use blindfold_runtime::harden::{Aggregate, Hardened, Noise, NoiseKind, OutputMode, Policy};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn policy(output: OutputMode) -> Policy {
    Policy {
        output,
        noise: Noise::NONE,
        clamp_inputs: false,
        aggregate: Aggregate::Logits,
    }
}

fn oracle(file: &str, output: OutputMode, budget: Option<u64>) -> LocalOracle {
    let c = Circuit::load(&root().join("models").join(file)).expect("shipped circuit");
    let model = Hardened::new(file, vec![c], policy(output)).expect("valid policy");
    LocalOracle::new(model, 7, budget)
}

/// Rows `range` of the digits data set.
fn rows(range: &str) -> (Vec<Vec<f64>>, Vec<usize>) {
    let data = Dataset::from_csv(&root().join("data/digits.csv")).expect("digits.csv");
    let r: RowRange = range.parse().expect("row range");
    data.rows(r).expect("rows in range")
}

/// The public test split; features from the victim's public input encoding.
fn setup(victim: &LocalOracle) -> Setup {
    let (test, labels) = rows("1347..1796");
    Setup::new(
        FeatureMap::Encoded(victim.model().client_spec().input),
        test,
        labels,
    )
}

fn show(c: &ExtractionCurve) {
    println!(
        "{} ({:.1} s, {} queries, {} invalid answers)",
        c.attack, c.seconds, c.queries, c.invalid_answers
    );
    if let Some(why) = &c.not_applicable {
        println!("  not applicable: {why}");
    }
    for p in &c.points {
        println!(
            "  {:>6} queries: test {:.4}, fresh {:.4} (at {:.1} s)",
            p.queries, p.test_agreement, p.fresh_agreement, p.seconds
        );
    }
    if let Some(s) = c.stopped_at {
        println!("  stopped at {s} (refused)");
    }
}

#[test]
fn equation_solving_steals_logreg_from_raw_scores() {
    let mut victim = oracle("digits-logreg.circuit.json", OutputMode::Raw, None);
    let mut reference = oracle("digits-logreg.circuit.json", OutputMode::Raw, None);
    let s = setup(&victim);
    let c = equation_solving(&mut victim, &mut reference, &s, &[650], &mut Rng::new(1)).unwrap();
    show(&c);
    assert!(c.applicable());
    assert_eq!(c.queries, 650);
    assert_eq!(
        victim.queries(),
        650,
        "the reference costs the attack nothing"
    );
    let p = c.at(650).expect("a point at 650");
    assert!(p.test_agreement >= 0.99, "{p:?}");
}

#[test]
fn equation_solving_stops_where_the_budget_refuses() {
    let mut victim = oracle("digits-logreg.circuit.json", OutputMode::Raw, Some(300));
    let mut reference = oracle("digits-logreg.circuit.json", OutputMode::Raw, None);
    let mut s = setup(&victim);
    s.fresh = 200;
    let c = equation_solving(
        &mut victim,
        &mut reference,
        &s,
        &[200, 650],
        &mut Rng::new(2),
    )
    .unwrap();
    show(&c);
    assert_eq!(
        c.stopped_at,
        Some(300),
        "halving batches uses the whole budget"
    );
    assert_eq!(
        c.points.iter().map(|p| p.queries).collect::<Vec<_>>(),
        [200, 300]
    );
}

#[test]
fn equation_solving_is_not_applicable_to_labels() {
    for output in [OutputMode::Label, OutputMode::TopK { k: 3 }] {
        let mut victim = oracle("digits-logreg.circuit.json", output, None);
        let mut reference = oracle("digits-logreg.circuit.json", output, None);
        let mut s = setup(&victim);
        s.fresh = 10;
        let c =
            equation_solving(&mut victim, &mut reference, &s, &[650], &mut Rng::new(3)).unwrap();
        show(&c);
        assert!(!c.applicable());
        assert!(c.points.is_empty());
        assert_eq!(c.queries, 1, "one probe tells");
    }
}

#[test]
fn label_only_retraining_improves_with_queries() {
    let mut victim = oracle("digits-logreg.circuit.json", OutputMode::Label, None);
    let mut reference = oracle("digits-logreg.circuit.json", OutputMode::Label, None);
    let s = setup(&victim);
    let c = retraining(
        &mut victim,
        &mut reference,
        &s,
        &[650, 6500],
        Strategy::Uniform,
        SurrogateKind::SoftmaxRegression,
        &mut Rng::new(4),
    )
    .unwrap();
    show(&c);
    let (a, b) = (c.at(650).unwrap(), c.at(6500).unwrap());
    assert!(b.test_agreement > a.test_agreement, "{a:?} → {b:?}");
    assert!(b.fresh_agreement > a.fresh_agreement, "{a:?} → {b:?}");
    assert!(b.test_agreement > 0.3, "chance is 0.1: {b:?}");

    let mut victim = oracle("digits-logreg.circuit.json", OutputMode::Label, None);
    let c = retraining(
        &mut victim,
        &mut reference,
        &s,
        &[650, 6500],
        Strategy::Adaptive,
        SurrogateKind::SoftmaxRegression,
        &mut Rng::new(4),
    )
    .unwrap();
    show(&c);
    let (a, b) = (c.at(650).unwrap(), c.at(6500).unwrap());
    assert!(b.test_agreement > a.test_agreement, "{a:?} → {b:?}");
    assert!(b.test_agreement > 0.7, "{b:?}");
}

/// Held-out seeds: the first ten images of each class among test rows
/// 1347..1496; evaluation on rows 1497..1796.
fn held_out_seeds() -> Vec<Vec<f64>> {
    let (x, y) = rows("1347..1496");
    let mut per = [0usize; 10];
    x.into_iter()
        .zip(y)
        .filter(|(_, l)| {
            let keep = per[*l] < 10;
            per[*l] += 1;
            keep
        })
        .map(|(r, _)| r)
        .collect()
}

#[test]
fn fgsm_examples_transfer_from_a_label_only_substitute() {
    let mut victim = oracle("digits-mlp-fast.circuit.json", OutputMode::Label, None);
    let mut reference = oracle("digits-mlp-fast.circuit.json", OutputMode::Label, None);
    let (test, labels) = rows("1497..1796");
    let mut cfg = PapernotConfig::new(SeedSet::Rows(held_out_seeds()));
    cfg.rounds = 4;
    cfg.epsilons = vec![0.0, 4.0];
    let r = papernot_transfer(
        &mut victim,
        &mut reference,
        &test,
        &labels,
        &cfg,
        &mut Rng::new(5),
    )
    .unwrap();
    println!("{r:#?}");
    assert_eq!(r.queries, 100 * 16, "seed doubled four times");
    assert_eq!(victim.queries(), r.queries);
    let (zero, four) = (r.at(0.0).unwrap(), r.at(4.0).unwrap());
    assert_eq!(zero.victim_misclassified, 0.0);
    assert!(
        four.victim_misclassified > zero.victim_misclassified,
        "{r:?}"
    );
}

/// The complete numbers: every curve to 65,000 queries, with timings.
#[test]
#[ignore]
fn full_report() {
    let points = [650, 3250, 6500, 65000];
    let t = Instant::now();
    let mut victim = oracle("digits-logreg.circuit.json", OutputMode::Raw, None);
    let mut reference = oracle("digits-logreg.circuit.json", OutputMode::Raw, None);
    let s = setup(&victim);
    show(&equation_solving(&mut victim, &mut reference, &s, &points, &mut Rng::new(11)).unwrap());
    for bits in [6, 4, 3] {
        println!("scores truncated to {bits} bits:");
        let mut victim = oracle(
            "digits-logreg.circuit.json",
            OutputMode::Scores { bits },
            None,
        );
        show(
            &equation_solving(&mut victim, &mut reference, &s, &points, &mut Rng::new(12)).unwrap(),
        );
    }
    for scale in [0.5, 2.0] {
        let c = Circuit::load(&root().join("models/digits-logreg.circuit.json")).unwrap();
        let noisy = Policy {
            noise: Noise {
                kind: NoiseKind::Gaussian,
                scale,
            },
            ..policy(OutputMode::Raw)
        };
        let mut victim = LocalOracle::new(Hardened::new("noisy", vec![c], noisy).unwrap(), 8, None);
        println!("Gaussian noise σ = {scale} logits:");
        show(
            &equation_solving(&mut victim, &mut reference, &s, &points, &mut Rng::new(17)).unwrap(),
        );
    }
    let mut pixels = s.clone();
    pixels.features = FeatureMap::Pixels;
    let mut victim = oracle("digits-logreg.circuit.json", OutputMode::Raw, None);
    show(
        &equation_solving(
            &mut victim,
            &mut reference,
            &pixels,
            &points,
            &mut Rng::new(13),
        )
        .unwrap(),
    );
    let mut victim = oracle("digits-mlp-exact.circuit.json", OutputMode::Raw, None);
    let mut mlp_ref = oracle("digits-mlp-exact.circuit.json", OutputMode::Raw, None);
    show(&equation_solving(&mut victim, &mut mlp_ref, &s, &points, &mut Rng::new(14)).unwrap());

    for (file, surrogate) in [
        (
            "digits-logreg.circuit.json",
            SurrogateKind::SoftmaxRegression,
        ),
        (
            "digits-mlp-exact.circuit.json",
            SurrogateKind::Mlp { hidden: 32 },
        ),
    ] {
        for strategy in [Strategy::Uniform, Strategy::Adaptive] {
            let mut victim = oracle(file, OutputMode::Label, None);
            let mut reference = oracle(file, OutputMode::Label, None);
            println!("victim {file}, label policy");
            show(
                &retraining(
                    &mut victim,
                    &mut reference,
                    &s,
                    &points,
                    strategy,
                    surrogate,
                    &mut Rng::new(15),
                )
                .unwrap(),
            );
        }
    }

    let (test, labels) = rows("1497..1796");
    for file in [
        "digits-logreg.circuit.json",
        "digits-mlp-exact.circuit.json",
    ] {
        for seed in [
            SeedSet::Rows(held_out_seeds()),
            SeedSet::Uniform { count: 150 },
        ] {
            let mut victim = oracle(file, OutputMode::Label, None);
            let mut reference = oracle(file, OutputMode::Label, None);
            let mut cfg = PapernotConfig::new(seed);
            cfg.epsilons = vec![0.0, 1.0, 2.0, 3.0, 4.0];
            let r = papernot_transfer(
                &mut victim,
                &mut reference,
                &test,
                &labels,
                &cfg,
                &mut Rng::new(16),
            )
            .unwrap();
            println!("victim {file}, label policy: {r:#?}");
        }
    }
    println!("total {:.1} s", t.elapsed().as_secs_f64());
}
