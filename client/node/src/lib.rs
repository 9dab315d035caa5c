//! `blindfold.node`: the Blindfold client library for Node.js (napi). The
//! package's `index.js` wraps it (error classes, row conversion) and
//! `index.d.ts` types it. Every call returns a Promise; key generation,
//! encryption and decryption run off the JavaScript thread.
//!
//! Errors are rejected with a message `[Kind CODE] text` (`Kind` one of
//! the package's error classes, `CODE` the gRPC status name or `-`), which
//! `index.js` turns into instances of those classes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use blindfold_client::crypto::Prediction;
use blindfold_client::session::{self, Keys as SessionKeys, PolicyInfo};
use blindfold_client::{ClientError, ClientSpec, ConnectOptions, ErrorKind, Remote};
use blindfold_proto::v1;

fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::Connection => "ConnectionFailed",
        ErrorKind::InvalidArgument => "InvalidArgument",
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Unauthenticated => "Unauthenticated",
        ErrorKind::PermissionDenied => "PermissionDenied",
        ErrorKind::BudgetExhausted => "BudgetExhausted",
        ErrorKind::ResourceExhausted => "ResourceExhausted",
        ErrorKind::FailedPrecondition => "FailedPrecondition",
        ErrorKind::Unavailable => "Unavailable",
        ErrorKind::DeadlineExceeded => "DeadlineExceeded",
        ErrorKind::Server | ErrorKind::Internal => "ServerError",
        ErrorKind::InvalidAnswer => "InvalidAnswer",
        ErrorKind::InvalidInput => "InvalidInput",
        ErrorKind::Keys => "KeysError",
        ErrorKind::Io => "FileError",
    }
}

fn js_err(e: ClientError) -> Error {
    let code = e.code_name().unwrap_or_else(|| "-".into());
    Error::new(
        Status::GenericFailure,
        format!("[{} {code}] {e}", kind_name(e.kind())),
    )
}

fn input_err(message: impl std::fmt::Display) -> Error {
    Error::new(Status::InvalidArg, format!("[InvalidInput -] {message}"))
}

fn u(v: u64) -> f64 {
    v as f64
}

#[napi(object)]
pub struct ConnectOptionsJs {
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Path of a PEM CA certificate, for `https://` servers.
    pub ca_cert: Option<String>,
    /// Deadline of each call, milliseconds.
    pub timeout_ms: Option<f64>,
}

#[napi(object)]
#[derive(Clone)]
pub struct Policy {
    pub output: String,
    pub top_k: u32,
    pub scores_bits: u32,
    pub noise: String,
    pub noise_scale: f64,
    pub clamp_inputs: bool,
    pub members: u32,
    pub aggregate: String,
    pub answers_limit: Option<f64>,
    pub epsilon_limit: Option<f64>,
    pub delta: Option<f64>,
    pub clamp_bootstraps: u32,
    pub stage_bootstraps: u32,
}

fn policy(p: Option<&v1::Policy>) -> Policy {
    let p = PolicyInfo::from_proto(p);
    Policy {
        output: p.output.into(),
        top_k: p.top_k,
        scores_bits: p.scores_bits,
        noise: p.noise.into(),
        noise_scale: p.noise_scale,
        clamp_inputs: p.clamp_inputs,
        members: p.members,
        aggregate: p.aggregate.into(),
        answers_limit: p.answers_limit.map(u),
        epsilon_limit: p.epsilon_limit,
        delta: p.delta,
        clamp_bootstraps: p.clamp_bootstraps,
        stage_bootstraps: p.stage_bootstraps,
    }
}

#[napi(object)]
pub struct ModelInfo {
    pub name: String,
    pub description: String,
    pub parameter_set: String,
    pub params: String,
    pub classes: u32,
    pub bootstraps: u32,
    pub predict_clear: bool,
    pub policy: Policy,
}

/// A model's checked client spec and policy.
#[napi]
pub struct ModelSpec {
    spec: ClientSpec,
    policy: Policy,
    bootstraps: u32,
    keyswitches: u32,
    predicted_p_error: f64,
    circuit_sha256: String,
}

