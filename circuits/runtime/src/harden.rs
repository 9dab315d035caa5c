//! Hardening: the model owner's output policy, compiled into circuit stages
//! that run on the ciphertexts after the network, so the client can decrypt
//! nothing more than the policy allows.
//!
//! A served model ([`Hardened`]) is one circuit or an ensemble of circuits
//! sharing one input encoding, plus a [`Policy`]. Per query the server
//! samples the noise and builds a [`Plan`]: the members' output-layer tables
//! (replaced by the policy's quantizers, noise folded in) and a list of
//! stage operations, each a linear combination of earlier values optionally
//! followed by one programmable bootstrap. The clear evaluator
//! ([`Hardened::evaluate_clear`]) and the FHE evaluator
//! ([`crate::eval::fhe::PlanEvaluator`]) execute the same plan, so with the
//! same noise they give bit-identical answers.
//!
//! Encoding. Stage values are integers modulo `2^(p+1)` in units of
//! `Δ = 2^(63-p)`, like hidden activations. Comparisons need the difference
//! of two values to fit the `2^p` window, so values compared live in
//! `[0, 2^(p-1))` ("comparison units", `b = p-1` bits).
//!
//! Noise. With one member the noise is added inside the output layer's
//! bootstrap: the table maps accumulator `m` to `Q(logit(m) + n_j)`, where
//! `Q` is the mode's quantizer (so the noise is discretized to its step and
//! the sum is clamped to its range). With several members it is added the
//! same way in the bootstrap that re-quantizes the aggregated logits or
//! votes. Either way it is added to the encrypted logit (or vote count)
//! before truncation or argmax, and never leaves the server.
//!
//! Argmax (`label`): a tournament. Match `a` vs `b` (all of `a`'s candidate
//! indices below `b`'s) bootstraps `m = a - b + 2^b` once per needed table:
//! `relu` for the winner's value (`max = b + relu(a - b)`), and the winner's
//! index as digits in base `B = 2^(p-2)`: in the first round the indices are
//! constants and one table per digit yields `[a ≥ b]·(i_a - i_b)` directly;
//! later a table yields `K·[a ≥ b]` and one bivariate table per digit
//! selects `i_a - i_b` from `(i_a - i_b) + K·[a ≥ b]`. Ties go to the lower
//! index, as in the clear `argmax`. The final label is refreshed by one
//! more bootstrap so the client decrypts a bootstrap output.
//! `top_k` repeats the tournament after masking the previous winners (two
//! bootstraps per class per extra label). Votes (PATE) take each member's
//! argmax, one-hot it (one bootstrap per class), sum the one-hots and
//! re-quantize the noisy counts.

use serde::{Deserialize, Serialize};

use crate::circuit::{Circuit, ClientSpec, OutputKind};
use crate::eval::clear::bootstrap_value;
use crate::params::ParamSet;
use crate::{Error, Result};

/// What an answer contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum OutputMode {
    /// The requantized logits (for the owner's own testing).
    Raw,
    /// Logits truncated by bootstrap to `bits` bits over the calibrated range.
    Scores { bits: u32 },
    /// The argmax only.
    Label,
    /// The `k` best labels, best first.
    TopK { k: usize },
}

impl std::fmt::Display for OutputMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputMode::Raw => write!(f, "raw"),
            OutputMode::Scores { bits } => write!(f, "scores ({bits} bits)"),
            OutputMode::Label => write!(f, "label"),
            OutputMode::TopK { k } => write!(f, "top-{k}"),
        }
    }
}

/// Noise distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    None,
    /// `scale` is the standard deviation.
    Gaussian,
    /// `scale` is the Laplace scale `b` (standard deviation `b·√2`).
    Laplace,
}

/// Noise added per query to every class's logit (or vote count), in logit
/// units (votes for vote ensembles).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    pub kind: NoiseKind,
    pub scale: f64,
}

impl Noise {
    pub const NONE: Noise = Noise {
        kind: NoiseKind::None,
        scale: 0.0,
    };

    pub fn is_none(&self) -> bool {
        self.kind == NoiseKind::None || self.scale == 0.0
    }

    /// One sample per class from `rng` (the server passes a CSPRNG).
    pub fn sample(&self, n: usize, rng: &mut dyn rand_core::RngCore) -> Vec<f64> {
        // uniform in (0, 1): 53 random bits, never 0
        let mut uniform = || ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        match self.kind {
            _ if self.is_none() => vec![0.0; n],
            NoiseKind::None => vec![0.0; n],
            NoiseKind::Gaussian => (0..n)
                .map(|_| {
                    // Box–Muller
                    let (u1, u2) = (uniform(), uniform());
                    self.scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
                })
                .collect(),
            NoiseKind::Laplace => (0..n)
                .map(|_| {
                    let u = uniform() - 0.5;
                    -self.scale * u.signum() * (1.0 - 2.0 * u.abs()).ln()
                })
                .collect(),
        }
    }

