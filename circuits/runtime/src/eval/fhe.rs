//! The FHE evaluator: the circuit on tfhe-rs LWE ciphertexts.
//!
//! * Client side ([`ClientKey`]): binary small LWE key and GLWE key from a
//!   vetted parameter set; inputs are encrypted under the small key as a
//!   seeded (compressed) list — one 8-byte body per feature plus one seed.
//! * Only the [`CompressedEvaluationKey`] (seeded bootstrap and keyswitch
//!   keys) leaves the client; the evaluating side decompresses it into an
//!   [`EvaluationKey`] (Fourier bootstrap key + keyswitch key).
//! * Server side ([`FheEvaluator`]): per layer, each neuron's dot product
//!   with cleartext integer weights (no bootstrap), plus its offset as a
//!   plaintext; then (after the first layer) a keyswitch to the small key,
//!   the centered-mean modulus switch, and a blind rotation of the neuron's
//!   table with sample extraction — all neurons of a layer in parallel
//!   (rayon). Outputs are bootstrap outputs under the big key.

use serde::{Deserialize, Serialize};
use tfhe::core_crypto::prelude::*;

use tfhe::shortint::parameters::ClassicPBSParameters;

use crate::circuit::{Circuit, ClientSpec};
use crate::harden::{clamp_table, Hardened, Op, Plan};
use crate::params::ParamSet;
use crate::{Error, Result};

/// Version tag of every serialized key and ciphertext blob.
pub const BLOB_FORMAT_VERSION: u32 = 1;

/// The client's secret keys. Never leaves the client.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClientKey {
    pub params: ParamSet,
    small: LweSecretKeyOwned<u64>,
    glwe: GlweSecretKeyOwned<u64>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Evaluation keys in compressed (seeded) form: what travels to the server.
#[derive(Clone, Serialize, Deserialize)]
pub struct CompressedEvaluationKey {
    pub params: ParamSet,
    bsk: SeededLweBootstrapKeyOwned<u64>,
    ksk: SeededLweKeyswitchKeyOwned<u64>,
}

/// Evaluation keys ready to compute with (server memory).
pub struct EvaluationKey {
    pub params: ParamSet,
    fourier_bsk: FourierLweBootstrapKeyOwned,
    ksk: LweKeyswitchKeyOwned<u64>,
}

impl EvaluationKey {
    /// Bytes of memory the key's buffers occupy (for cache budgets).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(self.fourier_bsk.as_view().data())
            + std::mem::size_of_val(self.ksk.as_ref())
    }
}

/// Encrypted, quantized model input (seeded list under the small key).
#[derive(Clone, Serialize, Deserialize)]
pub struct EncryptedInput {
    pub params: ParamSet,
    pub precision_bits: u32,
    cts: SeededLweCiphertextListOwned<u64>,
}

/// Encrypted outputs (bootstrap outputs under the big key).
#[derive(Clone, Serialize, Deserialize)]
pub struct EncryptedOutput {
    pub params: ParamSet,
    pub output_bits: u32,
    cts: LweCiphertextListOwned<u64>,
}

fn delta(bits: u32) -> u64 {
    1u64 << (63 - bits)
}

