//! The whole audit: every attack against every policy, as one report.
//!
//! A policy is audited through oracles opened by name (served models a
//! server reports, matched to victims by [`super::discover`], or local
//! models in tests): the victims `logreg` (softmax regression), `mlp` (R1)
//! and `canary` (R1's architecture trained with canaries) under that
//! policy, plus each victim's noise-free raw view as the `reference` that
//! extraction agreement is measured against (its queries never count
//! against the attack). A policy with an answer budget is audited on an
//! unlimited twin of its model when the server has one, each attack
//! getting the budget afresh through [`Budgeted`]: the curves show where
//! the budget cuts them (the server's enforcement of budgets is tested on
//! its own).

use std::path::{Path, PathBuf};
use std::time::Instant;

use blindfold_runtime::answer::Answer;
use blindfold_runtime::data::{Dataset, RowRange};
use serde::Serialize;

use super::adversarial::{papernot_transfer, PapernotConfig, SeedSet, TransferReport};
use super::discover::Role;
use super::extraction::{
    equation_solving, retraining, ExtractionCurve, FeatureMap, Setup, Strategy, SurrogateKind,
};
use super::inversion::{class_means, mi_face_audit, FloatJudge, InversionConfig, InversionReport};
use super::memorization::{
    exposure_audit, load_canaries, membership_audit, membership_split, ExposureConfig,
    ExposureReport, MembershipReport,
};
use super::{AuditError, Oracle, Rng};

/// Opens an oracle for a served model name.
pub type Open<'a> = dyn FnMut(&str) -> Result<Box<dyn Oracle>, AuditError> + 'a;

/// One policy to audit: which served models carry it.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyTarget {
    /// In words, e.g. "label + noise σ=1".
    pub policy: String,
    /// Softmax-regression victim under the policy (extraction).
    pub logreg: Option<String>,
    /// R1 under the policy (extraction, membership, inversion, transfer,
    /// utility).
    pub mlp: Option<String>,
    /// The canary victim under the policy (memorization).
    pub canary: Option<String>,
    /// Noise-free, unhardened views of the victims (their raw argmax), for
    /// agreement.
    pub logreg_reference: Option<String>,
    pub mlp_reference: Option<String>,
    /// Answers per client identity, if the policy has a budget.
    pub budget: Option<u64>,
}

/// Sizes of the attacks.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteOptions {
    /// Extraction query counts.
    pub points: Vec<u64>,
    /// Reference candidates for canary exposure.
    pub candidates: usize,
    /// Records per side for membership inference.
    pub membership_per_side: usize,
    /// Queries per class for MI-Face.
    pub inversion_queries: u64,
    /// Substitute augmentation rounds for the transfer attack.
    pub papernot_rounds: usize,
    /// Run the adaptive (active-learning) extraction too.
    pub adaptive: bool,
    pub seed: u64,
    /// The repository: data/, models/.
    pub repo: PathBuf,
}

impl SuiteOptions {
    /// The full audit of the issue: 650 … 65,000 extraction queries, 4,096
    /// canary candidates, 450 records a side, 2,000 queries per class.
    pub fn full(repo: &Path) -> Self {
        Self {
            points: vec![650, 3_250, 6_500, 65_000],
            candidates: 4096,
            membership_per_side: 450,
            inversion_queries: 2000,
            papernot_rounds: 5,
            adaptive: true,
            seed: 1,
            repo: repo.to_path_buf(),
        }
    }

    /// A small version for tests (minutes, not tens of minutes).
    pub fn short(repo: &Path) -> Self {
        Self {
            points: vec![200, 650],
            candidates: 256,
            membership_per_side: 100,
            inversion_queries: 60,
            papernot_rounds: 2,
            adaptive: false,
            seed: 1,
            repo: repo.to_path_buf(),
        }
    }
}

/// An oracle that refuses beyond `limit` answers, like a server budget.
pub struct Budgeted {
    inner: Box<dyn Oracle>,
    limit: u64,
    used: u64,
}

