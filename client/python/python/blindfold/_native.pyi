"""Type stubs of `blindfold._native` (the PyO3 extension)."""

from os import PathLike
from typing import Callable, Iterator, Optional, Sequence, Union

__version__: str

Rows = Sequence[Sequence[float]]
StrPath = Union[str, PathLike]

class BlindfoldError(Exception):
    """Base of every Blindfold error."""
    code: Optional[str]  # gRPC status name, e.g. "NOT_FOUND"; None for client-side errors
    message: str  # the server's message (or the client's)

class ConnectionFailed(BlindfoldError): ...
class InvalidArgument(BlindfoldError): ...
class NotFound(BlindfoldError): ...
class Unauthenticated(BlindfoldError): ...
class PermissionDenied(BlindfoldError): ...
class ResourceExhausted(BlindfoldError): ...
class BudgetExhausted(ResourceExhausted): ...
class FailedPrecondition(BlindfoldError): ...
class Unavailable(BlindfoldError): ...
class DeadlineExceeded(BlindfoldError): ...
class ServerError(BlindfoldError): ...
class InvalidAnswer(BlindfoldError): ...
class InvalidInput(BlindfoldError): ...
class KeysError(BlindfoldError): ...

class Policy:
    """The owner's hardening policy: what every answer is reduced to."""
    output: str  # "raw" | "scores" | "label" | "top_k"
    top_k: int
    scores_bits: int
    noise: str  # "none" | "gaussian" | "laplace"
    noise_scale: float
    clamp_inputs: bool
    members: int
    aggregate: str  # "logits" | "votes"
    answers_limit: Optional[int]
    epsilon_limit: Optional[float]
    delta: Optional[float]
    clamp_bootstraps: int
    stage_bootstraps: int

class ModelInfo:
    name: str
    description: str
    parameter_set: str  # tfhe-rs name
    params: str  # short name, e.g. "2_2"
    classes: int
    bootstraps: int  # per answer, with the policy
    predict_clear: bool
    policy: Policy

class ModelSpec:
    """A model's checked client spec."""
    name: str
    parameter_set: str
    params: str
    classes: int
    features: int
    input_shape: list[int]
    policy: Policy
    bootstraps: int
    keyswitches: int
    predicted_p_error: float
    circuit_sha256: str
    def to_json(self) -> str: ...

class Answer:
    label: int
    labels: list[int]  # best first (top-k policies)
    scores: list[float]  # empty for label policies

class Budget:
    model: str
    used: int
    limit: Optional[int]  # None: unlimited
    remaining: Optional[int]
    epsilon: Optional[float]  # privacy loss spent (DP policies)
    epsilon_limit: Optional[float]
    delta: Optional[float]

class Timing:
    server_evaluation_ms: float
    server_queue_ms: float
    bootstraps: int
    keyswitches: int
    round_trip_ms: float
    encrypt_ms: float
    decrypt_ms: float

class Answers(Sequence[Answer]):
    answers: list[Answer]
    labels: list[int]
    budget: Optional[Budget]
    timing: Timing
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Answer: ...  # type: ignore[override]
    def __iter__(self) -> Iterator[Answer]: ...

class Registration:
    key_id: str
    bytes: int
    already_registered: bool

class Keys:
    key_id: str
    parameter_set: str
    params: str
    path: str
    @staticmethod
    def load(path: StrPath) -> "Keys": ...
    def encrypt(self, spec: ModelSpec, rows: Rows) -> list[bytes]: ...
    def decrypt(self, spec: ModelSpec, answer: bytes) -> Answer: ...

class Client:
    url: str
    def __init__(
        self,
        url: str = "http://127.0.0.1:50051",
        *,
        token: Optional[str] = None,
        ca_cert: Optional[StrPath] = None,
        timeout: Optional[float] = None,
    ) -> None: ...
    def models(self) -> list[ModelInfo]: ...
    def model(self, name: str) -> ModelSpec: ...
    def keygen(self, model: str, path: StrPath, *, overwrite: bool = False) -> Keys: ...
    def register(
        self, keys: Keys, *, progress: Optional[Callable[[int, int], object]] = None
    ) -> Registration: ...
    def predict(self, model: str, rows: Rows, keys: Keys) -> Answers: ...
    def predict_clear(self, model: str, rows: Rows) -> Answers: ...
    def budget(self, model: str) -> Budget: ...
    def delete_key(self, key: Union[Keys, str]) -> None: ...
    def has_key(self, key: Union[Keys, str]) -> bool: ...
