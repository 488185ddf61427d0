"""Status values shown by the page and the API. Torch-free (``str`` enums: they compare equal to their text)."""
from __future__ import annotations

from enum import Enum


class ModelState(str, Enum):
    """The model manager's state, as the page's status line and ``/healthz`` show it."""

    IDLE = "idle"
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value
