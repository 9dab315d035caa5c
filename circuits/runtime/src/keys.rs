//! Keys: the client's secret key, the compressed evaluation key it uploads,
//! and the decompressed evaluation key a server computes with.
//!
//! * [`ClientKey`]: binary small LWE key and GLWE key of a vetted
//!   parameter set. Never leaves the client.
//! * [`CompressedEvaluationKey`]: seeded bootstrap and keyswitch keys, what
//!   travels to the server.
//! * [`EvaluationKey`]: the same, decompressed (bootstrap key in the
//!   Fourier domain), server memory only.
//!
//! Every serialized form is versioned and size-limited ([`crate::serial`]).

use serde::{Deserialize, Serialize};
use tfhe::core_crypto::prelude::*;
use tfhe::named::Named;
use tfhe_versionable::{Versionize, VersionsDispatch};

use crate::ciphertext::{EncryptedInput, EncryptedOutput};
use crate::circuit::ClientSpec;
use crate::params::ParamSet;
use crate::serial::{Bytes, Conformant};
use crate::{Error, Result};

/// A key used with a model of another parameter set.
pub(crate) fn params_mismatch(kind: &'static str, key: ParamSet, model: ParamSet) -> Error {
    Error::conformance(
        kind,
        format!(
            "the key is for {}, the model uses {}",
            key.name(),
            model.name()
        ),
    )
}

/// `Δ` for values of `bits` bits plus a padding bit.
pub(crate) fn delta(bits: u32) -> u64 {
    1u64 << (63 - bits)
}

/// The client's secret keys.
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(ClientKeyVersions)]
pub struct ClientKey {
    pub params: ParamSet,
    small: LweSecretKeyOwned<u64>,
    glwe: GlweSecretKeyOwned<u64>,
}

#[derive(VersionsDispatch)]
pub enum ClientKeyVersions {
    V0(ClientKey),
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Evaluation keys in compressed (seeded) form.
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(CompressedEvaluationKeyVersions)]
pub struct CompressedEvaluationKey {
    pub params: ParamSet,
    bsk: SeededLweBootstrapKeyOwned<u64>,
    ksk: SeededLweKeyswitchKeyOwned<u64>,
}

#[derive(VersionsDispatch)]
pub enum CompressedEvaluationKeyVersions {
    V0(CompressedEvaluationKey),
}

/// Evaluation keys ready to compute with.
pub struct EvaluationKey {
    pub params: ParamSet,
    pub(crate) fourier_bsk: FourierLweBootstrapKeyOwned,
    pub(crate) ksk: LweKeyswitchKeyOwned<u64>,
}

impl EvaluationKey {
    /// Verifies a compressed key a client sent (current format only: the
    /// network never gets the legacy reader) against the parameter set the
    /// upload declared, and decompresses it.
    /// The bytes are freed before decompressing (lower peak memory).
    pub fn from_upload(bytes: Vec<u8>, declared: ParamSet, limit: u64) -> Result<Self> {
        let key = CompressedEvaluationKey::from_bytes(&bytes, limit)?;
        drop(bytes);
        key.conform(declared)?;
        Ok(key.into_evaluation_key())
    }

    /// Loads a key from a server's key store (current or legacy format),
    /// checked against the parameter set it was registered for.
    pub fn from_stored(bytes: Vec<u8>, registered: ParamSet, limit: u64) -> Result<Self> {
        let key = CompressedEvaluationKey::from_stored(&bytes, limit)?;
        drop(bytes);
        key.conform(registered)?;
        Ok(key.into_evaluation_key())
    }

    /// Bytes of memory the key's buffers occupy (for cache budgets).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(self.fourier_bsk.as_view().data())
            + std::mem::size_of_val(self.ksk.as_ref())
    }
}

impl ClientKey {
    /// Generates fresh secret keys with the OS-seeded CSPRNG.
    pub fn generate(params: ParamSet) -> Self {
        let mut boxed = new_seeder();
        Self::generate_with(params, boxed.as_mut())
    }

    /// Generates secret keys from `seeder` (deterministic seeders are for
    /// reproducible test files only).
    pub fn generate_with(params: ParamSet, seeder: &mut dyn Seeder) -> Self {
        let p = params.tfhe();
        let mut secret = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
        let small = LweSecretKey::generate_new_binary(p.lwe_dimension, &mut secret);
        let glwe =
            GlweSecretKey::generate_new_binary(p.glwe_dimension, p.polynomial_size, &mut secret);
        Self {
            params,
            small,
            glwe,
        }
    }

    /// Generates the seeded bootstrap and keyswitch keys (the slow part of
    /// key generation; parallel).
    pub fn evaluation_key(&self) -> CompressedEvaluationKey {
        let mut boxed = new_seeder();
        self.evaluation_key_with(boxed.as_mut())
    }

