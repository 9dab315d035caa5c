//! `blindfold-proto`: the gRPC contract (`blindfold.v1`).
//!
//! The service definitions arrive with the gRPC service; until then this
//! crate is intentionally empty so the workspace layout is fixed.
