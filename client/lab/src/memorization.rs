//! Memorization attacks: how much an answer API leaks about individual
//! training records.
//!
//! * **Exposure** (Carlini et al., "The Secret Sharer", USENIX Security
//!   2019): canaries (random images with a chosen label, inserted into the
//!   training set `r` times) are ranked against reference candidates (fresh
//!   uniform random images with the same label) by how likely the model
//!   finds the label. A memorized canary outranks nearly all candidates:
//!   exposure near `log2(|R| + 1)` bits; an unmemorized one sits in the
//!   middle (about 1 bit).
//! * **Membership inference** (Yeom et al., CSF 2018; Shokri et al., S&P
//!   2017, the threshold form): the attacker knows a record and its label
//!   and guesses "member" when the model is confident in that label. The
//!   AUC of that confidence over training rows vs held-out rows measures
//!   the advantage of every threshold at once (0.5: no leak).
//!
//! Both attacks only see what the policy returns ([`Answer`]): scores
//! (log-softmax of the returned logits), top-k labels (position of the
//! label) or the label alone (an indicator), see [`label_score`].

use std::path::Path;

use blindfold_runtime::answer::Answer;
use blindfold_runtime::data::{log_softmax, Dataset, RowRange};
use serde::Deserialize;

use super::{AuditError, Oracle, Rng};

/// Rows per oracle call: small enough that a budget refusal leaves most of
/// the budget used, large enough to keep per-call overhead low.
const BATCH: usize = 64;

/// How much an answer favours `label`, from whatever the policy returned.
///
/// * scores present (raw or truncated scores): the log-softmax of the
///   returned logits at `label` (`≤ 0`, higher = more likely);
/// * labels only (top-k, best first; label-only is `k = 1`): `k − position`
///   of `label` in the list (`k` for the best, `1` for the last), `0` when
///   absent. With `k = 1` this is the indicator `label == answer.label`.
pub fn label_score(answer: &Answer, label: usize) -> f64 {
    if !answer.scores.is_empty() {
        return log_softmax(&answer.scores)
            .get(label)
            .copied()
            .unwrap_or(f64::NEG_INFINITY);
    }
    let k = answer.labels.len();
    match answer.labels.iter().position(|l| *l == label) {
        Some(pos) => (k - pos) as f64,
        None => 0.0,
    }
}

/// The attacker's confidence in `label` for membership inference: the
/// softmax probability of `label` when scores are returned, else the
/// label-position score of [`label_score`] (an indicator under label-only).
/// A monotone transform of [`label_score`], so rank statistics (AUC,
/// exposure) are the same with either.
pub fn confidence(answer: &Answer, label: usize) -> f64 {
    if answer.scores.is_empty() {
        label_score(answer, label)
    } else {
        label_score(answer, label).exp()
    }
}

/// Rank of a canary among candidates (1 = best): `1 + #{candidates scoring
/// strictly higher} + #{candidates tying}/2`. The half-tie rule is the
/// expected rank when ties are broken uniformly at random, so coarse
/// answers (label-only: scores 0 or 1) neither help nor hurt the canary.
pub fn rank(canary: f64, candidates: &[f64]) -> f64 {
    let higher = candidates.iter().filter(|c| **c > canary).count();
    let ties = candidates.iter().filter(|c| **c == canary).count();
    1.0 + higher as f64 + ties as f64 / 2.0
}

/// Exposure in bits: `log2(|R| + 1) − log2(rank)`, with `|R|` the number
/// of candidates (the `+ 1` counts the canary itself, so the space ranked
/// is `R ∪ {canary}` and a canary above every candidate gets exactly
/// `log2(|R| + 1)`; the lowest possible value is `0`).
pub fn exposure(canary: f64, candidates: &[f64]) -> f64 {
    ((candidates.len() + 1) as f64).log2() - rank(canary, candidates).log2()
}

