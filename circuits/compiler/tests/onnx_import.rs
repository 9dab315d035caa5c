//! ONNX import tests: the shipped reference models (structure and float
//! accuracy against their manifests), error reporting, and small hand-built
//! graphs for every supported op form.

use std::path::{Path, PathBuf};

use blindfold_compiler::ir::{Activation, Graph, Op, Scalar};
use blindfold_compiler::onnx::builder::*;
use blindfold_compiler::onnx::proto::ModelProto;
use blindfold_compiler::onnx::{import_model, import_onnx_bytes, import_onnx_file, ImportError};

// ------------------------------------------------------------ helpers

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Manifest {
    input_shape: Vec<usize>,
    data: String,
    test: (usize, usize),
    standardize: Option<(Vec<f64>, Vec<f64>)>,
    float_test_correct: usize,
    test_count: usize,
}

fn manifest(name: &str) -> Manifest {
    let path = root().join("models").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("read manifest");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse manifest");
    let usizes = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_u64().expect("integer") as usize)
            .collect()
    };
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    };
    let pre = &v["preprocessing"];
    let standardize = match pre["kind"].as_str().expect("kind") {
        "none" => None,
        "standardize" => Some((floats(&pre["mean"]), floats(&pre["std"]))),
        other => panic!("unknown preprocessing {other}"),
    };
    let test = usizes(&v["test"]);
    Manifest {
        input_shape: usizes(&v["input_shape"]),
        data: v["data"].as_str().expect("data").to_string(),
        test: (test[0], test[1]),
        standardize,
        float_test_correct: v["float_test_correct"].as_u64().expect("correct") as usize,
        test_count: v["test_count"].as_u64().expect("count") as usize,
    }
}

/// Test rows as (float32 features after preprocessing, label).
fn test_rows(m: &Manifest) -> Vec<(Vec<f32>, usize)> {
    let text = std::fs::read_to_string(root().join(&m.data)).expect("read csv");
    let rows: Vec<&str> = text.lines().skip(1).filter(|l| !l.is_empty()).collect();
    rows[m.test.0..=m.test.1]
        .iter()
        .map(|line| {
            let cells: Vec<f64> = line
                .split(',')
                .map(|c| c.trim().parse::<f64>().expect("number"))
                .collect();
            let (label, features) = cells.split_last().expect("row");
            let x = features
                .iter()
                .enumerate()
                .map(|(i, &v)| match &m.standardize {
                    Some((mean, std)) => ((v - mean[i]) / std[i]) as f32,
                    None => v as f32,
                })
                .collect();
            (x, *label as usize)
        })
        .collect()
}

