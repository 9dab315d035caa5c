//! Model inversion (Fredrikson, Jha and Ristenpart, "Model Inversion
//! Attacks that Exploit Confidence Information and Basic
//! Countermeasures", CCS 2015, the MI-Face algorithm), black-box.
//!
//! For a target class the attacker starts from a featureless image and
//! climbs the target's returned score by gradient ascent. The gradient is
//! not available through the API, so it is estimated from answers:
//! **forward-difference SPSA** (simultaneous perturbation, Spall 1992):
//! per step the current image `x` and `d` perturbed images `x + c·Δ_i`
//! (`Δ_i` uniform random signs, clipped to `[0, 16]`) are queried, and
//! `ĝ = Σ_i (f(x + δ_i) − f(x))·δ_i / (d·c²)` with `δ_i` the actual
//! (clipped) displacement. That is `1 + d` queries per step instead of the
//! `1 + 64` of per-pixel forward differences, and the score of every
//! iterate comes for free, so the best iterate is returned (as MI-Face
//! does). The step is normalized to an RMS of `step` pixel units per pixel.
//!
//! The score `f` is [`label_score`]: the log-softmax of the returned
//! logits at the target (scores policies), the target's position score
//! (top-k) or the indicator `label == target` (label-only). Under
//! label-only answers most differences are exactly zero, so the attack
//! spends its queries mostly without moving: the paper's rounding
//! countermeasure taken to its extreme (nothing but the label). Mostly:
//! near a decision boundary a probe can flip the label, and the ascent
//! then creeps across it. [`ClassInversion::zero_gradient_steps`] counts
//! the steps that saw no change.
//!
//! Quality is judged like the paper's: distance to the class's mean
//! training image (pixels over 16, so MSE in `[0, 1]`), and whether an
//! independently trained classifier (a float model the oracle never ran,
//! [`FloatJudge`]) labels the reconstruction as the target.

use std::path::Path;

use blindfold_compiler::ir::Graph;
use blindfold_runtime::answer::Answer;
use blindfold_runtime::data::argmax;

use super::memorization::label_score;
use super::{AuditError, Oracle, Rng};

/// Largest pixel value of a digits image.
const PIXEL_MAX: f64 = 16.0;

/// The image the ascent starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Start {
    /// All pixels 0.
    Blank,
    /// All pixels 8 (mid-gray), so perturbations can go both ways.
    Gray,
}

impl Start {
    pub fn image(&self, len: usize) -> Vec<f64> {
        match self {
            Start::Blank => vec![0.0; len],
            Start::Gray => vec![PIXEL_MAX / 2.0; len],
        }
    }
}

/// Settings of the MI-Face attack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InversionConfig {
    /// Queries per target class, all included (start, probes, the final
    /// re-query).
    pub queries_per_class: u64,
    /// Random directions `d` per gradient estimate.
    pub directions: usize,
    /// Probe size `c` in pixel units. The shipped circuits quantize pixels
    /// to as few as 4 levels (2-bit inputs, steps of 5⅓), so small probes
    /// mostly change nothing.
    pub probe: f64,
    /// RMS step per pixel, pixel units.
    pub step: f64,
    pub start: Start,
    /// MI-Face's stopping threshold `γ` on the target's confidence (the
    /// softmax probability from scores, or `(k − position)/k` from labels:
    /// 1 when the target is the returned label): the ascent stops once an
    /// iterate reaches it, before it drifts further from the data. `None`
    /// spends the whole budget.
    pub stop_confidence: Option<f64>,
    /// Seed of the perturbations.
    pub seed: u64,
}

impl Default for InversionConfig {
    /// 2,000 queries per class, 4 directions, probe 4, step 1, mid-gray start.
    fn default() -> Self {
        Self {
            queries_per_class: 2000,
            directions: 4,
            probe: 4.0,
            step: 1.0,
            start: Start::Gray,
            stop_confidence: None,
            seed: 0,
        }
    }
}

