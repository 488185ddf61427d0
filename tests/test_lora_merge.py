"""Merging LoRAs into a base model (modules/lora/merge.py) and the ``merge-lora`` command.

Tolerance: the merged model's image must equal the unmerged base+LoRA image (same seed, 2 steps, 64², float
``output_type="np"``) within ``TOL = 1e-4`` max abs pixel difference, fp32 output. Measured on this machine
(torch 2.13 CPU, tiny seeded models, LoRAs here): sd15 1.2e-6 / 1.2e-6, sdxl 1.4e-6 / 1.4e-6,
zimage 5.7e-7 / 5.4e-7 (single-file / diffusers output), two LoRAs on sd15 1.0e-6; fp16 output 4.4e-4
(checked against ``TOL_FP16 = 1e-2``). The base pipeline is checked bit for bit before/after every merge
(images and tensors), and the base file by sha256.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402
from fixtures_models import make_folders  # noqa: E402
from modules.checkpoints.header import read_header  # noqa: E402
from modules.errors import Interrupted, InvalidRequest, UnsafeName  # noqa: E402
from modules.families import Family  # noqa: E402
from modules.loader import load_pipeline  # noqa: E402
from modules.lora import LoraError, ensure_hashes, inspect_lora, scan_loras  # noqa: E402
from modules.atomic import clear_stale_temps  # noqa: E402
from modules.cli.lora import parse_lora_arg  # noqa: E402
from modules.lora.merge import (  # noqa: E402
    MERGE_KEY, SIDECAR_NAME, merge_loras, merge_output_path, read_merge_info,
)
from modules.lora.patcher import LoraPatcher  # noqa: E402
from modules.registry import HashCache, ModelRegistry  # noqa: E402
from modules.registry.scan import identify_path  # noqa: E402

TOL = 1e-4
TOL_FP16 = 1e-2
FAMILIES = ("sd15", "sdxl", "zimage")
PROMPT = "a photo of a woman"

#: (component, module) patched by the test LoRAs, per family (attention, feed-forward, LoCon conv, text encoders)
TARGETS = {
    "sd15": [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
             ("unet", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k"),
             ("unet", "up_blocks.0.attentions.2.transformer_blocks.0.ff.net.0.proj"),
             ("unet", "down_blocks.0.resnets.1.conv1"),
             ("text_encoder", "encoder.layers.0.self_attn.q_proj"),
             ("text_encoder", "encoder.layers.1.mlp.fc1")],
    "sdxl": [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
             ("unet", "down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_v"),
             ("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.2"),
             ("text_encoder", "encoder.layers.0.self_attn.q_proj"),
             ("text_encoder_2", "text_model.encoder.layers.1.mlp.fc1")],
    "zimage": [("transformer", "layers.0.attention.to_q"), ("transformer", "layers.0.attention.to_out.0"),
               ("transformer", "layers.1.feed_forward.w2"), ("transformer", "noise_refiner.0.attention.to_k")],
}
KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_text_model_"}
KOHYA_PREFIX_XL = {"unet": "lora_unet_", "text_encoder": "lora_te1_text_model_", "text_encoder_2": "lora_te2_"}


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private models/ tree with the tiny CLIP tokenizer, tiny bases (both formats) and LoRAs."""
    from modules.tiny import install_tiny_clip_tokenizer, make_tiny_model

    folders = make_folders(tmp_path_factory.mktemp("merge"))
    install_tiny_clip_tokenizer(folders)
    folders.lora.mkdir(parents=True)
    bases = {}
    for family in FAMILIES:
        bases[family, "single-file"] = make_tiny_model(family, "single-file", folders.checkpoints / f"base-{family}")
        bases[family, "diffusers"] = make_tiny_model(family, "diffusers", folders.checkpoints / f"base-{family}-d")
    return folders, bases


@pytest.fixture(scope="module")
def pipes(env):
    """Base pipelines loaded from the files, once per (family, base format)."""
    folders, bases = env
    loaded = {}

    def get(family: str, base_fmt: str):
        if (family, base_fmt) not in loaded:
            entry = identify_path(bases[family, base_fmt])
            pipe = load_pipeline(entry, folders=folders)
            pipe.set_progress_bar_config(disable=True)
            loaded[family, base_fmt] = (pipe, entry)
        return loaded[family, base_fmt]

    return get


