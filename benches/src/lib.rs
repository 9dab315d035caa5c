//! Benchmarks. The plaintext-vs-encrypted comparison is `blindfold bench`
//! (client crate), which times float, quantized-clear and encrypted
//! evaluation side by side in one run. Criterion micro-benchmarks will live
//! here with the service.
