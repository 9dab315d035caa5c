#!/usr/bin/env python3
"""Train the Blindfold reference models and export them to ONNX.

Reads the CSVs written by scripts/export_data.py and writes, per model,
models/<name>.onnx and models/<name>.json (the manifest). Models:

  digits-mlp  [batch,64] raw pixels 0..16 -> Linear(64,32) -> ReLU
              -> Linear(32,10) -> logits
  digits-cnn  [batch,1,8,8] raw pixels 0..16 -> Conv2d(1,4,3) -> ReLU
              -> AvgPool2d(2) -> flatten (x.view(x.size(0), -1))
              -> Dropout(0.1) -> Linear(36,10) -> Softmax
  cancer-mlp  [batch,30] standardized features -> Linear(30,16) -> ReLU
              -> Linear(16,2) -> logits
  digits-logreg
              [batch,64] raw pixels 0..16 -> Linear(64,10) -> logits
              (softmax regression on the whole digits train split)
  digits-pate-t0 .. digits-pate-t4
              five PATE teachers, each the digits-logreg architecture
              trained only on its own partition of the digits train split:
              teacher i sees the train rows r with r % 5 == i (r = 0-based
              data row index in data/digits.csv). Their manifests keep
              "train": the whole train split, because that range is what
              `blindfold compile` calibrates the input quantization on, and
              the five teachers must share one input quantization (see
              models/README.md); the rows each teacher was trained on are in
              the manifest's "partition" field.
  digits-canary
              the digits-mlp architecture and training settings except for
              stronger regularization (weight decay 0.1, label smoothing
              0.2; see MODELS below), trained on
              the digits train split plus 30 random "canaries" (Carlini et
              al., "The Secret Sharer"): three groups of 10 uniformly random
              8x8 images (pixels 0..16) with uniformly random labels 0..9,
              each canary repeated 1, 4 or 16 times in the training set
              (210 extra rows). The canaries are drawn with their own seed
              and written to models/digits-canaries.json. The manifest keeps
              "train": the plain digits train split (what `blindfold
              compile` calibrates on); "canaries" names the canary file. A
              victim for memorization / membership attacks.

Everything runs on the CPU in float32, single-threaded and with
deterministic algorithms, and every model reseeds the RNGs before it is
built, so `--only NAME` gives the same result as a full run and reruns
give byte-identical ONNX files (with the pinned versions in
scripts/requirements.txt).

After export each ONNX file is reloaded, checked with onnx.checker and run
with onnxruntime on the test rows; that accuracy goes into the manifest.

For digits-canary the script also prints, per repetition group, how many
canaries the exported graph labels with their canary label (and, as a
control, how many the canary-free digits-mlp does, when it exists).

After a run in which all five teachers exist, the accuracy of their plain
(noise-free) majority vote on the test rows is printed (argmax of the vote
counts, ties to the lowest class index).

Usage: python3 scripts/train_models.py [--only NAME]
"""

import argparse
import csv
import json
import os
import random

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 1234
OPSET = 13
SCRIPT = "scripts/train_models.py"

# Index-based splits, inclusive on both ends, in the row order of the CSVs.
DATASETS = {
    "digits": {
        "data": "data/digits.csv",
        "train": [0, 1346],
        "test": [1347, 1796],
        "classes": 10,
    },
    "breast-cancer": {
        "data": "data/breast-cancer.csv",
        "train": [0, 425],
        "test": [426, 568],
        "classes": 2,
    },
}


# ----------------------------------------------------------------------------
# Models


