//! `blindfold._native`: the Blindfold client library for Python (PyO3,
//! abi3). The pure-Python package `blindfold` (python/blindfold/) re-exports
//! it and adds NumPy-friendly row handling; `_native.pyi` types it.
//!
//! Every call that waits — key generation, encryption, network round trips
//! — releases the GIL. Network calls run on one shared Tokio runtime.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use blindfold_client::crypto::Prediction;
use blindfold_client::session::{self, Keys as SessionKeys};
use blindfold_client::{ClientError, ClientSpec, ConnectOptions, ErrorKind, Remote};
use blindfold_proto::v1;

create_exception!(
    blindfold,
    BlindfoldError,
    PyException,
    "Base of every Blindfold error; `code` is the gRPC status name (or None), `message` the text."
);
create_exception!(
    blindfold,
    ConnectionFailed,
    BlindfoldError,
    "The address is malformed or the server cannot be reached."
);
create_exception!(
    blindfold,
    InvalidArgument,
    BlindfoldError,
    "INVALID_ARGUMENT: the server refused the request."
);
create_exception!(
    blindfold,
    NotFound,
    BlindfoldError,
    "NOT_FOUND: no such model, or the key is not registered."
);
create_exception!(
    blindfold,
    Unauthenticated,
    BlindfoldError,
    "UNAUTHENTICATED: no token, or one the server does not know."
);
create_exception!(
    blindfold,
    PermissionDenied,
    BlindfoldError,
    "PERMISSION_DENIED: forbidden by the model's owner or the key's owner."
);
create_exception!(
    blindfold,
    ResourceExhausted,
    BlindfoldError,
    "RESOURCE_EXHAUSTED: a size or rate limit, or a full queue (a retry may help)."
);
create_exception!(
    blindfold,
    BudgetExhausted,
    ResourceExhausted,
    "The caller's query or privacy budget for the model is spent."
);
create_exception!(
    blindfold,
    FailedPrecondition,
    BlindfoldError,
    "FAILED_PRECONDITION: e.g. a key of another parameter set than the model's."
);
create_exception!(
    blindfold,
    Unavailable,
    BlindfoldError,
    "UNAVAILABLE: the server is shutting down or unreachable."
);
create_exception!(
    blindfold,
    DeadlineExceeded,
    BlindfoldError,
    "DEADLINE_EXCEEDED or CANCELLED."
);
create_exception!(
    blindfold,
    ServerError,
    BlindfoldError,
    "INTERNAL or another code: the server failed."
);
create_exception!(
    blindfold,
    InvalidAnswer,
    BlindfoldError,
    "The server's answer or model spec failed the client's checks."
);
create_exception!(
    blindfold,
    InvalidInput,
    BlindfoldError,
    "The caller's rows or features are unusable."
);
create_exception!(
    blindfold,
    KeysError,
    BlindfoldError,
    "Keys missing, unreadable, or made for another parameter set."
);

fn to_py(e: ClientError) -> PyErr {
    let code = e.code_name();
    let message = e.server_message().unwrap_or_else(|| e.to_string());
    let text = e.to_string();
    let err = match e.kind() {
        ErrorKind::Connection => ConnectionFailed::new_err(text),
        ErrorKind::InvalidArgument => InvalidArgument::new_err(text),
        ErrorKind::NotFound => NotFound::new_err(text),
        ErrorKind::Unauthenticated => Unauthenticated::new_err(text),
        ErrorKind::PermissionDenied => PermissionDenied::new_err(text),
        ErrorKind::BudgetExhausted => BudgetExhausted::new_err(text),
        ErrorKind::ResourceExhausted => ResourceExhausted::new_err(text),
        ErrorKind::FailedPrecondition => FailedPrecondition::new_err(text),
        ErrorKind::Unavailable => Unavailable::new_err(text),
        ErrorKind::DeadlineExceeded => DeadlineExceeded::new_err(text),
        ErrorKind::Server | ErrorKind::Internal => ServerError::new_err(text),
        ErrorKind::InvalidAnswer => InvalidAnswer::new_err(text),
        ErrorKind::InvalidInput => InvalidInput::new_err(text),
        ErrorKind::Keys => KeysError::new_err(text),
        ErrorKind::Io => pyo3::exceptions::PyOSError::new_err(text),
    };
    Python::attach(|py| {
        let v = err.value(py);
        let _ = v.setattr("code", code);
        let _ = v.setattr("message", message);
    });
    err
}

fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("blindfold-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ServerError::new_err(format!("cannot start the I/O runtime: {e}")))
}

/// Runs the future `make` returns on the shared runtime, with the GIL
/// released (the future is made and driven on this thread).
fn block<T, F>(py: Python<'_>, make: impl FnOnce() -> F + Send) -> PyResult<T>
where
    T: Send,
    F: std::future::Future<Output = Result<T, ClientError>>,
{
    let rt = runtime()?;
    py.detach(move || rt.block_on(make())).map_err(to_py)
}

/// The owner's hardening policy of a model: what every answer is reduced to.
#[pyclass(module = "blindfold._native", frozen, get_all)]
#[derive(Clone)]
struct Policy {
    /// "raw", "scores", "label" or "top_k".
    output: String,
    top_k: u32,
    scores_bits: u32,
    /// "none", "gaussian" or "laplace".
    noise: String,
    noise_scale: f64,
    clamp_inputs: bool,
    members: u32,
    /// "logits" or "votes".
    aggregate: String,
    answers_limit: Option<u64>,
    epsilon_limit: Option<f64>,
    delta: Option<f64>,
    /// Bootstraps of the input clamp and of the hardening stage per answer.
    clamp_bootstraps: u32,
    stage_bootstraps: u32,
}

#[pymethods]
impl Policy {
    fn __repr__(&self) -> String {
        format!(
            "Policy(output={:?}, top_k={}, scores_bits={}, noise={:?}, noise_scale={}, members={}, aggregate={:?}, answers_limit={:?}, epsilon_limit={:?})",
            self.output,
            self.top_k,
            self.scores_bits,
            self.noise,
            self.noise_scale,
            self.members,
            self.aggregate,
            self.answers_limit,
            self.epsilon_limit
        )
    }
}

fn policy(p: Option<&v1::Policy>) -> Policy {
    let p = session::PolicyInfo::from_proto(p);
    Policy {
        output: p.output.into(),
        top_k: p.top_k,
        scores_bits: p.scores_bits,
        noise: p.noise.into(),
        noise_scale: p.noise_scale,
        clamp_inputs: p.clamp_inputs,
        members: p.members,
        aggregate: p.aggregate.into(),
        answers_limit: p.answers_limit,
        epsilon_limit: p.epsilon_limit,
        delta: p.delta,
        clamp_bootstraps: p.clamp_bootstraps,
        stage_bootstraps: p.stage_bootstraps,
    }
}

/// One model a server serves (`Client.models()`).
#[pyclass(module = "blindfold._native", frozen, get_all)]
struct ModelInfo {
    name: String,
    description: String,
    /// The tfhe-rs parameter set's name, and its short name ("2_2"…).
    parameter_set: String,
    params: String,
    classes: u32,
    bootstraps: u32,
    predict_clear: bool,
    policy: Policy,
}

#[pymethods]
impl ModelInfo {
    fn __repr__(&self) -> String {
        format!(
            "ModelInfo(name={:?}, params={:?}, classes={}, bootstraps={}, policy={})",
            self.name,
            self.params,
            self.classes,
            self.bootstraps,
            self.policy.__repr__()
        )
    }
}

/// A model's checked client spec (`Client.model(name)`): what encryption
/// and decryption need, and the model's policy.
#[pyclass(module = "blindfold._native", frozen)]
struct ModelSpec {
    spec: ClientSpec,
    #[pyo3(get)]
    policy: Policy,
    #[pyo3(get)]
    bootstraps: u32,
    #[pyo3(get)]
    keyswitches: u32,
    #[pyo3(get)]
    predicted_p_error: f64,
    /// Hex SHA-256 pinning the exact circuits and policy.
    #[pyo3(get)]
    circuit_sha256: String,
}

#[pymethods]
impl ModelSpec {
    #[getter]
    fn name(&self) -> String {
        self.spec.name.clone()
    }
    #[getter]
    fn parameter_set(&self) -> &'static str {
        self.spec.params.name()
    }
    #[getter]
    fn params(&self) -> &'static str {
        self.spec.params.short_name()
    }
    #[getter]
    fn classes(&self) -> usize {
        self.spec.classes
    }
    /// Features per row.
    #[getter]
    fn features(&self) -> usize {
        self.spec.input.len()
    }
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        self.spec.input.shape.clone()
    }
    /// The spec as JSON (what `blindfold keygen` saves next to the keys).
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.spec).map_err(|e| ServerError::new_err(e.to_string()))
    }
    fn __repr__(&self) -> String {
        format!(
            "ModelSpec(name={:?}, params={:?}, classes={}, features={}, bootstraps={}, policy={})",
            self.spec.name,
            self.spec.params.short_name(),
            self.spec.classes,
            self.spec.input.len(),
            self.bootstraps,
            self.policy.__repr__()
        )
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

/// A key directory with its secret key loaded (`Client.keygen`,
/// `Keys.load`). The secret key never leaves this process.
#[pyclass(module = "blindfold._native", frozen)]
struct Keys {
    keys: Arc<SessionKeys>,
}

#[pymethods]
impl Keys {
    /// Loads keys written by `Client.keygen` or `blindfold keygen`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let keys = py.detach(|| SessionKeys::load(&path)).map_err(to_py)?;
        Ok(Self {
            keys: Arc::new(keys),
        })
    }
    /// The id the server knows the evaluation key by (hex SHA-256).
    #[getter]
    fn key_id(&self) -> String {
        self.keys.key_id().to_string()
    }
    #[getter]
    fn parameter_set(&self) -> &'static str {
        self.keys.params().name()
    }
    #[getter]
    fn params(&self) -> &'static str {
        self.keys.params().short_name()
    }
    #[getter]
    fn path(&self) -> PathBuf {
        self.keys.path().to_path_buf()
    }
    /// Quantizes and encrypts rows for `spec`: one `bytes` per row, as
    /// `PredictRequest.inputs` takes them.
    fn encrypt<'py>(
        &self,
        py: Python<'py>,
        spec: &ModelSpec,
        rows: Vec<Vec<f64>>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let keys = self.keys.clone();
        let s = spec.spec.clone();
        let blobs = py.detach(|| keys.encrypt(&s, &rows)).map_err(to_py)?;
        Ok(blobs.iter().map(|b| PyBytes::new(py, b)).collect())
    }
    /// Checks and decrypts one answer (a `PredictResponse.outputs` item).
    fn decrypt(&self, py: Python<'_>, spec: &ModelSpec, answer: &[u8]) -> PyResult<Answer> {
        let keys = self.keys.clone();
        let s = spec.spec.clone();
        let bytes = answer.to_vec();
        let p = py.detach(|| keys.decrypt(&s, &bytes)).map_err(to_py)?;
        Ok(Answer::from(p))
    }
    fn __repr__(&self) -> String {
        format!(
            "Keys(path={:?}, params={:?}, key_id={:?})",
            self.keys.path().display().to_string(),
            self.keys.params().short_name(),
            self.keys.key_id()
        )
    }
}

