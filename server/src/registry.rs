//! The served models: compiled circuits (one, or an ensemble) loaded from
//! the config with their owner's hardening policy and budget, and their
//! client specs as the proto describes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use blindfold_proto::v1;
use blindfold_runtime::answer::Responder;
use blindfold_runtime::circuit::{Circuit, OutputKind};
use blindfold_runtime::data::Preprocessing;
use blindfold_runtime::harden::{Aggregate, Hardened, NoiseKind, OutputMode, Policy};
use blindfold_runtime::program::Cost;
use sha2::{Digest, Sha256};

use crate::config::{ModelEntry, DEFAULT_DELTA};
use crate::error::ServerError;
use crate::ledger::Limits;

pub struct Model {
    pub name: String,
    pub description: String,
    pub predict_clear: bool,
    /// Members, policy, their program and its bootstrap tables (built
    /// once at load).
    pub responder: Arc<Responder>,
    /// Bootstraps and keyswitches per answer.
    pub cost: Cost,
    /// Predicted probability that an answer has a failed bootstrap.
    pub p_error: f64,
    pub budget: Limits,
    /// RDP (per order) one answer costs: `1/σ²` for PATE, else 0.
    pub rdp_per_answer: f64,
    pub sha256: [u8; 32],
    /// SHA-256 of each member's circuit file.
    pub member_sha256: Vec<[u8; 32]>,
}

impl Model {
    pub fn load(entry: &ModelEntry) -> Result<Self, ServerError> {
        let err = |source| ServerError::Model {
            name: entry.name.clone(),
            source: Box::new(source),
        };
        let policy = entry.policy.policy().map_err(err)?;
        let mut hasher = Sha256::new();
        let mut members = Vec::new();
        let mut member_sha256 = Vec::new();
        for path in entry.circuit_paths() {
            let text = blindfold_runtime::data::read_limited(&path, 256 << 20).map_err(err)?;
            let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            hasher.update(digest);
            member_sha256.push(digest);
            members.push(Circuit::from_json(&text).map_err(err)?);
        }
        hasher.update(serde_json::to_vec(&policy).unwrap_or_default());
        let hardened = Hardened::new(&entry.name, members, policy).map_err(err)?;
        let dp = policy.aggregate == Aggregate::Votes
            && policy.noise.kind == NoiseKind::Gaussian
            && hardened.members.len() > 1;
        let rdp_per_answer = if dp {
            blindfold_runtime::dp::gnmax_rdp_per_order(policy.noise.scale)
        } else {
            0.0
        };
        let budget = Limits {
            answers: entry.budget.answers,
            epsilon: entry
                .budget
                .epsilon
                .map(|e| (e, entry.budget.delta.unwrap_or(DEFAULT_DELTA))),
        };
        if let Some((eps, delta)) = budget.epsilon {
            if rdp_per_answer > 0.0
                && blindfold_runtime::dp::max_answers(policy.noise.scale, eps, delta, 0.0) == 0
            {
                return Err(err(blindfold_runtime::Error::Policy(format!(
                    "an epsilon budget of {eps} at delta {delta:e} admits no answer: one GNMax answer at sigma {} already costs epsilon {:.3}",
                    policy.noise.scale,
                    blindfold_runtime::dp::epsilon(rdp_per_answer, delta)
                ))));
            }
        }
        let cost = hardened.cost();
        let p_error = (hardened
            .members
            .iter()
            .map(|m| m.report.p_fail_inference_worst)
            .sum::<f64>()
            + hardened.stage_failure_probability())
        .min(1.0);
        let responder = Responder::new(hardened);
        // the accumulators of every table, once, shared by all keys
        responder.fhe_tables();
        Ok(Self {
            name: entry.name.clone(),
            description: entry.description.clone(),
            predict_clear: entry.predict_clear,
            sha256: hasher.finalize().into(),
            member_sha256,
            responder: Arc::new(responder),
            cost,
            p_error,
            budget,
            rdp_per_answer,
        })
    }

    /// Members and policy.
    pub fn hardened(&self) -> &Hardened {
        self.responder.model()
    }

    pub fn policy(&self) -> Policy {
        self.hardened().policy
    }

