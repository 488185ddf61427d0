"""The cached value: exactly what a pipeline's ``prompt_embeds``-style arguments take.

SD1.5: ``prompt_embeds``, ``negative_prompt_embeds``; SDXL adds ``pooled_prompt_embeds`` and
``negative_pooled_prompt_embeds``; Z-Image passes lists of variable-length 2-D tensors (an empty
list for the negative when CFG is off). ``None`` values are kept as ``None``.
"""
from __future__ import annotations

from typing import Union

import torch

from modules.errors import InvalidRequest

Embeds = dict[str, Union[torch.Tensor, list[torch.Tensor], None]]

#: How each value is laid out, recorded next to the tensors in a file:
#: ``{"name": {"kind": "tensor"}}``, ``{"kind": "list", "len": n}`` or ``{"kind": "none"}``.
Structure = dict[str, dict[str, object]]


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or "." in name or name.startswith("__"):
        raise InvalidRequest("embeds", f"bad entry name {name!r} (non-empty, no '.', no leading '__')")
    return name


def _cpu_copy(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise InvalidRequest("embeds", f"{name} must hold tensors, got {type(value).__name__}")
    # copy=True: the cache must never share storage with the caller's tensor.
    return value.detach().to("cpu", copy=True).contiguous()


def to_cpu(embeds: Embeds) -> Embeds:
    """A detached, contiguous CPU copy that shares no storage with ``embeds``."""
    if not isinstance(embeds, dict):
        raise InvalidRequest("embeds", f"must be a dict, got {type(embeds).__name__}")
    out: Embeds = {}
    for name, value in embeds.items():
        _check_name(name)
        if value is None:
            out[name] = None
        elif isinstance(value, list | tuple):
            out[name] = [_cpu_copy(f"{name}[{i}]", t) for i, t in enumerate(value)]
        else:
            out[name] = _cpu_copy(name, value)
    return out


def nbytes(embeds: Embeds) -> int:
    """Sum of the tensors' byte sizes."""
    total = 0
    for value in embeds.values():
        tensors = value if isinstance(value, list) else [value] if value is not None else []
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def materialize(embeds: Embeds, device: torch.device | str | None, dtype: torch.dtype | None) -> Embeds:
    """Fresh copies on ``device`` / in ``dtype`` (``None``: keep); new dict and lists."""

    def copy(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype, copy=True)

    out: Embeds = {}
    for name, value in embeds.items():
        if value is None:
            out[name] = None
        elif isinstance(value, list):
            out[name] = [copy(t) for t in value]
        else:
            out[name] = copy(value)
    return out


def flatten(embeds: Embeds) -> tuple[dict[str, torch.Tensor], Structure]:
    """Tensors under flat names (``prompt_embeds.0`` for list items) plus the structure."""
    tensors: dict[str, torch.Tensor] = {}
    structure: Structure = {}
    for name, value in embeds.items():
        if value is None:
            structure[name] = {"kind": "none"}
        elif isinstance(value, list):
            structure[name] = {"kind": "list", "len": len(value)}
            for i, t in enumerate(value):
                tensors[f"{name}.{i}"] = t
        else:
            structure[name] = {"kind": "tensor"}
            tensors[name] = value
    return tensors, structure


def unflatten(tensors: dict[str, torch.Tensor], structure: Structure) -> Embeds:
    """Inverse of :func:`flatten`; raises ``ValueError`` if they do not fit together."""
    if not isinstance(structure, dict):
        raise ValueError("structure is not an object")
    out: Embeds = {}
    expected: set[str] = set()
    for name, spec in structure.items():
        _check_name(name)
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if kind == "none":
            out[name] = None
        elif kind == "tensor":
            expected.add(name)
            out[name] = tensors[name] if name in tensors else None
        elif kind == "list":
            length = spec.get("len")
            if isinstance(length, bool) or not isinstance(length, int) or length < 0:
                raise ValueError(f"bad list length for {name}")
            names = [f"{name}.{i}" for i in range(length)]
            expected.update(names)
            out[name] = [tensors[n] for n in names if n in tensors]
        else:
            raise ValueError(f"unknown kind for {name}: {kind!r}")
    if expected != set(tensors):
        raise ValueError("tensor names do not match the recorded structure")
    return out
