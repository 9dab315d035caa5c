#!/usr/bin/env python3
"""Export the two reference datasets shipped with scikit-learn to CSV.

Writes, relative to the repository root:

  data/digits.csv         1797 rows; header p0,...,p63,label
                          features are integers 0..16, label is 0..9
  data/breast-cancer.csv  569 rows; header = the 30 scikit-learn feature
                          names with spaces replaced by '_', then label
                          (0 = malignant, 1 = benign, as in scikit-learn)
                          features are written with repr(), which
                          round-trips float64 exactly

Rows keep scikit-learn's order, so the index-based train/test splits in
data/README.md and models/*.json refer to these files directly. The script
is deterministic (no randomness involved); rerunning it reproduces the
files byte for byte with the pinned scikit-learn version.

Usage: python3 scripts/export_data.py
"""

import os
import re

from sklearn.datasets import load_breast_cancer, load_digits

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO_ROOT, "data")


def csv_safe(name):
    """Turn a feature name like 'mean concave points' into 'mean_concave_points'."""
    safe = re.sub(r"[^0-9A-Za-z]+", "_", name.strip()).strip("_")
    assert safe, name
    return safe


def write_csv(path, header, rows):
    """Write rows (lists of already-formatted strings) with '\n' line endings."""
    with open(path, "w", encoding="ascii", newline="") as f:
        f.write(",".join(header) + "\n")
        for row in rows:
            f.write(",".join(row) + "\n")
    print(f"wrote {os.path.relpath(path, REPO_ROOT)}: {len(rows)} rows, {len(header)} columns")


def export_digits():
    ds = load_digits()
    x, y = ds.data, ds.target
    assert x.shape == (1797, 64)
    header = [f"p{i}" for i in range(64)] + ["label"]
    rows = []
    for features, label in zip(x, y):
        pixels = []
        for v in features:
            # The pixel counts are stored as float64 but are whole numbers 0..16.
            iv = int(v)
            assert iv == v and 0 <= iv <= 16, v
            pixels.append(str(iv))
        rows.append(pixels + [str(int(label))])
    write_csv(os.path.join(DATA_DIR, "digits.csv"), header, rows)


def export_breast_cancer():
    ds = load_breast_cancer()
    x, y = ds.data, ds.target
    assert x.shape == (569, 30)
    names = [csv_safe(n) for n in ds.feature_names]
    assert len(set(names)) == len(names)
    header = names + ["label"]
    rows = []
    for features, label in zip(x, y):
        # repr() of a Python float is the shortest string that parses back to
        # the identical float64.
        cells = [repr(float(v)) for v in features]
        for cell, v in zip(cells, features):
            assert float(cell) == v
        rows.append(cells + [str(int(label))])
    write_csv(os.path.join(DATA_DIR, "breast-cancer.csv"), header, rows)


def main():
    os.makedirs(DATA_DIR, exist_ok=True)
    export_digits()
    export_breast_cancer()


if __name__ == "__main__":
    main()
