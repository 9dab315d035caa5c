//! The FHE interpreter: a [`Program`] on tfhe-rs LWE ciphertexts.
//!
//! Per node: the dot product of its input ciphertexts with cleartext
//! integer weights plus its constant as a trivial plaintext (no
//! bootstrap); then, for nodes that read bootstrap outputs (big-key
//! ciphertexts), a keyswitch to the small key; the centered-mean modulus
//! switch; a blind rotation of the node's table and a sample extraction.
//! The scheduler hands this backend one batch of a level's nodes per
//! worker; a batch's blind rotations share one pass over the bootstrap key
//! (tfhe-rs's batched blind rotation). Outputs are bootstrap outputs under
//! the big key.
//!
//! Bootstrap tables are trivially-encrypted GLWE accumulators. They depend
//! on the program only, so a server builds them once per model
//! ([`FheTables`]); an answer's replaced (noisy) tables are built per
//! answer.
//!
//! tfhe-rs internals used: the batched blind rotation
//! (`FourierLweBootstrapKeyView::batch_blind_rotate_assign` and its scratch
//! size `fft_impl::fft64::crypto::bootstrap::batch_blind_rotate_assign_scratch`)
//! has no public counterpart in `core_crypto::algorithms`; it saves about a
//! fifth of every bootstrap against the public one-at-a-time
//! `blind_rotate_assign_mem_optimized`, which the primitive timings use.

use tfhe::core_crypto::prelude::*;
use tfhe::shortint::parameters::ClassicPBSParameters;

use crate::ciphertext::{EncryptedInput, EncryptedOutput};
use crate::eval::{run, run_shared, Backend, Cancel, EvalStats};
use crate::keys::{delta, params_mismatch, EvaluationKey};
use crate::params::ParamSet;
use crate::program::{Program, Table, TableId, TableSet};
use crate::{Error, Result};

/// A program's tables as GLWE accumulators, built once per model and
/// shared by every key and request.
#[derive(Clone)]
pub struct FheTables {
    params: ParamSet,
    program: u64,
    glwe: Vec<GlweCiphertextOwned<u64>>,
}

impl FheTables {
    pub fn new(program: &Program) -> Self {
        let p = program.params.tfhe();
        Self {
            params: program.params,
            program: program.id(),
            glwe: program
                .tables
                .iter()
                .map(|t| accumulator(p, program.precision_bits, t))
                .collect(),
        }
    }
}

/// The FHE backend: one evaluation key and the tables of the programs it
/// runs.
pub struct Fhe<'a> {
    key: &'a EvaluationKey,
    tables: Vec<&'a FheTables>,
}

/// One answer's tables: the program's prebuilt ones and its replaced ones.
pub struct FheRun {
    base: usize,
    replaced: Vec<(TableId, GlweCiphertextOwned<u64>)>,
}

impl<'a> Fhe<'a> {
    /// A backend for the program `tables` was built for
    /// ([`FheTables::new`]); the key must be for its parameter set.
    pub fn new(key: &'a EvaluationKey, tables: &'a FheTables) -> Result<Self> {
        Self::for_programs(key, vec![tables])
    }

    /// A backend for several programs (e.g. one model under several
    /// policies, for [`evaluate_shared`]).
    pub fn for_programs(key: &'a EvaluationKey, tables: Vec<&'a FheTables>) -> Result<Self> {
        if let Some(t) = tables.iter().find(|t| t.params != key.params) {
            return Err(params_mismatch("evaluation key", key.params, t.params));
        }
        Ok(Self { key, tables })
    }
}

impl Backend for Fhe<'_> {
    type Value = Vec<u64>;
    type Tables = FheRun;

    fn workers(&self) -> usize {
        rayon::current_num_threads()
    }

    fn prepare(&self, program: &Program, overrides: &TableSet) -> Result<FheRun> {
        let base = self
            .tables
            .iter()
            .position(|t| t.program == program.id())
            .ok_or_else(|| {
                Error::Internal("no bootstrap tables were built for this program".into())
            })?;
        let p = program.params.tfhe();
        Ok(FheRun {
            base,
            replaced: overrides
                .iter()
                .map(|(id, t)| (*id, accumulator(p, program.precision_bits, t)))
                .collect(),
        })
    }

    fn bootstrap_batch(
        &self,
        program: &Program,
        _: &TableSet,
        run: &FheRun,
        batch: &[usize],
        values: &[Option<Vec<u64>>],
    ) -> Result<Vec<Vec<u64>>> {
        let p = program.params.tfhe();
        let big_size = program.params.big_lwe_dimension() + 1;
        let mut accs = Vec::with_capacity(batch.len());
        let mut luts = Vec::with_capacity(batch.len());
        for k in batch {
            let node = &program.nodes[*k];
            // the dot product with cleartext weights
            let size = match node.terms.first() {
                Some((v, _)) => values[*v].as_ref().map_or(0, Vec::len),
                None => big_size,
            };
            let mut acc = vec![0u64; size.max(1)];
            for (v, w) in &node.terms {
                let ct = values[*v]
                    .as_ref()
                    .filter(|ct| ct.len() == size)
                    .ok_or_else(|| Error::Internal(format!("node {k} read value {v} early")))?;
                let w = *w as u64;
                for (a, c) in acc.iter_mut().zip(ct) {
                    *a = a.wrapping_add(c.wrapping_mul(w));
                }
            }
            let body = acc.len() - 1;
            acc[body] = acc[body].wrapping_add(node.constant);
            accs.push((
                LweCiphertext::from_container(acc, p.ciphertext_modulus),
                !node.reads_inputs,
            ));
            let id = node.table;
            luts.push(match run.replaced.iter().find(|(t, _)| *t == id) {
                Some((_, g)) => g,
                None => &self.tables[run.base].glwe[id],
            });
        }
        Ok(bootstrap_accumulators(self.key, accs, &luts))
    }
}