/// The ascent for one target class.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassInversion {
    pub target: usize,
    /// The best iterate (pixels in `[0, 16]`, not rounded).
    pub image: Vec<f64>,
    /// Target score ([`label_score`]) of the start image.
    pub start_score: f64,
    /// Score of the best iterate when it was queried.
    pub best_score: f64,
    /// A fresh query of the returned image (differs from `best_score`
    /// under noise; `None` if the budget refused it).
    pub final_score: Option<f64>,
    /// Gradient steps taken.
    pub steps: usize,
    /// Steps whose estimate was exactly zero (no answer changed).
    pub zero_gradient_steps: usize,
    pub queries: u64,
    /// The oracle's refusal, if it cut the ascent short.
    pub refused: Option<String>,
}

fn query_one(oracle: &mut dyn Oracle, rows: &[Vec<f64>]) -> Result<Vec<Answer>, AuditError> {
    let a = oracle.query(rows)?;
    if a.len() != rows.len() {
        return Err(AuditError::Invalid(format!(
            "oracle answered {} of {} rows",
            a.len(),
            rows.len()
        )));
    }
    Ok(a)
}

/// MI-Face for one `target` (see the module doc). Errors if the very first
/// query is refused; a later refusal ends the ascent and is reported.
pub fn invert_class(
    oracle: &mut dyn Oracle,
    target: usize,
    config: &InversionConfig,
    rng: &mut Rng,
) -> Result<ClassInversion, AuditError> {
    if target >= oracle.classes() {
        return Err(AuditError::Invalid(format!(
            "target class {target} with {} classes",
            oracle.classes()
        )));
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if config.directions == 0 || !positive(config.probe) || !positive(config.step) {
        return Err(AuditError::Invalid(
            "inversion needs directions ≥ 1 and finite probe > 0 and step > 0".into(),
        ));
    }
    let per_step = 1 + config.directions as u64;
    // one query is kept for the final re-query
    let steps_max = config.queries_per_class.saturating_sub(1) / per_step;
    if steps_max == 0 {
        return Err(AuditError::Invalid(format!(
            "{} queries per class leave no gradient step ({} per step + 1)",
            config.queries_per_class, per_step
        )));
    }
    let n = oracle.input_len();
    let start_q = oracle.queries();
    let mut x = config.start.image(n);
    let mut best = x.clone();
    let mut start_score = None;
    let mut best_score = f64::NEG_INFINITY;
    let mut steps = 0;
    let mut zero = 0;
    let mut refused = None;
    let c2 = config.probe * config.probe;
    for _ in 0..steps_max {
        let deltas: Vec<Vec<f64>> = (0..config.directions)
            .map(|_| {
                x.iter()
                    .map(|v| {
                        let s = if rng.below(2) == 0 { -1.0 } else { 1.0 };
                        (v + s * config.probe).clamp(0.0, PIXEL_MAX) - v
                    })
                    .collect()
            })
            .collect();
        let mut rows = Vec::with_capacity(1 + deltas.len());
        rows.push(x.clone());
        rows.extend(
            deltas
                .iter()
                .map(|d| x.iter().zip(d).map(|(v, e)| v + e).collect::<Vec<f64>>()),
        );
        let answers = match query_one(oracle, &rows) {
            Ok(a) => a,
            Err(AuditError::Refused { queries, message }) if start_score.is_some() => {
                refused = Some(format!("refused after {queries} queries: {message}"));
                break;
            }
            Err(e) => return Err(e),
        };
        let scores: Vec<f64> = answers.iter().map(|a| label_score(a, target)).collect();
        let fx = scores[0];
        start_score.get_or_insert(fx);
        if fx > best_score {
            best_score = fx;
            best.clone_from(&x);
        }
        if let (Some(gamma), Some(a)) = (config.stop_confidence, answers.first()) {
            if answer_confidence(a, fx) >= gamma {
                break;
            }
        }
        let mut grad = vec![0.0; n];
        for (d, fd) in deltas.iter().zip(&scores[1..]) {
            let diff = fd - fx;
            if diff != 0.0 && diff.is_finite() {
                for (g, e) in grad.iter_mut().zip(d) {
                    *g += diff * e / (c2 * config.directions as f64);
                }
            }
        }
        steps += 1;
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if norm == 0.0 {
            zero += 1;
            continue;
        }
        let scale = config.step * (n as f64).sqrt() / norm;
        for (v, g) in x.iter_mut().zip(&grad) {
            *v = (*v + scale * g).clamp(0.0, PIXEL_MAX);
        }
    }
    let final_score = if refused.is_none() {
        match query_one(oracle, std::slice::from_ref(&best)) {
            Ok(a) => a.first().map(|a| label_score(a, target)),
            Err(AuditError::Refused { queries, message }) => {
                refused = Some(format!("refused after {queries} queries: {message}"));
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let start_score = start_score
        .ok_or_else(|| AuditError::Invalid("inversion took no step (empty budget)".into()))?;
    Ok(ClassInversion {
        target,
        image: best,
        start_score,
        best_score,
        final_score,
        steps,
        zero_gradient_steps: zero,
        queries: oracle.queries() - start_q,
        refused,
    })
}

/// The target's confidence in `[0, 1]` from its [`label_score`] `score`:
/// `exp(score)` for scores, `score / k` for `k` labels.
fn answer_confidence(answer: &Answer, score: f64) -> f64 {
    if answer.scores.is_empty() {
        score / answer.labels.len().max(1) as f64
    } else {
        score.exp()
    }
}

/// Mean squared error of two images with pixels scaled by `1/16` (so in
/// `[0, 1]` for digits images).
pub fn image_mse(a: &[f64], b: &[f64]) -> Result<f64, AuditError> {
    if a.len() != b.len() || a.is_empty() {
        return Err(AuditError::Invalid(format!(
            "MSE of images of {} and {} pixels",
            a.len(),
            b.len()
        )));
    }
    Ok(a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) / PIXEL_MAX).powi(2))
        .sum::<f64>()
        / a.len() as f64)
}

/// Mean image of each class `0..classes` over rows `x` with labels `y`
/// (what a faithful inversion should resemble). Errors if a class has no
/// row.
pub fn class_means(
    x: &[Vec<f64>],
    y: &[usize],
    classes: usize,
) -> Result<Vec<Vec<f64>>, AuditError> {
    let len = x.first().map_or(0, Vec::len);
    if x.len() != y.len() || x.iter().any(|r| r.len() != len) {
        return Err(AuditError::Invalid("ragged rows or labels".into()));
    }
    let mut sums = vec![vec![0.0; len]; classes];
    let mut counts = vec![0usize; classes];
    for (row, label) in x.iter().zip(y) {
        let (Some(s), Some(c)) = (sums.get_mut(*label), counts.get_mut(*label)) else {
            return Err(AuditError::Invalid(format!(
                "label {label} with {classes} classes"
            )));
        };
        for (a, v) in s.iter_mut().zip(row) {
            *a += v;
        }
        *c += 1;
    }
    sums.into_iter()
        .zip(counts)
        .enumerate()
        .map(|(k, (s, c))| {
            if c == 0 {
                Err(AuditError::Invalid(format!("class {k} has no rows")))
            } else {
                Ok(s.into_iter().map(|v| v / c as f64).collect())
            }
        })
        .collect()
}

/// An independently trained float classifier (an ONNX model run by the
/// circuits crate's float evaluator) that judges reconstructions. It must
/// differ from the attacked model, or recognition would only confirm that
/// the ascent climbed the oracle's own score.
#[derive(Clone, Debug)]
pub struct FloatJudge {
    graph: Graph,
}

impl FloatJudge {
    /// Imports `path` (ONNX); its input must take `input_len` features.
    pub fn load(path: &Path, input_len: usize) -> Result<Self, AuditError> {
        let graph = blindfold_compiler::onnx::import_onnx_file(path)?;
        if graph.input_len() != input_len {
            return Err(AuditError::Invalid(format!(
                "judge {} takes {} features, the images have {input_len}",
                path.display(),
                graph.input_len()
            )));
        }
        Ok(Self { graph })
    }

    /// The judge's class for raw features (f32, like the exported model).
    pub fn predict(&self, image: &[f64]) -> Result<usize, AuditError> {
        let x: Vec<f32> = image.iter().map(|v| *v as f32).collect();
        Ok(argmax(&self.graph.eval_logits::<f32>(&x)?))
    }
}

/// One class's inversion with its quality measures.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassReport {
    pub inversion: ClassInversion,
    /// MSE of the reconstruction to the class mean.
    pub mse: f64,
    /// MSE of the start image to the class mean (the no-attack baseline).
    pub start_mse: f64,
    /// MSE of a uniform random image to the class mean (seeded).
    pub noise_mse: f64,
    /// The judge's label for the reconstruction.
    pub judged: Option<usize>,
}