impl ClientKey {
    /// Generates fresh secret keys with the OS-seeded CSPRNG.
    pub fn generate(params: ParamSet) -> Self {
        let p = params.tfhe();
        let mut boxed = new_seeder();
        let seeder = boxed.as_mut();
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
        let p = self.params.tfhe();
        let mut boxed = new_seeder();
        let seeder = boxed.as_mut();
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
    /// circuit `circuit` describes.
    pub fn encrypt(&self, circuit: &ClientSpec, q: &[i64]) -> Result<EncryptedInput> {
        self.check_params(circuit)?;
        if q.len() != circuit.input.len() {
            return Err(Error::InputLength {
                expected: circuit.input.len(),
                got: q.len(),
            });
        }
        let max = 1i64 << circuit.input.bits;
        if let Some(v) = q.iter().find(|v| **v < 0 || **v >= max) {
            return Err(Error::Eval(format!(
                "quantized input {v} outside [0, {max})"
            )));
        }
        self.encrypt_unchecked(circuit, q)
    }

    /// Encrypts arbitrary integers (taken modulo `2^(p+1)`) in the input
    /// encoding, without the range check: what a hostile client can send.
    /// For probing the server's input clamp in tests and audits.
    pub fn encrypt_unchecked(&self, circuit: &ClientSpec, q: &[i64]) -> Result<EncryptedInput> {
        self.check_params(circuit)?;
        let p = self.params.tfhe();
        let d = delta(circuit.precision_bits);
        let encoded =
            PlaintextList::from_container(q.iter().map(|v| (*v as u64) * d).collect::<Vec<_>>());
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
        Ok(EncryptedInput {
            params: self.params,
            precision_bits: circuit.precision_bits,
            cts,
        })
    }

    /// Decrypts outputs to integers modulo `2^(output_bits+1)`, the same
    /// representation the clear evaluator returns.
    pub fn decrypt(&self, circuit: &ClientSpec, out: &EncryptedOutput) -> Result<Vec<i64>> {
        self.check_params(circuit)?;
        if out.cts.lwe_ciphertext_count().0 != circuit.output_count()
            || out.output_bits != circuit.output_bits
        {
            return Err(Error::Eval(
                "encrypted output does not match the circuit".into(),
            ));
        }
        Ok(self.decrypt_raw(&out.cts, circuit.output_bits))
    }

    fn decrypt_raw(&self, cts: &LweCiphertextListOwned<u64>, bits: u32) -> Vec<i64> {
        let big = self.glwe.as_lwe_secret_key();
        let d = delta(bits);
        let modulus = 1u64 << (bits + 1);
        cts.iter()
            .map(|ct| {
                let phase = decrypt_lwe_ciphertext(&big, &ct).0;
                (phase.wrapping_add(d / 2) / d % modulus) as i64
            })
            .collect()
    }

    fn check_params(&self, circuit: &ClientSpec) -> Result<()> {
        if circuit.params != self.params {
            return Err(Error::Eval(format!(
                "key is for {}, circuit uses {}",
                self.params.name(),
                circuit.params.name()
            )));
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
    /// Decompresses into server-side keys (bootstrap key to the Fourier domain).
    pub fn decompress(&self) -> EvaluationKey {
        let bsk = self.bsk.clone().par_decompress_into_lwe_bootstrap_key();
        let mut fourier_bsk = FourierLweBootstrapKey::new(
            bsk.input_lwe_dimension(),
            bsk.glwe_size(),
            bsk.polynomial_size(),
            bsk.decomposition_base_log(),
            bsk.decomposition_level_count(),
        );
        par_convert_standard_lwe_bootstrap_key_to_fourier(&bsk, &mut fourier_bsk);
        let ksk = self.ksk.clone().par_decompress_into_lwe_keyswitch_key();
        EvaluationKey {
            params: self.params,
            fourier_bsk,
            ksk,
        }
    }

    /// Checks the key's dimensions against its declared parameter set.
    /// Plain fields and buffer lengths are compared before any derived
    /// dimension is computed, so hostile bytes cannot cause a division by
    /// zero.
    pub fn check_conformance(&self) -> Result<()> {
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
            Err(Error::Eval(format!(
                "evaluation key does not conform to {}",
                self.params.name()
            )))
        }
    }
}

impl EncryptedInput {
    pub fn len(&self) -> usize {
        self.cts.lwe_ciphertext_count().0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Serialization with a version tag and a size limit.
pub trait Blob: Serialize + for<'de> Deserialize<'de> {
    const KIND: &'static str;

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(b"BFLD");
        out.extend_from_slice(&BLOB_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(Self::KIND.len() as u32).to_le_bytes());
        out.extend_from_slice(Self::KIND.as_bytes());
        bincode::serialize_into(&mut out, self).map_err(|e| Error::Artifact(e.to_string()))?;
        Ok(out)
    }

    fn from_bytes(bytes: &[u8], limit: u64) -> Result<Self> {
        use bincode::Options;
        let bad = |m: String| Error::Artifact(format!("{}: {m}", Self::KIND));
        if bytes.len() as u64 > limit {
            return Err(bad(format!(
                "{} bytes exceed the {limit}-byte limit",
                bytes.len()
            )));
        }
        if bytes.len() < 12 || &bytes[..4] != b"BFLD" {
            return Err(bad("not a Blindfold blob".into()));
        }
        let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if version != BLOB_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version} is not supported (expected {BLOB_FORMAT_VERSION})"
            )));
        }
        let kind_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let rest = &bytes[12..];
        if kind_len > 64 || rest.len() < kind_len || &rest[..kind_len] != Self::KIND.as_bytes() {
            return Err(bad("wrong blob kind".into()));
        }
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(limit)
            .deserialize(&rest[kind_len..])
            .map_err(|e| bad(e.to_string()))
    }
}

impl Blob for ClientKey {
    const KIND: &'static str = "client-key";
}
impl Blob for CompressedEvaluationKey {
    const KIND: &'static str = "compressed-evaluation-key";
}
impl Blob for EncryptedInput {
    const KIND: &'static str = "encrypted-input";
}
impl Blob for EncryptedOutput {
    const KIND: &'static str = "encrypted-output";
}