#[napi]
impl ModelSpec {
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.spec.name.clone()
    }
    #[napi(getter)]
    pub fn parameter_set(&self) -> String {
        self.spec.params.name().into()
    }
    #[napi(getter)]
    pub fn params(&self) -> String {
        self.spec.params.short_name().into()
    }
    #[napi(getter)]
    pub fn classes(&self) -> u32 {
        self.spec.classes as u32
    }
    #[napi(getter)]
    pub fn features(&self) -> u32 {
        self.spec.input.len() as u32
    }
    #[napi(getter)]
    pub fn input_shape(&self) -> Vec<u32> {
        self.spec.input.shape.iter().map(|d| *d as u32).collect()
    }
    #[napi(getter)]
    pub fn policy(&self) -> Policy {
        self.policy.clone()
    }
    #[napi(getter)]
    pub fn bootstraps(&self) -> u32 {
        self.bootstraps
    }
    #[napi(getter)]
    pub fn keyswitches(&self) -> u32 {
        self.keyswitches
    }
    #[napi(getter)]
    pub fn predicted_p_error(&self) -> f64 {
        self.predicted_p_error
    }
    #[napi(getter)]
    pub fn circuit_sha256(&self) -> String {
        self.circuit_sha256.clone()
    }
    /// The spec as JSON.
    #[napi]
    pub fn to_json_string(&self) -> Result<String> {
        serde_json::to_string(&self.spec).map_err(|e| Error::from_reason(e.to_string()))
    }
}

fn model_spec(proto: &v1::ModelSpec, spec: ClientSpec) -> ModelSpec {
    ModelSpec {
        spec,
        policy: policy(proto.policy.as_ref()),
        bootstraps: proto.bootstraps_per_inference,
        keyswitches: proto.keyswitches_per_inference,
        predicted_p_error: proto.predicted_p_error,
        circuit_sha256: session::hex(&proto.circuit_sha256),
    }
}

#[napi(object)]
pub struct Answer {
    pub label: u32,
    pub labels: Vec<u32>,
    pub scores: Vec<f64>,
}

fn answer(p: Prediction) -> Answer {
    Answer {
        label: p.label as u32,
        labels: p.labels.into_iter().map(|l| l as u32).collect(),
        scores: p.logits,
    }
}

#[napi(object)]
pub struct Budget {
    pub model: String,
    pub used: f64,
    pub limit: Option<f64>,
    pub remaining: Option<f64>,
    pub epsilon: Option<f64>,
    pub epsilon_limit: Option<f64>,
    pub delta: Option<f64>,
}

fn budget(b: v1::Budget) -> Budget {
    Budget {
        model: b.model,
        used: u(b.answers_used),
        limit: b.answers_limit.map(u),
        remaining: b.answers_remaining.map(u),
        epsilon: b.epsilon_spent,
        epsilon_limit: b.epsilon_limit,
        delta: b.delta,
    }
}

#[napi(object)]
pub struct Timing {
    pub server_evaluation_ms: f64,
    pub server_queue_ms: f64,
    pub bootstraps: u32,
    pub keyswitches: u32,
    pub round_trip_ms: f64,
    pub encrypt_ms: f64,
    pub decrypt_ms: f64,
}

#[napi(object)]
pub struct Answers {
    pub answers: Vec<Answer>,
    pub labels: Vec<u32>,
    pub budget: Option<Budget>,
    pub timing: Timing,
}

fn answers(a: session::Answers) -> Answers {
    let t = a.timing;
    let answers: Vec<Answer> = a.predictions.into_iter().map(answer).collect();
    Answers {
        labels: answers.iter().map(|a| a.label).collect(),
        answers,
        budget: a.budget.map(budget),
        timing: Timing {
            server_evaluation_ms: t.server_evaluation_ms,
            server_queue_ms: t.server_queue_ms,
            bootstraps: t.bootstraps,
            keyswitches: t.keyswitches,
            round_trip_ms: t.round_trip_ms,
            encrypt_ms: t.encrypt_ms,
            decrypt_ms: t.decrypt_ms,
        },
    }
}

