//! The executable form of a served model: one [`Program`] of programmable
//! bootstraps that both interpreters run ([`crate::eval::clear`] on
//! integers, [`crate::eval::fhe`] on ciphertexts) through one scheduler
//! ([`crate::eval::run`]).
//!
//! A program is a list of [`Node`]s. Each node is a dot product of earlier
//! values with cleartext integer weights plus a constant, followed by one
//! programmable bootstrap through its [`Table`]; a value is either one of
//! the client's encrypted inputs or a node's bootstrap output. Everything
//! a served model does is a node: the input clamp, every neuron of every
//! ensemble member, the aggregation of members, every comparison and
//! selection of a hardening stage. Linear steps between bootstraps (sums,
//! shifts, a tournament winner's value) are folded into the dot products
//! of the nodes that read them, so the only values that exist are
//! bootstrap outputs, and what a client decrypts ([`Program::outputs`]) is
//! a bootstrap output by construction (circuit privacy).
//!
//! Values live on the 64-bit torus. Inputs are encrypted as `q·Δ_p` with
//! `Δ_p = 2^(63-p)` (`p` = [`Program::precision_bits`]); a bootstrap reads
//! its accumulator modulo `2^(p+1)` steps of `Δ_p` (one padding bit; the
//! upper half is the table's negacyclic image) and writes `T[m]` in units
//! of `2^(63 - out_bits)`. Constants are torus values, so a value at
//! another scale (the clamp's half steps) combines exactly as on
//! ciphertexts.
//!
//! A node's level is one more than the deepest value it reads (inputs are
//! level 0); the scheduler runs a level's bootstraps together. Per answer,
//! a policy's fresh noise rewrites the few tables it touches
//! ([`TableSet`]); the program itself is built once per model.

use std::collections::HashMap;

use crate::circuit::{Circuit, CircuitLayer};
use crate::params::ParamSet;
use crate::{Error, Result};

/// A value: `0..inputs` are the inputs, `inputs + k` is node `k`'s output.
pub type ValueId = usize;
/// Index into [`Program::tables`].
pub type TableId = usize;

/// A bootstrap table: `2^p` entries, output in units of `2^(63-out_bits)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    pub entries: Vec<i64>,
    pub out_bits: u32,
}

/// What a node computes, for reports, costs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Clamps input `input` to its valid range.
    Clamp { input: usize },
    /// Neuron `neuron` of layer `layer` of ensemble member `member`.
    Neuron {
        member: usize,
        layer: usize,
        neuron: usize,
    },
    /// A hardening stage: aggregation, comparison, selection, refresh.
    Stage,
}

/// One dot product followed by one bootstrap.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// `(value, weight)`, distinct values, no zero weight.
    pub terms: Vec<(ValueId, i64)>,
    /// Torus value added to the dot product.
    pub constant: u64,
    pub table: TableId,
    /// Bootstrap depth: 1 + the deepest value read (inputs are level 0).
    pub level: usize,
    pub role: Role,
    /// Whether the node reads the client's inputs (small-key ciphertexts,
    /// bootstrapped directly) rather than bootstrap outputs (big-key
    /// ciphertexts, keyswitched first).
    pub reads_inputs: bool,
}

/// A linear combination of values, not yet bootstrapped: what a lowering
/// passes around between nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expr {
    pub terms: Vec<(ValueId, i64)>,
    /// Torus value.
    pub constant: u64,
}

impl Expr {
    pub fn value(id: ValueId) -> Self {
        Self {
            terms: vec![(id, 1)],
            constant: 0,
        }
    }

    /// `self + w·other`.
    pub fn add_scaled(&mut self, other: &Expr, w: i64) {
        self.terms
            .extend(other.terms.iter().map(|(v, x)| (*v, x.wrapping_mul(w))));
        self.constant = self
            .constant
            .wrapping_add(other.constant.wrapping_mul(w as u64));
    }

    /// The single value this expression is, if it is exactly one value.
    pub fn as_value(&self) -> Option<ValueId> {
        match self.terms.as_slice() {
            [(v, 1)] if self.constant == 0 => Some(*v),
            _ => None,
        }
    }

