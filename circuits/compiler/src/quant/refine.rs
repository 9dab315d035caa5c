//! Rounding refinement on the calibration set (in the spirit of AdaRound):
//! after error-feedback rounding, integer weights and accumulator constants
//! are adjusted one unit at a time, greedily, whenever that lowers the mean
//! KL divergence between the float model's softmax and the quantized
//! network's, on the calibration rows. A change is only kept if every
//! calibrated accumulator of the neuron still fits the window. Only weights
//! that are non-zero in the float model are touched, so sparsity (e.g. a
//! convolution's receptive field) is preserved.

use super::{QuantStage, QuantizedNet};
use blindfold_runtime::data::log_softmax;

/// One sample's downstream state before a tentative change.
struct Saved {
    sample: usize,
    acc: Vec<Vec<i64>>,
    out: Vec<Vec<i64>>,
    loss: f64,
}

struct State {
    /// acc[l][s][j]: accumulator of neuron j of stage l on sample s
    acc: Vec<Vec<Vec<i64>>>,
    /// out[l][s][j]: requantized output (input of stage l+1)
    out: Vec<Vec<Vec<i64>>>,
    /// per-sample loss
    loss: Vec<f64>,
}

fn sample_loss(last: &QuantStage, out: &[i64], target: &[f64], target_logp: &[f64]) -> f64 {
    let logits: Vec<f64> = out
        .iter()
        .enumerate()
        .map(|(k, q)| last.out.dequantize(k, *q))
        .collect();
    let lq = log_softmax(&logits);
    target
        .iter()
        .zip(target_logp.iter().zip(&lq))
        .map(|(p, (a, b))| p * (a - b))
        .sum()
}

fn forward_from(net: &QuantizedNet, st: &mut State, s: usize, from: usize) {
    for l in from..net.stages.len() {
        let stage = &net.stages[l];
        let input = if l == 0 {
            None
        } else {
            Some(st.out[l - 1][s].clone())
        };
        for j in 0..stage.out_len {
            let a = match &input {
                Some(x) => stage.accumulate(j, x),
                None => st.acc[0][s][j],
            };
            st.acc[l][s][j] = a;
            st.out[l][s][j] = stage.output(j, a);
        }
    }
}