    /// Standard deviation of one sample.
    pub fn std_dev(&self) -> f64 {
        match self.kind {
            _ if self.is_none() => 0.0,
            NoiseKind::None => 0.0,
            NoiseKind::Gaussian => self.scale,
            NoiseKind::Laplace => self.scale * std::f64::consts::SQRT_2,
        }
    }
}

/// How ensemble members are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Sum of the members' (requantized) logits.
    #[default]
    Logits,
    /// Sum of the members' one-hot votes (PATE).
    Votes,
}

/// The owner's policy for one served model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub output: OutputMode,
    pub noise: Noise,
    /// One bootstrap per encrypted input clamping it to its valid range.
    pub clamp_inputs: bool,
    pub aggregate: Aggregate,
}

impl Default for Policy {
    /// Label only, no noise, no clamp.
    fn default() -> Self {
        Self {
            output: OutputMode::Label,
            noise: Noise::NONE,
            clamp_inputs: false,
            aggregate: Aggregate::Logits,
        }
    }
}

/// Affine quantizer with clamping: `level = clamp(round(x/step) + zp, lo, hi)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantizer {
    pub step: f64,
    pub zero_point: i64,
    pub lo: i64,
    pub hi: i64,
}

impl Quantizer {
    /// Maps `[min, max]` onto levels `[lo, hi]`.
    fn over(min: f64, max: f64, lo: i64, hi: i64) -> Self {
        let span = (max - min).max(1e-9);
        let step = span / (hi - lo).max(1) as f64;
        Self {
            step,
            zero_point: lo - (min / step).round() as i64,
            lo,
            hi,
        }
    }

    pub fn level(&self, x: f64) -> i64 {
        let l = (x / self.step).round();
        if l.is_nan() {
            return self.lo;
        }
        (l.clamp(-1e15, 1e15) as i64 + self.zero_point).clamp(self.lo, self.hi)
    }

    pub fn value(&self, level: i64) -> f64 {
        self.step * (level - self.zero_point) as f64
    }
}

/// A linear combination of earlier values, optionally bootstrapped.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// `(value id, weight)`.
    pub terms: Vec<(usize, i64)>,
    /// Added in units of `Δ_p`.
    pub constant: i64,
    pub lookup: Option<Lookup>,
    /// Bootstrap depth: lookups of one level run together.
    pub level: usize,
}

/// A programmable bootstrap of the op's combination (a `2^p`-entry table,
/// negacyclic beyond), output in units of `2^(63-out_bits)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    pub table: Vec<i64>,
    pub out_bits: u32,
}

/// One query's program: everything after the members' hidden layers.
#[derive(Clone, Debug)]
pub struct Plan {
    pub clamp_inputs: bool,
    /// `[member][class]`: output-layer tables replacing the circuit's.
    pub member_tables: Vec<Vec<Vec<i64>>>,
    /// Output precision of the members' output layers.
    pub member_out_bits: u32,
    /// Value ids: member `e`, class `j` is `e·classes + j`; op `k` is
    /// `members·classes + k`.
    pub ops: Vec<Op>,
    pub outputs: Vec<usize>,
    pub output_bits: u32,
    pub members: usize,
    pub classes: usize,
}

impl Plan {
    /// Value id of op `k`.
    pub fn op_id(&self, k: usize) -> usize {
        self.members * self.classes + k
    }

    /// Bootstraps the stage adds after the members' output layers.
    pub fn stage_bootstraps(&self) -> usize {
        self.ops.iter().filter(|o| o.lookup.is_some()).count()
    }

    /// Largest lookup level.
    pub fn depth(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| o.lookup.is_some())
            .map(|o| o.level)
            .max()
            .unwrap_or(0)
    }

    /// Whether value `id` is the output of a bootstrap (a member output or a
    /// lookup op), not a linear combination: what circuit privacy requires
    /// of everything the client decrypts.
    pub fn is_bootstrap_output(&self, id: usize) -> bool {
        let base = self.members * self.classes;
        id < base || self.ops.get(id - base).is_some_and(|o| o.lookup.is_some())
    }
}

/// Bootstrap counts of one served model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub input_clamp: usize,
    pub members: usize,
    pub stage: usize,
    pub keyswitches: usize,
    pub depth: usize,
}

