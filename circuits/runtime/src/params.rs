//! The vetted tfhe-rs parameter sets a circuit may use, and the noise each
//! step adds, from tfhe-rs's own noise formulas.
//!
//! Security parameters (dimensions, noise distributions, decomposition bases
//! and levels) are taken verbatim from tfhe-rs; only the plaintext encoding
//! (how many accumulator values share the torus) is ours.

use serde::{Deserialize, Serialize};
use tfhe::core_crypto::commons::noise_formulas::centered_mean_shifted_modulus_switch::centered_binary_shifted_modulus_switch_additive_variance;
use tfhe::core_crypto::commons::noise_formulas::lwe_keyswitch::{
    keyswitch_additive_variance_132_bits_security_gaussian,
    keyswitch_additive_variance_132_bits_security_tuniform,
};
use tfhe::core_crypto::commons::noise_formulas::lwe_programmable_bootstrap::{
    pbs_variance_132_bits_security_gaussian_fft_mul,
    pbs_variance_132_bits_security_tuniform_fft_mul,
};
use tfhe::core_crypto::prelude::{DynamicDistribution, LweDimension};
use tfhe::shortint::parameters::v1_4::{
    V1_4_PARAM_MESSAGE_2_CARRY_3_KS_PBS_GAUSSIAN_2M128,
    V1_4_PARAM_MESSAGE_3_CARRY_2_KS_PBS_GAUSSIAN_2M128,
};
use tfhe::shortint::parameters::v1_8::{
    V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
    V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128,
};
use tfhe::shortint::parameters::{ClassicPBSParameters, ModulusSwitchType};
use tfhe_versionable::{Versionize, VersionsDispatch};

/// A vetted tfhe-rs 1.8 parameter set, by its tfhe-rs name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Versionize)]
#[versionize(ParamSetVersions)]
pub enum ParamSet {
    /// `V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128`: N = 2048, n = 918.
    #[serde(rename = "V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128")]
    Message2Carry2,
    /// `V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128`: N = 8192, n = 1077.
    #[serde(rename = "V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128")]
    Message3Carry3,
    /// `V1_4_PARAM_MESSAGE_2_CARRY_3_KS_PBS_GAUSSIAN_2M128`: N = 4096,
    /// n = 930, two PBS levels (low bootstrap output noise). tfhe-rs's
    /// `1_4` set has the same cryptographic parameters.
    #[serde(rename = "V1_4_PARAM_MESSAGE_2_CARRY_3_KS_PBS_GAUSSIAN_2M128")]
    Message2Carry3,
    /// `V1_4_PARAM_MESSAGE_3_CARRY_2_KS_PBS_GAUSSIAN_2M128`: N = 4096,
    /// n = 928, one PBS level (cheaper, noisier outputs).
    #[serde(rename = "V1_4_PARAM_MESSAGE_3_CARRY_2_KS_PBS_GAUSSIAN_2M128")]
    Message3Carry2,
}

/// Every version of [`ParamSet`] ever serialized (see [`crate::serial`]).
#[derive(VersionsDispatch)]
pub enum ParamSetVersions {
    V0(ParamSet),
}

