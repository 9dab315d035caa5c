//! The manifest shipped next to each model (`models/<name>.json`): its
//! dataset, split and preprocessing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use blindfold_runtime::data::{read_limited, Preprocessing, RowRange};

use crate::{Error, Result};

/// The manifest shipped next to each model (`models/<name>.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub dataset: String,
    pub data: String,
    pub train: [usize; 2],
    pub test: [usize; 2],
    pub input_shape: Vec<usize>,
    pub classes: usize,
    pub preprocessing: Preprocessing,
    pub float_test_accuracy: f64,
    #[serde(default)]
    pub float_test_correct: Option<usize>,
    #[serde(default)]
    pub test_count: Option<usize>,
}

impl Manifest {
    /// Reads `<model>.json` next to `<model>.onnx`, if present.
    pub fn for_model(model_path: &Path) -> Result<Option<(Self, PathBuf)>> {
        let path = model_path.with_extension("json");
        if !path.exists() {
            return Ok(None);
        }
        let text = read_limited(&path, 16 << 20)?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        Ok(Some((m, path)))
    }

    pub fn train_range(&self) -> RowRange {
        RowRange {
            start: self.train[0],
            end: self.train[1],
        }
    }

    pub fn test_range(&self) -> RowRange {
        RowRange {
            start: self.test[0],
            end: self.test[1],
        }
    }
}
