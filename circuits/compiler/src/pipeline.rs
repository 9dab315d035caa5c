//! The model's life in one place: ONNX file (+ manifest and dataset) →
//! [`Graph`] → [`LinearNet`] → [`QuantizedNet`] → [`Circuit`].

use std::path::{Path, PathBuf};

use crate::compile::{compile, Circuit, CompileOptions};
use crate::ir::Graph;
use crate::manifest::Manifest;
use crate::quant::{lower, quantize, LinearNet, QuantizedNet};
use crate::{Error, Result};
use blindfold_runtime::data::{Dataset, Preprocessing, RowRange};
use blindfold_runtime::eval::clear::run_program;
use blindfold_runtime::program::{Program, TableSet};

/// A model with the data it is calibrated and evaluated on.
#[derive(Clone, Debug)]
pub struct ModelBundle {
    pub name: String,
    pub graph: Graph,
    pub manifest: Option<Manifest>,
    pub dataset: Dataset,
    pub data_path: PathBuf,
    pub train: RowRange,
    pub test: RowRange,
    pub preprocessing: Preprocessing,
}

/// Where the data comes from when the model has no manifest (or to override it).
#[derive(Clone, Debug, Default)]
pub struct DataOverride {
    pub data: Option<PathBuf>,
    pub train: Option<RowRange>,
    pub test: Option<RowRange>,
}

impl ModelBundle {
    /// Loads `model.onnx`, its manifest `model.json` if present, and the dataset.
    pub fn load(model: &Path, over: &DataOverride) -> Result<Self> {
        let graph = crate::onnx::import_onnx_file(model)?;
        let manifest = Manifest::for_model(model)?;
        let name = manifest
            .as_ref()
            .map(|(m, _)| m.name.clone())
            .unwrap_or_else(|| {
                model
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into())
            });
        let data_path = match (&over.data, &manifest) {
            (Some(p), _) => p.clone(),
            (None, Some((m, mpath))) => resolve_relative(mpath, &m.data),
            (None, None) => {
                return Err(Error::Data(format!(
                    "{} has no manifest ({}); pass --data FILE.csv --train A..B --test C..D",
                    model.display(),
                    model.with_extension("json").display()
                )))
            }
        };
        let train = over
            .train
            .or(manifest.as_ref().map(|(m, _)| m.train_range()))
            .ok_or_else(|| Error::Data("no training rows: pass --train A..B".into()))?;
        let test = over
            .test
            .or(manifest.as_ref().map(|(m, _)| m.test_range()))
            .ok_or_else(|| Error::Data("no test rows: pass --test C..D".into()))?;
        let dataset = Dataset::from_csv(&data_path)?;
        let preprocessing = manifest
            .as_ref()
            .map(|(m, _)| m.preprocessing.clone())
            .unwrap_or(Preprocessing::None);
        let n_features = dataset.features.first().map_or(0, |r| r.len());
        if n_features != graph.input_len() {
            return Err(Error::Data(format!(
                "{} has {n_features} features per row, the model expects {}",
                data_path.display(),
                graph.input_len()
            )));
        }
        dataset.rows(train)?;
        dataset.rows(test)?;
        Ok(Self {
            name,
            graph,
            manifest: manifest.map(|(m, _)| m),
            dataset,
            data_path,
            train,
            test,
            preprocessing,
        })
    }

    /// Preprocessed rows and labels of `range`.
    pub fn rows(&self, range: RowRange) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
        let (x, y) = self.dataset.rows(range)?;
        let x = x
            .iter()
            .map(|r| self.preprocessing.apply(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((x, y))
    }

    /// Float accuracy of the imported graph on the test rows (f32, softmax included).
    pub fn float_accuracy(&self) -> Result<(usize, usize)> {
        let (x, y) = self.rows(self.test)?;
        let mut correct = 0;
        for (row, label) in x.iter().zip(&y) {
            let xf: Vec<f32> = row.iter().map(|v| *v as f32).collect();
            let out = self.graph.eval::<f32>(&xf)?;
            if blindfold_runtime::data::argmax(&out) == *label {
                correct += 1;
            }
        }
        Ok((correct, y.len()))
    }
}