def image(pipe, family: str):
    kwargs = dict(num_inference_steps=2, height=64, width=64, output_type="np",
                  generator=torch.Generator().manual_seed(0))
    if family == "zimage":
        kwargs["guidance_scale"] = 0.0
    return pipe(PROMPT, **kwargs).images[0]


def write_lora(path: Path, pipe, family: str, seed: int = 0, scale: float = 0.3, rank: int = 4) -> Path:
    """A random LoRA on TARGETS in the family's usual file layout (kohya with alphas for SD, ComfyUI
    ``diffusion_model.*`` without alpha for Z-Image)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for comp, module in TARGETS[family]:
        layer = getattr(pipe, comp).get_submodule(module)
        if isinstance(layer, torch.nn.Conv2d):
            down = torch.randn(rank, layer.in_channels, *layer.kernel_size, generator=gen) * scale / 3
            up = torch.randn(layer.out_channels, rank, 1, 1, generator=gen) * scale
        else:
            down = torch.randn(rank, layer.in_features, generator=gen) * scale
            up = torch.randn(layer.out_features, rank, generator=gen) * scale
        if family == "zimage":
            sd[f"diffusion_model.{module}.lora_A.weight"] = down
            sd[f"diffusion_model.{module}.lora_B.weight"] = up
            continue
        prefix = (KOHYA_PREFIX_XL if family == "sdxl" else KOHYA_PREFIX)[comp]
        key = prefix + module.replace(".", "_")
        sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = down, up
        sd[f"{key}.alpha"] = torch.tensor(float(rank) / 2)
    save_file(sd, str(path))
    return path


def lora_for(env, pipe, family: str, name: str, seed: int = 0):
    folders, _ = env
    path = folders.lora / f"{name}.safetensors"
    if not path.exists():
        write_lora(path, pipe, family, seed=seed)
    return inspect_lora(path)


def sha256(path: Path) -> str:
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def snapshot(pipe, clone: bool = True) -> dict[str, torch.Tensor]:
    """Every base tensor of every torch component, by component-qualified name (LoRA layers left out;
    with adapters resident PEFT names base weights ``...base_layer.weight``)."""
    out = {}
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module):
            for k, v in comp.state_dict().items():
                if "lora_" not in k:
                    out[f"{name}.{k.replace('.base_layer.', '.')}"] = v.detach().clone() if clone else v
    return out


def assert_same_tensors(before: dict, pipe) -> None:
    after = snapshot(pipe, clone=False)
    assert set(after) == set(before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed[:5]


def registry_entry(folders, name: str):
    entries = ModelRegistry(folders, HashCache(folders.cache / "hashes.json")).scan()
    by_name = {e.name: e for e in entries}
    assert name in by_name, sorted(by_name)
    return by_name[name], entries


# ---------------------------------------------------------------------------------------------
# merged == unmerged, per family and output format
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("out_fmt", ["single-file", "diffusers"])
@pytest.mark.parametrize("family", FAMILIES)
def test_merged_model_equals_base_plus_lora(env, pipes, family, out_fmt):
    """The base comes in the *other* format than the output, so both conversions are covered. Single-file
    output: the live patcher's adapter is reused; diffusers output: none is loaded, the merge loads it."""
    folders, bases = env
    base_fmt = "diffusers" if out_fmt == "single-file" else "single-file"
    pipe, entry = pipes(family, base_fmt)
    base_file_hash = sha256(bases[family, base_fmt])
    info = lora_for(env, pipe, family, f"lora-{family}")
    weights = (0.8, 0.6)

    base_img = image(pipe, family)
    patcher = LoraPatcher()
    patcher.apply(pipe, family, [(info, *weights)])
    lora_img = image(pipe, family)
    assert abs(lora_img - base_img).max() > 1e-3  # the LoRA really changes the image
    tensors = snapshot(pipe)

    reuse = out_fmt == "single-file"
    if not reuse:
        patcher.unload_all(pipe)
    seen = []
    name = f"merged-{family}-{out_fmt}"
    out = merge_output_path(folders, name, out_fmt)
    path = merge_loras(pipe, family, [(info, *weights)], out_path=out, fmt=out_fmt, dtype="fp32",
                       base_entry=entry, patcher=patcher if reuse else None, on_progress=lambda *a: seen.append(a))
    assert path == out and path.exists()
    assert seen[0] == ("hashing", 0, 5) and seen[-1] == ("done", 5, 5)
    assert seen[1][0] == (f"reusing loaded LoRA {info.name}" if reuse else f"loading LoRA {info.name}")
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)

    # the base in memory is untouched: same tensors, same LoRA image, same base image without the LoRA
    assert_same_tensors(tensors, pipe)
    if reuse:
        assert (image(pipe, family) == lora_img).all()
        patcher.unload_all(pipe)
    assert (image(pipe, family) == base_img).all()
    assert sha256(bases[family, base_fmt]) == base_file_hash

    merged_entry, entries = registry_entry(folders, name)
    assert merged_entry.family is Family(family) and merged_entry.supported
    assert merged_entry.format == out_fmt
    assert not any(e.name.startswith(".") or ".tmp" in str(e.path) for e in entries)
    merged = load_pipeline(merged_entry, folders=folders)
    merged.set_progress_bar_config(disable=True)
    sd_keys = [k for c in merged.components.values() if isinstance(c, torch.nn.Module) for k in c.state_dict()]
    assert not any("lora" in k for k in sd_keys)
    diff = float(abs(image(merged, family) - lora_img).max())
    assert diff <= TOL, diff

    record = read_merge_info(path)
    if out_fmt == "single-file":
        header = read_header(path)
        assert json.loads(header.metadata[MERGE_KEY]) == record
        assert {t.dtype for t in header.tensors.values()} == {"F32"}
    else:
        assert record == json.loads((path / SIDECAR_NAME).read_text())
    assert record["base"]["name"] == entry.name and record["base"]["family"] == family
    assert record["base"]["hash"] == registry_entry(folders, entry.name)[0].hash
    hashed = scan_loras([folders.lora])
    lora_hash = next(i for i in hashed if i.name == info.name)
    assert record["loras"] == [{"name": info.name, "hash": ensure_hashes(lora_hash).hash,
                                "sha256": ensure_hashes(lora_hash).sha256, "unet_weight": 0.8,
                                "te_weight": 0.6, "format": info.format}]
    assert record["dtype"] == "fp32" and record["format"] == out_fmt and record["date"]


