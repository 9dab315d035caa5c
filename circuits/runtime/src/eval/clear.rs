//! The clear interpreter: a [`Program`]'s arithmetic on torus integers,
//! exactly what the encrypted interpreter computes minus the noise.
//!
//! A value is a `u64` torus element. A dot product wraps modulo `2^64`; a
//! bootstrap rounds its accumulator to the nearest step `Δ_p = 2^(63-p)`,
//! reads `m` modulo `2^(p+1)` and returns `T[m]` for `m < 2^p` and
//! `-T[m - 2^p]` above (negacyclic), in units of `2^(63-out_bits)`, as the
//! blind rotation does.

use std::sync::Mutex;

use crate::circuit::Circuit;
use crate::eval::{run, Backend, Cancel, EvalStats};
use crate::program::{Program, Table, TableSet};
use crate::{Error, Result};

/// Bootstrap semantics shared with the failure model: the table value for
/// accumulator `m` (any integer), modulo `out_modulus`.
pub fn bootstrap_value(table: &[i64], precision_bits: u32, m: i64, out_modulus: i64) -> i64 {
    let window = 1i64 << precision_bits;
    let m = m.rem_euclid(2 * window);
    let v = if m < window {
        table[m as usize]
    } else {
        -table[(m - window) as usize]
    };
    v.rem_euclid(out_modulus)
}

/// The accumulator step a torus value rounds to, modulo `2^(p+1)`.
pub fn accumulator(torus: u64, precision_bits: u32) -> i64 {
    let shift = 63 - precision_bits;
    (torus.wrapping_add(1u64 << (shift - 1)) >> shift) as i64
}

/// Encodes an integer (taken modulo `2^(bits+1)`) as a torus value.
pub fn encode(v: i64, bits: u32) -> u64 {
    (v as u64).wrapping_mul(1u64 << (63 - bits))
}

/// Decodes a torus value to an integer modulo `2^(bits+1)`.
pub fn decode(torus: u64, bits: u32) -> i64 {
    accumulator(torus, bits)
}

/// One bootstrap of `acc` through `table`.
fn bootstrap(acc: u64, precision_bits: u32, table: &Table) -> u64 {
    let m = accumulator(acc, precision_bits);
    let v = bootstrap_value(
        &table.entries,
        precision_bits,
        m,
        1i64 << (table.out_bits + 1),
    );
    encode(v, table.out_bits)
}

type Trace<'a> = Mutex<&'a mut (dyn FnMut(usize, u64) + Send)>;
type NoiseSource<'a> = Mutex<&'a mut (dyn rand_core::RngCore + Send)>;

/// The clear backend; optionally reports every bootstrap input, or
/// simulates the encrypted path's noise.
#[derive(Default)]
pub struct Clear<'a> {
    trace: Option<Trace<'a>>,
    noise: Option<NoiseSource<'a>>,
}

impl<'a> Clear<'a> {
    pub fn new() -> Self {
        Self {
            trace: None,
            noise: None,
        }
    }

    /// A backend that calls `trace(node, acc)` with every bootstrap's
    /// accumulator `acc` (a torus value, before the bootstrap rounds it),
    /// for the compiler's failure report.
    pub fn traced(trace: &'a mut (dyn FnMut(usize, u64) + Send)) -> Self {
        Self {
            trace: Some(Mutex::new(trace)),
            noise: None,
        }
    }

    /// A backend that adds to every bootstrap's accumulator the Gaussian
    /// noise the encrypted path has there (tfhe-rs's noise formulas:
    /// `Σ w²·σ²` of the values read, the keyswitch for bootstrap outputs,
    /// the modulus switch), drawn from `rng`: the clear path's prediction
    /// of what ciphertexts answer, rounding flips included.
    pub fn simulating(rng: &'a mut (dyn rand_core::RngCore + Send)) -> Self {
        Self {
            trace: None,
            noise: Some(Mutex::new(rng)),
        }
    }
}

/// Variance (torus units) at the blind-rotation input of node `k`.
pub fn node_variance(program: &Program, k: usize) -> f64 {
    let noise = program.params.noise();
    let node = &program.nodes[k];
    let read: f64 = node
        .terms
        .iter()
        .map(|(v, w)| {
            let var = if *v < program.input_count {
                noise.fresh_small
            } else {
                noise.pbs_output
            };
            (*w as f64) * (*w as f64) * var
        })
        .sum();
    let ks = if node.reads_inputs {
        0.0
    } else {
        noise.keyswitch
    };
    read + ks + noise.modulus_switch
}