/// Area under the ROC curve of `positives` (members) against `negatives`
/// (non-members) by the Mann–Whitney rank statistic: the fraction of
/// (positive, negative) pairs where the positive scores higher, ties
/// counted half. `O(n log n)` via mid-ranks of the pooled sample.
pub fn auc(positives: &[f64], negatives: &[f64]) -> Result<f64, AuditError> {
    if positives.is_empty() || negatives.is_empty() {
        return Err(AuditError::Invalid(
            "AUC needs at least one positive and one negative score".into(),
        ));
    }
    if positives.iter().chain(negatives).any(|v| v.is_nan()) {
        return Err(AuditError::Invalid("AUC of NaN scores".into()));
    }
    let mut pooled: Vec<(f64, bool)> = positives
        .iter()
        .map(|v| (*v, true))
        .chain(negatives.iter().map(|v| (*v, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    // sum of the positives' mid-ranks (1-based)
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        let mid = (i + 1 + j) as f64 / 2.0; // mean of ranks i+1..=j
        rank_sum += mid * pooled[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    let (np, nn) = (positives.len() as f64, negatives.len() as f64);
    Ok((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// Queries `rows` in batches until done or refused. Returns the answers
/// obtained and, if the oracle refused, its message; other errors end the
/// attack.
fn query_all(
    oracle: &mut dyn Oracle,
    rows: &[Vec<f64>],
) -> Result<(Vec<Answer>, Option<String>), AuditError> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(BATCH) {
        match oracle.query(chunk) {
            Ok(a) => {
                if a.len() != chunk.len() {
                    return Err(AuditError::Invalid(format!(
                        "oracle answered {} of {} rows",
                        a.len(),
                        chunk.len()
                    )));
                }
                out.extend(a);
            }
            Err(AuditError::Refused { queries, message }) => {
                return Ok((
                    out,
                    Some(format!("refused after {queries} queries: {message}")),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok((out, None))
}

/// A canary: a (random) image inserted `repetitions` times into the
/// training set with `label`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Canary {
    pub id: String,
    pub repetitions: u32,
    pub label: usize,
    /// 64 pixels in `0..=16`.
    pub pixels: Vec<f64>,
}

#[derive(Deserialize)]
struct CanaryFile {
    canaries: Vec<CanaryEntry>,
}

#[derive(Deserialize)]
struct CanaryEntry {
    id: serde_json::Value,
    repetitions: u32,
    label: usize,
    pixels: Vec<f64>,
}

/// Largest canary file we read.
const MAX_CANARY_BYTES: u64 = 16 << 20;

/// Reads a canary list (`{"canaries": [{"id", "repetitions", "label",
/// "pixels": [64 ints]}]}`, as written next to a canary-trained model).
/// `id` may be a string or a number. Pixels must be integers in `0..=16`
/// and labels below `classes`.
pub fn load_canaries(path: &Path, classes: usize) -> Result<Vec<Canary>, AuditError> {
    let text = blindfold_runtime::data::read_limited(path, MAX_CANARY_BYTES)?;
    parse_canaries(&text, classes)
        .map_err(|e| AuditError::Invalid(format!("{}: {e}", path.display())))
}

/// [`load_canaries`] on the file's text.
pub fn parse_canaries(text: &str, classes: usize) -> Result<Vec<Canary>, String> {
    let file: CanaryFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if file.canaries.is_empty() {
        return Err("no canaries".into());
    }
    file.canaries
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let id = match c.id {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                other => return Err(format!("canary {i}: id {other} is not a string or number")),
            };
            if c.pixels.len() != 64 {
                return Err(format!(
                    "canary {id}: {} pixels, expected 64",
                    c.pixels.len()
                ));
            }
            if let Some(p) = c
                .pixels
                .iter()
                .find(|p| !(0.0..=16.0).contains(*p) || p.fract() != 0.0)
            {
                return Err(format!(
                    "canary {id}: pixel {p} is not an integer in 0..=16"
                ));
            }
            if c.label >= classes {
                return Err(format!(
                    "canary {id}: label {} with {classes} classes",
                    c.label
                ));
            }
            if c.repetitions == 0 {
                return Err(format!("canary {id}: zero repetitions"));
            }
            Ok(Canary {
                id,
                repetitions: c.repetitions,
                label: c.label,
                pixels: c.pixels,
            })
        })
        .collect()
}

/// Settings of [`exposure_audit`].
#[derive(Clone, Copy, Debug)]
pub struct ExposureConfig {
    /// Reference candidates `|R|` (uniform random images).
    pub candidates: usize,
    /// Seed of the candidates.
    pub seed: u64,
}

impl Default for ExposureConfig {
    /// 4,096 candidates, seed 0.
    fn default() -> Self {
        Self {
            candidates: 4096,
            seed: 0,
        }
    }
}

/// One canary's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CanaryExposure {
    pub id: String,
    pub repetitions: u32,
    pub label: usize,
    /// [`label_score`] of the canary at its label.
    pub score: f64,
    /// [`rank`] among the candidates.
    pub rank: f64,
    /// [`exposure`] in bits.
    pub exposure: f64,
}

/// Mean exposure of the canaries inserted the same number of times.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GroupExposure {
    pub repetitions: u32,
    pub canaries: usize,
    pub mean_exposure: f64,
    pub max_exposure: f64,
}

/// Result of [`exposure_audit`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ExposureReport {
    /// Candidates answered (`|R|`; fewer than asked if the oracle refused).
    pub candidates: usize,
    /// The largest possible exposure, `log2(|R| + 1)`.
    pub ceiling: f64,
    /// One per canary answered, in input order.
    pub canaries: Vec<CanaryExposure>,
    /// By repetitions, ascending.
    pub groups: Vec<GroupExposure>,
    /// Queries spent: `canaries + |R|` (one candidate set for all).
    pub queries: u64,
    /// What separate candidate sets per canary would cost: `canaries·(|R|+1)`.
    pub queries_unshared: u64,
    /// The oracle's refusal, if it stopped the attack early.
    pub refused: Option<String>,
}

/// Exposure of every canary against one shared set of `|R|` uniform random
/// images.
///
/// Sharing: a candidate's answer does not depend on which label it is
/// paired with, so one query per candidate image serves every canary (each
/// canary's candidates are the images paired with *its* label, scored by
/// [`label_score`] at that label). That costs `|R| + #canaries` queries
/// instead of `#canaries·(|R| + 1)` (or `#labels·|R| + #canaries` with one
/// set per label). The canaries' exposures are then correlated through the
/// shared candidates, but each is distributed as with its own set.
///
/// Canaries are queried first; if the oracle refuses, the exposures are
/// computed against the candidates answered so far and the refusal is
/// reported.
pub fn exposure_audit(
    oracle: &mut dyn Oracle,
    canaries: &[Canary],
    config: &ExposureConfig,
) -> Result<ExposureReport, AuditError> {
    if canaries.is_empty() {
        return Err(AuditError::Invalid("no canaries".into()));
    }
    if oracle.input_len() != 64 {
        return Err(AuditError::Invalid(format!(
            "exposure candidates are digits images (64 pixels); the model takes {} features",
            oracle.input_len()
        )));
    }
    if let Some(c) = canaries
        .iter()
        .find(|c| c.pixels.len() != oracle.input_len())
    {
        return Err(AuditError::Invalid(format!(
            "canary {} has {} features, the model takes {}",
            c.id,
            c.pixels.len(),
            oracle.input_len()
        )));
    }
    let start = oracle.queries();
    let rows: Vec<Vec<f64>> = canaries.iter().map(|c| c.pixels.clone()).collect();
    let (canary_answers, mut refused) = query_all(oracle, &rows)?;
    let mut rng = Rng::new(config.seed);
    let candidate_rows: Vec<Vec<f64>> =
        (0..config.candidates).map(|_| rng.digits_image()).collect();
    let candidate_answers = if refused.is_none() {
        let (a, r) = query_all(oracle, &candidate_rows)?;
        refused = r;
        a
    } else {
        Vec::new()
    };
    let results: Vec<CanaryExposure> = canaries
        .iter()
        .zip(&canary_answers)
        .map(|(c, a)| {
            let score = label_score(a, c.label);
            let cand: Vec<f64> = candidate_answers
                .iter()
                .map(|a| label_score(a, c.label))
                .collect();
            CanaryExposure {
                id: c.id.clone(),
                repetitions: c.repetitions,
                label: c.label,
                score,
                rank: rank(score, &cand),
                exposure: exposure(score, &cand),
            }
        })
        .collect();
    let mut reps: Vec<u32> = results.iter().map(|r| r.repetitions).collect();
    reps.sort_unstable();
    reps.dedup();
    let groups = reps
        .into_iter()
        .map(|r| {
            let e: Vec<f64> = results
                .iter()
                .filter(|c| c.repetitions == r)
                .map(|c| c.exposure)
                .collect();
            GroupExposure {
                repetitions: r,
                canaries: e.len(),
                mean_exposure: e.iter().sum::<f64>() / e.len() as f64,
                max_exposure: e.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect();
    let n = candidate_answers.len();
    Ok(ExposureReport {
        candidates: n,
        ceiling: ((n + 1) as f64).log2(),
        canaries: results,
        groups,
        queries: oracle.queries() - start,
        queries_unshared: canaries.len() as u64 * (config.candidates as u64 + 1),
        refused,
    })
}

/// A record whose membership is guessed: features and the true label (the
/// attacker knows both).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Record {
    pub features: Vec<f64>,
    pub label: usize,
}

/// `n` distinct rows of `x`/`y` chosen by `rng` (partial Fisher–Yates), in
/// the order drawn; all rows (in order) when `n ≥ x.len()`.
pub fn sample_records(
    x: &[Vec<f64>],
    y: &[usize],
    n: usize,
    rng: &mut Rng,
) -> Result<Vec<Record>, AuditError> {
    if x.len() != y.len() {
        return Err(AuditError::Invalid(format!(
            "{} feature rows but {} labels",
            x.len(),
            y.len()
        )));
    }
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let take = n.min(x.len());
    if take < x.len() {
        for i in 0..take {
            let j = i + rng.below(x.len() - i);
            idx.swap(i, j);
        }
    }
    Ok(idx[..take]
        .iter()
        .map(|i| Record {
            features: x[*i].clone(),
            label: y[*i],
        })
        .collect())
}

/// Members and non-members with equal counts: `per_side` rows drawn (seeded)
/// from the `train` rows and `per_side` from the `test` rows (all test rows
/// when there are no more; the members are then cut to the same count).
pub fn membership_split(
    dataset: &Dataset,
    train: RowRange,
    test: RowRange,
    per_side: usize,
    seed: u64,
) -> Result<(Vec<Record>, Vec<Record>), AuditError> {
    let mut rng = Rng::new(seed);
    let (tx, ty) = dataset.rows(train)?;
    let (vx, vy) = dataset.rows(test)?;
    let n = per_side.min(tx.len()).min(vx.len());
    let members = sample_records(&tx, &ty, n, &mut rng)?;
    let non_members = sample_records(&vx, &vy, n, &mut rng)?;
    Ok((members, non_members))
}

/// Result of [`membership_audit`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MembershipReport {
    pub members: usize,
    pub non_members: usize,
    /// Mann–Whitney AUC of [`confidence`], members positive (0.5: no leak).
    pub auc: f64,
    pub member_mean: f64,
    pub non_member_mean: f64,
    /// Best accuracy of a single threshold on the balanced pair set
    /// (`(TPR + TNR)/2` maximized; Yeom's advantage is `2·acc − 1`).
    pub best_threshold_accuracy: f64,
    /// One per record.
    pub queries: u64,
}

/// The threshold membership attack: queries every record once, scores it
/// by [`confidence`] at its true label, and reports the AUC of members
/// against non-members. Refusals end the attack with the error (a partial
/// AUC over an unbalanced remainder would mislead).
pub fn membership_audit(
    oracle: &mut dyn Oracle,
    members: &[Record],
    non_members: &[Record],
) -> Result<MembershipReport, AuditError> {
    let start = oracle.queries();
    let mut score = |records: &[Record]| -> Result<Vec<f64>, AuditError> {
        let rows: Vec<Vec<f64>> = records.iter().map(|r| r.features.clone()).collect();
        let mut out = Vec::with_capacity(rows.len());
        for (chunk, recs) in rows.chunks(BATCH).zip(records.chunks(BATCH)) {
            let answers = oracle.query(chunk)?;
            if answers.len() != chunk.len() {
                return Err(AuditError::Invalid(format!(
                    "oracle answered {} of {} rows",
                    answers.len(),
                    chunk.len()
                )));
            }
            out.extend(
                answers
                    .iter()
                    .zip(recs)
                    .map(|(a, r)| confidence(a, r.label)),
            );
        }
        Ok(out)
    };
    let pos = score(members)?;
    let neg = score(non_members)?;
    let auc = auc(&pos, &neg)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(MembershipReport {
        members: pos.len(),
        non_members: neg.len(),
        auc,
        member_mean: mean(&pos),
        non_member_mean: mean(&neg),
        best_threshold_accuracy: best_threshold_accuracy(&pos, &neg),
        queries: oracle.queries() - start,
    })
}

/// `max_t (TPR(t) + TNR(t)) / 2` over thresholds "member iff score ≥ t"
/// (every observed score, plus +∞ for "nobody").
fn best_threshold_accuracy(pos: &[f64], neg: &[f64]) -> f64 {
    let mut thresholds: Vec<f64> = pos.iter().chain(neg).copied().collect();
    thresholds.push(f64::INFINITY);
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    thresholds
        .iter()
        .map(|t| {
            let tpr = pos.iter().filter(|v| **v >= *t).count() as f64 / pos.len() as f64;
            let tnr = neg.iter().filter(|v| **v < *t).count() as f64 / neg.len() as f64;
            (tpr + tnr) / 2.0
        })
        .fold(0.5, f64::max)
}