def test_two_loras_fp16_and_live_adapters_left_alone(env, pipes):
    """Two LoRAs with separate U-Net / text-encoder weights while the live patcher has one of them active
    at other weights (fp32 merge: reused + loaded), then with it resident but switched off (fp16 merge);
    fp16 output is all F16 and close to the unmerged fp32 image."""
    folders, _ = env
    pipe, entry = pipes("sd15", "single-file")
    a = lora_for(env, pipe, "sd15", "lora-a", seed=1)
    b = lora_for(env, pipe, "sd15", "lora-b", seed=2)
    loras = [(a, 0.7, 0.5), (b, -0.4, 1.0)]
    live = LoraPatcher()
    live.apply(pipe, "sd15", loras)
    both = image(pipe, "sd15")
    live.apply(pipe, "sd15", [(a, 1.0, 1.0)])  # what the UI has on while the merge runs
    only_a = image(pipe, "sd15")
    tensors = snapshot(pipe)

    out32 = merge_loras(pipe, "sd15", loras, out_path=merge_output_path(folders, "two-32", "single-file"),
                        fmt="single-file", dtype="fp32", base_entry=entry)
    assert_same_tensors(tensors, pipe)
    assert (image(pipe, "sd15") == only_a).all()
    assert [x.name for x in live.active(pipe)] == ["lora-a"]
    live.clear(pipe)
    base_img = image(pipe, "sd15")
    out16 = merge_loras(pipe, "sd15", loras, out_path=merge_output_path(folders, "sub/two-16", "single-file"),
                        fmt="single-file", dtype="fp16", base_entry=entry, patcher=live)
    assert_same_tensors(tensors, pipe)
    assert (image(pipe, "sd15") == base_img).all()
    assert live.active(pipe) == [] and live.resident(pipe)
    live.unload_all(pipe)

    record = read_merge_info(out16)
    assert [(x["name"], x["unet_weight"], x["te_weight"]) for x in record["loras"]] == [
        ("lora-a", 0.7, 0.5), ("lora-b", -0.4, 1.0)]
    assert record["dtype"] == "fp16"
    assert {t.dtype for t in read_header(out16).tensors.values()} == {"F16"}
    for path, tol in ((out32, TOL), (out16, TOL_FP16)):
        merged = load_pipeline(identify_path(path), folders=folders)
        merged.set_progress_bar_config(disable=True)
        diff = float(abs(image(merged, "sd15") - both).max())
        assert diff <= tol, (path.name, diff)
    assert registry_entry(folders, "sub/two-16")[0].family is Family.SD15


