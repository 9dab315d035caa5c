//! Choosing compile options for a model, without looking at the test rows.
//!
//! The training rows are split: the first 80 % calibrate (and refine) the
//! quantizer, the last 20 % validate it. A candidate configuration is judged
//! by its **fidelity** on the validation rows: how often the clear path,
//! simulating the encrypted noise (three draws per row), predicts what the
//! float model predicts, and how far its logits are from the float logits.
//! Label accuracy is never used: on rows the float model was trained on it
//! measures memorization, not fidelity.
//!
//! `auto` walks the vetted parameter sets from the cheapest (by the cost of
//! one keyswitch + bootstrap measured on this machine, [`unit_cost_ms`]) to
//! the dearest. On each it searches input bits, activation bits, the
//! accumulator bits the bootstrap rounds away (approximate rounding) and
//! range clipping over a grid (every combination, in parallel), then each
//! layer's own rounding bits (its weight and accumulator precision) one
//! layer at a time, and rejects candidates whose predicted failure
//! probability per inference exceeds [`MAX_P_FAIL`]. The first set whose best candidate disagrees with
//! the float model on at most `max_loss` of the validation rows wins; when
//! none does, the most faithful candidate of all. The chosen configuration
//! is then recompiled on all training rows and the reasons are written into
//! the circuit's report (`selection`).

use crate::compile::CompileOptions;
use crate::pipeline::{compile_bundle, fidelity_of, Compiled, Fidelity, ModelBundle, Reference};
use crate::quant::QuantConfig;
use blindfold_runtime::data::RowRange;
use blindfold_runtime::params::ParamSet;
use blindfold_runtime::report::fmt_p;

/// Window bits used with each parameter set: the largest at which the
/// modulus switch and keyswitch alone move an accumulator by half a box
/// with probability below about 10⁻¹⁰ (σ ≈ 0.076 box on every set below;
/// the window grows by one bit with each doubling of N).
pub fn default_window(params: ParamSet) -> u32 {
    match params {
        ParamSet::Message2Carry2 => 5,
        ParamSet::Message2Carry3 | ParamSet::Message3Carry2 => 6,
        ParamSet::Message3Carry3 => 7,
    }
}

/// Milliseconds of one keyswitch + one programmable bootstrap on one core
/// of this project's reference machine (2-core AMD EPYC), as printed by
/// `blindfold cost-model` (mean of 20, 2026-12-02; absolute figures drift
/// with the host's load, the ratios — 1 : 2.3 : 3.0 : 6.8 — hold). Only
/// the order matters to `auto`; the figures are in the report so a reader
/// can see the price.
pub fn unit_cost_ms(params: ParamSet) -> f64 {
    match params {
        ParamSet::Message2Carry2 => 45.4,
        ParamSet::Message3Carry2 => 104.5,
        ParamSet::Message2Carry3 => 135.1,
        ParamSet::Message3Carry3 => 310.8,
    }
}

/// Every vetted set, cheapest first.
pub fn sets_by_cost() -> Vec<ParamSet> {
    let mut sets = vec![
        ParamSet::Message2Carry2,
        ParamSet::Message3Carry3,
        ParamSet::Message2Carry3,
        ParamSet::Message3Carry2,
    ];
    sets.sort_by(|a, b| unit_cost_ms(*a).total_cmp(&unit_cost_ms(*b)));
    sets
}

/// Largest predicted probability of a failed bootstrap (beyond a one-box
/// rounding flip) per inference, at the calibration rows' mean, that `auto`
/// accepts.
pub const MAX_P_FAIL: f64 = 1e-4;

/// Simulated draws per validation row when scoring a candidate.
const DRAWS: usize = 3;
const SEED: u64 = 0x5e1e_c7ed;
/// Weight of the relative logit error against the disagreement rate in a
/// candidate's score (the logit error is smoother than the disagreement,
/// which moves in steps of one validation row).
const LOGIT_WEIGHT: f64 = 0.25;

