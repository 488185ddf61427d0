"""TAESD: the tiny autoencoder used for live previews, fast final decodes and edge packages.

Weights are madebyollin's diffusers-format repositories (``AutoencoderTiny``): ``taesd`` for SD1.x,
``taesdxl`` for SDXL and ``taef1`` for Z-Image (its VAE is the FLUX.1 VAE). Visage looks for them in
``models/VAE-approx/<name>/`` (a folder with ``config.json`` + ``diffusion_pytorch_model.safetensors``) and
then in the Hugging Face cache. When neither has them, :func:`ensure_taesd` fetches those two files from the
Hub into ``models/VAE-approx/<name>/`` the first time they are needed, inside the job that needs them
(:mod:`modules.loader.on_demand`: the job's phase says "fetching TAESD (madebyollin/taesd) …"); offline it
raises one MissingComponent sentence (what, where, which command).

Scaling conventions live in two functions only, :func:`tae_input` and :func:`tae_output`: the decoder
takes the latents a pipeline hands its own VAE (``latents / scaling_factor + shift_factor`` of the *tiny*
model's config: 1.0/0.0 for taesd/taesdxl, so they take the denoiser's latents as they are) and its raw
output (diffusers' ``AutoencoderTiny.decode``) is in [-1, 1]; Visage wants [0, 1].

Importing this module does not import torch.
"""
from __future__ import annotations

from pathlib import Path

from modules.errors import MissingComponent, ModelLoadError
from modules.families import Family
from modules.loader.on_demand import Piece, ProgressCallback, fetch_piece
from modules.messages import Message
from modules.paths import Folders

#: family -> (HF repo, folder name under models/VAE-approx)
TAESD_REPOS = {
    Family.SD15: ("madebyollin/taesd", "taesd"),
    Family.SDXL: ("madebyollin/taesdxl", "taesdxl"),
    Family.ZIMAGE: ("madebyollin/taef1", "taef1"),
}
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
#: what is fetched on demand (config first: the folder counts as present only once the weights land)
FETCHED_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
LATENT_CHANNELS = {Family.SD15: 4, Family.SDXL: 4, Family.ZIMAGE: 16}


def _is_tae_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / n).is_file() for n in WEIGHT_NAMES)


def find_taesd(family: Family | str, folders: Folders, hf_cache: Path | None = None) -> Path | None:
    """The folder of the tiny autoencoder for ``family``, or None when it is not on disk."""
    from modules.checkpoints.hf_cache import repo_snapshots

    repo, name = TAESD_REPOS[Family(family)]
    candidates = [folders.vae_approx / name, folders.vae_approx / repo.replace("/", "--")]
    candidates += repo_snapshots(repo, hf_cache)
    return next((c for c in candidates if _is_tae_folder(c)), None)


def fetch_command(family: Family | str) -> str:
    return f"python -m modules.cli download {TAESD_REPOS[Family(family)][0]}"


def missing_message(family: Family | str, folders: Folders) -> Message:
    """What is missing, where it goes and which command fetches it."""
    repo, name = TAESD_REPOS[Family(family)]
    return Message("missing.taesd", family=Family(family).value, repo=repo, folder=str(folders.vae_approx / name),
                   command=fetch_command(family))


def taesd_piece(family: Family | str) -> Piece:
    return Piece("TAESD", TAESD_REPOS[Family(family)][0], FETCHED_FILES, fetch_command(family))


def ensure_taesd(family: Family | str, folders: Folders, hf_cache: Path | None = None, *,
                 on_progress: ProgressCallback | None = None, should_stop=None) -> Path:
    """:func:`find_taesd`, else fetch the weights from the Hub into ``models/VAE-approx/<name>``
    (``on_progress(phase, done_bytes, total_bytes)``). MissingComponent when neither is possible now."""
    folder = find_taesd(family, folders, hf_cache)
    if folder is not None:
        return folder
    dest = folders.vae_approx / TAESD_REPOS[Family(family)][1]
    fetch_piece(taesd_piece(family), dest, missing_message(family, folders), on_progress=on_progress,
                should_stop=should_stop)
    if not _is_tae_folder(dest):
        raise MissingComponent(missing_message(family, folders))
    return dest


