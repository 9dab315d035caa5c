//! Client-side cryptography against a [`ClientSpec`]: quantize and encrypt
//! feature rows, decrypt and decode answers.

use blindfold_runtime::answer::Answer;
use blindfold_runtime::ciphertext::EncryptedOutput;
use blindfold_runtime::circuit::ClientSpec;
use blindfold_runtime::keys::ClientKey;
use blindfold_runtime::serial::Bytes;

use crate::error::ClientError;

/// One decrypted answer, as the model's policy shaped it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The best class.
    pub label: usize,
    /// The best classes, best first (label and top-k policies; just the
    /// argmax for score policies).
    pub labels: Vec<usize>,
    /// Dequantized (possibly truncated) logits; empty for label policies.
    pub logits: Vec<f64>,
    /// The decrypted integers (modulo `2^(output_bits+1)`).
    pub raw: Vec<i64>,
}

/// Raw features → quantized → encrypted → serialized (what `Predict` takes).
pub fn encrypt_row(
    ck: &ClientKey,
    spec: &ClientSpec,
    features: &[f64],
) -> Result<Vec<u8>, ClientError> {
    if features.iter().any(|v| !v.is_finite()) {
        return Err(ClientError::Input("features must be finite numbers".into()));
    }
    let q = spec.input.quantize(features)?;
    Ok(ck.encrypt(spec, &q)?.to_bytes()?)
}

/// Largest encrypted output a well-behaved server sends for `spec`.
pub fn output_limit(spec: &ClientSpec) -> u64 {
    (spec.output_count() as u64) * (spec.params.big_lwe_dimension() as u64 + 1) * 8 + 4096
}

/// Serialized encrypted output → prediction. The bytes are a server's and
/// not trusted: their size is checked before they are parsed, the answer's
/// parameter set, precision, ciphertext size and count before anything is
/// decrypted, and every decrypted label against the class count.
pub fn decrypt_output(
    ck: &ClientKey,
    spec: &ClientSpec,
    bytes: &[u8],
) -> Result<Prediction, ClientError> {
    let out = EncryptedOutput::from_bytes(bytes, output_limit(spec))?;
    let raw = ck.decrypt(spec, &out)?;
    let answer = Answer::decode(spec, &raw);
    if let Some(bad) = answer.labels.iter().find(|l| **l >= spec.classes) {
        return Err(ClientError::Answer(format!(
            "decrypted label {bad} of a {}-class model: wrong key or a corrupted answer",
            spec.classes
        )));
    }
    Ok(Prediction {
        label: answer.label,
        labels: answer.labels,
        logits: answer.scores,
        raw,
    })
}

/// Feature rows and, when asked for, their true labels.
pub type CsvRows = (Vec<Vec<f64>>, Vec<Option<usize>>);

/// Rows of a CSV file of numbers. Features only: a header line, if any, is
/// skipped. With `with_labels`, the file is read as a labelled data set
/// (header, then features and a class-index label per row).
pub fn read_csv(
    path: &std::path::Path,
    features: usize,
    with_labels: bool,
) -> Result<CsvRows, ClientError> {
    let rows = if with_labels {
        let ds = blindfold_runtime::data::Dataset::from_csv(path)?;
        let labels = ds.labels.iter().map(|l| Some(*l)).collect();
        (ds.features, labels)
    } else {
        let rows = blindfold_runtime::data::read_feature_rows(path, features)?;
        let labels = vec![None; rows.len()];
        (rows, labels)
    };
    if rows.0.is_empty() {
        return Err(ClientError::Input(format!(
            "{} has no rows",
            path.display()
        )));
    }
    if let Some((i, r)) = rows.0.iter().enumerate().find(|(_, r)| r.len() != features) {
        return Err(ClientError::Input(format!(
            "{} row {i}: {} features, the model takes {features}",
            path.display(),
            r.len()
        )));
    }
    Ok(rows)
}
