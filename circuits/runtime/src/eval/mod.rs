//! The interpreters of a [`Program`]: one scheduler ([`run`],
//! [`run_shared`]) over two backends, [`clear`] (integers: the torus
//! arithmetic without noise) and [`fhe`] (tfhe-rs ciphertexts).
//!
//! The scheduler walks the program level by level. A level's bootstraps
//! are independent: it splits them into one batch per worker, lets the
//! backend compute each batch (dot products, then the bootstraps, sharing
//! one pass over the bootstrap key per batch on ciphertexts), checks for
//! cancellation before every level and every batch, and counts bootstraps
//! and keyswitches. Whenever no bootstrap fails, both backends produce the
//! same outputs bit for bit.

pub mod clear;
pub mod fhe;

use serde::{Deserialize, Serialize};

use crate::program::{Program, TableSet};
use crate::{Error, Result};

/// Work and time of one evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalStats {
    pub bootstraps: usize,
    pub keyswitches: usize,
    pub seconds: f64,
}

/// Polled before every level and batch; `true` abandons the evaluation
/// with [`Error::Cancelled`].
pub type Cancel<'a> = &'a (dyn Fn() -> bool + Sync);

/// Never cancels.
pub fn never() -> bool {
    false
}

/// What the scheduler needs of an interpreter.
pub trait Backend: Sync {
    /// One value: an integer on the torus, or a ciphertext.
    type Value: Clone + Send + Sync;
    /// What an answer's replaced tables become for this backend.
    type Tables: Sync;

    /// Batches a level is split into (1: the level runs inline).
    fn workers(&self) -> usize;

    /// Prepares one answer's replaced tables.
    fn prepare(&self, program: &Program, overrides: &TableSet) -> Result<Self::Tables>;

    /// Computes the nodes `batch` (indices into `program.nodes`): each
    /// node's dot product over `values` (indexed by value id; every value
    /// a node reads is present), then its bootstrap. Returns the outputs in
    /// `batch` order.
    fn bootstrap_batch(
        &self,
        program: &Program,
        overrides: &TableSet,
        tables: &Self::Tables,
        batch: &[usize],
        values: &[Option<Self::Value>],
    ) -> Result<Vec<Self::Value>>;
}

/// Runs `program` (with the replaced tables `overrides`) on `inputs`.
/// Returns the output values in [`Program::outputs`] order.
pub fn run<B: Backend>(
    backend: &B,
    program: &Program,
    overrides: &TableSet,
    inputs: Vec<B::Value>,
    cancel: Cancel<'_>,
) -> Result<(Vec<B::Value>, EvalStats)> {
    run_shared(backend, &[(program, overrides)], inputs, cancel)?
        .pop()
        .ok_or_else(|| Error::Internal("no program ran".into()))
}