def test_zimage_dit_only_base_gives_dit_only_file(env, pipes, tmp_path):
    """A Z-Image DiT-only base (text encoder/VAE from a companion folder) is merged into a DiT-only file."""
    from modules.checkpoints.layouts import ZIMAGE_TE_PREFIX
    from modules.checkpoints.single_file import save_single_file

    folders, _ = env
    full, _ = pipes("zimage", "diffusers")  # base-zimage-d in models/ is also the companion folder
    dit_path = save_single_file(full, "zimage", folders.checkpoints / "zimage-dit.safetensors",
                                components=("transformer",))
    entry = identify_path(dit_path)
    pipe = load_pipeline(entry, folders=folders)
    pipe.set_progress_bar_config(disable=True)
    info = lora_for(env, pipe, "zimage", "lora-zimage")
    patcher = LoraPatcher()
    patcher.apply(pipe, "zimage", [(info, 1.0, 1.0)])
    want = image(pipe, "zimage")
    out = merge_loras(pipe, "zimage", [(info, 1.0, 1.0)], out_path=folders.checkpoints / "zimage-dit-merged.safetensors",
                      fmt="single-file", dtype="fp32", base_entry=entry, patcher=patcher)
    keys = read_header(out).tensors
    assert not any(k.startswith(ZIMAGE_TE_PREFIX) for k in keys)
    merged = load_pipeline(identify_path(out), folders=folders)
    merged.set_progress_bar_config(disable=True)
    assert float(abs(image(merged, "zimage") - want).max()) <= TOL
    dit_path.unlink()
    out.unlink()


def test_fuse_loras_in_place_adds_up_the_same_file_and_skips_weight_zero(tmp_path):
    """The one fuse (merge-and-save and the edge build): the same file twice adds its weights up, weight 0
    is skipped, and the pipeline ends with plain modules holding what diffusers' ``fuse_lora`` gives."""
    from modules.lora.fuse import fuse_loras
    from modules.tiny.components import tiny_pipeline

    ours, ref = tiny_pipeline("sd15", 5), tiny_pipeline("sd15", 5)
    a, b = (inspect_lora(write_lora(tmp_path / f"f{i}.safetensors", ours, "sd15", seed=i)) for i in (1, 2))
    report = fuse_loras(ours, "sd15", [(a, 0.5, 0.25), (b, 0.0, 0.0), (a, 0.25, 0.25)])
    assert [(info.name, u, t) for info, u, t in report.loras] == [(a.name, 0.75, 0.5)]
    assert report.records() == [{"name": a.name, "hash": ensure_hashes(a).hash, "unet_weight": 0.75,
                                 "te_weight": 0.5}]
    assert report.layers > 0 and report.components == ["unet", "text_encoder"]
    names = [x.adapter for x in LoraPatcher().apply(ref, "sd15", [(a, 0.75, 0.5)]).active]
    with torch.no_grad():
        ref.fuse_lora(components=["unet", "text_encoder"], adapter_names=names)
    ref.unload_lora_weights()
    for comp in ("unet", "text_encoder"):
        mine, theirs = getattr(ours, comp).state_dict(), getattr(ref, comp).state_dict()
        assert set(mine) == set(theirs) and not [k for k in mine if "lora" in k]
        assert max(float((mine[k] - theirs[k]).abs().max()) for k in mine) <= 1e-6, comp
    assert fuse_loras(ours, "sd15", [(b, 0.0, 0.0)]).loras == []


