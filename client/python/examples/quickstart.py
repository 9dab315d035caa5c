"""keygen → register → predict with the model's default policy, against
command 1's server (`cargo run --release -p blindfold-server -- --config
server/quickstart.toml`). Run from the repository root:

    python client/python/examples/quickstart.py
"""
import csv

import blindfold

client = blindfold.Client("http://127.0.0.1:50051")  # token="…" for servers that need one
for m in client.models():
    print(f"{m.name:<16} {m.params}  {m.bootstraps:>4} bootstraps  policy {m.policy.output}")

keys = client.keygen("digits-mlp", "my-python-keys")  # secret key stays here (mode 0600)
reg = client.register(keys)
print(f"registered {reg.bytes / 1e6:.1f} MB as {reg.key_id[:16]}…")

with open("data/examples/digits-test-5.csv") as f:
    rows = [[float(v) for v in r] for r in list(csv.reader(f))[1:]]
answers = client.predict("digits-mlp", rows, keys)
print("labels", answers.labels)
t = answers.timing
print(f"{t.bootstraps} bootstraps, server {t.server_evaluation_ms:.0f} ms, round trip {t.round_trip_ms:.0f} ms for {len(rows)} rows")
print(f"budget: {answers.budget.used} of {answers.budget.limit} answers used")

try:
    client.predict_clear("no-such-model", rows)
except blindfold.NotFound as e:
    print(f"{type(e).__name__} ({e.code}): {e.message}")
