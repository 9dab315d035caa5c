//! The `blindfold` subcommands that talk to a server, or work on a key
//! directory for programs that do the transport themselves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use blindfold_client::crypto::{self, Prediction};
use blindfold_client::keys::KeyDir;
use blindfold_client::remote::DEFAULT_SERVER;
use blindfold_client::{ClientSpec, ConnectOptions, Remote};
use blindfold_proto::v1;
use blindfold_runtime::params::ParamSet;

/// Where the server is and who we are.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Server address (http:// or https://)
    #[arg(long, global = true, env = "BLINDFOLD_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token
    #[arg(long, global = true, env = "BLINDFOLD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate to trust for https:// servers
    #[arg(long, global = true, env = "BLINDFOLD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Per-call deadline in seconds
    #[arg(long, global = true, default_value_t = 600)]
    pub timeout: u64,
    /// Largest encrypted answer accepted, in MiB (refused before it is
    /// received)
    #[arg(long, global = true, default_value_t = 256)]
    pub max_answer_mib: usize,
}

#[derive(Subcommand)]
pub enum NetCommand {
    /// List the models a server serves, with each model's policy.
    Models {
        #[arg(long)]
        json: bool,
    },
    /// Show this identity's remaining query budget for a model.
    Budget {
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Generate keys for a model's parameter set (the secret key stays in DIR).
    Keygen {
        model: String,
        #[arg(long)]
        keys: PathBuf,
        /// Replace existing keys in DIR
        #[arg(long)]
        force: bool,
    },
    /// Upload the evaluation key in DIR (idempotent); prints its key id.
    Register {
        #[arg(long)]
        keys: PathBuf,
    },
    /// Encrypt each CSV row, predict on the server, decrypt, print.
    Predict {
        model: String,
        #[arg(long)]
        keys: PathBuf,
        /// CSV file, one input per row, features only
        #[arg(long)]
        input: PathBuf,
        /// The CSV's last column is the true label (printed, and accuracy)
        #[arg(long)]
        labels: bool,
        /// Rows per Predict call
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Predict on plaintext features (if the model's owner enabled it).
    PredictClear {
        model: String,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        labels: bool,
        #[arg(long)]
        json: bool,
    },
    /// Encrypt CSV rows into files (OUT/input-0000.bin, ...) for a program
    /// that sends them itself.
    Encrypt {
        model: String,
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Decrypt answer files (the bytes of PredictResponse.outputs).
    Decrypt {
        model: String,
        #[arg(long)]
        keys: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show whether the server holds the key in DIR.
    KeyStatus {
        #[arg(long)]
        keys: PathBuf,
    },
    /// Delete the key in DIR from the server (local files stay).
    DeleteKey {
        #[arg(long)]
        keys: PathBuf,
    },
    /// Run the attack lab against a server: extraction, memorization,
    /// membership, inversion and adversarial transfer under each policy it
    /// serves the audit's victims with (recognized by their circuits'
    /// hashes, policies read from GetModel; `server/audit.toml` serves the
    /// reference suite), plus honest-user accuracy.
    Audit {
        /// Small query counts (a couple of minutes) instead of the full audit
        #[arg(long)]
        short: bool,
        /// Also write every number as JSON here
        #[arg(long)]
        json: Option<PathBuf>,
        /// Test rows per policy repeated through real encryption, to check
        /// the clear answers the attacks used match encrypted ones
        #[arg(long, default_value_t = 4)]
        fhe_sample: usize,
        /// Key directory for the encrypted check (3_3 keys; generated there
        /// if missing)
        #[arg(long, default_value = "target/audit-keys")]
        keys: PathBuf,
        /// Only the policies whose name contains one of these
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The repository (data/ and models/)
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
}

async fn connect(s: &ServerArgs) -> anyhow::Result<Remote> {
    let ca_certificate = match &s.ca_cert {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let options = ConnectOptions {
        token: s.token.clone(),
        ca_certificate,
        timeout: Some(Duration::from_secs(s.timeout)),
    };
    Ok(Remote::connect(&s.server, options)
        .await?
        .with_max_answer_bytes(s.max_answer_mib.saturating_mul(1 << 20)))
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The spec for `model`: from the server when reachable (and saved in the
/// key directory), else the one saved there.
async fn spec_for(server: &ServerArgs, keys: &KeyDir, model: &str) -> anyhow::Result<ClientSpec> {
    if let Some(saved) = keys.spec(model)? {
        return Ok(saved);
    }
    let remote = connect(server).await?;
    let (_, spec) = remote.get_model(model).await?;
    keys.save_spec(&spec)?;
    Ok(spec)
}

#[derive(Serialize)]
struct PredictRow {
    row: usize,
    label: usize,
    /// Best classes, best first (top-k policies).
    labels: Vec<usize>,
    true_label: Option<usize>,
    /// Truncated or raw scores (score policies; empty for label policies).
    logits: Vec<f64>,
    encrypt_ms: f64,
    round_trip_ms: f64,
    server_evaluation_ms: f64,
    server_queue_ms: f64,
    bootstraps: u32,
    decrypt_ms: f64,
}

pub async fn run(command: NetCommand, server: &ServerArgs) -> anyhow::Result<()> {
    match command {
        NetCommand::Models { json } => {
            let remote = connect(server).await?;
            let models = remote.list_models().await?;
            if json {
                let list: Vec<_> = models
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "name": m.name,
                            "description": m.description,
                            "parameter_set": m.parameter_set,
                            "classes": m.classes,
                            "bootstraps_per_inference": m.bootstraps_per_inference,
                            "predict_clear_enabled": m.predict_clear_enabled,
                            "policy": m.policy.as_ref().map(policy_json),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<18} {:>7} {:>10} {:>6} {:>4}  {:<52} description",
                    "model", "classes", "bootstraps", "clear", "set", "policy"
                );
                for m in models {
                    let set = ParamSet::from_name(&m.parameter_set)
                        .map(|p| p.short_name().to_string())
                        .unwrap_or_else(|| m.parameter_set.clone());
                    // a hostile server's text must not drive the terminal
                    let text = blindfold_client::error::printable;
                    println!(
                        "{:<18} {:>7} {:>10} {:>6} {:>4}  {:<52} {}",
                        text(&m.name),
                        m.classes,
                        m.bootstraps_per_inference,
                        if m.predict_clear_enabled { "yes" } else { "no" },
                        text(&set),
                        m.policy.as_ref().map(fmt_policy).unwrap_or_default(),
                        text(&m.description)
                    );
                }
            }
        }
        NetCommand::Budget { model, json } => {
            let remote = connect(server).await?;
            let b = remote.get_budget(&model).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&budget_json(&b))?);
            } else {
                println!("{model}: {}", fmt_budget(&b));
            }
        }
        NetCommand::Keygen { model, keys, force } => {
            let remote = connect(server).await?;
            let (_, spec) = remote.get_model(&model).await?;
            let dir = KeyDir::new(&keys);
            if dir.exists() && !force {
                let params = dir.params()?;
                if params == spec.params {
                    dir.save_spec(&spec)?;
                    eprintln!(
                        "{} already holds keys for {}; saved the spec of {model}",
                        keys.display(),
                        params.name()
                    );
                    println!("{}", dir.key_id()?);
                    return Ok(());
                }
                bail!(
                    "{} holds keys for {}, model {model} needs {}; use another directory or --force",
                    keys.display(),
                    params.name(),
                    spec.params.name()
                );
            }
            let bar = spinner("generating keys");
            let start = Instant::now();
            let (_, ek) = dir.generate(spec.params, force, &mut |stage| {
                bar.set_message(stage.to_string())
            })?;
            bar.finish_and_clear();
            dir.save_spec(&spec)?;
            eprintln!(
                "keys for {} in {} ({:.1} s); evaluation key {:.1} MB; secret key written with mode 0600",
                spec.params.name(),
                keys.display(),
                start.elapsed().as_secs_f64(),
                ek.len() as f64 / 1e6
            );
            println!("{}", blindfold_client::keys::key_id(&ek));
        }
        NetCommand::Register { keys } => {
            let dir = KeyDir::new(&keys);
            let params = dir.params()?;
            let ek = Arc::new(dir.evaluation_key()?);
            let remote = connect(server).await?;
            let bar = ProgressBar::new(ek.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "uploading {bar:32} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let b = bar.clone();
            let start = Instant::now();
            let r = remote
                .register_key(
                    ek.clone(),
                    params.name(),
                    Arc::new(move |sent, _| b.set_position(sent)),
                )
                .await?;
            bar.finish_and_clear();
            eprintln!(
                "{} {:.1} MB in {:.1} s (upload and server-side check)",
                if r.already_registered {
                    "already registered;"
                } else {
                    "registered"
                },
                r.bytes as f64 / 1e6,
                start.elapsed().as_secs_f64()
            );
            println!("{}", r.key_id);
        }
        NetCommand::Predict {
            model,
            keys,
            input,
            labels,
            batch,
            json,
        } => {
            if batch == 0 {
                bail!("--batch must be at least 1");
            }
            let dir = KeyDir::new(&keys);
            let remote = connect(server).await?;
            let (_, spec) = remote.get_model(&model).await?;
            let ck = dir.client_key()?;
            if ck.params != spec.params {
                bail!(
                    "the keys in {} are for {}, model {model} needs {}; run keygen with another directory",
                    keys.display(),
                    ck.params.name(),
                    spec.params.name()
                );
            }
            dir.save_spec(&spec)?;
            let key_id = dir.key_id()?;
            let (rows, truth) = crypto::read_csv(&input, spec.input.len(), labels)?;
            let mut out = Vec::new();
            let mut budget = None;
            for (b, chunk) in rows.chunks(batch).enumerate() {
                let t = Instant::now();
                let cts = chunk
                    .iter()
                    .map(|r| crypto::encrypt_row(&ck, &spec, r))
                    .collect::<Result<Vec<_>, _>>()?;
                let encrypt = t.elapsed() / chunk.len() as u32;
                let t = Instant::now();
                let response = match remote.predict(&model, &key_id, cts).await {
                    Err(e)
                        if e.code() == Some(tonic::Code::NotFound)
                            && e.to_string().contains("key") =>
                    {
                        bail!(
                            "{e}\nhint: run `blindfold register --keys {}` first",
                            keys.display()
                        )
                    }
                    other => other?,
                };
                let round_trip = t.elapsed();
                let timing = response.timing.unwrap_or_default();
                budget = response.budget.clone();
                let n = chunk.len() as f64;
                for (i, bytes) in response.outputs.iter().enumerate() {
                    let t = Instant::now();
                    let p: Prediction = crypto::decrypt_output(&ck, &spec, bytes)?;
                    let row = b * batch + i;
                    let r = PredictRow {
                        row,
                        label: p.label,
                        labels: p.labels,
                        true_label: truth[row],
                        logits: p.logits,
                        encrypt_ms: ms(encrypt),
                        round_trip_ms: ms(round_trip) / n,
                        server_evaluation_ms: timing.evaluation_ms / n,
                        server_queue_ms: timing.queue_ms,
                        bootstraps: timing.bootstraps / chunk.len() as u32,
                        decrypt_ms: ms(t.elapsed()),
                    };
                    if !json {
                        print_prediction(&r);
                    }
                    out.push(r);
                }
            }
            let scored = out.iter().map(|r| (r.label, r.true_label));
            print_listing(json, &out, scored, budget.as_ref())?;
        }
        NetCommand::PredictClear {
            model,
            input,
            labels,
            json,
        } => {
            let remote = connect(server).await?;
            let (_, spec) = remote.get_model(&model).await?;
            let (rows, truth) = crypto::read_csv(&input, spec.input.len(), labels)?;
            let mut all = Vec::new();
            let mut budget = None;
            for chunk in rows.chunks(16) {
                let r = remote.predict_clear(&model, chunk.to_vec()).await?;
                all.extend(r.predictions);
                budget = r.budget;
            }
            let list: Vec<_> = all
                .iter()
                .zip(&truth)
                .enumerate()
                .map(|(row, (p, t))| {
                    serde_json::json!({"row": row, "label": p.label, "labels": p.labels, "true_label": t, "logits": p.logits})
                })
                .collect();
            if !json {
                for (row, (p, t)) in all.iter().zip(&truth).enumerate() {
                    let labels: Vec<usize> = p.labels.iter().map(|l| *l as usize).collect();
                    println!(
                        "row {row}: {}{}",
                        fmt_answer(p.label as usize, &labels, &p.logits),
                        t.map(|t| format!(" (true {t})")).unwrap_or_default(),
                    );
                }
            }
            let scored = all.iter().zip(&truth).map(|(p, t)| (p.label as usize, *t));
            print_listing(json, &list, scored, budget.as_ref())?;
        }
        NetCommand::Encrypt {
            model,
            keys,
            input,
            out,
        } => {
            let dir = KeyDir::new(&keys);
            let ck = dir.client_key()?;
            let spec = spec_for(server, &dir, &model).await?;
            if ck.params != spec.params {
                bail!(
                    "the keys in {} are for {}, model {model} needs {}",
                    keys.display(),
                    ck.params.name(),
                    spec.params.name()
                );
            }
            let (rows, _) = crypto::read_csv(&input, spec.input.len(), false)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (i, r) in rows.iter().enumerate() {
                let path = out.join(format!("input-{i:04}.bin"));
                std::fs::write(&path, crypto::encrypt_row(&ck, &spec, r)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
        }
        NetCommand::Decrypt {
            model,
            keys,
            files,
            json,
        } => {
            let dir = KeyDir::new(&keys);
            let ck = dir.client_key()?;
            let spec = spec_for(server, &dir, &model).await?;
            let mut list = Vec::new();
            for f in &files {
                let bytes = read_answer(f, &spec)?;
                let p = crypto::decrypt_output(&ck, &spec, &bytes)
                    .with_context(|| format!("decrypting {}", f.display()))?;
                if !json {
                    println!(
                        "{}: {}",
                        f.display(),
                        fmt_answer(p.label, &p.labels, &p.logits)
                    );
                }
                list.push(serde_json::json!({"file": f, "label": p.label, "labels": p.labels, "logits": p.logits}));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            }
        }
        NetCommand::Audit {
            short,
            json,
            fhe_sample,
            keys,
            only,
            repo,
        } => audit(server, short, json, fhe_sample, &keys, &only, &repo).await?,
        NetCommand::KeyStatus { keys } => {
            let id = KeyDir::new(&keys).key_id()?;
            let remote = connect(server).await?;
            let s = remote.key_status(&id).await?;
            println!(
                "key {}\nparameter set {}\nbytes {}\nregistered at {} (unix)\nin server memory {}",
                s.key_id, s.parameter_set, s.bytes, s.registered_at, s.cached
            );
        }
        NetCommand::DeleteKey { keys } => {
            let id = KeyDir::new(&keys).key_id()?;
            let remote = connect(server).await?;
            remote.delete_key(&id).await?;
            println!("deleted {id} from {}", server.server);
        }
    }
    Ok(())
}

/// `blindfold audit`: every attack under every policy the server serves the
/// audit's victims with.
async fn audit(
    server: &ServerArgs,
    short: bool,
    json: Option<PathBuf>,
    fhe_sample: usize,
    keys: &Path,
    only: &[String],
    repo: &Path,
) -> anyhow::Result<()> {
    use blindfold_lab::discover::{targets as discover_targets, Served, Victims};
    use blindfold_lab::remote::{check_encrypted, RemoteOracle};
    use blindfold_lab::suite::{audit_policy, render, summary_table, Data, SuiteOptions};
    use blindfold_lab::{AuditError, Oracle};
    let started = Instant::now();
    let remote = connect(server).await?;
    // the victims and policies, from what the server says of each model
    let mut served = Vec::new();
    for m in remote.list_models().await? {
        let (spec, _) = remote.get_model(&m.name).await?;
        served.push(Served::from_spec(&spec)?);
    }
    let mut targets = discover_targets(&served, &Victims::reference(repo)?);
    if targets.is_empty() {
        bail!(
            "{} serves none of the audit's victims (the circuits under {}/models)",
            server.server,
            repo.display()
        );
    }
    if !only.is_empty() {
        targets.retain(|t| only.iter().any(|o| t.policy.contains(o.as_str())));
    }
    let opts = if short {
        SuiteOptions::short(repo)
    } else {
        SuiteOptions::full(repo)
    };
    let handle = tokio::runtime::Handle::current();
    let r = remote.clone();
    let t = targets.clone();
    let reports = tokio::task::spawn_blocking(move || {
        let data = Data::load(&opts.repo)?;
        let mut open = |name: &str| -> Result<Box<dyn Oracle>, AuditError> {
            let (_, spec) = handle.block_on(r.get_model(name))?;
            Ok(Box::new(RemoteOracle::new(
                r.clone(),
                name,
                spec,
                handle.clone(),
            )))
        };
        t.iter()
            .map(|target| {
                audit_policy(target, &mut open, &data, &opts, &mut |m| {
                    eprintln!("[{:>5.0} s] {m}", started.elapsed().as_secs_f64())
                })
            })
            .collect::<Result<Vec<_>, AuditError>>()
    })
    .await??;
    // a sample of each policy's answers through real encryption
    let mut checks = Vec::new();
    if fhe_sample > 0 {
        // one key per parameter set the checked models use, each in its own
        // subdirectory of `keys` (made once, reused by later audits)
        let mut registered: Vec<(ParamSet, blindfold_client::ClientKey, String)> = Vec::new();
        for t in &targets {
            let Some(model) = &t.mlp else { continue };
            let (_, spec) = remote.get_model(model).await?;
            if registered.iter().any(|(p, _, _)| *p == spec.params) {
                continue;
            }
            let dir = KeyDir::new(keys.join(spec.params.short_name()));
            if !dir.exists() || dir.params()? != spec.params {
                eprintln!(
                    "generating {} keys in {}",
                    spec.params.short_name(),
                    dir.path().display()
                );
                dir.generate(spec.params, true, &mut |_| {})?;
            }
            let ck = dir.client_key()?;
            let ek = Arc::new(dir.evaluation_key()?);
            let key_id = remote
                .register_key(ek, spec.params.name(), Arc::new(|_, _| {}))
                .await?
                .key_id;
            registered.push((spec.params, ck, key_id));
        }
        if registered.is_empty() {
            bail!("no R1 victim to check through encryption");
        }
        let data = Data::load(repo)?;
        let rows: Vec<Vec<f64>> = data.test.iter().take(fhe_sample).cloned().collect();
        for t in &targets {
            let Some(model) = &t.mlp else { continue };
            let (_, spec) = remote.get_model(model).await?;
            let (_, ck, key_id) = registered
                .iter()
                .find(|(p, _, _)| *p == spec.params)
                .ok_or_else(|| anyhow::anyhow!("no key registered for {model}"))?;
            let (remote, handle) = (remote.clone(), tokio::runtime::Handle::current());
            let (model, ck, key_id, rows) =
                (model.clone(), ck.clone(), key_id.clone(), rows.clone());
            let check = tokio::task::spawn_blocking(move || {
                check_encrypted(&remote, &handle, &model, &spec, &ck, &key_id, &rows)
            })
            .await??;
            eprintln!(
                "[{:>5.0} s] encrypted check, {}: {}/{} encrypted answers equal the clear answer ({} of {} for two clear answers)",
                started.elapsed().as_secs_f64(),
                t.policy,
                check.agree,
                check.rows,
                check.clear_vs_clear,
                check.rows
            );
            checks.push((t.policy.clone(), check));
        }
    }
    println!("{}", render(&reports));
    for (policy, c) in &checks {
        println!(
            "encrypted check, {policy}: {}/{} encrypted answers equal the clear answer for the same row ({}/{} between two clear answers: the noise's own rate)",
            c.agree, c.rows, c.clear_vs_clear, c.rows
        );
    }
    println!("\n{}", summary_table(&reports));
    println!(
        "audit finished in {:.1} min ({})",
        started.elapsed().as_secs_f64() / 60.0,
        if short { "short" } else { "full" }
    );
    if let Some(path) = json {
        let doc = serde_json::json!({
            "short": short,
            "seconds": started.elapsed().as_secs_f64(),
            "policies": reports,
            "encrypted_checks": checks,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn read_answer(path: &Path, spec: &ClientSpec) -> anyhow::Result<Vec<u8>> {
    let limit = crypto::output_limit(spec);
    Ok(blindfold_runtime::data::read_bytes_limited(path, limit)?)
}

fn fmt_logits(l: &[f64]) -> String {
    l.iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the policy returned: the label, the top-k list, or the scores.
fn fmt_answer(label: usize, labels: &[usize], logits: &[f64]) -> String {
    if !logits.is_empty() {
        format!("label {label}  scores [{}]", fmt_logits(logits))
    } else if labels.len() > 1 {
        format!(
            "top-{} [{}]",
            labels.len(),
            labels
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!("label {label}")
    }
}

fn policy_mode(p: &v1::Policy) -> String {
    match v1::OutputMode::try_from(p.output) {
        Ok(v1::OutputMode::Raw) => "raw".into(),
        Ok(v1::OutputMode::Scores) => format!("scores {} bits", p.scores_bits),
        Ok(v1::OutputMode::Label) => "label".into(),
        Ok(v1::OutputMode::TopK) => format!("top-{}", p.top_k),
        _ => "unknown".into(),
    }
}

fn policy_noise(p: &v1::Policy) -> Option<String> {
    match v1::NoiseKind::try_from(p.noise) {
        Ok(v1::NoiseKind::Gaussian) => Some(format!("gaussian σ={}", p.noise_scale)),
        Ok(v1::NoiseKind::Laplace) => Some(format!("laplace b={}", p.noise_scale)),
        _ => None,
    }
}

/// One line: mode, noise, clamp, ensemble, budget.
fn fmt_policy(p: &v1::Policy) -> String {
    let mut parts = vec![policy_mode(p)];
    parts.extend(policy_noise(p));
    if p.clamp_inputs {
        parts.push("clamp".into());
    }
    if p.members > 1 {
        let agg = if p.aggregate == v1::Aggregate::Votes as i32 {
            "votes"
        } else {
            "logits"
        };
        parts.push(format!("{} members ({agg})", p.members));
    }
    if let Some(b) = &p.budget {
        if let Some(a) = b.answers {
            parts.push(format!("{a} answers"));
        }
        if let Some(e) = b.epsilon {
            parts.push(format!("ε≤{e}"));
        }
    }
    parts.join(", ")
}

fn policy_json(p: &v1::Policy) -> serde_json::Value {
    serde_json::json!({
        "output": policy_mode(p),
        "noise": policy_noise(p),
        "clamp_inputs": p.clamp_inputs,
        "members": p.members,
        "aggregate": if p.aggregate == v1::Aggregate::Votes as i32 { "votes" } else { "logits" },
        "budget_answers": p.budget.as_ref().and_then(|b| b.answers),
        "budget_epsilon": p.budget.as_ref().and_then(|b| b.epsilon),
        "budget_delta": p.budget.as_ref().and_then(|b| b.delta),
        "clamp_bootstraps": p.clamp_bootstraps,
        "stage_bootstraps": p.stage_bootstraps,
        "rdp_per_answer": p.rdp_per_answer,
    })
}

fn fmt_budget(b: &v1::Budget) -> String {
    let mut s = match (b.answers_limit, b.answers_remaining) {
        (Some(limit), Some(left)) => {
            format!("{} of {limit} answers used, {left} left", b.answers_used)
        }
        _ => format!("{} answers used, no limit", b.answers_used),
    };
    if let (Some(spent), Some(delta)) = (b.epsilon_spent, b.delta) {
        match b.epsilon_limit {
            Some(limit) => s.push_str(&format!(
                "; privacy loss ε = {spent:.3} of {limit} (δ = {delta:e})"
            )),
            None => s.push_str(&format!("; privacy loss ε = {spent:.3} (δ = {delta:e})")),
        }
    }
    s
}

/// The end of a listing of answers: one JSON document, or the accuracy
/// and budget lines.
fn print_listing<T: Serialize>(
    json: bool,
    predictions: &[T],
    scored: impl Iterator<Item = (usize, Option<usize>)>,
    budget: Option<&v1::Budget>,
) -> anyhow::Result<()> {
    if json {
        let doc = serde_json::json!({
            "predictions": predictions,
            "budget": budget.map(budget_json),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_accuracy(scored);
        if let Some(b) = budget {
            println!("budget: {}", fmt_budget(b));
        }
    }
    Ok(())
}

// Kept by hand: snake_case names and readable modes, where a generated
// serde mapping (pbjson) would print proto3 JSON names and enum constants.
fn budget_json(b: &v1::Budget) -> serde_json::Value {
    serde_json::json!({
        "model": b.model,
        "answers_used": b.answers_used,
        "answers_limit": b.answers_limit,
        "answers_remaining": b.answers_remaining,
        "epsilon_spent": b.epsilon_spent,
        "epsilon_limit": b.epsilon_limit,
        "delta": b.delta,
    })
}

fn print_prediction(r: &PredictRow) {
    println!(
        "row {}: {}{}  (server {:.0} ms, {} bootstraps; round trip {:.0} ms; encrypt {:.1} ms, decrypt {:.1} ms)",
        r.row,
        fmt_answer(r.label, &r.labels, &r.logits),
        r.true_label.map(|t| format!(" (true {t})")).unwrap_or_default(),
        r.server_evaluation_ms,
        r.bootstraps,
        r.round_trip_ms,
        r.encrypt_ms,
        r.decrypt_ms
    );
}

fn print_accuracy(rows: impl Iterator<Item = (usize, Option<usize>)>) {
    let (mut n, mut ok) = (0, 0);
    for (label, truth) in rows {
        if let Some(t) = truth {
            n += 1;
            ok += usize::from(label == t);
        }
    }
    if n > 0 {
        println!("accuracy {ok}/{n} = {:.4}", ok as f64 / n as f64);
    }
}
