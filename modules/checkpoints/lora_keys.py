"""LoRA key namings: kohya/A1111, diffusers/PEFT, ComfyUI ``diffusion_model.``, cloneofsimo, LyCORIS.

Only names: which suffix means which weight of a layer, which prefix means which pipeline component.
Used by the LoRA identification (:mod:`modules.lora.formats`), the patcher's key mapping and the
registry (to tell a LoRA put among checkpoints). Torch-free.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping

# (suffix, kind); longest suffixes first so ".lora_down.weight" wins over ".weight"-like endings
SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    (".lora_magnitude_vector.weight", "dora_peft"), (".lora_magnitude_vector", "dora_peft"),
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),
    (".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_A.bias", "bias"), (".lora_B.bias", "bias"),
    (".dora_scale", "dora"), (".alpha", "alpha"),
    (".hada_w1_a", "hada"), (".hada_w1_b", "hada"), (".hada_w2_a", "hada"), (".hada_w2_b", "hada"),
    (".hada_t1", "hada"), (".hada_t2", "hada"),
    (".lokr_w1_a", "lokr"), (".lokr_w1_b", "lokr"), (".lokr_w2_a", "lokr"), (".lokr_w2_b", "lokr"),
    (".lokr_w1", "lokr"), (".lokr_w2", "lokr"), (".lokr_t2", "lokr"),
    (".oft_blocks", "oft"), (".oft_diag", "oft"), (".oft_R", "oft"),
    (".a1.weight", "glora"), (".a2.weight", "glora"), (".b1.weight", "glora"), (".b2.weight", "glora"),
    (".on_input", "ia3"), (".diff_b", "full"), (".diff", "full"), (".w_norm", "norm"), (".b_norm", "norm"),
)
DOWN_KINDS = ("down", "A")
UP_KINDS = ("up", "B")

KOHYA_UNET = "lora_unet_"
KOHYA_TE = ("lora_te_", "lora_te1_", "lora_te2_")
#: pipeline text-encoder component -> the kohya prefixes naming it
KOHYA_TE_BY_COMPONENT = {"text_encoder": ("lora_te_", "lora_te1_"), "text_encoder_2": ("lora_te2_",)}
DIFFUSION_MODEL = "diffusion_model."
PEFT_WRAPPER = "base_model.model."
DIFFUSERS_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.", "transformer.")
#: diffusers' older attention-processor names of text-encoder projections -> transformers' names
LEGACY_TE = ((".to_q", ".q_proj"), (".to_k", ".k_proj"), (".to_v", ".v_proj"), (".to_out", ".out_proj"))
#: diffusers safetensors metadata holding PEFT's LoraConfig per component (``unet.r``, ``unet.lora_alpha``)
ADAPTER_METADATA_KEY = "lora_adapter_metadata"

#: cloneofsimo lora_diffusion (2022): ``unet:{i}:up``, ``text_encoder:{i}:down``
CLONEOFSIMO_KEY = re.compile(r"^(unet|text_encoder):(\d+):(up|down)$")
CLONEOFSIMO_ANY_KEY = re.compile(r"^(unet|text_encoder(_2)?):\d+:(up|down)$")  # also SDXL-style variants

#: what makes a file among checkpoints a LoRA (any key containing a marker or starting with a prefix)
LORA_KEY_MARKERS = (
    ".lora_up.", ".lora_down.", ".lora_A.", ".lora_B.", ".lora.up.", ".lora.down.", "lora_magnitude_vector",
    ".hada_w1_", ".hada_w2_", ".lokr_w1", ".lokr_w2", ".oft_blocks", ".oft_diag",
)
LORA_KEY_PREFIXES = (KOHYA_UNET, *KOHYA_TE, "lora_transformer_", "lycoris_")


def split_key(key: str) -> tuple[str, str]:
    """``(module, kind)`` of a LoRA key; kind ``"unknown"`` when the suffix is not a known one."""
    for suffix, kind in SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    return key, "unknown"


def strip_prefix(module: str) -> tuple[str, str]:
    """``(prefix, rest)`` of a layer path: a kohya, ``diffusion_model.`` or diffusers component prefix, or ""."""
    for p in (KOHYA_UNET,) + KOHYA_TE:
        if module.startswith(p):
            return p, module[len(p):]
    if module.startswith(DIFFUSION_MODEL):
        return DIFFUSION_MODEL, module[len(DIFFUSION_MODEL):]
    if module.startswith(PEFT_WRAPPER):
        return "", module[len(PEFT_WRAPPER):]
    for p in DIFFUSERS_PREFIXES:
        if module.startswith(p):
            return p, module[len(p):]
    return "", module


def kohya_name(prefix: str, module: str) -> str:
    """kohya's name of a module path: ``prefix`` + the path with ``_`` for ``.``."""
    return prefix + module.replace(".", "_")


def adapter_metadata(metadata: Mapping[str, str]) -> dict:
    """diffusers' ``lora_adapter_metadata`` JSON object (empty when absent or malformed)."""
    raw = metadata.get(ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
