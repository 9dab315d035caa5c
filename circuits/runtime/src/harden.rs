//! Hardening: the model owner's output policy, compiled into circuit stages
//! that run on the ciphertexts after the network, so the client can decrypt
//! nothing more than the policy allows.
//!
//! A served model ([`Hardened`]) is one circuit or an ensemble of circuits
//! sharing one input encoding, plus a [`Policy`]. It lowers, once, to one
//! [`Program`]: the input clamp, every member's layers (the output layers
//! with the policy's quantizers as tables), the aggregation of members and
//! the hardening stage, all as bootstrap nodes. Per query the server
//! samples the noise and rewrites only the tables the noise touches
//! ([`Hardened::tables`]); the clear and the FHE interpreter run the same
//! program with the same tables, so with the same noise they give
//! bit-identical answers.
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

use crate::circuit::{Circuit, ClientSpec, OutputKind};
use crate::eval::clear::run_program;
use crate::params::ParamSet;
pub use crate::policy::{Aggregate, Noise, NoiseKind, OutputMode, Policy, Quantizer};
use crate::program::{Cost, Expr, Program, ProgramBuilder, Role, Table, TableId, TableSet};
use crate::{Error, Result};

pub use crate::answer::Answer;

/// A table an answer's noise rewrites: entries `Q(pre[m] + noise[class])`
/// with the policy's final quantizer `Q`.
#[derive(Clone, Debug)]
struct NoisyTable {
    table: TableId,
    class: usize,
    pre: Vec<f64>,
}

/// A served model: member circuits, one policy, the derived quantizers,
/// and the program they lower to.
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
    /// Set by [`Hardened::new`].
    program: Option<Program>,
    noisy: Vec<NoisyTable>,
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

/// A bootstrap of a stage step: its table and output precision.
struct Lookup {
    table: Vec<i64>,
    out_bits: u32,
}

/// Builds a hardening stage on a program. Stage steps are symbols: a
/// member output, a bootstrap (a program node) or a free linear step
/// (folded into the nodes that read it). Ids: member `e`, class `j` is
/// `e·classes + j`; later steps follow in order. Errors (bugs) are kept
/// until [`Stage::values`] so the step code reads as the algorithm.
struct Stage<'b> {
    p: u32,
    pb: &'b mut ProgramBuilder,
    syms: Vec<Expr>,
    error: Option<Error>,
}

