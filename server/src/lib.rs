//! `blindfold-server`: the gRPC inference server.
//!
//! Not built yet: the encrypted evaluation core lives in
//! `blindfold-circuits` (see `eval::fhe::FheEvaluator`), and the service
//! wrapping it is the next milestone. Nothing here serves requests.
