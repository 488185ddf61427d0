"""Starter packs: named sets of downloads (a base model, a portrait LoRA, a tiny preview decoder). Torch-free data.

Each :class:`PackItem` says what it is, and so where it lands (where the registry, the LoRA scan and the TAESD
lookup already look):

- ``CHECKPOINT_REPO``: a whole diffusers repo -> the Hugging Face cache (the snapshot download of
  :func:`modules.downloads.repos.download_repo`; the registry lists HF-cache models);
- ``LORA``: one file -> ``models/Lora``;
- ``TAESD``: madebyollin's tiny autoencoder -> ``models/VAE-approx/<name>`` as a diffusers folder
  (``config.json`` + ``diffusion_pytorch_model.safetensors``, the names :mod:`modules.taesd` looks for);
- ``CHECKPOINT_FILE``: one single-file checkpoint -> ``models/Stable-diffusion``.

How the repo ids and file names were checked (no network here): Tongyi-MAI/Z-Image-Turbo,
stable-diffusion-v1-5/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0 and madebyollin/taesd,
taesdxl, taef1 are the repos Visage already names (``SUGGESTED``, ``modules.taesd.TAESD_REPOS``).
AWPortrait-Z: public code that loads it (``hf_hub_download(repo_id="Shakker-Labs/AWPortrait-Z",
filename="AWPortrait-Z.safetensors")``, with the model card's URL https://huggingface.co/Shakker-Labs/AWPortrait-Z)
and a ModelScope mirror listing the same file name (about 0.6 GB); its licence was not confirmed, so the
pack says "see the model card". The LCM LoRA's file is diffusers' ``pytorch_lora_weights.safetensors``
(latent-consistency/lcm-lora-sdv1-5), saved as ``lcm-lora-sdv1-5.safetensors`` so its name says what it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from modules.errors import InvalidRequest
from modules.messages import Message


class ItemKind(str, Enum):
    CHECKPOINT_REPO = "checkpoint_repo"
    LORA = "lora"
    TAESD = "taesd"
    CHECKPOINT_FILE = "checkpoint_file"


#: the two files of a diffusers AutoencoderTiny folder; the weights first, so the folder is complete
#: (config.json present) only once both are in
TAESD_FILES = ("diffusion_pytorch_model.safetensors", "config.json")


@dataclass(frozen=True)
class PackItem:
    kind: ItemKind
    repo_id: str
    #: files of the repo (empty for CHECKPOINT_REPO: the whole repo, as a diffusers pipeline needs it)
    files: tuple[str, ...] = ()
    #: LORA / CHECKPOINT_FILE: the local file name (default: the file's own); TAESD: the folder name
    save_as: str | None = None
    note: str = ""
    licence: str = ""
    non_commercial: bool = False
    revision: str = "main"

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "repo_id": self.repo_id, "files": list(self.files), "save_as": self.save_as,
                "note": self.note, "licence": self.licence, "non_commercial": self.non_commercial,
                "revision": self.revision}


@dataclass(frozen=True)
class StarterPack:
    id: str
    title_en: str
    title_zh: str
    hardware_en: str
    hardware_zh: str
    items: tuple[PackItem, ...]

    def title(self, lang: str = "en") -> str:
        return self.title_zh if lang == "zh" else self.title_en

    def hardware(self, lang: str = "en") -> str:
        return self.hardware_zh if lang == "zh" else self.hardware_en

    @property
    def non_commercial(self) -> bool:
        return any(i.non_commercial for i in self.items)

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title_en, "title_zh": self.title_zh, "hardware": self.hardware_en,
                "hardware_zh": self.hardware_zh, "non_commercial": self.non_commercial,
                "items": [i.to_dict() for i in self.items]}


def taesd_item(repo_id: str, folder: str, note: str) -> PackItem:
    return PackItem(ItemKind.TAESD, repo_id, TAESD_FILES, save_as=folder, note=note, licence="MIT")


PACKS: tuple[StarterPack, ...] = (
    StarterPack(
        "zimage-portrait", "Z-Image portrait (GPU ≥ 16 GB)", "Z-Image 人像（GPU ≥ 16 GB）",
        "NVIDIA GPU with ≥ 16 GB", "显存 ≥ 16 GB 的 NVIDIA GPU",
        (PackItem(ItemKind.CHECKPOINT_REPO, "Tongyi-MAI/Z-Image-Turbo", note="Z-Image-Turbo, 8-step base model",
                  licence="Apache-2.0"),
         PackItem(ItemKind.LORA, "Shakker-Labs/AWPortrait-Z", ("AWPortrait-Z.safetensors",),
                  note="AWPortrait-Z portrait LoRA (weight ≈ 0.8)", licence="see the model card"),
         taesd_item("madebyollin/taef1", "taef1", "taef1: live previews and fast decode for Z-Image"))),
    StarterPack(
        "sd15-cpu", "SD1.5 CPU", "SD1.5（CPU）", "any CPU (slow) or a small GPU, ≈ 8 GB RAM",
        "任意 CPU（较慢）或小显存 GPU，约 8 GB 内存",
        (PackItem(ItemKind.CHECKPOINT_REPO, "stable-diffusion-v1-5/stable-diffusion-v1-5", note="SD1.5 base model",
                  licence="CreativeML OpenRAIL-M"),
         taesd_item("madebyollin/taesd", "taesd", "taesd: live previews, fast decode, edge packages"),
         PackItem(ItemKind.LORA, "latent-consistency/lcm-lora-sdv1-5", ("pytorch_lora_weights.safetensors",),
                  save_as="lcm-lora-sdv1-5.safetensors", note="LCM LoRA: 4–8 steps with the LCM sampler, CFG ≈ 1",
                  licence="OpenRAIL++"))),
    StarterPack(
        "sdxl", "SDXL (GPU ≥ 8 GB)", "SDXL（GPU ≥ 8 GB）", "GPU with ≥ 8 GB", "显存 ≥ 8 GB 的 GPU",
        (PackItem(ItemKind.CHECKPOINT_REPO, "stabilityai/stable-diffusion-xl-base-1.0", note="SDXL base model",
                  licence="OpenRAIL++"),
         taesd_item("madebyollin/taesdxl", "taesdxl", "taesdxl: live previews and fast decode for SDXL"))),
)


def get_pack(pack_id: str) -> StarterPack:
    for pack in PACKS:
        if pack.id == pack_id:
            return pack
    raise InvalidRequest("pack", Message("download.unknown_pack", name=pack_id, choices=", ".join(p.id for p in PACKS)))