/// Index of the first maximum (numpy's argmax).
fn argmax<T: Scalar>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn load(name: &str) -> Graph {
    import_onnx_file(&root().join("models").join(format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("importing {name}: {e}"))
}

fn import(model: &ModelProto) -> Result<Graph, ImportError> {
    import_onnx_bytes(&encode(model), "test")
}

fn err_text(model: &ModelProto) -> String {
    match import(model) {
        Ok(g) => panic!("expected an import error, got {:?}", g.ops),
        Err(e) => e.to_string(),
    }
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

// ------------------------------------------------------------ shipped models

#[test]
fn shipped_models_import_with_expected_ops() {
    let relu = Op::Activation(Activation::Relu);
    for (name, kinds, out) in [
        ("digits-mlp", vec!["dense", "activation", "dense"], vec![10]),
        ("cancer-mlp", vec!["dense", "activation", "dense"], vec![2]),
        (
            "digits-cnn",
            vec![
                "conv2d",
                "activation",
                "avgpool2d",
                "reshape",
                "dense",
                "softmax",
            ],
            vec![10],
        ),
    ] {
        let g = load(name);
        let m = manifest(name);
        assert_eq!(g.name, name);
        assert_eq!(g.input_shape, m.input_shape, "{name}");
        let got: Vec<&str> = g.ops.iter().map(Op::kind).collect();
        assert_eq!(got, kinds, "{name}");
        assert_eq!(g.ops[1], relu, "{name}");
        let shapes = g.shapes().expect("shapes");
        assert_eq!(shapes.last(), Some(&out), "{name}");
    }
    let cnn = load("digits-cnn");
    let shapes = cnn.shapes().expect("shapes");
    assert_eq!(
        shapes,
        vec![
            vec![4, 6, 6],
            vec![4, 6, 6],
            vec![4, 3, 3],
            vec![36],
            vec![10],
            vec![10]
        ]
    );
    match &cnn.ops[2] {
        Op::AvgPool2d {
            kernel,
            stride,
            pads,
            ..
        } => {
            assert_eq!((*kernel, *stride, *pads), ([2, 2], [2, 2], [0; 4]));
        }
        other => panic!("expected AvgPool2d, got {other:?}"),
    }
}

fn accuracy(name: &str) -> (usize, usize, usize, usize) {
    let g = load(name);
    let m = manifest(name);
    let rows = test_rows(&m);
    assert_eq!(rows.len(), m.test_count);
    let (mut f32_full, mut f32_logits, mut f64_full) = (0, 0, 0);
    for (x, label) in &rows {
        let y = g.eval::<f32>(x).expect("eval f32");
        f32_full += usize::from(argmax(&y) == *label);
        let l = g.eval_logits::<f32>(x).expect("eval_logits f32");
        f32_logits += usize::from(argmax(&l) == *label);
        let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let y = g.eval::<f64>(&x64).expect("eval f64");
        f64_full += usize::from(argmax(&y) == *label);
    }
    println!(
        "{name}: f32 {f32_full}/{n} (logits {f32_logits}/{n}), f64 {f64_full}/{n}, manifest {}/{n}",
        m.float_test_correct,
        n = m.test_count
    );
    (m.float_test_correct, f32_full, f32_logits, f64_full)
}

#[test]
fn float_accuracy_matches_manifests() {
    for name in ["digits-mlp", "cancer-mlp", "digits-cnn"] {
        let (want, f32_full, f32_logits, f64_full) = accuracy(name);
        assert_eq!(f32_full, want, "{name}: f32 evaluation");
        assert_eq!(f32_logits, want, "{name}: f32 logits");
        assert_eq!(f64_full, want, "{name}: f64 evaluation");
    }
}

#[test]
fn softmax_output_is_a_distribution() {
    let g = load("digits-cnn");
    let m = manifest("digits-cnn");
    let (x, _) = &test_rows(&m)[0];
    let p = g
        .eval::<f64>(&x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>())
        .expect("eval");
    let sum: f64 = p.iter().sum();
    assert!((sum - 1.0).abs() < 1e-9 && p.iter().all(|&v| v >= 0.0));
    let logits = g
        .eval_logits::<f64>(&x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>())
        .expect("logits");
    assert_eq!(argmax(&p), argmax(&logits));
}

// ------------------------------------------------------------ errors

fn single_node_model(op_type: &str, node_name: &str) -> ModelProto {
    model(
        "input",
        &[4],
        "y",
        vec![node(op_type, node_name, &["input"], &["y"], vec![])],
        vec![],
    )
}

#[test]
fn unsupported_op_names_node_type_and_supported_list() {
    let msg = err_text(&single_node_model("LSTM", "lstm_1"));
    assert!(msg.contains("lstm_1"), "{msg}");
    assert!(msg.contains("LSTM"), "{msg}");
    assert!(msg.contains("supported ops: Gemm"), "{msg}");

    // Gather is supported on constants only: on the data path it is refused.
    let m = model(
        "input",
        &[4],
        "y",
        vec![node("Gather", "pick", &["input", "idx"], &["y"], vec![])],
        vec![tensor_i64("idx", &[1], &[0])],
    );
    let msg = err_text(&m);
    assert!(msg.contains("pick") && msg.contains("Gather"), "{msg}");
    assert!(
        msg.contains("data path") && msg.contains("supported"),
        "{msg}"
    );

    // Unnamed nodes are identified by index.
    let msg = err_text(&single_node_model("Erf", ""));
    assert!(msg.contains("node #0 (Erf)"), "{msg}");

    // Non-default domains.
    let mut m = single_node_model("Relu", "r");
    if let Some(g) = m.graph.as_mut() {
        g.node[0].domain = "com.microsoft".into();
    }
    let msg = err_text(&m);
    assert!(msg.contains("com.microsoft"), "{msg}");
}

#[test]
fn truncated_and_garbage_files_are_clear_errors() {
    let bytes = std::fs::read(root().join("models/digits-mlp.onnx")).expect("read");
    let half = &bytes[..bytes.len() / 2];
    let err = import_onnx_bytes(half, "half").expect_err("truncated");
    let msg = err.to_string();
    assert!(msg.contains("not a valid ONNX model"), "{msg}");
    println!("truncated: {msg}");

    for garbage in [
        &b"this is definitely not an onnx model"[..],
        &[0xff; 64][..],
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        &[][..],
    ] {
        let err = import_onnx_bytes(garbage, "garbage").expect_err("garbage");
        let msg = err.to_string();
        assert!(msg.contains("not a valid ONNX model"), "{msg}");
    }

    // Every prefix either fails cleanly or imports: never a panic.
    for cut in (0..bytes.len()).step_by(97) {
        let _ = import_onnx_bytes(&bytes[..cut], "prefix");
    }
}

#[test]
fn corrupted_models_never_panic() {
    // Overwrite single bytes of the real models with a few values; the
    // importer must return Ok or Err, and any graph it returns must pass
    // shape validation and evaluate without panicking.
    for name in ["digits-cnn", "digits-mlp"] {
        let bytes =
            std::fs::read(root().join("models").join(format!("{name}.onnx"))).expect("read");
        for pos in (0..bytes.len()).step_by(7) {
            for v in [0x00u8, 0x01, 0x7f, 0xff] {
                let mut b = bytes.clone();
                b[pos] = v;
                if let Ok(g) = import_onnx_bytes(&b, name) {
                    if g.shapes().is_ok() && g.input_len() <= 4096 {
                        let x = vec![1.0f32; g.input_len()];
                        let _ = g.eval(&x);
                    }
                }
            }
        }
    }
}

#[test]
fn oversized_file_is_refused_before_reading() {
    let path = std::env::temp_dir().join(format!("blindfold-big-{}.onnx", std::process::id()));
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(blindfold_compiler::onnx::MAX_MODEL_BYTES + 1)
        .expect("set_len");
    drop(file);
    let err = import_onnx_file(&path).expect_err("too large");
    let _ = std::fs::remove_file(&path);
    let msg = err.to_string();
    assert!(msg.contains("limit"), "{msg}");

    let err = import_onnx_file(Path::new("/nonexistent/model.onnx")).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/model.onnx"));
}

#[test]
fn missing_weight_names_tensor_and_node() {
    let m = model(
        "input",
        &[4],
        "y",
        vec![node(
            "Gemm",
            "fc1",
            &["input", "fc1.weight", "fc1.bias"],
            &["y"],
            vec![attr_int("transB", 1)],
        )],
        vec![tensor_f32("fc1.bias", &[2], &[0.0, 0.0])],
    );
    let msg = err_text(&m);
    assert!(msg.contains("fc1.weight"), "{msg}");
    assert!(msg.contains("\"fc1\""), "{msg}");
}

#[test]
fn unsupported_attributes_are_rejected() {
    let conv = |attrs| {
        model(
            "input",
            &[2, 4, 4],
            "y",
            vec![node("Conv", "conv", &["input", "w"], &["y"], attrs)],
            vec![tensor_f32("w", &[2, 1, 1, 1], &[1.0, 1.0])],
        )
    };
    let msg = err_text(&conv(vec![attr_int("group", 2)]));
    assert!(msg.contains("group") && msg.contains("conv"), "{msg}");
    let msg = err_text(&conv(vec![attr_string("auto_pad", "SAME_UPPER")]));
    assert!(msg.contains("auto_pad"), "{msg}");
    let msg = err_text(&conv(vec![attr_int("weird", 1)]));
    assert!(msg.contains("weird"), "{msg}");

    let pool = |attrs| {
        model(
            "input",
            &[1, 4, 4],
            "y",
            vec![node("AveragePool", "pool", &["input"], &["y"], attrs)],
            vec![],
        )
    };
    let msg = err_text(&pool(vec![
        attr_ints("kernel_shape", &[2, 2]),
        attr_int("ceil_mode", 1),
    ]));
    assert!(msg.contains("ceil_mode"), "{msg}");
    let msg = err_text(&pool(vec![
        attr_ints("kernel_shape", &[2, 2]),
        attr_ints("dilations", &[2, 2]),
    ]));
    assert!(msg.contains("dilations"), "{msg}");

    let gemm = model(
        "input",
        &[2],
        "y",
        vec![node(
            "Gemm",
            "g",
            &["input", "w"],
            &["y"],
            vec![attr_int("transA", 1)],
        )],
        vec![tensor_f32("w", &[2, 2], &[1.0; 4])],
    );
    assert!(err_text(&gemm).contains("transA"));
}

#[test]
fn structural_errors_are_rejected() {
    // Residual connection: Add of two runtime tensors.
    let m = model(
        "input",
        &[3],
        "y",
        vec![
            node("Relu", "r", &["input"], &["h"], vec![]),
            node("Add", "residual", &["h", "input"], &["y"], vec![]),
        ],
        vec![],
    );
    let msg = err_text(&m);
    assert!(
        msg.contains("residual") && msg.contains("branches"),
        "{msg}"
    );

    // Two consumers of one tensor.
    let m = model(
        "input",
        &[3],
        "y",
        vec![
            node("Relu", "a", &["input"], &["h"], vec![]),
            node("Tanh", "b", &["input"], &["y"], vec![]),
        ],
        vec![],
    );
    assert!(err_text(&m).contains("already used by"));

    // Two graph inputs.
    let mut m = single_node_model("Relu", "r");
    if let Some(g) = m.graph.as_mut() {
        g.input.push(batched_value_info("other", &[4]));
    }
    let msg = err_text(&m);
    assert!(msg.contains("input") && msg.contains("other"), "{msg}");

    // Non-float weights.
    let m = model(
        "input",
        &[2],
        "y",
        vec![node("MatMul", "mm", &["input", "w"], &["y"], vec![])],
        vec![tensor_i64("w", &[2, 2], &[1, 2, 3, 4])],
    );
    let msg = err_text(&m);
    assert!(msg.contains("INT64") && msg.contains("\"mm\""), "{msg}");

    // Softmax must be last.
    let m = model(
        "input",
        &[3],
        "y",
        vec![
            node("Softmax", "sm", &["input"], &["p"], vec![]),
            node("Relu", "r", &["p"], &["y"], vec![]),
        ],
        vec![],
    );
    assert!(err_text(&m).contains("last op"));

    // Weight shape mismatch.
    let m = model(
        "input",
        &[3],
        "y",
        vec![node("MatMul", "mm", &["input", "w"], &["y"], vec![])],
        vec![tensor_f32("w", &[2, 2], &[1.0; 4])],
    );
    assert!(err_text(&m).contains("shape"));

    // Reshape whose target is data-dependent... and one that mixes the batch.
    let m = model(
        "input",
        &[4],
        "y",
        vec![node("Reshape", "rs", &["input", "s"], &["y"], vec![])],
        vec![tensor_i64("s", &[1], &[-1])],
    );
    assert!(err_text(&m).contains("batch"));

    // Output that is not the end of the data path.
    let m = model(
        "input",
        &[3],
        "h",
        vec![node("Relu", "r", &["input"], &["h"], vec![])],
        vec![],
    );
    let mut m2 = m.clone();
    if let Some(g) = m2.graph.as_mut() {
        g.output[0].name = "nothing".into();
    }
    assert!(import(&m).is_ok());
    assert!(err_text(&m2).contains("nothing"));

    // No graph at all.
    let err = import_model(&ModelProto::default(), "empty").expect_err("no graph");
    assert!(err.to_string().contains("no graph"), "{err}");
}

// ------------------------------------------------------------ hand-built graphs

#[test]
fn add_sub_mul_by_constants() {
    // y = (c2 - (x + c1)) * c3, with c2 a scalar and c3 of shape [1, 3].
    let m = model(
        "input",
        &[3],
        "y",
        vec![
            node("Add", "add", &["input", "c1"], &["a"], vec![]),
            node("Sub", "sub", &["c2", "a"], &["b"], vec![]),
            node("Mul", "mul", &["b", "c3"], &["y"], vec![]),
        ],
        vec![
            tensor_f32("c1", &[3], &[1.0, 2.0, 3.0]),
            tensor_f32("c2", &[], &[10.0]),
            tensor_f32("c3", &[1, 3], &[0.5, -1.0, 2.0]),
        ],
    );
    let g = import(&m).expect("import");
    assert_eq!(
        g.ops.iter().map(Op::kind).collect::<Vec<_>>(),
        vec!["affine"; 3]
    );
    let y = g.eval::<f64>(&[1.0, 1.0, 1.0]).expect("eval");
    assert_close(&y, &[(10.0 - 2.0) * 0.5, -(10.0 - 3.0), (10.0 - 4.0) * 2.0]);

    // x - c with c broadcast along a per-sample axis ([2, 2] data, [2, 1] c).
    let m = model(
        "input",
        &[2, 2],
        "y",
        vec![node("Sub", "sub", &["input", "c"], &["y"], vec![])],
        vec![tensor_f32("c", &[2, 1], &[1.0, 2.0])],
    );
    let g = import(&m).expect("import");
    let y = g.eval::<f64>(&[5.0, 6.0, 7.0, 8.0]).expect("eval");
    assert_close(&y, &[4.0, 5.0, 5.0, 6.0]);

    // A constant that would broadcast over the batch axis is refused.
    let m = model(
        "input",
        &[2],
        "y",
        vec![node("Mul", "mul", &["input", "c"], &["y"], vec![])],
        vec![tensor_f32("c", &[3, 2], &[1.0; 6])],
    );
    assert!(err_text(&m).contains("broadcast"));

    // Constant folding: Mul of two constants feeding an Add.
    let m = model(
        "input",
        &[2],
        "y",
        vec![
            node("Mul", "k", &["c", "c"], &["c2"], vec![]),
            node("Add", "add", &["input", "c2"], &["y"], vec![]),
        ],
        vec![tensor_f32("c", &[2], &[2.0, 3.0])],
    );
    let g = import(&m).expect("import");
    assert_close(&g.eval::<f64>(&[1.0, 1.0]).expect("eval"), &[5.0, 10.0]);
}

#[test]
fn matmul_then_add_folds_into_dense() {
    // W is [in=2, out=3].
    let m = model(
        "input",
        &[2],
        "y",
        vec![
            node("MatMul", "mm", &["input", "w"], &["h"], vec![]),
            node("Add", "bias", &["h", "b"], &["y"], vec![]),
        ],
        vec![
            tensor_f32("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            tensor_f32("b", &[3], &[0.5, -0.5, 1.0]),
        ],
    );
    let g = import(&m).expect("import");
    assert_eq!(g.ops.len(), 1);
    let Op::Dense { weight, bias } = &g.ops[0] else {
        panic!("expected Dense, got {:?}", g.ops);
    };
    assert_eq!(weight.shape, vec![3, 2]);
    assert_eq!(bias, &vec![0.5, -0.5, 1.0]);
    let y = g.eval::<f64>(&[1.0, 2.0]).expect("eval");
    assert_close(&y, &[9.0 + 0.5, 12.0 - 0.5, 15.0 + 1.0]);
    let y32 = g.eval::<f32>(&[1.0, 2.0]).expect("eval");
    assert_eq!(y32, vec![9.5, 11.5, 16.0]);
}

#[test]
fn gemm_attributes() {
    // alpha = 2, beta = 0.5, transB = 0 (B is [in, out]), C broadcast [1, 2].
    let m = model(
        "input",
        &[2],
        "y",
        vec![node(
            "Gemm",
            "g",
            &["input", "b", "c"],
            &["y"],
            vec![attr_float("alpha", 2.0), attr_float("beta", 0.5)],
        )],
        vec![
            tensor_f32("b", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
            tensor_f32("c", &[1, 2], &[2.0, 4.0]),
        ],
    );
    let g = import(&m).expect("import");
    let y = g.eval::<f64>(&[1.0, 1.0]).expect("eval");
    assert_close(&y, &[2.0 * 4.0 + 1.0, 2.0 * 6.0 + 2.0]);
}

#[test]
fn flatten_identity_dropout_sigmoid_tanh() {
    let m = model(
        "input",
        &[2, 2],
        "y",
        vec![
            node(
                "Flatten",
                "flat",
                &["input"],
                &["f"],
                vec![attr_int("axis", 1)],
            ),
            node("Identity", "id", &["f"], &["i"], vec![]),
            node("Dropout", "drop", &["i"], &["d", "mask"], vec![]),
            node("Sigmoid", "sig", &["d"], &["s"], vec![]),
            node("Tanh", "tanh", &["s"], &["y"], vec![]),
        ],
        vec![],
    );
    let g = import(&m).expect("import");
    assert_eq!(
        g.ops,
        vec![
            Op::Reshape { shape: vec![4] },
            Op::Activation(Activation::Sigmoid),
            Op::Activation(Activation::Tanh),
        ]
    );
    let x = [-1.0, 0.0, 0.5, 2.0];
    let want: Vec<f64> = x
        .iter()
        .map(|&v: &f64| (1.0 / (1.0 + (-v).exp())).tanh())
        .collect();
    assert_close(&g.eval::<f64>(&x).expect("eval"), &want);
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let y32 = g.eval::<f32>(&x32).expect("eval");
    for (a, b) in y32.iter().zip(&want) {
        assert!((f64::from(*a) - b).abs() < 1e-6);
    }

    // The Dropout mask is not available downstream.
    let m = model(
        "input",
        &[2],
        "y",
        vec![
            node("Dropout", "drop", &["input"], &["d", "mask"], vec![]),
            node("Relu", "r", &["mask"], &["y"], vec![]),
        ],
        vec![],
    );
    assert!(err_text(&m).contains("mask"));

    // Flatten that would merge the batch axis.
    let m = model(
        "input",
        &[2, 2],
        "y",
        vec![node(
            "Flatten",
            "flat",
            &["input"],
            &["y"],
            vec![attr_int("axis", 0)],
        )],
        vec![],
    );
    assert!(err_text(&m).contains("batch"));
}

#[test]
fn conv_pool_and_dynamic_flatten_chain() {
    // A hand-built copy of the digits-cnn pattern on a 1x4x4 input:
    // Conv(1 -> 1, 3x3 of ones, pad 1) -> AvgPool 2x2/2 -> Shape chain -> Reshape.
    let nodes = vec![
        node(
            "Conv",
            "conv",
            &["input", "w", "bias"],
            &["c"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("strides", &[1, 1]),
            ],
        ),
        node(
            "AveragePool",
            "pool",
            &["c"],
            &["p"],
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[2, 2]),
            ],
        ),
        node("Shape", "shape", &["p"], &["s"], vec![]),
        node(
            "Constant",
            "zero",
            &[],
            &["k0"],
            vec![attr_tensor("value", tensor_i64("", &[], &[0]))],
        ),
        node(
            "Gather",
            "gather",
            &["s", "k0"],
            &["b"],
            vec![attr_int("axis", 0)],
        ),
        node(
            "Constant",
            "axes",
            &[],
            &["ax"],
            vec![attr_tensor("value", tensor_i64("", &[1], &[0]))],
        ),
        node("Unsqueeze", "unsq", &["b", "ax"], &["b1"], vec![]),
        node(
            "Constant",
            "minus1",
            &[],
            &["m1"],
            vec![attr_ints("value_ints", &[-1])],
        ),
        node(
            "Concat",
            "cat",
            &["b1", "m1"],
            &["target"],
            vec![attr_int("axis", 0)],
        ),
        node("Reshape", "flatten", &["p", "target"], &["y"], vec![]),
    ];
    let m = model(
        "input",
        &[1, 4, 4],
        "y",
        nodes,
        vec![
            tensor_f32("w", &[1, 1, 3, 3], &[1.0; 9]),
            tensor_f32("bias", &[1], &[0.25]),
        ],
    );
    let g = import(&m).expect("import");
    assert_eq!(
        g.ops.iter().map(Op::kind).collect::<Vec<_>>(),
        vec!["conv2d", "avgpool2d", "reshape"]
    );
    assert_eq!(g.shapes().expect("shapes").last(), Some(&vec![4]));
    let x = [1.0f64; 16];
    // Conv of ones with zero padding: corners 4, edges 6, interior 9, each
    // +0.25. Each 2x2 pooling window holds one corner, two edges and one
    // interior value: (4 + 6 + 6 + 9) / 4 + 0.25.
    let y = g.eval::<f64>(&x).expect("eval");
    assert_close(&y, &[6.5; 4]);
}

#[test]
fn reshape_squeeze_unsqueeze_cast_on_data() {
    let m = model(
        "input",
        &[6],
        "y",
        vec![
            node("Reshape", "rs", &["input", "s"], &["a"], vec![]),
            node("Unsqueeze", "u", &["a", "ax"], &["b"], vec![]),
            node("Squeeze", "q", &["b", "ax"], &["c"], vec![]),
            node("Cast", "cast", &["c"], &["d"], vec![attr_int("to", 1)]),
            node("Flatten", "f", &["d"], &["y"], vec![]),
        ],
        vec![
            tensor_i64("s", &[3], &[0, 2, -1]),
            tensor_i64("ax", &[1], &[-1]),
        ],
    );
    let g = import(&m).expect("import");
    let shapes = g.shapes().expect("shapes");
    assert_eq!(shapes, vec![vec![2, 3], vec![2, 3, 1], vec![2, 3], vec![6]]);
    let x: Vec<f32> = (0..6).map(|v| v as f32).collect();
    assert_eq!(g.eval::<f32>(&x).expect("eval"), x);
}
