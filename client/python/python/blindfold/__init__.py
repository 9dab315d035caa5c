"""Blindfold client: encrypted predictions from Python.

    import blindfold
    client = blindfold.Client("http://127.0.0.1:50051", token="…")
    keys = client.keygen("digits-mlp", "my-keys")      # secret key stays here
    client.register(keys)
    answers = client.predict("digits-mlp", rows, keys)  # rows: 2-D NumPy array or list of rows
    answers[0].label, answers.budget.remaining

Every error is a `BlindfoldError` subclass carrying the gRPC status name
(`code`) and the server's `message`. Key generation, encryption and every
network wait release the GIL.
"""

from . import _native
from ._native import (
    Answer,
    Answers,
    BlindfoldError,
    Budget,
    BudgetExhausted,
    ConnectionFailed,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidAnswer,
    InvalidArgument,
    InvalidInput,
    Keys,
    KeysError,
    ModelInfo,
    ModelSpec,
    NotFound,
    PermissionDenied,
    Policy,
    Registration,
    ResourceExhausted,
    ServerError,
    Timing,
    Unauthenticated,
    Unavailable,
)

__version__ = _native.__version__

__all__ = [
    "Client", "Keys", "ModelInfo", "ModelSpec", "Policy", "Answer", "Answers", "Budget",
    "Timing", "Registration", "BlindfoldError", "ConnectionFailed", "InvalidArgument",
    "NotFound", "Unauthenticated", "PermissionDenied", "ResourceExhausted", "BudgetExhausted",
    "FailedPrecondition", "Unavailable", "DeadlineExceeded", "ServerError", "InvalidAnswer",
    "InvalidInput", "KeysError", "rows_of",
]


def rows_of(rows):
    """A list of rows of floats from a 2-D NumPy array, a list of rows, or
    anything with `.tolist()` (pandas `.to_numpy()`, array-likes)."""
    if hasattr(rows, "tolist") and not isinstance(rows, (list, tuple)):
        rows = rows.tolist()
    if isinstance(rows, (str, bytes)):
        raise InvalidInput("rows must be a 2-D array or a list of rows of numbers")
    rows = list(rows)
    if rows and not hasattr(rows[0], "__len__"):
        raise InvalidInput(
            "rows must be 2-D (one row per prediction); for one row pass [row] or array.reshape(1, -1)"
        )
    try:
        return [[float(v) for v in r] for r in rows]
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"rows must hold numbers only: {e}") from None


class Client(_native.Client):
    """A connection to a Blindfold server.

    `Client(url="http://127.0.0.1:50051", *, token=None, ca_cert=None, timeout=None)`:
    `token` is sent as `authorization: Bearer <token>`; `ca_cert` is the path of
    a PEM CA certificate for `https://` servers; `timeout` (seconds) bounds each call.
    """

    def predict(self, model, rows, keys):
        """Encrypt `rows` under `keys`, have `model` evaluate them, decrypt the answers."""
        return super().predict(model, rows_of(rows), keys)

    def predict_clear(self, model, rows):
        """The same model on plaintext rows (if its owner enabled it), same policy."""
        return super().predict_clear(model, rows_of(rows))

