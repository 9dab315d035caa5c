//! The answer protocol: one query in, one policy-shaped answer out, the
//! same steps for encrypted and clear queries, for the server's handlers,
//! the attack lab's local oracle and the benchmarks alike.
//!
//! 1. fresh noise for every class from the caller's generator (the server
//!    passes a CSPRNG seeded from the OS; tests and audits a seeded one);
//! 2. the model's program with the tables that noise rewrites
//!    ([`Hardened::tables`]);
//! 3. the clear or the FHE interpreter on the query, cancellable;
//! 4. the answer: ciphertexts the client decrypts, or the decoded values.

use std::sync::OnceLock;

use rand_core::RngCore;
use serde::Serialize;

use crate::ciphertext::{EncryptedInput, EncryptedOutput};
use crate::circuit::{ClientSpec, OutputKind};
use crate::eval::fhe::{Fhe, FheTables};
use crate::eval::{Cancel, EvalStats};
use crate::harden::Hardened;
use crate::keys::EvaluationKey;
use crate::program::TableSet;
use crate::Result;

/// A decoded answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    /// The best class (the argmax of the scores for score answers).
    pub label: usize,
    /// Best classes, best first (label modes), or just the argmax.
    pub labels: Vec<usize>,
    /// Decoded logits (score modes only; empty for label modes).
    pub scores: Vec<f64>,
}

impl Answer {
    /// Decodes output integers (modulo `2^(output_bits+1)`).
    pub fn decode(spec: &ClientSpec, out: &[i64]) -> Self {
        match spec.output {
            OutputKind::Logits => {
                let scores = spec.decode_output(out);
                let label = crate::data::argmax(&scores);
                Self {
                    label,
                    labels: vec![label],
                    scores,
                }
            }
            OutputKind::Labels { .. } => {
                let modulus = 1i64 << (spec.output_bits + 1);
                let labels: Vec<usize> =
                    out.iter().map(|v| v.rem_euclid(modulus) as usize).collect();
                Self {
                    label: labels.first().copied().unwrap_or(0),
                    labels,
                    scores: Vec::new(),
                }
            }
        }
    }
}

/// A query: quantized features in the clear, or the client's encrypted
/// input with its evaluation key.
#[derive(Clone, Copy)]
pub enum Query<'a> {
    Clear(&'a [i64]),
    Encrypted {
        input: &'a EncryptedInput,
        key: &'a EvaluationKey,
    },
}

/// What a query gets back.
pub enum Reply {
    /// The decrypted-equivalent values (modulo `2^(output_bits+1)`) and
    /// their decoding.
    Clear { values: Vec<i64>, answer: Answer },
    /// Ciphertexts only the client can decrypt.
    Encrypted(EncryptedOutput),
}

/// A served model ready to answer: the model (members, policy, program)
/// and, built on first encrypted use and shared by every key, its
/// bootstrap tables as GLWE accumulators.
pub struct Responder {
    model: Hardened,
    spec: ClientSpec,
    fhe_tables: OnceLock<FheTables>,
}

impl Responder {
    pub fn new(model: Hardened) -> Self {
        Self {
            spec: model.client_spec(),
            model,
            fhe_tables: OnceLock::new(),
        }
    }

    pub fn model(&self) -> &Hardened {
        &self.model
    }

    /// The client's view of the model under its policy.
    pub fn spec(&self) -> &ClientSpec {
        &self.spec
    }

    /// The program's bootstrap tables (built now if not yet).
    pub fn fhe_tables(&self) -> &FheTables {
        self.fhe_tables
            .get_or_init(|| FheTables::new(self.model.program()))
    }

    /// The tables one answer uses: fresh noise from `rng`.
    pub fn draw(&self, rng: &mut dyn RngCore) -> TableSet {
        let noise = self.model.policy.noise.sample(self.model.noise_len(), rng);
        self.model.tables(&noise)
    }

    /// Answers one query under the model's policy, with fresh noise from
    /// `rng`; gives up with [`crate::Error::Cancelled`] once `cancel()`
    /// turns true.
    pub fn answer(
        &self,
        query: Query<'_>,
        rng: &mut dyn RngCore,
        cancel: Cancel<'_>,
    ) -> Result<(Reply, EvalStats)> {
        let tables = self.draw(rng);
        self.answer_with(query, &tables, cancel)
    }

    /// [`Self::answer`] with the tables drawn beforehand (to run one noise
    /// draw on both paths).
    pub fn answer_with(
        &self,
        query: Query<'_>,
        tables: &TableSet,
        cancel: Cancel<'_>,
    ) -> Result<(Reply, EvalStats)> {
        let program = self.model.program();
        match query {
            Query::Clear(q) => {
                let start = std::time::Instant::now();
                self.model.check_input(q)?;
                let (values, mut stats) = crate::eval::clear::run_on(
                    &crate::eval::clear::Clear::new(),
                    program,
                    tables,
                    q,
                )?;
                stats.seconds = start.elapsed().as_secs_f64();
                let answer = Answer::decode(&self.spec, &values);
                Ok((Reply::Clear { values, answer }, stats))
            }
            Query::Encrypted { input, key } => {
                let backend = Fhe::new(key, self.fhe_tables())?;
                let (out, stats) =
                    crate::eval::fhe::evaluate(program, &backend, tables, input, cancel)?;
                Ok((Reply::Encrypted(out), stats))
            }
        }
    }
}
