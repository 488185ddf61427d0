"""Load a diffusers pipeline for a registry entry, fully offline, on the CPU.

* diffusers folders (``model_index.json``): ``from_pretrained(local_files_only=True)``.
* SD1.5 / SDXL single files: ``from_single_file`` with ``config=`` a folder assembled from
  ``modules/loader/configs/<family>/`` (the released models' configs), the configs embedded by Visage
  (``visage.configs`` metadata) and the file's CLIP tokenizer (:func:`clip_tokenizer_for`): the one embedded
  in the file (``visage.tokenizer``: tiny models), else its merge base's (a diffusers folder in
  ``models/Stable-diffusion``), else the CLIP tokenizer found on disk or fetched from the Hub the first time
  (:func:`tokenizers.ensure_clip_tokenizer`, progress through ``on_progress``). Whichever it is, a tokenizer
  with more tokens than its text encoder has embeddings is refused.
* Z-Image single files: the DiT comes from the file; text encoder, VAE and tokenizer come from the same file
  when embedded (Visage's all-in-one layout, see :mod:`modules.checkpoints.layouts`), otherwise from a
  "companion" diffusers Z-Image folder: a ``ZImagePipeline`` folder in ``models/Stable-diffusion`` or the
  Hugging Face cache copy of ``Tongyi-MAI/Z-Image-Turbo``.

Importing this package does not import torch; :func:`load_pipeline` does.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from modules.checkpoints.header import SafetensorsHeader, SafetensorsHeaderError, read_header
from modules.checkpoints.hf_cache import repo_snapshots
from modules.checkpoints.layouts import UNET_PREFIX, ZIMAGE_TE_PREFIX, ZIMAGE_VAE_PREFIX
from modules.checkpoints.single_file import TOKENIZER_KEY, embedded_configs
from modules.errors import MissingComponent, ModelLoadError, ModelNotFound, UnsupportedModel, VisageError
from modules.families import Family, family_info
from modules.loader.on_demand import ProgressCallback
from modules.loader.tokenizers import CLIP_FILES, ensure_clip_tokenizer
from modules.paths import Folders
from modules.registry.entry import ModelEntry, ModelFormat

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
ZIMAGE_REPO = "Tongyi-MAI/Z-Image-Turbo"
ZIMAGE_COMPANION_PARTS = ("text_encoder", "tokenizer", "vae", "scheduler")


def load_pipeline(entry: ModelEntry, *, folders: Folders, hf_cache: Path | None = None, torch_dtype=None,
                  on_progress: ProgressCallback | None = None, should_stop=None):
    """The diffusers pipeline of ``entry`` on the CPU (``torch_dtype`` default: float32).

    ``on_progress(phase, done, total)`` / ``should_stop()``: for a CLIP tokenizer fetched on demand.
    Raises ModelNotFound (no such file), MissingComponent (tokenizer / companion folder missing and not
    fetchable now), ModelLoadError (truncated, corrupt or mismatching weights), UnsupportedModel (other formats).
    """
    import torch

    dtype = torch_dtype or torch.float32
    if entry.family is None or not entry.supported:
        raise UnsupportedModel(f"{entry.name}: {entry.reason or 'unknown model family'}")
    family, path = Family(entry.family), Path(entry.path)
    if not path.exists():
        raise ModelNotFound(f"{entry.name}: {path} does not exist")
    if entry.format == ModelFormat.DIFFUSERS:
        pipe = _load_diffusers(path, family, dtype)
    elif entry.format == ModelFormat.SINGLE_FILE and family is Family.ZIMAGE:
        pipe = _load_zimage_file(path, folders, hf_cache, dtype)
    elif entry.format == ModelFormat.SINGLE_FILE:
        pipe = _load_sd_file(path, family, folders, hf_cache, dtype, on_progress, should_stop)
    elif entry.format == ModelFormat.PICKLE and entry.details.get("pickle_opt_in") and family is not Family.ZIMAGE:
        # diffusers: torch.load(weights_only=True)
        pipe = _load_sd_file(path, family, folders, hf_cache, dtype, on_progress, should_stop)
    else:
        raise UnsupportedModel(f"{entry.name}: format {entry.format!r} is not loaded as a diffusers pipeline")
    _check_loaded(pipe, path)
    return pipe


# ---------------------------------------------------------------------------------------------- helpers

@contextmanager
def _load_errors(path: Path):
    """Turn library exceptions raised while loading ``path`` into ModelLoadError naming the file."""
    try:
        yield
    except (VisageError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers/transformers/safetensors raise many types
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelLoadError(f"{path.name}: could not load ({type(exc).__name__}: {first_line})") from exc


#: the pipeline class of a dedicated inpainting model (9-channel U-Net) per family
INPAINT_PIPELINES = {Family.SD15: "StableDiffusionInpaintPipeline", Family.SDXL: "StableDiffusionXLInpaintPipeline"}
INPAINT_CHANNELS = 9


def _pipeline_class(family: Family, inpainting: bool = False):
    import diffusers

    return getattr(diffusers, INPAINT_PIPELINES[family] if inpainting else family_info(family).pipeline_class)


def _folder_is_inpainting(path: Path) -> bool:
    """A diffusers folder whose U-Net takes 9 input channels (a dedicated inpainting model)."""
    try:
        config = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("in_channels") == INPAINT_CHANNELS


def _file_is_inpainting(header: SafetensorsHeader | None) -> bool:
    """A single file whose U-Net's first convolution takes 9 input channels."""
    if header is None:
        return False
    shape = header.shapes().get(UNET_PREFIX + "input_blocks.0.0.weight", ())
    return len(shape) == 4 and int(shape[1]) == INPAINT_CHANNELS


