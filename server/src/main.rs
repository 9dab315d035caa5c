//! `blindfold-server`: the encrypted-inference gRPC server.
//!
//! Settings come from the TOML file given with `--config`, then from
//! `BLINDFOLD_*` environment variables, then from flags (later wins).
//! `RUST_LOG` sets the log filter (default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use blindfold_server::Config;

#[derive(Parser)]
#[command(
    name = "blindfold-server",
    version,
    about = "Encrypted-inference gRPC server"
)]
struct Args {
    /// TOML configuration file
    #[arg(short, long, env = "BLINDFOLD_CONFIG")]
    config: PathBuf,
    /// gRPC listen address (overrides `listen`)
    #[arg(long, env = "BLINDFOLD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory for keys and metadata (overrides `data_dir`)
    #[arg(long, env = "BLINDFOLD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Prometheus metrics address (overrides `metrics_listen`)
    #[arg(long, env = "BLINDFOLD_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Compute threads, 0 = all cores (overrides `compute.threads`)
    #[arg(long, env = "BLINDFOLD_THREADS")]
    threads: Option<usize>,
    /// Decompressed-key cache budget in MiB (overrides `compute.key_cache_mib`)
    #[arg(long, env = "BLINDFOLD_KEY_CACHE_MIB")]
    key_cache_mib: Option<u64>,
    /// Check the configuration and the models, then exit
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let mut config = Config::from_file(&args.config)?;
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.metrics_listen {
        config.metrics_listen = Some(v);
    }
    if let Some(v) = args.threads {
        config.compute.threads = v;
    }
    if let Some(v) = args.key_cache_mib {
        config.compute.key_cache_mib = v;
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let server = blindfold_server::Server::bind(config, listener).await?;
        if args.check {
            println!("configuration and models OK");
            return Ok(());
        }
        server.serve(shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
