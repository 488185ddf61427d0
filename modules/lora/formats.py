"""What a LoRA file is, from its key names, shapes and metadata only. Torch-free.

Formats told apart (names as in ``LoraFormat``):

* ``kohya``: kohya-ss / A1111 keys ``lora_unet_*``, ``lora_te_*``, ``lora_te1_*``/``lora_te2_*`` with
  ``.lora_down.weight``/``.lora_up.weight`` and an optional ``.alpha`` (also LoCon on conv layers).
* ``diffusers``: diffusers/PEFT keys ``unet.*``, ``text_encoder.*``, ``text_encoder_2.*``, ``transformer.*``
  (or bare module names) with ``.lora_A.weight``/``.lora_B.weight``; alpha from diffusers' safetensors
  metadata when present. Older diffusers attention-processor keys (``to_q_lora.down.weight``) count too.
* ``diffusion-model``: ComfyUI/ai-toolkit ``diffusion_model.*`` keys (Z-Image LoRAs such as AWPortrait-Z).
* ``lycoris-loha``, ``lycoris-lokr``, ``lycoris-other`` (LoCon-Tucker ``lora_mid``, OFT, GLoRA, IA3, full, norm).
* ``cloneofsimo``: the 2022 ``lora_diffusion`` format (``unet:{i}:up``, ``text_encoder:{i}:down``).

The family a LoRA targets is inferred from key structure first (Z-Image layer names, a second text
encoder), then from real-model widths (cross-attention context 768/1024/2048, CLIP width 768/1024), then
from kohya/modelspec metadata, and last from naming habits (sgm ``input_blocks`` names → SDXL).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from modules.checkpoints.lora_keys import (
    CLONEOFSIMO_KEY, DOWN_KINDS, KOHYA_TE, KOHYA_UNET, adapter_metadata, split_key, strip_prefix,
)
from modules.errors import UnsupportedModel
from modules.families import Family
from modules.messages import Message


class LoraError(UnsupportedModel):
    """A LoRA cannot be used (format, family mismatch, or it matches nothing); the message says why."""

    code = "lora_error"


class LoraFormat:
    KOHYA = "kohya"
    DIFFUSERS = "diffusers"
    DIFFUSION_MODEL = "diffusion-model"
    LOHA = "lycoris-loha"
    LOKR = "lycoris-lokr"
    LYCORIS_OTHER = "lycoris-other"
    CLONEOFSIMO = "cloneofsimo"
    PICKLE = "pickle"
    UNKNOWN = "unknown"


#: human names for messages
FORMAT_LABELS = {
    LoraFormat.KOHYA: "kohya/A1111",
    LoraFormat.DIFFUSERS: "diffusers/PEFT",
    LoraFormat.DIFFUSION_MODEL: "ComfyUI diffusion_model",
    LoraFormat.LOHA: "LyCORIS LoHa",
    LoraFormat.LOKR: "LyCORIS LoKr",
    LoraFormat.LYCORIS_OTHER: "LyCORIS",
    LoraFormat.CLONEOFSIMO: "cloneofsimo lora_diffusion (2022)",
    LoraFormat.PICKLE: "pickle",
    LoraFormat.UNKNOWN: "unknown",
}

FAMILY_LABELS = {Family.SD15: "SD 1.5", Family.SDXL: "SDXL", Family.ZIMAGE: "Z-Image"}

SD2_REASON = "made for Stable Diffusion 2.x, which Visage does not support"
PICKLE_REASON = "pickle LoRA files (.pt/.ckpt) are not loaded; convert it to .safetensors"
LOHA_REASON = ("LyCORIS LoHa is not supported: diffusers 0.42 cannot load LoHa weights "
               "(merge it into the checkpoint with the LyCORIS tools, or re-extract it as a plain LoRA)")
LOKR_SD_REASON = ("LyCORIS LoKr is not supported for SD 1.5/SDXL: diffusers 0.42 loads LoKr only for "
                  "Z-Image and Flux.2")
DORA_REASON = ("DoRA LoRAs with kohya 'dora_scale' keys are not supported: diffusers 0.42 drops the "
               "magnitude vectors, so the result would be wrong")
CLONEOFSIMO_NON_SD15 = "cloneofsimo lora_diffusion (2022) files are supported for SD 1.5 only"
DIFFUSION_MODEL_SD_REASON = ("ComfyUI-style 'diffusion_model.' LoRAs are supported for Z-Image only; "
                             "for SD 1.5/SDXL use the kohya or diffusers version of this LoRA")

_LYCORIS_OTHER_KINDS = {"mid": "LoCon-Tucker (lora_mid)", "oft": "OFT", "glora": "GLoRA", "ia3": "IA3",
                        "full": "full-weight diff", "norm": "norm"}

_ZIMAGE_STRUCTURE = re.compile(
    r"(^|[._])(layers|noise_refiner|context_refiner)[._]\d+[._](attention|feed_forward|adaLN_modulation)"
    r"|(^|[._])(all_x_embedder|all_final_layer|cap_embedder)[._]")
_SGM_NAMES = re.compile(r"(^|[._])(input_blocks|middle_block|output_blocks)[._]")
_ATTN2_KV = re.compile(r"attn2[._]to_[kv]$")
_TE_Q = re.compile(r"self_attn[._]q_proj$")
_TRANSFORMER_BLOCK_INDEX = re.compile(r"transformer_blocks[._](\d+)[._]")


@dataclass
class LoraInfo:
    """What Visage knows about one LoRA file without loading its weights."""

    name: str  # what users type in <lora:NAME:w>: the file name without suffix (A1111)
    path: Path
    format: str  # a LoraFormat value
    family: Family | None  # the model family it was made for, None when unknown
    rank: int | None  # the largest rank found
    has_text_encoder: bool
    has_unet: bool  # touches the denoiser (U-Net or Z-Image DiT)
    alpha_present: bool
    hash: str | None = None  # A1111 "Lora hashes" value: first 12 hex of the addnet hash (filled lazily)
    supported: bool = True
    reason: str = ""  # why unsupported
    sha256: str | None = None  # full-file sha256 (filled lazily)
    addnet_sha256: str | None = None  # sha256 of the safetensors data section (filled lazily)
    size_bytes: int = 0
    alias: str | None = None  # kohya ss_output_name, A1111 accepts it in prompts too
    rel_name: str = ""  # path relative to its LoRA folder, without suffix
    text_encoders: tuple[str, ...] = ()  # pipeline components it touches: text_encoder, text_encoder_2
    notes: tuple[str, ...] = ()  # non-fatal remarks shown to users
    tensor_count: int = 0

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash}]" if self.hash else self.name

    def to_dict(self) -> dict:
        return {
            "name": self.name, "path": str(self.path), "format": self.format,
            "family": self.family.value if self.family else None, "rank": self.rank,
            "has_text_encoder": self.has_text_encoder, "has_unet": self.has_unet,
            "alpha_present": self.alpha_present, "hash": self.hash, "supported": self.supported,
            "reason": self.reason, "size_bytes": self.size_bytes, "alias": self.alias,
            "rel_name": self.rel_name, "notes": list(self.notes), "title": self.title,
        }


@dataclass
class KeyAnalysis:
    """The verdict on a set of keys (the torch-free part of LoraInfo)."""

    format: str
    family: Family | None
    rank: int | None = None
    has_text_encoder: bool = False
    has_unet: bool = False
    alpha_present: bool = False
    supported: bool = True
    reason: str = ""
    text_encoders: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    family_evidence: str = ""


def _is_te_prefix(prefix: str, rest: str) -> bool:
    return prefix in KOHYA_TE or prefix in ("text_encoder.", "text_encoder_2.") or (
        prefix == "" and rest.startswith(("text_model.", "text_encoders.")))


def _family_from_metadata(metadata: Mapping[str, str]) -> tuple[Family | None, bool]:
    """(family, is_sd2) from kohya ``ss_*`` or ``modelspec.architecture`` metadata."""
    arch = str(metadata.get("modelspec.architecture", "")).lower()
    base = str(metadata.get("ss_base_model_version", "")).lower()
    if "z-image" in arch or "zimage" in arch or "z_image" in base:
        return Family.ZIMAGE, False
    if arch.startswith("stable-diffusion-xl") or base.startswith("sdxl"):
        return Family.SDXL, False
    if arch.startswith("stable-diffusion-v2") or base.startswith("sd_v2") or metadata.get("ss_v2") == "True":
        return None, True
    if arch.startswith("stable-diffusion-v1") or base.startswith("sd_v1"):
        return Family.SD15, False
    return None, False


def _diffusers_metadata_alpha(metadata: Mapping[str, str]) -> bool:
    return any(k.endswith("lora_alpha") for k in adapter_metadata(metadata))


def _group_keys(keys) -> tuple[dict[str, int], dict[str, set[str]], list[str]]:
    """(count per kind, kinds per module, keys of no known kind)."""
    kinds: dict[str, int] = {}
    modules: dict[str, set[str]] = {}
    unknown: list[str] = []
    for k in keys:
        module, kind = split_key(k)
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "unknown":
            unknown.append(k)
        else:
            modules.setdefault(module, set()).add(kind)
    return kinds, modules, unknown


def _parts(modules) -> tuple[bool, bool, set[str]]:
    """(touches the denoiser, touches a text encoder, text-encoder components)."""
    te_components = set()
    has_unet = has_te = False
    for m in modules:
        prefix, rest = strip_prefix(m)
        if _is_te_prefix(prefix, rest):
            has_te = True
            te_components.add("text_encoder_2" if prefix in ("lora_te2_", "text_encoder_2.") else "text_encoder")
        else:
            has_unet = True
    return has_unet, has_te, te_components


def _rank(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    rank = None
    for k, shape in shapes.items():
        _, kind = split_key(k)
        if kind in DOWN_KINDS and shape:
            rank = max(rank or 0, int(shape[0]))
        elif kind == "hada" and k.endswith(".hada_w1_b") and shape:
            rank = max(rank or 0, int(shape[0]))
        elif kind == "lokr" and k.endswith(".lokr_w2_b") and shape:
            rank = max(rank or 0, int(shape[0]))
    return rank


def _format_of(kinds: Mapping[str, int], prefixes: set[str]) -> str:
    if "hada" in kinds:
        return LoraFormat.LOHA
    if "lokr" in kinds:
        return LoraFormat.LOKR
    if any(kind in kinds for kind in _LYCORIS_OTHER_KINDS):
        return LoraFormat.LYCORIS_OTHER
    if "diffusion_model." in prefixes:
        return LoraFormat.DIFFUSION_MODEL
    if prefixes & {KOHYA_UNET, *KOHYA_TE}:
        return LoraFormat.KOHYA
    if kinds.get("A") or kinds.get("down"):
        return LoraFormat.DIFFUSERS
    return LoraFormat.UNKNOWN


def _refusal(result: KeyAnalysis, kinds: Mapping[str, int], prefixes: set[str], unknown: list[str],
             sd2: bool) -> str | None:
    """Why a LoRA of this shape cannot be used (None when it can)."""
    fmt, family = result.format, result.family
    if unknown:
        return f"unrecognised LoRA keys ({len(unknown)}, e.g. {', '.join(unknown[:3])})"
    if sd2:
        return SD2_REASON
    if fmt == LoraFormat.UNKNOWN:
        return "no LoRA weight pairs found (unknown layout)"
    if fmt == LoraFormat.LOHA:
        return LOHA_REASON
    if fmt == LoraFormat.LYCORIS_OTHER:
        names = sorted({_LYCORIS_OTHER_KINDS[k] for k in kinds if k in _LYCORIS_OTHER_KINDS})
        return f"LyCORIS {', '.join(names)} weights are not supported by diffusers 0.42"
    if fmt == LoraFormat.LOKR and family not in (None, Family.ZIMAGE):
        return LOKR_SD_REASON
    if "dora" in kinds:
        return DORA_REASON
    if fmt == LoraFormat.DIFFUSION_MODEL and family not in (None, Family.ZIMAGE):
        return DIFFUSION_MODEL_SD_REASON
    if "lora_transformer_" in str(prefixes):
        return "kohya 'lora_transformer_' keys (Flux/SD3-style) are not supported"
    return None


def analyze_keys(shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str] | None = None) -> KeyAnalysis:
    """Tell format, family, rank and support of a LoRA from its tensor names/shapes and metadata."""
    metadata = metadata or {}
    keys = list(shapes)
    if not keys:
        return KeyAnalysis(LoraFormat.UNKNOWN, None, supported=False, reason="the file holds no tensors")
    if any(CLONEOFSIMO_KEY.match(k) for k in keys):
        return _analyze_cloneofsimo(shapes, metadata)

    kinds, modules, unknown = _group_keys(keys)
    prefixes = {strip_prefix(m)[0] for m in modules}
    has_unet, has_te, te_components = _parts(modules)
    alpha_present = "alpha" in kinds or _diffusers_metadata_alpha(metadata)
    family, evidence, sd2 = _infer_family(shapes, modules, metadata, te_components)
    fmt = _format_of(kinds, prefixes)
    result = KeyAnalysis(fmt, family, rank=_rank(shapes), has_text_encoder=has_te, has_unet=has_unet,
                         alpha_present=alpha_present, text_encoders=tuple(sorted(te_components)),
                         family_evidence=evidence)
    reason = _refusal(result, kinds, prefixes, unknown, sd2)
    if reason:
        result.supported, result.reason = False, reason
        if sd2:
            result.family = None
        return result
    if not alpha_present and fmt == LoraFormat.DIFFUSERS and family != Family.ZIMAGE:
        result.notes.append(Message("note.lora_no_alpha"))
    if "dora_peft" in kinds:
        result.notes.append(Message("note.lora_dora"))
    if fmt == LoraFormat.KOHYA and any(len(s) == 4 for k, s in shapes.items() if split_key(k)[1] == "down"):
        result.notes.append(Message("note.lora_locon"))
    if has_te and family == Family.ZIMAGE:
        result.notes.append(Message("note.lora_zimage_te"))
    return result


def _infer_family(shapes: Mapping[str, tuple[int, ...]], modules: Mapping[str, set[str]],
                  metadata: Mapping[str, str], te_components: set[str]) -> tuple[Family | None, str, bool]:
    """(family, evidence, is_sd2)."""
    rests = [strip_prefix(m) for m in modules]
    if any(_ZIMAGE_STRUCTURE.search(rest) for _, rest in rests):
        return Family.ZIMAGE, "Z-Image layer names", False
    if "text_encoder_2" in te_components:
        return Family.SDXL, "second text encoder", False

    # real-model widths: cross-attention context and CLIP width
    for k, shape in shapes.items():
        module, kind = split_key(k)
        if kind not in DOWN_KINDS or len(shape) < 2:
            continue
        prefix, rest = strip_prefix(module)
        if _ATTN2_KV.search(rest.replace(".processor.", ".")):
            width = int(shape[1])
            if width == 768:
                return Family.SD15, "cross-attention context 768", False
            if width == 2048:
                return Family.SDXL, "cross-attention context 2048", False
            if width == 1024:
                return None, "cross-attention context 1024", True
        if _is_te_prefix(prefix, rest) and _TE_Q.search(rest.replace(".", "_")):
            width = int(shape[1])
            if width == 1024:
                return None, "text encoder width 1024 (OpenCLIP-H)", True

    meta_family, meta_sd2 = _family_from_metadata(metadata)
    if meta_sd2:
        return None, "metadata", True
    if meta_family is not None:
        return meta_family, "metadata", False

    if any(p == "lora_unet_" and _SGM_NAMES.search(rest) for p, rest in rests):
        return Family.SDXL, "kohya SDXL (sgm) block names", False
    if any(p in ("lora_te_",) for p, _ in rests):
        return Family.SD15, "single kohya text encoder", False
    for _, rest in rests:
        m = _TRANSFORMER_BLOCK_INDEX.search(rest)
        if m and int(m.group(1)) >= 2:
            return Family.SDXL, "transformer depth > 2", False
    return None, "", False


def _analyze_cloneofsimo(shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str]) -> KeyAnalysis:
    parts = {"unet": 0, "text_encoder": 0}
    rank = None
    others = []
    context = None
    te_width = None
    for k, shape in shapes.items():
        m = CLONEOFSIMO_KEY.match(k)
        if not m:
            others.append(k)
            continue
        parts[m.group(1)] += 1
        if m.group(3) == "down" and len(shape) == 2:
            rank = max(rank or 0, int(shape[0]))
            if m.group(1) == "text_encoder":
                te_width = int(shape[1])
        if m.group(1) == "unet" and m.group(3) == "down" and len(shape) == 2 and context is None:
            up = shapes.get(k[: -len("down")] + "up")
            # attn2.to_k/to_v read the text context (in != out); GEGLU proj widens 8x; the rest are square
            if up and len(up) == 2 and int(up[0]) not in (int(shape[1]), 8 * int(shape[1])):
                context = int(shape[1])
    embeds = [k for k in others if metadata.get(k) == "<embed>"]
    strange = [k for k in others if k not in embeds]
    family = None
    evidence = ""
    if context == 768 or te_width == 768:
        family, evidence = Family.SD15, "width 768"
    elif context == 1024 or te_width == 1024:
        result = KeyAnalysis(LoraFormat.CLONEOFSIMO, None, rank=rank, has_text_encoder=parts["text_encoder"] > 0,
                             has_unet=parts["unet"] > 0, supported=False, reason=SD2_REASON)
        return result
    result = KeyAnalysis(LoraFormat.CLONEOFSIMO, family, rank=rank, has_text_encoder=parts["text_encoder"] > 0,
                         has_unet=parts["unet"] > 0, alpha_present=False,
                         text_encoders=("text_encoder",) if parts["text_encoder"] else (), family_evidence=evidence)
    if strange:
        result.supported = False
        result.reason = f"cloneofsimo lora_diffusion file with unexpected keys (e.g. {', '.join(strange[:3])})"
        return result
    result.notes.append(Message("note.lora_cloneofsimo"))
    if embeds:
        result.notes.append(Message("note.lora_embedded_tokens", tokens=", ".join(sorted(embeds))))
    return result


def compatibility_problem(info: LoraInfo, family: Family | str) -> str | None:
    """Why ``info`` cannot be applied to a model of ``family`` (None when it can)."""
    family = Family(family)
    if not info.supported:
        return f"LoRA '{info.name}': {info.reason}"
    if info.family is not None and info.family != family:
        return (f"LoRA '{info.name}' is made for {FAMILY_LABELS[info.family]}, but the loaded model is "
                f"{FAMILY_LABELS[family]}")
    if info.format == LoraFormat.CLONEOFSIMO and family != Family.SD15:
        return f"LoRA '{info.name}': {CLONEOFSIMO_NON_SD15}"
    if info.format in (LoraFormat.DIFFUSION_MODEL, LoraFormat.LOKR) and family != Family.ZIMAGE:
        reason = DIFFUSION_MODEL_SD_REASON if info.format == LoraFormat.DIFFUSION_MODEL else LOKR_SD_REASON
        return f"LoRA '{info.name}': {reason}"
    return None


def check_compatible(info: LoraInfo, family: Family | str) -> None:
    """Raise LoraError when ``info`` cannot be applied to a model of ``family``."""
    problem = compatibility_problem(info, family)
    if problem:
        raise LoraError(problem)


def info_from_analysis(path: Path, name: str, analysis: KeyAnalysis, *, size_bytes: int = 0,
                       metadata: Mapping[str, str] | None = None, tensor_count: int = 0,
                       rel_name: str = "") -> LoraInfo:
    metadata = metadata or {}
    alias = metadata.get("ss_output_name") or None
    return LoraInfo(name=name, path=Path(path), format=analysis.format, family=analysis.family,
                    rank=analysis.rank, has_text_encoder=analysis.has_text_encoder, has_unet=analysis.has_unet,
                    alpha_present=analysis.alpha_present, supported=analysis.supported, reason=analysis.reason,
                    size_bytes=size_bytes, alias=alias, rel_name=rel_name or name,
                    text_encoders=analysis.text_encoders, notes=tuple(analysis.notes), tensor_count=tensor_count)


def inspect_lora(path: str | Path, name: str | None = None, rel_name: str = "") -> LoraInfo:
    """Describe one LoRA file from its safetensors header (weights are never read)."""
    from modules.checkpoints.header import SafetensorsHeaderError, read_header

    path = Path(path)
    name = name or path.stem
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if path.suffix.lower() in (".pt", ".ckpt", ".pth", ".bin"):
        return LoraInfo(name=name, path=path, format=LoraFormat.PICKLE, family=None, rank=None,
                        has_text_encoder=False, has_unet=False, alpha_present=False, supported=False,
                        reason=PICKLE_REASON, size_bytes=size, rel_name=rel_name or name)
    try:
        header = read_header(path)
    except SafetensorsHeaderError as exc:
        return LoraInfo(name=name, path=path, format=LoraFormat.UNKNOWN, family=None, rank=None,
                        has_text_encoder=False, has_unet=False, alpha_present=False, supported=False,
                        reason=f"unreadable safetensors file: {exc}", size_bytes=size, rel_name=rel_name or name)
    analysis = analyze_keys(header.shapes(), header.metadata)
    return info_from_analysis(path, name, analysis, size_bytes=size, metadata=header.metadata,
                              tensor_count=len(header.tensors), rel_name=rel_name)


def with_hashes(info: LoraInfo, sha256: str | None, addnet_sha256: str | None) -> LoraInfo:
    """A copy of ``info`` with its hashes filled in."""
    return replace(info, sha256=sha256, addnet_sha256=addnet_sha256,
                   hash=addnet_sha256[:12] if addnet_sha256 else info.hash)
