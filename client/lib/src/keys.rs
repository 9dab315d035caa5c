//! A key directory: the client's secret key (never leaves it), the
//! compressed evaluation key (what `register` uploads), and the specs of
//! the models the keys were made for.
//!
//! ```text
//! DIR/client.key          secret key (mode 0600)
//! DIR/evaluation.key      compressed evaluation key, uploaded by `register`
//! DIR/specs/<model>.json  client spec of each model used with these keys
//! ```
//! The key id is the hex SHA-256 of `evaluation.key`, as the server computes
//! it, so it needs no bookkeeping.

use std::io::Write;
use std::path::{Path, PathBuf};

use blindfold_runtime::circuit::ClientSpec;
use blindfold_runtime::keys::ClientKey;
use blindfold_runtime::params::ParamSet;
use blindfold_runtime::serial::Bytes;
use sha2::{Digest, Sha256};

use crate::error::ClientError;

/// Size limit when reading a secret key back (a few hundred KB in practice).
const CLIENT_KEY_LIMIT: u64 = 64 << 20;

pub struct KeyDir {
    dir: PathBuf,
}

/// Hex SHA-256 of an evaluation-key blob: the id the server gives it.
pub fn key_id(evaluation_key: &[u8]) -> String {
    hex::encode(Sha256::digest(evaluation_key))
}

/// Writes `data` to `path` readable by the owner only (0600 on Unix),
/// via a temporary file and a rename so a crash leaves no half file.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), ClientError> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp).map_err(|e| ClientError::io(&tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| ClientError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ClientError::io(path, e))
}

impl KeyDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn client_key_path(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    pub fn evaluation_key_path(&self) -> PathBuf {
        self.dir.join("evaluation.key")
    }

    fn spec_path(&self, model: &str) -> PathBuf {
        self.dir.join("specs").join(format!("{model}.json"))
    }

    pub fn exists(&self) -> bool {
        self.client_key_path().exists()
    }

    /// Generates and writes new keys for `params`. `stage` is told what is
    /// happening (the bootstrap key takes seconds to tens of seconds).
    /// Refuses to overwrite existing keys unless `overwrite`.
    pub fn generate(
        &self,
        params: ParamSet,
        overwrite: bool,
        stage: &mut dyn FnMut(&str),
    ) -> Result<(ClientKey, Vec<u8>), ClientError> {
        if self.exists() && !overwrite {
            return Err(ClientError::Keys(format!(
                "{} already holds keys; pass --force to replace them (the old key id stops working)",
                self.dir.display()
            )));
        }
        create_private_dir(&self.dir)?;
        stage("generating the secret key");
        let ck = ClientKey::generate(params);
        stage("generating the bootstrap and keyswitch keys");
        let ek = ck.evaluation_key().to_bytes()?;
        stage("writing the keys");
        write_private(&self.client_key_path(), &ck.to_bytes()?)?;
        write_private(&self.evaluation_key_path(), &ek)?;
        Ok((ck, ek))
    }

    pub fn client_key(&self) -> Result<ClientKey, ClientError> {
        let path = self.client_key_path();
        if !path.exists() {
            return Err(ClientError::Keys(format!(
                "no keys in {}; run `blindfold keygen MODEL --keys {}` first",
                self.dir.display(),
                self.dir.display()
            )));
        }
        let bytes = blindfold_runtime::data::read_bytes_limited(&path, CLIENT_KEY_LIMIT)?;
        Ok(ClientKey::from_stored(&bytes, CLIENT_KEY_LIMIT)?)
    }

    pub fn evaluation_key(&self) -> Result<Vec<u8>, ClientError> {
        let path = self.evaluation_key_path();
        std::fs::read(&path).map_err(|e| ClientError::io(&path, e))
    }

    /// The id the server knows these keys by.
    pub fn key_id(&self) -> Result<String, ClientError> {
        Ok(key_id(&self.evaluation_key()?))
    }

    /// Parameter set of the keys (read from the secret key file).
    pub fn params(&self) -> Result<ParamSet, ClientError> {
        Ok(self.client_key()?.params)
    }

    pub fn save_spec(&self, spec: &ClientSpec) -> Result<(), ClientError> {
        let dir = self.dir.join("specs");
        create_private_dir(&dir)?;
        let text = serde_json::to_string_pretty(spec)
            .map_err(|e| ClientError::Keys(format!("spec: {e}")))?;
        write_private(&self.spec_path(&spec.name), text.as_bytes())
    }

    /// A spec saved by `keygen` or `predict` (for offline encrypt/decrypt).
    pub fn spec(&self, model: &str) -> Result<Option<ClientSpec>, ClientError> {
        let path = self.spec_path(model);
        if !path.exists() {
            return Ok(None);
        }
        let text = blindfold_runtime::data::read_limited(&path, 16 << 20)?;
        let spec: ClientSpec = serde_json::from_str(&text)
            .map_err(|e| ClientError::Keys(format!("{}: {e}", path.display())))?;
        spec.validate()?;
        Ok(Some(spec))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| ClientError::io(dir, e))
}