impl Stage<'_> {
    fn expr(&self, terms: &[(usize, i64)], constant: i64) -> Expr {
        let mut e = Expr {
            terms: Vec::new(),
            constant: (constant as u64).wrapping_mul(self.pb.step()),
        };
        for (id, w) in terms {
            e.add_scaled(&self.syms[*id], *w);
        }
        e
    }

    fn push_table(&mut self, terms: Vec<(usize, i64)>, constant: i64, table: TableId) -> usize {
        let e = self.expr(&terms, constant);
        let sym = match self.pb.node(e, table, Role::Stage) {
            Ok(v) => Expr::value(v),
            Err(err) => {
                self.error.get_or_insert(err);
                Expr::default()
            }
        };
        self.syms.push(sym);
        self.syms.len() - 1
    }

    fn push(&mut self, terms: Vec<(usize, i64)>, constant: i64, lookup: Option<Lookup>) -> usize {
        match lookup {
            Some(l) => {
                let table = self.pb.table(l.table, l.out_bits);
                self.push_table(terms, constant, table)
            }
            None => {
                let e = self.expr(&terms, constant);
                self.syms.push(e);
                self.syms.len() - 1
            }
        }
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

    /// The program values of output symbols: each must be exactly one
    /// bootstrap output (circuit privacy), never a linear combination.
    fn values(self, ids: &[usize]) -> Result<Vec<usize>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        ids.iter()
            .map(|id| {
                self.syms[*id].as_value().ok_or_else(|| {
                    Error::Internal(format!("stage output {id} is not a bootstrap output"))
                })
            })
            .collect()
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
        let bad = |m: String| Err(Error::Policy(format!("model {name}: {m}")));
        let Some(first) = members.first() else {
            return bad("no circuits".into());
        };
        for (i, c) in members.iter().enumerate().skip(1) {
            if c.params != first.params
                || c.precision_bits != first.precision_bits
                || c.input_encoding_bits() != first.input_encoding_bits()
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
        if policy.clamp_inputs && first.input_encoding_bits() != p {
            return bad(
                "the input clamp reads inputs at the window's precision: it needs a circuit whose first layer is exact (no accumulator shift)".into(),
            );
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
        let mut model = Self {
            name: name.to_string(),
            members,
            policy,
            member_q,
            final_q,
            final_bits,
            program: None,
            noisy: Vec::new(),
        };
        let (program, noisy) = model.lower()?;
        model.program = Some(program);
        model.noisy = noisy;
        Ok(model)
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

    /// The whole answer's computation (tables at zero noise).
    pub fn program(&self) -> &Program {
        match &self.program {
            Some(p) => p,
            None => unreachable!("Hardened::new lowers every model"),
        }
    }

    /// The tables one answer replaces for the noise `noise` (one value per
    /// class, logit or vote units). Empty when the policy adds no noise.
    pub fn tables(&self, noise: &[f64]) -> TableSet {
        if self.policy.noise.is_none() {
            return TableSet::default();
        }
        let program = self.program();
        TableSet::new(
            self.noisy
                .iter()
                .map(|t| {
                    let n = noise.get(t.class).copied().unwrap_or(0.0);
                    (
                        t.table,
                        Table {
                            entries: t.pre.iter().map(|x| self.final_q.level(x + n)).collect(),
                            out_bits: program.tables[t.table].out_bits,
                        },
                    )
                })
                .collect(),
        )
    }

    /// Bootstrap and keyswitch counts per answer.
    pub fn cost(&self) -> Cost {
        self.program().cost()
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
            precision_bits: first.input_encoding_bits(),
            input: first.input.clone(),
            classes: first.classes,
            output_bits: bits,
            output_scale: scale,
            output_zero_point: zp,
            output,
        }
    }

    /// Lowers the members and the policy to one program (tables at zero
    /// noise) and lists the tables each answer's noise rewrites.
    fn lower(&self) -> Result<(Program, Vec<NoisyTable>)> {
        let p = self.precision_bits();
        let classes = self.classes();
        let e = self.members.len();
        let first = &self.members[0];
        let logit_of = |c: &Circuit, y: i64| c.output_scale * (y - c.output_zero_point) as f64;
        let final_q = self.final_q;
        let noisy_policy = !self.policy.noise.is_none();
        let mut pb = ProgramBuilder::new(first.params, p, first.input.len())
            .with_input_bits(first.input_encoding_bits());
        let mut noisy: Vec<NoisyTable> = Vec::new();
        // a table the noise rewrites per answer (an id of its own), or a
        // shared one when the policy adds no noise
        let mut noise_table = |pb: &mut ProgramBuilder, pre: Vec<f64>, bits: u32, class: usize| {
            let entries = pre.iter().map(|x| final_q.level(*x)).collect();
            if noisy_policy {
                let table = pb.unique_table(entries, bits);
                noisy.push(NoisyTable { table, class, pre });
                table
            } else {
                pb.table(entries, bits)
            }
        };
        // the input clamp: one bootstrap per input (fresh small-key
        // ciphertexts, no keyswitch) through a half-step table, re-centred
        // by a constant the first layer's dot products absorb
        let n_in = first.input.len();
        let inputs: Vec<Expr> = if self.policy.clamp_inputs {
            let bits = first.input.bits;
            let t = pb.table(clamp_table(bits, p), p + 1);
            let shift = ((1u64 << bits) - 1).wrapping_mul(1u64 << (63 - (p + 1)));
            (0..n_in)
                .map(|i| {
                    let v = pb.node(Expr::value(i), t, Role::Clamp { input: i })?;
                    Ok(Expr {
                        terms: vec![(v, 1)],
                        constant: shift,
                    })
                })
                .collect::<Result<_>>()?
        } else {
            (0..n_in).map(Expr::value).collect()
        };
        // every member's hidden layers first (what all policies and noise
        // draws share), then the output layers with the policy's tables
        let mut hidden = Vec::with_capacity(e);
        for (m, c) in self.members.iter().enumerate() {
            let mut current = inputs.clone();
            for (l, layer) in c.layers[..c.layers.len() - 1].iter().enumerate() {
                let out_bits = c.layer_out_bits(l);
                let tables: Vec<TableId> = layer
                    .lut
                    .iter()
                    .map(|t| pb.table(t.clone(), out_bits))
                    .collect();
                current = pb
                    .layer(layer, &current, &tables, m, l)?
                    .into_iter()
                    .map(Expr::value)
                    .collect();
            }
            hidden.push(current);
        }
        // Ensemble member outputs that feed the stage are centred: a table holds
        // `level - c` with `c` the middle of the level range, so that the
        // negacyclic image `-(level - c)` of an out-of-window accumulator
        // (an input far from anything calibrated) is again a level in
        // range, `2c - level`. A free linear op adds `c` back. Without it
        // such an input could drive the tournament out of its range and
        // decrypt to a label that is no class.
        let centre = |q: &Quantizer| (q.lo + q.hi) / 2;
        let mut member_outputs = Vec::with_capacity(e * classes);
        for (m, (c, h)) in self.members.iter().zip(&hidden).enumerate() {
            let last = c.layers.len() - 1;
            let out = &c.layers[last];
            let tables: Vec<TableId> = match self.member_q {
                // one member: noise and the mode's quantizer in its output layer
                None => out
                    .lut
                    .iter()
                    .enumerate()
                    .map(|(j, t)| {
                        let pre = t.iter().map(|y| logit_of(c, *y)).collect();
                        noise_table(&mut pb, pre, self.final_bits, j)
                    })
                    .collect(),
                Some(mq) => {
                    let shift = centre(&mq);
                    out.lut
                        .iter()
                        .map(|t| {
                            let entries = t.iter().map(|y| mq.level(logit_of(c, *y)) - shift);
                            pb.table(entries.collect(), p)
                        })
                        .collect()
                }
            };
            member_outputs.extend(pb.layer(out, h, &tables, m, last)?);
        }
        let mut b = Stage {
            p,
            pb: &mut pb,
            syms: member_outputs.iter().map(|v| Expr::value(*v)).collect(),
            error: None,
        };
        let aggregated: Vec<usize> = match self.member_q {
            None => {
                let compared = matches!(
                    self.policy.output,
                    OutputMode::Label | OutputMode::TopK { .. }
                );
                // Compared values: an out-of-window accumulator comes
                // out negated (below every level); one bootstrap per
                // class floors it at 0, under every in-window level
                // (≥ 1), so the label is the raw logits' argmax for
                // every input and the tournament stays in range.
                let half = 1i64 << (p - 1);
                if compared {
                    (0..classes)
                        .map(|j| {
                            b.lookup(vec![(j, 1)], half, window_table(p, |x| (x - half).max(0)))
                        })
                        .collect()
                } else {
                    (0..classes).collect()
                }
            }
            Some(mq) => {
                let shift = centre(&mq);
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
                sums.into_iter()
                    .enumerate()
                    .map(|(j, s)| {
                        let pre = (0..1i64 << p)
                            .map(|x| {
                                if votes {
                                    x as f64
                                } else {
                                    mq.step * (x as f64 / ef - mq.zero_point as f64)
                                }
                            })
                            .collect();
                        let table = noise_table(b.pb, pre, agg_bits, j);
                        b.push_table(vec![(s, 1)], 0, table)
                    })
                    .collect()
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
        // everything the client decrypts must be a bootstrap output
        let outputs = b.values(&outputs)?;
        let program = pb.finish(&outputs, self.final_bits)?;
        Ok((program, noisy))
    }
    /// Predicted probability that one of the hardening bootstraps (input
    /// clamp and stage) lands in the wrong box, from the same tfhe-rs noise
    /// formulas as the circuit report: a node's input is a weighted sum of
    /// fresh inputs or bootstrap outputs (variance `Σ w²·σ²`), keyswitched
    /// (bootstrap outputs) and modulus switched. Counts any shift as a
    /// failure (an upper bound), summed over bootstraps (union bound). Add
    /// the members' own reports for a whole answer.
    pub fn stage_failure_probability(&self) -> f64 {
        let program = self.program();
        let noise = self.params().noise();
        let units = 2f64.powi(self.precision_bits() as i32 + 1);
        let fail =
            |variance: f64| 1.0 - crate::params::shift_probability(0, variance.sqrt() * units);
        let var_of = |v: usize| {
            if v < program.input_count {
                noise.fresh_small
            } else {
                noise.pbs_output
            }
        };
        let total: f64 = program
            .nodes
            .iter()
            .filter(|n| !matches!(n.role, Role::Neuron { .. }))
            .map(|n| {
                let v: f64 = n
                    .terms
                    .iter()
                    .map(|(id, w)| (w * w) as f64 * var_of(*id))
                    .sum();
                let ks = if n.reads_inputs { 0.0 } else { noise.keyswitch };
                fail(v + ks + noise.modulus_switch)
            })
            .sum();
        // an empty sum is -0.0
        (total + 0.0).min(1.0)
    }

    /// Checks a quantized input against the shared input encoding.
    pub fn check_input(&self, input: &[i64]) -> Result<()> {
        crate::eval::clear::check_input(&self.members[0], input)
    }

    /// The clear interpreter on this model with one answer's tables: what
    /// the client would decrypt, integers modulo `2^(output_bits+1)`.
    pub fn evaluate_clear(&self, tables: &TableSet, input: &[i64]) -> Result<Vec<i64>> {
        self.check_input(input)?;
        run_program(self.program(), tables, input)
    }

    /// Decodes an answer (decrypted or clear) with this model's client spec.
    pub fn decode(&self, out: &[i64]) -> Answer {
        Answer::decode(&self.client_spec(), out)
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
        .map(|prog| prog.nodes.len() - classes)
        .unwrap_or(0)
}

/// A `label` answer over `n` comparison values: `n` identity bootstraps
/// (standing in for the values' own bootstraps), then the tournament and
/// the refresh.
fn label_program(n: usize, p: u32) -> Result<Program> {
    let mut pb = ProgramBuilder::new(ParamSet::Message3Carry3, p, n);
    let identity = pb.table(window_table(p, |x| x), p);
    let refreshed = (0..n)
        .map(|i| pb.node(Expr::value(i), identity, Role::Stage))
        .collect::<Result<Vec<_>>>()?;
    let mut b = Stage {
        p,
        pb: &mut pb,
        syms: refreshed.iter().map(|v| Expr::value(*v)).collect(),
        error: None,
    };
    let ids: Vec<usize> = (0..n).collect();
    let digits = b.argmax(&ids);
    let idx = b.index_value(&digits);
    let label = b.lookup(vec![(idx, 1)], 0, window_table(p, |x| x));
    let out = b.values(&[label])?;
    pb.finish(&out, p)
}

/// The tournament of `label` mode run in the clear on comparison values
/// (each in `[0, 2^(p-1))`): the index it selects. For tests and reports.
pub fn tournament_clear(values: &[i64], p: u32) -> usize {
    label_program(values.len(), p)
        .and_then(|prog| run_program(&prog, &TableSet::default(), values))
        .ok()
        .and_then(|out| out.first().copied())
        .unwrap_or(0) as usize
}
