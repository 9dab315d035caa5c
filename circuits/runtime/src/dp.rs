//! Rényi-DP accounting for PATE's GNMax aggregator (data-independent).
//!
//! Papernot et al. 2018 ("Scalable private learning with PATE"): one GNMax
//! answer adds Gaussian noise of standard deviation σ (in votes) to the
//! teachers' vote histogram. One training record lives in one teacher's
//! partition, so it can change that teacher's vote, which moves two counts
//! by 1: the L2 sensitivity is √2 and one answer is (λ, λ/σ²)-RDP for every
//! order λ > 1 (Mironov 2017, Gaussian mechanism: λΔ²/(2σ²)).
//!
//! RDP composes additively across answers at the same order, and every
//! answer's RDP is linear in λ, so a client's whole history is one number
//! `S = Σ_t 1/σ_t²` (the "RDP per order": RDP at order λ is λ·S). That is
//! what the server's ledger stores; ε is derived from it on demand for a
//! given δ (Mironov 2017, Prop. 3):
//!
//! ε(δ) = min_{λ>1} [λ·S + ln(1/δ)/(λ−1)] = S + 2·√(S·ln(1/δ)),
//!
//! reached at λ = 1 + √(ln(1/δ)/S); for S = 0, ε = 0.
//!
//! The analysis is data-independent: it does not use the teachers'
//! agreement (the data-dependent bound of the paper is tighter but itself
//! leaks, and needs smooth sensitivity to release).
//!
//! Invalid inputs fail closed: a function that cannot give a meaningful
//! answer returns the most conservative one (infinite privacy loss, zero
//! further answers), so a caller that forgot to validate never grants more
//! than it should. [`valid_sigma`] and [`valid_delta`] let callers validate
//! configuration up front and report it.

use serde::{Deserialize, Serialize};

/// Whether `sigma` is a usable GNMax noise scale: finite and > 0.
pub fn valid_sigma(sigma: f64) -> bool {
    sigma.is_finite() && sigma > 0.0
}

/// Whether `delta` is a usable δ for the (ε, δ) conversion: 0 < δ < 1.
pub fn valid_delta(delta: f64) -> bool {
    delta > 0.0 && delta < 1.0
}

/// Whether `s` is a usable accumulated RDP per order: finite and ≥ 0.
fn valid_rdp(s: f64) -> bool {
    s.is_finite() && s >= 0.0
}

/// RDP per order of one GNMax answer with noise of standard deviation
/// `sigma` votes: 1/σ² (one answer is (λ, λ/σ²)-RDP).
///
/// An invalid σ (≤ 0, NaN or infinite) gives `f64::INFINITY`: no noise, or
/// no meaningful noise, is charged as an unbounded privacy loss.
pub fn gnmax_rdp_per_order(sigma: f64) -> f64 {
    if valid_sigma(sigma) {
        1.0 / (sigma * sigma)
    } else {
        f64::INFINITY
    }
}

/// ε of the (ε, δ)-DP guarantee implied by an accumulated RDP per order `s`
/// (RDP λ·s at every order λ > 1): `s + 2·√(s·ln(1/δ))`, the minimum over
/// λ of Mironov's conversion `λ·s + ln(1/δ)/(λ−1)`.
///
/// Invalid input (s negative, NaN or infinite; δ outside (0, 1)) gives
/// `f64::INFINITY`, so a comparison against a limit refuses.
pub fn epsilon(s: f64, delta: f64) -> f64 {
    if !valid_rdp(s) || !valid_delta(delta) {
        return f64::INFINITY;
    }
    if s == 0.0 {
        return 0.0;
    }
    let log_inv_delta = -delta.ln();
    s + 2.0 * (s * log_inv_delta).sqrt()
}