/// One answer, as the model's policy shaped it.
#[pyclass(module = "blindfold._native", frozen, get_all)]
struct Answer {
    /// The best class.
    label: usize,
    /// The best classes, best first (top-k policies; the label otherwise).
    labels: Vec<usize>,
    /// Dequantized (possibly truncated) logits; empty for label policies.
    scores: Vec<f64>,
}

impl From<Prediction> for Answer {
    fn from(p: Prediction) -> Self {
        Answer {
            label: p.label,
            labels: p.labels,
            scores: p.logits,
        }
    }
}

#[pymethods]
impl Answer {
    fn __repr__(&self) -> String {
        if self.scores.is_empty() {
            format!("Answer(label={}, labels={:?})", self.label, self.labels)
        } else {
            format!(
                "Answer(label={}, labels={:?}, scores={:?})",
                self.label, self.labels, self.scores
            )
        }
    }
}

/// Answers used and left, and privacy loss for DP models.
#[pyclass(module = "blindfold._native", frozen, get_all)]
struct Budget {
    model: String,
    used: u64,
    /// None: unlimited.
    limit: Option<u64>,
    remaining: Option<u64>,
    /// (ε, δ) spent so far, for policies with a privacy guarantee.
    epsilon: Option<f64>,
    epsilon_limit: Option<f64>,
    delta: Option<f64>,
}