/// Widths fixed by the user; `None` means chosen here.
#[derive(Clone, Copy, Debug, Default)]
pub struct Widths {
    pub input_bits: Option<u32>,
    pub activation_bits: Option<u32>,
    pub accumulator_bits: Option<u32>,
    /// Accumulator bits rounded away by each bootstrap (0 = exact mode).
    pub rounding_bits: Option<u32>,
    pub clip_ranges: Option<bool>,
    /// Spare window boxes on each side of the calibrated accumulator range.
    pub margin: Option<u32>,
}

/// One point of the search space on a parameter set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Point {
    input: u32,
    act: u32,
    round: u32,
    /// Per-layer overrides of `round` (layer index → rounding bits).
    layers: Vec<(usize, u32)>,
    clip: bool,
    margin: u32,
    /// Rounding refinement (`base.refine_sweeps`) on: slow on wide layers,
    /// so the search runs without it and tries it on its best point.
    refine: bool,
}

struct Scored {
    point: Point,
    fid: Fidelity,
    p_fail: f64,
    score: f64,
    /// Layers of the compiled circuit.
    n_layers: usize,
}

fn score(f: &Fidelity) -> f64 {
    (1.0 - f.agreement) + LOGIT_WEIGHT * f.logit_error
}

fn options(base: &QuantConfig, ps: ParamSet, window: u32, p: &Point) -> CompileOptions {
    let mut q = base.clone();
    q.input_bits = p.input;
    q.activation_bits = p.act;
    q.accumulator_bits = window;
    q.rounding_bits = p.round;
    if !p.layers.is_empty() {
        q.stage_rounding_bits = p.layers.clone();
    }
    q.clip_ranges = p.clip;
    q.margin = p.margin;
    if !p.refine {
        q.refine_sweeps = 0;
    }
    CompileOptions {
        params: ps,
        quant: q,
    }
}

/// The calibration and validation rows of the training range.
fn split(train: RowRange) -> (RowRange, RowRange) {
    let n_train = train.end - train.start + 1;
    let split = train.start + (n_train * 4 / 5).max(1);
    if split > train.start && split <= train.end {
        (
            RowRange {
                start: train.start,
                end: split - 1,
            },
            RowRange {
                start: split,
                end: train.end,
            },
        )
    } else {
        (train, train)
    }
}

