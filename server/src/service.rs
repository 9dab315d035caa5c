//! The gRPC handlers (`Models`, `Keys`, `Inference`): thin checks and
//! translations around the registry, key store, key cache and compute pool.
//!
//! Status codes a client can rely on:
//! * `UNAUTHENTICATED` — missing or invalid bearer token (interceptor);
//! * `NOT_FOUND` — unknown model; key id not registered *for this identity*
//!   (another identity's key is indistinguishable from a missing one);
//! * `INVALID_ARGUMENT` — malformed key id, bytes that do not parse, fail the
//!   version check or do not conform to the parameter set; wrong number of
//!   features or inputs; a key stream longer or shorter than declared;
//! * `RESOURCE_EXHAUSTED` — a size or count limit (chunk, key, ciphertext,
//!   keys per identity, concurrent uploads), a full compute queue, or the
//!   caller's query budget for the model (answers or privacy loss; the
//!   message says which);
//! * `FAILED_PRECONDITION` — a key registered for another parameter set than
//!   the model's;
//! * `PERMISSION_DENIED` — `PredictClear` disabled by the model's owner;
//! * `DEADLINE_EXCEEDED` — a key upload idle for too long;
//! * `CANCELLED` — the evaluation was abandoned (client gone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use blindfold_proto::v1;
use blindfold_runtime::answer::{Query, Reply};
use blindfold_runtime::ciphertext::EncryptedInput;
use blindfold_runtime::eval::{fhe, EvalStats};
use blindfold_runtime::keys::EvaluationKey;
use blindfold_runtime::params::ParamSet;
use blindfold_runtime::serial::Bytes;
use rand_chacha::rand_core::{OsRng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tokio::sync::Semaphore;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::auth::{self, Identity};
use crate::cache::{KeyCache, Lease};
use crate::config::Limits;
use crate::error::{ServiceError, StoreError};
use crate::ledger::{Ledger, Pending, Remaining};
use crate::metrics::Metrics;
use crate::pool::ComputePool;
use crate::registry::{Model, Registry};
use crate::store::{self, Commit, KeyRecord, KeyStore};

/// Everything the handlers share.
pub struct State {
    pub limits: Limits,
    pub registry: Registry,
    pub store: Arc<KeyStore>,
    pub cache: KeyCache<EvaluationKey>,
    pub pool: ComputePool,
    pub metrics: Arc<Metrics>,
    pub uploads: Arc<Semaphore>,
    /// Uploads in progress per identity (at most `max_uploads_per_client`).
    pub uploads_by_identity: Arc<std::sync::Mutex<std::collections::HashMap<Arc<str>, usize>>>,
    pub ledger: Arc<Ledger>,
}

/// One identity's upload slot, given back when the upload ends.
struct IdentitySlot {
    table: Arc<std::sync::Mutex<std::collections::HashMap<Arc<str>, usize>>>,
    identity: Arc<str>,
}

impl IdentitySlot {
    fn acquire(state: &State, identity: &Arc<str>) -> Result<Self, ServiceError> {
        let max = state.limits.max_uploads_per_client;
        let mut table = state
            .uploads_by_identity
            .lock()
            .map_err(|_| ServiceError::internal("upload slots", "lock poisoned"))?;
        let n = table.entry(identity.clone()).or_insert(0);
        if *n >= max {
            return Err(ServiceError::ResourceExhausted(format!(
                "this identity already has {n} key upload(s) in progress, the limit; finish or cancel it first"
            )));
        }
        *n += 1;
        Ok(Self {
            table: state.uploads_by_identity.clone(),
            identity: identity.clone(),
        })
    }
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        if let Ok(mut table) = self.table.lock() {
            if let Some(n) = table.get_mut(&self.identity) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    table.remove(&self.identity);
                }
            }
        }
    }
}

/// Implements the three `blindfold.v1` services.
#[derive(Clone)]
pub struct Service(pub Arc<State>);

