//! Ciphertexts: a client's encrypted input and a server's encrypted answer,
//! each checked against what it must be before it is used.

use serde::{Deserialize, Serialize};
use tfhe::core_crypto::prelude::*;
use tfhe::named::Named;
use tfhe_versionable::{Versionize, VersionsDispatch};

use crate::params::ParamSet;
use crate::serial::{Bytes, Conformant};
use crate::{Error, Result};

/// Encrypted, quantized model input: a seeded list under the small key
/// (one body per feature plus one seed).
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(EncryptedInputVersions)]
pub struct EncryptedInput {
    pub params: ParamSet,
    pub precision_bits: u32,
    cts: SeededLweCiphertextListOwned<u64>,
}

#[derive(VersionsDispatch)]
pub enum EncryptedInputVersions {
    V0(EncryptedInput),
}

/// An encrypted answer: bootstrap outputs under the big key.
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(EncryptedOutputVersions)]
pub struct EncryptedOutput {
    pub params: ParamSet,
    pub output_bits: u32,
    cts: LweCiphertextListOwned<u64>,
}

#[derive(VersionsDispatch)]
pub enum EncryptedOutputVersions {
    V0(EncryptedOutput),
}

impl EncryptedInput {
    pub(crate) fn new(
        params: ParamSet,
        precision_bits: u32,
        cts: SeededLweCiphertextListOwned<u64>,
    ) -> Self {
        Self {
            params,
            precision_bits,
            cts,
        }
    }

    /// Number of encrypted features (one body each).
    pub fn len(&self) -> usize {
        self.cts.as_ref().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the input against a model: parameter set, encoding,
    /// ciphertext size and count.
    pub fn conform(&self, params: ParamSet, precision_bits: u32, count: usize) -> Result<()> {
        let p = params.tfhe();
        if self.params != params
            || self.precision_bits != precision_bits
            || self.cts.lwe_size() != p.lwe_dimension.to_lwe_size()
            || self.cts.ciphertext_modulus() != p.ciphertext_modulus
        {
            return Err(Error::conformance(
                Self::KIND,
                format!("not {} with a {precision_bits}-bit encoding", params.name()),
            ));
        }
        if self.len() != count {
            return Err(Error::InputLength {
                expected: count,
                got: self.len(),
            });
        }
        Ok(())
    }

    /// The ciphertexts, one small-key LWE container each.
    pub(crate) fn expand(&self) -> Vec<Vec<u64>> {
        let list = self.cts.clone().decompress_into_lwe_ciphertext_list();
        let size = list.lwe_size().0;
        list.as_ref().chunks(size).map(<[u64]>::to_vec).collect()
    }
}

impl EncryptedOutput {
    /// Bootstrap outputs (big-key LWE containers, back to back).
    pub(crate) fn from_values(params: ParamSet, output_bits: u32, values: Vec<Vec<u64>>) -> Self {
        let p = params.tfhe();
        let big = LweDimension(params.big_lwe_dimension()).to_lwe_size();
        Self {
            params,
            output_bits,
            cts: LweCiphertextList::from_container(
                values.into_iter().flatten().collect(),
                big,
                p.ciphertext_modulus,
            ),
        }
    }

    /// Number of ciphertexts, computed only after the size was checked.
    pub fn len(&self) -> usize {
        match self.cts.lwe_size().0 {
            0 => 0,
            size => self.cts.as_ref().len() / size,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks an answer against what the client expects: parameter set,
    /// precision, ciphertext dimension, modulus and count. Fields are
    /// compared before any count is derived from them.
    pub fn conform(&self, params: ParamSet, output_bits: u32, count: usize) -> Result<()> {
        let p = params.tfhe();
        let size = params.big_lwe_dimension() + 1;
        let bad = |m: String| Err(Error::conformance(Self::KIND, m));
        if self.params != params {
            return bad(format!(
                "the answer is under {}, the key is for {}",
                self.params.name(),
                params.name()
            ));
        }
        if self.output_bits != output_bits {
            return bad(format!(
                "{}-bit values where the model answers {output_bits}-bit values",
                self.output_bits
            ));
        }
        if self.cts.lwe_size().0 != size || self.cts.ciphertext_modulus() != p.ciphertext_modulus {
            return bad(format!(
                "ciphertexts of size {} where {} takes {size}",
                self.cts.lwe_size().0,
                params.name()
            ));
        }
        let len = self.cts.as_ref().len();
        if len != count * size {
            return bad(format!(
                "{len} words where {count} ciphertexts take {}",
                count * size
            ));
        }
        Ok(())
    }

    pub(crate) fn list(&self) -> &LweCiphertextListOwned<u64> {
        &self.cts
    }
}

impl Conformant for EncryptedInput {
    const KIND: &'static str = "encrypted input";

    fn check(&self) -> Result<()> {
        bits_within(Self::KIND, self.precision_bits, 16)?;
        // the count is the model's business ([`EncryptedInput::conform`])
        self.conform(self.params, self.precision_bits, self.len())
    }
}

impl Conformant for EncryptedOutput {
    const KIND: &'static str = "encrypted output";

    fn check(&self) -> Result<()> {
        bits_within(Self::KIND, self.output_bits, 20)?;
        let size = self.params.big_lwe_dimension() + 1;
        let count = self.cts.as_ref().len() / size;
        self.conform(self.params, self.output_bits, count)
    }
}

/// A declared precision of 1 to `max` bits.
fn bits_within(kind: &'static str, bits: u32, max: u32) -> Result<()> {
    if (1..=max).contains(&bits) {
        Ok(())
    } else {
        Err(Error::conformance(kind, format!("{bits}-bit values")))
    }
}

impl Named for EncryptedInput {
    const NAME: &'static str = "blindfold::EncryptedInput";
}

impl Named for EncryptedOutput {
    const NAME: &'static str = "blindfold::EncryptedOutput";
}

impl Bytes for EncryptedInput {}
impl Bytes for EncryptedOutput {}