/// Picks options (`params = None` means auto) and compiles with them on all
/// training rows.
pub fn choose(
    bundle: &ModelBundle,
    params: Option<ParamSet>,
    base: &QuantConfig,
    widths: &Widths,
    max_loss: f64,
    log: &mut dyn FnMut(String),
) -> Result<(CompileOptions, Compiled), crate::Error> {
    let candidates: Vec<ParamSet> = match params {
        Some(p) => vec![p],
        None => sets_by_cost(),
    };
    let fixed = widths.input_bits.is_some()
        && widths.activation_bits.is_some()
        && widths.rounding_bits.is_some()
        && widths.clip_ranges.is_some()
        && widths.margin.is_some();
    if candidates.len() == 1 && fixed {
        // nothing to choose
        let ps = candidates[0];
        let window = widths
            .accumulator_bits
            .unwrap_or_else(|| default_window(ps));
        let point = Point {
            input: widths.input_bits.unwrap_or(base.input_bits),
            act: widths.activation_bits.unwrap_or(base.activation_bits),
            round: widths.rounding_bits.unwrap_or(base.rounding_bits),
            layers: Vec::new(),
            clip: widths.clip_ranges.unwrap_or(base.clip_ranges),
            margin: widths.margin.unwrap_or(base.margin),
            refine: true,
        };
        let opts = options(base, ps, window, &point);
        let compiled = compile_bundle(bundle, &opts)?;
        return Ok((opts, compiled));
    }
    let (calib, val) = split(bundle.train);
    let mut sub = bundle.clone();
    sub.train = calib;
    let reference = Reference::new(bundle, val)?;
    let mut reasons = vec![format!(
        "rows {calib} calibrate, {val} validate; score = disagreement with the float model + {LOGIT_WEIGHT}·relative logit error, clear path simulating the encrypted noise ({DRAWS} draws per row); bound: disagreement ≤ {max_loss}, p_fail ≤ {}",
        fmt_p(MAX_P_FAIL)
    )];
    let mut best_overall: Option<(ParamSet, u32, Scored)> = None;
    let mut chosen: Option<(ParamSet, u32, Point)> = None;
    for ps in &candidates {
        let ps = *ps;
        let window = widths
            .accumulator_bits
            .unwrap_or_else(|| default_window(ps));
        let best = search_set(&sub, &reference, base, widths, ps, window, log)?;
        let Some(best) = best else {
            let line = format!(
                "{} ({:.1} ms per KS+PBS): no candidate compiled within p_fail ≤ {}",
                ps.short_name(),
                unit_cost_ms(ps),
                fmt_p(MAX_P_FAIL)
            );
            log(line.clone());
            reasons.push(line);
            continue;
        };
        let loss = 1.0 - best.fid.agreement;
        let meets = loss <= max_loss;
        let line = format!(
            "{} ({:.1} ms per KS+PBS, {window}-bit window): best {}-bit inputs, {}-bit activations, {} rounding bits{}, margin {}, clipping {}, refinement {}: disagreement {:.4}, relative logit error {:.4}, p_fail {} — {}",
            ps.short_name(),
            unit_cost_ms(ps),
            best.point.input,
            best.point.act,
            best.point.round,
            layer_note(&best.point.layers),
            best.point.margin,
            if best.point.clip { "on" } else { "off" },
            if best.point.refine { "on" } else { "off" },
            loss,
            best.fid.logit_error,
            fmt_p(best.p_fail),
            if meets {
                "within the bound".to_string()
            } else {
                format!("over the bound {max_loss}")
            }
        );
        log(line.clone());
        reasons.push(line);
        if meets {
            chosen = Some((ps, window, best.point));
            break;
        }
        if best_overall
            .as_ref()
            .is_none_or(|(_, _, b)| best.score < b.score)
        {
            best_overall = Some((ps, window, best));
        }
    }
    let (ps, window, point) = match chosen {
        Some(c) => {
            reasons.push(format!(
                "chose {}: the cheapest set within the bound",
                c.0.short_name()
            ));
            c
        }
        None => {
            let (ps, window, s) = best_overall.ok_or_else(|| {
                crate::Error::Compile(
                    "no candidate configuration compiled on any parameter set".into(),
                )
            })?;
            reasons.push(format!(
                "chose {}: no set met the bound, this one was the most faithful",
                ps.short_name()
            ));
            (ps, window, s.point)
        }
    };
    let opts = options(base, ps, window, &point);
    let mut compiled = compile_bundle(bundle, &opts)?;
    compiled.circuit.report.selection = reasons;
    Ok((opts, compiled))
}