impl Cost {
    pub fn bootstraps(&self) -> usize {
        self.input_clamp + self.members + self.stage
    }
}

/// A served model: member circuits, one policy, and the derived quantizers.
#[derive(Clone, Debug)]
pub struct Hardened {
    pub name: String,
    pub members: Vec<Circuit>,
    pub policy: Policy,
    /// Quantizer of the members' outputs (ensembles only).
    member_q: Option<Quantizer>,
    /// The mode's quantizer, applied to the (noisy) logit or vote count.
    final_q: Quantizer,
    final_bits: u32,
}

fn window_table(p: u32, f: impl Fn(i64) -> i64) -> Vec<i64> {
    (0..1i64 << p).map(f).collect()
}

/// Index digit of a tournament contestant.
#[derive(Clone, Copy, Debug)]
enum Lane {
    Const(i64),
    Val(usize),
}

struct Builder {
    p: u32,
    base: usize,
    levels: Vec<usize>,
    ops: Vec<Op>,
}

impl Builder {
    fn level_of(&self, id: usize) -> usize {
        self.levels[id]
    }

    fn push(&mut self, terms: Vec<(usize, i64)>, constant: i64, lookup: Option<Lookup>) -> usize {
        let input = terms
            .iter()
            .map(|(id, _)| self.level_of(*id))
            .max()
            .unwrap_or(0);
        let level = input + usize::from(lookup.is_some());
        self.ops.push(Op {
            terms,
            constant,
            lookup,
            level,
        });
        self.levels.push(level);
        self.base + self.ops.len() - 1
    }

    fn lookup(&mut self, terms: Vec<(usize, i64)>, constant: i64, table: Vec<i64>) -> usize {
        let out_bits = self.p;
        self.push(terms, constant, Some(Lookup { table, out_bits }))
    }

    fn linear(&mut self, terms: Vec<(usize, i64)>, constant: i64) -> usize {
        self.push(terms, constant, None)
    }

    /// Terms and constant of `Σ w·lane`.
    fn lanes(lanes: &[(Lane, i64)]) -> (Vec<(usize, i64)>, i64) {
        let mut terms = Vec::new();
        let mut c = 0;
        for (l, w) in lanes {
            match l {
                Lane::Const(v) => c += v * w,
                Lane::Val(id) => terms.push((*id, *w)),
            }
        }
        (terms, c)
    }

    /// Tournament argmax over values in comparison units `[0, 2^(p-1))`.
    /// Returns the winner's index digits (base `2^(p-2)`, least significant
    /// first).
    fn argmax(&mut self, values: &[usize]) -> Vec<Lane> {
        let p = self.p;
        let half = 1i64 << (p - 1);
        let base = 1i64 << (p - 2);
        let k_sel = 2 * base - 1;
        let digits = digits_for(values.len(), base);
        let digit = |i: i64, d: usize| (i / base.pow(d as u32)) % base;
        let mut round: Vec<(usize, Vec<Lane>)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    *v,
                    (0..digits)
                        .map(|d| Lane::Const(digit(i as i64, d)))
                        .collect(),
                )
            })
            .collect();
        while round.len() > 1 {
            let last = round.len() == 2;
            let mut next = Vec::with_capacity(round.len().div_ceil(2));
            let mut it = round.into_iter();
            while let Some(a) = it.next() {
                let Some(b) = it.next() else {
                    next.push(a);
                    break;
                };
                let (va, ia) = a;
                let (vb, ib) = b;
                let m = vec![(va, 1), (vb, -1)];
                let value = if last {
                    vb // unused
                } else {
                    let r = self.lookup(m.clone(), half, window_table(p, |x| (x - half).max(0)));
                    self.linear(vec![(vb, 1), (r, 1)], 0)
                };
                let consts: Option<Vec<(i64, i64)>> = ia
                    .iter()
                    .zip(&ib)
                    .map(|(x, y)| match (x, y) {
                        (Lane::Const(x), Lane::Const(y)) => Some((*x, *y)),
                        _ => None,
                    })
                    .collect();
                let index = match consts {
                    Some(pairs) => pairs
                        .into_iter()
                        .map(|(da, db)| {
                            if da == db {
                                Lane::Const(db)
                            } else {
                                let t = self.lookup(
                                    m.clone(),
                                    half,
                                    window_table(p, |x| if x >= half { da - db } else { 0 }),
                                );
                                Lane::Val(self.linear(vec![(t, 1)], db))
                            }
                        })
                        .collect(),
                    None => {
                        let s = self.lookup(
                            m.clone(),
                            half,
                            window_table(p, |x| if x >= half { k_sel } else { 0 }),
                        );
                        ia.iter()
                            .zip(&ib)
                            .map(|(la, lb)| {
                                if let (Lane::Const(x), Lane::Const(y)) = (la, lb) {
                                    if x == y {
                                        return Lane::Const(*y);
                                    }
                                }
                                let (mut terms, c) = Self::lanes(&[(*la, 1), (*lb, -1)]);
                                terms.push((s, 1));
                                let t = self.lookup(
                                    terms,
                                    c + base - 1,
                                    window_table(p, |x| {
                                        if x >= k_sel {
                                            x - k_sel - (base - 1)
                                        } else {
                                            0
                                        }
                                    }),
                                );
                                let (mut terms, c) = Self::lanes(&[(*lb, 1)]);
                                terms.push((t, 1));
                                Lane::Val(self.linear(terms, c))
                            })
                            .collect()
                    }
                };
                next.push((value, index));
            }
            round = next;
        }
        round.pop().map(|(_, i)| i).unwrap_or_default()
    }

    /// `Σ B^d·digit_d` as one value (a linear combination).
    fn index_value(&mut self, digits: &[Lane]) -> usize {
        let base = 1i64 << (self.p - 2);
        let lanes: Vec<(Lane, i64)> = digits
            .iter()
            .enumerate()
            .map(|(d, l)| (*l, base.pow(d as u32)))
            .collect();
        let (terms, c) = Self::lanes(&lanes);
        self.linear(terms, c)
    }
}