#[napi(object)]
pub struct Registration {
    pub key_id: String,
    pub bytes: f64,
    pub already_registered: bool,
}

/// Keys with the secret key loaded; it never leaves this process.
#[napi]
pub struct Keys {
    keys: Arc<SessionKeys>,
}

#[napi]
impl Keys {
    #[napi(getter)]
    pub fn key_id(&self) -> String {
        self.keys.key_id().into()
    }
    #[napi(getter)]
    pub fn parameter_set(&self) -> String {
        self.keys.params().name().into()
    }
    #[napi(getter)]
    pub fn params(&self) -> String {
        self.keys.params().short_name().into()
    }
    #[napi(getter)]
    pub fn path(&self) -> String {
        self.keys.path().display().to_string()
    }
    /// Quantizes and encrypts rows for `spec`: one Buffer per row.
    #[napi]
    pub async fn encrypt(&self, spec: &ModelSpec, rows: Vec<Vec<f64>>) -> Result<Vec<Buffer>> {
        let keys = self.keys.clone();
        let s = spec.spec.clone();
        let blobs = blocking(move || keys.encrypt(&s, &rows)).await?;
        Ok(blobs.into_iter().map(Buffer::from).collect())
    }
    /// Checks and decrypts one answer.
    #[napi]
    pub async fn decrypt(&self, spec: &ModelSpec, answer_bytes: Buffer) -> Result<Answer> {
        let keys = self.keys.clone();
        let s = spec.spec.clone();
        let bytes = answer_bytes.to_vec();
        let p = blocking(move || keys.decrypt(&s, &bytes)).await?;
        Ok(answer(p))
    }
}

/// Loads keys written by `keygen` (or `blindfold keygen`).
#[napi]
pub async fn load_keys(path: String) -> Result<Keys> {
    let keys = blocking(move || SessionKeys::load(PathBuf::from(path))).await?;
    Ok(Keys {
        keys: Arc::new(keys),
    })
}

/// Runs CPU-heavy work (key generation, encryption) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, ClientError> + Send + 'static,
) -> Result<T> {
    napi::tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::from_reason(format!("[ServerError -] worker failed: {e}")))?
        .map_err(js_err)
}

/// `progress(sent, total)`, called from the upload on the JavaScript thread.
type ProgressFn = ThreadsafeFunction<FnArgs<(f64, f64)>, (), FnArgs<(f64, f64)>, Status, false>;

/// A connection to a Blindfold server.
#[napi]
pub struct Client {
    remote: Remote,
    url: String,
}

/// Connects to a server (`Client.connect` in index.js).
#[napi]
pub async fn connect(url: String, options: Option<ConnectOptionsJs>) -> Result<Client> {
    let o = options.unwrap_or(ConnectOptionsJs {
        token: None,
        ca_cert: None,
        timeout_ms: None,
    });
    let ca_certificate = match o.ca_cert {
        Some(p) => Some(
            std::fs::read(&p).map_err(|e| Error::from_reason(format!("[FileError -] {p}: {e}")))?,
        ),
        None => None,
    };
    let timeout = match o.timeout_ms {
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t / 1e3)),
        Some(t) => return Err(input_err(format!("timeoutMs must be positive, not {t}"))),
        None => None,
    };
    let remote = Remote::connect(
        &url,
        ConnectOptions {
            token: o.token,
            ca_certificate,
            timeout,
        },
    )
    .await
    .map_err(js_err)?;
    Ok(Client { remote, url })
}

/// Either loaded keys or a key id.
fn key_id(key: Either<&Keys, String>) -> String {
    match key {
        Either::A(k) => k.keys.key_id().to_string(),
        Either::B(s) => s,
    }
}

#[napi]
impl Client {
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The models this server serves.
    #[napi]
    pub async fn models(&self) -> Result<Vec<ModelInfo>> {
        let list = self.remote.list_models().await.map_err(js_err)?;
        Ok(list
            .into_iter()
            .map(|m| ModelInfo {
                params: session::short_set_name(&m.parameter_set),
                policy: policy(m.policy.as_ref()),
                name: m.name,
                description: m.description,
                parameter_set: m.parameter_set,
                classes: m.classes,
                bootstraps: m.bootstraps_per_inference,
                predict_clear: m.predict_clear_enabled,
            })
            .collect())
    }