def test_fast_fuse_equals_diffusers_fuse_lora(tmp_path):
    """The in-place fusing (plain LoRA Linear, LoCon 3x3 conv, text encoder) gives the weights that
    ``fuse_lora`` gives, with two adapters at different U-Net / text-encoder weights."""
    from modules.lora.fuse import fuse_adapters
    from modules.tiny.components import tiny_pipeline

    ours, ref = tiny_pipeline("sd15", 5), tiny_pipeline("sd15", 5)
    infos = [inspect_lora(write_lora(tmp_path / f"l{i}.safetensors", ours, "sd15", seed=i)) for i in (1, 2)]
    loras = [(infos[0], 0.7, 0.4), (infos[1], -0.5, 1.2)]
    names = []
    for pipe in (ours, ref):
        report = LoraPatcher().apply(pipe, "sd15", loras)
        names = [a.adapter for a in report.active]
    with torch.no_grad():
        for comp in ("unet", "text_encoder"):
            assert fuse_adapters(getattr(ours, comp), names) > 0
        ref.fuse_lora(components=["unet", "text_encoder"], adapter_names=names)
    ours.unload_lora_weights()
    ref.unload_lora_weights()
    for comp in ("unet", "text_encoder"):
        mine, theirs = getattr(ours, comp).state_dict(), getattr(ref, comp).state_dict()
        assert set(mine) == set(theirs)
        worst = max(float((mine[k] - theirs[k]).abs().max()) for k in mine)
        assert worst <= 1e-6, (comp, worst)
    base = tiny_pipeline("sd15", 5).unet.state_dict()
    key = TARGETS["sd15"][3][1] + ".weight"  # the LoCon conv really changed
    assert float((ours.unet.state_dict()[key] - base[key]).abs().max()) > 1e-3