fn digits_for(n: usize, base: i64) -> usize {
    let mut d = 1;
    while (base as u128).pow(d as u32) < n as u128 {
        d += 1;
    }
    d
}

impl Hardened {
    /// Checks the members against each other and the policy against the
    /// encoding, and derives the quantizers.
    pub fn new(name: &str, members: Vec<Circuit>, policy: Policy) -> Result<Self> {
        let bad = |m: String| Err(Error::Compile(format!("model {name}: {m}")));
        let Some(first) = members.first() else {
            return bad("no circuits".into());
        };
        for (i, c) in members.iter().enumerate().skip(1) {
            if c.params != first.params
                || c.precision_bits != first.precision_bits
                || c.input != first.input
                || c.classes != first.classes
            {
                return bad(format!(
                    "ensemble member {i} ({}) differs from member 0 ({}) in parameter set, precision, input encoding or classes",
                    c.name, first.name
                ));
            }
        }
        let p = first.precision_bits;
        let classes = first.classes;
        let e = members.len() as i64;
        if p < 3 {
            return bad(format!(
                "a {p}-bit window is too small for hardening stages"
            ));
        }
        let b = p - 1;
        let cmp_hi = (1i64 << b) - 1;
        let needs_index = matches!(policy.output, OutputMode::Label | OutputMode::TopK { .. })
            || policy.aggregate == Aggregate::Votes && members.len() > 1;
        if needs_index && classes as u64 > 1u64 << p {
            return bad(format!(
                "{classes} classes do not fit a {p}-bit label encoding"
            ));
        }
        if classes < 2 {
            return bad("at least two classes are needed".into());
        }
        if let OutputMode::TopK { k } = policy.output {
            if k == 0 || k > classes {
                return bad(format!("top_k = {k} with {classes} classes"));
            }
        }
        if !(policy.noise.scale.is_finite() && policy.noise.scale >= 0.0) {
            return bad("noise scale must be finite and non-negative".into());
        }
        // logit ranges: calibration statistics when recorded, else the tables
        let range = |c: &Circuit| -> (f64, f64, f64, f64) {
            match c.report.logits {
                Some(s) => (s.min, s.max, s.top_min, s.top_max),
                None => {
                    let out = &c.layers[c.layers.len() - 1];
                    let vals = out
                        .lut
                        .iter()
                        .flatten()
                        .map(|y| c.output_scale * (*y - c.output_zero_point) as f64);
                    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                        (a.min(v), b.max(v))
                    });
                    (lo, hi, lo, hi)
                }
            }
        };
        let (mut all_lo, mut all_hi, mut top_lo, mut top_hi) = range(first);
        for c in &members[1..] {
            let (a, b2, t, u) = range(c);
            all_lo = all_lo.min(a);
            all_hi = all_hi.max(b2);
            top_lo = top_lo.min(t);
            top_hi = top_hi.max(u);
        }
        let votes = policy.aggregate == Aggregate::Votes && members.len() > 1;
        let member_q = if members.len() == 1 {
            None
        } else if votes {
            Some(Quantizer::over(top_lo, top_hi, 1, cmp_hi))
        } else {
            // each member's share of the window, so the sum fits it
            // even, so the share is symmetric about its centre (see `plan`)
            let u = (((1i64 << p) - 1) / e) & !1;
            if u < 2 {
                return bad(format!(
                    "{e} members leave too few levels each in a {p}-bit window"
                ));
            }
            Some(Quantizer::over(all_lo, all_hi, 0, u))
        };
        let (final_q, final_bits) = match (policy.output, votes) {
            (OutputMode::Raw, false) => (
                Quantizer {
                    step: first.output_scale,
                    zero_point: first.output_zero_point,
                    lo: 0,
                    hi: (1i64 << first.output_bits) - 1,
                },
                first.output_bits,
            ),
            (OutputMode::Raw, true) => (
                Quantizer {
                    step: 1.0,
                    zero_point: 0,
                    lo: 0,
                    hi: (1i64 << first.output_bits) - 1,
                },
                first.output_bits,
            ),
            (OutputMode::Scores { bits }, v) => {
                if bits == 0 || bits > first.output_bits {
                    return bad(format!(
                        "scores of {bits} bits (1..={} allowed)",
                        first.output_bits
                    ));
                }
                let hi = (1i64 << bits) - 1;
                if v {
                    if hi < e {
                        return bad(format!("{bits}-bit scores cannot count {e} votes"));
                    }
                    (
                        Quantizer {
                            step: 1.0,
                            zero_point: 0,
                            lo: 0,
                            hi,
                        },
                        bits,
                    )
                } else {
                    (Quantizer::over(all_lo, all_hi, 0, hi), bits)
                }
            }
            (OutputMode::Label | OutputMode::TopK { .. }, false) => {
                (Quantizer::over(top_lo, top_hi, 1, cmp_hi), p)
            }
            (OutputMode::Label | OutputMode::TopK { .. }, true) => {
                if e + 2 > cmp_hi {
                    return bad(format!("{e} votes do not fit {b}-bit comparisons"));
                }
                (
                    Quantizer {
                        step: 1.0,
                        zero_point: ((1i64 << b) - e) / 2,
                        lo: 1,
                        hi: cmp_hi,
                    },
                    p,
                )
            }
        };
        Ok(Self {
            name: name.to_string(),
            members,
            policy,
            member_q,
            final_q,
            final_bits,
        })
    }

    pub fn params(&self) -> ParamSet {
        self.members[0].params
    }

    pub fn precision_bits(&self) -> u32 {
        self.members[0].precision_bits
    }

    pub fn classes(&self) -> usize {
        self.members[0].classes
    }

    /// Noise samples a query needs (one per class).
    pub fn noise_len(&self) -> usize {
        self.classes()
    }

    fn votes(&self) -> bool {
        self.policy.aggregate == Aggregate::Votes && self.members.len() > 1
    }

    /// The quantizer the noisy logit (or vote count) goes through.
    pub fn final_quantizer(&self) -> Quantizer {
        self.final_q
    }

    /// What a client needs: the members' shared input encoding and the
    /// policy's output.
    pub fn client_spec(&self) -> ClientSpec {
        let first = &self.members[0];
        let (output, bits, scale, zp) = match self.policy.output {
            OutputMode::Raw | OutputMode::Scores { .. } => (
                OutputKind::Logits,
                self.final_bits,
                self.final_q.step,
                self.final_q.zero_point,
            ),
            OutputMode::Label => (OutputKind::Labels { k: 1 }, self.final_bits, 1.0, 0),
            OutputMode::TopK { k } => (OutputKind::Labels { k }, self.final_bits, 1.0, 0),
        };
        ClientSpec {
            name: self.name.clone(),
            params: first.params,
            precision_bits: first.precision_bits,
            input: first.input.clone(),
            classes: first.classes,
            output_bits: bits,
            output_scale: scale,
            output_zero_point: zp,
            output,
        }
    }

    /// Bootstrap and keyswitch counts per inference.
    pub fn cost(&self) -> Cost {
        let plan = self.plan(&vec![0.0; self.noise_len()]);
        let members: usize = self.members.iter().map(|c| c.pbs_per_inference()).sum();
        let input_clamp = if self.policy.clamp_inputs {
            self.members[0].input.len()
        } else {
            0
        };
        let member_ks: usize = self
            .members
            .iter()
            .map(|c| {
                c.ks_per_inference()
                    + if self.policy.clamp_inputs {
                        c.layers[0].out_len
                    } else {
                        0
                    }
            })
            .sum();
        Cost {
            input_clamp,
            members,
            stage: plan.stage_bootstraps(),
            keyswitches: member_ks + plan.stage_bootstraps(),
            depth: plan.depth(),
        }
    }

    /// Builds one query's plan around the noise `noise` (one value per
    /// class, logit or vote units; zeros for none).
    pub fn plan(&self, noise: &[f64]) -> Plan {
        let p = self.precision_bits();
        let classes = self.classes();
        let e = self.members.len();
        let nz = |j: usize| noise.get(j).copied().unwrap_or(0.0);
        let logit_of = |c: &Circuit, y: i64| c.output_scale * (y - c.output_zero_point) as f64;
        let final_q = self.final_q;
        let mut b = Builder {
            p,
            base: e * classes,
            levels: vec![0; e * classes],
            ops: Vec::new(),
        };
        // Ensemble member outputs that feed the stage are centred: a table holds
        // `level - c` with `c` the middle of the level range, so that the
        // negacyclic image `-(level - c)` of an out-of-window accumulator
        // (an input far from anything calibrated) is again a level in
        // range, `2c - level`. A free linear op adds `c` back. Without it
        // such an input could drive the tournament out of its range and
        // decrypt to a label that is no class.
        let centre = |q: &Quantizer| (q.lo + q.hi) / 2;
        let (member_tables, member_out_bits, aggregated): (Vec<Vec<Vec<i64>>>, u32, Vec<usize>) =
            match self.member_q {
                None => {
                    // one member: noise and the mode's quantizer in its output layer
                    let c = &self.members[0];
                    let out = &c.layers[c.layers.len() - 1];
                    let compared = matches!(
                        self.policy.output,
                        OutputMode::Label | OutputMode::TopK { .. }
                    );
                    let tables = out
                        .lut
                        .iter()
                        .enumerate()
                        .map(|(j, t)| {
                            t.iter()
                                .map(|y| final_q.level(logit_of(c, *y) + nz(j)))
                                .collect()
                        })
                        .collect();
                    // Compared values: an out-of-window accumulator comes
                    // out negated (below every level); one bootstrap per
                    // class floors it at 0, under every in-window level
                    // (≥ 1), so the label is the raw logits' argmax for
                    // every input and the tournament stays in range.
                    let half = 1i64 << (p - 1);
                    let ids = if compared {
                        (0..classes)
                            .map(|j| {
                                b.lookup(vec![(j, 1)], half, window_table(p, |x| (x - half).max(0)))
                            })
                            .collect()
                    } else {
                        (0..classes).collect()
                    };
                    (vec![tables], self.final_bits, ids)
                }
                Some(mq) => {
                    let shift = centre(&mq);
                    let tables: Vec<Vec<Vec<i64>>> = self
                        .members
                        .iter()
                        .map(|c| {
                            let out = &c.layers[c.layers.len() - 1];
                            out.lut
                                .iter()
                                .map(|t| {
                                    t.iter()
                                        .map(|y| mq.level(logit_of(c, *y)) - shift)
                                        .collect()
                                })
                                .collect()
                        })
                        .collect();
                    let sums: Vec<usize> = if self.votes() {
                        // each member's argmax, one-hot, summed
                        let mut onehots = vec![Vec::new(); classes];
                        for m in 0..e {
                            let vals: Vec<usize> = (0..classes)
                                .map(|j| b.linear(vec![(m * classes + j, 1)], shift))
                                .collect();
                            let digits = b.argmax(&vals);
                            let idx = b.index_value(&digits);
                            for (j, oh) in onehots.iter_mut().enumerate() {
                                let j = j as i64;
                                oh.push(b.lookup(
                                    vec![(idx, 1)],
                                    0,
                                    window_table(p, |x| i64::from(x == j)),
                                ));
                            }
                        }
                        onehots
                            .into_iter()
                            .map(|ids| b.linear(ids.into_iter().map(|i| (i, 1)).collect(), 0))
                            .collect()
                    } else {
                        (0..classes)
                            .map(|j| {
                                b.linear(
                                    (0..e).map(|m| (m * classes + j, 1)).collect(),
                                    shift * e as i64,
                                )
                            })
                            .collect()
                    };
                    let ef = e as f64;
                    let agg_bits = if matches!(self.policy.output, OutputMode::Raw)
                        || matches!(self.policy.output, OutputMode::Scores { .. })
                    {
                        self.final_bits
                    } else {
                        p
                    };
                    let votes = self.votes();
                    let agg: Vec<usize> = sums
                        .into_iter()
                        .enumerate()
                        .map(|(j, s)| {
                            let table = window_table(p, |x| {
                                let estimate = if votes {
                                    x as f64
                                } else {
                                    mq.step * (x as f64 / ef - mq.zero_point as f64)
                                };
                                final_q.level(estimate + nz(j))
                            });
                            b.push(
                                vec![(s, 1)],
                                0,
                                Some(Lookup {
                                    table,
                                    out_bits: agg_bits,
                                }),
                            )
                        })
                        .collect();
                    (tables, p, agg)
                }
            };
        let outputs = match self.policy.output {
            OutputMode::Raw | OutputMode::Scores { .. } => aggregated,
            OutputMode::Label => {
                let digits = b.argmax(&aggregated);
                let idx = b.index_value(&digits);
                vec![b.lookup(vec![(idx, 1)], 0, window_table(p, |x| x))]
            }
            OutputMode::TopK { k } => {
                let half = 1i64 << (p - 1);
                let mut current = aggregated;
                let mut labels = Vec::with_capacity(k);
                for round in 0..k {
                    let digits = b.argmax(&current);
                    let idx = b.index_value(&digits);
                    labels.push(b.lookup(vec![(idx, 1)], 0, window_table(p, |x| x)));
                    if round + 1 < k {
                        current = current
                            .iter()
                            .enumerate()
                            .map(|(j, v)| {
                                let j = j as i64;
                                let hit = b.lookup(
                                    vec![(idx, 1)],
                                    0,
                                    window_table(p, |x| if x == j { half } else { 0 }),
                                );
                                b.lookup(
                                    vec![(*v, 1), (hit, -1)],
                                    half,
                                    window_table(p, |x| (x - half).max(0)),
                                )
                            })
                            .collect();
                    }
                }
                labels
            }
        };
        Plan {
            clamp_inputs: self.policy.clamp_inputs,
            member_tables,
            member_out_bits,
            ops: b.ops,
            outputs,
            output_bits: self.final_bits,
            members: e,
            classes,
        }
    }

    /// Predicted probability that one of the hardening bootstraps (input
    /// clamp and stage) lands in the wrong box, from the same tfhe-rs noise
    /// formulas as the circuit report: every stage input is a weighted sum
    /// of bootstrap outputs (variance `Σ w²·σ²_PBS`), then keyswitched and
    /// modulus switched; clamp inputs are fresh encryptions. Counts any
    /// shift as a failure (an upper bound), summed over bootstraps (union
    /// bound). Add the members' own reports for a whole answer.
    pub fn stage_failure_probability(&self) -> f64 {
        let plan = self.plan(&vec![0.0; self.noise_len()]);
        let noise = self.params().noise();
        let units = 2f64.powi(self.precision_bits() as i32 + 1);
        let fail =
            |variance: f64| 1.0 - crate::params::shift_probability(0, variance.sqrt() * units);
        let mut total = 0.0;
        if plan.clamp_inputs {
            let per_input = fail(noise.fresh_small + noise.modulus_switch);
            total += per_input * self.members[0].input.len() as f64;
        }
        let mut var = vec![noise.pbs_output; plan.members * plan.classes];
        for op in &plan.ops {
            let v: f64 = op
                .terms
                .iter()
                .map(|(id, w)| (w * w) as f64 * var[*id])
                .sum();
            if op.lookup.is_some() {
                total += fail(v + noise.keyswitch + noise.modulus_switch);
                var.push(noise.pbs_output);
            } else {
                var.push(v);
            }
        }
        total.min(1.0)
    }

    /// Checks a quantized input against the shared input encoding.
    pub fn check_input(&self, input: &[i64]) -> Result<()> {
        let spec = &self.members[0].input;
        if input.len() != spec.len() {
            return Err(Error::InputLength {
                expected: spec.len(),
                got: input.len(),
            });
        }
        let max_in = 1i64 << spec.bits;
        if let Some(bad) = input.iter().find(|v| **v < 0 || **v >= max_in) {
            return Err(Error::Eval(format!(
                "quantized input {bad} is outside [0, {max_in})"
            )));
        }
        Ok(())
    }

    /// The clear evaluator for a plan: what the client would decrypt,
    /// integers modulo `2^(output_bits+1)`.
    pub fn evaluate_clear(&self, plan: &Plan, input: &[i64]) -> Result<Vec<i64>> {
        self.check_input(input)?;
        let p = self.precision_bits();
        let input: Vec<i64> = if plan.clamp_inputs {
            let bits = self.members[0].input.bits;
            input.iter().map(|x| clamp_input(*x, bits, p)).collect()
        } else {
            input.to_vec()
        };
        let mut values: Vec<i64> = Vec::with_capacity(plan.members * plan.classes + plan.ops.len());
        for (c, tables) in self.members.iter().zip(&plan.member_tables) {
            values.extend(crate::eval::clear::evaluate_with_output(
                c,
                &input,
                tables,
                plan.member_out_bits,
            )?);
        }
        run_ops(&plan.ops, &mut values, p);
        Ok(plan.outputs.iter().map(|id| values[*id]).collect())
    }

    /// Decodes an answer (decrypted or clear) with this model's client spec.
    pub fn decode(&self, out: &[i64]) -> Answer {
        Answer::decode(&self.client_spec(), out)
    }
}