/// Records an RPC's outcome (metrics and one log line, no payloads); an RPC
/// dropped before it finished (client gone, deadline) counts as CANCELLED.
struct Rpc {
    method: &'static str,
    start: Instant,
    metrics: Arc<Metrics>,
    identity: Option<Identity>,
    done: bool,
}

impl Rpc {
    fn new<T>(state: &State, method: &'static str, request: &Request<T>) -> Self {
        Self {
            method,
            start: Instant::now(),
            metrics: state.metrics.clone(),
            identity: request.extensions().get::<Identity>().cloned(),
            done: false,
        }
    }

    fn finish<T>(mut self, result: Result<T, ServiceError>) -> Result<T, Status> {
        self.done = true;
        let result = result.map_err(Status::from);
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        self.record(code, result.as_ref().err().map(|s| s.message()));
        result
    }

    fn record(&self, code: Code, message: Option<&str>) {
        let elapsed = self.start.elapsed();
        self.metrics.request(self.method, code, elapsed);
        let who = self.identity.as_ref().map(|i| &*i.0).unwrap_or("-");
        let ms = elapsed.as_secs_f64() * 1e3;
        match code {
            Code::Ok => tracing::info!(method = self.method, identity = who, ms, "ok"),
            Code::Internal | Code::Unknown => tracing::error!(
                method = self.method,
                identity = who,
                ms,
                code = ?code,
                message = message.unwrap_or(""),
                "failed"
            ),
            _ => tracing::warn!(
                method = self.method,
                identity = who,
                ms,
                code = ?code,
                message = message.unwrap_or(""),
                "refused"
            ),
        }
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        if !self.done {
            self.record(Code::Cancelled, Some("caller went away"));
        }
    }
}

fn budget_proto(model: &str, r: &Remaining) -> v1::Budget {
    v1::Budget {
        model: model.to_string(),
        answers_used: r.answers_used,
        answers_limit: r.answers_limit,
        answers_remaining: r.answers_limit.map(|l| l.saturating_sub(r.answers_used)),
        epsilon_spent: r.epsilon_spent,
        epsilon_limit: r.epsilon_limit,
        delta: r.delta,
    }
}

/// A debit of the caller's budget, pending in the ledger until the
/// answers it paid for are produced ([`Debit::keep`] settles it): an
/// evaluation that fails, is cancelled, or whose caller goes away costs
/// nothing, and neither does one cut short by a crash (the next start
/// refunds every pending debit).
struct Debit {
    ledger: Arc<Ledger>,
    pending: Pending,
    done: bool,
}

impl Debit {
    /// The answers exist: the debit stands, durably, before they are sent.
    /// If that cannot be recorded the answers are withheld and the debit
    /// given back.
    async fn keep(mut self) -> Result<(), ServiceError> {
        let (ledger, pending) = (self.ledger.clone(), self.pending);
        match blocking(move || ledger.settle(pending)).await {
            Ok(Ok(())) => {
                self.done = true;
                Ok(())
            }
            Ok(Err(e)) => {
                self.refund().await;
                Err(e.into())
            }
            Err(e) => {
                self.refund().await;
                Err(e)
            }
        }
    }

    /// Gives the debit back now, before the caller hears of the failure
    /// (dropping it refunds too, in the background: the path of a caller
    /// that went away).
    async fn refund(mut self) {
        self.done = true;
        let (ledger, pending) = (self.ledger.clone(), self.pending);
        match blocking(move || ledger.refund_pending(pending)).await {
            Ok(Ok(())) => {}
            // still pending in the ledger: the next start gives it back
            Ok(Err(e)) => tracing::error!(error = %e, "budget refund failed"),
            Err(e) => tracing::error!(error = %e, "budget refund failed"),
        }
    }
}

impl Drop for Debit {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (ledger, pending) = (self.ledger.clone(), self.pending);
        let refund = move || {
            if let Err(e) = ledger.refund_pending(pending) {
                tracing::error!(error = %e, "budget refund failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(refund);
            }
            Err(_) => refund(),
        }
    }
}