/// How many more GNMax answers at noise `sigma` fit in the budget
/// `epsilon_limit` at `delta`, given `already_spent_s` RDP per order spent:
/// the largest `n` with `epsilon(already_spent_s + n/σ², delta) ≤
/// epsilon_limit` (checked with [`epsilon`] itself, so a ledger that
/// applies the same comparison grants exactly `n`).
///
/// Invalid input (σ, δ, a negative or NaN limit, a negative or non-finite
/// spend) gives 0; an infinite limit gives `u64::MAX`.
pub fn max_answers(sigma: f64, epsilon_limit: f64, delta: f64, already_spent_s: f64) -> u64 {
    if !valid_sigma(sigma)
        || !valid_delta(delta)
        || !valid_rdp(already_spent_s)
        || epsilon_limit.is_nan()
        || epsilon_limit < 0.0
    {
        return 0;
    }
    if epsilon_limit == f64::INFINITY {
        return u64::MAX;
    }
    let per_answer = gnmax_rdp_per_order(sigma);
    let fits = |n: u64| epsilon(already_spent_s + n as f64 * per_answer, delta) <= epsilon_limit;
    if !fits(0) {
        return 0;
    }
    if fits(u64::MAX) {
        return u64::MAX;
    }
    // `fits` is monotone in n (every step, u64→f64 included, is a monotone
    // rounding), so binary search finds the exact boundary in 64 steps,
    // without the precision trouble of inverting the closed form for n.
    let (mut lo, mut hi) = (0u64, u64::MAX); // fits(lo), !fits(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Privacy spent by one client on one model, as reported to it: the
/// accumulated RDP per order and the ε it implies at δ.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpent {
    /// `S = Σ 1/σ_t²`: RDP at order λ is λ·S.
    pub rdp_per_order: f64,
    /// [`epsilon`]`(rdp_per_order, delta)`.
    pub epsilon: f64,
    pub delta: f64,
}

