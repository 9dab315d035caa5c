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

    /// The identity of a request's `authorization` values (none, one, or
    /// several: several are refused, never resolved by picking one).
    fn identify(&self, headers: &[&[u8]]) -> Result<Identity, ServiceError> {
        let refuse = |m: &str| ServiceError::Unauthenticated(m.into());
        if headers.len() > 1 {
            return Err(refuse(
                "more than one authorization header; send exactly one 'Bearer <token>'",
            ));
        }
        let Some(value) = headers.first() else {
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
        // the token exactly as sent: no trimming, so `Bearer  <token>` or a
        // trailing space is a different (unknown) token. Lookup by digest:
        // the comparison never touches the token's bytes one by one.
        self.tokens
            .get(&digest(token))
            .cloned()
            .ok_or_else(|| refuse("invalid bearer token"))
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let headers: Vec<Vec<u8>> = request
            .metadata()
            .get_all("authorization")
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        let views: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
        match self.identify(&views) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "exactly-this-token-0123";

    fn auth(anonymous: bool) -> Authenticator {
        let mut tokens = HashMap::new();
        tokens.insert(digest(TOKEN), Identity(Arc::from("alice")));
        Authenticator {
            tokens: Arc::new(tokens),
            anonymous,
            metrics: Arc::new(Metrics::default()),
        }
    }

    fn who(a: &Authenticator, headers: &[&str]) -> Result<String, String> {
        let h: Vec<&[u8]> = headers.iter().map(|s| s.as_bytes()).collect();
        a.identify(&h)
            .map(|i| i.0.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_token_is_compared_exactly() {
        let a = auth(false);
        assert_eq!(who(&a, &[&format!("Bearer {TOKEN}")]), Ok("alice".into()));
        for bad in [
            format!("Bearer  {TOKEN}"),
            format!("Bearer {TOKEN} "),
            format!("Bearer \t{TOKEN}"),
            format!("bearer {TOKEN}"),
            format!("Bearer {}", &TOKEN[1..]),
            TOKEN.to_string(),
        ] {
            assert!(who(&a, &[&bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        for anonymous in [false, true] {
            let a = auth(anonymous);
            let good = format!("Bearer {TOKEN}");
            let err = who(&a, &[&good, "Bearer someone-else-entirely"]).unwrap_err();
            assert!(err.contains("more than one"), "{err}");
            assert!(who(&a, &[&good, &good]).is_err());
        }
    }

    #[test]
    fn no_header_is_anonymous_only_where_allowed() {
        assert_eq!(who(&auth(true), &[]), Ok(ANONYMOUS.into()));
        assert!(who(&auth(false), &[]).is_err());
        // a bad token never falls back to anonymous
        assert!(who(&auth(true), &["Bearer not-a-known-token-000"]).is_err());
    }
}
