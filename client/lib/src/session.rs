//! The whole client workflow in a few calls — keys made or reused for a
//! model, their upload, encrypted and clear predictions with their budget
//! and timing — shared by the CLI and the Python and Node.js packages so
//! that every language checks the same things the same way.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use blindfold_proto::v1;
use blindfold_runtime::circuit::ClientSpec;
use blindfold_runtime::keys::ClientKey;
use blindfold_runtime::params::ParamSet;

use crate::crypto::{self, Prediction};
use crate::error::ClientError;
use crate::keys::KeyDir;
use crate::remote::Remote;

/// Most rows one `predict` or `predict_clear` call takes.
pub const MAX_ROWS: usize = 4096;

/// Rows per request: calls with more rows are sent as several requests of
/// this many (the server's default `max_batch`).
pub const BATCH: usize = 16;

/// A key directory with its secret key loaded.
pub struct Keys {
    dir: KeyDir,
    client_key: ClientKey,
    key_id: String,
}

impl Keys {
    /// Loads the keys in `dir` (written by [`keygen`] or `blindfold keygen`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ClientError> {
        let dir = KeyDir::new(dir.as_ref());
        let client_key = dir.client_key()?;
        let key_id = dir.key_id()?;
        Ok(Self {
            dir,
            client_key,
            key_id,
        })
    }

    /// The id the server knows the evaluation key by (hex SHA-256).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn params(&self) -> ParamSet {
        self.client_key.params
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn client_key(&self) -> &ClientKey {
        &self.client_key
    }

    /// The compressed evaluation key, as `register` uploads it.
    pub fn evaluation_key(&self) -> Result<Vec<u8>, ClientError> {
        self.dir.evaluation_key()
    }

    /// A spec saved with these keys (for offline encryption).
    pub fn saved_spec(&self, model: &str) -> Result<Option<ClientSpec>, ClientError> {
        self.dir.spec(model)
    }

    /// Refuses a model whose parameter set is not the keys' own.
    pub fn check_model(&self, spec: &ClientSpec) -> Result<(), ClientError> {
        if self.client_key.params != spec.params {
            return Err(ClientError::Keys(format!(
                "the keys in {} are for {}, model {} needs {}; make keys for it in another directory",
                self.dir.path().display(),
                self.client_key.params.name(),
                spec.name,
                spec.params.name()
            )));
        }
        Ok(())
    }

    /// Quantizes and encrypts feature rows for `spec`: one `Predict` input
    /// per row.
    pub fn encrypt(
        &self,
        spec: &ClientSpec,
        rows: &[Vec<f64>],
    ) -> Result<Vec<Vec<u8>>, ClientError> {
        self.check_model(spec)?;
        check_rows(spec, rows)?;
        rows.iter()
            .map(|r| crypto::encrypt_row(&self.client_key, spec, r))
            .collect()
    }

    /// Checks and decrypts one answer for `spec`.
    pub fn decrypt(&self, spec: &ClientSpec, answer: &[u8]) -> Result<Prediction, ClientError> {
        self.check_model(spec)?;
        crypto::decrypt_output(&self.client_key, spec, answer)
    }
}

/// Rows must be non-empty, of the model's width, finite, and at most
/// [`MAX_ROWS`].
pub fn check_rows(spec: &ClientSpec, rows: &[Vec<f64>]) -> Result<(), ClientError> {
    if rows.is_empty() {
        return Err(ClientError::Input("no rows to predict".into()));
    }
    if rows.len() > MAX_ROWS {
        return Err(ClientError::Input(format!(
            "{} rows in one call; at most {MAX_ROWS}",
            rows.len()
        )));
    }
    let width = spec.input.len();
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
        return Err(ClientError::Input(format!(
            "row {i} has {} features, model {} takes {width}",
            r.len(),
            spec.name
        )));
    }
    if let Some(i) = rows.iter().position(|r| r.iter().any(|v| !v.is_finite())) {
        return Err(ClientError::Input(format!(
            "row {i}: features must be finite numbers"
        )));
    }
    Ok(())
}

/// What [`keygen`] did.
pub struct Keygen {
    pub keys: Keys,
    /// False when `dir` already held keys for the model's set (reused).
    pub generated: bool,
    pub evaluation_key_bytes: usize,
    pub seconds: f64,
}

