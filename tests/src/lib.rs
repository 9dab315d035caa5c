//! End-to-end tests against a real server live here once the server exists.
//! The evaluation core's tests are in `circuits/tests/`.
