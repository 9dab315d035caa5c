//! The two evaluators of one [`Circuit`](crate::circuit::Circuit): `clear`
//! (integers, exactly the torus arithmetic without noise) and `fhe` (tfhe-rs
//! ciphertexts). Whenever no bootstrap fails they agree bit for bit.

pub mod clear;
pub mod fhe;