/// Runs blocking work (SQLite, fsync, file i/o) off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::internal("blocking task", e))
}

fn check_key_id(key_id: &str) -> Result<(), ServiceError> {
    if store::valid_key_id(key_id) {
        Ok(())
    } else {
        Err(ServiceError::InvalidArgument(
            "key_id must be 64 lowercase hex digits (the SHA-256 of the key)".into(),
        ))
    }
}

/// Reads a stored key, checks it and decompresses it (compute pool).
fn load_key(
    path: &std::path::Path,
    params: ParamSet,
    limit: u64,
) -> blindfold_runtime::Result<EvaluationKey> {
    let bytes = blindfold_runtime::data::read_bytes_limited(path, limit)?;
    EvaluationKey::from_stored(bytes, params, limit)
}

/// Parses, checks and decompresses an uploaded key (compute pool).
fn verify_upload(
    path: &std::path::Path,
    params: ParamSet,
    limit: u64,
) -> blindfold_runtime::Result<EvaluationKey> {
    let bytes = blindfold_runtime::data::read_bytes_limited(path, limit)?;
    EvaluationKey::from_upload(bytes, params, limit)
}

impl Service {
    fn model(&self, name: &str) -> Result<Arc<Model>, ServiceError> {
        self.0.registry.get(name).ok_or_else(|| {
            ServiceError::NotFound(format!("no model named {name:?} is served here"))
        })
    }

