//! Privacy attacks of the audit lab (memorization exposure, membership
//! inference, MI-Face inversion) against local clear-path oracles: the
//! statistics on hand-made cases, then the attacks on the shipped 2_2
//! digits circuit under a raw-score and a label-only policy.

use std::path::{Path, PathBuf};

use blindfold_compiler::ir::Graph;
use blindfold_lab::inversion::{
    class_means, image_mse, invert_class, mi_face_audit, FloatJudge, InversionConfig, Start,
};
use blindfold_lab::memorization::{
    auc, confidence, exposure, exposure_audit, label_score, load_canaries, membership_audit,
    membership_split, parse_canaries, rank, Canary, ExposureConfig, Record,
};
use blindfold_lab::{AuditError, LocalOracle, Oracle, Rng};
use blindfold_runtime::circuit::Circuit;
use blindfold_runtime::data::{argmax, log_softmax, Dataset, RowRange};
use blindfold_runtime::harden::{Answer, Hardened, Noise, OutputMode, Policy};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn range(s: &str) -> RowRange {
    s.parse().unwrap()
}

fn digits() -> Dataset {
    Dataset::from_csv(&root().join("data/digits.csv")).unwrap()
}

/// A shipped circuit served alone under `output`, no noise.
fn oracle(circuit: &str, output: OutputMode, budget: Option<u64>) -> LocalOracle {
    let c = Circuit::load(&root().join("models").join(circuit)).unwrap();
    let policy = Policy {
        output,
        noise: Noise::NONE,
        ..Policy::default()
    };
    LocalOracle::new(Hardened::new(circuit, vec![c], policy).unwrap(), 1, budget)
}

fn answer_of_scores(scores: Vec<f64>) -> Answer {
    let label = argmax(&scores);
    Answer {
        label,
        labels: vec![label],
        scores,
    }
}

/// Test double: a model evaluated in float that returns its logits (what a
/// raw-score policy would return without quantization).
struct FloatOracle {
    graph: Graph,
    queries: u64,
}

