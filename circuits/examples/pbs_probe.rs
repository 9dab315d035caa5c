use std::time::Instant;
use tfhe::core_crypto::prelude::*;
use tfhe::shortint::parameters::v1_8::*;
use tfhe::shortint::parameters::ClassicPBSParameters;

fn probe(name: &str, p: ClassicPBSParameters, bits: u32, reps: usize) {
    let mut boxed_seeder = new_seeder();
    let seeder = boxed_seeder.as_mut();
    let mut sg = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
    let mut eg = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
    let small = LweSecretKey::generate_new_binary(p.lwe_dimension, &mut sg);
    let glwe = GlweSecretKey::generate_new_binary(p.glwe_dimension, p.polynomial_size, &mut sg);
    let big = glwe.clone().into_lwe_secret_key();
    let t = Instant::now();
    let bsk = par_allocate_and_generate_new_seeded_lwe_bootstrap_key(
        &small,
        &glwe,
        p.pbs_base_log,
        p.pbs_level,
        p.glwe_noise_distribution,
        p.ciphertext_modulus,
        seeder,
    );
    let ksk = allocate_and_generate_new_seeded_lwe_keyswitch_key(
        &big,
        &small,
        p.ks_base_log,
        p.ks_level,
        p.lwe_noise_distribution,
        p.ciphertext_modulus,
        seeder,
    );
    let kg = t.elapsed();
    let bsk_bytes = bsk.as_ref().len() * 8;
    let ksk_bytes = ksk.as_ref().len() * 8;
    let bsk = bsk.decompress_into_lwe_bootstrap_key();
    let ksk = ksk.decompress_into_lwe_keyswitch_key();
    let mut fbsk = FourierLweBootstrapKey::new(
        bsk.input_lwe_dimension(),
        bsk.glwe_size(),
        bsk.polynomial_size(),
        bsk.decomposition_base_log(),
        bsk.decomposition_level_count(),
    );
    par_convert_standard_lwe_bootstrap_key_to_fourier(&bsk, &mut fbsk);
    let n = p.polynomial_size.0;
    let log2n = CiphertextModulusLog(n.trailing_zeros() as usize + 1);
    let msg = 1u64 << bits;
    let delta = (1u64 << 63) / msg;
    let box_size = n / msg as usize;
    // LUT: identity, coefficient j -> message floor((j + box/2)/box), negacyclic wrap for top half box
    let mut lut = GlweCiphertext::new(
        0u64,
        p.glwe_dimension.to_glwe_size(),
        p.polynomial_size,
        p.ciphertext_modulus,
    );
    {
        let mut body = lut.get_mut_body();
        let poly = body.as_mut();
        for j in 0..n {
            let m = ((j + box_size / 2) / box_size) as u64;
            poly[j] = if m >= msg {
                (0u64).wrapping_sub(0)
            } else {
                m * delta
            };
        }
    }
    let mut errs = 0;
    let mut ks_t = 0.0;
    let mut pbs_t = 0.0;
    let mut out = LweCiphertext::new(
        0u64,
        big.lwe_dimension().to_lwe_size(),
        p.ciphertext_modulus,
    );
    let mut small_ct = LweCiphertext::new(
        0u64,
        small.lwe_dimension().to_lwe_size(),
        p.ciphertext_modulus,
    );
    let fft = Fft::new(p.polynomial_size);
    let fft = fft.as_view();
    let mut buffers = ComputationBuffers::new();
    buffers.resize(
        blind_rotate_assign_mem_optimized_requirement::<u64>(
            p.glwe_dimension.to_glwe_size(),
            p.polynomial_size,
            fft,
        )
        .unaligned_bytes_required(),
    );
    for r in 0..reps {
        let m = (r as u64 * 7) % msg;
        let ct = allocate_and_encrypt_new_lwe_ciphertext(
            &big,
            Plaintext(m * delta),
            p.glwe_noise_distribution,
            p.ciphertext_modulus,
            &mut eg,
        );
        let t = Instant::now();
        keyswitch_lwe_ciphertext(&ksk, &ct, &mut small_ct);
        ks_t += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let msed = lwe_ciphertext_centered_binary_modulus_switch::<u64, usize, _>(
            small_ct.as_view(),
            log2n,
        );
        let mut acc = lut.clone();
        blind_rotate_assign_mem_optimized(&msed, &mut acc, &fbsk, fft, buffers.stack());
        extract_lwe_sample_from_glwe_ciphertext(&acc, &mut out, MonomialDegree(0));
        pbs_t += t.elapsed().as_secs_f64();
        let dec = decrypt_lwe_ciphertext(&big, &out).0;
        let got = (dec.wrapping_add(delta / 2)) / delta;
        if got != m {
            errs += 1;
        }
    }
    println!("{name}: keygen {:?} bsk {} MB ksk {} MB; KS {:.2} ms PBS {:.2} ms; errors {errs}/{reps} at {bits} bits",
        kg, bsk_bytes/1_000_000, ksk_bytes/1_000_000, ks_t*1e3/reps as f64, pbs_t*1e3/reps as f64);
}
fn main() {
    probe(
        "2_2",
        V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128,
        5,
        40,
    );
    probe(
        "3_3",
        V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128,
        7,
        20,
    );
}