/// Every combination of the free widths on one set (compiled and scored in
/// parallel, without refinement); then refinement on the best point, kept
/// if it scores better. Returns the best candidate within the failure
/// bound, if any compiled.
fn search_set(
    sub: &ModelBundle,
    reference: &Reference,
    base: &QuantConfig,
    widths: &Widths,
    ps: ParamSet,
    window: u32,
    log: &mut dyn FnMut(String),
) -> Result<Option<Scored>, crate::Error> {
    use rayon::prelude::*;
    let inputs: Vec<u32> = widths
        .input_bits
        .map_or((3..=window.min(6)).collect(), |b| vec![b]);
    let acts: Vec<u32> = widths
        .activation_bits
        .map_or((3..=window.min(5)).collect(), |b| vec![b]);
    // the shifted accumulator must still fit what the set's bootstraps
    // carry; fewer than 3 rounding bits never won on any model tried
    let max_round = ps.max_output_bits().saturating_sub(window).min(6);
    let rounds: Vec<u32> = widths
        .rounding_bits
        .map_or((3.min(max_round)..=max_round).collect(), |b| vec![b]);
    let clips: Vec<bool> = widths.clip_ranges.map_or(vec![false, true], |b| vec![b]);
    // one spare box per side lets unseen rows overflow the window (the
    // bootstrap then wraps around); two or three cost a little resolution
    let margins: Vec<u32> = widths.margin.map_or(vec![2, 3], |m| vec![m]);
    let mut grid = Vec::new();
    for &round in &rounds {
        for &input in &inputs {
            for &act in &acts {
                for &clip in &clips {
                    for &margin in &margins {
                        grid.push(Point {
                            input,
                            act,
                            round,
                            layers: Vec::new(),
                            clip,
                            margin,
                            refine: false,
                        });
                    }
                }
            }
        }
    }
    let eval = |p: &Point| -> Result<Option<Scored>, crate::Error> {
        let opts = options(base, ps, window, p);
        match compile_bundle(sub, &opts) {
            Ok(c) if c.circuit.report.p_fail_inference <= MAX_P_FAIL => {
                let fid = fidelity_of(reference, &c.circuit, DRAWS, SEED)?;
                Ok(Some(Scored {
                    point: p.clone(),
                    score: score(&fid),
                    fid,
                    p_fail: c.circuit.report.p_fail_inference,
                    n_layers: c.circuit.layers.len(),
                }))
            }
            Ok(_) | Err(crate::Error::Quantize(_)) | Err(crate::Error::Compile(_)) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let scored = grid.par_iter().map(&eval).collect::<Result<Vec<_>, _>>()?;
    let fits = scored.iter().filter(|s| s.is_some()).count();
    // lowest score; ties to the earlier (cheaper, coarser) grid point
    let mut best = scored
        .into_iter()
        .flatten()
        .reduce(|a, b| if b.score < a.score { b } else { a });
    // Each layer's own precision: the first layer reads fresh encryptions
    // (tiny noise) and can take finer weights than later layers reading
    // bootstrap outputs, whose noise the weights' 2-norm amplifies. A
    // coordinate pass over the layers tries every other rounding width on
    // one layer at a time (the failure bound still applies to each).
    let mut tried = grid.len();
    if let (Some(b), None) = (best.as_mut(), widths.rounding_bits) {
        if b.n_layers > 1 && base.stage_rounding_bits.is_empty() && rounds.len() > 1 {
            for _sweep in 0..2 {
                let mut moved = false;
                for layer in 0..b.n_layers {
                    let current = layer_rounding(&b.point, layer);
                    let cands: Vec<Point> = rounds
                        .iter()
                        .filter(|r| **r != current)
                        .map(|r| with_layer(&b.point, layer, *r))
                        .collect();
                    tried += cands.len();
                    let better = cands
                        .par_iter()
                        .map(&eval)
                        .collect::<Result<Vec<_>, _>>()?
                        .into_iter()
                        .flatten()
                        .filter(|s| s.score < b.score)
                        .reduce(|a, c| if c.score < a.score { c } else { a });
                    if let Some(s) = better {
                        *b = s;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
    }
    if let Some(b) = best.as_mut() {
        if base.refine_sweeps > 0 {
            tried += 1;
            if let Some(r) = eval(&Point {
                refine: true,
                ..b.point.clone()
            })? {
                if r.score <= b.score {
                    *b = r;
                }
            }
        }
    }
    log(format!(
        "  {}: {tried} configurations tried ({} on the grid, {fits} of them within p_fail ≤ {})",
        ps.short_name(),
        grid.len(),
        fmt_p(MAX_P_FAIL)
    ));
    Ok(best)
}

/// Rounding bits of `layer` at point `p`.
fn layer_rounding(p: &Point, layer: usize) -> u32 {
    p.layers
        .iter()
        .find(|(l, _)| *l == layer)
        .map_or(p.round, |(_, r)| *r)
}

/// `p` with `layer` rounded by `round` bits (overrides equal to the default
/// are dropped, so equal configurations compare equal).
fn with_layer(p: &Point, layer: usize, round: u32) -> Point {
    let mut layers: Vec<(usize, u32)> = p
        .layers
        .iter()
        .copied()
        .filter(|(l, _)| *l != layer)
        .collect();
    if round != p.round {
        layers.push((layer, round));
    }
    layers.sort_unstable();
    Point {
        layers,
        ..p.clone()
    }
}

fn layer_note(layers: &[(usize, u32)]) -> String {
    if layers.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = layers
        .iter()
        .map(|(l, r)| format!("layer {l}: {r}"))
        .collect();
    format!(" ({})", parts.join(", "))
}
