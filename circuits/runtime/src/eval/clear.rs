//! The clear evaluator: the circuit's arithmetic in integers.
//!
//! Values are what the encrypted evaluator carries in units of `Δ`, modulo
//! `2^(p+1)` (hidden layers) or `2^(output_bits+1)` (outputs). A bootstrap of
//! `m` returns `T[m]` for `m < 2^p` and `-T[m - 2^p]` above (negacyclic), as
//! the blind rotation does.

use crate::circuit::Circuit;
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

/// Evaluates the circuit on quantized inputs. Returns the outputs modulo
/// `2^(output_bits+1)` — what the client decrypts.
pub fn evaluate(circuit: &Circuit, input: &[i64]) -> Result<Vec<i64>> {
    evaluate_traced(circuit, input, |_, _, _| {})
}

/// Like [`evaluate`], calling `trace(layer, neuron, m)` with every bootstrap
/// input `m` (reduced modulo `2^(p+1)`).
pub fn evaluate_traced(
    circuit: &Circuit,
    input: &[i64],
    trace: impl FnMut(usize, usize, i64),
) -> Result<Vec<i64>> {
    run(circuit, input, None, trace)
}

/// Evaluates the circuit with its output layer's tables replaced by
/// `tables` (one per class, `2^p` entries) producing `out_bits`-bit values:
/// how a hardening policy runs a member network.
pub fn evaluate_with_output(
    circuit: &Circuit,
    input: &[i64],
    tables: &[Vec<i64>],
    out_bits: u32,
) -> Result<Vec<i64>> {
    let last = &circuit.layers[circuit.layers.len() - 1];
    if tables.len() != last.out_len || tables.iter().any(|t| t.len() as i64 != circuit.window()) {
        return Err(Error::Eval("output tables do not fit the circuit".into()));
    }
    run(circuit, input, Some((tables, out_bits)), |_, _, _| {})
}

fn run(
    circuit: &Circuit,
    input: &[i64],
    output: Option<(&[Vec<i64>], u32)>,
    mut trace: impl FnMut(usize, usize, i64),
) -> Result<Vec<i64>> {
    if input.len() != circuit.input.len() {
        return Err(Error::InputLength {
            expected: circuit.input.len(),
            got: input.len(),
        });
    }
    let max_in = 1i64 << circuit.input.bits;
    if let Some(bad) = input.iter().find(|v| **v < 0 || **v >= max_in) {
        return Err(Error::Eval(format!(
            "quantized input {bad} is outside [0, {max_in})"
        )));
    }
    let acc_modulus = 2 * circuit.window();
    let mut v: Vec<i64> = input.to_vec();
    for (l, layer) in circuit.layers.iter().enumerate() {
        let (tables, out_modulus) = match output {
            Some((t, bits)) if layer.is_output => (t, 1i64 << (bits + 1)),
            _ => (layer.lut.as_slice(), circuit.layer_modulus(l)),
        };
        let mut next = Vec::with_capacity(layer.out_len);
        for (j, table) in tables.iter().enumerate().take(layer.out_len) {
            let acc = layer
                .row(j)
                .iter()
                .zip(&v)
                .fold(layer.offset[j], |s, (w, x)| {
                    s.wrapping_add(w.wrapping_mul(*x))
                })
                .rem_euclid(acc_modulus);
            trace(l, j, acc);
            next.push(bootstrap_value(
                table,
                circuit.precision_bits,
                acc,
                out_modulus,
            ));
        }
        v = next;
    }
    Ok(v)
}