    /// Runs a key-store operation (SQLite, fsync) off the async threads.
    async fn store<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&KeyStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.0.store.clone();
        Ok(blocking(move || f(&store)).await??)
    }

    /// Debits `answers` answers from the caller's budget for `model`
    /// before any work starts; refused with `RESOURCE_EXHAUSTED` naming
    /// what ran out.
    async fn debit(
        &self,
        identity: &Identity,
        model: &Model,
        answers: u64,
    ) -> Result<(Debit, v1::Budget), ServiceError> {
        let ledger = self.0.ledger.clone();
        let (who, name, limits, rdp) = (
            identity.0.to_string(),
            model.name.clone(),
            model.budget,
            model.rdp_per_answer,
        );
        let outcome =
            blocking(move || ledger.debit_pending(&who, &name, answers, rdp, &limits)).await??;
        match outcome {
            Ok((remaining, pending)) => Ok((
                Debit {
                    ledger: self.0.ledger.clone(),
                    pending,
                    done: false,
                },
                budget_proto(&model.name, &remaining),
            )),
            Err(exhausted) => Err(ServiceError::BudgetExhausted(format!(
                "model {}: {exhausted}",
                model.name
            ))),
        }
    }

    async fn key_record(
        &self,
        identity: &Identity,
        key_id: &str,
    ) -> Result<KeyRecord, ServiceError> {
        check_key_id(key_id)?;
        let (who, id) = (identity.0.clone(), key_id.to_string());
        self.store(move |s| s.get(&who, &id)).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "key {key_id} is not registered for this identity; register it first"
            ))
        })
    }

    /// The decompressed key, from the cache or loaded from disk (once, even
    /// under concurrent requests), within the key memory budget.
    async fn evaluation_key(
        &self,
        record: &KeyRecord,
    ) -> Result<Lease<EvaluationKey>, ServiceError> {
        let state = &self.0;
        let params = ParamSet::from_name(&record.parameter_set)
            .ok_or_else(|| ServiceError::internal("key store", "unknown stored parameter set"))?;
        let path = state.store.blob_path(&record.key_id);
        let limit = state.limits.max_key_bytes;
        let pool = &state.pool;
        let load = || async move {
            let started = Instant::now();
            let (key, _) = pool.run(move |_| load_key(&path, params, limit)).await?;
            let key = key.map_err(|e| ServiceError::internal("loading a stored key", e))?;
            tracing::info!(
                ms = started.elapsed().as_secs_f64() * 1e3,
                bytes = key.memory_bytes(),
                "loaded an evaluation key into the cache"
            );
            Ok::<_, ServiceError>(key)
        };
        state
            .cache
            .get_or_load(&record.key_id, params.evaluation_key_memory_bytes(), load)
            .await
            .map_err(|e| ServiceError::shared(&e))
    }

    async fn next_chunk(
        &self,
        stream: &mut Streaming<v1::RegisterKeyChunk>,
        started: Instant,
    ) -> Result<Option<v1::RegisterKeyChunk>, ServiceError> {
        let idle = Duration::from_secs(self.0.limits.upload_idle_timeout_secs);
        let deadline = Duration::from_secs(self.0.limits.upload_deadline_secs);
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(idle.min(left), stream.message()).await {
            Err(_) if left <= idle => Err(ServiceError::DeadlineExceeded(format!(
                "the upload did not finish within {} s; aborted",
                deadline.as_secs()
            ))),
            Err(_) => Err(ServiceError::DeadlineExceeded(format!(
                "no key chunk for {} s; upload aborted",
                idle.as_secs()
            ))),
            // the stream itself failed (the client's transport)
            Ok(Err(status)) => Err(ServiceError::Stream(status)),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    async fn register_key_inner(
        &self,
        request: Request<Streaming<v1::RegisterKeyChunk>>,
    ) -> Result<v1::RegisterKeyResponse, ServiceError> {
        let state = &self.0;
        let limits = &state.limits;
        let identity = auth::identity(&request)?;
        let started = Instant::now();
        // the identity's own slot first: one identity never holds them all
        let _mine = IdentitySlot::acquire(state, &identity.0)?;
        let _slot = state.uploads.clone().try_acquire_owned().map_err(|_| {
            ServiceError::ResourceExhausted("too many key uploads in progress; retry later".into())
        })?;
        let who = identity.0.clone();
        let held = self.store(move |s| s.count(&who)).await?;
        if held >= limits.max_keys_per_client {
            return Err(ServiceError::ResourceExhausted(format!(
                "this identity holds {held} keys, the limit; delete one first"
            )));
        }
        let mut stream = request.into_inner();
        let first = self
            .next_chunk(&mut stream, started)
            .await?
            .ok_or_else(|| ServiceError::InvalidArgument("empty key stream".into()))?;
        let params = ParamSet::from_name(&first.parameter_set).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "unknown parameter set {:?}",
                truncate(&first.parameter_set)
            ))
        })?;
        let total = first.total_bytes;
        if total == 0 {
            return Err(ServiceError::InvalidArgument(
                "the first chunk must give total_bytes".into(),
            ));
        }
        if total > limits.max_key_bytes {
            return Err(ServiceError::ResourceExhausted(format!(
                "a {total}-byte key exceeds the {}-byte limit",
                limits.max_key_bytes
            )));
        }
        // a declared hash the identity already holds: nothing to receive or
        // write (works on a full disk too)
        let declared = first.sha256.clone();
        if !declared.is_empty() {
            if !crate::store::valid_key_id(&declared) {
                return Err(ServiceError::InvalidArgument(format!(
                    "sha256 {:?} is not 64 lowercase hex digits",
                    truncate(&declared)
                )));
            }
            let (who, id) = (identity.0.clone(), declared.clone());
            if let Some(existing) = self.store(move |s| s.get(&who, &id)).await? {
                return already_registered(existing, params, total);
            }
        }
        let mut upload = self.store(|s| s.begin_upload()).await?;
        let mut chunk = Some(first);
        while let Some(c) = chunk {
            if c.data.len() > limits.max_chunk_bytes {
                return Err(ServiceError::ResourceExhausted(format!(
                    "a {}-byte chunk exceeds the {}-byte limit",
                    c.data.len(),
                    limits.max_chunk_bytes
                )));
            }
            if (!c.parameter_set.is_empty()
                && c.parameter_set != params.name()
                && ParamSet::from_name(&c.parameter_set) != Some(params))
                || (c.total_bytes != 0 && c.total_bytes != total)
            {
                return Err(ServiceError::InvalidArgument(
                    "parameter_set and total_bytes may not change during an upload".into(),
                ));
            }
            if upload.received() + c.data.len() as u64 > total {
                return Err(ServiceError::InvalidArgument(format!(
                    "the stream carries more than the declared {total} bytes"
                )));
            }
            state.metrics.key_bytes_received(c.data.len() as u64);
            upload = blocking(move || upload.write(&c.data).map(|_| upload)).await??;
            check_upload_rate(upload.received(), started, limits.upload_min_bytes_per_sec)?;
            chunk = self.next_chunk(&mut stream, started).await?;
        }
        if upload.received() != total {
            return Err(ServiceError::InvalidArgument(format!(
                "truncated key: received {} of the declared {total} bytes",
                upload.received()
            )));
        }
        let finished = blocking(move || upload.finish()).await??;
        let key_id = finished.key_id.clone();
        if !declared.is_empty() && declared != key_id {
            return Err(ServiceError::InvalidArgument(format!(
                "the key's bytes hash to {key_id}, not the declared sha256 {declared}"
            )));
        }
        let (who, id) = (identity.0.clone(), key_id.clone());
        if let Some(existing) = self.store(move |s| s.get(&who, &id)).await? {
            return already_registered(existing, params, total);
        }
        // memory for the decompressed key first, then parse, check and
        // decompress on the compute pool
        let reservation = state
            .cache
            .reserve(params.evaluation_key_memory_bytes())
            .await?;
        let path = finished.path().to_path_buf();
        let limit = limits.max_key_bytes;
        let (key, _) = state
            .pool
            .run(move |_| verify_upload(&path, params, limit))
            .await?;
        let key = reservation.hold(key.map_err(|e| ServiceError::input("key", e))?);
        let who = identity.0.clone();
        let max = limits.max_keys_per_client;
        let outcome = self
            .store(move |s| s.commit(&who, finished, params.name(), max))
            .await?;
        match outcome {
            Commit::QuotaExceeded(n) => Err(ServiceError::ResourceExhausted(format!(
                "this identity holds {n} keys, the limit; delete one first"
            ))),
            Commit::AlreadyRegistered | Commit::Registered => {
                state.cache.insert(&key_id, key).await;
                Ok(v1::RegisterKeyResponse {
                    key_id,
                    already_registered: outcome == Commit::AlreadyRegistered,
                    bytes: total,
                })
            }
        }
    }

    async fn predict_inner(
        &self,
        request: Request<v1::PredictRequest>,
    ) -> Result<v1::PredictResponse, ServiceError> {
        let state = &self.0;
        let limits = &state.limits;
        let identity = auth::identity(&request)?;
        let r = request.into_inner();
        let model = self.model(&r.model)?;
        check_batch(r.inputs.len(), limits.max_batch)?;
        if let Some((i, b)) = r
            .inputs
            .iter()
            .enumerate()
            .find(|(_, b)| b.len() > limits.max_ciphertext_bytes)
        {
            return Err(ServiceError::ResourceExhausted(format!(
                "input {i} has {} bytes, over the {}-byte limit",
                b.len(),
                limits.max_ciphertext_bytes
            )));
        }
        let record = self.key_record(&identity, &r.key_id).await?;
        let params = model.hardened().params();
        if record.parameter_set != params.name() {
            return Err(ServiceError::FailedPrecondition(format!(
                "key {} is for {}, model {} uses {}",
                r.key_id,
                record.parameter_set,
                model.name,
                params.name()
            )));
        }
        let limit = limits.max_ciphertext_bytes as u64;
        let program = model.hardened().program();
        let inputs = r
            .inputs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let input = EncryptedInput::from_bytes(b, limit)
                    .and_then(|input| fhe::check_input(program, &input).map(|_| input))
                    .map_err(|e| ServiceError::input(format!("input {i}"), e))?;
                Ok(input)
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        let key = self.evaluation_key(&record).await?;
        let count = inputs.len();
        // every check passed: pay before any work starts
        let (debit, budget) = self.debit(&identity, &model, count as u64).await?;
        let responder = model.responder.clone();
        let run = state
            .pool
            .run(move |cancel| {
                let mut rng = ChaCha20Rng::from_rng(OsRng).map_err(|e| {
                    blindfold_runtime::Error::Internal(format!("noise generator: {e}"))
                })?;
                let mut total = EvalStats::default();
                let mut outputs = Vec::with_capacity(inputs.len());
                for input in &inputs {
                    // fresh noise per answer, from the server's CSPRNG
                    let (reply, stats) = responder.answer(
                        Query::Encrypted { input, key: &key },
                        &mut rng,
                        &|| cancel.is_cancelled(),
                    )?;
                    match reply {
                        Reply::Encrypted(out) => outputs.push(out.to_bytes()?),
                        Reply::Clear { .. } => {
                            return Err(blindfold_runtime::Error::Internal(
                                "an encrypted query was answered in the clear".into(),
                            ))
                        }
                    }
                    total.bootstraps += stats.bootstraps;
                    total.keyswitches += stats.keyswitches;
                    total.seconds += stats.seconds;
                }
                Ok::<_, blindfold_runtime::Error>((outputs, total))
            })
            .await;
        let ((outputs, stats), waited) = match run {
            Ok((Ok(v), waited)) => (v, waited),
            Ok((Err(e), _)) => {
                debit.refund().await;
                return Err(ServiceError::input("evaluation", e));
            }
            Err(e) => {
                debit.refund().await;
                return Err(e.into());
            }
        };
        debit.keep().await?;
        state.metrics.evaluated(
            count as u64,
            stats.bootstraps as u64,
            stats.keyswitches as u64,
            stats.seconds,
        );
        Ok(v1::PredictResponse {
            outputs,
            timing: Some(v1::Timing {
                evaluation_ms: stats.seconds * 1e3,
                queue_ms: waited.as_secs_f64() * 1e3,
                bootstraps: stats.bootstraps as u32,
                keyswitches: stats.keyswitches as u32,
            }),
            budget: Some(budget),
        })
    }

    async fn predict_clear_inner(
        &self,
        request: Request<v1::PredictClearRequest>,
    ) -> Result<v1::PredictClearResponse, ServiceError> {
        let identity = auth::identity(&request)?;
        let r = request.into_inner();
        let model = self.model(&r.model)?;
        if !model.predict_clear {
            return Err(ServiceError::PermissionDenied(format!(
                "PredictClear is disabled for model {} by its owner",
                model.name
            )));
        }
        check_batch(r.inputs.len(), self.0.limits.max_batch)?;
        let spec = &model.hardened().members[0].input;
        let quantized = r
            .inputs
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if f.values.len() != spec.len() {
                    return Err(ServiceError::InvalidArgument(format!(
                        "input {i} has {} features, model {} takes {}",
                        f.values.len(),
                        model.name,
                        spec.len()
                    )));
                }
                if f.values.iter().any(|v| !v.is_finite()) {
                    return Err(ServiceError::InvalidArgument(format!(
                        "input {i} has a non-finite feature"
                    )));
                }
                spec.quantize(&f.values)
                    .map_err(|e| ServiceError::input(format!("input {i}"), e))
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        // the same policy, the same budget and the same compute queue as
        // encrypted answers: the clear endpoint must not be a cheaper oracle
        let (debit, budget) = self
            .debit(&identity, &model, quantized.len() as u64)
            .await?;
        let responder = model.responder.clone();
        let run = self
            .0
            .pool
            .run(move |cancel| {
                let start = Instant::now();
                let mut rng = ChaCha20Rng::from_rng(OsRng).map_err(|e| {
                    blindfold_runtime::Error::Internal(format!("noise generator: {e}"))
                })?;
                let predictions = quantized
                    .iter()
                    .map(|q| {
                        match responder
                            .answer(Query::Clear(q), &mut rng, &|| cancel.is_cancelled())?
                        {
                            (Reply::Clear { answer: a, .. }, _) => Ok(v1::ClearPrediction {
                                label: a.label as u32,
                                logits: a.scores,
                                labels: a.labels.iter().map(|l| *l as u32).collect(),
                            }),
                            (Reply::Encrypted(_), _) => Err(blindfold_runtime::Error::Internal(
                                "a clear query was answered encrypted".into(),
                            )),
                        }
                    })
                    .collect::<blindfold_runtime::Result<Vec<_>>>()?;
                Ok::<_, blindfold_runtime::Error>((predictions, start.elapsed()))
            })
            .await;
        let ((predictions, elapsed), waited) = match run {
            Ok((Ok(v), waited)) => (v, waited),
            Ok((Err(e), _)) => {
                debit.refund().await;
                return Err(ServiceError::input("evaluation", e));
            }
            Err(e) => {
                debit.refund().await;
                return Err(e.into());
            }
        };
        debit.keep().await?;
        Ok(v1::PredictClearResponse {
            predictions,
            timing: Some(v1::Timing {
                evaluation_ms: elapsed.as_secs_f64() * 1e3,
                queue_ms: waited.as_secs_f64() * 1e3,
                bootstraps: 0,
                keyswitches: 0,
            }),
            budget: Some(budget),
        })
    }

    async fn get_budget_inner(
        &self,
        request: Request<v1::GetBudgetRequest>,
    ) -> Result<v1::Budget, ServiceError> {
        let identity = auth::identity(&request)?;
        let model = self.model(&request.get_ref().model)?;
        let ledger = self.0.ledger.clone();
        let (who, name, limits) = (identity.0.to_string(), model.name.clone(), model.budget);
        let remaining = blocking(move || ledger.remaining(&who, &name, &limits)).await??;
        Ok(budget_proto(&model.name, &remaining))
    }

    async fn get_key_status_inner(
        &self,
        request: Request<v1::GetKeyStatusRequest>,
    ) -> Result<v1::KeyStatus, ServiceError> {
        let identity = auth::identity(&request)?;
        let rec = self
            .key_record(&identity, &request.get_ref().key_id)
            .await?;
        Ok(v1::KeyStatus {
            cached: self.0.cache.contains(&rec.key_id),
            key_id: rec.key_id,
            parameter_set: rec.parameter_set,
            bytes: rec.bytes,
            registered_at: rec.registered_at,
        })
    }

    async fn delete_key_inner(
        &self,
        request: Request<v1::DeleteKeyRequest>,
    ) -> Result<v1::DeleteKeyResponse, ServiceError> {
        let identity = auth::identity(&request)?;
        let key_id = request.get_ref().key_id.clone();
        check_key_id(&key_id)?;
        let id = key_id.clone();
        let (deleted, blob_gone) = self.store(move |s| s.delete(&identity.0, &id)).await?;
        if !deleted {
            return Err(ServiceError::NotFound(format!(
                "key {key_id} is not registered for this identity"
            )));
        }
        if blob_gone {
            self.0.cache.remove(&key_id).await;
        }
        Ok(v1::DeleteKeyResponse {})
    }
}

