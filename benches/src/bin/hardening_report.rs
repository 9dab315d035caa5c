//! `hardening-report`: what each hardening policy costs in accuracy,
//! bootstraps and latency, on the digits test split.
//!
//! For each policy: accuracy of the clear path on every test row (with a
//! fresh noise draw per row from a seeded generator), and on the first
//! `--fhe-samples` rows the same plans (same noise) on real ciphertexts:
//! accuracy, agreement with the clear answer, bootstraps and latency. All
//! policies of one model share the members' hidden layers per encrypted
//! row (`eval::fhe::evaluate_shared`); latency is measured separately,
//! one full evaluation per policy per row, on `--latency-samples` rows.
//! Also prints the argmax bootstrap counts for 2, 10 and 100 classes.
//!
//! ```text
//! cargo run --release -p blindfold-benches --bin hardening-report -- \
//!     --fhe-samples 100 --json target/hardening-report.json
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use blindfold_compiler::pipeline::{DataOverride, ModelBundle};
use blindfold_runtime::answer::{Query, Reply, Responder};
use blindfold_runtime::circuit::Circuit;
use blindfold_runtime::eval::fhe::{evaluate_shared, Fhe};
use blindfold_runtime::eval::never;
use blindfold_runtime::harden::{
    argmax_bootstraps, Aggregate, Answer, Hardened, Noise, NoiseKind, OutputMode, Policy,
};
use blindfold_runtime::keys::{ClientKey, EvaluationKey};
use clap::Parser;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Accuracy, bootstraps and latency of each hardening policy on digits")]
struct Args {
    /// The single model (R1).
    #[arg(long, default_value = "models/digits-mlp-exact.circuit.json")]
    circuit: PathBuf,
    /// Its ONNX file (float accuracy and the test split).
    #[arg(long, default_value = "models/digits-mlp.onnx")]
    onnx: PathBuf,
    /// PATE teachers, `{i}` replaced by 0..teachers.
    #[arg(long, default_value = "models/digits-pate-t{i}.circuit.json")]
    teacher: String,
    #[arg(long, default_value_t = 5)]
    teachers: usize,
    /// Standard deviations (votes) of the PATE rows.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pate_sigma: Vec<f64>,
    /// δ for the PATE ε.
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// Test rows also run on ciphertexts (0: clear only).
    #[arg(long, default_value_t = 100)]
    fhe_samples: usize,
    /// Run only the policies whose name contains one of these on
    /// ciphertexts (default: all).
    #[arg(long, value_delimiter = ',')]
    fhe_only: Vec<String>,
    /// Rows timed with one full evaluation per policy.
    #[arg(long, default_value_t = 3)]
    latency_samples: usize,
    /// Seed of the noise generator (the same draws on both paths).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    model: String,
    policy: String,
    /// Top-2 rows: whether the true label is among the two.
    metric: &'static str,
    clear_correct: usize,
    clear_rows: usize,
    fhe_correct: usize,
    fhe_rows: usize,
    fhe_equal_clear: usize,
    bootstraps: usize,
    stage_bootstraps: usize,
    latency_ms: Option<f64>,
    epsilon_per_answer: Option<f64>,
    /// Predicted failure probability of the clamp and stage bootstraps.
    stage_p_fail: f64,
}

struct Case {
    name: String,
    model: Hardened,
    /// The model behind the answer protocol (its bootstrap tables built
    /// on first encrypted use).
    responder: Responder,
    rdp: Option<f64>,
}

impl Case {
    fn new(name: String, model: Hardened, rdp: Option<f64>) -> Self {
        Self {
            name,
            responder: Responder::new(model.clone()),
            model,
            rdp,
        }
    }
}

fn policy(output: OutputMode, sigma: f64) -> Policy {
    Policy {
        output,
        noise: if sigma > 0.0 {
            Noise {
                kind: NoiseKind::Gaussian,
                scale: sigma,
            }
        } else {
            Noise::NONE
        },
        clamp_inputs: false,
        aggregate: Aggregate::Logits,
    }
}

