"""The Python package against a real Blindfold server.

Run by tests/tests/python_package.rs, which starts the server (the test
configuration of tests/src/lib.rs) and sets:

  BLINDFOLD_URL         http://127.0.0.1:PORT
  BLINDFOLD_TOKEN       an identity's token (alice)
  BLINDFOLD_TOKEN_2     another identity's token (bob)
  BLINDFOLD_CLEAR_JSON  the clear evaluator's logits for the rows below, as JSON
  BLINDFOLD_ROWS_CSV    data/examples/digits-test-5.csv
"""

import csv
import json
import os
import socket
import stat
import threading
import time

import pytest

import blindfold

URL = os.environ["BLINDFOLD_URL"]
TOKEN = os.environ["BLINDFOLD_TOKEN"]
TOKEN_2 = os.environ["BLINDFOLD_TOKEN_2"]
FAST = "digits-mlp-fast"  # R1 on 2_2, exact compile, raw logits
NO_CLEAR = "cancer-mlp"  # 3_3, PredictClear disabled
NOISY = "digits-noisy-top2"  # top-2, noise, budget of 6 answers
PATE = "digits-pate-fast"  # votes, epsilon budget


def read_rows():
    rows = []
    with open(os.environ["BLINDFOLD_ROWS_CSV"]) as f:
        for r in csv.reader(f):
            try:
                rows.append([float(v) for v in r])
            except ValueError:  # the header line
                continue
    return rows


ROWS = read_rows()
CLEAR_LOGITS = json.loads(os.environ["BLINDFOLD_CLEAR_JSON"])


@pytest.fixture(scope="module")
def client():
    return blindfold.Client(URL, token=TOKEN)