/// A decoded answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    /// The best class (the argmax of the scores for score answers).
    pub label: usize,
    /// Best classes, best first (label modes), or just the argmax.
    pub labels: Vec<usize>,
    /// Decoded logits (score modes only; empty for label modes).
    pub scores: Vec<f64>,
}

impl Answer {
    /// Decodes output integers (modulo `2^(output_bits+1)`).
    pub fn decode(spec: &ClientSpec, out: &[i64]) -> Self {
        match spec.output {
            OutputKind::Logits => {
                let scores = spec.decode_output(out);
                let label = crate::data::argmax(&scores);
                Self {
                    label,
                    labels: vec![label],
                    scores,
                }
            }
            OutputKind::Labels { .. } => {
                let modulus = 1i64 << (spec.output_bits + 1);
                let labels: Vec<usize> =
                    out.iter().map(|v| v.rem_euclid(modulus) as usize).collect();
                Self {
                    label: labels.first().copied().unwrap_or(0),
                    labels,
                    scores: Vec::new(),
                }
            }
        }
    }
}

/// The input clamp's bootstrap on value `m` (any integer, reduced modulo
/// `2^(p+1)`): `clamp(m, 0, 2^bits - 1)` on the upper half-circle's image
/// below zero too. The table holds odd half-steps `2·clamp(m) - (2^bits-1)`
/// (output scale `Δ/2`), so its negacyclic image `-(…)` is again a valid
/// clamp, `(2^bits-1) - clamp(m - 2^p)`; a constant then re-centres it.
/// Every input, however far out of range, comes out in `[0, 2^bits)`.
pub fn clamp_input(m: i64, bits: u32, p: u32) -> i64 {
    let window = 1i64 << p;
    let top = (1i64 << bits) - 1;
    let m = m.rem_euclid(2 * window);
    if m < window {
        m.min(top)
    } else {
        top - (m - window).min(top)
    }
}

