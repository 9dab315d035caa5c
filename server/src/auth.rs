//! Bearer-token authentication: `authorization: Bearer <token>` maps to a
//! client identity from the config; keys belong to that identity.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::error::ServiceError;

use crate::config::Config;
use crate::error::ConfigError;
use crate::metrics::Metrics;

/// Identity of callers without a token, when the config allows them.
pub const ANONYMOUS: &str = "anonymous";

/// The authenticated caller, stored in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity(pub Arc<str>);

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A tonic interceptor: rejects unknown or missing tokens with
/// `UNAUTHENTICATED` (never falls back to anonymous on a bad token).
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<HashMap<[u8; 32], Identity>>,
    anonymous: bool,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let mut tokens = HashMap::new();
        for c in &config.clients {
            tokens.insert(c.token_digest()?, Identity(Arc::from(c.name.as_str())));
        }
        Ok(Self {
            tokens: Arc::new(tokens),
            anonymous: config.allow_anonymous,
            metrics,
        })
    }

    fn identify(&self, header: Option<&[u8]>) -> Result<Identity, ServiceError> {
        let refuse = |m: &str| ServiceError::Unauthenticated(m.into());
        let Some(value) = header else {
            return if self.anonymous {
                Ok(Identity(Arc::from(ANONYMOUS)))
            } else {
                Err(refuse(
                    "missing bearer token (authorization: Bearer <token>)",
                ))
            };
        };
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| refuse("authorization must be 'Bearer <token>'"))?;
        // lookup by digest: the comparison never touches the token's bytes
        // one by one
        self.tokens
            .get(&digest(token.trim()))
            .cloned()
            .ok_or_else(|| refuse("invalid bearer token"))
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        match self.identify(header.as_deref()) {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
                Ok(request)
            }
            Err(e) => {
                self.metrics.auth_failure();
                Err(e.into())
            }
        }
    }
}

/// The identity the interceptor attached.
pub fn identity<T>(request: &Request<T>) -> Result<Identity, ServiceError> {
    request
        .extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| ServiceError::Unauthenticated("no identity".into()))
}