/// Keys for `model` in `dir`: reused when `dir` already holds keys for the
/// model's parameter set, refused when it holds keys for another (unless
/// `overwrite`), generated otherwise. The model's spec is saved with them.
/// `stage` is told what is happening (the bootstrap key takes seconds).
pub async fn keygen(
    remote: &Remote,
    model: &str,
    dir: &Path,
    overwrite: bool,
    stage: &mut (dyn FnMut(&str) + Send),
) -> Result<Keygen, ClientError> {
    let (_, spec) = remote.get_model(model).await?;
    let key_dir = KeyDir::new(dir);
    let start = Instant::now();
    if key_dir.exists() && !overwrite {
        let params = key_dir.params()?;
        if params != spec.params {
            return Err(ClientError::Keys(format!(
                "{} holds keys for {}, model {model} needs {}; use another directory or overwrite",
                dir.display(),
                params.name(),
                spec.params.name()
            )));
        }
        key_dir.save_spec(&spec)?;
        let keys = Keys::load(dir)?;
        let evaluation_key_bytes = keys.evaluation_key()?.len();
        return Ok(Keygen {
            keys,
            generated: false,
            evaluation_key_bytes,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let (_, ek) = key_dir.generate(spec.params, overwrite, stage)?;
    key_dir.save_spec(&spec)?;
    Ok(Keygen {
        keys: Keys::load(dir)?,
        generated: true,
        evaluation_key_bytes: ek.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Uploads the keys' evaluation key; `progress(sent, total)` follows along.
pub async fn register(
    remote: &Remote,
    keys: &Keys,
    progress: Arc<dyn Fn(u64, u64) + Send + Sync>,
) -> Result<v1::RegisterKeyResponse, ClientError> {
    let ek = Arc::new(keys.evaluation_key()?);
    remote
        .register_key(ek, keys.params().name(), progress)
        .await
}

/// Timing of one call, client and server side.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timing {
    /// Server-side evaluation of the whole batch.
    pub server_evaluation_ms: f64,
    pub server_queue_ms: f64,
    pub bootstraps: u32,
    pub keyswitches: u32,
    /// Request sent to answer received.
    pub round_trip_ms: f64,
    pub encrypt_ms: f64,
    pub decrypt_ms: f64,
}

impl Timing {
    fn add(&mut self, o: &Timing) {
        self.server_evaluation_ms += o.server_evaluation_ms;
        self.server_queue_ms += o.server_queue_ms;
        self.bootstraps += o.bootstraps;
        self.keyswitches += o.keyswitches;
        self.round_trip_ms += o.round_trip_ms;
        self.encrypt_ms += o.encrypt_ms;
        self.decrypt_ms += o.decrypt_ms;
    }
}

/// Answers to one call: one prediction per row, in order, and the budget
/// left after it (requests of more than [`BATCH`] rows are sent in
/// batches; the timing is their sum).
pub struct Answers {
    pub predictions: Vec<Prediction>,
    pub budget: Option<v1::Budget>,
    pub timing: Timing,
}

impl Answers {
    fn empty(rows: usize) -> Self {
        Self {
            predictions: Vec::with_capacity(rows),
            budget: None,
            timing: Timing::default(),
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn server_timing(t: Option<v1::Timing>, round_trip_ms: f64) -> Timing {
    let t = t.unwrap_or_default();
    Timing {
        server_evaluation_ms: t.evaluation_ms,
        server_queue_ms: t.queue_ms,
        bootstraps: t.bootstraps,
        keyswitches: t.keyswitches,
        round_trip_ms,
        ..Timing::default()
    }
}

/// Encrypts `rows`, has `model` evaluate them under the registered `keys`,
/// and decrypts the answers. A missing key says how to register it.
pub async fn predict(
    remote: &Remote,
    model: &str,
    keys: &Keys,
    rows: &[Vec<f64>],
) -> Result<Answers, ClientError> {
    let (_, spec) = remote.get_model(model).await?;
    check_rows(&spec, rows)?;
    let mut all = Answers::empty(rows.len());
    for chunk in rows.chunks(BATCH) {
        let t = Instant::now();
        let inputs = keys.encrypt(&spec, chunk)?;
        all.timing.encrypt_ms += ms(t);
        let t = Instant::now();
        let response = remote
            .predict_with_spec(model, keys.key_id(), inputs, &spec)
            .await
            .map_err(|e| not_registered_hint(e, keys))?;
        all.timing.add(&server_timing(response.timing, ms(t)));
        let t = Instant::now();
        for b in &response.outputs {
            all.predictions.push(keys.decrypt(&spec, b)?);
        }
        all.timing.decrypt_ms += ms(t);
        all.budget = response.budget.or(all.budget);
    }
    Ok(all)
}

/// A `NOT_FOUND` for the key says where the keys to register are.
fn not_registered_hint(e: ClientError, keys: &Keys) -> ClientError {
    match e {
        ClientError::Rpc { method, status }
            if status.code() == tonic::Code::NotFound && status.message().contains("key") =>
        {
            let message = format!(
                "{} (register the keys in {} first)",
                status.message(),
                keys.path().display()
            );
            ClientError::Rpc {
                method,
                status: tonic::Status::with_metadata(
                    status.code(),
                    message,
                    status.metadata().clone(),
                ),
            }
        }
        e => e,
    }
}

/// The same model on plaintext rows (if its owner enabled it), answered
/// under the same policy.
pub async fn predict_clear(
    remote: &Remote,
    model: &str,
    rows: &[Vec<f64>],
) -> Result<Answers, ClientError> {
    let (_, spec) = remote.get_model(model).await?;
    check_rows(&spec, rows)?;
    let mut all = Answers::empty(rows.len());
    for chunk in rows.chunks(BATCH) {
        let t = Instant::now();
        let response = remote.predict_clear(model, chunk.to_vec()).await?;
        all.timing.add(&server_timing(response.timing, ms(t)));
        all.predictions
            .extend(response.predictions.into_iter().map(|p| Prediction {
                label: p.label as usize,
                labels: p.labels.into_iter().map(|l| l as usize).collect(),
                logits: p.logits,
                raw: Vec::new(),
            }));
        all.budget = response.budget.or(all.budget);
    }
    Ok(all)
}

/// A model's policy in plain words, as the language bindings show it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PolicyInfo {
    /// "raw", "scores", "label" or "top_k".
    pub output: &'static str,
    pub top_k: u32,
    pub scores_bits: u32,
    /// "none", "gaussian" or "laplace".
    pub noise: &'static str,
    pub noise_scale: f64,
    pub clamp_inputs: bool,
    pub members: u32,
    /// "logits" or "votes".
    pub aggregate: &'static str,
    pub answers_limit: Option<u64>,
    pub epsilon_limit: Option<f64>,
    pub delta: Option<f64>,
    /// Bootstraps of the input clamp and of the hardening stage per answer.
    pub clamp_bootstraps: u32,
    pub stage_bootstraps: u32,
}

impl PolicyInfo {
    pub fn from_proto(p: Option<&v1::Policy>) -> Self {
        let p = p.cloned().unwrap_or_default();
        let output = match v1::OutputMode::try_from(p.output) {
            Ok(v1::OutputMode::Scores) => "scores",
            Ok(v1::OutputMode::Label) => "label",
            Ok(v1::OutputMode::TopK) => "top_k",
            _ => "raw",
        };
        let noise = match v1::NoiseKind::try_from(p.noise) {
            Ok(v1::NoiseKind::Gaussian) => "gaussian",
            Ok(v1::NoiseKind::Laplace) => "laplace",
            _ => "none",
        };
        let aggregate = match v1::Aggregate::try_from(p.aggregate) {
            Ok(v1::Aggregate::Votes) => "votes",
            _ => "logits",
        };
        let budget = p.budget.unwrap_or_default();
        Self {
            output,
            top_k: p.top_k,
            scores_bits: p.scores_bits,
            noise,
            noise_scale: p.noise_scale,
            clamp_inputs: p.clamp_inputs,
            members: p.members.max(1),
            aggregate,
            answers_limit: budget.answers,
            epsilon_limit: budget.epsilon,
            delta: budget.delta,
            clamp_bootstraps: p.clamp_bootstraps,
            stage_bootstraps: p.stage_bootstraps,
        }
    }
}

/// The short name of a parameter set's tfhe-rs name ("2_2"…), or the name
/// itself if this client does not know it.
pub fn short_set_name(name: &str) -> String {
    ParamSet::from_name(name)
        .map(|p| p.short_name().to_string())
        .unwrap_or_else(|| name.to_string())
}

/// Hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
