//! Black-box adversarial examples by transfer (Papernot, McDaniel,
//! Goodfellow, Jha, Celik, Swami: "Practical Black-Box Attacks against
//! Machine Learning", AsiaCCS 2017).
//!
//! The attacker trains a local substitute from label queries only, growing
//! its training set by Jacobian-based dataset augmentation: each round,
//! every collected image `x` with oracle label `y` yields
//! `clip(x + λ·sign(∂p_y(x)/∂x))`, which is queried and added (the set
//! doubles per round). It then crafts FGSM examples on the substitute,
//! `clip(x + ε·sign(∇ₓ CE(substitute(x), y)))`, and measures how many the
//! victim misclassifies: a label-only policy does not stop this attack,
//! which needs only labels.
//!
//! Queries: only substitute training goes through the attack's oracle. The
//! victim's labels on the test images and on the adversarial examples come
//! from the `reference` oracle (the auditor's view: same model, noise-free,
//! no budget), so [`TransferReport::queries`] is the attack's whole cost.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::extraction::{reference_labels, uniform_image, Querier, PIXEL_MAX};
use super::learn::{scale_pixels, Classifier, Mlp, TrainConfig};
use super::{AuditError, Oracle, Rng};

/// Where the substitute's training starts.
#[derive(Clone, Debug, PartialEq)]
pub enum SeedSet {
    /// This many uniform random images (no data at all).
    Uniform { count: usize },
    /// Given images, e.g. a few per class from a held-out part of the
    /// public test split (Papernot et al. use 150 test images). They must
    /// not overlap the images the attack is evaluated on.
    Rows(Vec<Vec<f64>>),
}

/// Settings of [`papernot_transfer`].
#[derive(Clone, Debug, PartialEq)]
pub struct PapernotConfig {
    pub seed: SeedSet,
    /// Substitute augmentation rounds `ρ` (queries ≈ seed · 2^ρ).
    pub rounds: usize,
    /// Augmentation step in pixel units (Papernot's 0.1 of the range is
    /// 1.6 here).
    pub lambda: f64,
    /// The step's sign flips every `flip_every` rounds (Papernot's
    /// periodic step size, `τ`); 0 never flips.
    pub flip_every: usize,
    /// Hidden width of the MLP substitute (on pixels / 16).
    pub hidden: usize,
    /// FGSM perturbation sizes in pixel units (of 16).
    pub epsilons: Vec<f64>,
    /// Rows per oracle call.
    pub batch: usize,
}

impl PapernotConfig {
    /// ρ = 5, λ = 1.6, τ = 3, 64 hidden units, ε ∈ {0, 2, 4}, 256 rows per
    /// call.
    pub fn new(seed: SeedSet) -> Self {
        Self {
            seed,
            rounds: 5,
            lambda: 1.6,
            flip_every: 3,
            hidden: 64,
            epsilons: vec![0.0, 2.0, 4.0],
            batch: 256,
        }
    }
}

/// Transfer at one perturbation size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransferPoint {
    /// Pixel units (of 16).
    pub epsilon: f64,
    /// Fraction of attacked images the victim now misclassifies (its
    /// label differs from the true one): the transfer rate.
    pub victim_misclassified: f64,
    /// The same for the substitute (white-box success on the substitute).
    pub substitute_misclassified: f64,
    /// Control: the victim's misclassification under a random-sign
    /// perturbation of the same size, so transfer is not mistaken for
    /// plain noise sensitivity.
    pub random_sign_misclassified: f64,
}

/// What [`papernot_transfer`] found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransferReport {
    /// The seed set, in words.
    pub seed: String,
    /// Augmentation rounds completed.
    pub rounds: usize,
    /// Label queries spent on the substitute (the attack's whole cost).
    pub queries: u64,
    /// Queries spent when the oracle refused; the substitute was trained on
    /// what had been answered.
    pub stopped_at: Option<u64>,
    /// Answers whose label was not a class index (spent, not trained on).
    pub invalid_answers: u64,
    /// Test-split agreement of the substitute with the victim.
    pub substitute_agreement: f64,
    /// Test images attacked: those the victim classifies correctly.
    pub attacked: usize,
    pub points: Vec<TransferPoint>,
    pub seconds: f64,
}

impl TransferReport {
    /// The point at perturbation size `epsilon`.
    pub fn at(&self, epsilon: f64) -> Option<&TransferPoint> {
        self.points.iter().find(|p| p.epsilon == epsilon)
    }
}

/// The substitute's training set: images, their features, oracle labels.
#[derive(Default)]
struct Labelled {
    raw: Vec<Vec<f64>>,
    feats: Vec<Vec<f64>>,
    labels: Vec<usize>,
    /// Answers whose label was not a class index: spent, not trained on.
    invalid: u64,
}

impl Labelled {
    /// Queries `rows` and keeps the answered rows with a valid label.
    fn ask(
        &mut self,
        q: &mut Querier<'_>,
        rows: Vec<Vec<f64>>,
        classes: usize,
    ) -> Result<(), AuditError> {
        let answers = q.ask(&rows)?;
        for (r, a) in rows.into_iter().zip(&answers) {
            if a.label < classes {
                self.feats.push(scale_pixels(&r));
                self.labels.push(a.label);
                self.raw.push(r);
            } else {
                self.invalid += 1;
            }
        }
        Ok(())
    }
}

fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `clip(x + step·sign(g))` in the pixel domain.
fn signed_step(x: &[f64], g: &[f64], step: f64) -> Vec<f64> {
    x.iter()
        .zip(g)
        .map(|(x, g)| (x + step * sign(*g)).clamp(0.0, PIXEL_MAX))
        .collect()
}

/// Papernot et al.'s attack: substitute training by Jacobian-based
/// augmentation through `oracle` (label answers suffice), then FGSM on the
/// substitute at each `config.epsilons`, evaluated through `reference` on
/// the `test` images (with true `test_labels`) that the victim classifies
/// correctly.
pub fn papernot_transfer(
    oracle: &mut dyn Oracle,
    reference: &mut dyn Oracle,
    test: &[Vec<f64>],
    test_labels: &[usize],
    config: &PapernotConfig,
    rng: &mut Rng,
) -> Result<TransferReport, AuditError> {
    let start = Instant::now();
    if test.len() != test_labels.len() {
        return Err(AuditError::Invalid(format!(
            "{} test images but {} labels",
            test.len(),
            test_labels.len()
        )));
    }
    let mut q = Querier::new(oracle, config.batch);
    let classes = q.classes();
    let len = q.input_len();
    let (seed_rows, seed_name) = match &config.seed {
        SeedSet::Uniform { count } => (
            (0..*count)
                .map(|_| uniform_image(rng, len))
                .collect::<Vec<_>>(),
            format!("{count} uniform random images"),
        ),
        SeedSet::Rows(rows) => (rows.clone(), format!("{} given images", rows.len())),
    };
    if let Some(r) = seed_rows.iter().chain(test).find(|r| r.len() != len) {
        return Err(AuditError::Invalid(format!(
            "an image has {} pixels, the model takes {len}",
            r.len()
        )));
    }
    let cfg = TrainConfig::mlp();
    let mut substitute = Mlp::new(len, config.hidden.max(1), classes, rng);
    let mut data = Labelled::default();
    data.ask(&mut q, seed_rows, classes)?;
    if !data.labels.is_empty() {
        substitute.fit(&data.feats, &data.labels, &cfg, rng)?;
    }
    let mut rounds = 0;
    while rounds < config.rounds && q.stopped_at.is_none() && !data.raw.is_empty() {
        let flip = config.flip_every > 0 && (rounds / config.flip_every) % 2 == 1;
        let step = if flip { -config.lambda } else { config.lambda };
        let new: Vec<Vec<f64>> = data
            .raw
            .par_iter()
            .zip(&data.feats)
            .zip(&data.labels)
            .map(|((x, f), y)| signed_step(x, &substitute.probability_gradient(f, *y), step))
            .collect();
        let before = data.labels.len();
        data.ask(&mut q, new, classes)?;
        if data.labels.len() > before {
            substitute.fit(&data.feats, &data.labels, &cfg, rng)?;
        }
        if q.stopped_at.is_none() {
            rounds += 1;
        }
    }
    // evaluation, through the reference oracle only
    let victim = reference_labels(reference, test, config.batch)?;
    let test_feats: Vec<Vec<f64>> = test.iter().map(|r| scale_pixels(r)).collect();
    let sub = substitute.predict_all(&test_feats);
    let substitute_agreement = if test.is_empty() {
        0.0
    } else {
        sub.iter().zip(&victim).filter(|(a, b)| a == b).count() as f64 / test.len() as f64
    };
    let correct: Vec<usize> = (0..test.len())
        .filter(|&i| victim[i] == test_labels[i])
        .collect();
    let mut points = Vec::with_capacity(config.epsilons.len());
    for &eps in &config.epsilons {
        let adv: Vec<Vec<f64>> = correct
            .iter()
            .map(|&i| {
                let g = substitute.loss_gradient(&test_feats[i], test_labels[i]);
                signed_step(&test[i], &g, eps)
            })
            .collect();
        let v = reference_labels(reference, &adv, config.batch)?;
        let noisy: Vec<Vec<f64>> = correct
            .iter()
            .map(|&i| {
                let g: Vec<f64> = (0..len)
                    .map(|_| if rng.below(2) == 0 { -1.0 } else { 1.0 })
                    .collect();
                signed_step(&test[i], &g, eps)
            })
            .collect();
        let r = reference_labels(reference, &noisy, config.batch)?;
        let s = substitute.predict_all(&adv.iter().map(|r| scale_pixels(r)).collect::<Vec<_>>());
        let rate = |pred: &[usize]| {
            if correct.is_empty() {
                return 0.0;
            }
            correct
                .iter()
                .zip(pred)
                .filter(|(&i, p)| **p != test_labels[i])
                .count() as f64
                / correct.len() as f64
        };
        points.push(TransferPoint {
            epsilon: eps,
            victim_misclassified: rate(&v),
            substitute_misclassified: rate(&s),
            random_sign_misclassified: rate(&r),
        });
    }
    Ok(TransferReport {
        seed: seed_name,
        rounds,
        queries: q.spent,
        stopped_at: q.stopped_at,
        invalid_answers: data.invalid,
        substitute_agreement,
        attacked: correct.len(),
        points,
        seconds: start.elapsed().as_secs_f64(),
    })
}