    /// [`Self::evaluation_key`] from `seeder`.
    pub fn evaluation_key_with(&self, seeder: &mut dyn Seeder) -> CompressedEvaluationKey {
        let p = self.params.tfhe();
        let bsk = par_allocate_and_generate_new_seeded_lwe_bootstrap_key(
            &self.small,
            &self.glwe,
            p.pbs_base_log,
            p.pbs_level,
            p.glwe_noise_distribution,
            p.ciphertext_modulus,
            seeder,
        );
        let big = self.glwe.as_lwe_secret_key();
        let ksk = allocate_and_generate_new_seeded_lwe_keyswitch_key(
            &big,
            &self.small,
            p.ks_base_log,
            p.ks_level,
            p.lwe_noise_distribution,
            p.ciphertext_modulus,
            seeder,
        );
        CompressedEvaluationKey {
            params: self.params,
            bsk,
            ksk,
        }
    }

    /// Encrypts quantized inputs (each in `[0, 2^input_bits)`) for the
    /// model `spec` describes.
    pub fn encrypt(&self, spec: &ClientSpec, q: &[i64]) -> Result<EncryptedInput> {
        self.check_params(spec)?;
        if q.len() != spec.input.len() {
            return Err(Error::InputLength {
                expected: spec.input.len(),
                got: q.len(),
            });
        }
        let limit = 1i64 << spec.input.bits;
        if let Some((index, value)) = q.iter().enumerate().find(|(_, v)| !(0..limit).contains(*v)) {
            return Err(Error::InputRange {
                index,
                value: *value,
                limit,
            });
        }
        self.encrypt_unchecked(spec, q)
    }

    /// Encrypts arbitrary integers (taken modulo `2^(p+1)`) in the input
    /// encoding, without the range check: what a hostile client can send.
    /// For probing the server's input clamp in tests and audits.
    pub fn encrypt_unchecked(&self, spec: &ClientSpec, q: &[i64]) -> Result<EncryptedInput> {
        self.check_params(spec)?;
        let p = self.params.tfhe();
        let d = delta(spec.precision_bits);
        let encoded = PlaintextList::from_container(
            q.iter()
                .map(|v| (*v as u64).wrapping_mul(d))
                .collect::<Vec<_>>(),
        );
        let mut boxed = new_seeder();
        let seeder = boxed.as_mut();
        let mut cts = SeededLweCiphertextList::new(
            0u64,
            p.lwe_dimension.to_lwe_size(),
            LweCiphertextCount(q.len()),
            seeder.seed().into(),
            p.ciphertext_modulus,
        );
        encrypt_seeded_lwe_ciphertext_list(
            &self.small,
            &mut cts,
            &encoded,
            p.lwe_noise_distribution,
            seeder,
        );
        Ok(EncryptedInput::new(self.params, spec.precision_bits, cts))
    }

    /// Decrypts an answer to integers modulo `2^(output_bits+1)`, the same
    /// representation the clear interpreter returns. The answer is checked
    /// first (parameter set, precision, ciphertext size and count): a
    /// server's bytes are not trusted.
    pub fn decrypt(&self, spec: &ClientSpec, out: &EncryptedOutput) -> Result<Vec<i64>> {
        self.check_params(spec)?;
        out.conform(self.params, spec.output_bits, spec.output_count())?;
        let big = self.glwe.as_lwe_secret_key();
        let d = delta(spec.output_bits);
        let modulus = 1u64 << (spec.output_bits + 1);
        Ok(out
            .list()
            .iter()
            .map(|ct| {
                let phase = decrypt_lwe_ciphertext(&big, &ct).0;
                (phase.wrapping_add(d / 2) / d % modulus) as i64
            })
            .collect())
    }

    fn check_params(&self, spec: &ClientSpec) -> Result<()> {
        if spec.params != self.params {
            return Err(params_mismatch("key", self.params, spec.params));
        }
        Ok(())
    }

    /// Test and diagnostics helper: encrypts raw torus values under the big
    /// key (as a bootstrap output would be).
    pub fn encrypt_big_raw(&self, values: &[u64]) -> LweCiphertextListOwned<u64> {
        let p = self.params.tfhe();
        let mut boxed = new_seeder();
        let seeder = boxed.as_mut();
        let mut gen =
            EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        let big = self.glwe.as_lwe_secret_key();
        let mut list = LweCiphertextList::new(
            0u64,
            big.lwe_dimension().to_lwe_size(),
            LweCiphertextCount(values.len()),
            p.ciphertext_modulus,
        );
        let pt = PlaintextList::from_container(values.to_vec());
        encrypt_lwe_ciphertext_list(&big, &mut list, &pt, p.glwe_noise_distribution, &mut gen);
        list
    }

