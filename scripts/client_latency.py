#!/usr/bin/env python3
"""End-to-end latency of one encrypted prediction from the Rust CLI, the
Python package and the Node.js package, interleaved, against one running
server (command 1's, by default) — issue 13's comparison.

Usage (from the repository root, with the server running and both packages
installed; target/e2e-python has the Python one after `.ci/run`):

    target/e2e-python/bin/python scripts/client_latency.py [--model digits-mlp] [--runs 10]

Per client, the median over the runs of:
  * Python / Node.js: wall clock around `predict(model, [row], keys)` in the
    host language (spec fetch, encryption, the RPC, decryption, conversion);
  * CLI: encrypt + round trip + decrypt as `blindfold predict --json` reports
    them, and the wall clock of the whole process (start-up, key loading).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import blindfold

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = r"""
const bf = require(process.argv[1]);
(async () => {
  const [url, model, keysPath, rowJson, runs] = process.argv.slice(2);
  const c = await bf.Client.connect(url);
  const k = await bf.Keys.load(keysPath);
  const row = JSON.parse(rowJson);
  await c.predict(model, [row], k); // warm-up: connection, spec
  const out = [];
  for (let i = 0; i < Number(runs); i++) {
    const t = process.hrtime.bigint();
    await c.predict(model, [row], k);
    out.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  console.log(JSON.stringify(out));
})();
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:50051")
    ap.add_argument("--model", default="digits-mlp")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cli", default=os.path.join(ROOT, "target", "release", "blindfold"))
    args = ap.parse_args()
    csv_path = os.path.join(ROOT, "data", "examples", "digits-test-5.csv")
    with open(csv_path) as f:
        row = [float(v) for v in f.read().splitlines()[1].split(",")]
    work = tempfile.mkdtemp(prefix="blindfold-latency-")
    one = os.path.join(work, "one.csv")
    with open(one, "w") as f:
        f.write(",".join(str(v) for v in row) + "\n")
    client = blindfold.Client(args.url)
    keys = client.keygen(args.model, os.path.join(work, "keys"))
    client.register(keys)
    client.predict(args.model, [row], keys)  # warm-up
    py, node, cli, cli_wall = [], [], [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        client.predict(args.model, [row], keys)
        py.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        out = subprocess.run(
            [args.cli, "--server", args.url, "predict", args.model, "--keys", keys.path,
             "--input", one, "--json"], capture_output=True, text=True, check=True)
        cli_wall.append((time.perf_counter() - t) * 1e3)
        r = json.loads(out.stdout)
        r = r["predictions"][0]
        cli.append(r["encrypt_ms"] + r["round_trip_ms"] + r["decrypt_ms"])
    out = subprocess.run(
        ["node", "-e", NODE, os.path.join(ROOT, "client", "node"), args.url, args.model,
         keys.path, json.dumps(row), str(args.runs)], capture_output=True, text=True, check=True)
    node = json.loads(out.stdout)
    med = statistics.median
    base = med(cli)
    print(f"{args.model}, one row, median of {args.runs} (ms):")
    print(f"  CLI (encrypt + round trip + decrypt)  {base:8.1f}")
    print(f"  CLI process wall clock                {med(cli_wall):8.1f}")
    print(f"  Python predict()                      {med(py):8.1f}  ({med(py) / base:.3f}x the CLI)")
    print(f"  Node.js predict()                     {med(node):8.1f}  ({med(node) / base:.3f}x the CLI)")


if __name__ == "__main__":
    main()