/// Checks an encrypted input (e.g. just deserialized from a client's bytes)
/// against a circuit: parameter set, encoding, ciphertext size and count.
pub fn check_input(circuit: &Circuit, input: &EncryptedInput) -> Result<()> {
    let p = circuit.params.tfhe();
    if input.params != circuit.params
        || input.precision_bits != circuit.precision_bits
        || input.cts.lwe_size() != p.lwe_dimension.to_lwe_size()
        || input.cts.ciphertext_modulus() != p.ciphertext_modulus
    {
        return Err(Error::Eval(format!(
            "encrypted input does not conform to {} with a {}-bit encoding",
            circuit.params.name(),
            circuit.precision_bits
        )));
    }
    if input.len() != circuit.input.len() {
        return Err(Error::InputLength {
            expected: circuit.input.len(),
            got: input.len(),
        });
    }
    Ok(())
}

/// A circuit's tables as trivially-encrypted GLWE accumulators, one per
/// neuron per layer. They depend on the circuit only, so a server builds
/// them once per model and shares them across keys and requests.
#[derive(Clone)]
pub struct LookupTables {
    params: ParamSet,
    layers: Vec<Vec<GlweCiphertextOwned<u64>>>,
}

impl LookupTables {
    pub fn new(circuit: &Circuit) -> Self {
        let p = circuit.params.tfhe();
        let layers = circuit
            .layers
            .iter()
            .map(|layer| {
                let out_bits = if layer.is_output {
                    circuit.output_bits
                } else {
                    circuit.precision_bits
                };
                let d = delta(out_bits);
                layer
                    .lut
                    .iter()
                    .map(|table| lookup_table(p, circuit.precision_bits, d, table))
                    .collect()
            })
            .collect();
        Self {
            params: circuit.params,
            layers,
        }
    }

    fn fits(&self, circuit: &Circuit) -> bool {
        self.params == circuit.params
            && self.layers.len() == circuit.layers.len()
            && self
                .layers
                .iter()
                .zip(&circuit.layers)
                .all(|(t, l)| t.len() == l.out_len)
    }
}

/// Server-side evaluator of one circuit under one evaluation key.
pub struct FheEvaluator<'a> {
    circuit: &'a Circuit,
    key: &'a EvaluationKey,
    luts: std::borrow::Cow<'a, LookupTables>,
}

/// Timings of one encrypted evaluation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EvalStats {
    pub bootstraps: usize,
    pub keyswitches: usize,
    pub seconds: f64,
}

impl<'a> FheEvaluator<'a> {
    /// An evaluator that builds the circuit's tables itself.
    pub fn new(circuit: &'a Circuit, key: &'a EvaluationKey) -> Result<Self> {
        Self::check_key(circuit, key)?;
        Ok(Self {
            circuit,
            key,
            luts: std::borrow::Cow::Owned(LookupTables::new(circuit)),
        })
    }

    /// An evaluator over tables built beforehand with
    /// [`LookupTables::new`] for this circuit.
    pub fn with_tables(
        circuit: &'a Circuit,
        key: &'a EvaluationKey,
        tables: &'a LookupTables,
    ) -> Result<Self> {
        Self::check_key(circuit, key)?;
        if !tables.fits(circuit) {
            return Err(Error::Eval(
                "lookup tables were built for another circuit".into(),
            ));
        }
        Ok(Self {
            circuit,
            key,
            luts: std::borrow::Cow::Borrowed(tables),
        })
    }

    fn check_key(circuit: &Circuit, key: &EvaluationKey) -> Result<()> {
        if key.params != circuit.params {
            return Err(Error::Eval(format!(
                "evaluation key is for {}, circuit uses {}",
                key.params.name(),
                circuit.params.name()
            )));
        }
        Ok(())
    }

    /// Checks an encrypted input against the circuit and parameter set.
    pub fn check_input(&self, input: &EncryptedInput) -> Result<()> {
        check_input(self.circuit, input)
    }

    /// Evaluates the circuit on an encrypted input.
    pub fn evaluate(&self, input: &EncryptedInput) -> Result<(EncryptedOutput, EvalStats)> {
        self.evaluate_until(input, &|| false)
    }

