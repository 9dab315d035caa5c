//! Benchmarks. The plaintext-vs-encrypted comparison is `blindfold bench`
//! (client crate); criterion micro-benchmarks of the primitives are in
//! `benches/benches/`.
