//! `blindfold bench`: float plaintext, quantized clear and encrypted
//! evaluation of one model, side by side, in one run.

use std::time::Instant;

use serde::Serialize;

use blindfold_compiler::pipeline::{
    circuit_accuracy, fidelity, fidelity_of, ModelBundle, Reference,
};
use blindfold_runtime::circuit::Circuit;
use blindfold_runtime::eval::clear::run_program;
use blindfold_runtime::eval::fhe::{
    evaluate, time_batched_bootstrap, time_primitives, Fhe, FheTables,
};
use blindfold_runtime::eval::never;
use blindfold_runtime::keys::ClientKey;
use blindfold_runtime::program::{Program, TableSet};
use blindfold_runtime::serial::Bytes;

/// Everything `blindfold bench --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    /// The parameter set's tfhe-rs name, and its short name (`2_2`, `3_2`…).
    pub params: String,
    pub params_short: String,
    /// Accumulator bits the bootstraps round away (0: exact mode).
    pub rounding_bits: u32,
    /// Per-layer overrides of `rounding_bits` (layer, bits).
    pub layer_rounding_bits: Vec<(usize, u32)>,
    pub clip_ranges: bool,
    /// Spare window boxes on each side of the calibrated accumulator range.
    pub margin: u32,
    pub precision_bits: u32,
    pub input_bits: u32,
    pub activation_bits: u32,
    pub output_bits: u32,
    pub test_samples: usize,
    pub fhe_samples: usize,
    pub float_accuracy: f64,
    pub quantized_accuracy: f64,
    /// Fraction of test rows where the quantized clear prediction equals
    /// the float model's.
    pub float_agreement: f64,
    /// Mean KL divergence from the float softmax to the quantized one.
    pub float_kl: f64,
    pub fhe_accuracy: f64,
    /// Fraction of FHE samples whose decrypted output vector equals the clear evaluator's.
    pub fhe_clear_agreement: f64,
    /// Fraction whose predicted label equals the clear evaluator's.
    pub fhe_clear_label_agreement: f64,
    /// Fraction whose label equals the clear path's simulation of the
    /// encrypted noise (one independent draw per row).
    pub fhe_simulated_label_agreement: f64,
    /// Fraction whose label equals the simulation's most frequent label
    /// over [`SIM_DRAWS`] draws of the same row: the clear path's
    /// prediction of the encrypted label.
    pub fhe_simulated_modal_label_agreement: f64,
    /// Mean over the encrypted rows of the fraction of simulated draws that
    /// give the decrypted label (what the one-draw agreement should be near).
    pub fhe_simulated_label_probability: f64,
    /// Accuracy of the clear path simulating the encrypted noise, all test
    /// rows: the prediction of the FHE accuracy without ciphertexts.
    pub simulated_accuracy: f64,
    /// Accumulator bits rounded away by the bootstraps, per layer.
    pub acc_shift: Vec<u32>,
    /// Rounding flips per inference the noise model predicts (calibration
    /// rows), and decrypted output values that differ from the clear
    /// path's per inference (measured; flips upstream count there too).
    pub predicted_flips_per_inference: f64,
    pub fhe_outputs_changed_per_inference: f64,
    /// The same count from the clear path's simulation of the noise, all
    /// test rows: the predicted rate the measured one is compared with.
    pub simulated_outputs_changed_per_inference: f64,
    /// The same on the rows run encrypted, mean of [`SIM_DRAWS`] draws per
    /// row: the prediction `fhe_outputs_changed_per_inference` is checked
    /// against.
    pub simulated_outputs_changed_on_fhe_rows: f64,
    /// Standard deviation, over the draws, of the simulated count on the
    /// encrypted rows (per inference). Flips are over-dispersed (one flip in
    /// a hidden layer moves several outputs), so the tolerance comes from
    /// this spread, not from a Poisson √count.
    pub simulated_outputs_changed_sd_on_fhe_rows: f64,
    /// (decrypted − simulated mean) / simulated sd, on the encrypted rows.
    pub fhe_outputs_changed_z: f64,
    /// Whether the decrypted count lies within ± 3 simulated standard
    /// deviations of the simulated mean (false when no rows ran encrypted).
    pub fhe_outputs_changed_within_tolerance: bool,
    /// `float_agreement` of the simulating clear path (one draw per row).
    pub simulated_float_agreement: f64,
    /// Relative squared error of the centred logits against the float ones.
    pub float_logit_error: f64,
    /// Why `auto` chose this configuration (empty when nothing was chosen).
    pub selection: Vec<String>,
    pub pbs_per_inference: usize,
    pub ks_per_inference: usize,
    pub worker_threads: usize,
    pub latency_ms_median: f64,
    pub latency_ms_min: f64,
    pub ks_ms: f64,
    pub pbs_ms: f64,
    pub pbs_floor_ms: f64,
    pub efficiency: f64,
    /// One bootstrap's share of a batch of `pbs_batch` on one thread.
    pub pbs_batched_ms: f64,
    pub pbs_batch: usize,
    /// Floor with each layer's bootstraps at the batched unit cost, per
    /// worker (each layer's neurons split evenly across workers).
    pub batched_floor_ms: f64,
    /// batched floor ÷ latency: the parallel efficiency of the evaluator.
    pub batched_efficiency: f64,
    pub plaintext_latency_us: f64,
    pub quantized_clear_latency_us: f64,
    pub keygen_ms: f64,
    pub key_decompress_ms: f64,
    pub eval_key_bytes: usize,
    /// The decompressed evaluation key, as the server holds it in memory.
    pub server_key_bytes: usize,
    pub ciphertext_in_bytes: usize,
    pub ciphertext_out_bytes: usize,
    pub encrypt_ms_median: f64,
    pub decrypt_ms_median: f64,
    pub predicted_p_error: f64,
    pub predicted_p_error_worst: f64,
}