impl Budgeted {
    pub fn new(inner: Box<dyn Oracle>, limit: u64) -> Self {
        Self {
            inner,
            limit,
            used: 0,
        }
    }
}

impl Oracle for Budgeted {
    fn query(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Answer>, AuditError> {
        let remaining = self.limit.saturating_sub(self.used) as usize;
        if rows.len() > remaining {
            return Err(AuditError::Refused {
                queries: self.used,
                message: format!(
                    "answer budget exhausted: {} of {} answers used, {} requested",
                    self.used,
                    self.limit,
                    rows.len()
                ),
            });
        }
        let out = self.inner.query(rows)?;
        self.used += rows.len() as u64;
        Ok(out)
    }

    fn queries(&self) -> u64 {
        self.used
    }

    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn input_len(&self) -> usize {
        self.inner.input_len()
    }
}

/// Everything measured for one policy.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyReport {
    pub target: PolicyTarget,
    /// Accuracy honest users get from R1 under the policy (test split).
    pub utility: Option<f64>,
    /// `(attack on victim, curve, the victim's role)`.
    pub extraction: Vec<(String, ExtractionCurve, Role)>,
    pub exposure: Option<ExposureReport>,
    pub membership: Option<MembershipReport>,
    pub inversion: Option<InversionReport>,
    pub transfer: Option<TransferReport>,
    pub seconds: f64,
}

/// The digits data the attacks use.
pub struct Data {
    pub dataset: Dataset,
    pub test: Vec<Vec<f64>>,
    pub test_labels: Vec<usize>,
    pub train: RowRange,
    pub test_range: RowRange,
}

impl Data {
    pub fn load(repo: &Path) -> Result<Self, AuditError> {
        let dataset = Dataset::from_csv(&repo.join("data/digits.csv"))?;
        let parse = |r: &str| -> Result<RowRange, AuditError> {
            r.parse()
                .map_err(|e| AuditError::Invalid(format!("row range {r}: {e}")))
        };
        let train = parse("0..1346")?;
        let test_range = parse("1347..1796")?;
        let (test, test_labels) = dataset.rows(test_range)?;
        Ok(Self {
            dataset,
            test,
            test_labels,
            train,
            test_range,
        })
    }
}

/// The attack's oracle: the policy's model, budgeted if the policy is.
fn attack_oracle(
    open: &mut Open,
    model: &str,
    budget: Option<u64>,
) -> Result<Box<dyn Oracle>, AuditError> {
    let o = open(model)?;
    Ok(match budget {
        Some(b) => Box::new(Budgeted::new(o, b)),
        None => o,
    })
}

/// Points of an extraction curve under an optional budget: the budget
/// itself is a point (where the curve is cut).
fn points_for(opts: &SuiteOptions, budget: Option<u64>) -> Vec<u64> {
    let mut p = opts.points.clone();
    if let Some(b) = budget {
        p.retain(|x| *x < b);
        p.push(b);
    }
    p
}

/// Accuracy of `oracle`'s labels on the test split.
pub fn utility(oracle: &mut dyn Oracle, data: &Data) -> Result<f64, AuditError> {
    let mut ok = 0usize;
    for (rows, labels) in data.test.chunks(16).zip(data.test_labels.chunks(16)) {
        let a = oracle.query(rows)?;
        ok += a.iter().zip(labels).filter(|(a, l)| a.label == **l).count();
    }
    Ok(ok as f64 / data.test.len().max(1) as f64)
}