fn check_batch(n: usize, max: usize) -> Result<(), ServiceError> {
    if n == 0 {
        return Err(ServiceError::InvalidArgument("no inputs".into()));
    }
    if n > max {
        return Err(ServiceError::InvalidArgument(format!(
            "{n} inputs exceed the batch limit of {max}"
        )));
    }
    Ok(())
}

/// The answer to an upload of a key the identity already holds.
fn already_registered(
    existing: crate::store::KeyRecord,
    params: ParamSet,
    total: u64,
) -> Result<v1::RegisterKeyResponse, ServiceError> {
    if existing.parameter_set != params.name() {
        return Err(ServiceError::InvalidArgument(format!(
            "these bytes are registered as a {} key, not {}",
            existing.parameter_set,
            params.name()
        )));
    }
    if existing.bytes != total {
        return Err(ServiceError::InvalidArgument(format!(
            "key {} has {} bytes, not the declared {total}",
            existing.key_id, existing.bytes
        )));
    }
    Ok(v1::RegisterKeyResponse {
        key_id: existing.key_id,
        already_registered: true,
        bytes: total,
    })
}

/// Grace before [`check_upload_rate`] applies: a connection's first
/// seconds (TCP slow start, a client still reading its key) do not count.
const UPLOAD_RATE_GRACE: Duration = Duration::from_secs(10);

