fn main() {
    for ps in blindfold_circuits::params::ParamSet::ALL {
        let n = ps.noise();
        println!("{:?}: fresh_small σ=2^{:.1} fresh_big σ=2^{:.1} ks σ=2^{:.1} ms σ=2^{:.1} pbs σ=2^{:.1}", ps,
            n.fresh_small.sqrt().log2(), n.fresh_big.sqrt().log2(), n.keyswitch.sqrt().log2(), n.modulus_switch.sqrt().log2(), n.pbs_output.sqrt().log2());
    }
}
