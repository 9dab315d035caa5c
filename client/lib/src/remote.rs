//! Typed async gRPC client for a Blindfold server.

use std::sync::Arc;
use std::time::Duration;

use blindfold_proto::v1;
use blindfold_runtime::circuit::ClientSpec;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::error::ClientError;
use crate::spec;

/// Default server address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Bytes per `RegisterKey` chunk (the server's default limit is 4 MiB).
pub const UPLOAD_CHUNK_BYTES: usize = 1 << 20;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

type Svc = InterceptedService<Channel, Bearer>;

/// How to reach a server.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Bearer token; none for servers that allow anonymous access.
    pub token: Option<String>,
    /// PEM CA certificate to trust for `https://` addresses.
    pub ca_certificate: Option<Vec<u8>>,
    /// Per-call deadline sent to the server (`grpc-timeout`).
    pub timeout: Option<Duration>,
}

/// A connection to a Blindfold server.
///
/// Nothing the server sends is trusted: specs are validated
/// ([`spec::from_proto`]), answers are bounded by what the model's spec
/// allows before they are received (the decoder refuses a longer message
/// from its length prefix) and checked for count and size before they are
/// returned.
#[derive(Clone)]
pub struct Remote {
    models: v1::models_client::ModelsClient<Svc>,
    keys: v1::keys_client::KeysClient<Svc>,
    inference: v1::inference_client::InferenceClient<Svc>,
    /// Largest `Predict` answer accepted, whatever the spec allows.
    max_answer_bytes: usize,
    /// Specs fetched so far, by model name: what bounds `Predict` answers.
    specs: Arc<std::sync::Mutex<std::collections::HashMap<String, ClientSpec>>>,
}

/// Default cap on one `Predict` answer ([`Remote::with_max_answer_bytes`]):
/// a spec is the server's word and may claim up to 65,536 classes (4 GiB
/// of ciphertexts per input); no answer larger than this is buffered.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 256 << 20;

/// Largest `PredictClear` or `GetBudget` answer we accept.
const CLEAR_ANSWER_LIMIT: usize = 16 << 20;
/// Room for a response's own fields (timing, budget) beyond its outputs.
const RESPONSE_OVERHEAD: usize = 64 << 10;

fn rpc(method: &'static str) -> impl Fn(Status) -> ClientError {
    move |status| ClientError::Rpc { method, status }
}