fn correct(a: &Answer, truth: usize, top2: bool) -> bool {
    if top2 {
        a.labels.contains(&truth)
    } else {
        a.label == truth
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let r1 = Circuit::load(&args.circuit).with_context(|| args.circuit.display().to_string())?;
    let bundle = ModelBundle::load(&args.onnx, &DataOverride::default())?;
    let (float_ok, float_n) = bundle.float_accuracy()?;
    let (rows, labels) = bundle.dataset.rows(bundle.test)?;
    let quantized: Vec<Vec<i64>> = rows
        .iter()
        .map(|r| r1.input.quantize(r))
        .collect::<Result<_, _>>()?;

    println!("argmax bootstraps (tournament + refresh):");
    for p in [5u32, 7] {
        let counts: Vec<String> = [2usize, 10, 100]
            .iter()
            .map(|c| {
                if (*c as u64) <= 1u64 << p {
                    format!("{c} classes: {}", argmax_bootstraps(*c, p))
                } else {
                    format!("{c} classes: does not fit")
                }
            })
            .collect();
        println!("  {p}-bit window: {}", counts.join(", "));
    }

    let single = |name: &str, pol: Policy| -> anyhow::Result<Case> {
        Ok(Case::new(
            name.to_string(),
            Hardened::new("digits-mlp", vec![r1.clone()], pol)?,
            None,
        ))
    };
    let mut cases = vec![
        single("raw", policy(OutputMode::Raw, 0.0))?,
        single("scores 2 bits", policy(OutputMode::Scores { bits: 2 }, 0.0))?,
        single("label", policy(OutputMode::Label, 0.0))?,
        single("label + noise σ=0.5", policy(OutputMode::Label, 0.5))?,
        single("label + noise σ=1", policy(OutputMode::Label, 1.0))?,
        single("label + noise σ=2", policy(OutputMode::Label, 2.0))?,
        single(
            "top_k k=2 (hit rate)",
            policy(OutputMode::TopK { k: 2 }, 0.0),
        )?,
        single(
            "label + input clamp",
            Policy {
                clamp_inputs: true,
                ..policy(OutputMode::Label, 0.0)
            },
        )?,
    ];
    let teachers: Vec<Circuit> = (0..args.teachers)
        .map(|i| {
            let path = args.teacher.replace("{i}", &i.to_string());
            Circuit::load(std::path::Path::new(&path)).with_context(|| path)
        })
        .collect::<Result<_, _>>()?;
    for sigma in &args.pate_sigma {
        let pol = Policy {
            aggregate: Aggregate::Votes,
            ..policy(OutputMode::Label, *sigma)
        };
        cases.push(Case::new(
            format!("PATE {} teachers, GNMax σ={sigma}", teachers.len()),
            Hardened::new("digits-pate", teachers.clone(), pol)?,
            Some(blindfold_runtime::dp::gnmax_rdp_per_order(*sigma)),
        ));
    }

    // noise: one draw per (case, row), the same on both paths
    let mut rng = ChaCha20Rng::seed_from_u64(args.seed);
    let plans: Vec<Vec<_>> = cases
        .iter()
        .map(|c| {
            (0..rows.len())
                .map(|_| {
                    let noise = c.model.policy.noise.sample(c.model.noise_len(), &mut rng);
                    c.model.tables(&noise)
                })
                .collect()
        })
        .collect();
    let mut results: Vec<Row> = Vec::new();
    let mut clear_answers: Vec<Vec<Vec<i64>>> = Vec::new();
    for (c, plans) in cases.iter().zip(&plans) {
        let top2 = matches!(c.model.policy.output, OutputMode::TopK { .. });
        let mut ok = 0;
        let mut answers = Vec::with_capacity(rows.len());
        for (r, (t, plan)) in labels.iter().zip(plans).enumerate() {
            // teachers may use another input encoding than R1
            let q = if c.model.members[0].input == r1.input {
                quantized[r].clone()
            } else {
                c.model.members[0].input.quantize(&rows[r])?
            };
            let out = c.model.evaluate_clear(plan, &q)?;
            ok += usize::from(correct(&c.model.decode(&out), *t, top2));
            answers.push(out);
        }
        clear_answers.push(answers);
        let cost = c.model.cost();
        results.push(Row {
            model: c.model.members[0].name.clone(),
            policy: c.name.clone(),
            metric: if top2 { "top-2 hit rate" } else { "accuracy" },
            clear_correct: ok,
            clear_rows: rows.len(),
            fhe_correct: 0,
            fhe_rows: 0,
            fhe_equal_clear: 0,
            bootstraps: cost.bootstraps(),
            stage_bootstraps: cost.stage + cost.input_clamp,
            latency_ms: None,
            stage_p_fail: c.model.stage_failure_probability(),
            epsilon_per_answer: c.rdp.map(|s| blindfold_runtime::dp::epsilon(s, args.delta)),
        });
        eprintln!("clear: {:<32} {ok}/{}", c.name, rows.len());
    }

    if args.fhe_samples > 0 {
        // one key per parameter set
        let mut keys: Vec<(ClientKey, EvaluationKey)> = Vec::new();
        let n = args.fhe_samples.min(rows.len());
        // group cases by (members, clamp) so hidden layers are shared
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            if !args.fhe_only.is_empty() && !args.fhe_only.iter().any(|f| c.name.contains(f)) {
                continue;
            }
            match groups.iter_mut().find(|g| {
                let o = &cases[g[0]];
                o.model.members == c.model.members
                    && o.model.policy.clamp_inputs == c.model.policy.clamp_inputs
            }) {
                Some(g) => g.push(i),
                None => groups.push(vec![i]),
            }
        }
        for g in &groups {
            let head = &cases[g[0]];
            let params = head.model.params();
            let k = match keys.iter().position(|(ck, _)| ck.params == params) {
                Some(k) => k,
                None => {
                    eprintln!("generating keys for {}", params.name());
                    let ck = ClientKey::generate(params);
                    let ek = ck.evaluation_key().decompress();
                    keys.push((ck, ek));
                    keys.len() - 1
                }
            };
            let (ck, ek) = &keys[k];
            let spec = head.model.client_spec();
            let started = Instant::now();
            for r in 0..n {
                let q = head.model.members[0].input.quantize(&rows[r])?;
                let ct = ck.encrypt(&spec, &q)?;
                let runs: Vec<_> = g
                    .iter()
                    .map(|i| (cases[*i].model.program(), &plans[*i][r]))
                    .collect();
                // members and clamp agree within the group: the hidden
                // layers every policy's program shares run once
                let backend = Fhe::for_programs(
                    ek,
                    g.iter().map(|i| cases[*i].responder.fhe_tables()).collect(),
                )?;
                let outs = evaluate_shared(&runs, &backend, &ct, &never)?;
                for (i, (out, _)) in g.iter().zip(outs) {
                    let c = &cases[*i];
                    let dec = ck.decrypt(&c.model.client_spec(), &out)?;
                    let top2 = matches!(c.model.policy.output, OutputMode::TopK { .. });
                    let row = &mut results[*i];
                    row.fhe_rows += 1;
                    row.fhe_correct += usize::from(correct(&c.model.decode(&dec), labels[r], top2));
                    row.fhe_equal_clear += usize::from(dec == clear_answers[*i][r]);
                }
                if (r + 1) % 10 == 0 {
                    eprintln!(
                        "fhe: {} x{} rows {}/{n} ({:.0} s)",
                        head.name,
                        g.len(),
                        r + 1,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            // latency: full answers through the answer protocol, one policy at a time
            for i in g {
                let mut times = Vec::new();
                for r in 0..args.latency_samples.min(n) {
                    let q = cases[*i].model.members[0].input.quantize(&rows[r])?;
                    let ct = ck.encrypt(&spec, &q)?;
                    let t = Instant::now();
                    let (reply, stats) = cases[*i].responder.answer_with(
                        Query::Encrypted {
                            input: &ct,
                            key: ek,
                        },
                        &plans[*i][r],
                        &never,
                    )?;
                    anyhow::ensure!(matches!(reply, Reply::Encrypted(_)));
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                    anyhow::ensure!(stats.bootstraps == results[*i].bootstraps);
                }
                times.sort_by(f64::total_cmp);
                results[*i].latency_ms = times.get(times.len() / 2).copied();
            }
        }
    }

    println!(
        "\nfloat (ONNX): {float_ok}/{float_n} = {:.4}",
        float_ok as f64 / float_n as f64
    );
    println!(
        "{:<34} {:>16} {:>16} {:>11} {:>6} {:>6} {:>10} {:>9}",
        "policy", "clear", "FHE", "FHE=clear", "PBS", "stage", "latency", "ε/answer"
    );
    let mut p_fail_lines = Vec::new();
    for r in &results {
        let frac = |a: usize, b: usize| {
            if b == 0 {
                "-".to_string()
            } else {
                format!("{a}/{b}={:.3}", a as f64 / b as f64)
            }
        };
        println!(
            "{:<34} {:>16} {:>16} {:>11} {:>6} {:>6} {:>10} {:>9}",
            format!("{} [{}]", r.policy, r.model),
            frac(r.clear_correct, r.clear_rows),
            frac(r.fhe_correct, r.fhe_rows),
            if r.fhe_rows == 0 {
                "-".into()
            } else {
                format!("{}/{}", r.fhe_equal_clear, r.fhe_rows)
            },
            r.bootstraps,
            r.stage_bootstraps,
            r.latency_ms
                .map(|v| format!("{v:.0} ms"))
                .unwrap_or_else(|| "-".into()),
            r.epsilon_per_answer
                .map(|e| format!("{e:.2}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    for r in &results {
        p_fail_lines.push(format!("  {}: {:.1e}", r.policy, r.stage_p_fail));
    }
    println!(
        "predicted failure probability of the hardening bootstraps per answer:\n{}",
        p_fail_lines.join("\n")
    );
    if let Some(path) = &args.json {
        let w5: Vec<(usize, usize)> = [2, 10].map(|c| (c, argmax_bootstraps(c, 5))).to_vec();
        let w7: Vec<(usize, usize)> = [2, 10, 100].map(|c| (c, argmax_bootstraps(c, 7))).to_vec();
        let doc = serde_json::json!({
            "float_correct": float_ok,
            "float_rows": float_n,
            "seed": args.seed,
            "delta": args.delta,
            "argmax_bootstraps": {
                "window_5": w5,
                "window_7": w7,
            },
            "rows": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