impl Backend for Clear<'_> {
    type Value = u64;
    type Tables = ();

    fn workers(&self) -> usize {
        1
    }

    fn prepare(&self, _: &Program, _: &TableSet) -> Result<()> {
        Ok(())
    }

    fn bootstrap_batch(
        &self,
        program: &Program,
        overrides: &TableSet,
        _: &(),
        batch: &[usize],
        values: &[Option<u64>],
    ) -> Result<Vec<u64>> {
        let p = program.precision_bits;
        let mut trace = match &self.trace {
            Some(t) => Some(t.lock().map_err(|_| Error::Internal("trace lock".into()))?),
            None => None,
        };
        let mut noise = match &self.noise {
            Some(n) => Some(n.lock().map_err(|_| Error::Internal("noise lock".into()))?),
            None => None,
        };
        batch
            .iter()
            .map(|k| {
                let node = &program.nodes[*k];
                let mut acc = node.constant;
                for (v, w) in &node.terms {
                    let x = values[*v]
                        .ok_or_else(|| Error::Internal(format!("node {k} read value {v} early")))?;
                    acc = acc.wrapping_add(x.wrapping_mul(*w as u64));
                }
                if let Some(t) = trace.as_mut() {
                    t(*k, acc);
                }
                if let Some(rng) = noise.as_mut() {
                    use rand_distr::Distribution;
                    let z: f64 = rand_distr::StandardNormal.sample(&mut **rng);
                    let e = z * node_variance(program, *k).sqrt() * 2f64.powi(64);
                    acc = acc.wrapping_add(e as i64 as u64);
                }
                Ok(bootstrap(acc, p, program.table_of(*k, overrides)))
            })
            .collect()
    }
}

/// Runs `program` in the clear on quantized inputs (taken modulo
/// `2^(p+1)`, as a ciphertext would carry them). Returns the outputs modulo
/// `2^(output_bits+1)`: what the client decrypts.
pub fn run_program(program: &Program, overrides: &TableSet, input: &[i64]) -> Result<Vec<i64>> {
    run_on(&Clear::new(), program, overrides, input).map(|(out, _)| out)
}

/// [`run_program`] on a given clear backend (e.g. a traced one).
pub fn run_on(
    backend: &Clear<'_>,
    program: &Program,
    overrides: &TableSet,
    input: &[i64],
) -> Result<(Vec<i64>, EvalStats)> {
    if input.len() != program.input_count {
        return Err(Error::InputLength {
            expected: program.input_count,
            got: input.len(),
        });
    }
    let inputs = input
        .iter()
        .map(|q| encode(*q, program.input_bits))
        .collect();
    let never = || false;
    let cancel: Cancel<'_> = &never;
    let (out, stats) = run(backend, program, overrides, inputs, cancel)?;
    Ok((
        out.iter()
            .map(|t| decode(*t, program.output_bits))
            .collect(),
        stats,
    ))
}

/// Checks quantized inputs against a circuit's input range.
pub fn check_input(circuit: &Circuit, input: &[i64]) -> Result<()> {
    if input.len() != circuit.input.len() {
        return Err(Error::InputLength {
            expected: circuit.input.len(),
            got: input.len(),
        });
    }
    let limit = 1i64 << circuit.input.bits;
    match input
        .iter()
        .enumerate()
        .find(|(_, v)| !(0..limit).contains(*v))
    {
        Some((index, value)) => Err(Error::InputRange {
            index,
            value: *value,
            limit,
        }),
        None => Ok(()),
    }
}

/// Evaluates a bare circuit on quantized inputs (each in
/// `[0, 2^input_bits)`). Returns the outputs modulo
/// `2^(output_bits+1)`. Lowers the circuit on every call: for many inputs,
/// build [`Program::from_circuit`] once and use [`run_program`].
pub fn evaluate(circuit: &Circuit, input: &[i64]) -> Result<Vec<i64>> {
    check_input(circuit, input)?;
    run_program(
        &Program::from_circuit(circuit)?,
        &TableSet::default(),
        input,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torus_encoding_round_trips_and_rounds() {
        for bits in [3u32, 5, 7, 10] {
            for v in -20i64..40 {
                let t = encode(v, bits);
                assert_eq!(decode(t, bits), v.rem_euclid(1 << (bits + 1)));
                // within half a step either way it still rounds to v
                let half = (1u64 << (63 - bits)) / 2;
                assert_eq!(decode(t.wrapping_add(half - 1), bits), decode(t, bits));
                assert_eq!(decode(t.wrapping_sub(half), bits), decode(t, bits));
            }
        }
        let table = Table {
            entries: vec![5, 6, 7, 8],
            out_bits: 4,
        };
        // m = 5 is the negacyclic image of m = 1
        assert_eq!(
            decode(bootstrap(encode(5, 2), 2, &table), 4),
            (-6i64).rem_euclid(32)
        );
    }
}
