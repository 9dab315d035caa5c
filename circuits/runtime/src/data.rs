//! Datasets (CSV, label in the last column), row ranges, input
//! preprocessing, and size-limited file reading.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A labelled dataset: rows of features plus an integer label.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub header: Vec<String>,
    pub features: Vec<Vec<f64>>,
    pub labels: Vec<usize>,
}

/// Largest CSV we read (the shipped files are well under 1 MiB).
const MAX_CSV_BYTES: u64 = 256 << 20;

impl Dataset {
    /// Reads a CSV with a header row; every column but the last is a feature,
    /// the last is a non-negative integer label.
    pub fn from_csv(path: &Path) -> Result<Self> {
        let text = read_limited(path, MAX_CSV_BYTES)?;
        Self::parse_csv(&text).map_err(|e| Error::Data(format!("{}: {e}", path.display())))
    }

    /// Parses a labelled CSV: a header row, then features and a
    /// non-negative integer label per row (every row as wide as the header).
    pub fn parse_csv(text: &str) -> std::result::Result<Self, String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| e.to_string())?
            .iter()
            .map(str::to_string)
            .collect();
        if header.len() < 2 {
            return Err("need at least one feature column and a label column".into());
        }
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("row {i}: {e}"))?;
            let cells: Vec<&str> = record.iter().collect();
            let (label, feats) = cells.split_last().ok_or("empty row")?;
            let row = parse_numbers(feats).map_err(|e| format!("row {i}: {e}"))?;
            let label: f64 = label
                .parse()
                .map_err(|e| format!("row {i}: label {label:?}: {e}"))?;
            if label < 0.0 || label.fract() != 0.0 {
                return Err(format!("row {i}: label {label} is not a class index"));
            }
            features.push(row);
            labels.push(label as usize);
        }
        Ok(Self {
            header,
            features,
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Rows `range.start..=range.end`.
    pub fn rows(&self, range: RowRange) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
        if range.start > range.end || range.end >= self.len() {
            return Err(Error::Data(format!(
                "row range {range} is outside the dataset's {} rows",
                self.len()
            )));
        }
        Ok((
            self.features[range.start..=range.end].to_vec(),
            self.labels[range.start..=range.end].to_vec(),
        ))
    }
}

/// Rows of numbers (features only) from a CSV file: a first line that is
/// not all numbers is a header and skipped; every row must hold
/// `features` values.
pub fn read_feature_rows(path: &Path, features: usize) -> Result<Vec<Vec<f64>>> {
    let text = read_limited(path, MAX_CSV_BYTES)?;
    let bad = |m: String| Error::Data(format!("{}: {m}", path.display()));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let cells: Vec<&str> = record.iter().collect();
        match parse_numbers(&cells) {
            Ok(values) => rows.push(values),
            Err(_) if n == 0 => {} // header
            Err(e) => return Err(bad(format!("line {}: {e}", n + 1))),
        }
    }
    if rows.is_empty() {
        return Err(bad("no rows".into()));
    }
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != features) {
        return Err(bad(format!(
            "row {i}: {} features, the model takes {features}",
            r.len()
        )));
    }
    Ok(rows)
}

fn parse_numbers(cells: &[&str]) -> std::result::Result<Vec<f64>, String> {
    cells
        .iter()
        .map(|c| c.parse::<f64>().map_err(|e| format!("{c:?}: {e}")))
        .collect()
}

/// An inclusive row range, written `A..B` on the command line (`A..=B` also accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRange {
    pub start: usize,
    pub end: usize,
}

impl std::fmt::Display for RowRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

impl std::str::FromStr for RowRange {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (a, b) = s
            .split_once("..=")
            .or_else(|| s.split_once(".."))
            .ok_or_else(|| format!("row range {s:?} must look like A..B (inclusive)"))?;
        let start = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
        let end = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
        if start > end {
            return Err(format!("row range {s:?} is empty"));
        }
        Ok(Self { start, end })
    }
}

/// Input preprocessing applied before the model (part of the manifest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Preprocessing {
    None,
    Standardize { mean: Vec<f64>, std: Vec<f64> },
}

impl Preprocessing {
    /// Checks the parameters against a feature count.
    pub fn check_len(&self, len: usize) -> Result<()> {
        match self {
            Preprocessing::None => Ok(()),
            Preprocessing::Standardize { mean, std } => {
                if mean.len() != len || std.len() != len {
                    return Err(Error::Data(format!(
                        "standardization has {} means and {} deviations for {len} features",
                        mean.len(),
                        std.len()
                    )));
                }
                if mean.iter().chain(std).any(|v| !v.is_finite()) {
                    return Err(Error::Data("standardization values must be finite".into()));
                }
                Ok(())
            }
        }
    }

    pub fn apply(&self, x: &[f64]) -> Result<Vec<f64>> {
        match self {
            Preprocessing::None => Ok(x.to_vec()),
            Preprocessing::Standardize { mean, std } => {
                if mean.len() != x.len() || std.len() != x.len() {
                    return Err(Error::Data(format!(
                        "standardization has {} means for {} features",
                        mean.len(),
                        x.len()
                    )));
                }
                Ok(x.iter()
                    .zip(mean.iter().zip(std))
                    .map(|(v, (m, s))| if *s > 0.0 { (v - m) / s } else { v - m })
                    .collect())
            }
        }
    }
}

/// Reads a UTF-8 file of at most `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<String> {
    let bytes = read_bytes_limited(path, limit)?;
    String::from_utf8(bytes).map_err(|e| Error::Data(format!("{}: {e}", path.display())))
}

/// Reads a file of at most `limit` bytes.
pub fn read_bytes_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > limit {
        return Err(Error::Data(format!(
            "{} is {len} bytes, more than the {limit}-byte limit",
            path.display()
        )));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(Error::Data(format!(
            "{} grew past the {limit}-byte limit while reading",
            path.display()
        )));
    }
    Ok(buf)
}

/// Index of the largest value; ties go to the lowest index.
pub fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Numerically stable log-softmax.
pub fn log_softmax(v: &[f64]) -> Vec<f64> {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = v.iter().map(|x| (x - m).exp()).sum::<f64>().ln() + m;
    v.iter().map(|x| x - lse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_range_parses() {
        assert_eq!(
            "0..1346".parse::<RowRange>().unwrap(),
            RowRange {
                start: 0,
                end: 1346
            }
        );
        assert_eq!(
            "3..=4".parse::<RowRange>().unwrap(),
            RowRange { start: 3, end: 4 }
        );
        assert!("5..4".parse::<RowRange>().is_err());
        assert!("x".parse::<RowRange>().is_err());
    }

    #[test]
    fn csv_errors_are_reported() {
        assert!(Dataset::parse_csv("a,label\n1,2\n3").is_err());
        assert!(Dataset::parse_csv("a,label\n1,-1\n").is_err());
        let d = Dataset::parse_csv("a,b,label\n1,2,0\n3,4,1\n").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.features[1], vec![3.0, 4.0]);
        assert_eq!(argmax(&[1, 3, 3]), 1);
    }
}
