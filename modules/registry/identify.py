"""Tell which family a model belongs to from key names and shapes only. Pure functions, torch-free.

Key names decide first; shapes are used only where names cannot (SD1 vs SD2 U-Net without a text
encoder, the SDXL refiner without its conditioner, inpainting U-Nets). That keeps tiny test models,
whose shapes are small, identifiable exactly like the real ones.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from modules.checkpoints.layouts import (
    DENOISER_PREFIX, LDM_UNET_BLOCKS, LDM_VAE_PREFIX, REFINER_OPENCLIP_PREFIX, SD2_OPENCLIP_PREFIX, SD15_CLIP_PREFIX,
    SD_TEXT_PREFIX, SDXL_CLIP_EMBEDDER, SDXL_EMBEDDERS_PREFIX, SDXL_OPENCLIP_EMBEDDER, ZIMAGE_VAE_PREFIX,
)
from modules.checkpoints.lora_keys import CLONEOFSIMO_ANY_KEY, LORA_KEY_MARKERS, LORA_KEY_PREFIXES
from modules.families import Family

# Reasons shown to users (kept short; the UI shows them next to the file name).
SD2_REASON = "SD 2.x is not supported"
REFINER_REASON = "the SDXL refiner is not supported"
PICKLE_REASON = "pickle checkpoints (.ckpt/.pt/.pth) are loaded only with --allow-pickle; .safetensors is safer"
GGUF_REASON = "GGUF files are not supported"
LORA_REASON = "looks like a LoRA — put it in models/Lora"
VAE_REASON = "looks like a VAE — put it in models/VAE"
EMBEDDING_REASON = "looks like a textual-inversion embedding, not a checkpoint"
CONTROLNET_REASON = "looks like a ControlNet, not a checkpoint"
TEXT_ENCODER_REASON = "looks like a text encoder on its own, not a checkpoint"
UPSCALER_REASON = "looks like an upscaler model, not a checkpoint"
BARE_UNET_REASON = ("looks like a diffusers-format U-Net on its own; use the whole diffusers folder "
                    "or a single-file checkpoint")
INPAINT_CHANNELS = 9  # latents 4 + mask 1 + masked-image latents 4: a dedicated inpainting U-Net
PIX2PIX_REASON = "instruct-pix2pix checkpoints (8 input channels) are not supported"

# Kinds of file (what it is, independent of whether Visage loads it).
CHECKPOINT = "checkpoint"
LORA = "lora"
VAE = "vae"
EMBEDDING = "embedding"
CONTROLNET = "controlnet"
TEXT_ENCODER = "text-encoder"
UPSCALER = "upscaler"
UNKNOWN = "unknown"

DM = DENOISER_PREFIX  # original (A1111/ComfyUI) prefix of the denoiser


@dataclass
class Identification:
    """The verdict on one model. ``family`` is None whenever ``supported`` is False."""

    family: Family | None
    supported: bool
    reason: str = ""
    kind: str = CHECKPOINT
    details: dict = field(default_factory=dict)


def ok(family: Family, reason: str = "", **details) -> Identification:
    return Identification(family=family, supported=True, reason=reason, details=details)


def unsupported(reason: str, kind: str = CHECKPOINT, **details) -> Identification:
    return Identification(family=None, supported=False, reason=reason, kind=kind, details=details)


# ---------------------------------------------------------------------------------------------
# single-file (safetensors) checkpoints
# ---------------------------------------------------------------------------------------------

_EMBEDDING_KEYS = frozenset({"emb_params", "string_to_param", "string_to_token", "clip_l", "clip_g", "name", "step"})
_CONTROLNET_PREFIXES = ("control_model.", "controlnet_cond_embedding.", "input_hint_block.", "controlnet_blocks.",
                        "control_layers.", "control_all_x_embedder.", "control_noise_refiner.")
_VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_TEXT_ENCODER_PREFIXES = ("cond_stage_model.", "conditioner.", "text_model.", "text_encoders.",
                          "model.embed_tokens.", "embed_tokens.")
_ZIMAGE_LAYER = re.compile(r"^layers\.\d+\.adaLN_modulation\.0\.weight$")
_LUMINA_LAYER = re.compile(r"^layers\.\d+\.adaLN_modulation\.1\.weight$")

#: recognisable architectures Visage does not run: (key prefix after stripping ``model.diffusion_model.``, name)
_OTHER_ARCHITECTURES: tuple[tuple[str, str], ...] = (
    ("single_stream_modulation.", "a FLUX.2 model"),
    ("early_stream_modulations.", "a FLUX model"),
    ("distilled_guidance_layer.", "a Chroma (FLUX-based) model"),
    ("double_blocks.", "a FLUX model"),
    ("single_blocks.", "a FLUX model"),
    ("joint_blocks.", "a Stable Diffusion 3 model"),
    ("double_layers.", "an AuraFlow model"),
    ("double_stream_blocks.", "a HiDream model"),
    ("txt_in.individual_token_refiner.", "a HunyuanVideo model"),
    ("transformer_blocks.0.img_mod.", "a Qwen-Image model"),
    ("patchify_proj.", "an LTX-Video model"),
    ("head.modulation", "a Wan video model"),
    ("blocks.0.cross_attn.", "a PixArt/Sana model"),
    ("blocks.0.attn.qkv_x.", "a Mochi video model"),
    ("clip_txt_mapper.", "a Stable Cascade model"),
)


def _any_prefix(keys: Iterable[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def _context_dim(shapes: Mapping[str, Sequence[int]]) -> int | None:
    """Cross-attention context size of an original-layout U-Net (``attn2.to_k`` input features)."""
    for key in sorted(shapes):
        if key.startswith(DM) and key.endswith("attn2.to_k.weight"):
            shape = shapes[key]
            if len(shape) == 2:
                return int(shape[1])
    return None


def _main_dtype(dtypes: Mapping[str, str] | None) -> str | None:
    if not dtypes:
        return None
    return Counter(dtypes.values()).most_common(1)[0][0]


def _identify_sd_unet(keys: list[str], shapes: Mapping[str, Sequence[int]]) -> Identification:
    """Original-layout U-Net checkpoints: SD1.x, SD2.x, SDXL base/refiner and their variants."""
    ctx = _context_dim(shapes)
    in_shape = shapes.get(DM + "input_blocks.0.0.weight", ())
    in_channels = int(in_shape[1]) if len(in_shape) == 4 else None
    details = {"context_dim": ctx, "in_channels": in_channels}
    has_label_emb = _any_prefix(keys, DM + "label_emb.")

    if "edm_mean" in shapes or "edm_std" in shapes:
        return unsupported("looks like Playground v2.5 (SDXL with EDM sampling), which is not supported", **details)
    if _any_prefix(keys, REFINER_OPENCLIP_PREFIX) and not _any_prefix(keys, SDXL_OPENCLIP_EMBEDDER):
        return unsupported(REFINER_REASON, **details)
    if _any_prefix(keys, SDXL_EMBEDDERS_PREFIX):
        family = Family.SDXL
    elif _any_prefix(keys, SD2_OPENCLIP_PREFIX):  # OpenCLIP text encoder: SD 2.x
        return unsupported(SD2_REASON, **details)
    elif _any_prefix(keys, SD15_CLIP_PREFIX):  # CLIPTextModel: SD 1.x
        family = Family.SD15
    elif has_label_emb:  # SDXL U-Net without its text encoders (or the SD2 unCLIP variants)
        if ctx == 1280:
            return unsupported(REFINER_REASON, **details)
        if ctx in (768, 1024):
            return unsupported(SD2_REASON + " (unCLIP variant)", **details)
        family = Family.SDXL
    elif ctx == 1024:
        return unsupported(SD2_REASON, **details)
    elif ctx == 768:
        family = Family.SD15
    elif ctx == 2048:
        family = Family.SDXL
    else:
        return unsupported(f"U-Net checkpoint without a text encoder and an unrecognised context size ({ctx})",
                           kind=UNKNOWN, **details)

    if in_channels == 8:
        return unsupported(PIX2PIX_REASON, **details)
    if in_channels == INPAINT_CHANNELS:
        details["inpainting"] = True
    components = ["unet"]
    if _any_prefix(keys, LDM_VAE_PREFIX):
        components.append("vae")
    if family is Family.SD15 and _any_prefix(keys, SD_TEXT_PREFIX):
        components.append("text_encoder")
    if family is Family.SDXL:
        if _any_prefix(keys, SDXL_CLIP_EMBEDDER):
            components.append("text_encoder")
        if _any_prefix(keys, SDXL_OPENCLIP_EMBEDDER):
            components.append("text_encoder_2")
    return ok(family, components=components, **details)


def _identify_zimage(keys: list[str], core: set[str]) -> Identification | None:
    if not any(_ZIMAGE_LAYER.match(k) for k in core):
        return None
    if not ("x_embedder.weight" in core or _any_prefix(core, "all_x_embedder.", "cap_embedder.")):
        return None
    prefix = DM if _any_prefix(keys, DM) else ""
    layout = "diffusers" if _any_prefix(core, "all_x_embedder.") else "original"
    components = ["transformer"]
    if _any_prefix(keys, ZIMAGE_VAE_PREFIX, LDM_VAE_PREFIX):
        components.append("vae")
    if _any_prefix(keys, "text_encoders.", "text_encoder.", "cond_stage_model."):
        components.append("text_encoder")
    return ok(Family.ZIMAGE, components=components, key_layout=layout, key_prefix=prefix)


def _identify_by_keys(shapes: Mapping[str, Sequence[int]]) -> Identification:
    keys = list(shapes)
    if not keys:
        return unsupported("the file contains no tensors", kind=UNKNOWN)

    if _any_prefix(keys, *LORA_KEY_PREFIXES) or any(m in k for k in keys for m in LORA_KEY_MARKERS) \
            or any(CLONEOFSIMO_ANY_KEY.match(k) for k in keys):
        return unsupported(LORA_REASON, kind=LORA)
    if set(keys) <= _EMBEDDING_KEYS:
        return unsupported(EMBEDDING_REASON, kind=EMBEDDING)

    core = {k[len(DM):] if k.startswith(DM) else k for k in keys}
    if _any_prefix(core, *_CONTROLNET_PREFIXES) or any(".zero_convs." in k or k.startswith("zero_convs.")
                                                       for k in core):
        return unsupported(CONTROLNET_REASON, kind=CONTROLNET)

    if _any_prefix(keys, *(DM + b for b in LDM_UNET_BLOCKS)):
        return _identify_sd_unet(keys, shapes)

    zimage = _identify_zimage(keys, core)
    if zimage is not None:
        return zimage
    if any(_LUMINA_LAYER.match(k) for k in core) and _any_prefix(core, "cap_embedder."):
        return unsupported("looks like a Lumina-Image 2.0 model, which is not supported")
    for prefix, label in _OTHER_ARCHITECTURES:
        if _any_prefix(core, prefix):
            return unsupported(f"looks like {label}, which is not supported")

    if all(k.startswith(_VAE_PREFIXES) for k in keys) or all(k.startswith(LDM_VAE_PREFIX) for k in keys):
        return unsupported(VAE_REASON, kind=VAE)
    if "conv_in.weight" in shapes and _any_prefix(keys, "down_blocks.") and _any_prefix(keys, "time_embedding."):
        return unsupported(BARE_UNET_REASON, kind=UNKNOWN)
    if _any_prefix(keys, *_TEXT_ENCODER_PREFIXES) and not _any_prefix(keys, DM):
        return unsupported(TEXT_ENCODER_REASON, kind=TEXT_ENCODER)
    if "conv_first.weight" in shapes or ("model.0.weight" in shapes and _any_prefix(keys, "model.1.sub.")):
        return unsupported(UPSCALER_REASON, kind=UPSCALER)
    first = sorted(keys)[0]
    return unsupported(f"unrecognised model layout ({len(keys)} tensors, first key {first!r})", kind=UNKNOWN)


def _plausible_for(family: Family, keys: Iterable[str]) -> bool:
    """Minimal sanity check used when only metadata names the family."""
    if family in (Family.SD15, Family.SDXL):
        return _any_prefix(keys, DM + "input_blocks.")
    core = (k[len(DM):] if k.startswith(DM) else k for k in keys)
    return _any_prefix(core, "layers.")


def identify_keys(shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, str] | None = None,
                  dtypes: Mapping[str, str] | None = None) -> Identification:
    """Identify a single-file model from its tensor names/shapes and safetensors ``__metadata__``.

    Visage's own files carry ``visage.configs`` (embedded diffusers configs) and may carry
    ``visage.family``: that is trusted when the keys agree or cannot tell, never against them.
    """
    metadata = metadata or {}
    result = _identify_by_keys(shapes)
    if "visage.configs" in metadata:
        result.details["embedded_config"] = True
    meta_family = metadata.get("visage.family")
    if meta_family is not None:
        try:
            claimed = Family(meta_family)
        except ValueError:
            return unsupported(f"unknown visage.family {meta_family!r} in the file's metadata", kind=UNKNOWN,
                               **result.details)
        if result.supported and result.family is not claimed:
            return unsupported(f"metadata says {claimed.value} but the weights look like {result.family.value}",
                               kind=UNKNOWN, **result.details)
        if not result.supported and result.kind == UNKNOWN and shapes:
            if _plausible_for(claimed, shapes):
                result = ok(claimed, **result.details)
                result.details["family_source"] = "metadata"
            else:
                result.reason = f"metadata says {claimed.value} but the weights do not match"
    main = _main_dtype(dtypes)
    if main:
        result.details["dtype"] = main
    return result


# ---------------------------------------------------------------------------------------------
# diffusers folders
# ---------------------------------------------------------------------------------------------

_SD15_CLASSES = frozenset({"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                           "StableDiffusionInpaintPipeline"})
_SDXL_CLASSES = frozenset({"StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                           "StableDiffusionXLInpaintPipeline"})
_ZIMAGE_CLASSES = frozenset({"ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"})
#: pipeline class prefixes of other known families, for a friendlier reason
_OTHER_PIPELINES = (("Flux2", "FLUX.2"), ("Flux", "FLUX"), ("StableDiffusion3", "Stable Diffusion 3"),
                    ("QwenImage", "Qwen-Image"), ("Lumina", "Lumina"), ("PixArt", "PixArt"), ("Sana", "Sana"),
                    ("Wan", "Wan video"), ("StableCascade", "Stable Cascade"), ("Kandinsky", "Kandinsky"))

#: component folders a pipeline of each family needs
ESSENTIAL_COMPONENTS: dict[Family, tuple[str, ...]] = {
    Family.SD15: ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    Family.SDXL: ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
    Family.ZIMAGE: ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
}


def _listed_components(model_index: Mapping) -> list[str]:
    return sorted(k for k, v in model_index.items()
                  if not k.startswith("_") and isinstance(v, (list, tuple)) and len(v) == 2 and v[1])


def _as_dims(value: object) -> set[int]:
    if isinstance(value, int):
        return {value}
    if isinstance(value, (list, tuple)):
        return {v for v in value if isinstance(v, int)}
    return set()


def identify_diffusers(model_index: Mapping, configs: Mapping[str, Mapping] | None = None,
                       present: Iterable[str] | None = None) -> Identification:
    """Identify a diffusers folder from ``model_index.json`` and (optionally) component configs.

    ``configs`` maps component names (``unet``, ``transformer``) to their parsed ``config.json``;
    ``present`` lists the component sub-folders on disk (None: do not check for missing ones).
    """
    configs = configs or {}
    cls = model_index.get("_class_name")
    if not isinstance(cls, str) or not cls:
        return unsupported("model_index.json has no _class_name", kind=UNKNOWN)
    components = _listed_components(model_index)
    details: dict = {"pipeline_class": cls, "components": components}
    unet = configs.get("unet") or {}
    in_channels = unet.get("in_channels") if isinstance(unet.get("in_channels"), int) else None

    if cls in _SD15_CLASSES:
        if 1024 in _as_dims(unet.get("cross_attention_dim")):
            return unsupported(SD2_REASON, **details)
        family = Family.SD15
    elif cls in _SDXL_CLASSES:
        if "text_encoder" not in components or model_index.get("requires_aesthetics_score") is True:
            return unsupported(REFINER_REASON, **details)
        family = Family.SDXL
    elif cls in _ZIMAGE_CLASSES:
        family = Family.ZIMAGE
    else:
        label = next((name for prefix, name in _OTHER_PIPELINES if cls.startswith(prefix)), None)
        reason = f"{cls} is not supported" + (f" (looks like a {label} model)" if label else "")
        return unsupported(reason, **details)

    if family is not Family.ZIMAGE:
        if in_channels == 8:
            return unsupported(PIX2PIX_REASON, **details)
        if in_channels == INPAINT_CHANNELS:
            details["inpainting"] = True
    reason = ""
    if present is not None:
        have = set(present)
        missing = [c for c in ESSENTIAL_COMPONENTS[family] if c not in have]
        if missing:
            details["missing_components"] = missing
            reason = "missing components: " + ", ".join(missing)
    return ok(family, reason, **details)


# ---------------------------------------------------------------------------------------------
# edge packages
# ---------------------------------------------------------------------------------------------

def identify_edge_manifest(manifest: object) -> Identification:
    """An edge package (models/edge/NAME/manifest.json) names its family; just check it."""
    if not isinstance(manifest, Mapping):
        return unsupported("manifest.json is not a JSON object", kind=UNKNOWN)
    value = manifest.get("family")
    try:
        family = Family(value)
    except ValueError:
        return unsupported(f"manifest.json names no known family ({value!r})", kind=UNKNOWN)
    return ok(family, manifest=dict(manifest))
