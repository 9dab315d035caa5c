//! Server configuration: a TOML file, then `BLINDFOLD_*` environment
//! variables and command-line flags on top (applied by the binary), checked
//! by [`Config::validate`] before anything starts.
//!
//! Relative paths in the file (`data_dir`, model circuits, TLS files) are
//! resolved against the directory of the file itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use blindfold_runtime::policy::{Aggregate, Noise, NoiseKind, OutputMode, OutputName, Policy};

use crate::error::ConfigError;

/// Default gRPC listen address (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Embedded storage: SQLite metadata (`blindfold.db`) and key blobs.
    pub data_dir: PathBuf,
    /// Prometheus text metrics at `http://<addr>/metrics`; off when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Accept requests without a bearer token, as identity `anonymous`.
    /// Refused unless `listen` is a loopback address.
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub compute: Compute,
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Bearer tokens and the client identities they stand for.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
    /// Served models.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
}

/// Limits on everything a client sends.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest `data` slice in one `RegisterKey` chunk.
    pub max_chunk_bytes: usize,
    /// Largest evaluation key accepted.
    pub max_key_bytes: u64,
    /// Largest single encrypted input.
    pub max_ciphertext_bytes: usize,
    /// Most inputs in one `Predict` or `PredictClear`.
    pub max_batch: usize,
    /// Most keys one identity may hold.
    pub max_keys_per_client: usize,
    /// Key uploads in progress at once (server-wide).
    pub max_concurrent_uploads: usize,
    /// Key uploads one identity may have in progress at once (so one
    /// identity cannot hold every server-wide slot).
    pub max_uploads_per_client: usize,
    /// An upload that sends no chunk for this long is aborted.
    pub upload_idle_timeout_secs: u64,
    /// A whole upload must finish within this long, however steadily it
    /// trickles (a slow client holds its slot at most this long).
    pub upload_deadline_secs: u64,
    /// After the first 10 s, an upload must average at least this many
    /// bytes per second or it is aborted (`DEADLINE_EXCEEDED`).
    pub upload_min_bytes_per_sec: u64,
    /// Open client connections at most; more are closed at once.
    pub max_connections: usize,
    /// A connection must send its first bytes (the HTTP/2 preface or a TLS
    /// ClientHello) within this long or it is closed.
    pub connection_preface_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chunk_bytes: 4 << 20,
            max_key_bytes: 512 << 20,
            max_ciphertext_bytes: 1 << 20,
            max_batch: 16,
            max_keys_per_client: 16,
            max_concurrent_uploads: 4,
            max_uploads_per_client: 1,
            upload_idle_timeout_secs: 30,
            upload_deadline_secs: 600,
            upload_min_bytes_per_sec: 64 << 10,
            max_connections: 1024,
            connection_preface_timeout_secs: 10,
        }
    }
}

impl Limits {
    /// Largest gRPC request message the server decodes.
    pub fn max_request_message_bytes(&self) -> usize {
        let predict = self.max_batch * self.max_ciphertext_bytes;
        self.max_chunk_bytes.max(predict) + (64 << 10)
    }
}

/// The compute pool and the key cache.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Compute {
    /// Worker threads for FHE evaluation; 0 = one per core.
    pub threads: usize,
    /// Requests evaluated at the same time (each uses all workers).
    pub concurrent_jobs: usize,
    /// Requests allowed to wait for a slot; beyond that `RESOURCE_EXHAUSTED`.
    pub queue_capacity: usize,
    /// Memory budget for decompressed evaluation keys, in MiB: cached keys
    /// and keys that requests are using together never exceed it (idle
    /// cached keys are evicted least recently used first to make room).
    pub key_cache_mib: u64,
    /// How long a request waits for key memory held by other requests
    /// before `RESOURCE_EXHAUSTED`, in seconds.
    pub key_wait_secs: u64,
}