def _inpaint_unet_config(family: Family, configs: dict[str, dict]) -> dict[str, dict]:
    """``configs`` with the U-Net's ``in_channels`` set to 9 (the released model's U-Net config otherwise)."""
    unet = dict(configs.get("unet") or json.loads((CONFIG_ROOT / family.value / "unet" / "config.json")
                                                  .read_text(encoding="utf-8")))
    unet["in_channels"] = INPAINT_CHANNELS
    return {**configs, "unet": unet}


def _extra_kwargs(family: Family) -> dict:
    if family is Family.SD15:
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    return {}


def assemble_config(family: Family, out: Path, configs: dict[str, dict] | None = None,
                    clip_tokenizer: Path | None = None) -> Path:
    """A diffusers config folder for ``family`` under ``out``: the repo's configs, overridden by ``configs``
    (``{component: config}``), with the CLIP tokenizer files copied into ``tokenizer*/``."""
    folder = Path(out) / family.value
    shutil.copytree(CONFIG_ROOT / family.value, folder)
    for name, config in (configs or {}).items():
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for tok_dir in folder.glob("tokenizer*"):
        for name in CLIP_FILES if clip_tokenizer else ():
            shutil.copyfile(clip_tokenizer / name, tok_dir / name)
    return folder


def checked_header(path: Path) -> SafetensorsHeader:
    """The safetensors header of ``path``; ModelLoadError naming the file if it is not complete and well-formed."""
    try:
        return read_header(path)
    except SafetensorsHeaderError as exc:
        raise ModelLoadError(f"{Path(path).name}: {exc}; download or copy it again") from None


def _check_files(folder: Path) -> None:
    for weights in sorted(folder.glob("*/*.safetensors")):
        checked_header(weights)


def _check_loaded(pipe, path: Path) -> None:
    """No weight left unloaded (on the meta device); tokenizers fit their text encoders."""
    for name, component in pipe.components.items():
        params = component.parameters() if hasattr(component, "parameters") else ()
        if any(p.device.type == "meta" for p in params):
            raise ModelLoadError(f"{path.name}: weights for {name} are missing from the file")
    for tok_name, te_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        tok, te = getattr(pipe, tok_name, None), getattr(pipe, te_name, None)
        if tok is not None and te is not None and len(tok) > te.config.vocab_size:
            raise ModelLoadError(f"{path.name}: {tok_name} has {len(tok)} tokens but {te_name} only "
                                 f"{te.config.vocab_size}; the tokenizer does not belong to this model")