    /// Test and diagnostics helper: phases of big-key ciphertexts.
    pub fn decrypt_big_raw(&self, cts: &LweCiphertextListOwned<u64>) -> Vec<u64> {
        let big = self.glwe.as_lwe_secret_key();
        cts.iter()
            .map(|ct| decrypt_lwe_ciphertext(&big, &ct).0)
            .collect()
    }
}

impl CompressedEvaluationKey {
    /// Decompresses into server-side keys (bootstrap key to the Fourier
    /// domain). Call [`Conformant::check`] (done by every `from_bytes`)
    /// first on keys from elsewhere.
    pub fn decompress(&self) -> EvaluationKey {
        self.clone().into_evaluation_key()
    }

    /// [`Self::decompress`], consuming the compressed key: each seeded part
    /// is freed as soon as it is expanded (lower peak memory).
    pub fn into_evaluation_key(self) -> EvaluationKey {
        let Self { params, bsk, ksk } = self;
        let bsk = bsk.par_decompress_into_lwe_bootstrap_key();
        let mut fourier_bsk = FourierLweBootstrapKey::new(
            bsk.input_lwe_dimension(),
            bsk.glwe_size(),
            bsk.polynomial_size(),
            bsk.decomposition_base_log(),
            bsk.decomposition_level_count(),
        );
        par_convert_standard_lwe_bootstrap_key_to_fourier(&bsk, &mut fourier_bsk);
        drop(bsk);
        let ksk = ksk.par_decompress_into_lwe_keyswitch_key();
        EvaluationKey {
            params,
            fourier_bsk,
            ksk,
        }
    }

    /// Checks the key against a parameter set the caller expects (the one
    /// an upload declared, or the model's).
    pub fn conform(&self, expected: ParamSet) -> Result<()> {
        if self.params != expected {
            return Err(Error::conformance(
                Self::KIND,
                format!(
                    "the key is for {}, not {}",
                    self.params.name(),
                    expected.name()
                ),
            ));
        }
        self.check()
    }
}

impl Conformant for ClientKey {
    const KIND: &'static str = "client key";

    fn check(&self) -> Result<()> {
        let p = self.params.tfhe();
        // the polynomial size first: the GLWE dimension is derived from it
        if self.glwe.polynomial_size() != p.polynomial_size
            || self.glwe.glwe_dimension() != p.glwe_dimension
            || self.small.lwe_dimension() != p.lwe_dimension
        {
            return Err(Error::conformance(
                Self::KIND,
                format!("dimensions differ from {}", self.params.name()),
            ));
        }
        Ok(())
    }
}

impl Conformant for CompressedEvaluationKey {
    const KIND: &'static str = "evaluation key";

    /// Plain fields and buffer lengths are compared before any derived
    /// dimension is computed, so hostile bytes cannot cause a division by
    /// zero.
    fn check(&self) -> Result<()> {
        let p = self.params.tfhe();
        let k1 = p.glwe_dimension.to_glwe_size().0;
        // seeded entities hold only bodies: one polynomial per GGSW row, one
        // scalar per keyswitch-key row
        let bsk_len = p.lwe_dimension.0 * k1 * p.pbs_level.0 * p.polynomial_size.0;
        let ksk_len = self.params.big_lwe_dimension() * p.ks_level.0;
        let shape_ok = self.bsk.glwe_size() == p.glwe_dimension.to_glwe_size()
            && self.bsk.polynomial_size() == p.polynomial_size
            && self.bsk.decomposition_base_log() == p.pbs_base_log
            && self.bsk.decomposition_level_count() == p.pbs_level
            && self.bsk.ciphertext_modulus() == p.ciphertext_modulus
            && self.ksk.output_key_lwe_dimension() == p.lwe_dimension
            && self.ksk.decomposition_base_log() == p.ks_base_log
            && self.ksk.decomposition_level_count() == p.ks_level
            && self.ksk.ciphertext_modulus() == p.ciphertext_modulus
            && self.bsk.as_ref().len() == bsk_len
            && self.ksk.as_ref().len() == ksk_len;
        if shape_ok
            && self.bsk.input_lwe_dimension() == p.lwe_dimension
            && self.ksk.input_key_lwe_dimension().0 == self.params.big_lwe_dimension()
        {
            Ok(())
        } else {
            Err(Error::conformance(
                Self::KIND,
                format!("dimensions differ from {}", self.params.name()),
            ))
        }
    }
}

impl Named for ClientKey {
    const NAME: &'static str = "blindfold::ClientKey";
}

impl Named for CompressedEvaluationKey {
    const NAME: &'static str = "blindfold::CompressedEvaluationKey";
}

impl Bytes for ClientKey {
    const LEGACY_KIND: Option<&'static str> = Some("client-key");
}

impl Bytes for CompressedEvaluationKey {
    const LEGACY_KIND: Option<&'static str> = Some("compressed-evaluation-key");
}