/// Refines `net` in place. `inputs` are the quantized calibration inputs,
/// `float_logits` the float model's logits on the same rows.
pub fn refine(
    net: &mut QuantizedNet,
    inputs: &[Vec<i64>],
    float_logits: &[Vec<f64>],
    float_weights_nonzero: &[Vec<bool>],
    sweeps: usize,
) {
    let n = inputs.len();
    if n == 0 || net.stages.is_empty() {
        return;
    }
    // Exact mode: an accumulator's calibrated range may move as long as it
    // spans fewer than `usable` values (the window follows it). Approximate
    // mode: the bucket boundaries are anchored at the window's bottom, so the
    // window stays where quantization put it (`acc_min`) and every
    // accumulator must stay inside its usable part.
    let shifts: Vec<u32> = net.stages.iter().map(|s| s.shift).collect();
    let boxes = (1i64 << net.config.accumulator_bits) - 2 * net.config.margin as i64;
    let anchors: Vec<Vec<i64>> = net.stages.iter().map(|s| s.acc_min.clone()).collect();
    let fits = |l: usize, j: usize, lo: i64, hi: i64| -> bool {
        let usable = boxes << shifts[l];
        if shifts[l] == 0 {
            hi - lo < usable
        } else {
            lo >= anchors[l][j] && hi < anchors[l][j] + usable
        }
    };
    let targets_logp: Vec<Vec<f64>> = float_logits.iter().map(|v| log_softmax(v)).collect();
    let targets: Vec<Vec<f64>> = targets_logp
        .iter()
        .map(|v| v.iter().map(|x| x.exp()).collect())
        .collect();
    let n_stages = net.stages.len();
    let mut st = State {
        acc: net
            .stages
            .iter()
            .map(|s| vec![vec![0; s.out_len]; n])
            .collect(),
        out: net
            .stages
            .iter()
            .map(|s| vec![vec![0; s.out_len]; n])
            .collect(),
        loss: vec![0.0; n],
    };
    for s in 0..n {
        for j in 0..net.stages[0].out_len {
            st.acc[0][s][j] = net.stages[0].accumulate(j, &inputs[s]);
        }
        forward_from(net, &mut st, s, 0);
        let last = &net.stages[n_stages - 1];
        st.loss[s] = sample_loss(
            last,
            &st.out[n_stages - 1][s],
            &targets[s],
            &targets_logp[s],
        );
    }
    for _ in 0..sweeps {
        let mut changed = 0usize;
        for (l, nonzero) in float_weights_nonzero.iter().enumerate().take(n_stages) {
            let in_len = net.stages[l].in_len;
            for j in 0..net.stages[l].out_len {
                // candidate coordinates: each non-zero float weight, then the constant
                for i in 0..=in_len {
                    if i < in_len && !nonzero[j * in_len + i] {
                        continue;
                    }
                    for delta in [1i64, -1] {
                        // the input each sample contributes through this coordinate
                        let contrib = |s: usize, st: &State| -> i64 {
                            if i == in_len {
                                1
                            } else if l == 0 {
                                inputs[s][i]
                            } else {
                                st.out[l - 1][s][i]
                            }
                        };
                        // window check
                        let mut lo = i64::MAX;
                        let mut hi = i64::MIN;
                        for s in 0..n {
                            let a = st.acc[l][s][j] + delta * contrib(s, &st);
                            lo = lo.min(a);
                            hi = hi.max(a);
                        }
                        if !fits(l, j, lo, hi) {
                            continue;
                        }
                        // apply tentatively
                        if i == in_len {
                            net.stages[l].bias[j] += delta;
                        } else {
                            net.stages[l].weight[j * in_len + i] += delta;
                        }
                        let mut gain = 0.0;
                        let mut touched: Vec<Saved> = Vec::new();
                        for s in 0..n {
                            let c = contrib(s, &st);
                            if c == 0 {
                                continue;
                            }
                            let old_acc: Vec<Vec<i64>> =
                                (l..n_stages).map(|k| st.acc[k][s].clone()).collect();
                            let old_out: Vec<Vec<i64>> =
                                (l..n_stages).map(|k| st.out[k][s].clone()).collect();
                            let old_loss = st.loss[s];
                            let a = st.acc[l][s][j] + delta * c;
                            st.acc[l][s][j] = a;
                            let y = net.stages[l].output(j, a);
                            let out_changed = y != st.out[l][s][j];
                            st.out[l][s][j] = y;
                            if out_changed || l + 1 == n_stages {
                                if l + 1 < n_stages {
                                    forward_from(net, &mut st, s, l + 1);
                                }
                                let last = &net.stages[n_stages - 1];
                                st.loss[s] = sample_loss(
                                    last,
                                    &st.out[n_stages - 1][s],
                                    &targets[s],
                                    &targets_logp[s],
                                );
                                gain += old_loss - st.loss[s];
                            }
                            touched.push(Saved {
                                sample: s,
                                acc: old_acc,
                                out: old_out,
                                loss: old_loss,
                            });
                        }
                        // downstream accumulators moved too: they must still fit
                        let downstream_ok = gain > 1e-9
                            && (l + 1..n_stages).all(|k| {
                                (0..net.stages[k].out_len).all(|m| {
                                    let mut lo = i64::MAX;
                                    let mut hi = i64::MIN;
                                    for s in 0..n {
                                        lo = lo.min(st.acc[k][s][m]);
                                        hi = hi.max(st.acc[k][s][m]);
                                    }
                                    fits(k, m, lo, hi)
                                })
                            });
                        if downstream_ok {
                            changed += 1;
                            break; // keep this direction
                        }
                        // revert
                        if i == in_len {
                            net.stages[l].bias[j] -= delta;
                        } else {
                            net.stages[l].weight[j * in_len + i] -= delta;
                        }
                        for Saved {
                            sample: s,
                            acc: old_acc,
                            out: old_out,
                            loss: old_loss,
                        } in touched
                        {
                            for (k, (a, o)) in old_acc.into_iter().zip(old_out).enumerate() {
                                st.acc[l + k][s] = a;
                                st.out[l + k][s] = o;
                            }
                            st.loss[s] = old_loss;
                        }
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    // calibrated ranges of the refined network
    for (l, stage) in net.stages.iter_mut().enumerate() {
        for j in 0..stage.out_len {
            if shifts[l] == 0 {
                stage.acc_min[j] = (0..n).map(|s| st.acc[l][s][j]).min().unwrap_or(0);
            }
            stage.acc_max[j] = (0..n).map(|s| st.acc[l][s][j]).max().unwrap_or(0);
        }
    }
}
