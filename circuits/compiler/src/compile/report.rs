//! Builds a circuit's [`Report`]: bootstrap-input histograms on the
//! calibration set, each neuron's noise, and the failure probabilities the
//! noise model predicts (see [`blindfold_runtime::report`]).

use blindfold_runtime::eval::clear::{check_input, run_on, Clear};
use blindfold_runtime::program::{Program, Role, TableSet};
use blindfold_runtime::report::{bootstrap_change_probabilities, neuron_sigma};

use super::{Circuit, LayerReport, LogitStats, Report};
use crate::Result;

pub(crate) fn build(circuit: &Circuit, calibration: &[Vec<i64>]) -> Result<Report> {
    let window = circuit.window() as usize;
    // histogram of bootstrap inputs per (layer, neuron), in the layer's
    // accumulator units (2^acc_shift per box)
    let mut hist: Vec<Vec<Vec<u32>>> = circuit
        .layers
        .iter()
        .map(|l| vec![vec![0u32; (2 * window) << l.acc_shift]; l.out_len])
        .collect();
    let shifts: Vec<u32> = circuit.layers.iter().map(|l| l.acc_shift).collect();
    let p = circuit.precision_bits;
    let mut stats: Option<LogitStats> = None;
    let program = Program::from_circuit(circuit)?;
    let where_: Vec<(usize, usize)> = program
        .nodes
        .iter()
        .map(|n| match n.role {
            Role::Neuron { layer, neuron, .. } => (layer, neuron),
            _ => (0, 0),
        })
        .collect();
    for q in calibration {
        check_input(circuit, q)?;
        let mut trace = |k: usize, acc: u64| {
            let (l, j) = where_[k];
            let fine = blindfold_runtime::eval::clear::accumulator(acc, p + shifts[l]);
            hist[l][j][fine as usize] += 1;
        };
        let (out, _) = run_on(
            &Clear::traced(&mut trace),
            &program,
            &TableSet::default(),
            q,
        )?;
        let logits = circuit.decode_output(&out);
        let (lo, hi) = logits
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        stats = Some(match stats {
            None => LogitStats {
                min: lo,
                max: hi,
                top_min: hi,
                top_max: hi,
            },
            Some(s) => LogitStats {
                min: s.min.min(lo),
                max: s.max.max(hi),
                top_min: s.top_min.min(hi),
                top_max: s.top_max.max(hi),
            },
        });
    }
    let mut layers = Vec::new();
    let mut p_inf = 0.0;
    let mut p_inf_worst = 0.0;
    let mut flips = 0.0;
    let mut input_bits = circuit.input.bits;
    for (li, l) in circuit.layers.iter().enumerate() {
        let out_modulus = circuit.layer_modulus(li);
        let mut rep = LayerReport {
            label: l.label.clone(),
            neurons: l.out_len,
            input_bits,
            window_bits: circuit.precision_bits,
            lut_output_bits: l.lut_output_bits,
            bootstraps: l.out_len,
            keyswitches: if l.keyswitch { l.out_len } else { 0 },
            acc_shift: l.acc_shift,
            ..Default::default()
        };
        for (j, h) in hist[li].iter().enumerate() {
            let sigma = neuron_sigma(circuit, li, j);
            rep.max_sigma = rep.max_sigma.max(sigma);
            rep.max_weight_norm2 = rep.max_weight_norm2.max(l.norm2_sq(j).sqrt());
            let total: u64 = h.iter().map(|c| *c as u64).sum();
            let (lo, hi) = match (
                h.iter().position(|c| *c > 0),
                h.iter().rposition(|c| *c > 0),
            ) {
                (Some(a), Some(b)) => (a, b),
                _ => (0, 0),
            };
            let width = (hi - lo + 1) as f64;
            rep.accumulator_bits = rep.accumulator_bits.max(width.log2().ceil() as u32);
            let mut mean = 0.0;
            let mut worst: f64 = 0.0;
            let mut flip = 0.0;
            for (fine, c) in h.iter().enumerate() {
                if *c == 0 {
                    continue;
                }
                let (pflip, pf) = bootstrap_change_probabilities(
                    &l.lut[j],
                    circuit.precision_bits,
                    fine as i64,
                    l.acc_shift,
                    sigma,
                    out_modulus,
                );
                mean += pf * *c as f64;
                flip += pflip * *c as f64;
                worst = worst.max(pf);
            }
            if total > 0 {
                mean /= total as f64;
                flip /= total as f64;
            }
            rep.p_flip_mean = rep.p_flip_mean.max(flip);
            flips += flip;
            if l.is_output {
                // the client rounds the decrypted phase to the output step
                let step_half = 2f64.powi(-(circuit.output_bits as i32 + 2));
                let sd = circuit.params.noise().pbs_output.sqrt();
                let decode =
                    blindfold_runtime::params::erfc(step_half / sd / std::f64::consts::SQRT_2);
                mean += decode;
                worst += decode;
            }
            rep.p_fail_mean = rep.p_fail_mean.max(mean);
            rep.p_fail_worst = rep.p_fail_worst.max(worst);
            p_inf += mean;
            p_inf_worst += worst;
        }
        input_bits = l.lut_output_bits;
        layers.push(rep);
    }
    Ok(Report {
        params: circuit.params.name().to_string(),
        polynomial_size: circuit.params.polynomial_size(),
        small_lwe_dimension: circuit.params.small_lwe_dimension(),
        precision_bits: circuit.precision_bits,
        output_bits: circuit.output_bits,
        layers,
        pbs_per_inference: circuit.pbs_per_inference(),
        ks_per_inference: circuit.ks_per_inference(),
        p_fail_inference: p_inf.min(1.0),
        p_fail_inference_worst: p_inf_worst.min(1.0),
        flips_per_inference: flips,
        calibration_samples: calibration.len(),
        logits: stats,
        selection: Vec::new(),
    })
}
