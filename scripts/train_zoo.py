#!/usr/bin/env python3
"""Train the held-out model zoo (tests/zoo/) that the quantizer is judged on.

None of these models was used to develop or tune Blindfold's quantizer or its
chooser: they exist so that `blindfold bench` can be measured on models it
was never fitted to (issue 11). They vary what a user's model varies: seeds,
learning rates, widths, depths, activations (ReLU, tanh, sigmoid), a trailing
Softmax or not, an input scaling `Mul`, a CNN with padding, softmax
regressions, both datasets, and two exporters: PyTorch's TorchScript
exporter (Gemm) and a hand-built `MatMul` + `Add` graph of the same trained
weights (what Keras/TF and many converters emit).

Writes tests/zoo/<name>.onnx and tests/zoo/<name>.json (a manifest in the
format of models/*.json, float test accuracy from onnxruntime). Everything is
seeded per model and runs on the CPU, single-threaded and deterministic, so
reruns give the same files with the pinned versions in
scripts/requirements.txt.

Usage: python3 scripts/train_zoo.py [--only NAME]
"""

import argparse
import os

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import train_models as tm

SCRIPT = "scripts/train_zoo.py"
OUT_DIR = os.path.join(tm.REPO_ROOT, "tests", "zoo")


class MLP(nn.Module):
    """Linear layers with one activation between them; optional input scale
    (exported as a `Mul` by a constant) and trailing Softmax."""

    def __init__(self, sizes, act, input_scale=None, softmax=False):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[act]
        self.input_scale = input_scale
        self.softmax = softmax

    def logits(self, x):
        if self.input_scale is not None:
            x = x * self.input_scale
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = self.act(x)
        return x

    def forward(self, x):
        y = self.logits(x)
        return torch.softmax(y, dim=1) if self.softmax else y