#[pymethods]
impl Budget {
    fn __repr__(&self) -> String {
        format!(
            "Budget(model={:?}, used={}, limit={:?}, remaining={:?}, epsilon={:?}, epsilon_limit={:?})",
            self.model, self.used, self.limit, self.remaining, self.epsilon, self.epsilon_limit
        )
    }
}

fn budget(b: v1::Budget) -> Budget {
    Budget {
        model: b.model,
        used: b.answers_used,
        limit: b.answers_limit,
        remaining: b.answers_remaining,
        epsilon: b.epsilon_spent,
        epsilon_limit: b.epsilon_limit,
        delta: b.delta,
    }
}

/// Timing of one call (milliseconds), client and server side.
#[pyclass(module = "blindfold._native", frozen, get_all)]
struct Timing {
    server_evaluation_ms: f64,
    server_queue_ms: f64,
    bootstraps: u32,
    keyswitches: u32,
    round_trip_ms: f64,
    encrypt_ms: f64,
    decrypt_ms: f64,
}

#[pymethods]
impl Timing {
    fn __repr__(&self) -> String {
        format!(
            "Timing(server_evaluation_ms={:.1}, round_trip_ms={:.1}, encrypt_ms={:.1}, decrypt_ms={:.1}, bootstraps={})",
            self.server_evaluation_ms,
            self.round_trip_ms,
            self.encrypt_ms,
            self.decrypt_ms,
            self.bootstraps
        )
    }
}

/// The answers to one `predict` / `predict_clear` call: a sequence of
/// [`Answer`] (one per row, in order) with the budget left and the timing.
#[pyclass(module = "blindfold._native", frozen, sequence)]
struct Answers {
    answers: Vec<Py<Answer>>,
    #[pyo3(get)]
    budget: Option<Py<Budget>>,
    #[pyo3(get)]
    timing: Py<Timing>,
}

#[pymethods]
impl Answers {
    #[getter]
    fn answers(&self, py: Python<'_>) -> Vec<Py<Answer>> {
        self.answers.iter().map(|a| a.clone_ref(py)).collect()
    }
    /// The labels, one per row.
    #[getter]
    fn labels(&self) -> Vec<usize> {
        self.answers.iter().map(|a| a.get().label).collect()
    }
    fn __len__(&self) -> usize {
        self.answers.len()
    }
    fn __getitem__(&self, py: Python<'_>, i: isize) -> PyResult<Py<Answer>> {
        let n = self.answers.len() as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(pyo3::exceptions::PyIndexError::new_err(
                "answer index out of range",
            ));
        }
        Ok(self.answers[j as usize].clone_ref(py))
    }
    fn __repr__(&self) -> String {
        format!("Answers({} answers)", self.answers.len())
    }
}