def test_lokr_and_dora_go_through_peft_merge(env, pipes, tmp_path):
    """Layer kinds the fast path leaves to PEFT's merge: Z-Image LoKr sharing a layer with a plain LoRA
    (both paths on one layer), and a PEFT DoRA on SD1.5. Merged == unmerged, base untouched."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    folders, _ = env
    zpipe, zentry = pipes("zimage", "single-file")
    gen = torch.Generator().manual_seed(7)
    save_file({"diffusion_model.layers.0.attention.to_q.lokr_w1": torch.randn(4, 4, generator=gen) * 0.3,
               "diffusion_model.layers.0.attention.to_q.lokr_w2": torch.randn(8, 8, generator=gen) * 0.3},
              str(tmp_path / "lokr.safetensors"))
    lokr = inspect_lora(tmp_path / "lokr.safetensors")
    plain = lora_for(env, zpipe, "zimage", "lora-zimage")

    spipe, sentry = pipes("sd15", "single-file")
    target = TARGETS["sd15"][0][1]
    ref = copy.deepcopy(spipe.unet)
    cfg = LoraConfig(r=4, lora_alpha=2, target_modules=[target], init_lora_weights=False, use_dora=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8)
        inject_adapter_in_model(cfg, ref, adapter_name="default")
    StableDiffusionPipeline.save_lora_weights(tmp_path, weight_name="dora.safetensors",
                                              unet_lora_layers=get_peft_model_state_dict(ref),
                                              unet_lora_adapter_metadata=cfg.to_dict())
    dora = inspect_lora(tmp_path / "dora.safetensors")

    for family, pipe, entry, loras in (("zimage", zpipe, zentry, [(lokr, 0.7, 1.0), (plain, 0.5, 1.0)]),
                                        ("sd15", spipe, sentry, [(dora, 0.8, 1.0)])):
        patcher = LoraPatcher()
        patcher.apply(pipe, family, loras)
        want = image(pipe, family)
        patcher.unload_all(pipe)
        base_img = image(pipe, family)
        assert abs(want - base_img).max() > 1e-4
        tensors = snapshot(pipe)
        out = merge_loras(pipe, family, loras, out_path=tmp_path / f"{family}-peft.safetensors", fmt="single-file",
                          dtype="fp32", base_entry=entry)
        assert_same_tensors(tensors, pipe)
        assert (image(pipe, family) == base_img).all()
        merged = load_pipeline(identify_path(out), folders=folders)
        merged.set_progress_bar_config(disable=True)
        diff = float(abs(image(merged, family) - want).max())
        assert diff <= TOL, (family, diff)


# ---------------------------------------------------------------------------------------------
# refusals, interruption
# ---------------------------------------------------------------------------------------------

def test_names_and_existing_outputs_are_refused(env, pipes):
    folders, bases = env
    pipe, entry = pipes("sd15", "single-file")
    info = lora_for(env, pipe, "sd15", "lora-sd15")
    for bad in ("../escape", "/abs/path", "", "a/../../b", "x\x00y"):
        with pytest.raises(UnsafeName):
            merge_output_path(folders, bad, "single-file")
    with pytest.raises(InvalidRequest):
        merge_output_path(folders, ".hidden", "single-file")
    with pytest.raises(InvalidRequest):
        merge_output_path(folders, "x.safetensors", "diffusers")
    with pytest.raises(InvalidRequest, match="already exists"):
        merge_output_path(folders, "base-sd15", "single-file")
    with pytest.raises(InvalidRequest, match="already exists"):  # same name as a model of the other format
        merge_output_path(folders, "base-sd15", "diffusers")
    assert merge_output_path(folders, "new.safetensors", "single-file").name == "new.safetensors"

    base_file = bases["sd15", "single-file"]
    before = sha256(base_file)
    for overwrite in (False, True):  # the base itself is never a target
        with pytest.raises(InvalidRequest):
            merge_loras(pipe, "sd15", [(info, 1.0, 1.0)], out_path=base_file, fmt="single-file", dtype="fp16",
                        base_entry=entry, overwrite=overwrite)
    assert sha256(base_file) == before
    with pytest.raises(InvalidRequest):
        merge_loras(pipe, "sd15", [(info, 0.0, 0.0)], out_path=folders.checkpoints / "zero.safetensors",
                    fmt="single-file", dtype="fp16", base_entry=entry)
    with pytest.raises(InvalidRequest):
        merge_loras(pipe, "sd15", [(info, 1.0, 1.0)], out_path=folders.checkpoints / "x.safetensors",
                    fmt="single-file", dtype="int8", base_entry=entry)
    zinfo = lora_for(env, pipes("zimage", "single-file")[0], "zimage", "lora-zimage")
    with pytest.raises(LoraError):
        merge_loras(pipe, "sd15", [(zinfo, 1.0, 1.0)], out_path=folders.checkpoints / "x.safetensors",
                    fmt="single-file", dtype="fp16", base_entry=entry)

    # an existing output is refused, then replaced only with overwrite=True (both formats)
    for fmt, name in (("single-file", "ow.safetensors"), ("diffusers", "ow-d")):
        target = folders.checkpoints / name
        merge_loras(pipe, "sd15", [(info, 1.0, 1.0)], out_path=target, fmt=fmt, dtype="fp16", base_entry=entry)
        first = read_merge_info(target)
        with pytest.raises(InvalidRequest, match="already exists"):
            merge_loras(pipe, "sd15", [(info, 0.5, 0.5)], out_path=target, fmt=fmt, dtype="fp16",
                        base_entry=entry)
        assert read_merge_info(target) == first
        merge_loras(pipe, "sd15", [(info, 0.5, 0.5)], out_path=target, fmt=fmt, dtype="fp16", base_entry=entry,
                    overwrite=True)
        assert read_merge_info(target)["loras"][0]["unet_weight"] == 0.5
    assert not [p for p in folders.checkpoints.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("stop_after", ["fusing", "writing"])
def test_stop_request_writes_nothing(env, pipes, stop_after):
    """A stop seen between stages, or after the temp file is written but before the rename."""
    folders, bases = env
    pipe, entry = pipes("sd15", "single-file")
    info = lora_for(env, pipe, "sd15", "lora-sd15")
    tensors = snapshot(pipe)
    before = set(os.listdir(folders.checkpoints))
    labels = []

    def stop() -> bool:
        return bool(labels) and labels[-1].startswith(stop_after)

    with pytest.raises(Interrupted):
        merge_loras(pipe, "sd15", [(info, 1.0, 1.0)], out_path=folders.checkpoints / "stopped.safetensors",
                    fmt="single-file", dtype="fp16", base_entry=entry, should_stop=stop,
                    on_progress=lambda label, d, t: labels.append(label))
    assert labels[-1].startswith(stop_after)
    assert set(os.listdir(folders.checkpoints)) == before
    assert_same_tensors(tensors, pipe)


def test_parse_lora_arg():
    assert parse_lora_arg("face") == ("face", 1.0, 1.0)
    assert parse_lora_arg("face:0.7") == ("face", 0.7, 0.7)
    assert parse_lora_arg("face:0.7:0.2") == ("face", 0.7, 0.2)
    assert parse_lora_arg("sub/face:v2:-0.5") == ("sub/face:v2", -0.5, -0.5)


# ---------------------------------------------------------------------------------------------
# command line, killed mid-write
# ---------------------------------------------------------------------------------------------

def _read_lines(stream, out: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)
    out.put(None)


#: the merge-lora command in a child process, held before the swap by a ``before_swap`` that sleeps
HOLD_BEFORE_SWAP = """
import sys, time
from modules.cli import build_parser
from modules.cli.lora import run_merge