class PaddedCNN(nn.Module):
    """Conv2d(1, 3, 3, padding 1) -> ReLU -> AvgPool2d(2) -> flatten -> Linear(48, 10)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=3, stride=1, padding=1)  # 8x8 -> 3x8x8
        self.pool = nn.AvgPool2d(2)  # -> 3x4x4
        self.fc = nn.Linear(48, 10)

    def logits(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))

    def forward(self, x):
        return self.logits(x)


def mlp(sizes, act, **kw):
    return lambda: MLP(sizes, act, **kw)


# Hyperparameters were set once, before any Blindfold measurement, and only
# checked for convergence on the training rows.
ZOO = {
    "zoo-digits-tanh": dict(dataset="digits", build=mlp([64, 48, 10], "tanh"), input_shape=[64],
                            standardize=False, epochs=200, batch_size=32, lr=2e-3, weight_decay=0.0, seed=11),
    "zoo-digits-sigmoid-softmax": dict(dataset="digits", build=mlp([64, 32, 10], "sigmoid", softmax=True),
                                       input_shape=[64], standardize=False, epochs=250, batch_size=64,
                                       lr=5e-3, weight_decay=1e-4, seed=12),
    "zoo-digits-deep-relu": dict(dataset="digits", build=mlp([64, 64, 32, 10], "relu"), input_shape=[64],
                                 standardize=False, epochs=150, batch_size=64, lr=1e-3, weight_decay=1e-3,
                                 seed=13),
    "zoo-digits-mul-tanh-deep": dict(dataset="digits", build=mlp([64, 32, 24, 10], "tanh", input_scale=1 / 16),
                                     input_shape=[64], standardize=False, epochs=300, batch_size=128,
                                     lr=3e-3, weight_decay=0.0, seed=14),
    "zoo-digits-cnn-pad": dict(dataset="digits", build=PaddedCNN, input_shape=[1, 8, 8], standardize=False,
                               epochs=200, batch_size=64, lr=4e-3, weight_decay=1e-4, seed=15),
    "zoo-digits-logreg-matmul": dict(dataset="digits", build=mlp([64, 10], "relu"), input_shape=[64],
                                     standardize=False, epochs=150, batch_size=32, lr=2e-3, weight_decay=1e-3,
                                     seed=16, matmul=True),
    "zoo-cancer-tanh": dict(dataset="breast-cancer", build=mlp([30, 24, 2], "tanh"), input_shape=[30],
                            standardize=True, epochs=150, batch_size=16, lr=1e-3, weight_decay=0.0, seed=21),
    "zoo-cancer-relu-matmul": dict(dataset="breast-cancer", build=mlp([30, 32, 16, 2], "relu"),
                                   input_shape=[30], standardize=True, epochs=100, batch_size=32, lr=2e-3,
                                   weight_decay=1e-4, seed=22, matmul=True),
    "zoo-cancer-logreg-softmax": dict(dataset="breast-cancer", build=mlp([30, 2], "relu", softmax=True),
                                      input_shape=[30], standardize=True, epochs=200, batch_size=32, lr=5e-3,
                                      weight_decay=1e-3, seed=23),
    "zoo-cancer-sigmoid": dict(dataset="breast-cancer", build=mlp([30, 8, 2], "sigmoid"), input_shape=[30],
                               standardize=True, epochs=300, batch_size=64, lr=3e-3, weight_decay=0.0, seed=24),
}


def export_matmul(model, spec, path):
    """The trained MLP as MatMul + Add (+ activation) nodes, weights as initializers."""
    act_op = {torch.relu: "Relu", torch.tanh: "Tanh", torch.sigmoid: "Sigmoid"}[model.act]
    nodes, inits = [], []
    cur = "input"
    n = len(model.layers)
    for i, layer in enumerate(model.layers):
        w = layer.weight.detach().numpy().T.astype(np.float32)  # [in, out]
        b = layer.bias.detach().numpy().astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes.append(helper.make_node("MatMul", [cur, f"W{i}"], [f"mm{i}"]))
        out = "logits" if i + 1 == n and not model.softmax else f"z{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], [out]))
        cur = out
        if i + 1 < n:
            nodes.append(helper.make_node(act_op, [cur], [f"h{i}"]))
            cur = f"h{i}"
    if model.softmax:
        nodes.append(helper.make_node("Softmax", [cur], ["logits"], axis=1))
    d_in, d_out = model.layers[0].in_features, model.layers[-1].out_features
    graph = helper.make_graph(
        nodes,
        "zoo",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", d_in])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", d_out])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", tm.OPSET)])
    proto.ir_version = 8
    onnx.save(proto, path)


def build(name):
    spec = ZOO[name]
    ds = tm.DATASETS[spec["dataset"]]
    print(f"== {name}")
    x, y = tm.load_csv(ds["data"])
    x_train, y_train = tm.split(x, ds["train"]), tm.split(y, ds["train"])
    x_test, y_test = tm.split(x, ds["test"]), tm.split(y, ds["test"])
    if spec["standardize"]:
        mean, std = tm.standardize_params(x_train)
        prep = {"kind": "standardize", "mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    else:
        prep = {"kind": "none"}
    tm.seed_everything(spec["seed"])
    model = spec["build"]()
    tm.train(model, tm.prepare_inputs(x_train, spec, prep, np.float64), y_train, spec)
    path = os.path.join(OUT_DIR, f"{name}.onnx")
    if spec.get("matmul"):
        export_matmul(model, spec, path)
        exporter = "onnx.helper MatMul+Add graph of the trained torch weights"
    else:
        tm.export_onnx(model, spec, path)
        exporter = f"torch {tm.torch_version()} torch.onnx.export(dynamo=False)"
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    print(f"  onnx ops: {', '.join(n.op_type for n in proto.graph.node)}")
    pred = tm.onnx_predict(path, tm.prepare_inputs(x_test, spec, prep, np.float64))
    correct, total = int((pred == y_test).sum()), int(y_test.shape[0])
    print(f"  onnx float32 test accuracy: {correct}/{total} = {correct / total:.4f}")
    manifest = {
        "name": name,
        "dataset": spec["dataset"],
        "data": ds["data"],
        "train": ds["train"],
        "test": ds["test"],
        "input_shape": spec["input_shape"],
        "classes": ds["classes"],
        "preprocessing": prep,
        "float_test_accuracy": correct / total,
        "float_test_correct": correct,
        "test_count": total,
        "opset": tm.OPSET,
        "exporter": exporter,
        "seed": spec["seed"],
        "script": SCRIPT,
    }
    with open(os.path.join(OUT_DIR, f"{name}.json"), "w", encoding="ascii", newline="") as f:
        f.write(tm.format_json(manifest) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(ZOO))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)
    for name in ZOO:
        if args.only in (None, name):
            build(name)


if __name__ == "__main__":
    main()
