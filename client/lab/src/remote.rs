//! The live server as an [`Oracle`]: `PredictClear` answers under the
//! model's own policy (bit-exact with the encrypted path for a given noise
//! draw), and a check that real encrypted answers agree.

use blindfold_proto::v1;
use blindfold_runtime::answer::Answer;

use super::{AuditError, Oracle};
use blindfold_client::{ClientKey, ClientSpec, Remote};

/// Rows per `PredictClear` call (the server's `max_batch` is 16 by default).
pub const BATCH: usize = 16;

/// A served model queried through `PredictClear`. Blocking: call it from a
/// thread that may block (e.g. inside `tokio::task::spawn_blocking`).
pub struct RemoteOracle {
    remote: Remote,
    model: String,
    spec: ClientSpec,
    handle: tokio::runtime::Handle,
    queries: u64,
}

impl RemoteOracle {
    pub fn new(
        remote: Remote,
        model: &str,
        spec: ClientSpec,
        handle: tokio::runtime::Handle,
    ) -> Self {
        Self {
            remote,
            model: model.to_string(),
            spec,
            handle,
            queries: 0,
        }
    }

    pub fn spec(&self) -> &ClientSpec {
        &self.spec
    }
}

/// A `PredictClear` answer as an [`Answer`].
pub fn answer_of(p: &v1::ClearPrediction) -> Answer {
    Answer {
        label: p.label as usize,
        labels: if p.labels.is_empty() {
            vec![p.label as usize]
        } else {
            p.labels.iter().map(|l| *l as usize).collect()
        },
        scores: p.logits.clone(),
    }
}

impl Oracle for RemoteOracle {
    fn query(&mut self, rows: &[Vec<f64>]) -> Result<Vec<Answer>, AuditError> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(BATCH) {
            let r = self
                .handle
                .block_on(self.remote.predict_clear(&self.model, chunk.to_vec()));
            match r {
                Ok(r) => {
                    out.extend(r.predictions.iter().map(answer_of));
                    self.queries += chunk.len() as u64;
                }
                Err(e) if e.code() == Some(tonic::Code::ResourceExhausted) => {
                    return Err(AuditError::Refused {
                        queries: self.queries,
                        message: e.to_string(),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    fn queries(&self) -> u64 {
        self.queries
    }

    fn classes(&self) -> usize {
        self.spec.classes
    }

    fn input_len(&self) -> usize {
        self.spec.input.len()
    }

    fn input_spec(&self) -> Option<blindfold_runtime::circuit::InputSpec> {
        Some(self.spec.input.clone())
    }
}

/// Encrypted answers against clear answers for the same rows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EncryptedCheck {
    pub rows: usize,
    /// Encrypted answer equal to the clear answer for the same row.
    pub agree: usize,
    /// Two clear answers for the same row equal to each other: the
    /// agreement fresh noise allows (= rows for noise-free policies).
    pub clear_vs_clear: usize,
}

/// Sends `rows` through real encryption (`Predict` under the registered key
/// `key_id`) and through `PredictClear` twice, and counts agreements.
pub fn check_encrypted(
    remote: &Remote,
    handle: &tokio::runtime::Handle,
    model: &str,
    spec: &ClientSpec,
    key: &ClientKey,
    key_id: &str,
    rows: &[Vec<f64>],
) -> Result<EncryptedCheck, AuditError> {
    let mut check = EncryptedCheck {
        rows: 0,
        agree: 0,
        clear_vs_clear: 0,
    };
    for chunk in rows.chunks(BATCH) {
        let cts = chunk
            .iter()
            .map(|r| blindfold_client::crypto::encrypt_row(key, spec, r))
            .collect::<Result<Vec<_>, _>>()?;
        let enc = handle.block_on(remote.predict(model, key_id, cts))?;
        let clear_a = handle.block_on(remote.predict_clear(model, chunk.to_vec()))?;
        let clear_b = handle.block_on(remote.predict_clear(model, chunk.to_vec()))?;
        for ((bytes, a), b) in enc
            .outputs
            .iter()
            .zip(&clear_a.predictions)
            .zip(&clear_b.predictions)
        {
            let p = blindfold_client::crypto::decrypt_output(key, spec, bytes)?;
            let e = Answer {
                label: p.label,
                labels: p.labels,
                scores: p.logits,
            };
            check.rows += 1;
            check.agree += usize::from(e == answer_of(a));
            check.clear_vs_clear += usize::from(answer_of(a) == answer_of(b));
        }
    }
    Ok(check)
}