/// Runs every attack that applies to `target`.
pub fn audit_policy(
    target: &PolicyTarget,
    open: &mut Open,
    data: &Data,
    opts: &SuiteOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PolicyReport, AuditError> {
    let start = Instant::now();
    let mut report = PolicyReport {
        target: target.clone(),
        utility: None,
        extraction: Vec::new(),
        exposure: None,
        membership: None,
        inversion: None,
        transfer: None,
        seconds: 0.0,
    };
    let budget = target.budget;
    let points = points_for(opts, budget);
    let mut rng = Rng::new(opts.seed);
    // extraction
    for (role, victim, reference) in [
        (Role::Logreg, &target.logreg, &target.logreg_reference),
        (Role::Mlp, &target.mlp, &target.mlp_reference),
    ] {
        let (Some(victim), Some(reference)) = (victim, reference) else {
            continue;
        };
        let mut refo = open(reference)?;
        // the attacker uses the public input encoding when it has it
        let features = match open(victim)?.input_spec() {
            Some(spec) => FeatureMap::Encoded(spec),
            None => FeatureMap::Pixels,
        };
        let setup = Setup::new(features, data.test.clone(), data.test_labels.clone());
        progress(&format!("{}: equation solving on {victim}", target.policy));
        let mut o = attack_oracle(open, victim, budget)?;
        let c = equation_solving(o.as_mut(), refo.as_mut(), &setup, &points, &mut rng)?;
        report
            .extraction
            .push((format!("{victim}: equation solving"), c, role));
        let mut strategies = vec![Strategy::Uniform];
        if opts.adaptive {
            strategies.push(Strategy::Adaptive);
        }
        for strategy in strategies {
            progress(&format!(
                "{}: label retraining ({strategy:?}) on {victim}",
                target.policy
            ));
            let mut o = attack_oracle(open, victim, budget)?;
            let c = retraining(
                o.as_mut(),
                refo.as_mut(),
                &setup,
                &points,
                strategy,
                SurrogateKind::Mlp { hidden: 32 },
                &mut rng,
            )?;
            report
                .extraction
                .push((format!("{victim}: label retraining, {strategy:?}"), c, role));
        }
    }
    if let Some(mlp) = &target.mlp {
        progress(&format!("{}: utility", target.policy));
        let mut o = open(mlp)?;
        report.utility = Some(utility(o.as_mut(), data)?);
        progress(&format!("{}: membership inference", target.policy));
        let (members, non_members) = membership_split(
            &data.dataset,
            data.train,
            data.test_range,
            opts.membership_per_side,
            opts.seed,
        )?;
        let mut o = attack_oracle(open, mlp, budget)?;
        report.membership = tolerate_refusal(membership_audit(o.as_mut(), &members, &non_members))?;
        progress(&format!("{}: model inversion", target.policy));
        let (train_x, train_y) = data.dataset.rows(data.train)?;
        let means = class_means(&train_x, &train_y, 10)?;
        let judge = FloatJudge::load(&opts.repo.join("models/digits-cnn.onnx"), 64)?;
        let config = InversionConfig {
            queries_per_class: opts.inversion_queries,
            seed: opts.seed,
            ..Default::default()
        };
        let mut o = attack_oracle(open, mlp, budget)?;
        report.inversion = Some(mi_face_audit(o.as_mut(), &means, Some(&judge), &config)?);
        if let Some(reference) = &target.mlp_reference {
            progress(&format!("{}: adversarial transfer", target.policy));
            let mut refo = open(reference)?;
            let mut config = PapernotConfig::new(SeedSet::Uniform { count: 150 });
            config.rounds = opts.papernot_rounds;
            let mut o = attack_oracle(open, mlp, budget)?;
            report.transfer = Some(papernot_transfer(
                o.as_mut(),
                refo.as_mut(),
                &data.test,
                &data.test_labels,
                &config,
                &mut rng,
            )?);
        }
    }
    if let Some(canary) = &target.canary {
        progress(&format!("{}: canary exposure", target.policy));
        let canaries = load_canaries(&opts.repo.join("models/digits-canaries.json"), 10)?;
        let mut o = attack_oracle(open, canary, budget)?;
        report.exposure = Some(exposure_audit(
            o.as_mut(),
            &canaries,
            &ExposureConfig {
                candidates: opts.candidates,
                seed: opts.seed,
            },
        )?);
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// A refused attack (budget) reports nothing rather than failing the audit.
fn tolerate_refusal<T>(r: Result<T, AuditError>) -> Result<Option<T>, AuditError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(AuditError::Refused { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.3}", x)).unwrap_or_else(|| "-".into())
}

/// Agreement on the test split at the curve's last point, with the
/// queries it took.
fn curve_cell(c: &ExtractionCurve) -> String {
    match (&c.not_applicable, c.last()) {
        (Some(_), _) => "n/a".into(),
        (None, Some(p)) => format!("{:.3}@{}", p.test_agreement, p.queries),
        (None, None) => "-".into(),
    }
}

/// A readable summary: one block per policy.
pub fn render(reports: &[PolicyReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!(
            "\n== {} ({:.0} s)\n  honest-user accuracy (R1): {}\n",
            r.target.policy,
            r.seconds,
            pct(r.utility)
        ));
        for (name, c, _) in &r.extraction {
            let pts: Vec<String> = c
                .points
                .iter()
                .map(|p| {
                    format!(
                        "{}: {:.3} test / {:.3} uniform",
                        p.queries, p.test_agreement, p.fresh_agreement
                    )
                })
                .collect();
            let cut = c
                .stopped_at
                .map(|q| format!(" (budget stopped it at {q})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  extraction, {name}: {}{cut}\n",
                match &c.not_applicable {
                    Some(why) => format!("not applicable ({why})"),
                    None => pts.join("; "),
                }
            ));
        }
        if let Some(e) = &r.exposure {
            let g: Vec<String> = e
                .groups
                .iter()
                .map(|g| format!("r={}: {:.2}", g.repetitions, g.mean_exposure))
                .collect();
            out.push_str(&format!(
                "  canary exposure (bits, max {:.1}, {} candidates, {} queries): {}\n",
                e.ceiling,
                e.candidates,
                e.queries,
                g.join(", ")
            ));
        }
        if let Some(m) = &r.membership {
            out.push_str(&format!(
                "  membership inference AUC: {:.3} ({} queries)\n",
                m.auc, m.queries
            ));
        }
        if let Some(i) = &r.inversion {
            out.push_str(&format!(
                "  model inversion (MI-Face): MSE to class mean {:.3} (start {:.3}), recognized {}/10 by an independent CNN, {} queries\n",
                i.mean_mse,
                i.mean_start_mse,
                i.recognized.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                i.queries
            ));
        }
        if let Some(t) = &r.transfer {
            let p: Vec<String> = t
                .points
                .iter()
                .map(|p| format!("ε={}: {:.3}", p.epsilon, p.victim_misclassified))
                .collect();
            out.push_str(&format!(
                "  adversarial transfer (substitute from {} label queries, agreement {:.3}): victim misclassifies {}\n",
                t.queries,
                t.substitute_agreement,
                p.join(", ")
            ));
        }
    }
    out
}

/// One line per policy for the README table.
pub fn summary_table(reports: &[PolicyReport]) -> String {
    let mut out = String::from(
        "| policy | honest accuracy | logreg eq. solving | logreg label retrain | R1 label retrain | canary exposure r=1/4/16 | membership AUC | inversion recognized | transfer ε=4 |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        // the first curve of `role` whose attack name contains `attack`
        let find = |role: Role, attack: &str| {
            r.extraction
                .iter()
                .find(|(n, _, ro)| *ro == role && n.contains(attack))
                .map(|(_, c, _)| curve_cell(c))
                .unwrap_or_else(|| "-".into())
        };
        let exposure = r
            .exposure
            .as_ref()
            .map(|e| {
                e.groups
                    .iter()
                    .map(|g| format!("{:.1}", g.mean_exposure))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.target.policy,
            pct(r.utility),
            find(Role::Logreg, "equation solving"),
            find(Role::Logreg, "Uniform"),
            find(Role::Mlp, "Uniform"),
            exposure,
            r.membership
                .as_ref()
                .map(|m| format!("{:.3}", m.auc))
                .unwrap_or_else(|| "-".into()),
            r.inversion
                .as_ref()
                .and_then(|i| i.recognized)
                .map(|v| format!("{v}/10"))
                .unwrap_or_else(|| "-".into()),
            r.transfer
                .as_ref()
                .and_then(|t| t.at(4.0))
                .map(|p| format!("{:.3}", p.victim_misclassified))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    out
}