# ------------------------------------------------------------------------------------------------ loaders

def _load_diffusers(path: Path, family: Family, dtype):
    if not (path / "model_index.json").is_file():
        raise ModelLoadError(f"{path.name}: not a diffusers folder (no model_index.json)")
    _check_files(path)
    inpainting = family is not Family.ZIMAGE and _folder_is_inpainting(path)
    with _load_errors(path):
        return _pipeline_class(family, inpainting).from_pretrained(str(path), local_files_only=True, dtype=dtype,
                                                       **_extra_kwargs(family))


def clip_tokenizer_for(metadata: dict[str, str], folders: Folders, hf_cache: Path | None, tmp: Path, *,
                       on_progress: ProgressCallback | None = None, should_stop=None) -> Path:
    """The CLIP tokenizer folder of a single SD1.5/SDXL file with header ``metadata`` (order: module docstring).
    An embedded one is written under ``tmp``."""
    embedded = _embedded_clip_tokenizer(metadata, tmp)
    if embedded is not None:
        return embedded
    base = _merge_base_tokenizer(metadata, folders)
    if base is not None:
        return base
    return ensure_clip_tokenizer(folders, hf_cache, on_progress=on_progress, should_stop=should_stop)


def _embedded_clip_tokenizer(metadata: dict[str, str], tmp: Path) -> Path | None:
    try:
        files = json.loads(metadata.get(TOKENIZER_KEY) or "{}")
    except ValueError:
        return None
    if not isinstance(files, dict) or not all(isinstance(files.get(n), str) for n in CLIP_FILES):
        return None
    folder = Path(tmp) / "embedded-tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    for name in CLIP_FILES:
        (folder / name).write_text(files[name], encoding="utf-8")
    return folder


def _merge_base_tokenizer(metadata: dict[str, str], folders: Folders) -> Path | None:
    """``tokenizer/`` of the diffusers folder a merged file was made from, when it is still in
    models/Stable-diffusion under the name the merge recorded."""
    from modules.lora.merge import MERGE_KEY

    try:
        base = (json.loads(metadata.get(MERGE_KEY) or "{}") or {}).get("base") or {}
    except (ValueError, AttributeError):
        return None
    name = base.get("name") if isinstance(base, dict) and base.get("format") == ModelFormat.DIFFUSERS else None
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    root = folders.checkpoints.resolve()
    tokenizer = (root / name).resolve() / "tokenizer"
    if root not in tokenizer.parents or not all((tokenizer / n).is_file() for n in CLIP_FILES):
        return None
    return tokenizer


def _load_sd_file(path: Path, family: Family, folders: Folders, hf_cache: Path | None, dtype,
                  on_progress: ProgressCallback | None = None, should_stop=None):
    is_safetensors = path.suffix.lower() == ".safetensors"
    header = checked_header(path) if is_safetensors else None
    metadata = header.metadata if header else {}
    inpainting = _file_is_inpainting(header)  # (a pickle one: the U-Net config says 4 and the load fails)
    configs = embedded_configs(metadata)
    if inpainting:
        configs = _inpaint_unet_config(family, configs)
    with tempfile.TemporaryDirectory(prefix="visage-config-") as tmp:
        clip = clip_tokenizer_for(metadata, folders, hf_cache, Path(tmp), on_progress=on_progress,
                                  should_stop=should_stop)
        with _load_errors(path):
            config = assemble_config(family, Path(tmp), configs, clip)
            return _pipeline_class(family, inpainting).from_single_file(str(path), config=str(config), local_files_only=True,
                                                            dtype=dtype, **_extra_kwargs(family))


def _is_zimage_folder(folder: Path) -> bool:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return index.get("_class_name") == "ZImagePipeline" and all((folder / p).is_dir() for p in ZIMAGE_COMPANION_PARTS)


