"""LoRA support: find and identify LoRA files, read ``<lora:...>`` prompt tags, apply LoRAs.

Importing this package is torch-free (formats, scan, prompt). The patcher, which needs torch and
diffusers, lives in ``modules.lora.patcher`` and is imported only where a pipeline is patched.
"""
from __future__ import annotations

from modules.lora.formats import (
    LoraError, LoraFormat, LoraInfo, analyze_keys, check_compatible, compatibility_problem, inspect_lora,
)
from modules.lora.prompt import PromptLora, format_lora_tag, parse_prompt_loras
from modules.lora.scan import ensure_hashes, find_lora, lora_folders, lora_hashes, scan_loras

__all__ = [
    "LoraError", "LoraFormat", "LoraInfo", "PromptLora", "analyze_keys", "check_compatible",
    "compatibility_problem", "ensure_hashes", "find_lora", "format_lora_tag", "inspect_lora",
    "lora_folders", "lora_hashes", "parse_prompt_loras", "scan_loras",
]
