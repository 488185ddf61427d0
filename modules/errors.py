"""Typed errors. Raised deep inside; turned into user messages only at the UI/API/CLI edge.

Messages by key (:mod:`modules.messages`): an error raised with a :class:`~modules.messages.Message`
(``ModelNotFound(Message("…", name=x))``, ``InvalidRequest("steps", Message("rule.between", low=1, high=150))``)
carries ``key`` and ``params``; ``str(exc)`` is its English text. An error raised with plain text has
``key`` None and is shown as it is, inside the page's translated frame (``error.<code>``).

Kept free of torch so the UI layer can import it.
"""
from __future__ import annotations

from typing import Any

from modules.messages import Message


class VisageError(Exception):
    """Base class for every error Visage expects and can explain to a user."""

    #: short machine-readable code, used by the API and for translated UI messages
    code = "error"

    @property
    def message(self) -> Message | None:
        """The keyed message this error says (``str(exc)`` is its English), or None for free-form text."""
        first = self.args[0] if len(self.args) == 1 else None
        return first if isinstance(first, Message) else None

    @property
    def key(self) -> str | None:
        message = self.message
        return message.key if message is not None else None

    @property
    def params(self) -> dict[str, Any]:
        message = self.message
        return dict(message.params) if message is not None else {}


class InvalidRequest(VisageError, ValueError):
    """A request field is out of range or malformed: ``InvalidRequest(field, Message("rule.…", **params))``
    (or free-form ``rule`` text). ``key``/``params`` are the rule's; ``str(exc)`` is ``"field: rule"``."""

    code = "invalid_request"

    def __init__(self, field: str, rule: str | Message):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule

    @property
    def message(self) -> Message | None:
        return self.rule if isinstance(self.rule, Message) else None


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
        super().__init__(Message("interrupted.at_step", step=step, total=total))
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


class UnsupportedCapability(VisageError):
    """The model's backend cannot do what the request asks (e.g. inpainting on an edge package)."""

    code = "unsupported_capability"

    def __init__(self, capability: str, model: str, backend: str):
        super().__init__(Message("capability.unsupported", model=model, backend=backend, capability=capability))
        self.capability = capability
        self.model = model
        self.backend = backend