/// Refuses an upload that, after the grace period, averages under
/// `min_per_sec` bytes per second (0 turns the check off).
fn check_upload_rate(
    received: u64,
    started: Instant,
    min_per_sec: u64,
) -> Result<(), ServiceError> {
    let Some(counted) = started.elapsed().checked_sub(UPLOAD_RATE_GRACE) else {
        return Ok(());
    };
    let due = (min_per_sec as f64 * counted.as_secs_f64()) as u64;
    if received < due {
        let secs = started.elapsed().as_secs_f64();
        return Err(ServiceError::DeadlineExceeded(format!(
            "the upload averaged {:.0} bytes/s over {secs:.0} s, under the server's minimum of \
             {min_per_sec} bytes/s; aborted",
            received as f64 / secs
        )));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl Service {
    /// One RPC: its outcome recorded (metrics, one log line), its error
    /// mapped to a status.
    async fn call<Req, Resp, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        handler: impl FnOnce(Request<Req>) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: std::future::Future<Output = Result<Resp, ServiceError>>,
    {
        let rpc = Rpc::new(&self.0, method, &request);
        rpc.finish(handler(request).await.map(Response::new))
    }
}

#[tonic::async_trait]
impl v1::models_server::Models for Service {
    async fn list_models(
        &self,
        request: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        self.call("ListModels", request, |_| async {
            let models = self.0.registry.all().map(|m| m.summary()).collect();
            Ok(v1::ListModelsResponse { models })
        })
        .await
    }

    async fn get_model(
        &self,
        request: Request<v1::GetModelRequest>,
    ) -> Result<Response<v1::ModelSpec>, Status> {
        self.call("GetModel", request, |r| async move {
            self.model(&r.get_ref().name).map(|m| m.spec())
        })
        .await
    }
}

#[tonic::async_trait]
impl v1::keys_server::Keys for Service {
    async fn register_key(
        &self,
        request: Request<Streaming<v1::RegisterKeyChunk>>,
    ) -> Result<Response<v1::RegisterKeyResponse>, Status> {
        self.call("RegisterKey", request, |r| self.register_key_inner(r))
            .await
    }

    async fn get_key_status(
        &self,
        request: Request<v1::GetKeyStatusRequest>,
    ) -> Result<Response<v1::KeyStatus>, Status> {
        self.call("GetKeyStatus", request, |r| self.get_key_status_inner(r))
            .await
    }

    async fn delete_key(
        &self,
        request: Request<v1::DeleteKeyRequest>,
    ) -> Result<Response<v1::DeleteKeyResponse>, Status> {
        self.call("DeleteKey", request, |r| self.delete_key_inner(r))
            .await
    }
}

#[tonic::async_trait]
impl v1::inference_server::Inference for Service {
    async fn predict(
        &self,
        request: Request<v1::PredictRequest>,
    ) -> Result<Response<v1::PredictResponse>, Status> {
        self.call("Predict", request, |r| self.predict_inner(r))
            .await
    }

    async fn predict_clear(
        &self,
        request: Request<v1::PredictClearRequest>,
    ) -> Result<Response<v1::PredictClearResponse>, Status> {
        self.call("PredictClear", request, |r| self.predict_clear_inner(r))
            .await
    }

    async fn get_budget(
        &self,
        request: Request<v1::GetBudgetRequest>,
    ) -> Result<Response<v1::Budget>, Status> {
        self.call("GetBudget", request, |r| self.get_budget_inner(r))
            .await
    }
}