/// Table of the clamp bootstrap in half-steps (see [`clamp_input`]).
pub fn clamp_table(bits: u32, p: u32) -> Vec<i64> {
    let top = (1i64 << bits) - 1;
    window_table(p, |m| 2 * m.min(top) - top)
}

/// Bootstraps of a `label` argmax over `classes` values at window `p` bits
/// (tournament plus the final refresh).
pub fn argmax_bootstraps(classes: usize, p: u32) -> usize {
    label_program(classes, p)
        .iter()
        .filter(|o| o.lookup.is_some())
        .count()
}

/// The ops of a `label` answer over `n` values (ids `0..n`).
fn label_program(n: usize, p: u32) -> Vec<Op> {
    let mut b = Builder {
        p,
        base: n,
        levels: vec![0; n],
        ops: Vec::new(),
    };
    let ids: Vec<usize> = (0..n).collect();
    let digits = b.argmax(&ids);
    let idx = b.index_value(&digits);
    b.lookup(vec![(idx, 1)], 0, window_table(p, |x| x));
    b.ops
}

/// Runs `ops` in the clear, appending each op's value to `values` (the
/// clear semantics of a bootstrap: [`bootstrap_value`]).
fn run_ops(ops: &[Op], values: &mut Vec<i64>, p: u32) {
    let modulus = 1i64 << (p + 1);
    for op in ops {
        let m = op
            .terms
            .iter()
            .fold(op.constant, |s, (id, w)| {
                s.wrapping_add(w.wrapping_mul(values[*id]))
            })
            .rem_euclid(modulus);
        values.push(match &op.lookup {
            None => m,
            Some(l) => bootstrap_value(&l.table, p, m, 1i64 << (l.out_bits + 1)),
        });
    }
}

/// The tournament of `label` mode run in the clear on comparison values
/// (each in `[0, 2^(p-1))`): the index it selects. For tests and reports.
pub fn tournament_clear(values: &[i64], p: u32) -> usize {
    let mut vals = values.to_vec();
    run_ops(&label_program(values.len(), p), &mut vals, p);
    vals.last().copied().unwrap_or(0) as usize
}