impl Default for Compute {
    fn default() -> Self {
        Self {
            threads: 0,
            concurrent_jobs: 1,
            queue_capacity: 32,
            key_cache_mib: 4096,
            key_wait_secs: 120,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// Identity that owns the keys this client registers.
    pub name: String,
    /// The bearer token in clear (convenient; prefer `token_sha256`).
    #[serde(default)]
    pub token: Option<String>,
    /// Hex SHA-256 of the bearer token.
    #[serde(default)]
    pub token_sha256: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Name clients use.
    pub name: String,
    /// Compiled circuit (`blindfold compile` output).
    #[serde(default)]
    pub circuit: Option<PathBuf>,
    /// An ensemble: several compiled circuits sharing one input encoding
    /// (instead of `circuit`).
    #[serde(default)]
    pub circuits: Vec<PathBuf>,
    #[serde(default)]
    pub description: String,
    /// Whether `PredictClear` answers for this model (under the same policy).
    #[serde(default = "yes")]
    pub predict_clear: bool,
    /// The owner's hardening policy (default: label only, no noise).
    #[serde(default)]
    pub policy: PolicyEntry,
    /// Per client identity; absent: unlimited.
    #[serde(default)]
    pub budget: BudgetEntry,
}

impl ModelEntry {
    /// The circuit files, `circuit` or `circuits`.
    pub fn circuit_paths(&self) -> Vec<PathBuf> {
        self.circuit.iter().chain(&self.circuits).cloned().collect()
    }
}

/// `[models.policy]`: the runtime's own policy types, flattened for TOML.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    /// `raw`, `scores`, `label` (the default) or `top_k`.
    #[serde(default)]
    pub output: OutputName,
    /// Bits per truncated score (`output = "scores"`).
    #[serde(default)]
    pub scores_bits: Option<u32>,
    /// Labels per answer (`output = "top_k"`).
    #[serde(default)]
    pub k: Option<usize>,
    /// `none` (the default), `gaussian` or `laplace`.
    #[serde(default)]
    pub noise: NoiseKind,
    /// Standard deviation (Gaussian) or scale (Laplace), in logit units
    /// (votes for `aggregate = "votes"`).
    #[serde(default)]
    pub noise_scale: f64,
    #[serde(default)]
    pub clamp_inputs: bool,
    /// `logits` (the default) or `votes` (ensembles).
    #[serde(default)]
    pub aggregate: Aggregate,
}

impl PolicyEntry {
    /// The policy, or why it is not one.
    pub fn policy(&self) -> blindfold_runtime::Result<Policy> {
        let output = OutputMode::from_parts(self.output, self.scores_bits, self.k)?;
        let noise = Noise::new(self.noise, self.noise_scale)?;
        Ok(Policy {
            output,
            noise,
            clamp_inputs: self.clamp_inputs,
            aggregate: self.aggregate,
        })
    }
}

/// `[models.budget]`: what one client identity may get from the model.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetEntry {
    /// Answers (one per input of a batch).
    #[serde(default)]
    pub answers: Option<u64>,
    /// Differential-privacy loss, for vote ensembles with Gaussian noise
    /// (PATE): epsilon at `delta`.
    #[serde(default)]
    pub epsilon: Option<f64>,
    #[serde(default)]
    pub delta: Option<f64>,
}

/// δ of an epsilon budget when the config gives none.
pub const DEFAULT_DELTA: f64 = 1e-5;

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}

fn yes() -> bool {
    true
}

