//! The model owner's output policy: what an answer contains, the noise
//! added to the encrypted logits, the input clamp, how an ensemble's
//! members are combined, and the quantizers that put logits on the
//! bootstrap grid. [`crate::harden`] compiles a policy into program stages.

use serde::{Deserialize, Serialize};

/// What an answer contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum OutputMode {
    /// The requantized logits (for the owner's own testing).
    Raw,
    /// Logits truncated by bootstrap to `bits` bits over the calibrated range.
    Scores { bits: u32 },
    /// The argmax only.
    Label,
    /// The `k` best labels, best first.
    TopK { k: usize },
}

impl std::fmt::Display for OutputMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputMode::Raw => write!(f, "raw"),
            OutputMode::Scores { bits } => write!(f, "scores ({bits} bits)"),
            OutputMode::Label => write!(f, "label"),
            OutputMode::TopK { k } => write!(f, "top-{k}"),
        }
    }
}

/// An output mode's name, as configuration files spell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputName {
    Raw,
    Scores,
    #[default]
    Label,
    TopK,
}

impl OutputMode {
    /// The mode named `name` with its parameter (`scores_bits` for
    /// `scores`, `k` for `top_k`, neither for the others).
    pub fn from_parts(
        name: OutputName,
        scores_bits: Option<u32>,
        k: Option<usize>,
    ) -> crate::Result<Self> {
        let bad = |m: String| Err(crate::Error::Policy(m));
        match (name, scores_bits, k) {
            (OutputName::Raw, None, None) => Ok(OutputMode::Raw),
            (OutputName::Label, None, None) => Ok(OutputMode::Label),
            (OutputName::Scores, Some(bits), None) => Ok(OutputMode::Scores { bits }),
            (OutputName::Scores, None, _) => bad("output = \"scores\" needs scores_bits".into()),
            (OutputName::TopK, None, Some(k)) => Ok(OutputMode::TopK { k }),
            (OutputName::TopK, _, None) => bad("output = \"top_k\" needs k".into()),
            (other, _, _) => bad(format!(
                "scores_bits goes with output = \"scores\" and k with \"top_k\", not {other:?}"
            )),
        }
    }
}

/// Noise distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    #[default]
    None,
    /// `scale` is the standard deviation.
    Gaussian,
    /// `scale` is the Laplace scale `b` (standard deviation `b·√2`).
    Laplace,
}

/// Noise added per query to every class's logit (or vote count), in logit
/// units (votes for vote ensembles).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    pub kind: NoiseKind,
    pub scale: f64,
}

impl Noise {
    pub const NONE: Noise = Noise {
        kind: NoiseKind::None,
        scale: 0.0,
    };

    /// Noise of `kind` at `scale`: a positive finite scale unless `kind`
    /// is none (then the scale is ignored).
    pub fn new(kind: NoiseKind, scale: f64) -> crate::Result<Self> {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(crate::Error::Policy(
                "noise_scale must be a non-negative number".into(),
            ));
        }
        match kind {
            NoiseKind::None => Ok(Self::NONE),
            _ if scale == 0.0 => Err(crate::Error::Policy(format!(
                "noise = {kind:?} needs a positive noise_scale"
            ))),
            _ => Ok(Self { kind, scale }),
        }
    }

    pub fn is_none(&self) -> bool {
        self.kind == NoiseKind::None || self.scale == 0.0
    }

    /// One sample per class from `rng` (the server passes a CSPRNG).
    pub fn sample(&self, n: usize, rng: &mut dyn rand_core::RngCore) -> Vec<f64> {
        use rand_distr::{Distribution, Exp, StandardNormal};
        match self.kind {
            _ if self.is_none() => vec![0.0; n],
            NoiseKind::None => vec![0.0; n],
            NoiseKind::Gaussian => (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(rng);
                    self.scale * z
                })
                .collect(),
            // Laplace(b): an exponential of mean b with a random sign
            NoiseKind::Laplace => match Exp::new(1.0 / self.scale) {
                Ok(exp) => (0..n)
                    .map(|_| {
                        let e: f64 = exp.sample(rng);
                        if rng.next_u32() & 1 == 0 {
                            e
                        } else {
                            -e
                        }
                    })
                    .collect(),
                Err(_) => vec![0.0; n],
            },
        }
    }

    /// Standard deviation of one sample.
    pub fn std_dev(&self) -> f64 {
        match self.kind {
            _ if self.is_none() => 0.0,
            NoiseKind::None => 0.0,
            NoiseKind::Gaussian => self.scale,
            NoiseKind::Laplace => self.scale * std::f64::consts::SQRT_2,
        }
    }
}

/// How ensemble members are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Sum of the members' (requantized) logits.
    #[default]
    Logits,
    /// Sum of the members' one-hot votes (PATE).
    Votes,
}

/// The owner's policy for one served model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub output: OutputMode,
    pub noise: Noise,
    /// One bootstrap per encrypted input clamping it to its valid range.
    pub clamp_inputs: bool,
    pub aggregate: Aggregate,
}

impl Default for Policy {
    /// Label only, no noise, no clamp.
    fn default() -> Self {
        Self {
            output: OutputMode::Label,
            noise: Noise::NONE,
            clamp_inputs: false,
            aggregate: Aggregate::Logits,
        }
    }
}

/// Affine quantizer with clamping: `level = clamp(round(x/step) + zp, lo, hi)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantizer {
    pub step: f64,
    pub zero_point: i64,
    pub lo: i64,
    pub hi: i64,
}

impl Quantizer {
    /// Maps `[min, max]` onto levels `[lo, hi]`.
    pub(crate) fn over(min: f64, max: f64, lo: i64, hi: i64) -> Self {
        let span = (max - min).max(1e-9);
        let step = span / (hi - lo).max(1) as f64;
        Self {
            step,
            zero_point: lo - (min / step).round() as i64,
            lo,
            hi,
        }
    }

    pub fn level(&self, x: f64) -> i64 {
        let l = (x / self.step).round();
        if l.is_nan() {
            return self.lo;
        }
        (l.clamp(-1e15, 1e15) as i64 + self.zero_point).clamp(self.lo, self.hi)
    }

    pub fn value(&self, level: i64) -> f64 {
        self.step * (level - self.zero_point) as f64
    }
}