/// Simulated draws per encrypted row for the predicted changed outputs.
const SIM_DRAWS: usize = 100;

/// Mean and sample standard deviation of counts.
fn mean_sd(v: &[usize]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<usize>() as f64 / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The clear path with the encrypted path's noise, one draw per call.
fn simulate(
    program: &Program,
    q: &[i64],
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<Vec<i64>, anyhow::Error> {
    let backend = blindfold_runtime::eval::clear::Clear::simulating(rng);
    Ok(blindfold_runtime::eval::clear::run_on(&backend, program, &TableSet::default(), q)?.0)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the benchmark; progress goes to `log`.
pub fn run(
    bundle: &ModelBundle,
    circuit: &Circuit,
    samples: usize,
    log: &mut dyn FnMut(String),
) -> Result<BenchReport, anyhow::Error> {
    let (raw, labels) = bundle.dataset.rows(bundle.test)?;
    let (pre, _) = bundle.rows(bundle.test)?;
    // float plaintext
    let (fc, n) = bundle.float_accuracy()?;
    let mut float_us = Vec::new();
    for x in pre.iter().take(200) {
        let xf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let t = Instant::now();
        let out = bundle.graph.eval::<f32>(&xf)?;
        float_us.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(out);
    }
    // quantized clear
    let (qc, _) = circuit_accuracy(circuit, &raw, &labels)?;
    let mut sim_rng = {
        use rand_chacha::rand_core::SeedableRng;
        rand_chacha::ChaCha20Rng::seed_from_u64(1)
    };
    let fid = fidelity(bundle, circuit, bundle.test)?;
    let program = Program::from_circuit(circuit)?;
    let none = TableSet::default();
    let sim_fid = fidelity_of(&Reference::new(bundle, bundle.test)?, circuit, 1, 1)?;
    let (mut sim_correct, mut sim_changed) = (0usize, 0usize);
    for (x, label) in raw.iter().zip(&labels) {
        let q = circuit.input.quantize(x)?;
        let simulated = simulate(&program, &q, &mut sim_rng)?;
        let exact = run_program(&program, &none, &q)?;
        sim_changed += simulated.iter().zip(&exact).filter(|(a, b)| a != b).count();
        sim_correct += usize::from(circuit.predict_class(&simulated) == *label);
    }
    let mut clear_us = Vec::new();
    for x in raw.iter().take(200) {
        let q = circuit.input.quantize(x)?;
        let t = Instant::now();
        let out = run_program(&program, &none, &q)?;
        clear_us.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(out);
    }
    log(format!(
        "float accuracy {fc}/{n}, quantized clear accuracy {qc}/{n}; generating keys ({})…",
        circuit.params.name()
    ));
    // keys
    let t = Instant::now();
    let ck = ClientKey::generate(circuit.params);
    let cek = ck.evaluation_key();
    let keygen_ms = t.elapsed().as_secs_f64() * 1e3;
    let ek_bytes = cek.to_bytes()?;
    let t = Instant::now();
    let ek = cek.decompress();
    let key_decompress_ms = t.elapsed().as_secs_f64() * 1e3;
    log(format!(
        "keygen {:.0} ms, compressed evaluation key {:.1} MB; timing one KS and one PBS…",
        keygen_ms,
        ek_bytes.len() as f64 / 1e6
    ));
    let (ks_s, pbs_s) = time_primitives(&ek, 8);
    // the evaluator's batches: each layer split into one batch per worker
    let threads = rayon::current_num_threads().max(1);
    let widest = circuit.layers.iter().map(|l| l.out_len).max().unwrap_or(1);
    let batch = widest.div_ceil(threads);
    let pbs_batched_s = time_batched_bootstrap(&ek, batch);
    let tables = FheTables::new(&program);
    let backend = Fhe::new(&ek, &tables)?;
    let samples = samples.min(raw.len());
    let mut lat = Vec::new();
    let mut enc_ms = Vec::new();
    let mut dec_ms = Vec::new();
    let (mut agree, mut label_agree, mut fhe_correct) = (0usize, 0usize, 0usize);
    let (mut sim_agree, mut changed) = (0usize, 0usize);
    let (mut sim_modal_agree, mut sim_expected_agree) = (0usize, 0f64);
    // per draw: simulated changed outputs summed over the encrypted rows
    let mut draw_totals = vec![0usize; SIM_DRAWS];
    let (mut in_bytes, mut out_bytes) = (0usize, 0usize);
    for (i, (x, label)) in raw.iter().zip(&labels).take(samples).enumerate() {
        let q = circuit.input.quantize(x)?;
        let expected = run_program(&program, &none, &q)?;
        let t = Instant::now();
        let enc = ck.encrypt(&circuit.client_spec(), &q)?;
        let enc_bytes = enc.to_bytes()?;
        enc_ms.push(t.elapsed().as_secs_f64() * 1e3);
        in_bytes = enc_bytes.len();
        let (out, stats) = evaluate(&program, &backend, &none, &enc, &never)?;
        lat.push(stats.seconds * 1e3);
        let out_blob = out.to_bytes()?;
        out_bytes = out_blob.len();
        let t = Instant::now();
        let got = ck.decrypt(&circuit.client_spec(), &out)?;
        dec_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let class = circuit.predict_class(&got);
        if got == expected {
            agree += 1;
        }
        changed += got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        let simulated = simulate(&program, &q, &mut sim_rng)?;
        sim_agree += usize::from(class == circuit.predict_class(&simulated));
        // the noise model's prediction for this very row: mean over draws
        let mut votes = std::collections::BTreeMap::<usize, usize>::new();
        for total in draw_totals.iter_mut() {
            let d = simulate(&program, &q, &mut sim_rng)?;
            *total += d.iter().zip(&expected).filter(|(a, b)| a != b).count();
            *votes.entry(circuit.predict_class(&d)).or_default() += 1;
        }
        // the simulation's prediction for this row: its most frequent label
        // (ties to the smaller label), and how often it draws the FHE one
        let modal = votes
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(l, _)| *l);
        sim_modal_agree += usize::from(modal == Some(class));
        sim_expected_agree += votes.get(&class).copied().unwrap_or(0) as f64 / SIM_DRAWS as f64;
        if class == circuit.predict_class(&expected) {
            label_agree += 1;
        }
        if class == *label {
            fhe_correct += 1;
        }
        log(format!(
            "  sample {}/{samples}: {:.0} ms, label {class} (true {label}), {}",
            i + 1,
            stats.seconds * 1e3,
            if got == expected {
                "matches clear"
            } else {
                "DIFFERS from clear"
            }
        ));
    }
    let (sim_mean, sim_sd) = mean_sd(&draw_totals);
    let z = if sim_sd > 0.0 {
        (changed as f64 - sim_mean) / sim_sd
    } else if changed as f64 == sim_mean {
        0.0
    } else {
        f64::INFINITY
    };
    let pbs = circuit.pbs_per_inference();
    let ks = circuit.ks_per_inference();
    let floor_ms = (pbs as f64 * pbs_s + ks as f64 * ks_s) * 1e3 / threads as f64;
    // the same floor with each layer's bootstraps at the batched unit cost
    let batched_floor_ms = circuit
        .layers
        .iter()
        .map(|l| {
            let per_thread = l.out_len.div_ceil(threads);
            let unit = if per_thread > 1 { pbs_batched_s } else { pbs_s };
            per_thread as f64 * unit
                + if l.keyswitch {
                    per_thread as f64 * ks_s
                } else {
                    0.0
                }
        })
        .sum::<f64>()
        * 1e3;
    let lat_min = lat.iter().copied().fold(f64::INFINITY, f64::min);
    let lat_med = median(&mut lat);
    let s = samples.max(1) as f64;
    Ok(BenchReport {
        model: bundle.name.clone(),
        params: circuit.params.name().to_string(),
        params_short: circuit.params.short_name().to_string(),
        rounding_bits: circuit.quant_config.rounding_bits,
        layer_rounding_bits: circuit.quant_config.stage_rounding_bits.clone(),
        clip_ranges: circuit.quant_config.clip_ranges,
        margin: circuit.quant_config.margin,
        precision_bits: circuit.precision_bits,
        input_bits: circuit.input.bits,
        activation_bits: circuit.quant_config.activation_bits,
        output_bits: circuit.output_bits,
        test_samples: n,
        fhe_samples: samples,
        float_accuracy: fc as f64 / n as f64,
        quantized_accuracy: qc as f64 / n as f64,
        float_agreement: fid.agreement,
        float_kl: fid.kl,
        fhe_accuracy: fhe_correct as f64 / s,
        fhe_clear_agreement: agree as f64 / s,
        fhe_clear_label_agreement: label_agree as f64 / s,
        fhe_simulated_label_agreement: sim_agree as f64 / s,
        fhe_simulated_modal_label_agreement: sim_modal_agree as f64 / s,
        fhe_simulated_label_probability: sim_expected_agree / s,
        simulated_accuracy: sim_correct as f64 / n as f64,
        acc_shift: circuit.layers.iter().map(|l| l.acc_shift).collect(),
        predicted_flips_per_inference: circuit.report.flips_per_inference,
        fhe_outputs_changed_per_inference: changed as f64 / s,
        simulated_outputs_changed_per_inference: sim_changed as f64 / n.max(1) as f64,
        simulated_outputs_changed_on_fhe_rows: sim_mean / s,
        simulated_outputs_changed_sd_on_fhe_rows: sim_sd / s,
        fhe_outputs_changed_z: z,
        fhe_outputs_changed_within_tolerance: samples > 0 && z.abs() <= 3.0,
        simulated_float_agreement: sim_fid.agreement,
        float_logit_error: fid.logit_error,
        selection: circuit.report.selection.clone(),
        pbs_per_inference: pbs,
        ks_per_inference: ks,
        worker_threads: threads,
        latency_ms_median: lat_med,
        latency_ms_min: if lat_min.is_finite() { lat_min } else { 0.0 },
        ks_ms: ks_s * 1e3,
        pbs_ms: pbs_s * 1e3,
        pbs_floor_ms: floor_ms,
        efficiency: if lat_med > 0.0 {
            floor_ms / lat_med
        } else {
            0.0
        },
        pbs_batched_ms: pbs_batched_s * 1e3,
        pbs_batch: batch,
        batched_floor_ms,
        batched_efficiency: if lat_med > 0.0 {
            batched_floor_ms / lat_med
        } else {
            0.0
        },
        plaintext_latency_us: median(&mut float_us),
        quantized_clear_latency_us: median(&mut clear_us),
        keygen_ms,
        key_decompress_ms,
        eval_key_bytes: ek_bytes.len(),
        server_key_bytes: ek.memory_bytes(),
        ciphertext_in_bytes: in_bytes,
        ciphertext_out_bytes: out_bytes,
        encrypt_ms_median: median(&mut enc_ms),
        decrypt_ms_median: median(&mut dec_ms),
        predicted_p_error: circuit.report.p_fail_inference,
        predicted_p_error_worst: circuit.report.p_fail_inference_worst,
    })
}

impl BenchReport {
    /// The human-readable table.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "model {}  ({}, {}-bit window, {}-bit inputs, {}-bit activations, {}-bit outputs)",
            self.model,
            self.params,
            self.precision_bits,
            self.input_bits,
            self.activation_bits,
            self.output_bits
        );
        let _ = writeln!(
            s,
            "{:<22} {:>10} {:>16} {:>14}",
            "", "accuracy", "latency", "samples"
        );
        let _ = writeln!(
            s,
            "{:<22} {:>10.4} {:>13.1} µs {:>14}",
            "float plaintext", self.float_accuracy, self.plaintext_latency_us, self.test_samples
        );
        let _ = writeln!(
            s,
            "{:<22} {:>10.4} {:>13.1} µs {:>14}",
            "quantized clear",
            self.quantized_accuracy,
            self.quantized_clear_latency_us,
            self.test_samples
        );
        let _ = writeln!(
            s,
            "{:<22} {:>10.4} {:>13.1} ms {:>14}",
            "encrypted (FHE)", self.fhe_accuracy, self.latency_ms_median, self.fhe_samples
        );
        let _ = writeln!(
            s,
            "\nquantized vs float: {:.3} of test predictions agree ({:.3} simulating the noise), mean KL {:.4}, relative logit error {:.4}",
            self.float_agreement, self.simulated_float_agreement, self.float_kl, self.float_logit_error
        );
        let _ = writeln!(
            s,
            "clear path simulating the encrypted noise: accuracy {:.4}; FHE labels equal to one simulated draw: {:.3}, to the simulation's modal label: {:.3} (a draw gives the FHE label with probability {:.3})",
            self.simulated_accuracy,
            self.fhe_simulated_label_agreement,
            self.fhe_simulated_modal_label_agreement,
            self.fhe_simulated_label_probability
        );
        if self.acc_shift.iter().any(|k| *k > 0) {
            let _ = writeln!(
                s,
                "approximate rounding (accumulator shift {:?}): {:.3} rounding flips per inference predicted; outputs per inference that differ from the exact clear path: {:.3} simulated (all test rows), {:.3} ± {:.3} simulated on the encrypted rows, {:.3} decrypted (z = {:.2}, {})",
                self.acc_shift,
                self.predicted_flips_per_inference,
                self.simulated_outputs_changed_per_inference,
                self.simulated_outputs_changed_on_fhe_rows,
                self.simulated_outputs_changed_sd_on_fhe_rows,
                self.fhe_outputs_changed_per_inference,
                self.fhe_outputs_changed_z,
                if self.fhe_outputs_changed_within_tolerance {
                    "within ± 3 sd"
                } else {
                    "OUTSIDE ± 3 sd"
                }
            );
        }
        let _ = writeln!(
            s,
            "FHE = clear: {:.3} of outputs bit-exact, {:.3} of labels; predicted p_error {:.2e} per inference",
            self.fhe_clear_agreement, self.fhe_clear_label_agreement, self.predicted_p_error
        );
        let _ = writeln!(
            s,
            "{} PBS + {} KS per inference; one PBS {:.2} ms, one KS {:.2} ms; floor {:.1} ms on {} threads; efficiency {:.2}",
            self.pbs_per_inference,
            self.ks_per_inference,
            self.pbs_ms,
            self.ks_ms,
            self.pbs_floor_ms,
            self.worker_threads,
            self.efficiency
        );
        let _ = writeln!(
            s,
            "batched: {:.2} ms per PBS in batches of {}; batched floor {:.1} ms; parallel efficiency {:.2}",
            self.pbs_batched_ms, self.pbs_batch, self.batched_floor_ms, self.batched_efficiency
        );
        let _ = writeln!(
            s,
            "keygen {:.0} ms; evaluation key {:.1} MB compressed, {:.3} GB in the server's memory; ciphertexts {} B in, {} B out; encrypt {:.2} ms, decrypt {:.2} ms",
            self.keygen_ms,
            self.eval_key_bytes as f64 / 1e6,
            self.server_key_bytes as f64 / 1e9,
            self.ciphertext_in_bytes,
            self.ciphertext_out_bytes,
            self.encrypt_ms_median,
            self.decrypt_ms_median
        );
        s
    }
}

