//! Client-side cryptography against a [`ClientSpec`]: quantize and encrypt
//! feature rows, decrypt and decode answers.

use blindfold_circuits::compile::ClientSpec;
use blindfold_circuits::data::argmax;
use blindfold_circuits::eval::fhe::{Blob, ClientKey, EncryptedOutput};

use crate::error::ClientError;

/// One decrypted answer.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    pub label: usize,
    /// Dequantized logits.
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
    (spec.classes as u64) * (spec.params.big_lwe_dimension() as u64 + 1) * 8 + 4096
}

/// Serialized encrypted output → prediction.
pub fn decrypt_output(
    ck: &ClientKey,
    spec: &ClientSpec,
    bytes: &[u8],
) -> Result<Prediction, ClientError> {
    let out = EncryptedOutput::from_bytes(bytes, output_limit(spec))?;
    let raw = ck.decrypt(spec, &out)?;
    let logits = spec.decode_output(&raw);
    Ok(Prediction {
        label: argmax(&logits),
        logits,
        raw,
    })
}

/// Feature rows and, when asked for, their true labels.
pub type CsvRows = (Vec<Vec<f64>>, Vec<Option<usize>>);

/// Rows of a CSV file of numbers (a header line, if any, is skipped). With
/// `with_labels`, the last column is taken as the true label.
pub fn read_csv(
    path: &std::path::Path,
    features: usize,
    with_labels: bool,
) -> Result<CsvRows, ClientError> {
    let text = blindfold_circuits::data::read_limited(path, 256 << 20)?;
    let want = features + usize::from(with_labels);
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Result<Vec<f64>, _> =
            line.split(',').map(|f| f.trim().parse::<f64>()).collect();
        let Ok(mut values) = fields else {
            if n == 0 {
                continue; // header
            }
            return Err(ClientError::Input(format!(
                "{} line {}: not a row of numbers",
                path.display(),
                n + 1
            )));
        };
        if values.len() != want {
            return Err(ClientError::Input(format!(
                "{} line {}: {} columns, the model takes {features} features{}",
                path.display(),
                n + 1,
                values.len(),
                if with_labels { " plus a label" } else { "" }
            )));
        }
        let label = if with_labels {
            values.pop().map(|v| v as usize)
        } else {
            None
        };
        rows.push(values);
        labels.push(label);
    }
    if rows.is_empty() {
        return Err(ClientError::Input(format!(
            "{} has no rows",
            path.display()
        )));
    }
    Ok((rows, labels))
}
