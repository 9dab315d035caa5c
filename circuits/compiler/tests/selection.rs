//! `auto`: selection by fidelity on held-out validation rows, over all
//! vetted sets, on models of the held-out zoo (tests/zoo/), which the
//! quantizer was never tuned on.

use blindfold_compiler::pipeline::{fidelity, DataOverride, ModelBundle};
use blindfold_compiler::quant::{AffineQuant, QuantConfig};
use blindfold_compiler::select::{self, sets_by_cost, unit_cost_ms, Widths};
use blindfold_runtime::params::ParamSet;

fn bundle(path: &str) -> ModelBundle {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    ModelBundle::load(&p, &DataOverride::default()).expect("model loads")
}

#[test]
fn sets_are_tried_cheapest_first() {
    let sets = sets_by_cost();
    assert_eq!(sets.len(), 4);
    assert_eq!(sets[0], ParamSet::Message2Carry2);
    assert_eq!(sets[3], ParamSet::Message3Carry3);
    for w in sets.windows(2) {
        assert!(unit_cost_ms(w[0]) < unit_cost_ms(w[1]));
    }
}

/// Held-out models compiled with `auto` follow the float model on their
/// test rows (which the chooser never sees), and the circuit says why it
/// was chosen.
#[test]
fn auto_follows_the_float_model_on_held_out_models() {
    for (model, min_agreement) in [
        ("tests/zoo/zoo-cancer-tanh.onnx", 0.96),
        ("tests/zoo/zoo-cancer-logreg-softmax.onnx", 0.96),
        ("tests/zoo/zoo-digits-logreg-matmul.onnx", 0.95),
    ] {
        let b = bundle(model);
        let mut lines = Vec::new();
        let (opts, compiled) = select::choose(
            &b,
            None,
            &QuantConfig::default(),
            &Widths::default(),
            0.015,
            &mut |m| lines.push(m),
        )
        .expect("auto compiles");
        let c = &compiled.circuit;
        let f = fidelity(&b, c, b.test).expect("fidelity");
        assert!(
            f.agreement >= min_agreement,
            "{model}: test agreement {:.4} with the float model",
            f.agreement
        );
        assert_eq!(c.params, opts.params);
        let sel = &c.report.selection;
        assert!(sel.len() >= 3, "{model}: {sel:?}");
        assert!(
            sel.last()
                .is_some_and(|l| l.contains(opts.params.short_name())),
            "{sel:?}"
        );
        assert!(c.report.p_fail_inference <= select::MAX_P_FAIL);
        assert!(!lines.is_empty());
        // the report renders the reasons
        assert!(c.report.render(&c.name).contains("selection:"));
    }
}

/// Widths the user fixes are kept, on the set the user names.
#[test]
fn fixed_widths_are_respected() {
    let b = bundle("tests/zoo/zoo-cancer-logreg-softmax.onnx");
    let w = Widths {
        input_bits: Some(4),
        activation_bits: Some(3),
        accumulator_bits: None,
        rounding_bits: Some(2),
        clip_ranges: Some(true),
        margin: Some(2),
    };
    let (opts, compiled) = select::choose(
        &b,
        Some(ParamSet::Message3Carry2),
        &QuantConfig::default(),
        &w,
        0.015,
        &mut |_| {},
    )
    .expect("compiles");
    let q = &compiled.circuit.quant_config;
    assert_eq!(opts.params, ParamSet::Message3Carry2);
    assert_eq!(compiled.circuit.params, ParamSet::Message3Carry2);
    assert_eq!(
        (
            q.input_bits,
            q.activation_bits,
            q.rounding_bits,
            q.clip_ranges,
            q.margin
        ),
        (4, 3, 2, true, 2)
    );
    assert_eq!(
        q.accumulator_bits,
        select::default_window(ParamSet::Message3Carry2)
    );
    assert!(compiled.circuit.report.selection.is_empty());
    // one width free: it is chosen, the others stay
    let w = Widths {
        input_bits: None,
        ..w
    };
    let (_, c) = select::choose(
        &b,
        Some(ParamSet::Message2Carry2),
        &QuantConfig::default(),
        &w,
        0.015,
        &mut |_| {},
    )
    .expect("compiles");
    let q = &c.circuit.quant_config;
    assert_eq!(
        (q.activation_bits, q.rounding_bits, q.clip_ranges, q.margin),
        (3, 2, true, 2)
    );
    assert!((3..=5).contains(&q.input_bits));
}

