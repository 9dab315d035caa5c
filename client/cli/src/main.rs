//! `blindfold`: compile, inspect and benchmark encrypted inference, and use
//! a Blindfold server (keygen, register, predict, encrypt/decrypt).

mod bench;
mod commands;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use blindfold_compiler::pipeline::{DataOverride, ModelBundle};
use blindfold_compiler::quant::{QuantConfig, Rounding};
use blindfold_compiler::select;
use blindfold_runtime::circuit::Circuit;
use blindfold_runtime::data::RowRange;
use blindfold_runtime::params::ParamSet;

#[derive(Parser)]
#[command(
    name = "blindfold",
    version,
    about = "Encrypted inference on TFHE: compile, inspect, benchmark, and talk to a Blindfold server"
)]
struct Cli {
    #[command(flatten)]
    server: commands::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile an ONNX model into a circuit file (JSON) and print its report.
    Compile {
        model: PathBuf,
        /// Output circuit file [default: <model>.circuit.json]
        #[arg(short, long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        opts: CompileArgs,
    },
    /// Print the report of a circuit file (or compile a model and print it).
    Inspect {
        /// A `.circuit.json` file or an `.onnx` model
        path: PathBuf,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opts: CompileArgs,
    },
    /// Float vs quantized-clear vs encrypted: accuracy and latency side by side.
    Bench {
        model: PathBuf,
        /// Number of test samples to run encrypted
        #[arg(long, default_value_t = 100)]
        samples: usize,
        /// Print one JSON object on stdout (progress still goes to stderr)
        #[arg(long)]
        json: bool,
        /// Worker threads for the encrypted evaluation [default: all cores]
        #[arg(long, env = "BLINDFOLD_THREADS")]
        threads: Option<usize>,
        #[command(flatten)]
        opts: CompileArgs,
    },
    /// Time one keyswitch + one bootstrap on every vetted parameter set (the
    /// cost model `--params auto` orders the sets by).
    CostModel {
        /// Repetitions per set (the median is reported)
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Print JSON on stdout
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Net(commands::NetCommand),
}

#[derive(Args, Clone)]
struct CompileArgs {
    /// Dataset CSV (features then label) when the model has no manifest
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training (calibration) rows, inclusive, e.g. 0..1346
    #[arg(long)]
    train: Option<RowRange>,
    /// Test rows, inclusive, e.g. 1347..1796
    #[arg(long)]
    test: Option<RowRange>,
    /// Parameter set (tfhe-rs V1_8 KS_PBS TUNIFORM 2M128 sets)
    #[arg(long, value_enum, default_value_t = ParamsArg::Auto)]
    params: ParamsArg,
    /// Accumulator window bits [default: 5 for 2_2, 7 for 3_3]
    #[arg(long)]
    accumulator_bits: Option<u32>,
    /// Input feature bits [default: chosen on the training rows]
    #[arg(long)]
    input_bits: Option<u32>,
    /// Hidden activation bits [default: chosen on the training rows]
    #[arg(long)]
    activation_bits: Option<u32>,
    /// Per-stage activation bits, e.g. `--layer-activation-bits 0=3` (repeatable)
    #[arg(long = "layer-activation-bits", value_parser = parse_stage_bits)]
    layer_activation_bits: Vec<(usize, u32)>,
    /// Accumulator bits below the window that each bootstrap rounds away
    /// (approximate rounding: finer weights, FHE may differ from the clear
    /// path by one box near rounding boundaries; 0 = exact mode, bit-exact
    /// with the clear path) [default: chosen on the training rows]
    #[arg(long)]
    rounding_bits: Option<u32>,
    /// Per-stage rounding bits, e.g. `--layer-rounding-bits 0=5` (repeatable;
    /// given any, the per-layer search is off) [default: chosen per layer]
    #[arg(long = "layer-rounding-bits", value_parser = parse_stage_bits)]
    layer_rounding_bits: Vec<(usize, u32)>,
    /// Clip input and activation ranges to the tail quantiles with the least
    /// quantization error (`true`/`false`) [default: chosen on the training rows]
    #[arg(long)]
    clip_ranges: Option<bool>,
    /// Spare accumulator-window boxes on each side of the calibrated range
    /// (headroom for inputs beyond the calibration rows) [default: chosen]
    #[arg(long)]
    margin: Option<u32>,
    /// Sweeps of rounding refinement on the calibration rows (0 = off)
    #[arg(long, default_value_t = 2)]
    refine_sweeps: usize,
    /// Weight rounding
    #[arg(long, value_enum, default_value_t = RoundingArg::ErrorFeedback)]
    rounding: RoundingArg,
    /// `auto` takes the cheapest parameter set whose best configuration
    /// disagrees with the float model's predictions on at most this fraction
    /// of the validation rows (the last 20 % of the training rows, held out
    /// from calibration; clear path simulating the encrypted noise)
    #[arg(long, default_value_t = 0.015, value_parser = parse_fraction)]
    max_loss: f64,
}

/// `--params`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ParamsArg {
    /// The cheapest set that loses at most `--max-loss` validation accuracy
    Auto,
    /// V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128 (N = 2048)
    #[value(name = "2_2")]
    Message2Carry2,
    /// V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128 (N = 8192)
    #[value(name = "3_3")]
    Message3Carry3,
    /// V1_4_PARAM_MESSAGE_2_CARRY_3_KS_PBS_GAUSSIAN_2M128 (N = 4096, two PBS levels)
    #[value(name = "2_3")]
    Message2Carry3,
    /// V1_4_PARAM_MESSAGE_3_CARRY_2_KS_PBS_GAUSSIAN_2M128 (N = 4096, one PBS level)
    #[value(name = "3_2")]
    Message3Carry2,
}