impl Config {
    /// Parses a TOML file; relative paths become relative to its directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses TOML text (paths left as written).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })
    }

    /// Makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        for m in &mut self.models {
            if let Some(c) = &mut m.circuit {
                fix(c);
            }
            m.circuits.iter_mut().for_each(fix);
        }
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
    }

    /// Checks the whole configuration; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.allow_anonymous && !self.listen.ip().is_loopback() {
            return bad(format!(
                "allow_anonymous is only allowed on a loopback listen address, not {}",
                self.listen
            ));
        }
        if self.clients.is_empty() && !self.allow_anonymous {
            return bad("no [[clients]] and allow_anonymous = false: nobody could call".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for c in &self.clients {
            if c.name.is_empty() || c.name == crate::auth::ANONYMOUS || c.name.len() > 128 {
                return bad(format!("client name {:?} is reserved or invalid", c.name));
            }
            if !names.insert(c.name.clone()) {
                return bad(format!("client {} is listed twice", c.name));
            }
            let digest = c.token_digest()?;
            if !tokens.insert(digest) {
                return bad(format!("client {} reuses another client's token", c.name));
            }
        }
        if self.models.is_empty() {
            return bad("no [[models]] to serve".into());
        }
        let mut model_names = std::collections::HashSet::new();
        for m in &self.models {
            let valid = !m.name.is_empty()
                && m.name.len() <= 64
                && m.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                return bad(format!(
                    "model name {:?} must be 1-64 characters of [A-Za-z0-9-_.]",
                    m.name
                ));
            }
            if !model_names.insert(m.name.clone()) {
                return bad(format!("model {} is listed twice", m.name));
            }
            match (&m.circuit, m.circuits.len()) {
                (Some(_), 0) | (None, 1..) => {}
                _ => {
                    return bad(format!(
                    "model {}: give either circuit or circuits (an ensemble), not both or neither",
                    m.name
                ))
                }
            }
            let policy = m
                .policy
                .policy()
                .map_err(|e| ConfigError::Invalid(format!("model {} policy: {e}", m.name)))?;
            let b = &m.budget;
            if b.answers == Some(0) {
                return bad(format!("model {}: budget.answers must be positive", m.name));
            }
            match (b.epsilon, b.delta) {
                (None, None) => {}
                (Some(eps), delta) => {
                    let delta = delta.unwrap_or(DEFAULT_DELTA);
                    if !(eps.is_finite() && eps > 0.0 && delta > 0.0 && delta < 1.0) {
                        return bad(format!(
                            "model {}: budget.epsilon must be positive and delta in (0, 1)",
                            m.name
                        ));
                    }
                    if policy.aggregate != Aggregate::Votes
                        || policy.noise.kind != NoiseKind::Gaussian
                        || m.circuits.len() < 2
                    {
                        return bad(format!(
                            "model {}: an epsilon budget needs a PATE policy (circuits = [teachers], aggregate = \"votes\", noise = \"gaussian\"): no other policy here has a privacy accountant",
                            m.name
                        ));
                    }
                }
                (None, Some(_)) => {
                    return bad(format!(
                        "model {}: budget.delta without budget.epsilon",
                        m.name
                    ))
                }
            }
        }
        let l = &self.limits;
        if l.max_chunk_bytes == 0
            || l.max_key_bytes == 0
            || l.max_ciphertext_bytes == 0
            || l.max_batch == 0
            || l.max_keys_per_client == 0
            || l.max_concurrent_uploads == 0
            || l.max_uploads_per_client == 0
            || l.upload_deadline_secs == 0
            || l.upload_idle_timeout_secs == 0
            || l.max_connections == 0
            || l.connection_preface_timeout_secs == 0
        {
            return bad("every [limits] value must be positive".into());
        }
        if l.max_request_message_bytes() > 1 << 30 {
            return bad("max_batch x max_ciphertext_bytes exceeds 1 GiB".into());
        }
        if self.compute.concurrent_jobs == 0 {
            return bad("compute.concurrent_jobs must be positive".into());
        }
        Ok(())
    }
}

impl ClientEntry {
    /// SHA-256 of the token, from whichever form the file gives.
    pub fn token_digest(&self) -> Result<[u8; 32], ConfigError> {
        match (&self.token, &self.token_sha256) {
            (Some(t), None) => {
                if t.len() < 16 {
                    return Err(ConfigError::Invalid(format!(
                        "client {}: tokens must have at least 16 characters",
                        self.name
                    )));
                }
                Ok(crate::auth::digest(t))
            }
            (None, Some(h)) => {
                let bytes = hex::decode(h).map_err(|_| {
                    ConfigError::Invalid(format!("client {}: token_sha256 is not hex", self.name))
                })?;
                bytes.try_into().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "client {}: token_sha256 must be 64 hex digits",
                        self.name
                    ))
                })
            }
            _ => Err(ConfigError::Invalid(format!(
                "client {}: give exactly one of token, token_sha256",
                self.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        data_dir = "state"
        allow_anonymous = true
        [[models]]
        name = "m"
        circuit = "m.circuit.json"
    "#;

    #[test]
    fn defaults_and_relative_paths() {
        let mut c = Config::from_toml(MINIMAL).unwrap();
        c.resolve_paths(Path::new("/etc/blindfold"));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from("/etc/blindfold/state"));
        assert_eq!(
            c.models[0].circuit_paths(),
            vec![PathBuf::from("/etc/blindfold/m.circuit.json")]
        );
        assert!(c.models[0].predict_clear);
        c.validate().unwrap();
    }

    #[test]
    fn anonymous_only_on_loopback() {
        let mut c = Config::from_toml(MINIMAL).unwrap();
        c.listen = "0.0.0.0:50051".parse().unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn rejects_unknown_fields_short_tokens_and_duplicates() {
        assert!(Config::from_toml(&format!("{MINIMAL}\nlisten_port = 3")).is_err());
        let mut c = Config::from_toml(MINIMAL).unwrap();
        c.clients.push(ClientEntry {
            name: "a".into(),
            token: Some("short".into()),
            token_sha256: None,
        });
        assert!(c.validate().is_err());
        c.clients[0].token = Some("a-long-enough-token".into());
        c.validate().unwrap();
        c.clients.push(ClientEntry {
            name: "b".into(),
            token: None,
            token_sha256: Some(hex::encode(crate::auth::digest("a-long-enough-token"))),
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("reuses"), "{e}");
    }
}
