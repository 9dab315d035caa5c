//! The served models: compiled circuits loaded from the config, and their
//! client specs as the proto describes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use blindfold_circuits::compile::Circuit;
use blindfold_circuits::data::Preprocessing;
use blindfold_circuits::eval::fhe::LookupTables;
use blindfold_proto::v1;
use sha2::{Digest, Sha256};

use crate::config::ModelEntry;
use crate::error::ServerError;

pub struct Model {
    pub name: String,
    pub description: String,
    pub predict_clear: bool,
    pub circuit: Arc<Circuit>,
    /// The circuit's bootstrap tables, built once at load.
    pub tables: Arc<LookupTables>,
    pub sha256: [u8; 32],
}

impl Model {
    pub fn load(entry: &ModelEntry) -> Result<Self, ServerError> {
        let err = |source| ServerError::Model {
            name: entry.name.clone(),
            source: Box::new(source),
        };
        let text =
            blindfold_circuits::data::read_limited(&entry.circuit, 256 << 20).map_err(err)?;
        let circuit = Circuit::from_json(&text).map_err(err)?;
        Ok(Self {
            name: entry.name.clone(),
            description: entry.description.clone(),
            predict_clear: entry.predict_clear,
            sha256: Sha256::digest(text.as_bytes()).into(),
            tables: Arc::new(LookupTables::new(&circuit)),
            circuit: Arc::new(circuit),
        })
    }

    pub fn summary(&self) -> v1::ModelSummary {
        let c = &self.circuit;
        v1::ModelSummary {
            name: self.name.clone(),
            description: self.description.clone(),
            parameter_set: c.params.name().to_string(),
            classes: c.classes as u32,
            bootstraps_per_inference: c.pbs_per_inference() as u32,
            predict_clear_enabled: self.predict_clear,
        }
    }

    /// Everything a client needs, nothing it must not see (no weights, no
    /// tables).
    pub fn spec(&self) -> v1::ModelSpec {
        let c = &self.circuit;
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
            }),
            bootstraps_per_inference: c.pbs_per_inference() as u32,
            keyswitches_per_inference: c.ks_per_inference() as u32,
            predicted_p_error: c.report.p_fail_inference_worst,
            circuit_sha256: self.sha256.to_vec(),
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
            tracing::info!(
                model = %m.name,
                params = m.circuit.params.short_name(),
                bootstraps = m.circuit.pbs_per_inference(),
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