/// Clipping fits a long-tailed range with less squared error than
/// min..max, and never with more.
#[test]
fn range_clipping_lowers_the_quantization_error() {
    let mse = |values: &[f64], (scale, zp): (f64, i64), bits: u32| -> f64 {
        let q = AffineQuant {
            bits,
            scale: vec![scale],
            zero_point: vec![zp],
        };
        values
            .iter()
            .map(|v| (v - q.dequantize(0, q.quantize(0, *v))).powi(2))
            .sum::<f64>()
            / values.len() as f64
    };
    // exponential quantiles: a long right tail (max ≈ 6.9)
    let tail: Vec<f64> = (0..1000)
        .map(|i| -(1.0 - (i as f64 + 0.5) / 1000.0).ln())
        .collect();
    // uniform: nothing to clip
    let flat: Vec<f64> = (0..1000).map(|i| i as f64 / 999.0).collect();
    for bits in [3, 4, 5] {
        let max = tail.iter().copied().fold(0.0, f64::max);
        let full = (max / ((1u64 << bits) - 1) as f64, 0);
        let clipped = AffineQuant::fit_values(bits, &tail);
        assert!(
            clipped.0 < full.0,
            "{bits} bits: scale {} vs {}",
            clipped.0,
            full.0
        );
        let (c, m) = (mse(&tail, clipped, bits), mse(&tail, full, bits));
        assert!(c < m, "{bits} bits: {c} vs {m}");
        if bits == 3 {
            assert!(c < 0.8 * m, "{bits} bits: {c} vs {m}");
        }
        let f = AffineQuant::fit_values(bits, &flat);
        let f_full = (1.0 / ((1u64 << bits) - 1) as f64, 0);
        assert!(mse(&flat, f, bits) <= mse(&flat, f_full, bits) + 1e-12);
    }
    // a lone far outlier costs more clipped than covered: kept in range
    let mut one: Vec<f64> = flat.clone();
    one.push(100.0);
    assert!((AffineQuant::fit_values(4, &one).0 - 100.0 / 15.0).abs() < 1e-9);
}

/// Each layer's rounding bits: fixed per layer by the user, they are kept
/// (recorded in the circuit, one accumulator shift per layer); chosen by
/// `auto`, the per-layer choice is recorded the same way and stays inside
/// what the set carries.
#[test]
fn per_layer_rounding_bits() {
    let b = bundle("tests/zoo/zoo-cancer-relu-matmul.onnx");
    let fixed = Widths {
        input_bits: Some(4),
        activation_bits: Some(4),
        accumulator_bits: None,
        rounding_bits: Some(5),
        clip_ranges: Some(false),
        margin: Some(3),
    };
    let base = QuantConfig {
        stage_rounding_bits: vec![(0, 3)],
        ..QuantConfig::default()
    };
    let (_, c) = select::choose(
        &b,
        Some(ParamSet::Message2Carry2),
        &base,
        &fixed,
        0.015,
        &mut |_| {},
    )
    .expect("compiles");
    let c = &c.circuit;
    let shifts: Vec<u32> = c.layers.iter().map(|l| l.acc_shift).collect();
    assert!(shifts.len() >= 2, "{shifts:?}");
    assert_eq!(shifts[0], 3);
    assert!(shifts[1..].iter().all(|k| *k == 5), "{shifts:?}");
    assert_eq!(c.quant_config.stage_rounding_bits, vec![(0, 3)]);
    assert_eq!(c.quant_config.rounding_bits_for(0), 3);
    assert_eq!(c.quant_config.rounding_bits_for(1), 5);
    // an out-of-range override is refused with the stage named
    let bad = QuantConfig {
        stage_rounding_bits: vec![(1, 9)],
        ..QuantConfig::default()
    };
    let Err(err) = select::choose(
        &b,
        Some(ParamSet::Message2Carry2),
        &bad,
        &fixed,
        0.015,
        &mut |_| {},
    ) else {
        panic!("a 9-bit rounding override compiled");
    };
    assert!(err.to_string().contains("stage 1"), "{err}");
    // auto on the 2_2 set: whatever it picks per layer is what the circuit
    // runs, and every layer's shift fits the set's output bits
    let (_, a) = select::choose(
        &b,
        Some(ParamSet::Message2Carry2),
        &QuantConfig::default(),
        &Widths::default(),
        0.015,
        &mut |_| {},
    )
    .expect("auto compiles");
    let a = &a.circuit;
    let window = select::default_window(ParamSet::Message2Carry2);
    for (l, layer) in a.layers.iter().enumerate() {
        assert_eq!(layer.acc_shift, a.quant_config.rounding_bits_for(l));
        assert!(window + layer.acc_shift <= ParamSet::Message2Carry2.max_output_bits());
    }
    assert!(a
        .report
        .selection
        .iter()
        .any(|l| l.contains("rounding bits")));
}