@pytest.fixture(scope="module")
def keys(client, tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "fast"
    k = client.keygen(FAST, path)
    reg = client.register(k)
    assert reg.key_id == k.key_id
    return k


def test_models_and_spec(client):
    models = {m.name: m for m in client.models()}
    assert FAST in models and NOISY in models and PATE in models
    fast = models[FAST]
    assert fast.params == "2_2"
    assert fast.parameter_set.startswith("V1_")
    assert fast.classes == 10 and fast.bootstraps == 42 and fast.predict_clear
    assert fast.policy.output == "raw"
    assert models[NO_CLEAR].predict_clear is False
    noisy = models[NOISY].policy
    assert (noisy.output, noisy.top_k, noisy.noise, noisy.answers_limit) == ("top_k", 2, "gaussian", 6)
    assert models[PATE].policy.aggregate == "votes" and models[PATE].policy.epsilon_limit == 10.0
    spec = client.model(FAST)
    assert (spec.name, spec.features, spec.classes, spec.params) == (FAST, 64, 10, "2_2")
    assert len(spec.circuit_sha256) == 64
    assert json.loads(spec.to_json())["name"] == FAST


def test_keygen_writes_a_private_key_and_reuses_it(client, keys, tmp_path):
    mode = stat.S_IMODE(os.stat(os.path.join(keys.path, "client.key")).st_mode)
    assert mode == 0o600
    assert len(keys.key_id) == 64 and keys.params == "2_2"
    # the same directory again: reused, same id, nothing regenerated
    again = client.keygen(FAST, keys.path)
    assert again.key_id == keys.key_id
    assert blindfold.Keys.load(keys.path).key_id == keys.key_id
    # a directory with keys for another set is refused for this model
    with pytest.raises(blindfold.KeysError, match="needs"):
        client.keygen(NO_CLEAR, keys.path)


def test_register_is_idempotent_and_reports_progress(client, keys):
    seen = []
    reg = client.register(keys, progress=lambda sent, total: seen.append((sent, total)))
    assert reg.already_registered
    assert seen and seen[-1][0] == seen[-1][1] == reg.bytes
    assert client.has_key(keys)


def test_encrypted_predict_equals_the_clear_path(client, keys):
    enc = client.predict(FAST, ROWS, keys)
    clear = client.predict_clear(FAST, ROWS)
    assert len(enc) == len(ROWS) == len(clear)
    for i, (e, c) in enumerate(zip(enc, clear)):
        # raw policy on an exact circuit: bit-exact logits
        assert e.scores == CLEAR_LOGITS[i], f"row {i}"
        assert e.scores == c.scores and e.label == c.label, f"row {i}"
    assert enc.labels == [a.label for a in enc.answers]
    t = enc.timing
    assert t.bootstraps == 42 * len(ROWS)
    assert t.round_trip_ms >= t.server_evaluation_ms > 0 and t.encrypt_ms > 0
    assert enc.budget.model == FAST and enc.budget.limit is None


def test_numpy_rows_and_batches(client, keys):
    np = pytest.importorskip("numpy")
    arr = np.asarray(ROWS[:3], dtype=np.float32)
    enc = client.predict(FAST, arr, keys)
    assert [a.scores for a in enc] == CLEAR_LOGITS[:3]
    assert client.predict_clear(FAST, arr.astype(np.int64)).labels == [a.label for a in enc]
    with pytest.raises(blindfold.InvalidInput, match="2-D"):
        client.predict(FAST, arr[0], keys)
    # more rows than one request takes: sent in batches, answered in order
    many = client.predict_clear(FAST, ROWS * 4)
    assert len(many) == 20 and [a.scores for a in many] == CLEAR_LOGITS * 4


def test_budgets_and_policies(client, tmp_path):
    b = client.budget(NOISY)
    assert b.limit == 6
    used = b.used
    answers = client.predict_clear(NOISY, ROWS[:2])
    assert all(len(a.labels) == 2 and not a.scores for a in answers)
    assert answers.budget.used == used + 2 and answers.budget.remaining == 6 - used - 2
    with pytest.raises(blindfold.BudgetExhausted) as e:
        client.predict_clear(NOISY, ROWS * 2)
    assert e.value.code == "RESOURCE_EXHAUSTED"
    assert isinstance(e.value, blindfold.ResourceExhausted)
    p = client.predict_clear(PATE, ROWS[:1])
    assert p.budget.epsilon is not None and 0 < p.budget.epsilon <= 10.0


def test_encrypt_and_decrypt_alone(client, keys):
    spec = client.model(FAST)
    blobs = keys.encrypt(spec, ROWS[:2])
    assert len(blobs) == 2 and all(isinstance(b, bytes) and len(b) > 100 for b in blobs)
    with pytest.raises(blindfold.InvalidInput, match="features"):
        keys.encrypt(spec, [ROWS[0][:10]])
    with pytest.raises(blindfold.InvalidAnswer):
        keys.decrypt(spec, b"\x00" * 64)
    with pytest.raises(blindfold.KeysError, match="needs"):
        keys.encrypt(client.model(NO_CLEAR), ROWS[:1])


def test_every_error_class(client, keys, tmp_path):
    with pytest.raises(blindfold.NotFound) as e:
        client.model("no-such-model")
    assert e.value.code == "NOT_FOUND" and "no-such-model" in e.value.message
    with pytest.raises(blindfold.Unauthenticated):
        blindfold.Client(URL, token="not-a-token-of-this-server").models()
    with pytest.raises(blindfold.PermissionDenied):
        client.predict_clear(NO_CLEAR, [[0.0] * 30])
    with pytest.raises(blindfold.InvalidInput):
        client.predict_clear(FAST, [[1.0, 2.0]])
    with pytest.raises(blindfold.InvalidInput):
        client.predict(FAST, [[float("nan")] * 64], keys)
    with pytest.raises(blindfold.KeysError):
        blindfold.Keys.load(tmp_path / "nothing-here")
    # another identity does not see alice's key
    bob = blindfold.Client(URL, token=TOKEN_2)
    with pytest.raises(blindfold.NotFound, match="register"):
        bob.predict(FAST, ROWS[:1], keys)
    # nothing listens on a port we just closed
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(blindfold.ConnectionFailed):
        blindfold.Client(f"http://127.0.0.1:{port}")
    with pytest.raises(blindfold.ConnectionFailed):
        blindfold.Client("not a url")
    with pytest.raises(ValueError):
        blindfold.Client(URL, timeout=-1)
    assert issubclass(blindfold.BudgetExhausted, blindfold.BlindfoldError)


def test_delete_key(client, tmp_path):
    k = client.keygen(FAST, tmp_path / "short-lived")
    client.register(k)
    assert client.has_key(k.key_id)
    client.delete_key(k)
    assert not client.has_key(k)
    with pytest.raises(blindfold.NotFound):
        client.predict(FAST, ROWS[:1], k)


def test_the_gil_is_released_while_waiting(client, keys):
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.005)

    t = threading.Thread(target=tick)
    t.start()
    start = time.monotonic()
    client.predict(FAST, ROWS[:2], keys)
    end = time.monotonic()
    done.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    # a held GIL would starve the ticker for the whole call
    assert len(during) >= 5, f"{len(during)} ticks in {end - start:.2f} s"
