"""Choosing the device and dtype. The only place that asks torch what hardware there is."""
from __future__ import annotations

import torch

from modules.families import Family

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_dtype(requested: str, device: torch.device, family: Family | None) -> torch.dtype:
    """``auto``: fp32 on CPU; on CUDA bf16 for Z-Image (trained in bf16), fp16 for SD families."""
    if requested != "auto":
        return _DTYPES[requested]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if family == Family.ZIMAGE else torch.float16


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}.get(dtype, str(dtype))


def empty_device_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def vram_info(device: torch.device) -> dict | None:
    """GPU memory of ``device`` in bytes, or None when it is not a CUDA device.

    ``allocated``/``reserved``/``peak``: what torch holds in this process; ``free``/``total``: the card as the
    driver reports it (other processes included).
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    return {"name": torch.cuda.get_device_name(index), "allocated": int(torch.cuda.memory_allocated(index)),
            "reserved": int(torch.cuda.memory_reserved(index)),
            "peak": int(torch.cuda.max_memory_allocated(index)), "free": int(free), "total": int(total)}
