//! The attack lab behind `blindfold audit`: the attacks of the founding
//! talk, run against a model through whatever its policy returns.
//!
//! Every attack talks to an [`Oracle`]: a batch of raw feature rows in, the
//! policy's answers out ([`Answer`]: label, top-k labels, or scores), with a
//! query counter. [`LocalOracle`] evaluates a [`Hardened`] model in the
//! clear in-process (tests, and what-if runs); the CLI's oracle calls a live
//! server's `PredictClear` (the identical policy, bit-exact with encrypted
//! answers) and repeats a sample through real encryption.
//!
//! Attacks live in their own modules and never see weights: only
//! `Oracle::query`.

pub mod adversarial;
pub mod discover;
pub mod extraction;
pub mod inversion;
pub mod learn;
pub mod memorization;
pub mod remote;
pub mod suite;

use blindfold_runtime::answer::{Answer, Query, Reply, Responder};
use blindfold_runtime::harden::Hardened;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// What went wrong while auditing.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The oracle refused (e.g. the budget ran out): attacks stop there and
    /// report how far they got.
    #[error("oracle refused after {queries} queries: {message}")]
    Refused { queries: u64, message: String },
    #[error(transparent)]
    Client(#[from] blindfold_client::ClientError),
    #[error(transparent)]
    Runtime(#[from] blindfold_runtime::Error),
    /// The judge models the lab loads (float graphs) failed.
    #[error(transparent)]
    Compiler(#[from] blindfold_compiler::Error),
    #[error("{0}")]
    Invalid(String),
}

/// A prediction API as an attacker sees it.
pub trait Oracle {
    /// Answers for raw feature rows (digits: 64 pixels in `0..=16`).
    fn query(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Answer>, AuditError>;
    /// Queries answered so far (one per row).
    fn queries(&self) -> u64;
    fn classes(&self) -> usize;
    fn input_len(&self) -> usize;
    /// The model's public input encoding (what `GetModel` tells every
    /// client), when the oracle knows it.
    fn input_spec(&self) -> Option<blindfold_runtime::circuit::InputSpec> {
        None
    }
}

/// A hardened model evaluated in the clear, with fresh noise per answer
/// from a seeded generator, and an optional answer budget.
pub struct LocalOracle {
    model: Responder,
    rng: ChaCha20Rng,
    queries: u64,
    budget: Option<u64>,
}

impl LocalOracle {
    pub fn new(model: Hardened, seed: u64, budget: Option<u64>) -> Self {
        Self {
            model: Responder::new(model),
            rng: ChaCha20Rng::seed_from_u64(seed),
            queries: 0,
            budget,
        }
    }

    pub fn model(&self) -> &Hardened {
        self.model.model()
    }
}

impl Oracle for LocalOracle {
    fn query(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Answer>, AuditError> {
        if let Some(b) = self.budget {
            if self.queries + rows.len() as u64 > b {
                return Err(AuditError::Refused {
                    queries: self.queries,
                    message: format!("answer budget exhausted: {} of {b} used", self.queries),
                });
            }
        }
        let spec = &self.model.spec().input;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let q = spec.quantize(r)?;
            // the answer protocol the server runs, in the clear
            match self.model.answer(
                Query::Clear(&q),
                &mut self.rng,
                &blindfold_runtime::eval::never,
            )? {
                (Reply::Clear { answer, .. }, _) => out.push(answer),
                (Reply::Encrypted(_), _) => {
                    return Err(AuditError::Invalid(
                        "a clear query was answered encrypted".into(),
                    ))
                }
            }
        }
        self.queries += rows.len() as u64;
        Ok(out)
    }

    fn queries(&self) -> u64 {
        self.queries
    }

    fn classes(&self) -> usize {
        self.model.spec().classes
    }

    fn input_len(&self) -> usize {
        self.model.spec().input.len()
    }

    fn input_spec(&self) -> Option<blindfold_runtime::circuit::InputSpec> {
        Some(self.model.spec().input.clone())
    }
}

/// The attacker's own randomness (seeded, so audits are reproducible).
pub struct Rng(ChaCha20Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(ChaCha20Rng::seed_from_u64(seed))
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        use rand_distr::Distribution;
        rand_distr::StandardNormal.sample(&mut self.0)
    }

    /// A uniformly random digits image: 64 pixels, integers in `0..=16`.
    pub fn digits_image(&mut self) -> Vec<f64> {
        (0..64).map(|_| self.below(17) as f64).collect()
    }
}