def load_taesd(family: Family | str, folders: Folders, hf_cache: Path | None = None, *, dtype=None,
               on_progress: ProgressCallback | None = None, should_stop=None):
    """``AutoencoderTiny`` for ``family`` (eval mode, CPU), fetched first when absent (:func:`ensure_taesd`).
    Raises MissingComponent when it is neither on disk nor fetchable now."""
    folder = ensure_taesd(family, folders, hf_cache, on_progress=on_progress, should_stop=should_stop)
    return load_taesd_folder(folder, dtype=dtype)


def load_taesd_folder(folder: Path, *, dtype=None):
    import torch
    from diffusers import AutoencoderTiny

    try:
        model = AutoencoderTiny.from_pretrained(str(folder), local_files_only=True,
                                                torch_dtype=dtype or torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{folder}: not a usable AutoencoderTiny ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    return model.eval()


def random_taesd(family: Family | str = Family.SD15, seed: int = 0):
    """A randomly initialised ``AutoencoderTiny`` in the layout of ``family``'s TAESD (tests, benchmarks)."""
    import torch
    from diffusers import AutoencoderTiny

    channels = LATENT_CHANNELS[Family(family)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderTiny(latent_channels=channels).eval()


# ---------------------------------------------------------------------------------------------
# scaling conventions (the only place that knows them)
# ---------------------------------------------------------------------------------------------

def tae_input(latents, config):
    """Denoiser-space latents -> what the tiny decoder takes (``config``: the tiny model's config)."""
    scale = float(getattr(config, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(config, "shift_factor", 0.0) or 0.0)
    return latents / scale + shift


def tae_output(decoded):
    """The tiny decoder's [-1, 1] output -> images in [0, 1] (works on torch tensors and numpy arrays)."""
    out = decoded * 0.5 + 0.5
    return out.clamp(0, 1) if hasattr(out, "clamp") else out.clip(0, 1)


def decode_latents(tae, latents):
    """Decode denoiser-space latents to a float tensor in [0, 1], shape (B, 3, H, W)."""
    import torch

    with torch.no_grad():
        x = tae_input(latents.to(device=tae.device, dtype=tae.dtype), tae.config)
        return tae_output(tae.decode(x, return_dict=False)[0]).float()


#: previews on a CPU are decoded at most this many pixels on a side (a full-size TAESD decode of a 512x512
#: image costs about a fifth of an SD1.5 step there; a 256x256 one a quarter of that: docs/edge.md)
CPU_PREVIEW_MAX_SIDE = 256


def preview_latents(latents, max_side: int | None, scale_factor: int = 8):
    """``latents`` average-pooled by the smallest whole factor that makes the decoded image at most
    ``max_side`` pixels on a side (unchanged when ``max_side`` is None or already small enough)."""
    import math

    import torch.nn.functional as F

    side = max(latents.shape[-2:]) * scale_factor
    if not max_side or side <= max_side:
        return latents
    factor = math.ceil(side / max_side)
    return F.avg_pool2d(latents.float(), factor, ceil_mode=True).to(latents.dtype)


def tae_decoder_module(tae):
    """``tae``'s decoder as a ``torch.nn.Module`` mapping denoiser latents to [0, 1] images (ONNX export)."""
    import torch

    class TaeDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = tae.decoder

        def forward(self, latents):
            return tae_output(self.decoder(tae_input(latents, tae.config)))

    return TaeDecoder().eval()


def to_pil(images) -> list:
    """(B, 3, H, W) images in [0, 1] (torch or numpy) -> PIL images."""
    import numpy as np
    from PIL import Image

    arr = images.detach().cpu().float().numpy() if hasattr(images, "detach") else np.asarray(images)
    arr = (arr.transpose(0, 2, 3, 1) * 255.0).round().clip(0, 255).astype("uint8")
    return [Image.fromarray(a) for a in arr]


class TaeDecoder:
    """Latents -> PIL images with a torch ``AutoencoderTiny`` (previews and the fast final decode).

    Same interface as :class:`modules.edge.runtime.EdgeDecoder` (``decode(latents) -> list[PIL]``)."""

    def __init__(self, tae):
        self.tae = tae

    def to(self, device, dtype=None) -> "TaeDecoder":
        self.tae.to(device, dtype) if dtype is not None else self.tae.to(device)
        return self

    def decode(self, latents) -> list:
        return to_pil(decode_latents(self.tae, latents))
