//! Benchmarks. The plaintext-vs-encrypted comparison is `blindfold bench`
//! (client crate), which times float, quantized-clear and encrypted
//! evaluation side by side in one run; `service-bench` (this package's
//! binary) measures a running server through gRPC: latency against
//! server-side evaluation time, key upload, concurrency and capacity.