def hold(temp):
    print(f"visage-test: holding {temp}", file=sys.stderr, flush=True)
    time.sleep(120)

sys.exit(run_merge(build_parser().parse_args(sys.argv[1:]), before_swap=hold))
"""


def test_cli_merge_killed_mid_write_leaves_nothing_then_succeeds(tmp_path):
    """SIGKILL while the merged file exists only under its temp name (held there by the child's
    ``before_swap`` pause): no model appears, the registry lists no temp entry, the base file is
    byte-identical. A second run cleans the leftover and writes the model."""
    from modules.cli import main
    from modules.tiny import install_tiny_clip_tokenizer, make_tiny_model
    from modules.tiny.components import tiny_pipeline

    folders = make_folders(tmp_path)
    install_tiny_clip_tokenizer(folders)
    folders.lora.mkdir(parents=True)
    base = make_tiny_model("sd15", "single-file", folders.checkpoints / "base", seed=3)
    write_lora(folders.lora / "face.safetensors", tiny_pipeline("sd15", 3), "sd15")
    base_hash = sha256(base)
    args = ["merge-lora", "--base", "base", "--lora", "face:0.8:0.5", "--out", "killed", "--dtype", "fp32",
            "--models-dir", str(folders.models), "--cache-dir", str(folders.cache)]

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD_BEFORE_SWAP, *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True).start()
    held, log = None, []
    try:
        while held is None:
            line = lines.get(timeout=180)
            if line is None:
                break
            log.append(line)
            if "visage-test: holding " in line:  # the progress bar's \r-separated text may precede it
                held = Path(line.split("visage-test: holding ", 1)[1].strip())
        assert held is not None, "".join(log)[-3000:]
        assert held.exists() and held.name.startswith(".") and held.name.endswith(".tmp")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    final = folders.checkpoints / "killed.safetensors"
    assert not final.exists()
    names = [e.name for e in ModelRegistry(folders, HashCache(folders.cache / "hashes.json")).scan()]
    assert names == ["base"]
    assert sha256(base) == base_hash

    assert main(args) == 0  # in-process this time; removes the dead process's temp file
    assert final.exists() and not held.exists()
    assert [p.name for p in folders.checkpoints.iterdir() if p.name.startswith(".")] == []
    record = read_merge_info(final)
    assert record["loras"][0]["name"] == "face" and record["loras"][0]["te_weight"] == 0.5
    entry, _ = registry_entry(folders, "killed")
    assert entry.family is Family.SD15
    assert sha256(base) == base_hash
    assert main(args) == 2  # exists now: refused with a one-line error


def test_clear_stale_temps_keeps_live_ones_and_restores_moved_models(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    final = tmp_path / "m.safetensors"
    stale = tmp_path / f".m.safetensors.{dead_pid}.merge.tmp"
    nested = tmp_path / f"..m.safetensors.{dead_pid}.merge.tmp.{dead_pid}.tmp"  # save_single_file's own temp
    live = tmp_path / f".m.safetensors.{os.getpid()}.merge.tmp"
    other = tmp_path / f".n.safetensors.{dead_pid}.merge.tmp"
    for p in (stale, nested, live, other):
        p.write_text("x")
    assert clear_stale_temps(final) == sorted([stale, nested])
    assert live.exists() and other.exists()

    folder = tmp_path / "d"  # a diffusers model moved aside by an overwrite that was killed
    moved = tmp_path / f".d.{dead_pid}.old.tmp"
    moved.mkdir()
    (moved / "model_index.json").write_text("{}")
    assert clear_stale_temps(folder) == []
    assert (folder / "model_index.json").exists() and not moved.exists()