fn answers(py: Python<'_>, a: session::Answers) -> PyResult<Answers> {
    let t = a.timing;
    Ok(Answers {
        answers: a
            .predictions
            .into_iter()
            .map(|p| Py::new(py, Answer::from(p)))
            .collect::<PyResult<_>>()?,
        budget: a.budget.map(|b| Py::new(py, budget(b))).transpose()?,
        timing: Py::new(
            py,
            Timing {
                server_evaluation_ms: t.server_evaluation_ms,
                server_queue_ms: t.server_queue_ms,
                bootstraps: t.bootstraps,
                keyswitches: t.keyswitches,
                round_trip_ms: t.round_trip_ms,
                encrypt_ms: t.encrypt_ms,
                decrypt_ms: t.decrypt_ms,
            },
        )?,
    })
}

/// What `Client.register` did.
#[pyclass(module = "blindfold._native", frozen, get_all)]
struct Registration {
    key_id: String,
    bytes: u64,
    /// True when the server already had these exact bytes (a no-op).
    already_registered: bool,
}

#[pymethods]
impl Registration {
    fn __repr__(&self) -> String {
        format!(
            "Registration(key_id={:?}, bytes={}, already_registered={})",
            self.key_id,
            self.bytes,
            if self.already_registered {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// Either loaded keys or a key id.
#[derive(FromPyObject)]
enum KeyRef<'py> {
    Keys(PyRef<'py, Keys>),
    Id(String),
}

impl KeyRef<'_> {
    fn id(&self) -> String {
        match self {
            KeyRef::Keys(k) => k.keys.key_id().to_string(),
            KeyRef::Id(s) => s.clone(),
        }
    }
}

/// A connection to a Blindfold server.
#[pyclass(module = "blindfold._native", frozen, subclass)]
struct Client {
    remote: Remote,
    #[pyo3(get)]
    url: String,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (url = "http://127.0.0.1:50051", *, token = None, ca_cert = None, timeout = None))]
    fn new(
        py: Python<'_>,
        url: &str,
        token: Option<String>,
        ca_cert: Option<PathBuf>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let ca_certificate = match ca_cert {
            Some(p) => Some(std::fs::read(&p).map_err(|e| {
                pyo3::exceptions::PyOSError::new_err(format!("{}: {e}", p.display()))
            })?),
            None => None,
        };
        let timeout = match timeout {
            Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "timeout must be a positive number of seconds, not {t}"
                )))
            }
            None => None,
        };
        let options = ConnectOptions {
            token,
            ca_certificate,
            timeout,
        };
        let u = url.to_string();
        let remote = block(
            py,
            move || async move { Remote::connect(&u, options).await },
        )?;
        Ok(Self {
            remote,
            url: url.to_string(),
        })
    }

    /// The models this server serves.
    fn models(&self, py: Python<'_>) -> PyResult<Vec<ModelInfo>> {
        let r = self.remote.clone();
        let list = block(py, move || async move { r.list_models().await })?;
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
    fn model(&self, py: Python<'_>, name: String) -> PyResult<ModelSpec> {
        let r = self.remote.clone();
        let (proto, spec) = block(py, move || async move { r.get_model(&name).await })?;
        Ok(model_spec(&proto, spec))
    }

    /// Keys for `model` in the directory `path` (secret key mode 0600):
    /// reused if `path` already holds keys for the model's parameter set,
    /// refused if it holds keys for another unless `overwrite`.
    #[pyo3(signature = (model, path, *, overwrite = false))]
    fn keygen(
        &self,
        py: Python<'_>,
        model: String,
        path: PathBuf,
        overwrite: bool,
    ) -> PyResult<Keys> {
        let r = self.remote.clone();
        let k = block(py, move || async move {
            session::keygen(&r, &model, &path, overwrite, &mut |_| {}).await
        })?;
        Ok(Keys {
            keys: Arc::new(k.keys),
        })
    }

    /// Uploads the keys' evaluation key; `progress(sent, total)` is called
    /// as chunks go out (with the GIL held; its exceptions are raised after
    /// the upload).
    #[pyo3(signature = (keys, *, progress = None))]
    fn register(
        &self,
        py: Python<'_>,
        keys: &Keys,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Registration> {
        let r = self.remote.clone();
        let k = keys.keys.clone();
        let failed: Arc<Mutex<Option<PyErr>>> = Arc::default();
        let f = failed.clone();
        let callback: Arc<dyn Fn(u64, u64) + Send + Sync> = Arc::new(move |sent, total| {
            if let Some(cb) = &progress {
                Python::attach(|py| {
                    if let Err(e) = cb.call1(py, (sent, total)) {
                        if let Ok(mut slot) = f.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                });
            }
        });
        let resp = block(py, move || async move {
            session::register(&r, &k, callback).await
        })?;
        if let Some(e) = failed.lock().ok().and_then(|mut s| s.take()) {
            return Err(e);
        }
        Ok(Registration {
            key_id: resp.key_id,
            bytes: resp.bytes,
            already_registered: resp.already_registered,
        })
    }

    /// Encrypts `rows` under `keys`, has the server evaluate them, decrypts
    /// the answers.
    fn predict(
        &self,
        py: Python<'_>,
        model: String,
        rows: Vec<Vec<f64>>,
        keys: &Keys,
    ) -> PyResult<Answers> {
        let r = self.remote.clone();
        let k = keys.keys.clone();
        let a = block(py, move || async move {
            session::predict(&r, &model, &k, &rows).await
        })?;
        answers(py, a)
    }

    /// The same model on plaintext rows (if its owner enabled it), under
    /// the same policy.
    fn predict_clear(
        &self,
        py: Python<'_>,
        model: String,
        rows: Vec<Vec<f64>>,
    ) -> PyResult<Answers> {
        let r = self.remote.clone();
        let a = block(py, move || async move {
            session::predict_clear(&r, &model, &rows).await
        })?;
        answers(py, a)
    }

    /// The caller's budget for `model`.
    fn budget(&self, py: Python<'_>, model: String) -> PyResult<Budget> {
        let r = self.remote.clone();
        Ok(budget(block(py, move || async move {
            r.get_budget(&model).await
        })?))
    }

    /// Deletes a registered key (given as `Keys` or a key id).
    fn delete_key(&self, py: Python<'_>, key: KeyRef<'_>) -> PyResult<()> {
        let r = self.remote.clone();
        let id = key.id();
        block(py, move || async move { r.delete_key(&id).await })
    }

    /// Whether the server holds the key (given as `Keys` or a key id).
    fn has_key(&self, py: Python<'_>, key: KeyRef<'_>) -> PyResult<bool> {
        let r = self.remote.clone();
        let id = key.id();
        match block(py, move || async move { r.key_status(&id).await }) {
            Ok(_) => Ok(true),
            Err(e) if e.is_instance_of::<NotFound>(py) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn __repr__(&self) -> String {
        format!("Client({:?})", self.url)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<Keys>()?;
    m.add_class::<ModelInfo>()?;
    m.add_class::<ModelSpec>()?;
    m.add_class::<Policy>()?;
    m.add_class::<Answer>()?;
    m.add_class::<Answers>()?;
    m.add_class::<Budget>()?;
    m.add_class::<Timing>()?;
    m.add_class::<Registration>()?;
    m.add("BlindfoldError", py.get_type::<BlindfoldError>())?;
    m.add("ConnectionFailed", py.get_type::<ConnectionFailed>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Unauthenticated", py.get_type::<Unauthenticated>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("ResourceExhausted", py.get_type::<ResourceExhausted>())?;
    m.add("BudgetExhausted", py.get_type::<BudgetExhausted>())?;
    m.add("FailedPrecondition", py.get_type::<FailedPrecondition>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    m.add("DeadlineExceeded", py.get_type::<DeadlineExceeded>())?;
    m.add("ServerError", py.get_type::<ServerError>())?;
    m.add("InvalidAnswer", py.get_type::<InvalidAnswer>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("KeysError", py.get_type::<KeysError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