/// Checks an encrypted input against a program's parameter set, encoding
/// and input count.
pub fn check_input(program: &Program, input: &EncryptedInput) -> Result<()> {
    input.conform(program.params, program.input_bits, program.input_count)
}

/// Runs `program` (with an answer's replaced tables) on an encrypted input.
pub fn evaluate(
    program: &Program,
    backend: &Fhe<'_>,
    overrides: &TableSet,
    input: &EncryptedInput,
    cancel: Cancel<'_>,
) -> Result<(EncryptedOutput, EvalStats)> {
    check_input(program, input)?;
    let (out, stats) = run(backend, program, overrides, input.expand(), cancel)?;
    Ok((
        EncryptedOutput::from_values(program.params, program.output_bits, out),
        stats,
    ))
}

/// Several answers (programs or table sets) on one encrypted input, the
/// work they share done once (see [`crate::eval::run_shared`]).
pub fn evaluate_shared(
    runs: &[(&Program, &TableSet)],
    backend: &Fhe<'_>,
    input: &EncryptedInput,
    cancel: Cancel<'_>,
) -> Result<Vec<(EncryptedOutput, EvalStats)>> {
    for (program, _) in runs {
        check_input(program, input)?;
    }
    Ok(run_shared(backend, runs, input.expand(), cancel)?
        .into_iter()
        .zip(runs)
        .map(|((out, stats), (program, _))| {
            (
                EncryptedOutput::from_values(program.params, program.output_bits, out),
                stats,
            )
        })
        .collect())
}

/// Keyswitches and bootstraps each big-key ciphertext through one table
/// (`2^precision_bits` entries, outputs at `out_bits`), with the same
/// batch primitive as the interpreter: for measuring the bootstrap failure
/// rate against the noise model on inputs of a chosen value.
pub fn bootstrap_big_list(
    key: &EvaluationKey,
    precision_bits: u32,
    out_bits: u32,
    table: &[i64],
    cts: &LweCiphertextListOwned<u64>,
) -> Result<LweCiphertextListOwned<u64>> {
    use rayon::prelude::*;
    let p = key.params.tfhe();
    let big_size = LweDimension(key.params.big_lwe_dimension()).to_lwe_size();
    if cts.lwe_size() != big_size || (1usize << precision_bits) != table.len() {
        return Err(Error::Internal(
            "ciphertexts or table do not fit the key".into(),
        ));
    }
    let lut = accumulator(
        p,
        precision_bits,
        &Table {
            entries: table.to_vec(),
            out_bits,
        },
    );
    let count = cts.lwe_ciphertext_count().0;
    let per = count.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let outs: Vec<Vec<Vec<u64>>> = cts
        .as_ref()
        .par_chunks(per * big_size.0)
        .map(|chunk| {
            let accs: Vec<(LweCiphertextOwned<u64>, bool)> = chunk
                .chunks(big_size.0)
                .map(|c| {
                    (
                        LweCiphertext::from_container(c.to_vec(), p.ciphertext_modulus),
                        true,
                    )
                })
                .collect();
            let luts = vec![&lut; accs.len()];
            bootstrap_accumulators(key, accs, &luts)
        })
        .collect();
    Ok(LweCiphertextList::from_container(
        outs.into_iter().flatten().flatten().collect(),
        big_size,
        p.ciphertext_modulus,
    ))
}

/// Bootstraps accumulators (keyswitched first where marked: big-key ones)
/// through their tables, sharing one pass over the bootstrap key. Returns
/// the big-key outputs.
fn bootstrap_accumulators(
    key: &EvaluationKey,
    accs: Vec<(LweCiphertextOwned<u64>, bool)>,
    luts: &[&GlweCiphertextOwned<u64>],
) -> Vec<Vec<u64>> {
    let p = key.params.tfhe();
    let log_2n = CiphertextModulusLog(p.polynomial_size.0.trailing_zeros() as usize + 1);
    let big_size = LweDimension(key.params.big_lwe_dimension()).to_lwe_size();
    let msed: Vec<SwitchedLwe> = accs
        .iter()
        .map(|(acc, keyswitch)| {
            if *keyswitch {
                let mut small =
                    LweCiphertext::new(0u64, p.lwe_dimension.to_lwe_size(), p.ciphertext_modulus);
                keyswitch_lwe_ciphertext(&key.ksk, acc, &mut small);
                SwitchedLwe::centered(&small, log_2n)
            } else {
                SwitchedLwe::centered(acc, log_2n)
            }
        })
        .collect();
    let flat = blind_rotate_batch(&key.fourier_bsk, luts, &msed, big_size);
    flat.chunks(big_size.0).map(<[u64]>::to_vec).collect()
}

/// The accumulator of a bootstrap: a trivial GLWE whose body holds, at
/// coefficient `c`, the table value for accumulator `m = round(c / box)`
/// (`box = N / 2^p`) in units of `delta`. The top half-box is the
/// negacyclic image of `m = 2^p`, i.e. `-T[0]`, so an input that noise
/// pushes just below 0 still comes out as `T[0]`. With the centered-mean
/// modulus switch the expected blind-rotation index of `m` is `m·box − ½`,
/// the middle of its coefficient range.
fn accumulator(
    p: ClassicPBSParameters,
    precision_bits: u32,
    table: &Table,
) -> GlweCiphertextOwned<u64> {
    let delta = delta(table.out_bits);
    let table = &table.entries;
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
