from typing import Any, Sequence

from ._native import *  # noqa: F401,F403
from ._native import Answers, Client as _Client, Keys

__version__: str

def rows_of(rows: Any) -> list[list[float]]: ...

class Client(_Client):
    def predict(self, model: str, rows: Any, keys: Keys) -> Answers: ...  # 2-D array or rows
    def predict_clear(self, model: str, rows: Any) -> Answers: ...