/// One row of `blindfold cost-model`.
#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    pub set: String,
    pub name: String,
    pub polynomial_size: usize,
    /// Measured: one keyswitch + one bootstrap, one thread, mean of `reps`.
    pub ks_pbs_ms: f64,
    pub ks_ms: f64,
    pub pbs_ms: f64,
    /// What `--params auto` assumes (`select::unit_cost_ms`).
    pub assumed_ms: f64,
    pub eval_key_bytes: usize,
    /// The decompressed evaluation key in the server's memory.
    pub server_key_bytes: usize,
}

/// Times one keyswitch and one bootstrap on every vetted set, cheapest
/// (by the built-in cost model) first.
pub fn cost_model(reps: usize, log: &mut dyn FnMut(String)) -> Result<Vec<CostRow>, anyhow::Error> {
    use blindfold_compiler::select::{sets_by_cost, unit_cost_ms};
    let mut rows = Vec::new();
    for ps in sets_by_cost() {
        log(format!("{}: generating keys…", ps.name()));
        let ck = ClientKey::generate(ps);
        let cek = ck.evaluation_key();
        let eval_key_bytes = cek.to_bytes()?.len();
        let ek = cek.decompress();
        let (ks, pbs) = time_primitives(&ek, reps);
        log(format!(
            "{}: KS {:.2} ms + PBS {:.2} ms",
            ps.short_name(),
            ks * 1e3,
            pbs * 1e3
        ));
        rows.push(CostRow {
            set: ps.short_name().to_string(),
            name: ps.name().to_string(),
            polynomial_size: ps.polynomial_size(),
            ks_pbs_ms: (ks + pbs) * 1e3,
            ks_ms: ks * 1e3,
            pbs_ms: pbs * 1e3,
            assumed_ms: unit_cost_ms(ps),
            eval_key_bytes,
            server_key_bytes: ek.memory_bytes(),
        });
    }
    Ok(rows)
}
