//! The failure model against real bootstraps.
//!
//! At a precision where failures are frequent (a 7-bit window on the 2_2
//! parameter set: σ ≈ 0.35 of a box), we run ≥ 1,000 real keyswitch +
//! bootstraps of an identity table on uniformly random inputs and compare
//! the counted failures with the prediction from tfhe-rs's noise formulas.
//! Tolerance: 5 binomial standard deviations (false alarm ≈ 6e-7).

use blindfold_runtime::eval::fhe::bootstrap_big_list;
use blindfold_runtime::keys::ClientKey;
use blindfold_runtime::params::ParamSet;
use blindfold_runtime::report::bootstrap_failure_probability;

#[test]
fn predicted_failure_rate_matches_measured() {
    check(ParamSet::Message2Carry2, 7);
}

/// The N = 4096 sets (Gaussian noise, tfhe-rs's Gaussian formulas) at a
/// window one bit wider than they are used with.
#[test]
fn predicted_failure_rate_matches_measured_on_the_4096_sets() {
    check(ParamSet::Message2Carry3, 8);
    check(ParamSet::Message3Carry2, 8);
}

fn check(params: ParamSet, precision: u32) {
    let window = 1i64 << precision;
    let table: Vec<i64> = (0..window).collect();
    let out_modulus = 2 * window;
    let noise = params.noise();
    // inputs are fresh big-key encryptions, then keyswitched: same path as a hidden layer
    let var = noise.fresh_big + noise.keyswitch + noise.modulus_switch;
    let sigma = var.sqrt() * 2f64.powi(precision as i32 + 1);
    let predicted: f64 = (0..window)
        .map(|m| bootstrap_failure_probability(&table, precision, m, sigma, out_modulus))
        .sum::<f64>()
        / window as f64;
    assert!(predicted > 0.05 && predicted < 0.5, "{predicted}");

    let ck = ClientKey::generate(params);
    let ek = ck.evaluation_key().decompress();
    let trials = 1200usize;
    // deterministic spread over the window: every value equally often
    let ms: Vec<i64> = (0..trials).map(|i| (i as i64 * 37) % window).collect();
    let delta = 1u64 << (63 - precision);
    let cts = ck.encrypt_big_raw(&ms.iter().map(|m| *m as u64 * delta).collect::<Vec<_>>());
    let out = bootstrap_big_list(&ek, precision, precision, &table, &cts).unwrap();
    let phases = ck.decrypt_big_raw(&out);
    let failures = ms
        .iter()
        .zip(&phases)
        .filter(|(m, ph)| {
            let got = (ph.wrapping_add(delta / 2) / delta) as i64 % out_modulus;
            got != **m
        })
        .count();
    let expected = predicted * trials as f64;
    let sd = (trials as f64 * predicted * (1.0 - predicted)).sqrt();
    eprintln!(
        "{}, precision {precision} bits, σ = {sigma:.3} boxes: predicted p_fail {predicted:.4} \
         ({expected:.1} of {trials}), measured {failures} ({:.4})",
        params.short_name(),
        failures as f64 / trials as f64
    );
    assert!(
        (failures as f64 - expected).abs() <= 5.0 * sd,
        "{}: measured {failures} failures, predicted {expected:.1} ± {sd:.1}",
        params.short_name()
    );
}