impl Remote {
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, ClientError> {
        let address = |message: String| ClientError::Address {
            url: url.to_string(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| address(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if let Some(t) = options.timeout {
            endpoint = endpoint.timeout(t);
        }
        if url.starts_with("https://") {
            let ca = options.ca_certificate.as_ref().ok_or_else(|| {
                address("https needs a CA certificate (--ca-cert / BLINDFOLD_CA_CERT)".into())
            })?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .map_err(|e| address(e.to_string()))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_string(),
                source,
            })?;
        let bearer = match &options.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| {
                        address("the token has characters a header cannot carry".into())
                    })?,
            ),
            None => None,
        };
        let svc = || InterceptedService::new(channel.clone(), Bearer(bearer.clone()));
        Ok(Self {
            models: v1::models_client::ModelsClient::new(svc()),
            keys: v1::keys_client::KeysClient::new(svc()).max_decoding_message_size(1 << 20),
            inference: v1::inference_client::InferenceClient::new(svc())
                .max_decoding_message_size(CLEAR_ANSWER_LIMIT)
                .max_encoding_message_size(1 << 30),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            specs: Arc::default(),
        })
    }

    /// Refuses `Predict` answers over `bytes` (default
    /// [`DEFAULT_MAX_ANSWER_BYTES`]) from their length prefix, before
    /// receiving them, even where the model's spec would allow more.
    pub fn with_max_answer_bytes(mut self, bytes: usize) -> Self {
        self.max_answer_bytes = bytes;
        self
    }

    pub async fn list_models(&self) -> Result<Vec<v1::ModelSummary>, ClientError> {
        Ok(self
            .models
            .clone()
            .list_models(v1::ListModelsRequest {})
            .await
            .map_err(rpc("ListModels"))?
            .into_inner()
            .models)
    }

    /// A model's spec as sent, and the checked client spec made from it.
    pub async fn get_model(&self, name: &str) -> Result<(v1::ModelSpec, ClientSpec), ClientError> {
        let proto = self
            .models
            .clone()
            .get_model(v1::GetModelRequest { name: name.into() })
            .await
            .map_err(rpc("GetModel"))?
            .into_inner();
        let client = spec::from_proto(&proto)?;
        if let Ok(mut specs) = self.specs.lock() {
            specs.insert(name.to_string(), client.clone());
        }
        Ok((proto, client))
    }

    /// The checked spec of `model`, fetched once.
    async fn spec(&self, model: &str) -> Result<ClientSpec, ClientError> {
        let cached = self.specs.lock().ok().and_then(|s| s.get(model).cloned());
        match cached {
            Some(spec) => Ok(spec),
            None => Ok(self.get_model(model).await?.1),
        }
    }

    /// Streams a compressed evaluation key (a `Bytes` as written by the
    /// client library) in chunks; `progress(sent, total)` follows along.
    pub async fn register_key(
        &self,
        key: Arc<Vec<u8>>,
        parameter_set: &str,
        progress: Arc<dyn Fn(u64, u64) + Send + Sync>,
    ) -> Result<v1::RegisterKeyResponse, ClientError> {
        let total = key.len() as u64;
        let chunks = key.len().div_ceil(UPLOAD_CHUNK_BYTES);
        let params = parameter_set.to_string();
        // lets the server answer "already registered" before any byte is stored
        let sha256 = crate::keys::key_id(&key);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (sent_in, progress_in) = (sent.clone(), progress.clone());
        let stream = tokio_stream::iter((0..chunks).map(move |i| {
            let start = i * UPLOAD_CHUNK_BYTES;
            let end = (start + UPLOAD_CHUNK_BYTES).min(key.len());
            sent_in.store(end as u64, std::sync::atomic::Ordering::Relaxed);
            progress_in(end as u64, total);
            v1::RegisterKeyChunk {
                parameter_set: if i == 0 {
                    params.clone()
                } else {
                    String::new()
                },
                total_bytes: if i == 0 { total } else { 0 },
                sha256: if i == 0 {
                    sha256.clone()
                } else {
                    String::new()
                },
                data: key[start..end].to_vec(),
            }
        }));
        let response = self
            .keys
            .clone()
            .register_key(stream)
            .await
            .map_err(rpc("RegisterKey"))?
            .into_inner();
        // a key the server already holds is answered before the rest is
        // sent: the upload is complete all the same
        if sent.load(std::sync::atomic::Ordering::Relaxed) < total {
            progress(total, total);
        }
        Ok(response)
    }

    pub async fn key_status(&self, key_id: &str) -> Result<v1::KeyStatus, ClientError> {
        Ok(self
            .keys
            .clone()
            .get_key_status(v1::GetKeyStatusRequest {
                key_id: key_id.into(),
            })
            .await
            .map_err(rpc("GetKeyStatus"))?
            .into_inner())
    }

    pub async fn delete_key(&self, key_id: &str) -> Result<(), ClientError> {
        self.keys
            .clone()
            .delete_key(v1::DeleteKeyRequest {
                key_id: key_id.into(),
            })
            .await
            .map_err(rpc("DeleteKey"))?;
        Ok(())
    }

    /// Encrypted inputs (serialized `EncryptedInput`s) in, encrypted outputs
    /// and the server's timing out. The answer may be no larger than the
    /// model's spec allows (fetched with `GetModel` if not yet), and must
    /// hold one output of at most [`crypto::output_limit`] bytes per input.
    pub async fn predict(
        &self,
        model: &str,
        key_id: &str,
        inputs: Vec<Vec<u8>>,
    ) -> Result<v1::PredictResponse, ClientError> {
        let spec = self.spec(model).await?;
        self.predict_with_spec(model, key_id, inputs, &spec).await
    }

    /// [`Self::predict`] with the model's spec at hand.
    pub async fn predict_with_spec(
        &self,
        model: &str,
        key_id: &str,
        inputs: Vec<Vec<u8>>,
        spec: &ClientSpec,
    ) -> Result<v1::PredictResponse, ClientError> {
        let n = inputs.len();
        let per_output = crate::crypto::output_limit(spec) as usize;
        let limit = n
            .saturating_mul(per_output)
            .saturating_add(RESPONSE_OVERHEAD)
            .min(self.max_answer_bytes);
        let response = self
            .inference
            .clone()
            .max_decoding_message_size(limit)
            .predict(v1::PredictRequest {
                model: model.into(),
                key_id: key_id.into(),
                inputs,
            })
            .await
            .map_err(|status| {
                // tonic refuses an over-long message from its length prefix
                if status.code() == tonic::Code::OutOfRange
                    && status.message().contains("message length too large")
                {
                    ClientError::Answer(format!(
                        "the server's answer is over the {limit}-byte limit for {n} input(s) \
                         of {} (not received; the cap is {} bytes)",
                        spec.name, self.max_answer_bytes
                    ))
                } else {
                    ClientError::Rpc {
                        method: "Predict",
                        status,
                    }
                }
            })?
            .into_inner();
        if response.outputs.len() != n {
            return Err(ClientError::Answer(format!(
                "{} outputs for {n} inputs",
                response.outputs.len()
            )));
        }
        if let Some((i, o)) = response
            .outputs
            .iter()
            .enumerate()
            .find(|(_, o)| o.len() > per_output)
        {
            return Err(ClientError::Answer(format!(
                "output {i} has {} bytes, more than the {per_output} a {} answer of {} can take",
                o.len(),
                spec.params.short_name(),
                spec.name
            )));
        }
        Ok(response)
    }

    pub async fn predict_clear(
        &self,
        model: &str,
        rows: Vec<Vec<f64>>,
    ) -> Result<v1::PredictClearResponse, ClientError> {
        let n = rows.len();
        let response = self
            .inference
            .clone()
            .predict_clear(v1::PredictClearRequest {
                model: model.into(),
                inputs: rows
                    .into_iter()
                    .map(|values| v1::Features { values })
                    .collect(),
            })
            .await
            .map_err(rpc("PredictClear"))?
            .into_inner();
        if response.predictions.len() != n {
            return Err(ClientError::Answer(format!(
                "{} predictions for {n} inputs",
                response.predictions.len()
            )));
        }
        let spec = self.spec(model).await?;
        let classes = spec.classes;
        for (i, p) in response.predictions.iter().enumerate() {
            let bad = |m: String| Err(ClientError::Answer(format!("prediction {i}: {m}")));
            if p.label as usize >= classes || p.labels.iter().any(|l| *l as usize >= classes) {
                return bad(format!("a label outside the model's {classes} classes"));
            }
            if p.labels.len() > classes {
                return bad(format!("{} labels of {classes} classes", p.labels.len()));
            }
            if !(p.logits.is_empty() || p.logits.len() == classes)
                || p.logits.iter().any(|v| !v.is_finite())
            {
                return bad(format!(
                    "{} scores for {classes} classes (or a non-finite one)",
                    p.logits.len()
                ));
            }
        }
        Ok(response)
    }

    /// The caller's remaining budget for `model`.
    pub async fn get_budget(&self, model: &str) -> Result<v1::Budget, ClientError> {
        Ok(self
            .inference
            .clone()
            .get_budget(v1::GetBudgetRequest {
                model: model.into(),
            })
            .await
            .map_err(rpc("GetBudget"))?
            .into_inner())
    }

    /// The raw inference client, for callers that need more control (tests
    /// sending deliberately malformed requests).
    pub fn inference_client(&self) -> v1::inference_client::InferenceClient<Svc> {
        self.inference.clone()
    }

    pub fn keys_client(&self) -> v1::keys_client::KeysClient<Svc> {
        self.keys.clone()
    }
}