impl PrivacySpent {
    /// The spend for accumulated RDP per order `rdp_per_order` at `delta`;
    /// `None` if `rdp_per_order` is negative or not finite, or `delta` is
    /// outside (0, 1).
    pub fn new(rdp_per_order: f64, delta: f64) -> Option<Self> {
        if !valid_rdp(rdp_per_order) || !valid_delta(delta) {
            return None;
        }
        Some(Self {
            rdp_per_order,
            epsilon: epsilon(rdp_per_order, delta),
            delta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mironov's conversion at one order, written out independently.
    fn conversion(lambda: f64, s: f64, delta: f64) -> f64 {
        lambda * s + (1.0 / delta).ln() / (lambda - 1.0)
    }

    /// Minimum of the conversion over λ > 1 by a coarse log-spaced grid
    /// followed by golden-section search in the bracket around the best
    /// grid point (the function is convex in λ on (1, ∞)).
    fn numeric_epsilon(s: f64, delta: f64) -> f64 {
        let f = |lambda: f64| conversion(lambda, s, delta);
        // λ − 1 from 1e-6 to 1e9, log-spaced.
        let steps = 3000;
        let point = |i: usize| 1.0 + 10f64.powf(-6.0 + 15.0 * i as f64 / steps as f64);
        let best = (0..=steps)
            .min_by(|&a, &b| f(point(a)).total_cmp(&f(point(b))))
            .expect("non-empty grid");
        let mut lo = point(best.saturating_sub(1));
        let mut hi = point((best + 1).min(steps));
        let golden = (5f64.sqrt() - 1.0) / 2.0;
        for _ in 0..200 {
            let a = hi - golden * (hi - lo);
            let b = lo + golden * (hi - lo);
            if f(a) < f(b) {
                hi = b;
            } else {
                lo = a;
            }
        }
        f((lo + hi) / 2.0)
    }

    #[test]
    fn closed_form_matches_numerical_minimum() {
        for &s in &[1e-6, 1e-4, 0.003, 0.02, 0.5, 1.0, 7.0, 100.0] {
            for &delta in &[1e-9, 1e-6, 1e-5, 1e-3, 0.1, 0.5] {
                let closed = epsilon(s, delta);
                let numeric = numeric_epsilon(s, delta);
                let rel = (closed - numeric).abs() / numeric;
                assert!(
                    rel < 1e-9,
                    "S={s} δ={delta}: closed {closed} numeric {numeric}"
                );
                // the numerical minimum can never beat the true minimum
                assert!(numeric >= closed * (1.0 - 1e-12));
            }
        }
    }

    #[test]
    fn zero_spend_is_zero_epsilon() {
        assert_eq!(epsilon(0.0, 1e-5), 0.0);
        let p = PrivacySpent::new(0.0, 1e-5).expect("valid");
        assert_eq!(p.epsilon, 0.0);
    }

    #[test]
    fn known_value() {
        // σ = 40, 1000 answers: S = 0.625; ln(1e5) = 11.5129...
        let s = 1000.0 * gnmax_rdp_per_order(40.0);
        assert!((s - 0.625).abs() < 1e-15);
        let expected = 0.625 + 2.0 * (0.625f64 * 100_000f64.ln()).sqrt();
        assert!((epsilon(s, 1e-5) - expected).abs() < 1e-12);
        assert!((epsilon(s, 1e-5) - 5.99).abs() < 0.01);
    }

    #[test]
    fn composition_is_additive() {
        for &sigma in &[1.0, 10.0, 40.0, 150.0] {
            for &k in &[1u32, 2, 10, 777] {
                let one = gnmax_rdp_per_order(sigma);
                let summed: f64 = (0..k).map(|_| one).sum();
                let direct = f64::from(k) / (sigma * sigma);
                assert!((summed - direct).abs() <= 1e-12 * direct);
                let eps_summed = epsilon(summed, 1e-6);
                let eps_direct = epsilon(direct, 1e-6);
                assert!((eps_summed - eps_direct).abs() <= 1e-12 * eps_direct);
            }
        }
        // more noise, less loss per answer
        assert!(gnmax_rdp_per_order(50.0) < gnmax_rdp_per_order(10.0));
    }

    #[test]
    fn monotone_in_spend_and_delta() {
        let mut last = -1.0;
        for i in 0..200 {
            let s = f64::from(i) * 0.05;
            let e = epsilon(s, 1e-5);
            assert!(e > last, "ε must grow with S");
            last = e;
        }
        let mut last = f64::INFINITY;
        for &delta in &[1e-12, 1e-9, 1e-6, 1e-3, 0.1, 0.9] {
            let e = epsilon(0.3, delta);
            assert!(e < last, "ε must shrink as δ grows");
            last = e;
        }
    }

    #[test]
    fn max_answers_agrees_with_epsilon() {
        for &sigma in &[5.0, 20.0, 40.0, 200.0] {
            for &limit in &[0.1, 1.0, 2.0, 8.0, 50.0] {
                for &delta in &[1e-8, 1e-5, 1e-2] {
                    for &already in &[0.0, 1e-3, 0.05] {
                        let n = max_answers(sigma, limit, delta, already);
                        let per = gnmax_rdp_per_order(sigma);
                        let at = |n: u64| epsilon(already + n as f64 * per, delta);
                        if epsilon(already, delta) > limit {
                            assert_eq!(n, 0);
                            continue;
                        }
                        assert!(at(n) <= limit, "σ={sigma} E={limit} δ={delta}: n={n}");
                        assert!(at(n + 1) > limit, "σ={sigma} E={limit} δ={delta}: n={n}");
                    }
                }
            }
        }
    }

    #[test]
    fn max_answers_edge_cases() {
        // already over budget
        assert_eq!(max_answers(10.0, 1.0, 1e-5, 10.0), 0);
        // zero budget admits nothing (one answer has ε > 0)
        assert_eq!(max_answers(10.0, 0.0, 1e-5, 0.0), 0);
        // unlimited
        assert_eq!(max_answers(10.0, f64::INFINITY, 1e-5, 0.0), u64::MAX);
        // invalid input fails closed
        assert_eq!(max_answers(0.0, 1.0, 1e-5, 0.0), 0);
        assert_eq!(max_answers(f64::NAN, 1.0, 1e-5, 0.0), 0);
        assert_eq!(max_answers(10.0, f64::NAN, 1e-5, 0.0), 0);
        assert_eq!(max_answers(10.0, -1.0, 1e-5, 0.0), 0);
        assert_eq!(max_answers(10.0, 1.0, 0.0, 0.0), 0);
        assert_eq!(max_answers(10.0, 1.0, 1.0, 0.0), 0);
        assert_eq!(max_answers(10.0, 1.0, 1e-5, -1.0), 0);
        assert_eq!(max_answers(10.0, 1.0, 1e-5, f64::NAN), 0);
        // enormous σ: many answers, no overflow or hang
        let n = max_answers(1e12, 1.0, 1e-5, 0.0);
        assert!(n > 1_000_000_000_000);
    }

    #[test]
    fn invalid_input_fails_closed() {
        for sigma in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!valid_sigma(sigma));
            assert_eq!(gnmax_rdp_per_order(sigma), f64::INFINITY);
        }
        for delta in [0.0, 1.0, -0.5, 2.0, f64::NAN] {
            assert!(!valid_delta(delta));
            assert_eq!(epsilon(0.1, delta), f64::INFINITY);
            assert!(PrivacySpent::new(0.1, delta).is_none());
        }
        for s in [-1e-9, f64::NAN, f64::INFINITY] {
            assert_eq!(epsilon(s, 1e-5), f64::INFINITY);
            assert!(PrivacySpent::new(s, 1e-5).is_none());
        }
        assert!(valid_sigma(1e-3) && valid_delta(1e-5));
    }

    #[test]
    fn privacy_spent_round_trips() {
        let p = PrivacySpent::new(0.25, 1e-6).expect("valid");
        assert_eq!(p.epsilon, epsilon(0.25, 1e-6));
        let json = serde_json::to_string(&p).expect("serialize");
        let back: PrivacySpent = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, p);
    }
}