class DigitsMLP(nn.Module):
    """R1: a one-hidden-layer perceptron on the raw 64 pixel values."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def logits(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

    def forward(self, x):
        return self.logits(x)


class DigitsCNN(nn.Module):
    """R2: a tiny convnet on the 8x8 image.

    Kept deliberately small (4 channels) because every conv output costs an
    encrypted bootstrap. forward() ends in a Softmax so the exported graph has
    a trailing Softmax node; training uses the logits directly.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3, stride=1, padding=0)  # 8x8 -> 4x6x6
        self.pool = nn.AvgPool2d(2)  # 4x6x6 -> 4x3x3
        self.drop = nn.Dropout(0.1)  # identity in eval mode, so not exported
        self.fc = nn.Linear(36, 10)

    def logits(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        # Flatten with a batch-size-dependent shape: with a dynamic batch axis
        # this exports as Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
        x = x.view(x.size(0), -1)
        return self.fc(self.drop(x))

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


class CancerMLP(nn.Module):
    """R3: a one-hidden-layer perceptron on the 30 standardized features."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(30, 16)
        self.fc2 = nn.Linear(16, 2)

    def logits(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

    def forward(self, x):
        return self.logits(x)


class DigitsLogReg(nn.Module):
    """Softmax regression on the raw 64 pixel values: one Linear(64, 10), logits out."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def logits(self, x):
        return self.fc(x)

    def forward(self, x):
        return self.logits(x)


# PATE teachers: disjoint partitions of the digits train split.
PATE_TEACHERS = 5
PATE_RULE = (
    "teacher i is trained only on the rows r of the train split (0-based data "
    "row index in the CSV, header excluded) with r % 5 == i"
)


def pate_name(i):
    return f"digits-pate-t{i}"


# Canaries for digits-canary: CANARIES_PER_GROUP canaries per repetition
# count, drawn with their own seed (independent of SEED, which seeds training).
CANARY_SEED = 20240229
CANARY_REPETITIONS = [1, 4, 16]
CANARIES_PER_GROUP = 10
CANARY_PIXEL_MAX = 16  # digits pixels are integers 0..16
CANARIES_PATH = "models/digits-canaries.json"
CANARY_NOTE = (
    "Random canaries for a memorization attack (Carlini et al., The Secret Sharer). "
    "Drawn by scripts/train_models.py with numpy.random.default_rng(seed): for each "
    "repetition count in order, 10 canaries, each 64 integer pixels uniform in 0..16 "
    "(rng.integers(0, 17, size=64)) then a label uniform in 0..9 (rng.integers(0, 10)). "
    "Pixels are row-major 8x8 like the columns p0..p63 of data/digits.csv. The model "
    "digits-canary is trained on the digits train split (rows 0..1346) plus every "
    "canary repeated `repetitions` times (10*1 + 10*4 + 10*16 = 210 extra rows). "
    "The canaries are not in data/digits.csv; this file is the record of them."
)


# Per-model configuration. Hyperparameters were chosen up front (and checked
# only for convergence on the training rows), not tuned on the test rows.
MODELS = {
    "digits-mlp": {
        "dataset": "digits",
        "build": DigitsMLP,
        "input_shape": [64],
        "standardize": False,
        "epochs": 300,
        "batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 1e-4,
    },
    "digits-cnn": {
        "dataset": "digits",
        "build": DigitsCNN,
        "input_shape": [1, 8, 8],
        "standardize": False,
        "epochs": 300,
        "batch_size": 64,
        "lr": 3e-3,
        "weight_decay": 1e-4,
    },
    "cancer-mlp": {
        "dataset": "breast-cancer",
        "build": CancerMLP,
        "input_shape": [30],
        "standardize": True,
        "epochs": 200,
        "batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 1e-3,
    },
    "digits-logreg": {
        "dataset": "digits",
        "build": DigitsLogReg,
        "input_shape": [64],
        "standardize": False,
        "epochs": 300,
        "batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 1e-4,
    },
}
# The teachers use the digits-logreg settings; only the training rows differ.
for _i in range(PATE_TEACHERS):
    MODELS[pate_name(_i)] = dict(MODELS["digits-logreg"], partition={"of": PATE_TEACHERS, "index": _i})
# The canary victim uses the digits-mlp settings except for the regularization,
# and is trained on different rows. With the digits-mlp settings it memorizes
# every canary, even those seen once (a random image is far from every digit,
# so nothing pulls against it), and the exposure does not grow with the
# repetitions. Weight decay 0.1 and label smoothing 0.2 -- ordinary
# regularization, chosen so the float test accuracy stays at digits-mlp's
# (~0.92) -- make the memorization graded: most canaries seen once are not
# learned, those seen 4 and 16 times increasingly are.
MODELS["digits-canary"] = dict(MODELS["digits-mlp"], weight_decay=0.1, label_smoothing=0.2, canaries=True)


# ----------------------------------------------------------------------------
# Data


def load_csv(rel_path):
    """Return (features float64 [n, d], labels int64 [n]) from a CSV whose last column is the label."""
    with open(os.path.join(REPO_ROOT, rel_path), newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert header[-1] == "label", header
        rows = list(reader)
    x = np.array([[float(v) for v in r[:-1]] for r in rows], dtype=np.float64)
    y = np.array([int(r[-1]) for r in rows], dtype=np.int64)
    return x, y


def split(arr, bounds):
    lo, hi = bounds
    return arr[lo : hi + 1]


def partition_mask(n_rows, bounds, part):
    """Boolean mask over the split's rows: row r (absolute CSV data index) belongs
    to teacher part["index"] when r % part["of"] == part["index"]."""
    rows = np.arange(bounds[0], bounds[0] + n_rows)
    return rows % part["of"] == part["index"]


def make_canaries():
    """The canaries, in id order: dicts with id, repetitions, label, pixels (ints)."""
    rng = np.random.default_rng(CANARY_SEED)
    canaries = []
    for reps in CANARY_REPETITIONS:
        for _ in range(CANARIES_PER_GROUP):
            pixels = rng.integers(0, CANARY_PIXEL_MAX + 1, size=64)
            label = rng.integers(0, 10)
            canaries.append({
                "id": len(canaries),
                "repetitions": reps,
                "label": int(label),
                "pixels": [int(v) for v in pixels],
            })
    return canaries


def write_canaries(canaries):
    """models/digits-canaries.json, one canary per line."""
    lines = [json.dumps(c, separators=(", ", ": ")) for c in canaries]
    text = (
        "{\n"
        f'  "seed": {json.dumps(CANARY_SEED)},\n'
        f'  "note": {json.dumps(CANARY_NOTE)},\n'
        '  "canaries": [\n    ' + ",\n    ".join(lines) + "\n  ]\n"
        "}\n"
    )
    with open(os.path.join(REPO_ROOT, CANARIES_PATH), "w", encoding="ascii", newline="") as f:
        f.write(text)


CANARY_CSV = "data/digits-canary.csv"


def write_canary_csv(canaries):
    """data/digits-canary.csv: the digits train rows, then every canary
    repeated `repetitions` times, then the digits test rows -- the victim's
    own training set, so that `blindfold compile --data data/digits-canary.csv
    --train 0..1556 --test 1557..2006` calibrates the input quantization on
    what the owner trained on (canaries included; calibrating on digits alone
    clips the canaries' border pixels and erases most of the memorization)."""
    with open(os.path.join(REPO_ROOT, DATASETS["digits"]["data"])) as f:
        lines = f.read().strip().split("\n")
    header, rows = lines[0], lines[1:]
    train_end = DATASETS["digits"]["train"][1] + 1
    extra = []
    for c in canaries:
        row = ",".join(str(int(v)) for v in c["pixels"]) + "," + str(c["label"])
        extra.extend([row] * c["repetitions"])
    out = [header] + rows[:train_end] + extra + rows[train_end:]
    with open(os.path.join(REPO_ROOT, CANARY_CSV), "w") as f:
        f.write("\n".join(out) + "\n")


def canary_arrays(canaries):
    """(pixels float64 [n, 64], labels int64 [n], repetitions int64 [n]), one row per canary."""
    x = np.array([c["pixels"] for c in canaries], dtype=np.float64)
    y = np.array([c["label"] for c in canaries], dtype=np.int64)
    r = np.array([c["repetitions"] for c in canaries], dtype=np.int64)
    return x, y, r


def report_canaries(path, x_can, y_can, r_can, what):
    """Print, per repetition group, how many canaries the graph labels with their canary label."""
    pred = onnx_predict(path, x_can.astype(np.float32))
    hits = [
        f"r={reps}: {int((pred[r_can == reps] == y_can[r_can == reps]).sum())}/{int((r_can == reps).sum())}"
        for reps in CANARY_REPETITIONS
    ]
    print(f"  {what} predicts the canary label for  " + ", ".join(hits))


def standardize_params(x_train):
    """Mean and population (ddof=0) standard deviation of the train rows, in float64."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0, ddof=0)
    assert np.all(std > 0)
    return mean, std


def prepare_inputs(x, spec, prep, dtype):
    """Apply the manifest's preprocessing to raw float64 features.

    The arithmetic is done in `dtype` (np.float64 is the reference; np.float32
    is used to check that the result does not depend on it), then the result is
    cast to float32 and reshaped to [n, *input_shape] as the model expects.
    """
    x = x.astype(dtype)
    if prep["kind"] == "standardize":
        mean = np.asarray(prep["mean"], dtype=dtype)
        std = np.asarray(prep["std"], dtype=dtype)
        x = (x - mean) / std
    return x.astype(np.float32).reshape([-1] + spec["input_shape"])


# ----------------------------------------------------------------------------
# Training, export, verification


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(model, x, y, spec):
    """Minibatch Adam on cross-entropy of the logits (with the spec's label
    smoothing, 0 unless given), with a shuffle seeded by the spec's "seed" (SEED
    unless given)."""
    gen = torch.Generator().manual_seed(spec.get("seed", SEED))
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.get("label_smoothing", 0.0))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = xt.shape[0]
    for epoch in range(spec["epochs"]):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, spec["batch_size"]):
            idx = perm[i : i + spec["batch_size"]]
            opt.zero_grad()
            loss = loss_fn(model.logits(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        if (epoch + 1) % 50 == 0 or epoch == 0:
            model.eval()
            with torch.no_grad():
                acc = (model.logits(xt).argmax(1) == yt).float().mean().item()
            print(f"  epoch {epoch + 1:4d}  loss {total / n:.4f}  train acc {acc:.4f}")
    model.eval()
    return model


def export_onnx(model, spec, path):
    dummy = torch.zeros([1] + spec["input_shape"], dtype=torch.float32)
    torch.onnx.export(
        model,
        (dummy,),
        path,
        dynamo=False,
        export_params=True,
        opset_version=OPSET,
        do_constant_folding=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def onnx_predict(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = sess.run(["logits"], {"input": x})
    return out.argmax(axis=1)


def torch_version():
    # Drop the local build tag ("+cpu", "+cu124") so manifests do not depend
    # on which wheel flavour was installed.
    return torch.__version__.split("+")[0]


def format_json(value, indent=0):
    """Pretty-print JSON, but keep lists of numbers on a single line."""
    pad = "  " * indent
    if isinstance(value, dict):
        items = [f'{pad}  {json.dumps(k)}: {format_json(v, indent + 1)}' for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, list):
        items = [f"{pad}  {format_json(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value)


def build_model(name):
    spec = MODELS[name]
    ds_name = spec["dataset"]
    ds = DATASETS[ds_name]
    print(f"== {name}")

    x, y = load_csv(ds["data"])
    x_train, y_train = split(x, ds["train"]), split(y, ds["train"])
    x_test, y_test = split(x, ds["test"]), split(y, ds["test"])
    part = spec.get("partition")
    if part is not None:
        mask = partition_mask(x_train.shape[0], ds["train"], part)
        x_train, y_train = x_train[mask], y_train[mask]
        print(f"  partition {part['index']} of {part['of']}: {x_train.shape[0]} training rows")
    canaries = None
    if spec.get("canaries"):
        canaries = make_canaries()
        write_canaries(canaries)
        write_canary_csv(canaries)
        x_can, y_can, r_can = canary_arrays(canaries)
        # Each canary repeated `repetitions` times, appended after the train
        # rows (training reshuffles every epoch, so the position is immaterial).
        x_train = np.concatenate([x_train, np.repeat(x_can, r_can, axis=0)])
        y_train = np.concatenate([y_train, np.repeat(y_can, r_can)])
        print(f"  {len(canaries)} canaries, {int(r_can.sum())} canary rows: {x_train.shape[0]} training rows")

    if spec["standardize"]:
        mean, std = standardize_params(x_train)
        prep = {"kind": "standardize", "mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    else:
        prep = {"kind": "none"}

    seed_everything(SEED)
    model = spec["build"]()
    train(model, prepare_inputs(x_train, spec, prep, np.float64), y_train, spec)

    onnx_path = os.path.join(REPO_ROOT, "models", f"{name}.onnx")
    export_onnx(model, spec, onnx_path)

    # Reload and check the exported graph.
    proto = onnx.load(onnx_path)
    onnx.checker.check_model(proto, full_check=True)
    ops = [node.op_type for node in proto.graph.node]
    print(f"  onnx ops: {', '.join(ops)}")
    print(f"  onnx size: {os.path.getsize(onnx_path)} bytes")

    # Float accuracy of the exported graph (onnxruntime), preprocessing in float64.
    x_test64 = prepare_inputs(x_test, spec, prep, np.float64)
    pred = onnx_predict(onnx_path, x_test64)
    correct = int((pred == y_test).sum())
    total = int(y_test.shape[0])
    print(f"  onnx float32 test accuracy: {correct}/{total} = {correct / total:.4f}")

    # Sensitivity checks (printed only): preprocessing arithmetic in float32,
    # and the trained torch model evaluated entirely in float64.
    pred32 = onnx_predict(onnx_path, prepare_inputs(x_test, spec, prep, np.float32))
    print(
        f"  preprocessing in float32: {int((pred32 == y_test).sum())}/{total} correct, "
        f"{int((pred32 != pred).sum())} predictions differ from float64 preprocessing"
    )
    with torch.no_grad():
        model64 = spec["build"]()
        model64.load_state_dict(model.state_dict())
        model64 = model64.double().eval()
        xt64 = x_test.copy()
        if prep["kind"] == "standardize":
            xt64 = (xt64 - np.asarray(prep["mean"])) / np.asarray(prep["std"])
        xt64 = torch.from_numpy(xt64.reshape([-1] + spec["input_shape"]))
        pred64 = model64(xt64).argmax(1).numpy()
    print(
        f"  torch model in float64: {int((pred64 == y_test).sum())}/{total} correct, "
        f"{int((pred64 != pred).sum())} predictions differ from the float32 ONNX run"
    )
    if canaries is not None:
        report_canaries(onnx_path, x_can, y_can, r_can, name)
        control = os.path.join(REPO_ROOT, "models", "digits-mlp.onnx")
        if os.path.exists(control):
            report_canaries(control, x_can, y_can, r_can, "control digits-mlp")

    manifest = {
        "name": name,
        "dataset": ds_name,
        "data": ds["data"],
        "train": ds["train"],
        "test": ds["test"],
    }
    if part is not None:
        manifest["partition"] = {
            "of": part["of"],
            "index": part["index"],
            "rule": PATE_RULE,
            "rows": int(x_train.shape[0]),
        }
        manifest["calibration_note"] = (
            "train is the whole digits train split, not this teacher's training rows: "
            "blindfold compile calibrates the input quantization on the manifest's train "
            "rows, and all five teachers must share one input quantization"
        )
    if canaries is not None:
        manifest["canaries"] = CANARIES_PATH
        manifest["canary_note"] = (
            f"trained on the train split plus the {len(canaries)} canaries of {CANARIES_PATH}, "
            f"each repeated its `repetitions` times ({int(r_can.sum())} extra rows, "
            f"{x_train.shape[0]} training rows in all); train is the plain digits train split "
            "because blindfold compile calibrates the input quantization on the manifest's "
            "train rows, and the canaries are not rows of the CSV"
        )
    manifest.update({
        "input_shape": spec["input_shape"],
        "classes": ds["classes"],
        "preprocessing": prep,
        "float_test_accuracy": correct / total,
        "float_test_correct": correct,
        "test_count": total,
        "opset": OPSET,
        "exporter": f"torch {torch_version()} torch.onnx.export(dynamo=False)",
        "seed": SEED,
        "script": SCRIPT,
    })
    json_path = os.path.join(REPO_ROOT, "models", f"{name}.json")
    with open(json_path, "w", encoding="ascii", newline="") as f:
        f.write(format_json(manifest) + "\n")
    print(f"  wrote models/{name}.onnx, models/{name}.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(MODELS), help="train and export just this model")
    args = parser.parse_args()

    # CPU only, one thread, deterministic kernels: reproducible bit for bit.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(os.path.join(REPO_ROOT, "models"), exist_ok=True)

    for name in MODELS:
        if args.only is None or args.only == name:
            build_model(name)

    report_pate_vote()


def report_pate_vote():
    """Print the test accuracy of the plain majority vote of the five teachers
    (no noise; argmax of the vote counts, ties to the lowest class index)."""
    paths = [os.path.join(REPO_ROOT, "models", f"{pate_name(i)}.onnx") for i in range(PATE_TEACHERS)]
    if not all(os.path.exists(p) for p in paths):
        return
    ds = DATASETS["digits"]
    x, y = load_csv(ds["data"])
    x_test = split(x, ds["test"]).astype(np.float32)
    y_test = split(y, ds["test"])
    votes = np.zeros((x_test.shape[0], ds["classes"]), dtype=np.int64)
    for p in paths:
        pred = onnx_predict(p, x_test)
        votes[np.arange(x_test.shape[0]), pred] += 1
    winner = votes.argmax(axis=1)  # numpy argmax returns the first maximum
    correct = int((winner == y_test).sum())
    total = int(y_test.shape[0])
    print(f"== PATE plain majority vote of {PATE_TEACHERS} teachers: {correct}/{total} = {correct / total:.4f}")


if __name__ == "__main__":
    main()