/// Result of [`mi_face_audit`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct InversionReport {
    /// One per class inverted (all classes unless the oracle refused).
    pub classes: Vec<ClassReport>,
    pub mean_mse: f64,
    pub mean_start_mse: f64,
    pub mean_noise_mse: f64,
    /// Reconstructions the judge labels as their target (`None` without a
    /// judge).
    pub recognized: Option<usize>,
    /// Classes whose *start* image the judge already labels as the target
    /// (the chance baseline of `recognized`: 1 for a constant start image
    /// the judge assigns to some class).
    pub start_recognized: Option<usize>,
    /// Steps with a zero gradient estimate, over all classes.
    pub zero_gradient_steps: usize,
    pub steps: usize,
    pub queries: u64,
    pub refused: Option<String>,
}

/// MI-Face for every class `0..class_means.len()`, scored against the
/// class means and (optionally) by an independent judge.
pub fn mi_face_audit(
    oracle: &mut dyn Oracle,
    class_means: &[Vec<f64>],
    judge: Option<&FloatJudge>,
    config: &InversionConfig,
) -> Result<InversionReport, AuditError> {
    if class_means.len() != oracle.classes() {
        return Err(AuditError::Invalid(format!(
            "{} class means for {} classes",
            class_means.len(),
            oracle.classes()
        )));
    }
    let start_q = oracle.queries();
    let mut rng = Rng::new(config.seed);
    let mut noise_rng = Rng::new(config.seed ^ 0x6e6f_6973_6520_696d);
    let start_image = config.start.image(oracle.input_len());
    let start_label = judge.map(|j| j.predict(&start_image)).transpose()?;
    let mut classes = Vec::with_capacity(class_means.len());
    let mut refused = None;
    for (target, mean) in class_means.iter().enumerate() {
        let inversion = match invert_class(oracle, target, config, &mut rng) {
            Ok(inv) => inv,
            Err(AuditError::Refused { queries, message }) => {
                refused = Some(format!("refused after {queries} queries: {message}"));
                break;
            }
            Err(e) => return Err(e),
        };
        let noise: Vec<f64> = (0..mean.len())
            .map(|_| noise_rng.below(17) as f64)
            .collect();
        let judged = judge.map(|j| j.predict(&inversion.image)).transpose()?;
        let stop = inversion.refused.clone();
        classes.push(ClassReport {
            mse: image_mse(&inversion.image, mean)?,
            start_mse: image_mse(&start_image, mean)?,
            noise_mse: image_mse(&noise, mean)?,
            judged,
            inversion,
        });
        if stop.is_some() {
            refused = stop;
            break;
        }
    }
    let n = classes.len().max(1) as f64;
    let mean_of = |f: &dyn Fn(&ClassReport) -> f64| classes.iter().map(f).sum::<f64>() / n;
    Ok(InversionReport {
        mean_mse: mean_of(&|c| c.mse),
        mean_start_mse: mean_of(&|c| c.start_mse),
        mean_noise_mse: mean_of(&|c| c.noise_mse),
        recognized: judge.map(|_| {
            classes
                .iter()
                .filter(|c| c.judged == Some(c.inversion.target))
                .count()
        }),
        start_recognized: start_label
            .map(|l| classes.iter().filter(|c| c.inversion.target == l).count()),
        zero_gradient_steps: classes
            .iter()
            .map(|c| c.inversion.zero_gradient_steps)
            .sum(),
        steps: classes.iter().map(|c| c.inversion.steps).sum(),
        queries: oracle.queries() - start_q,
        refused,
        classes,
    })
}
