#!/usr/bin/env python3
"""Run `blindfold bench` (auto everywhere, no per-model flags) on the held-out
zoo (tests/zoo/) and the shipped reference models, and print the README's
table: chosen set and widths, float / quantized clear / simulated accuracy,
agreement with the float model, and the loss in points.

Usage: python3 scripts/zoo_table.py [--samples N] [--bin target/release/blindfold] [MODEL.onnx ...]

With --samples 0 (the default) no ciphertexts are made: the FHE accuracy is
predicted by the clear path simulating the encrypted noise. Standard library
only; build the CLI first (cargo build --release -p blindfold-cli).
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ["digits-mlp", "digits-cnn", "cancer-mlp", "digits-logreg"]


def rounding(r):
    """The rounding bits, per layer (`5` or `6,5` when the layers differ)."""
    shifts = r.get("acc_shift") or [r["rounding_bits"]]
    if len(set(shifts)) == 1:
        return str(shifts[0])
    return ",".join(str(k) for k in shifts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=0)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "blindfold"))
    ap.add_argument("--json", help="also write all bench reports to this file")
    ap.add_argument("models", nargs="*")
    args = ap.parse_args()
    models = args.models or (
        [os.path.join(ROOT, "models", f"{m}.onnx") for m in SHIPPED]
        + sorted(glob.glob(os.path.join(ROOT, "tests", "zoo", "*.onnx")))
    )
    rows, reports = [], []
    for m in models:
        t = time.time()
        out = subprocess.run(
            [args.bin, "bench", m, "--samples", str(args.samples), "--json"],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            print(f"{m}: bench failed\n{out.stderr}", file=sys.stderr)
            sys.exit(1)
        r = json.loads(out.stdout)
        r["compile_and_bench_s"] = time.time() - t
        reports.append(r)
        loss = 100 * (r["float_accuracy"] - r["quantized_accuracy"])
        sim_loss = 100 * (r["float_accuracy"] - r["simulated_accuracy"])
        rows.append((r, loss, sim_loss))
        print(f"{r['model']}: {r['params_short']} loss {loss:.1f} (simulated {sim_loss:.1f}) "
              f"in {r['compile_and_bench_s']:.0f} s", file=sys.stderr)
    print("| model | set | in/act/round bits (per layer where they differ), margin, clip | PBS | float | clear | simulated FHE | agreement | loss (pts) | simulated loss |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r, loss, sim_loss in rows:
        print(
            f"| `{r['model']}` | {r['params_short']} | {r['input_bits']}/{r['activation_bits']}/"
            f"{rounding(r)}, m{r['margin']}{', clip' if r['clip_ranges'] else ''} | {r['pbs_per_inference']} | "
            f"{r['float_accuracy']:.4f} | {r['quantized_accuracy']:.4f} | {r['simulated_accuracy']:.4f} | "
            f"{r['float_agreement']:.3f} | {loss:.1f} | {sim_loss:.1f} |"
        )
    losses = [x[1] for x in rows]
    sims = [x[2] for x in rows]
    print(
        f"\n{len(rows)} models: clear loss mean {sum(losses) / len(losses):.2f}, worst {max(losses):.1f} points; "
        f"simulated FHE loss mean {sum(sims) / len(sims):.2f}, worst {max(sims):.1f} points"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)


if __name__ == "__main__":
    main()