    /// One model's checked spec and policy.
    #[napi]
    pub async fn model(&self, name: String) -> Result<ModelSpec> {
        let (proto, spec) = self.remote.get_model(&name).await.map_err(js_err)?;
        Ok(model_spec(&proto, spec))
    }

    /// Keys for `model` in directory `path` (secret key mode 0600), reused
    /// when `path` already holds keys for the model's parameter set.
    #[napi]
    pub async fn keygen(
        &self,
        model: String,
        path: String,
        overwrite: Option<bool>,
    ) -> Result<Keys> {
        let remote = self.remote.clone();
        let overwrite = overwrite.unwrap_or(false);
        // key generation is seconds of CPU: a blocking thread, not a worker
        let handle = napi::tokio::runtime::Handle::current();
        let k = blocking(move || {
            handle.block_on(session::keygen(
                &remote,
                &model,
                std::path::Path::new(&path),
                overwrite,
                &mut |_| {},
            ))
        })
        .await?;
        Ok(Keys {
            keys: Arc::new(k.keys),
        })
    }

    /// Uploads the keys' evaluation key; `progress(sent, total)` is called
    /// as chunks go out.
    #[napi(ts_args_type = "keys: Keys, progress?: (sent: number, total: number) => void")]
    pub async fn register(
        &self,
        keys: &Keys,
        progress: Option<ProgressFn>,
    ) -> Result<Registration> {
        let progress = progress.map(Arc::new);
        let callback: Arc<dyn Fn(u64, u64) + Send + Sync> = Arc::new(move |sent, total| {
            if let Some(f) = &progress {
                f.call(
                    (sent as f64, total as f64).into(),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }
        });
        let remote = self.remote.clone();
        let k = keys.keys.clone();
        let handle = napi::tokio::runtime::Handle::current();
        // (driven on a blocking thread: the upload stream's future is not
        // `Send` for every lifetime, which a Promise's future must be)
        let r = blocking(move || handle.block_on(session::register(&remote, &k, callback))).await?;
        Ok(Registration {
            key_id: r.key_id,
            bytes: u(r.bytes),
            already_registered: r.already_registered,
        })
    }

    /// Encrypts `rows` under `keys`, has the server evaluate them, decrypts
    /// the answers.
    #[napi]
    pub async fn predict(
        &self,
        model: String,
        rows: Vec<Vec<f64>>,
        keys: &Keys,
    ) -> Result<Answers> {
        let remote = self.remote.clone();
        let k = keys.keys.clone();
        let handle = napi::tokio::runtime::Handle::current();
        // encryption and decryption are CPU work: on a blocking thread
        let a =
            blocking(move || handle.block_on(session::predict(&remote, &model, &k, &rows))).await?;
        Ok(answers(a))
    }

    /// The same model on plaintext rows (if its owner enabled it).
    #[napi]
    pub async fn predict_clear(&self, model: String, rows: Vec<Vec<f64>>) -> Result<Answers> {
        let a = session::predict_clear(&self.remote, &model, &rows)
            .await
            .map_err(js_err)?;
        Ok(answers(a))
    }

    /// The caller's budget for `model`.
    #[napi]
    pub async fn budget(&self, model: String) -> Result<Budget> {
        Ok(budget(
            self.remote.get_budget(&model).await.map_err(js_err)?,
        ))
    }

    /// Deletes a registered key (Keys or a key id).
    #[napi(ts_args_type = "key: Keys | string")]
    pub async fn delete_key(&self, key: Either<&Keys, String>) -> Result<()> {
        let id = key_id(key);
        self.remote.delete_key(&id).await.map_err(js_err)
    }

    /// Whether the server holds the key (Keys or a key id).
    #[napi(ts_args_type = "key: Keys | string")]
    pub async fn has_key(&self, key: Either<&Keys, String>) -> Result<bool> {
        let id = key_id(key);
        match self.remote.key_status(&id).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(js_err(e)),
        }
    }
}