    pub fn policy_proto(&self) -> v1::Policy {
        let p = self.policy();
        let cost = self.cost;
        let (output, scores_bits, top_k) = match p.output {
            OutputMode::Raw => (v1::OutputMode::Raw, 0, 0),
            OutputMode::Scores { bits } => (v1::OutputMode::Scores, bits, 0),
            OutputMode::Label => (v1::OutputMode::Label, 0, 1),
            OutputMode::TopK { k } => (v1::OutputMode::TopK, 0, k as u32),
        };
        v1::Policy {
            output: output as i32,
            scores_bits,
            top_k,
            noise: match p.noise.kind {
                NoiseKind::None => v1::NoiseKind::None,
                NoiseKind::Gaussian => v1::NoiseKind::Gaussian,
                NoiseKind::Laplace => v1::NoiseKind::Laplace,
            } as i32,
            noise_scale: p.noise.scale,
            clamp_inputs: p.clamp_inputs,
            members: self.hardened().members.len() as u32,
            aggregate: match p.aggregate {
                Aggregate::Logits => v1::Aggregate::Logits,
                Aggregate::Votes => v1::Aggregate::Votes,
            } as i32,
            budget: Some(v1::BudgetLimits {
                answers: self.budget.answers,
                epsilon: self.budget.epsilon.map(|e| e.0),
                delta: self.budget.epsilon.map(|e| e.1),
            }),
            clamp_bootstraps: cost.input_clamp as u32,
            stage_bootstraps: cost.stage as u32,
            rdp_per_answer: self.rdp_per_answer,
        }
    }

    pub fn summary(&self) -> v1::ModelSummary {
        let h = self.hardened();
        v1::ModelSummary {
            name: self.name.clone(),
            description: self.description.clone(),
            parameter_set: h.params().name().to_string(),
            classes: h.classes() as u32,
            bootstraps_per_inference: self.cost.bootstraps() as u32,
            predict_clear_enabled: self.predict_clear,
            policy: Some(self.policy_proto()),
        }
    }

    /// Everything a client needs, nothing it must not see (no weights, no
    /// tables).
    pub fn spec(&self) -> v1::ModelSpec {
        let c = self.responder.spec();
        let cost = self.cost;
        let preprocessing = match &c.input.preprocessing {
            Preprocessing::None => v1::preprocessing::Kind::None(v1::NoPreprocessing {}),
            Preprocessing::Standardize { mean, std } => {
                v1::preprocessing::Kind::Standardize(v1::Standardize {
                    mean: mean.clone(),
                    std: std.clone(),
                })
            }
        };
        v1::ModelSpec {
            name: self.name.clone(),
            parameter_set: c.params.name().to_string(),
            precision_bits: c.precision_bits,
            input: Some(v1::InputSpec {
                shape: c.input.shape.iter().map(|d| *d as u32).collect(),
                bits: c.input.bits,
                scale: c.input.scale.clone(),
                zero_point: c.input.zero_point.clone(),
                preprocessing: Some(v1::Preprocessing {
                    kind: Some(preprocessing),
                }),
            }),
            output: Some(v1::OutputSpec {
                classes: c.classes as u32,
                bits: c.output_bits,
                scale: c.output_scale,
                zero_point: c.output_zero_point,
                kind: match c.output {
                    OutputKind::Logits => v1::OutputKind::Logits,
                    OutputKind::Labels { .. } => v1::OutputKind::Labels,
                } as i32,
                count: c.output_count() as u32,
            }),
            bootstraps_per_inference: cost.bootstraps() as u32,
            keyswitches_per_inference: cost.keyswitches as u32,
            predicted_p_error: self.p_error,
            circuit_sha256: self.sha256.to_vec(),
            member_sha256: self.member_sha256.iter().map(|h| h.to_vec()).collect(),
            policy: Some(self.policy_proto()),
        }
    }
}

pub struct Registry {
    models: BTreeMap<String, Arc<Model>>,
}

impl Registry {
    pub fn load(entries: &[ModelEntry]) -> Result<Self, ServerError> {
        let mut models = BTreeMap::new();
        for e in entries {
            let m = Model::load(e)?;
            let cost = m.cost;
            tracing::info!(
                model = %m.name,
                params = m.hardened().params().short_name(),
                members = m.hardened().members.len(),
                policy = %m.policy().output,
                noise = m.policy().noise.scale,
                bootstraps = cost.bootstraps(),
                predict_clear = m.predict_clear,
                "loaded model"
            );
            models.insert(e.name.clone(), Arc::new(m));
        }
        Ok(Self { models })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Model>> {
        self.models.get(name).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }
}