fn resolve_relative(manifest_path: &Path, data: &str) -> PathBuf {
    let p = PathBuf::from(data);
    if p.is_absolute() || p.exists() {
        return p;
    }
    // manifests name data relative to the repository root: models/x.json → data/…
    let mut dir = manifest_path.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join(&p);
        if candidate.exists() {
            return candidate;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    p
}

/// Everything the compiler produced for one model.
pub struct Compiled {
    pub net: LinearNet,
    pub qnet: QuantizedNet,
    pub circuit: Circuit,
}

/// Lowers, quantizes (calibrating on the training rows) and compiles.
pub fn compile_bundle(bundle: &ModelBundle, options: &CompileOptions) -> Result<Compiled> {
    let net = lower(&bundle.graph)?;
    let (calib, _) = bundle.rows(bundle.train)?;
    let mut quant = options.quant.clone();
    quant.output_bits = quant.output_bits.min(options.params.max_output_bits());
    let qnet = quantize(&net, &calib, &quant)?;
    let qcalib = calib
        .iter()
        .map(|x| qnet.quantize_input(x))
        .collect::<Result<Vec<_>>>()?;
    let circuit = compile(
        &bundle.name,
        &qnet,
        bundle.preprocessing.clone(),
        options.params,
        &qcalib,
    )?;
    circuit
        .validate()
        .map_err(|e| Error::Compile(format!("the compiled circuit is not valid: {e}")))?;
    Ok(Compiled { net, qnet, circuit })
}

/// Clear-circuit accuracy on raw rows.
pub fn circuit_accuracy(
    circuit: &Circuit,
    rows: &[Vec<f64>],
    labels: &[usize],
) -> Result<(usize, usize)> {
    let program = Program::from_circuit(circuit)?;
    let mut correct = 0;
    for (raw, label) in rows.iter().zip(labels) {
        let q = circuit.input.quantize(raw)?;
        let out = run_program(&program, &TableSet::default(), &q)?;
        if circuit.predict_class(&out) == *label {
            correct += 1;
        }
    }
    Ok((correct, labels.len()))
}

/// How closely a circuit follows the float model on some rows.
#[derive(Clone, Copy, Debug)]
pub struct Fidelity {
    /// Accuracy of the clear circuit.
    pub accuracy: f64,
    /// Accuracy of the float model on the same rows.
    pub float_accuracy: f64,
    /// Fraction of rows where the clear circuit predicts what the float
    /// model predicts (what a quantizer should be judged by).
    pub agreement: f64,
    /// Mean KL divergence from the float model's softmax to the circuit's.
    pub kl: f64,
    /// Mean squared error of the circuit's logits against the float model's
    /// (each centred on its mean over classes), relative to the mean square
    /// of the centred float logits: 0 is perfect, 1 is as large as the
    /// logits themselves.
    pub logit_error: f64,
}

/// The float model's side of a comparison: raw rows, labels and float
/// logits, computed once and reused for every candidate circuit.
pub struct Reference {
    raw: Vec<Vec<f64>>,
    labels: Vec<usize>,
    logits: Vec<Vec<f64>>,
}

impl Reference {
    pub fn new(bundle: &ModelBundle, rows: RowRange) -> Result<Self> {
        let (raw, labels) = bundle.dataset.rows(rows)?;
        let (pre, _) = bundle.rows(rows)?;
        let logits = pre
            .iter()
            .map(|x| {
                let xf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
                Ok(bundle
                    .graph
                    .eval_logits::<f32>(&xf)?
                    .iter()
                    .map(|v| *v as f64)
                    .collect())
            })
            .collect::<Result<Vec<Vec<f64>>>>()?;
        Ok(Self {
            raw,
            labels,
            logits,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

fn centred(v: &[f64]) -> Vec<f64> {
    let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
    v.iter().map(|x| x - m).collect()
}

/// Compares the clear circuit with the float graph on `rows`.
pub fn fidelity(bundle: &ModelBundle, circuit: &Circuit, rows: RowRange) -> Result<Fidelity> {
    fidelity_of(&Reference::new(bundle, rows)?, circuit, 0, 0)
}

/// Compares a circuit with the float model: the exact clear path when
/// `draws` is 0, otherwise the clear path simulating the encrypted noise
/// (`draws` independent draws per row, seeded by `seed` and the row, so the
/// figures do not depend on thread scheduling), averaged.
pub fn fidelity_of(
    reference: &Reference,
    circuit: &Circuit,
    draws: usize,
    seed: u64,
) -> Result<Fidelity> {
    use blindfold_runtime::data::{argmax, log_softmax};
    use blindfold_runtime::eval::clear::{run_on, Clear};
    use rand_chacha::rand_core::SeedableRng;
    use rayon::prelude::*;
    let program = Program::from_circuit(circuit)?;
    let none = TableSet::default();
    let per_row = (0..reference.len())
        .into_par_iter()
        .map(|r| -> Result<[f64; 6]> {
            let fl = &reference.logits[r];
            let label = reference.labels[r];
            let q = circuit.input.quantize(&reference.raw[r])?;
            let outs = if draws == 0 {
                vec![run_program(&program, &none, &q)?]
            } else {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                    seed ^ (r as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                (0..draws)
                    .map(|_| {
                        let backend = Clear::simulating(&mut rng);
                        Ok(run_on(&backend, &program, &none, &q)?.0)
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            let fc = centred(fl);
            let f_sq = fc.iter().map(|v| v * v).sum::<f64>();
            let lp = log_softmax(fl);
            let fclass = argmax(fl);
            let mut acc = [0.0; 6];
            acc[1] = f64::from(u8::from(fclass == label));
            acc[5] = f_sq;
            for out in &outs {
                let ql = circuit.decode_output(out);
                let qclass = circuit.predict_class(out);
                acc[0] += f64::from(u8::from(qclass == label));
                acc[2] += f64::from(u8::from(qclass == fclass));
                let lq = log_softmax(&ql);
                acc[3] += lp
                    .iter()
                    .zip(&lq)
                    .map(|(a, b)| a.exp() * (a - b))
                    .sum::<f64>();
                acc[4] += centred(&ql)
                    .iter()
                    .zip(&fc)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>();
            }
            let k = outs.len() as f64;
            for v in acc.iter_mut().take(5).skip(2) {
                *v /= k;
            }
            acc[0] /= k;
            Ok(acc)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sum = [0.0; 6];
    for row in &per_row {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
    let n = reference.len().max(1) as f64;
    Ok(Fidelity {
        accuracy: sum[0] / n,
        float_accuracy: sum[1] / n,
        agreement: sum[2] / n,
        kl: sum[3] / n,
        logit_error: if sum[5] > 0.0 { sum[4] / sum[5] } else { 0.0 },
    })
}