impl ParamsArg {
    fn set(self) -> Option<ParamSet> {
        match self {
            ParamsArg::Auto => None,
            ParamsArg::Message2Carry2 => Some(ParamSet::Message2Carry2),
            ParamsArg::Message3Carry3 => Some(ParamSet::Message3Carry3),
            ParamsArg::Message2Carry3 => Some(ParamSet::Message2Carry3),
            ParamsArg::Message3Carry2 => Some(ParamSet::Message3Carry2),
        }
    }
}

/// `--rounding`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoundingArg {
    /// Error feedback through the calibration inputs (OBQ/GPTQ style)
    ErrorFeedback,
    /// Round to nearest
    Nearest,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} must be a fraction in 0..=1"))
    }
}

fn parse_stage_bits(s: &str) -> Result<(usize, u32), String> {
    let (a, b) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} must look like STAGE=BITS, e.g. 0=3"))?;
    Ok((
        a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?,
        b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?,
    ))
}

fn compile_model(model: &Path, a: &CompileArgs) -> anyhow::Result<(ModelBundle, Circuit)> {
    let over = DataOverride {
        data: a.data.clone(),
        train: a.train,
        test: a.test,
    };
    let bundle =
        ModelBundle::load(model, &over).with_context(|| format!("loading {}", model.display()))?;
    let params = a.params.set();
    let rounding = match a.rounding {
        RoundingArg::ErrorFeedback => Rounding::ErrorFeedback,
        RoundingArg::Nearest => Rounding::Nearest,
    };
    let mut base = QuantConfig {
        rounding,
        refine_sweeps: a.refine_sweeps,
        rounding_bits: a.rounding_bits.unwrap_or(0),
        clip_ranges: a.clip_ranges.unwrap_or(false),
        margin: a.margin.unwrap_or(1),
        stage_activation_bits: a.layer_activation_bits.clone(),
        stage_rounding_bits: a.layer_rounding_bits.clone(),
        ..QuantConfig::default()
    };
    if let Some(b) = a.accumulator_bits {
        base.accumulator_bits = b;
    }
    let widths = select::Widths {
        input_bits: a.input_bits,
        activation_bits: a.activation_bits,
        accumulator_bits: a.accumulator_bits,
        rounding_bits: a.rounding_bits,
        clip_ranges: a.clip_ranges,
        margin: a.margin,
    };
    let (_, compiled) = select::choose(&bundle, params, &base, &widths, a.max_loss, &mut |m| {
        eprintln!("{m}")
    })?;
    Ok((bundle, compiled.circuit))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Net(command) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(commands::run(command, &cli.server))?;
        }
        Command::CostModel { reps, json } => {
            let rows = bench::cost_model(reps.max(1), &mut |m| eprintln!("{m}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<4} {:<52} {:>6} {:>10} {:>10} {:>14} {:>16}",
                    "set",
                    "tfhe-rs name",
                    "N",
                    "KS+PBS ms",
                    "built-in",
                    "eval key MB",
                    "server key GB"
                );
                for r in &rows {
                    println!(
                        "{:<4} {:<52} {:>6} {:>10.2} {:>10.1} {:>14.1} {:>16.3}",
                        r.set,
                        r.name,
                        r.polynomial_size,
                        r.ks_pbs_ms,
                        r.assumed_ms,
                        r.eval_key_bytes as f64 / 1e6,
                        r.server_key_bytes as f64 / 1e9
                    );
                }
            }
        }
        Command::Compile { model, out, opts } => {
            let (_, circuit) = compile_model(&model, &opts)?;
            let out = out.unwrap_or_else(|| model.with_extension("circuit.json"));
            circuit.save(&out)?;
            print!("{}", circuit.report.render(&circuit.name));
            eprintln!("wrote {}", out.display());
        }
        Command::Inspect { path, json, opts } => {
            let circuit = if path.extension().is_some_and(|e| e == "onnx") {
                compile_model(&path, &opts)?.1
            } else {
                Circuit::load(&path).with_context(|| {
                    format!(
                        "reading {}: expected a circuit file written by `blindfold compile` or an .onnx model",
                        path.display()
                    )
                })?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&circuit.report)?);
            } else {
                print!("{}", circuit.report.render(&circuit.name));
            }
        }
        Command::Bench {
            model,
            samples,
            json,
            threads,
            opts,
        } => {
            if let Some(t) = threads {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build_global()
                    .context("configuring the worker pool")?;
            }
            let (bundle, circuit) = compile_model(&model, &opts)?;
            eprint!("{}", circuit.report.render(&circuit.name));
            let report = bench::run(&bundle, &circuit, samples, &mut |m| eprintln!("{m}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
        }
    }
    Ok(())
}