impl ParamSet {
    pub const ALL: [ParamSet; 4] = [
        ParamSet::Message2Carry2,
        ParamSet::Message3Carry3,
        ParamSet::Message2Carry3,
        ParamSet::Message3Carry2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ParamSet::Message2Carry2 => "V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128",
            ParamSet::Message3Carry3 => "V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128",
            ParamSet::Message2Carry3 => "V1_4_PARAM_MESSAGE_2_CARRY_3_KS_PBS_GAUSSIAN_2M128",
            ParamSet::Message3Carry2 => "V1_4_PARAM_MESSAGE_3_CARRY_2_KS_PBS_GAUSSIAN_2M128",
        }
    }

    pub fn short_name(self) -> &'static str {
        match self {
            ParamSet::Message2Carry2 => "2_2",
            ParamSet::Message3Carry3 => "3_3",
            ParamSet::Message2Carry3 => "2_3",
            ParamSet::Message3Carry2 => "3_2",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s) || p.short_name() == s)
    }

    /// The tfhe-rs parameters, untouched.
    pub fn tfhe(self) -> ClassicPBSParameters {
        let p = match self {
            ParamSet::Message2Carry2 => V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
            ParamSet::Message3Carry3 => V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128,
            ParamSet::Message2Carry3 => V1_4_PARAM_MESSAGE_2_CARRY_3_KS_PBS_GAUSSIAN_2M128,
            ParamSet::Message3Carry2 => V1_4_PARAM_MESSAGE_3_CARRY_2_KS_PBS_GAUSSIAN_2M128,
        };
        debug_assert!(matches!(
            p.modulus_switch_noise_reduction_params,
            ModulusSwitchType::CenteredMeanNoiseReduction
        ));
        p
    }

    pub fn polynomial_size(self) -> usize {
        self.tfhe().polynomial_size.0
    }

    pub fn small_lwe_dimension(self) -> usize {
        self.tfhe().lwe_dimension.0
    }

    pub fn big_lwe_dimension(self) -> usize {
        let p = self.tfhe();
        p.glwe_dimension.0 * p.polynomial_size.0
    }

    /// Bytes a decompressed evaluation key of this set occupies: the
    /// Fourier bootstrap key (`n·(k+1)²·ℓ_pbs` polynomials of `N/2` complex
    /// `f64`) and the keyswitch key (`k·N·ℓ_ks` ciphertexts of `n+1` `u64`).
    /// Equal to [`crate::keys::EvaluationKey::memory_bytes`], known before
    /// decompressing (for admission against a memory budget).
    pub fn evaluation_key_memory_bytes(self) -> usize {
        let p = self.tfhe();
        let (n, k, big_n) = (p.lwe_dimension.0, p.glwe_dimension.0, p.polynomial_size.0);
        let bsk = n * (k + 1) * (k + 1) * p.pbs_level.0 * (big_n / 2) * 16;
        let ksk = k * big_n * p.ks_level.0 * (n + 1) * 8;
        bsk + ksk
    }

    /// Bytes decompressing one key needs for a moment on top of the result:
    /// the standard-domain bootstrap key, before its Fourier conversion.
    pub fn key_decompression_transient_bytes(self) -> usize {
        let p = self.tfhe();
        let (n, k, big_n) = (p.lwe_dimension.0, p.glwe_dimension.0, p.polynomial_size.0);
        n * (k + 1) * (k + 1) * p.pbs_level.0 * big_n * 8
    }

    /// Largest output precision (bits, plus the padding bit) at which a
    /// bootstrap output decrypts correctly except with probability below
    /// about 2^-40 (half a step ≥ 7σ).
    pub fn max_output_bits(self) -> u32 {
        let sigma = self.noise().pbs_output.sqrt();
        // Δ/2 = 2^-(bits+2) ≥ 7σ
        let bits = (-(7.0 * sigma).log2()).floor() as i64 - 2;
        bits.clamp(1, 20) as u32
    }

    /// Noise variances (torus units, i.e. modulus normalised to 1) of each step.
    pub fn noise(self) -> NoiseModel {
        let p = self.tfhe();
        let q = 2f64.powi(64);
        let two_n = 2.0 * p.polynomial_size.0 as f64;
        let big = LweDimension(self.big_lwe_dimension());
        let fresh = |d: DynamicDistribution<u64>| match d {
            DynamicDistribution::TUniform(t) => t.variance(q).0,
            DynamicDistribution::Gaussian(g) => g.std * g.std,
        };
        let ms = centered_binary_shifted_modulus_switch_additive_variance(p.lwe_dimension, q, two_n)
            .0
            // the body is rounded too (uniform error of one 2N-th unit)
            + two_n.powi(-2) / 12.0;
        // tfhe-rs's formulas for the distribution each key was made with:
        // the keyswitch key under the small key's noise, the bootstrap key
        // under the GLWE key's
        let ks = match p.lwe_noise_distribution {
            DynamicDistribution::TUniform(_) => {
                keyswitch_additive_variance_132_bits_security_tuniform
            }
            DynamicDistribution::Gaussian(_) => {
                keyswitch_additive_variance_132_bits_security_gaussian
            }
        }(big, p.lwe_dimension, p.ks_base_log, p.ks_level, q, q)
        .0;
        let pbs = match p.glwe_noise_distribution {
            DynamicDistribution::TUniform(_) => pbs_variance_132_bits_security_tuniform_fft_mul,
            DynamicDistribution::Gaussian(_) => pbs_variance_132_bits_security_gaussian_fft_mul,
        }(
            p.lwe_dimension,
            p.glwe_dimension,
            p.polynomial_size,
            p.pbs_base_log,
            p.pbs_level,
            53.0,
            q,
        )
        .0;
        NoiseModel {
            fresh_small: fresh(p.lwe_noise_distribution),
            fresh_big: fresh(p.glwe_noise_distribution),
            keyswitch: ks,
            modulus_switch: ms,
            pbs_output: pbs,
        }
    }
}

/// Variances (torus units) added by each step of the KS–PBS pipeline.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct NoiseModel {
    /// A fresh encryption under the small LWE key (client inputs).
    pub fresh_small: f64,
    /// A fresh encryption under the big (GLWE-derived) key.
    pub fresh_big: f64,
    pub keyswitch: f64,
    /// Centered-mean modulus switch to 2N.
    pub modulus_switch: f64,
    /// Output of one programmable bootstrap.
    pub pbs_output: f64,
}

impl NoiseModel {
    /// Variance at the blind-rotation input for a dot product with squared
    /// 2-norm `norm2_sq`, whose inputs are fresh small-key encryptions
    /// (`first_layer`, no keyswitch) or bootstrap outputs (then keyswitched).
    pub fn before_blind_rotation(&self, norm2_sq: f64, first_layer: bool) -> f64 {
        if first_layer {
            norm2_sq * self.fresh_small + self.modulus_switch
        } else {
            norm2_sq * self.pbs_output + self.keyswitch + self.modulus_switch
        }
    }
}

/// Standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Complementary error function (`libm`'s, accurate far into the tail:
/// we need probabilities like 2^-60, not just 1 - small).
pub fn erfc(x: f64) -> f64 {
    libm::erfc(x)
}

/// Probability that Gaussian noise of standard deviation `sigma` (in
/// accumulator units) moves a value by exactly `d` units after rounding to
/// the nearest box.
pub fn shift_probability(d: i64, sigma: f64) -> f64 {
    if sigma <= 0.0 {
        return if d == 0 { 1.0 } else { 0.0 };
    }
    let hi = (d as f64 + 0.5) / sigma;
    let lo = (d as f64 - 0.5) / sigma;
    if d > 0 {
        // upper tail difference, computed from the tails to keep precision
        0.5 * (erfc(lo / std::f64::consts::SQRT_2) - erfc(hi / std::f64::consts::SQRT_2))
    } else if d < 0 {
        0.5 * (erfc(-hi / std::f64::consts::SQRT_2) - erfc(-lo / std::f64::consts::SQRT_2))
    } else {
        1.0 - erfc(0.5 / sigma / std::f64::consts::SQRT_2)
    }
}

/// Probability that Gaussian noise of standard deviation `sigma` (boxes)
/// moves an accumulator sitting `offset` boxes from its box's centre
/// (`-0.5 ≤ offset < 0.5`) into the box `d` away. `offset = 0` is
/// [`shift_probability`].
pub fn shift_probability_at(d: i64, sigma: f64, offset: f64) -> f64 {
    if offset == 0.0 {
        return shift_probability(d, sigma);
    }
    if sigma <= 0.0 {
        return if d == 0 { 1.0 } else { 0.0 };
    }
    let s2 = sigma * std::f64::consts::SQRT_2;
    // the box d away spans [d - 1/2, d + 1/2) around the start's box centre
    let hi = (d as f64 + 0.5 - offset) / s2;
    let lo = (d as f64 - 0.5 - offset) / s2;
    if lo >= 0.0 {
        0.5 * (erfc(lo) - erfc(hi))
    } else if hi <= 0.0 {
        0.5 * (erfc(-hi) - erfc(-lo))
    } else {
        1.0 - 0.5 * (erfc(hi) + erfc(-lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_probabilities_sum_to_one_and_favour_the_near_side() {
        for offset in [-0.5, -0.3, 0.0, 0.2, 0.49] {
            let total: f64 = (-20..=20)
                .map(|d| shift_probability_at(d, 0.3, offset))
                .sum();
            assert!((total - 1.0).abs() < 1e-9, "{offset}: {total}");
        }
        // near the upper boundary, one box up is likely, one down is not
        let up = shift_probability_at(1, 0.1, 0.45);
        let down = shift_probability_at(-1, 0.1, 0.45);
        assert!(up > 0.3 && down < 1e-12, "{up} {down}");
        // the centre agrees with the centred formula
        assert_eq!(shift_probability_at(1, 0.2, 0.0), shift_probability(1, 0.2));
    }

    #[test]
    fn erfc_matches_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
        assert!((erfc(3.0) / 2.209_049_7e-5 - 1.0).abs() < 1e-5);
        assert!((normal_cdf(-1.0) - 0.158_655_254).abs() < 1e-7);
        let total: f64 = (-20..=20).map(|d| shift_probability(d, 2.0)).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn noise_model_is_dominated_by_the_modulus_switch() {
        for ps in ParamSet::ALL {
            let n = ps.noise();
            assert!(n.modulus_switch > n.keyswitch, "{ps:?} {n:?}");
            assert!(n.modulus_switch > n.pbs_output, "{ps:?} {n:?}");
            assert_eq!(ParamSet::from_name(ps.name()), Some(ps));
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    /// The modulus switch, which sets the window a set supports, halves in
    /// standard deviation with each doubling of N; the two-level N = 4096
    /// set has a quieter bootstrap output than the one-level one.
    #[test]
    fn noise_follows_the_polynomial_size() {
        for ps in ParamSet::ALL {
            let n = ps.noise();
            eprintln!(
                "{} N={} σ_ms={:.3e} σ_ks={:.3e} σ_pbs={:.3e} σ_fresh={:.3e} max_output_bits={}",
                ps.short_name(),
                ps.polynomial_size(),
                n.modulus_switch.sqrt(),
                n.keyswitch.sqrt(),
                n.pbs_output.sqrt(),
                n.fresh_small.sqrt(),
                ps.max_output_bits()
            );
        }
        let ms = |p: ParamSet| p.noise().modulus_switch.sqrt();
        assert!(ms(ParamSet::Message2Carry2) > ms(ParamSet::Message2Carry3));
        assert!(ms(ParamSet::Message2Carry3) > ms(ParamSet::Message3Carry3));
        assert!(
            ParamSet::Message2Carry3.noise().pbs_output
                < ParamSet::Message3Carry2.noise().pbs_output
        );
    }
}