    /// [`Self::evaluate`] that gives up with [`Error::Cancelled`] as soon as
    /// `cancelled()` turns true (polled before every bootstrap batch and
    /// every layer), for servers whose client went away.
    pub fn evaluate_until(
        &self,
        input: &EncryptedInput,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<(EncryptedOutput, EvalStats)> {
        self.check_input(input)?;
        let start = std::time::Instant::now();
        let mut stats = EvalStats::default();
        let current = input.cts.clone().decompress_into_lwe_ciphertext_list();
        let cts = run_layers(
            self.circuit,
            self.key,
            &self.luts,
            current,
            false,
            0..self.circuit.layers.len(),
            None,
            &mut stats,
            cancelled,
        )?;
        stats.seconds = start.elapsed().as_secs_f64();
        Ok((
            EncryptedOutput {
                params: self.circuit.params,
                output_bits: self.circuit.output_bits,
                cts,
            },
            stats,
        ))
    }
}

/// Runs a circuit's layers `layers` on `current` (small-key inputs, or
/// big-key ones when `big_inputs`, then layer 0 keyswitches too), with the
/// output layer's tables replaced by `output` (tables, output bits) if
/// given. Returns the output layer's bootstrap outputs.
#[allow(clippy::too_many_arguments)]
fn run_layers(
    circuit: &Circuit,
    key: &EvaluationKey,
    luts: &LookupTables,
    mut current: LweCiphertextListOwned<u64>,
    big_inputs: bool,
    layers: std::ops::Range<usize>,
    output: Option<(&[Vec<i64>], u32)>,
    stats: &mut EvalStats,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<LweCiphertextListOwned<u64>> {
    let p = circuit.params.tfhe();
    let d_in = delta(circuit.precision_bits);
    for (li, layer) in circuit.layers.iter().enumerate() {
        if !layers.contains(&li) {
            continue;
        }
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let in_size = current.lwe_size().0;
        let inputs = current.as_ref();
        let keyswitch = layer.keyswitch || (li == 0 && big_inputs);
        let dot = |j: usize| {
            // dot product with cleartext weights
            let mut acc = vec![0u64; in_size];
            for (i, w) in layer.row(j).iter().enumerate() {
                if *w == 0 {
                    continue;
                }
                let w = *w as u64;
                let ct = &inputs[i * in_size..(i + 1) * in_size];
                for (a, c) in acc.iter_mut().zip(ct) {
                    *a = a.wrapping_add(c.wrapping_mul(w));
                }
            }
            let body = in_size - 1;
            acc[body] = acc[body].wrapping_add((layer.offset[j] as u64).wrapping_mul(d_in));
            LweCiphertext::from_container(acc, p.ciphertext_modulus)
        };
        let flat = match output {
            Some((tables, bits)) if layer.is_output => {
                let d = delta(bits);
                let table =
                    |j: usize| Table::Owned(lookup_table(p, circuit.precision_bits, d, &tables[j]));
                bootstrap_many(key, layer.out_len, keyswitch, &dot, &table, cancelled)?
            }
            _ => {
                let prebuilt = &luts.layers[li];
                let table = |j: usize| Table::Borrowed(&prebuilt[j]);
                bootstrap_many(key, layer.out_len, keyswitch, &dot, &table, cancelled)?
            }
        };
        stats.bootstraps += layer.out_len;
        if keyswitch {
            stats.keyswitches += layer.out_len;
        }
        let big_size = LweDimension(circuit.params.big_lwe_dimension()).to_lwe_size();
        current = LweCiphertextList::from_container(flat, big_size, p.ciphertext_modulus);
    }
    Ok(current)
}

/// A bootstrap table, prebuilt or made for one query.
enum Table<'a> {
    Borrowed(&'a GlweCiphertextOwned<u64>),
    Owned(GlweCiphertextOwned<u64>),
}

impl Table<'_> {
    fn glwe(&self) -> &GlweCiphertextOwned<u64> {
        match self {
            Table::Borrowed(g) => g,
            Table::Owned(g) => g,
        }
    }
}

type InputFn<'a> = dyn Fn(usize) -> LweCiphertextOwned<u64> + Sync + 'a;
type TableFn<'a> = dyn Fn(usize) -> Table<'a> + Sync + 'a;

/// `count` programmable bootstraps: bootstrap `j` of `input(j)` (keyswitched
/// first when `keyswitch`: big-key inputs) through `table(j)`. The work is
/// split into one batch per worker; each batch runs its blind rotations
/// together so the bootstrap key is streamed from memory once per batch.
/// Returns the big-key outputs back to back.
fn bootstrap_many<'a>(
    key: &EvaluationKey,
    count: usize,
    keyswitch: bool,
    input: &InputFn<'a>,
    table: &TableFn<'a>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<u64>> {
    use rayon::prelude::*;
    let p = key.params.tfhe();
    let log_2n = CiphertextModulusLog(p.polynomial_size.0.trailing_zeros() as usize + 1);
    let big_size = LweDimension(key.params.big_lwe_dimension()).to_lwe_size();
    let threads = rayon::current_num_threads().max(1);
    let batch = count.div_ceil(threads).max(1);
    let batches: Vec<std::ops::Range<usize>> = (0..count)
        .step_by(batch)
        .map(|s| s..(s + batch).min(count))
        .collect();
    let outputs: Vec<Vec<u64>> = batches
        .into_par_iter()
        .map(|range| {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let msed: Vec<SwitchedLwe> = range
                .clone()
                .map(|j| {
                    let acc = input(j);
                    if keyswitch {
                        let mut small = LweCiphertext::new(
                            0u64,
                            p.lwe_dimension.to_lwe_size(),
                            p.ciphertext_modulus,
                        );
                        keyswitch_lwe_ciphertext(&key.ksk, &acc, &mut small);
                        SwitchedLwe::centered(&small, log_2n)
                    } else {
                        SwitchedLwe::centered(&acc, log_2n)
                    }
                })
                .collect();
            let tables: Vec<Table> = range.map(table).collect();
            let luts: Vec<&GlweCiphertextOwned<u64>> = tables.iter().map(|t| t.glwe()).collect();
            Ok(blind_rotate_batch(&key.fourier_bsk, &luts, &msed, big_size))
        })
        .collect::<Result<_>>()?;
    Ok(outputs.into_iter().flatten().collect())
}

