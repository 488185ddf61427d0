"""Prompt-embedding cache: text-encoder outputs keyed by everything that changes them.

``CacheKey``, ``text_encoder_state``, ``CacheStats`` and ``WarmReport`` are torch-free and
imported eagerly; ``EmbeddingCache`` and ``Embeds`` import torch on first access.

Typical use (the compute takes the model's device lock itself; the cache lock is never held
while it runs)::

    key = CacheKey(model_hash, text_encoder_state(te_loras), clip_skip, prompt, negative,
                   options={"family": "sd15", "do_cfg": True, "te_dtype": "float16"})
    embeds = cache.get_or_compute(key, compute, device=device, dtype=dtype)
    image = pipe(**embeds, ...)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from modules.embedding_cache.key import CacheKey, text_encoder_state
from modules.embedding_cache.stats import CacheStats, WarmReport

if TYPE_CHECKING:
    from modules.embedding_cache.cache import EmbeddingCache
    from modules.embedding_cache.embeds import Embeds

__all__ = ["CacheKey", "CacheStats", "EmbeddingCache", "Embeds", "SkipWarm", "WarmReport", "text_encoder_state"]


def __getattr__(name: str):
    if name == "EmbeddingCache":
        from modules.embedding_cache.cache import EmbeddingCache

        return EmbeddingCache
    if name == "SkipWarm":
        from modules.embedding_cache.cache import SkipWarm

        return SkipWarm
    if name == "Embeds":
        from modules.embedding_cache.embeds import Embeds

        return Embeds
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