def find_zimage_companion(folders: Folders, hf_cache: Path | None, for_file: str = "this file") -> Path:
    """A diffusers Z-Image folder to take the text encoder, tokenizer, VAE and scheduler from."""
    root = folders.checkpoints
    local = sorted([*root.glob("*/model_index.json"), *root.glob("*/*/model_index.json")]) if root.is_dir() else []
    for folder in [p.parent for p in local] + repo_snapshots(ZIMAGE_REPO, hf_cache):
        if _is_zimage_folder(folder):
            return folder
    raise MissingComponent(
        f"{for_file} is a Z-Image DiT without its text encoder, tokenizer and VAE. Put the diffusers "
        f"Z-Image-Turbo folder ({ZIMAGE_REPO}: model_index.json, {', '.join(ZIMAGE_COMPANION_PARTS)}) in "
        f"{root}, or into the Hugging Face cache with `hf download {ZIMAGE_REPO}`.")


def _zimage_text_encoder(weights: dict | None, config_dir: Path, companion: Path | None, dtype):
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModel, Qwen3Model

    if weights is None:
        return AutoModel.from_pretrained(str(companion / "text_encoder"), dtype=dtype, local_files_only=True)
    with init_empty_weights():  # parameters on "meta", buffers (RoPE frequencies) real and float32
        model = Qwen3Model(AutoConfig.from_pretrained(str(config_dir / "text_encoder"), local_files_only=True))
    state = {k[len(ZIMAGE_TE_PREFIX):]: v.to(dtype) for k, v in weights.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _zimage_vae(weights: dict | None, config_dir: Path, companion: Path | None, dtype):
    from diffusers import AutoencoderKL

    if weights is None:
        return AutoencoderKL.from_pretrained(str(companion), subfolder="vae", dtype=dtype, local_files_only=True)
    return AutoencoderKL.from_single_file(weights, config=str(config_dir), subfolder="vae", dtype=dtype,
                                          local_files_only=True)


def _zimage_tokenizer(metadata: dict, companion: Path | None, tmp: Path):
    from transformers import AutoTokenizer

    folder = companion / "tokenizer" if companion else tmp / "tokenizer"
    if companion is None:
        folder.mkdir()
        for name, text in json.loads(metadata[TOKENIZER_KEY]).items():
            (folder / Path(name).name).write_text(text, encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _split_zimage(path: Path) -> tuple[dict, dict, dict]:
    """(DiT, text-encoder, VAE) tensors of a Z-Image single file; the last two are empty in DiT-only files."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    te = {k: v for k, v in state.items() if k.startswith(ZIMAGE_TE_PREFIX)}
    vae = {k: v for k, v in state.items() if k.startswith(ZIMAGE_VAE_PREFIX)}
    dit = {k: v for k, v in state.items() if k not in te and k not in vae}
    return dit, te, vae


def _load_zimage_file(path: Path, folders: Folders, hf_cache: Path | None, dtype):
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    header = checked_header(path)
    metadata = header.metadata
    embedded = TOKENIZER_KEY in metadata and all(any(k.startswith(p) for k in header.tensors)
                                                 for p in (ZIMAGE_TE_PREFIX, ZIMAGE_VAE_PREFIX))
    companion = None if embedded else find_zimage_companion(folders, hf_cache, path.name)
    with tempfile.TemporaryDirectory(prefix="visage-config-") as tmp, _load_errors(path):
        config = assemble_config(Family.ZIMAGE, Path(tmp), embedded_configs(metadata))
        dit, te, vae = _split_zimage(path)
        return ZImagePipeline(
            transformer=ZImageTransformer2DModel.from_single_file(
                dit, config=str(config), subfolder="transformer", dtype=dtype, local_files_only=True),
            text_encoder=_zimage_text_encoder(None if companion else te, config, companion, dtype),
            vae=_zimage_vae(None if companion else vae, config, companion, dtype),
            tokenizer=_zimage_tokenizer(metadata, companion, Path(tmp)),
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(str(companion or config), subfolder="scheduler"))