/// Server-side evaluator of a hardened model ([`Hardened`]: members plus a
/// policy) under one evaluation key: the members' networks, then the
/// query's [`Plan`], on ciphertexts.
pub struct PlanEvaluator<'a> {
    model: &'a Hardened,
    key: &'a EvaluationKey,
    tables: &'a [LookupTables],
}

impl<'a> PlanEvaluator<'a> {
    /// `tables[i]` must be [`LookupTables::new`] of member `i`.
    pub fn new(
        model: &'a Hardened,
        key: &'a EvaluationKey,
        tables: &'a [LookupTables],
    ) -> Result<Self> {
        if key.params != model.params() {
            return Err(Error::Eval(format!(
                "evaluation key is for {}, the model uses {}",
                key.params.name(),
                model.params().name()
            )));
        }
        if tables.len() != model.members.len()
            || tables.iter().zip(&model.members).any(|(t, c)| !t.fits(c))
        {
            return Err(Error::Eval(
                "lookup tables were built for other circuits".into(),
            ));
        }
        Ok(Self { model, key, tables })
    }

    /// Evaluates the model and the plan on an encrypted input; gives up
    /// with [`Error::Cancelled`] once `cancelled()` turns true.
    pub fn evaluate(
        &self,
        input: &EncryptedInput,
        plan: &Plan,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<(EncryptedOutput, EvalStats)> {
        let mut all = self.evaluate_many(input, &[plan], cancelled)?;
        all.pop()
            .ok_or_else(|| Error::Eval("no plan evaluated".into()))
    }

    /// Several plans (policies or noise draws) on one input, sharing the
    /// input clamp and the members' hidden layers, which no plan changes
    /// (all plans must agree on the clamp). Each result's stats count the
    /// shared work too, as if it had run alone; `seconds` is the shared
    /// part's time plus the plan's own.
    pub fn evaluate_many(
        &self,
        input: &EncryptedInput,
        plans: &[&Plan],
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<(EncryptedOutput, EvalStats)>> {
        let first = &self.model.members[0];
        check_input(first, input)?;
        let Some(clamp) = plans.first().map(|p| p.clamp_inputs) else {
            return Ok(Vec::new());
        };
        for plan in plans {
            if plan.members != self.model.members.len()
                || plan.member_tables.len() != plan.members
                || plan.classes != first.classes
                || plan.clamp_inputs != clamp
            {
                return Err(Error::Eval("plan does not fit the model".into()));
            }
        }
        let start = std::time::Instant::now();
        let mut shared = EvalStats::default();
        let p = first.params.tfhe();
        let bits = first.precision_bits;
        let big_size = LweDimension(first.params.big_lwe_dimension()).to_lwe_size();
        let mut inputs = input.cts.clone().decompress_into_lwe_ciphertext_list();
        if clamp {
            // one bootstrap per input (no keyswitch: fresh small-key
            // ciphertexts), half-step table, then re-centred
            let lut = lookup_table(
                p,
                bits,
                delta(bits + 1),
                &clamp_table(first.input.bits, bits),
            );
            let size = inputs.lwe_size().0;
            let raw = inputs.as_ref();
            let input_ct = |i: usize| {
                LweCiphertext::from_container(
                    raw[i * size..(i + 1) * size].to_vec(),
                    p.ciphertext_modulus,
                )
            };
            let table = |_: usize| Table::Borrowed(&lut);
            let n = inputs.lwe_ciphertext_count().0;
            let mut flat = bootstrap_many(self.key, n, false, &input_ct, &table, cancelled)?;
            let shift = ((1u64 << first.input.bits) - 1).wrapping_mul(delta(bits + 1));
            for ct in flat.chunks_mut(big_size.0) {
                let body = big_size.0 - 1;
                ct[body] = ct[body].wrapping_add(shift);
            }
            shared.bootstraps += n;
            inputs = LweCiphertextList::from_container(flat, big_size, p.ciphertext_modulus);
        }
        // hidden layers, once
        let mut hidden = Vec::with_capacity(self.model.members.len());
        for (c, luts) in self.model.members.iter().zip(self.tables) {
            let last = c.layers.len() - 1;
            hidden.push(if last == 0 {
                inputs.clone()
            } else {
                run_layers(
                    c,
                    self.key,
                    luts,
                    inputs.clone(),
                    clamp,
                    0..last,
                    None,
                    &mut shared,
                    cancelled,
                )?
            });
        }
        let shared_seconds = start.elapsed().as_secs_f64();
        plans
            .iter()
            .map(|plan| {
                let t = std::time::Instant::now();
                let mut stats = shared.clone();
                let out = self.run_plan(plan, &hidden, clamp, &mut stats, cancelled)?;
                stats.seconds = shared_seconds + t.elapsed().as_secs_f64();
                Ok((out, stats))
            })
            .collect()
    }

    /// The members' output layers (with the plan's tables) and the stage.
    fn run_plan(
        &self,
        plan: &Plan,
        hidden: &[LweCiphertextListOwned<u64>],
        clamp: bool,
        stats: &mut EvalStats,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<EncryptedOutput> {
        let first = &self.model.members[0];
        let p = first.params.tfhe();
        let bits = first.precision_bits;
        let big_size = LweDimension(first.params.big_lwe_dimension()).to_lwe_size();
        let mut values: Vec<Option<Vec<u64>>> = Vec::new();
        for (((c, luts), tables), h) in self
            .model
            .members
            .iter()
            .zip(self.tables)
            .zip(&plan.member_tables)
            .zip(hidden)
        {
            let last = c.layers.len() - 1;
            let out = run_layers(
                c,
                self.key,
                luts,
                h.clone(),
                clamp,
                last..last + 1,
                Some((tables, plan.member_out_bits)),
                stats,
                cancelled,
            )?;
            values.extend(out.iter().map(|ct| Some(ct.as_ref().to_vec())));
        }
        values.resize(plan.op_id(plan.ops.len()), None);
        let d_stage = delta(bits);
        let combine = |values: &[Option<Vec<u64>>], op: &Op| -> Result<Vec<u64>> {
            let mut acc = vec![0u64; big_size.0];
            for (id, w) in &op.terms {
                let ct = values
                    .get(*id)
                    .and_then(|v| v.as_ref())
                    .ok_or_else(|| Error::Eval("plan uses a value before computing it".into()))?;
                let w = *w as u64;
                for (a, c) in acc.iter_mut().zip(ct) {
                    *a = a.wrapping_add(c.wrapping_mul(w));
                }
            }
            let body = big_size.0 - 1;
            acc[body] = acc[body].wrapping_add((op.constant as u64).wrapping_mul(d_stage));
            Ok(acc)
        };
        for level in 0..=plan.depth() {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let batch: Vec<(usize, &Op)> = plan
                .ops
                .iter()
                .enumerate()
                .filter(|(_, o)| o.level == level && o.lookup.is_some())
                .collect();
            if !batch.is_empty() {
                let accs: Vec<Vec<u64>> = batch
                    .iter()
                    .map(|(_, op)| combine(&values, op))
                    .collect::<Result<_>>()?;
                let input_ct =
                    |i: usize| LweCiphertext::from_container(accs[i].clone(), p.ciphertext_modulus);
                let table = |i: usize| match &batch[i].1.lookup {
                    Some(l) => Table::Owned(lookup_table(p, bits, delta(l.out_bits), &l.table)),
                    None => unreachable!("the batch holds lookups only"),
                };
                let flat =
                    bootstrap_many(self.key, batch.len(), true, &input_ct, &table, cancelled)?;
                for ((k, _), ct) in batch.iter().zip(flat.chunks(big_size.0)) {
                    values[plan.op_id(*k)] = Some(ct.to_vec());
                }
                stats.bootstraps += batch.len();
                stats.keyswitches += batch.len();
            }
            for (k, op) in plan.ops.iter().enumerate() {
                if op.level == level && op.lookup.is_none() {
                    values[plan.op_id(k)] = Some(combine(&values, op)?);
                }
            }
        }
        let mut flat = Vec::with_capacity(plan.outputs.len() * big_size.0);
        for id in &plan.outputs {
            let ct = values
                .get(*id)
                .and_then(|v| v.as_ref())
                .ok_or_else(|| Error::Eval("plan output was never computed".into()))?;
            flat.extend_from_slice(ct);
        }
        Ok(EncryptedOutput {
            params: first.params,
            output_bits: plan.output_bits,
            cts: LweCiphertextList::from_container(flat, big_size, p.ciphertext_modulus),
        })
    }
}

/// The accumulator of a bootstrap: a trivial GLWE whose body holds, at
/// coefficient `c`, the table value for accumulator `m = round(c / box)`
/// (`box = N / 2^p`) in units of `delta`. The top half-box is the
/// negacyclic image of `m = 2^p`, i.e. `-T[0]`, so an input that noise
/// pushes just below 0 still comes out as `T[0]`. With the centered-mean
/// modulus switch the expected blind-rotation index of `m` is `m·box − ½`,
/// the middle of its coefficient range.
fn lookup_table(
    p: ClassicPBSParameters,
    precision_bits: u32,
    delta: u64,
    table: &[i64],
) -> GlweCiphertextOwned<u64> {
    let window = 1usize << precision_bits;
    let box_size = p.polynomial_size.0 / window;
    let mut glwe = GlweCiphertext::new(
        0u64,
        p.glwe_dimension.to_glwe_size(),
        p.polynomial_size,
        p.ciphertext_modulus,
    );
    let mut body = glwe.get_mut_body();
    for (c, coef) in body.as_mut().iter_mut().enumerate() {
        let m = (c + box_size / 2) / box_size;
        *coef = if m < window {
            (table[m] as u64).wrapping_mul(delta)
        } else {
            (table[0] as u64).wrapping_mul(delta).wrapping_neg()
        };
    }
    glwe
}

/// A modulus-switched LWE ciphertext, materialised (the blind rotation
/// reads its mask once per bootstrap-key row).
struct SwitchedLwe {
    body: usize,
    mask: Vec<usize>,
    log_modulus: CiphertextModulusLog,
}

impl SwitchedLwe {
    /// Centered-mean modulus switch to `2N`.
    fn centered(ct: &LweCiphertextOwned<u64>, log_modulus: CiphertextModulusLog) -> Self {
        let lazy = lwe_ciphertext_centered_binary_modulus_switch::<u64, usize, _>(
            ct.as_view(),
            log_modulus,
        );
        Self {
            body: lazy.body(),
            mask: lazy.mask().collect(),
            log_modulus,
        }
    }
}

impl ModulusSwitchedLweCiphertext<usize> for SwitchedLwe {
    fn log_modulus(&self) -> CiphertextModulusLog {
        self.log_modulus
    }
    fn lwe_dimension(&self) -> LweDimension {
        LweDimension(self.mask.len())
    }
    fn body(&self) -> usize {
        self.body
    }
    fn mask(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.mask.iter().copied()
    }
}

/// Blind-rotates each table by its input and extracts the constant
/// coefficient: a batch of programmable bootstraps sharing one pass over the
/// bootstrap key. Returns the outputs back to back.
fn blind_rotate_batch(
    fourier: &FourierLweBootstrapKeyOwned,
    luts: &[&GlweCiphertextOwned<u64>],
    msed: &[SwitchedLwe],
    big_size: LweSize,
) -> Vec<u64> {
    let Some(first) = luts.first() else {
        return Vec::new();
    };
    let glwe_size = first.glwe_size();
    let poly = first.polynomial_size();
    let modulus = first.ciphertext_modulus();
    let fft = Fft::new(poly);
    let mut buffers = ComputationBuffers::new();
    buffers.resize(
        tfhe::core_crypto::fft_impl::fft64::crypto::bootstrap::batch_blind_rotate_assign_scratch::<
            u64,
        >(glwe_size, poly, CiphertextCount(luts.len()), fft.as_view())
        .unaligned_bytes_required(),
    );
    let data: Vec<u64> = luts
        .iter()
        .flat_map(|l| l.as_ref().iter().copied())
        .collect();
    let mut list = GlweCiphertextList::from_container(data, glwe_size, poly, modulus);
    fourier.as_view().batch_blind_rotate_assign(
        list.as_mut_view(),
        msed,
        fft.as_view(),
        buffers.stack(),
    );
    let mut out = vec![0u64; big_size.0 * luts.len()];
    for (glwe, chunk) in list.iter().zip(out.chunks_mut(big_size.0)) {
        let mut lwe = LweCiphertext::from_container(chunk, modulus);
        extract_lwe_sample_from_glwe_ciphertext(&glwe, &mut lwe, MonomialDegree(0));
    }
    out
}

/// FFT plan and scratch memory for one (unbatched) blind rotation.
fn single_bootstrap_workspace(p: ClassicPBSParameters) -> (Fft, ComputationBuffers) {
    let fft = Fft::new(p.polynomial_size);
    let mut buffers = ComputationBuffers::new();
    buffers.resize(
        blind_rotate_assign_mem_optimized_requirement::<u64>(
            p.glwe_dimension.to_glwe_size(),
            p.polynomial_size,
            fft.as_view(),
        )
        .unaligned_bytes_required(),
    );
    (fft, buffers)
}

/// Times one keyswitch and one bootstrap (single thread) with `key`, on
/// dummy ciphertexts: the unit of the PBS floor.
pub fn time_primitives(key: &EvaluationKey, reps: usize) -> (f64, f64) {
    let p = key.params.tfhe();
    let big_size = LweDimension(key.params.big_lwe_dimension()).to_lwe_size();
    let log_2n = CiphertextModulusLog(p.polynomial_size.0.trailing_zeros() as usize + 1);
    let (fft, mut buffers) = single_bootstrap_workspace(p);
    let lut = GlweCiphertext::new(
        0u64,
        p.glwe_dimension.to_glwe_size(),
        p.polynomial_size,
        p.ciphertext_modulus,
    );
    let mut big = LweCiphertext::new(0u64, big_size, p.ciphertext_modulus);
    for (i, v) in big.as_mut().iter_mut().enumerate() {
        *v = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let mut small = LweCiphertext::new(0u64, p.lwe_dimension.to_lwe_size(), p.ciphertext_modulus);
    let mut out = LweCiphertext::new(0u64, big_size, p.ciphertext_modulus);
    let reps = reps.max(1);
    let mut ks = 0.0;
    let mut pbs = 0.0;
    for _ in 0..reps {
        let t = std::time::Instant::now();
        keyswitch_lwe_ciphertext(&key.ksk, &big, &mut small);
        ks += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let msed =
            lwe_ciphertext_centered_binary_modulus_switch::<u64, usize, _>(small.as_view(), log_2n);
        let mut rotated = lut.clone();
        blind_rotate_assign_mem_optimized(
            &msed,
            &mut rotated,
            &key.fourier_bsk,
            fft.as_view(),
            buffers.stack(),
        );
        extract_lwe_sample_from_glwe_ciphertext(&rotated, &mut out, MonomialDegree(0));
        pbs += t.elapsed().as_secs_f64();
    }
    (ks / reps as f64, pbs / reps as f64)
}

/// Time per bootstrap (seconds) when `batch` bootstraps share one pass over
/// the bootstrap key on one thread, as the evaluator runs them: the unit of
/// the batched PBS floor.
pub fn time_batched_bootstrap(key: &EvaluationKey, batch: usize) -> f64 {
    let p = key.params.tfhe();
    let batch = batch.max(1);
    let big_size = LweDimension(key.params.big_lwe_dimension()).to_lwe_size();
    let log_2n = CiphertextModulusLog(p.polynomial_size.0.trailing_zeros() as usize + 1);
    let lut = GlweCiphertext::new(
        0u64,
        p.glwe_dimension.to_glwe_size(),
        p.polynomial_size,
        p.ciphertext_modulus,
    );
    let luts = vec![&lut; batch];
    let msed: Vec<SwitchedLwe> = (0..batch)
        .map(|b| {
            let mut small =
                LweCiphertext::new(0u64, p.lwe_dimension.to_lwe_size(), p.ciphertext_modulus);
            for (i, v) in small.as_mut().iter_mut().enumerate() {
                *v = ((i + 7919 * b) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            }
            SwitchedLwe::centered(&small, log_2n)
        })
        .collect();
    let t = std::time::Instant::now();
    let out = blind_rotate_batch(&key.fourier_bsk, &luts, &msed, big_size);
    let elapsed = t.elapsed().as_secs_f64();
    std::hint::black_box(out);
    elapsed / batch as f64
}

/// Runs a single keyswitch + bootstrap of `table` (2^precision entries,
/// outputs at `out_bits` precision) on each big-key ciphertext: used to
/// measure the bootstrap failure rate against the model.
pub fn bootstrap_big_list(
    key: &EvaluationKey,
    precision_bits: u32,
    out_bits: u32,
    table: &[i64],
    cts: &LweCiphertextListOwned<u64>,
) -> LweCiphertextListOwned<u64> {
    use rayon::prelude::*;
    let p = key.params.tfhe();
    let n = p.polynomial_size.0;
    let lut = lookup_table(p, precision_bits, delta(out_bits), table);
    let big_size = cts.lwe_size();
    let log_2n = CiphertextModulusLog(n.trailing_zeros() as usize + 1);
    let size = big_size.0;
    let outs: Vec<Vec<u64>> = cts
        .as_ref()
        .par_chunks(size)
        .map_init(
            || single_bootstrap_workspace(p),
            |(fft, buffers), chunk| {
                let ct = LweCiphertext::from_container(chunk, p.ciphertext_modulus);
                let mut small =
                    LweCiphertext::new(0u64, p.lwe_dimension.to_lwe_size(), p.ciphertext_modulus);
                keyswitch_lwe_ciphertext(&key.ksk, &ct, &mut small);
                let msed = lwe_ciphertext_centered_binary_modulus_switch::<u64, usize, _>(
                    small.as_view(),
                    log_2n,
                );
                let mut rotated = lut.clone();
                blind_rotate_assign_mem_optimized(
                    &msed,
                    &mut rotated,
                    &key.fourier_bsk,
                    fft.as_view(),
                    buffers.stack(),
                );
                let mut out = LweCiphertext::new(0u64, big_size, p.ciphertext_modulus);
                extract_lwe_sample_from_glwe_ciphertext(&rotated, &mut out, MonomialDegree(0));
                out.into_container()
            },
        )
        .collect();
    LweCiphertextList::from_container(
        outs.into_iter().flatten().collect(),
        big_size,
        p.ciphertext_modulus,
    )
}
