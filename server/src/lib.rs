//! `blindfold-server`: serves compiled circuits over gRPC (`blindfold.v1`).
//!
//! [`run`] is the whole server: it opens the embedded key store, loads the
//! configured models, starts the Prometheus endpoint if configured, and
//! serves `Models`, `Keys`, `Inference`, `grpc.health.v1.Health` and server
//! reflection on the given listener until `shutdown` resolves (in-flight
//! requests finish first). The `blindfold-server` binary adds config-file,
//! environment and flag handling and signal-driven shutdown.

pub mod auth;
pub mod cache;
pub mod config;
pub mod conn;
pub mod error;
pub mod ledger;
pub mod metrics;
pub mod pool;
pub mod registry;
pub mod service;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blindfold_proto::v1;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity as TlsIdentity, Server as TonicServer, ServerTlsConfig};

pub use config::Config;
pub use error::ServerError;

use crate::auth::Authenticator;
use crate::cache::KeyCache;
use crate::metrics::Metrics;
use crate::pool::ComputePool;
use crate::registry::Registry;
use crate::service::{Service, State};
use crate::store::KeyStore;

/// A server with its storage open and its models loaded, not yet serving.
pub struct Server {
    config: Config,
    state: Arc<State>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl Server {
    /// Validates the config, opens the store (recovering from a crash),
    /// loads the models and binds the metrics port.
    pub async fn bind(config: Config, listener: TcpListener) -> Result<Self, ServerError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir)?;
        let store = tokio::task::spawn_blocking(move || KeyStore::open(&dir))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
        let dir = config.data_dir.clone();
        // the store holds the directory lock: this server is the ledger's
        // only writer, so every pending debit is a dead server's
        let ledger = tokio::task::spawn_blocking(move || {
            let ledger = crate::ledger::Ledger::open(&dir)?;
            let (requests, answers) = ledger.refund_crashed()?;
            if requests > 0 {
                tracing::info!(
                    requests,
                    answers,
                    "refunded the debits of requests a crash cut short"
                );
            }
            Ok::<_, crate::ledger::LedgerError>(ledger)
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(|e| ServerError::Internal(e.to_string()))?;
        let registry = Registry::load(&config.models)?;
        let metrics = Arc::new(Metrics::default());
        let pool = ComputePool::new(
            config.compute.threads,
            config.compute.concurrent_jobs,
            config.compute.queue_capacity,
            metrics.clone(),
        )?;
        let cache_bytes = usize::try_from(config.compute.key_cache_mib << 20).unwrap_or(usize::MAX);
        // a budget that cannot hold one key of a model's set: its keys will
        // be refused (at registration, naming the budget); say so now
        for m in registry.all() {
            let params = m.hardened().params();
            let need = params.evaluation_key_memory_bytes();
            if need > cache_bytes {
                tracing::warn!(
                    model = %m.name,
                    key_cache_mib = config.compute.key_cache_mib,
                    key_mib = need.div_ceil(1 << 20),
                    "the key memory budget cannot hold one key of this model's parameter set \
                     ({}); its keys will be refused",
                    params.short_name()
                );
            }
        }
        let state = Arc::new(State {
            limits: config.limits.clone(),
            registry,
            store: Arc::new(store),
            cache: KeyCache::new(
                cache_bytes,
                std::time::Duration::from_secs(config.compute.key_wait_secs),
                metrics.clone(),
            ),
            pool,
            metrics,
            uploads: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_concurrent_uploads,
            )),
            uploads_by_identity: Arc::default(),
            ledger: Arc::new(ledger),
        });
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            config,
            state,
            listener,
            metrics_listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Self {
            config,
            state,
            listener,
            metrics_listener,
        } = self;
        let addr = listener.local_addr()?;
        let metrics_task = metrics_listener.map(|l| {
            tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics at /metrics");
            tokio::spawn(metrics::serve(l, state.metrics.clone()))
        });
        let auth = Authenticator::new(&config, state.metrics.clone())?;
        let svc = Service(state.clone());
        let max_in = config.limits.max_request_message_bytes();
        // responses carry big-key ciphertexts: up to ~1 MiB per input
        let max_out = usize::MAX;
        let models = v1::models_server::ModelsServer::new(svc.clone());
        let keys = v1::keys_server::KeysServer::new(svc.clone())
            .max_decoding_message_size(max_in)
            .max_encoding_message_size(max_out);
        let inference = v1::inference_server::InferenceServer::new(svc)
            .max_decoding_message_size(max_in)
            .max_encoding_message_size(max_out);
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<v1::models_server::ModelsServer<Service>>()
            .await;
        health
            .set_serving::<v1::keys_server::KeysServer<Service>>()
            .await;
        health
            .set_serving::<v1::inference_server::InferenceServer<Service>>()
            .await;
        // v1 and v1alpha: grpcurl and most grpc libraries still ask v1alpha
        let reflection_builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(blindfold_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error = |e| ServerError::Internal(format!("reflection: {e}"));
        let reflection = reflection_builder().build_v1().map_err(reflection_error)?;
        let reflection_alpha = reflection_builder()
            .build_v1alpha()
            .map_err(reflection_error)?;

        let mut builder = TonicServer::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if let Some(tls) = &config.tls {
            let cert = std::fs::read(&tls.cert)
                .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert.display())))?;
            let key = std::fs::read(&tls.key)
                .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key.display())))?;
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(TlsIdentity::from_pem(cert, key)))
                .map_err(|e| ServerError::Tls(e.to_string()))?;
        }
        let router = builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(InterceptedService::new(models, auth.clone()))
            .add_service(InterceptedService::new(keys, auth.clone()))
            .add_service(InterceptedService::new(inference, auth));
        tracing::info!(
            %addr,
            tls = config.tls.is_some(),
            anonymous = config.allow_anonymous,
            models = state.registry.all().count(),
            threads = state.pool.threads(),
            data_dir = %config.data_dir.display(),
            "serving blindfold.v1"
        );
        let incoming = conn::incoming(
            listener,
            config.limits.max_connections,
            Duration::from_secs(config.limits.connection_preface_timeout_secs),
            state.metrics.clone(),
        );
        let drain = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            health
                .set_not_serving::<v1::inference_server::InferenceServer<Service>>()
                .await;
        };
        let result = router.serve_with_incoming_shutdown(incoming, drain).await;
        if let Some(t) = metrics_task {
            t.abort();
        }
        result?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs the server on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(config, listener).await?.serve(shutdown).await
}