    /// Terms merged by value (weights summed, zeros dropped), sorted.
    fn normalized(mut self) -> Self {
        self.terms.sort_by_key(|(v, _)| *v);
        let mut out: Vec<(ValueId, i64)> = Vec::with_capacity(self.terms.len());
        for (v, w) in self.terms {
            match out.last_mut() {
                Some((u, x)) if *u == v => *x = x.wrapping_add(w),
                _ => out.push((v, w)),
            }
        }
        out.retain(|(_, w)| *w != 0);
        self.terms = out;
        self
    }
}

/// Tables replacing some of a program's tables for one answer (the noisy
/// ones). Empty for noise-free answers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableSet {
    replaced: Vec<(TableId, Table)>,
}

impl TableSet {
    pub fn new(mut replaced: Vec<(TableId, Table)>) -> Self {
        replaced.sort_by_key(|(id, _)| *id);
        Self { replaced }
    }

    pub fn get(&self, id: TableId) -> Option<&Table> {
        self.replaced
            .binary_search_by_key(&id, |(i, _)| *i)
            .ok()
            .map(|k| &self.replaced[k].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(TableId, Table)> {
        self.replaced.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.replaced.is_empty()
    }
}

/// Bootstrap and keyswitch counts of a program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    /// Input clamp bootstraps.
    pub input_clamp: usize,
    /// The members' networks.
    pub members: usize,
    /// Hardening stage bootstraps.
    pub stage: usize,
    pub keyswitches: usize,
    /// Levels of bootstraps (the longest chain).
    pub depth: usize,
}

impl Cost {
    pub fn bootstraps(&self) -> usize {
        self.input_clamp + self.members + self.stage
    }
}

/// Identities of built programs (tables prepared for one program are
/// never used with another).
static NEXT_PROGRAM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A whole answer's computation.
#[derive(Clone, Debug)]
pub struct Program {
    pub params: ParamSet,
    /// `p`: every table has `2^p` entries; a bootstrap rounds its
    /// accumulator to steps of `2^(63-p)`.
    pub precision_bits: u32,
    /// Inputs are `q·2^(63-input_bits)` (`p`, or finer for accumulators
    /// rounded by the bootstrap).
    pub input_bits: u32,
    pub input_count: usize,
    pub nodes: Vec<Node>,
    pub tables: Vec<Table>,
    /// Nodes whose outputs the client decrypts, in order.
    pub outputs: Vec<usize>,
    /// Precision of the outputs: decrypted as `round(phase / 2^(63-bits))`
    /// modulo `2^(bits+1)`.
    pub output_bits: u32,
    /// Node indices by level (`levels[0]` is level 1).
    levels: Vec<Vec<usize>>,
    id: u64,
}

impl Program {
    /// Identifies this program (and its clones) among all built ones.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The value id of node `k`'s output.
    pub fn node_value(&self, k: usize) -> ValueId {
        self.input_count + k
    }

    pub fn value_count(&self) -> usize {
        self.input_count + self.nodes.len()
    }

    /// The nodes of each level, shallowest first.
    pub fn levels(&self) -> &[Vec<usize>] {
        &self.levels
    }

    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// The table node `k` bootstraps through in an answer with `overrides`.
    pub fn table_of<'a>(&'a self, k: usize, overrides: &'a TableSet) -> &'a Table {
        let id = self.nodes[k].table;
        overrides.get(id).unwrap_or(&self.tables[id])
    }

    /// Checks a set of replacement tables against the program.
    pub fn check_overrides(&self, overrides: &TableSet) -> Result<()> {
        let window = 1usize << self.precision_bits;
        for (id, t) in overrides.iter() {
            let Some(base) = self.tables.get(*id) else {
                return Err(Error::Internal(format!(
                    "replacement for table {id} of a {}-table program",
                    self.tables.len()
                )));
            };
            if t.entries.len() != window || t.out_bits != base.out_bits {
                return Err(Error::Internal(format!(
                    "replacement table {id} does not fit the program"
                )));
            }
        }
        Ok(())
    }

    /// Bootstrap and keyswitch counts.
    pub fn cost(&self) -> Cost {
        let mut c = Cost {
            depth: self.depth(),
            ..Cost::default()
        };
        for n in &self.nodes {
            match n.role {
                Role::Clamp { .. } => c.input_clamp += 1,
                Role::Neuron { .. } => c.members += 1,
                Role::Stage => c.stage += 1,
            }
            if !n.reads_inputs {
                c.keyswitches += 1;
            }
        }
        c
    }