/// Runs several programs on the same inputs, computing the nodes they
/// share once: the longest common prefix of nodes with identical inputs
/// and tables (e.g. the hidden layers of one model under several policies
/// or noise draws). Each result's stats count the shared work too, as if
/// it had run alone; `seconds` is the shared part's time plus its own.
pub fn run_shared<B: Backend>(
    backend: &B,
    runs: &[(&Program, &TableSet)],
    inputs: Vec<B::Value>,
    cancel: Cancel<'_>,
) -> Result<Vec<(Vec<B::Value>, EvalStats)>> {
    let Some((first, first_overrides)) = runs.first().copied() else {
        return Ok(Vec::new());
    };
    for (program, overrides) in runs {
        if program.input_count != inputs.len() {
            return Err(Error::InputLength {
                expected: program.input_count,
                got: inputs.len(),
            });
        }
        program.check_overrides(overrides)?;
    }
    let start = std::time::Instant::now();
    let shared_len = if runs.len() == 1 {
        first.nodes.len()
    } else {
        runs[1..]
            .iter()
            .map(|(p, o)| common_prefix(first, first_overrides, p, o))
            .min()
            .unwrap_or(0)
    };
    let mut values: Vec<Option<B::Value>> = inputs.into_iter().map(Some).collect();
    values.resize(first.input_count + shared_len, None);
    let mut shared = EvalStats::default();
    let tables = backend.prepare(first, first_overrides)?;
    execute(
        backend,
        first,
        first_overrides,
        &tables,
        0..shared_len,
        &mut values,
        &mut shared,
        cancel,
    )?;
    drop(tables);
    let shared_seconds = start.elapsed().as_secs_f64();
    let last = runs.len() - 1;
    let mut results = Vec::with_capacity(runs.len());
    let mut prefix = Some(values);
    for (i, (program, overrides)) in runs.iter().enumerate() {
        let t = std::time::Instant::now();
        // the last run takes the shared values, the others copy them
        let mut values = if i == last {
            prefix.take().unwrap_or_default()
        } else {
            prefix.clone().unwrap_or_default()
        };
        values.resize(program.value_count(), None);
        let mut stats = shared.clone();
        let tables = backend.prepare(program, overrides)?;
        execute(
            backend,
            program,
            overrides,
            &tables,
            shared_len..program.nodes.len(),
            &mut values,
            &mut stats,
            cancel,
        )?;
        let outputs = program
            .outputs
            .iter()
            .map(|k| {
                values[program.node_value(*k)]
                    .clone()
                    .ok_or_else(|| Error::Internal(format!("output node {k} never ran")))
            })
            .collect::<Result<Vec<_>>>()?;
        stats.seconds = shared_seconds + t.elapsed().as_secs_f64();
        results.push((outputs, stats));
    }
    Ok(results)
}

/// Number of leading nodes two answers compute identically.
fn common_prefix(a: &Program, ao: &TableSet, b: &Program, bo: &TableSet) -> usize {
    if a.input_count != b.input_count
        || a.precision_bits != b.precision_bits
        || a.input_bits != b.input_bits
    {
        return 0;
    }
    a.nodes
        .iter()
        .zip(&b.nodes)
        .enumerate()
        .take_while(|(k, (x, y))| {
            x.terms == y.terms
                && x.constant == y.constant
                && x.reads_inputs == y.reads_inputs
                && a.table_of(*k, ao) == b.table_of(*k, bo)
        })
        .count()
}

/// Runs the nodes in `range`, level by level.
#[allow(clippy::too_many_arguments)]
fn execute<B: Backend>(
    backend: &B,
    program: &Program,
    overrides: &TableSet,
    tables: &B::Tables,
    range: std::ops::Range<usize>,
    values: &mut [Option<B::Value>],
    stats: &mut EvalStats,
    cancel: Cancel<'_>,
) -> Result<()> {
    use rayon::prelude::*;
    for level in program.levels() {
        let ids: Vec<usize> = level
            .iter()
            .copied()
            .filter(|k| range.contains(k))
            .collect();
        if ids.is_empty() {
            continue;
        }
        if cancel() {
            return Err(Error::Cancelled);
        }
        let workers = backend.workers().max(1);
        let batch = ids.len().div_ceil(workers).max(1);
        let shared: &[Option<B::Value>] = values;
        let outputs: Vec<Vec<B::Value>> = if workers == 1 || ids.len() == 1 {
            vec![backend.bootstrap_batch(program, overrides, tables, &ids, shared)?]
        } else {
            ids.par_chunks(batch)
                .map(|chunk| {
                    if cancel() {
                        return Err(Error::Cancelled);
                    }
                    backend.bootstrap_batch(program, overrides, tables, chunk, shared)
                })
                .collect::<Result<_>>()?
        };
        if outputs.iter().map(Vec::len).sum::<usize>() != ids.len() {
            return Err(Error::Internal(
                "a backend returned the wrong number of bootstrap outputs".into(),
            ));
        }
        for (k, v) in ids.iter().zip(outputs.into_iter().flatten()) {
            values[program.node_value(*k)] = Some(v);
        }
        stats.bootstraps += ids.len();
        stats.keyswitches += ids
            .iter()
            .filter(|k| !program.nodes[**k].reads_inputs)
            .count();
    }
    Ok(())
}
