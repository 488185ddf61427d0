"""Typed errors. Raised deep inside; turned into user messages only at the UI/API/CLI edge.

Kept free of torch so the UI layer can import it.
"""
from __future__ import annotations


class VisageError(Exception):
    """Base class for every error Visage expects and can explain to a user."""

    #: short machine-readable code, used by the API and for translated UI messages
    code = "error"


class InvalidRequest(VisageError, ValueError):
    """A request field is out of range or malformed."""

    code = "invalid_request"

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class ModelNotFound(VisageError, LookupError):
    code = "model_not_found"


class UnsupportedModel(VisageError):
    """The file exists but Visage cannot (or will not) load it; the message says why."""

    code = "unsupported_model"


class MissingComponent(VisageError):
    """A piece a model needs (tokenizer, VAE, text encoder, config) is not on disk.

    The message names the file and how to get it.
    """

    code = "missing_component"


class ModelLoadError(VisageError):
    """A model file is corrupt, truncated or does not match its family."""

    code = "model_load_error"


class NotReady(VisageError):
    """No model is loaded yet (still loading, or the last load failed)."""

    code = "not_ready"


class Interrupted(VisageError):
    """The user pressed Interrupt; the job stopped at a step boundary."""

    code = "interrupted"

    def __init__(self, step: int = 0, total: int = 0):
        super().__init__(f"interrupted at step {step}/{total}")
        self.step = step
        self.total = total


class QueueFull(VisageError):
    code = "queue_full"


class DownloadError(VisageError):
    code = "download_error"


class UnsafeName(VisageError, ValueError):
    """A user-supplied name tried to leave its folder (../, absolute path, NUL, symlink out)."""

    code = "unsafe_name"


class OutOfMemory(VisageError):
    """The device (or the machine) ran out of memory during a job; the memory has been released."""

    code = "out_of_memory"