impl Oracle for FloatOracle {
    fn query(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Answer>, AuditError> {
        self.queries += rows.len() as u64;
        rows.iter()
            .map(|r| Ok(answer_of_scores(self.graph.eval_logits::<f64>(r)?)))
            .collect()
    }
    fn queries(&self) -> u64 {
        self.queries
    }
    fn classes(&self) -> usize {
        10
    }
    fn input_len(&self) -> usize {
        64
    }
}

/// Test double: class 0's logit is the mean pixel, the others 0, so an
/// all-16 image is the most "class 0" image there is.
struct BrightOracle {
    queries: u64,
}

impl Oracle for BrightOracle {
    fn query(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Answer>, AuditError> {
        self.queries += rows.len() as u64;
        Ok(rows
            .iter()
            .map(|r| {
                let mut s = vec![0.0; 10];
                s[0] = r.iter().sum::<f64>() / r.len() as f64;
                answer_of_scores(s)
            })
            .collect())
    }
    fn queries(&self) -> u64 {
        self.queries
    }
    fn classes(&self) -> usize {
        10
    }
    fn input_len(&self) -> usize {
        64
    }
}

#[test]
fn auc_is_the_mann_whitney_statistic() {
    // pairs: 0.9>0.1, 0.9>0.8, 0.8>0.1, 0.8=0.8 (half) → 3.5/4
    assert_eq!(auc(&[0.9, 0.8], &[0.1, 0.8]).unwrap(), 0.875);
    assert_eq!(auc(&[2.0, 3.0], &[0.0, 1.0]).unwrap(), 1.0);
    assert_eq!(auc(&[0.0, 1.0], &[2.0, 3.0]).unwrap(), 0.0);
    assert_eq!(auc(&[1.0; 3], &[1.0; 5]).unwrap(), 0.5);
    assert!(auc(&[], &[1.0]).is_err());
    assert!(auc(&[f64::NAN], &[1.0]).is_err());
    // against the pairwise definition on coarse random scores (many ties)
    let mut rng = Rng::new(3);
    let pos: Vec<f64> = (0..57).map(|_| rng.below(6) as f64).collect();
    let neg: Vec<f64> = (0..41).map(|_| rng.below(5) as f64).collect();
    let pairs: f64 = pos
        .iter()
        .flat_map(|p| neg.iter().map(move |n| (p, n)))
        .map(|(p, n)| match p.partial_cmp(n) {
            Some(std::cmp::Ordering::Greater) => 1.0,
            Some(std::cmp::Ordering::Equal) => 0.5,
            _ => 0.0,
        })
        .sum();
    let brute = pairs / (pos.len() * neg.len()) as f64;
    assert!((auc(&pos, &neg).unwrap() - brute).abs() < 1e-12);
}

#[test]
fn rank_and_exposure_on_hand_cases() {
    let r = 4096;
    let candidates: Vec<f64> = (0..r).map(|i| -(i as f64) - 1.0).collect();
    // above every candidate: rank 1, exposure log2(|R| + 1)
    assert_eq!(rank(0.0, &candidates), 1.0);
    assert_eq!(exposure(0.0, &candidates), ((r + 1) as f64).log2());
    // below every candidate: rank |R| + 1, exposure 0
    assert_eq!(exposure(-1e9, &candidates), 0.0);
    // ties count half: one higher, two tied → rank 1 + 1 + 1
    assert_eq!(rank(1.0, &[2.0, 1.0, 1.0, 0.0]), 3.0);
    assert_eq!(
        exposure(1.0, &[2.0, 1.0, 1.0, 0.0]),
        5f64.log2() - 3f64.log2()
    );
}

#[test]
fn scores_follow_what_the_policy_returns() {
    let scores = vec![1.0, 3.0, 2.0];
    let with_scores = answer_of_scores(scores.clone());
    assert_eq!(label_score(&with_scores, 2), log_softmax(&scores)[2]);
    assert!((confidence(&with_scores, 2) - log_softmax(&scores)[2].exp()).abs() < 1e-15);
    let top3 = Answer {
        label: 4,
        labels: vec![4, 7, 1],
        scores: Vec::new(),
    };
    assert_eq!(label_score(&top3, 4), 3.0);
    assert_eq!(label_score(&top3, 1), 1.0);
    assert_eq!(label_score(&top3, 0), 0.0);
    let label = Answer {
        label: 4,
        labels: vec![4],
        scores: Vec::new(),
    };
    assert_eq!(label_score(&label, 4), 1.0);
    assert_eq!(confidence(&label, 5), 0.0);
}

#[test]
fn canary_file_loads_and_bad_files_are_refused() {
    let canaries = load_canaries(&root().join("models/digits-canaries.json"), 10).unwrap();
    assert_eq!(canaries.len(), 30);
    for r in [1, 4, 16] {
        assert_eq!(canaries.iter().filter(|c| c.repetitions == r).count(), 10);
    }
    let ok = r#"{"canaries": [{"id": "a", "repetitions": 2, "label": 3, "pixels": [PIX]}]}"#;
    let pix = |v: &str| vec![v; 64].join(",");
    let parsed = parse_canaries(&ok.replace("PIX", &pix("16")), 10).unwrap();
    assert_eq!(parsed[0].id, "a");
    assert_eq!(parsed[0].pixels, vec![16.0; 64]);
    assert!(parse_canaries(&ok.replace("PIX", &pix("17")), 10).is_err());
    assert!(parse_canaries(&ok.replace("PIX", &pix("1.5")), 10).is_err());
    assert!(parse_canaries(&ok.replace("PIX", "1,2"), 10).is_err());
    assert!(parse_canaries(&ok.replace("PIX", &pix("1")), 3).is_err());
    assert!(parse_canaries(r#"{"canaries": []}"#, 10).is_err());
}

#[test]
fn exposure_audit_shares_one_candidate_set() {
    let canary = |id: &str, v: f64, r: u32| Canary {
        id: id.into(),
        repetitions: r,
        label: 0,
        pixels: vec![v; 64],
    };
    let canaries = [canary("bright", 16.0, 16), canary("dark", 0.0, 1)];
    let config = ExposureConfig {
        candidates: 1000,
        seed: 5,
    };
    let report = exposure_audit(&mut BrightOracle { queries: 0 }, &canaries, &config).unwrap();
    assert_eq!(report.candidates, 1000);
    assert_eq!(report.queries, 1000 + 2);
    assert_eq!(report.queries_unshared, 2 * 1001);
    assert_eq!(report.canaries[0].rank, 1.0);
    assert_eq!(report.canaries[0].exposure, 1001f64.log2());
    assert_eq!(report.canaries[0].exposure, report.ceiling);
    assert_eq!(report.canaries[1].exposure, 0.0);
    assert_eq!(report.groups.len(), 2);
    assert_eq!(report.groups[0].repetitions, 1);
    assert!(report.refused.is_none());
    // deterministic in the seed
    let again = exposure_audit(&mut BrightOracle { queries: 0 }, &canaries, &config).unwrap();
    assert_eq!(report, again);
}

#[test]
fn exposure_stops_at_the_budget_and_says_so() {
    let canaries = load_canaries(&root().join("models/digits-canaries.json"), 10).unwrap();
    let mut o = oracle(
        "digits-mlp-fast.circuit.json",
        OutputMode::Raw,
        Some(30 + 200),
    );
    let report = exposure_audit(&mut o, &canaries, &ExposureConfig::default()).unwrap();
    assert!(report.refused.is_some());
    assert_eq!(report.canaries.len(), 30);
    assert!(report.candidates < 200, "{}", report.candidates);
    assert_eq!(report.queries, 30 + report.candidates as u64);
}

#[test]
fn membership_auc_under_raw_and_label_policies() {
    let (members, non_members) =
        membership_split(&digits(), range("0..1346"), range("1347..1796"), 450, 11).unwrap();
    assert_eq!((members.len(), non_members.len()), (450, 450));
    let mut results = Vec::new();
    for output in [OutputMode::Raw, OutputMode::Label] {
        let mut o = oracle("digits-mlp-fast.circuit.json", output, None);
        let report = membership_audit(&mut o, &members, &non_members).unwrap();
        assert_eq!(report.queries, 900);
        // the AUC from independently queried confidences, pair by pair
        let mut fresh = oracle("digits-mlp-fast.circuit.json", output, None);
        let conf = |o: &mut LocalOracle, recs: &[Record]| -> Vec<f64> {
            let rows: Vec<Vec<f64>> = recs.iter().map(|r| r.features.clone()).collect();
            o.query(&rows)
                .unwrap()
                .iter()
                .zip(recs)
                .map(|(a, r)| confidence(a, r.label))
                .collect()
        };
        let pos = conf(&mut fresh, &members);
        let neg = conf(&mut fresh, &non_members);
        let mut wins = 0.0;
        for p in &pos {
            for n in &neg {
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        assert!((report.auc - wins / (450.0 * 450.0)).abs() < 1e-12);
        assert!(report.auc >= 0.5, "{output}: AUC {}", report.auc);
        assert!(report.member_mean >= report.non_member_mean);
        println!(
            "membership {output}: AUC {:.4}, best threshold accuracy {:.4}, mean confidence {:.4} members vs {:.4} non-members, {} queries",
            report.auc,
            report.best_threshold_accuracy,
            report.member_mean,
            report.non_member_mean,
            report.queries
        );
        results.push(report.auc);
    }
    // label-only answers are a coarsening of the scores: no more separable
    assert!(results[0] >= results[1] - 0.01, "{results:?}");
}

fn means_and_judge() -> (Vec<Vec<f64>>, FloatJudge) {
    let (x, y) = digits().rows(range("0..1346")).unwrap();
    let means = class_means(&x, &y, 10).unwrap();
    let judge = FloatJudge::load(&root().join("models/digits-cnn.onnx"), 64).unwrap();
    (means, judge)
}

#[test]
fn judge_recognizes_the_class_means() {
    let (means, judge) = means_and_judge();
    for (k, m) in means.iter().enumerate() {
        assert_eq!(judge.predict(m).unwrap(), k);
    }
    assert_eq!(image_mse(&means[3], &means[3]).unwrap(), 0.0);
    assert_eq!(image_mse(&[16.0; 64], &[0.0; 64]).unwrap(), 1.0);
}

#[test]
fn mi_face_climbs_raw_scores_and_stalls_on_labels() {
    let (means, judge) = means_and_judge();
    let config = InversionConfig::default();
    let per_class = 1
        + (config.queries_per_class - 1) / (1 + config.directions as u64)
            * (1 + config.directions as u64);
    let mut reports = Vec::new();
    for output in [OutputMode::Raw, OutputMode::Label] {
        let mut o = oracle("digits-mlp-fast.circuit.json", output, None);
        let r = mi_face_audit(&mut o, &means, Some(&judge), &config).unwrap();
        assert_eq!(r.classes.len(), 10);
        assert_eq!(r.queries, 10 * per_class);
        assert!(r.queries <= 10 * config.queries_per_class);
        println!(
            "MI-Face {output}: mean MSE {:.4} (start {:.4}, uniform noise {:.4}), recognized {:?}/10 (start image {:?}), zero-gradient steps {}/{}, {} queries",
            r.mean_mse,
            r.mean_start_mse,
            r.mean_noise_mse,
            r.recognized,
            r.start_recognized,
            r.zero_gradient_steps,
            r.steps,
            r.queries
        );
        for c in &r.classes {
            let inv = &c.inversion;
            println!(
                "  class {}: score {:.3} -> {:.3}, MSE {:.4}, judged {:?}, zero-gradient {}/{}",
                inv.target,
                inv.start_score,
                inv.final_score.unwrap_or(f64::NAN),
                c.mse,
                c.judged,
                inv.zero_gradient_steps,
                inv.steps
            );
        }
        reports.push(r);
    }
    let (raw, label) = (&reports[0], &reports[1]);
    // raw scores: the loss (−log-softmax of the target) falls for every
    // class that was not already certain, and the estimate is never zero
    for c in &raw.classes {
        let inv = &c.inversion;
        let fin = inv.final_score.unwrap();
        assert!(fin >= inv.start_score);
        if inv.start_score < -0.1 {
            assert!(
                fin > -0.1,
                "class {}: {} -> {fin}",
                inv.target,
                inv.start_score
            );
        }
    }
    assert!(raw.zero_gradient_steps * 20 < raw.steps);
    // labels: the same queries, but most differences are exactly zero and
    // the image stays near the start
    assert!(label.zero_gradient_steps * 2 > label.steps);
    let start = config.start.image(64);
    let drift = |r: &blindfold_lab::inversion::InversionReport| -> f64 {
        r.classes
            .iter()
            .map(|c| image_mse(&c.inversion.image, &start).unwrap())
            .sum::<f64>()
            / 10.0
    };
    println!(
        "mean MSE to the start image: raw {:.4}, label {:.4}",
        drift(raw),
        drift(label)
    );
    assert!(drift(label) < drift(raw));
}

#[test]
fn mi_face_validates_and_stops_at_the_budget() {
    let mut o = oracle("digits-mlp-fast.circuit.json", OutputMode::Raw, Some(23));
    let config = InversionConfig {
        queries_per_class: 100,
        start: Start::Blank,
        ..InversionConfig::default()
    };
    let inv = invert_class(&mut o, 3, &config, &mut Rng::new(1)).unwrap();
    assert!(inv.refused.is_some());
    assert_eq!(inv.queries, 20);
    assert_eq!(inv.steps, 4);
    assert!(invert_class(&mut o, 10, &config, &mut Rng::new(1)).is_err());
    let tiny = InversionConfig {
        queries_per_class: 5,
        ..config
    };
    let mut o = oracle("digits-mlp-fast.circuit.json", OutputMode::Raw, None);
    assert!(invert_class(&mut o, 3, &tiny, &mut Rng::new(1)).is_err());
}

fn canary_groups(o: &mut dyn Oracle) -> Vec<(u32, f64)> {
    let canaries = load_canaries(&root().join("models/digits-canaries.json"), 10).unwrap();
    let report = exposure_audit(o, &canaries, &ExposureConfig::default()).unwrap();
    assert_eq!(report.queries, 4096 + 30);
    report
        .groups
        .iter()
        .map(|g| (g.repetitions, g.mean_exposure))
        .collect()
}

/// The attack sees memorization where the arithmetic keeps it: the float
/// canary model's logits rank canaries seen 16 times above those seen once
/// (and every group far above the control model that never saw them).
#[test]
fn exposure_grows_with_repetitions_in_the_float_canary_model() {
    let load = |m: &str| FloatOracle {
        graph: blindfold_compiler::onnx::import_onnx_file(&root().join("models").join(m)).unwrap(),
        queries: 0,
    };
    let victim = canary_groups(&mut load("digits-canary.onnx"));
    let control = canary_groups(&mut load("digits-mlp.onnx"));
    println!("float exposure by repetitions: canary model {victim:?}, control {control:?}");
    assert_eq!(victim[2].0, 16);
    assert!(
        victim[0].1 < victim[1].1 && victim[1].1 < victim[2].1,
        "{victim:?}"
    );
    for (v, c) in victim.iter().zip(&control) {
        assert!(v.1 > c.1, "{victim:?} {control:?}");
    }
    assert!(victim[2].1 > control[2].1 + 2.0, "{victim:?} {control:?}");
}

/// Acceptance criterion: under raw scores the served canary circuit
/// exposes canaries more the more often they were seen (r = 1 < 4 < 16;
/// about 2.5 / 6.1 / 8.1 bits with the shipped, regularized victim).
#[test]
fn exposure_grows_with_repetitions_in_the_canary_circuit() {
    let groups = canary_groups(&mut oracle(
        "digits-canary.circuit.json",
        OutputMode::Raw,
        None,
    ));
    println!("circuit exposure by repetitions (raw): {groups:?}");
    assert_eq!((groups[0].0, groups[2].0), (1, 16));
    assert!(
        groups[0].1 < groups[1].1 && groups[1].1 < groups[2].1,
        "{groups:?}"
    );
}