    /// A bare compiled model: its layers, outputs at the circuit's output
    /// precision (the requantized logits).
    pub fn from_circuit(circuit: &Circuit) -> Result<Self> {
        let mut b =
            ProgramBuilder::new(circuit.params, circuit.precision_bits, circuit.input.len())
                .with_input_bits(circuit.input_encoding_bits());
        let inputs: Vec<Expr> = (0..circuit.input.len()).map(Expr::value).collect();
        let mut current = inputs;
        for (l, layer) in circuit.layers.iter().enumerate() {
            let out_bits = circuit.layer_out_bits(l);
            let tables: Vec<TableId> = layer
                .lut
                .iter()
                .map(|t| b.table(t.clone(), out_bits))
                .collect();
            current = b
                .layer(layer, &current, &tables, 0, l)?
                .into_iter()
                .map(Expr::value)
                .collect();
        }
        let outputs = current
            .iter()
            .map(|e| {
                e.as_value()
                    .ok_or_else(|| Error::Internal("layer output".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        b.finish(&outputs, circuit.output_bits)
    }
}

/// Builds a [`Program`] node by node, deduplicating shared tables.
pub struct ProgramBuilder {
    params: ParamSet,
    precision_bits: u32,
    input_bits: u32,
    input_count: usize,
    nodes: Vec<Node>,
    tables: Vec<Table>,
    shared: HashMap<Table, TableId>,
}

impl ProgramBuilder {
    pub fn new(params: ParamSet, precision_bits: u32, input_count: usize) -> Self {
        Self {
            params,
            precision_bits,
            input_bits: precision_bits,
            input_count,
            nodes: Vec::new(),
            tables: Vec::new(),
            shared: HashMap::new(),
        }
    }

    /// Inputs encoded at `bits` (default: the window).
    pub fn with_input_bits(mut self, bits: u32) -> Self {
        self.input_bits = bits;
        self
    }

    pub fn precision_bits(&self) -> u32 {
        self.precision_bits
    }

    /// `Δ_p` as a torus value: the unit of accumulator steps.
    pub fn step(&self) -> u64 {
        self.step_at(0)
    }

    /// `Δ_(p+shift)`: the unit of an accumulator `shift` bits finer than
    /// the window.
    pub fn step_at(&self, shift: u32) -> u64 {
        1u64 << (63 - self.precision_bits - shift)
    }

    /// A table, shared with any identical one already added.
    pub fn table(&mut self, entries: Vec<i64>, out_bits: u32) -> TableId {
        let t = Table { entries, out_bits };
        if let Some(id) = self.shared.get(&t) {
            return *id;
        }
        let id = self.tables.len();
        self.tables.push(t.clone());
        self.shared.insert(t, id);
        id
    }

    /// A table of its own, never shared: one that an answer replaces.
    pub fn unique_table(&mut self, entries: Vec<i64>, out_bits: u32) -> TableId {
        self.tables.push(Table { entries, out_bits });
        self.tables.len() - 1
    }

    fn level_of(&self, v: ValueId) -> usize {
        if v < self.input_count {
            0
        } else {
            self.nodes[v - self.input_count].level
        }
    }

    /// Adds a bootstrap of `input` through `table`; returns its output.
    pub fn node(&mut self, input: Expr, table: TableId, role: Role) -> Result<ValueId> {
        let input = input.normalized();
        let own = self.input_count + self.nodes.len();
        if let Some((v, _)) = input.terms.iter().find(|(v, _)| *v >= own) {
            return Err(Error::Internal(format!(
                "node {own} reads value {v}, not computed before it"
            )));
        }
        let reads_inputs =
            !input.terms.is_empty() && input.terms.iter().all(|(v, _)| *v < self.input_count);
        if !reads_inputs && input.terms.iter().any(|(v, _)| *v < self.input_count) {
            return Err(Error::Internal(
                "a node mixes client inputs and bootstrap outputs".into(),
            ));
        }
        if table >= self.tables.len() {
            return Err(Error::Internal(format!("node uses missing table {table}")));
        }
        let level = 1 + input
            .terms
            .iter()
            .map(|(v, _)| self.level_of(*v))
            .max()
            .unwrap_or(0);
        self.nodes.push(Node {
            terms: input.terms,
            constant: input.constant,
            table,
            level,
            role,
            reads_inputs,
        });
        Ok(own)
    }

    /// One compiled layer on `inputs` (one expression per layer input, in
    /// units of the layer's accumulator `Δ_(p+acc_shift)`): neuron `j`
    /// bootstraps `Σ w·x + offset_j·Δ_(p+acc_shift)` through `tables[j]`.
    pub fn layer(
        &mut self,
        layer: &CircuitLayer,
        inputs: &[Expr],
        tables: &[TableId],
        member: usize,
        index: usize,
    ) -> Result<Vec<ValueId>> {
        if inputs.len() != layer.in_len || tables.len() != layer.out_len {
            return Err(Error::Internal(format!(
                "layer {index} of member {member} does not fit its inputs"
            )));
        }
        let step = self.step_at(layer.acc_shift);
        (0..layer.out_len)
            .map(|j| {
                let mut acc = Expr {
                    terms: Vec::with_capacity(layer.in_len),
                    constant: (layer.offset[j] as u64).wrapping_mul(step),
                };
                for (x, w) in inputs.iter().zip(layer.row(j)) {
                    if *w != 0 {
                        acc.add_scaled(x, *w);
                    }
                }
                self.node(
                    acc,
                    tables[j],
                    Role::Neuron {
                        member,
                        layer: index,
                        neuron: j,
                    },
                )
            })
            .collect()
    }

    /// The finished program; `outputs` must be node outputs whose tables
    /// produce `output_bits`-bit values.
    pub fn finish(self, outputs: &[ValueId], output_bits: u32) -> Result<Program> {
        let window = 1usize << self.precision_bits;
        if self.tables.iter().any(|t| t.entries.len() != window) {
            return Err(Error::Internal("a table does not fit the window".into()));
        }
        let mut nodes_out = Vec::with_capacity(outputs.len());
        for v in outputs {
            let Some(k) = v
                .checked_sub(self.input_count)
                .filter(|k| *k < self.nodes.len())
            else {
                return Err(Error::Internal(format!(
                    "output {v} is not a bootstrap output"
                )));
            };
            if self.tables[self.nodes[k].table].out_bits != output_bits {
                return Err(Error::Internal(format!(
                    "output {v} is not at the {output_bits}-bit output precision"
                )));
            }
            nodes_out.push(k);
        }
        let depth = self.nodes.iter().map(|n| n.level).max().unwrap_or(0);
        let mut levels = vec![Vec::new(); depth];
        for (k, n) in self.nodes.iter().enumerate() {
            levels[n.level - 1].push(k);
        }
        Ok(Program {
            params: self.params,
            precision_bits: self.precision_bits,
            input_bits: self.input_bits,
            input_count: self.input_count,
            nodes: self.nodes,
            tables: self.tables,
            outputs: nodes_out,
            output_bits,
            levels,
            id: NEXT_PROGRAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_merge_terms_exactly() {
        let mut e = Expr::value(3);
        e.add_scaled(&Expr::value(1), 2);
        e.add_scaled(
            &Expr {
                terms: vec![(3, 1), (1, 2)],
                constant: 5,
            },
            -1,
        );
        let n = e.normalized();
        assert!(n.terms.is_empty(), "{:?}", n.terms);
        assert_eq!(n.constant, 5u64.wrapping_neg());
    }

    #[test]
    fn nodes_cannot_mix_inputs_and_outputs_or_read_ahead() {
        let mut b = ProgramBuilder::new(ParamSet::Message2Carry2, 3, 2);
        let t = b.table(vec![0; 8], 3);
        let a = b.node(Expr::value(0), t, Role::Stage).unwrap();
        let mut mixed = Expr::value(a);
        mixed.add_scaled(&Expr::value(1), 1);
        assert!(b.node(mixed, t, Role::Stage).is_err());
        assert!(b.node(Expr::value(a + 1), t, Role::Stage).is_err());
        let c = b.node(Expr::value(a), t, Role::Stage).unwrap();
        let p = b.finish(&[c], 3).unwrap();
        assert_eq!(p.nodes[1].level, 2);
        assert!(p.nodes[0].reads_inputs && !p.nodes[1].reads_inputs);
        assert_eq!(p.cost().keyswitches, 1);
        let b = ProgramBuilder::new(ParamSet::Message2Carry2, 3, 2);
        assert!(
            b.finish(&[0], 3).is_err(),
            "an input is no bootstrap output"
        );
    }
}
