"""Downloads against a local Hub (tests/hub_server.py, a real HTTP server on 127.0.0.1): starter packs land where
the registry, the LoRA scan and the TAESD lookup look; a cut connection resumes; a wrong checksum, a full disk and
offline are refused with one clear sentence; cancel keeps the part file for the next run; the CLI and the API."""
from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from hub_server import HubServer, hub_env

from modules.downloads import files as files_mod
from modules.downloads.files import fetch_files, part_path
from modules.downloads.hub import parse_hub_url
from modules.downloads.packs import PACKS, ItemKind, get_pack
from modules.downloads.plan import make_plan, plan_pack, run_plan
from modules.errors import DownloadError, Interrupted, InvalidRequest
from modules.families import Family
from modules.paths import Folders

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LCM_REPO = "latent-consistency/lcm-lora-sdv1-5"
BIG = "big/file"  # one 3 MB LFS file, for resume / cancel


def _folder_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tiny_lora(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{key}.lora_down.weight": torch.randn(4, 64, generator=gen),
               f"{key}.lora_up.weight": torch.randn(64, 4, generator=gen), f"{key}.alpha": torch.tensor(4.0)},
              str(path))
    return path


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory):
    """The repos of the SD1.5 CPU pack, tiny, plus a 3 MB file and a non-LoRA single file."""
    import numpy as np
    from safetensors.numpy import save_file as save_np

    from modules.taesd import random_taesd
    from modules.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("hub-src")
    sd15 = make_tiny_model("sd15", "diffusers", root / "sd15")
    random_taesd(Family.SD15).save_pretrained(str(root / "taesd"))
    lora = _tiny_lora(root / "lora.safetensors")
    save_np({"model.diffusion_model.input_blocks.0.0.weight": np.zeros((4, 4), np.float32)},
            str(root / "ckpt.safetensors"))
    repos = {
        SD15_REPO: {**_folder_files(sd15), "README.md": b"# tiny\n", ".gitattributes": b"*.safetensors lfs\n"},
        "madebyollin/taesd": _folder_files(root / "taesd"),
        LCM_REPO: {"pytorch_lora_weights.safetensors": lora.read_bytes(), "README.md": b"# lcm\n"},
        "tiny/single": {"ckpt.safetensors": (root / "ckpt.safetensors").read_bytes()},
        BIG: {"weights.safetensors": os.urandom(3_000_000)},
    }
    return repos


@pytest.fixture
def hub(hub_files, monkeypatch):
    with HubServer(hub_files) as server:
        hub_env(monkeypatch, server)
        yield server


@pytest.fixture
def folders(tmp_path) -> Folders:
    return Folders(models=tmp_path / "models", outputs=tmp_path / "outputs", cache=tmp_path / "cache")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _resolve_gets(hub: HubServer) -> list:
    return [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]


# -- packs --------------------------------------------------------------------------------------------------------
def test_packs_are_typed_data_with_titles_hardware_and_kinds():
    ids = [p.id for p in PACKS]
    assert {"zimage-portrait", "sd15-cpu"} <= set(ids) and len(ids) == len(set(ids))
    z = get_pack("zimage-portrait")
    assert "16 GB" in z.title_en and z.title_zh and z.hardware_en
    assert [(i.kind, i.repo_id) for i in z.items] == [
        (ItemKind.CHECKPOINT_REPO, "Tongyi-MAI/Z-Image-Turbo"), (ItemKind.LORA, "Shakker-Labs/AWPortrait-Z"),
        (ItemKind.TAESD, "madebyollin/taef1")]
    with pytest.raises(InvalidRequest) as exc:  # a bad input, not a failed download
        get_pack("nope")
    assert exc.value.key == "download.unknown_pack" and exc.value.field == "pack"


def test_pack_plan_shows_sizes_then_lands_where_the_registry_looks(hub, folders, tmp_path, hub_files):
    from modules.lora import scan_loras
    from modules.registry import HashCache, ModelRegistry
    from modules.taesd import find_taesd

    cache = tmp_path / "hf"
    plan = plan_pack("sd15-cpu", folders, cache)
    assert not _resolve_gets(hub)  # the plan asked metadata only
    sizes = {i.item.repo_id: i.size for i in plan.items}
    assert sizes["madebyollin/taesd"] == sum(len(b) for b in hub_files["madebyollin/taesd"].values())
    assert sizes[LCM_REPO] == len(hub_files[LCM_REPO]["pytorch_lora_weights.safetensors"])
    sd15 = hub_files[SD15_REPO]
    assert sizes[SD15_REPO] == sum(len(b) for p, b in sd15.items() if p not in ("README.md", ".gitattributes"))
    assert plan.present_bytes == 0 and plan.missing_bytes == plan.total_bytes > 0 and plan.fits
    d = plan.to_dict()
    assert d["pack"] == "sd15-cpu" and d["total_bytes"] == plan.total_bytes and d["free_bytes"] > 0

    seen = []
    run_plan(plan, on_progress=lambda label, done, total: seen.append((label, done, total)))
    assert seen[-1][0] == "done" and seen[-1][1] == seen[-1][2]
    assert any(label.startswith("downloading ") for label, _, _ in seen)
    dones = [d for _, d, _ in seen]
    assert dones == sorted(dones)  # bytes only go up, over the whole plan

    lora = folders.lora / "lcm-lora-sdv1-5.safetensors"
    assert lora.read_bytes() == hub_files[LCM_REPO]["pytorch_lora_weights.safetensors"]
    assert [i.name for i in scan_loras([folders.lora])] == ["lcm-lora-sdv1-5"]
    assert find_taesd(Family.SD15, folders) == folders.vae_approx / "taesd"
    registry = ModelRegistry(folders, HashCache(folders.cache / "hashes.json"), hf_cache=cache)
    found = [e for e in registry.scan(compute_hashes=False) if e.supported]
    assert [e.family for e in found] == [Family.SD15], [(e.name, e.reason) for e in registry.entries()]
    assert not list(folders.models.rglob(".*.part"))

    again = plan_pack("sd15-cpu", folders, cache)  # everything is there now
    assert again.missing_bytes == 0 and all(i.present == i.size for i in again.items)


def test_single_files_go_to_the_right_folder_by_their_header(hub, folders):
    url = f"https://huggingface.co/{LCM_REPO}/blob/main/pytorch_lora_weights.safetensors"
    assert parse_hub_url(url) == (LCM_REPO, "main", "pytorch_lora_weights.safetensors")
    assert parse_hub_url(url.replace("/blob/", "/resolve/") + "?download=true")[2] == "pytorch_lora_weights.safetensors"
    with pytest.raises(InvalidRequest) as exc:
        parse_hub_url("https://example.com/not/a/hub/url")
    assert exc.value.key == "download.bad_url" and exc.value.field == "url"

    lora = make_plan(folders, url=url.replace("https://huggingface.co", hub.url))
    assert lora.items[0].item.kind is ItemKind.LORA
    assert lora.items[0].destination == folders.lora / "pytorch_lora_weights.safetensors"
    ckpt = make_plan(folders, repo_id="tiny/single", filename="ckpt.safetensors")
    assert ckpt.items[0].item.kind is ItemKind.CHECKPOINT_FILE
    assert ckpt.items[0].destination == folders.checkpoints / "ckpt.safetensors"
    run_plan(ckpt)
    assert (folders.checkpoints / "ckpt.safetensors").is_file()


def test_a_tiny_autoencoder_repo_goes_where_the_taesd_lookup_looks(hub, folders):
    """`download madebyollin/taesd` is not a diffusers pipeline: its two top-level files go to
    models/VAE-approx/taesd, and the TAESD lookup finds them."""
    from modules.taesd import find_taesd

    plan = make_plan(folders, repo_id="madebyollin/taesd")
    assert plan.items[0].item.kind is ItemKind.TAESD and plan.items[0].destination == folders.vae_approx / "taesd"
    assert find_taesd(Family.SD15, folders, None) is None
    run_plan(plan)
    assert find_taesd(Family.SD15, folders, None) == folders.vae_approx / "taesd"


# -- one file: resume, checksum, disk, offline, cancel ------------------------------------------------------------
def test_a_cut_connection_resumes_with_a_range_request_and_the_sha256_is_right(hub, tmp_path, hub_files):
    data = hub_files[BIG]["weights.safetensors"]
    hub.drop_after["weights.safetensors"] = 1_000_000
    [path] = fetch_files(BIG, ["weights.safetensors"], tmp_path / "out")
    assert hub.gets("weights.safetensors") == [None, "bytes=1000000-"]
    assert _sha(path.read_bytes()) == _sha(data) and path.stat().st_size == len(data)
    assert not part_path(path).exists()


def test_a_wrong_checksum_is_refused_and_nothing_half_written_stays(hub, folders):
    hub.bad_sha.add("pytorch_lora_weights.safetensors")
    plan = make_plan(folders, repo_id=LCM_REPO, filename="pytorch_lora_weights.safetensors")
    with pytest.raises(DownloadError) as exc:
        run_plan(plan)
    assert exc.value.key == "download.checksum" and "sha256" in str(exc.value)
    assert _resolve_gets(hub)  # it was fetched, then refused
    assert list(folders.lora.iterdir()) == []  # neither the file nor its .part


def test_a_full_disk_is_refused_before_any_byte_is_fetched(hub, folders, tmp_path, monkeypatch):
    real = files_mod.shutil.disk_usage
    monkeypatch.setattr(files_mod.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1000))
    plan = plan_pack("sd15-cpu", folders, tmp_path / "hf")
    assert not plan.fits
    with pytest.raises(DownloadError) as exc:
        run_plan(plan)
    assert exc.value.key == "download.no_space"
    assert "1.0 KB is free" in str(exc.value) and "needs" in str(exc.value)
    with pytest.raises(DownloadError):
        fetch_files(BIG, ["weights.safetensors"], tmp_path / "out")
    assert not _resolve_gets(hub)
    assert not (tmp_path / "out").exists() and not folders.lora.exists()


def test_offline_and_an_unreachable_hub_say_one_clear_sentence(monkeypatch, tmp_path, folders):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as exc:
        fetch_files("madebyollin/taesd", ["config.json"], tmp_path / "taesd")
    text = str(exc.value)
    assert exc.value.key == "download.offline" and "\n" not in text
    assert "madebyollin/taesd" in text and str(tmp_path / "taesd") in text
    assert "python -m modules.cli download madebyollin/taesd config.json" in text
    with pytest.raises(DownloadError) as exc:
        plan_pack("sd15-cpu", folders, tmp_path / "hf")
    assert "python -m modules.cli download --pack sd15-cpu" in str(exc.value)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import huggingface_hub.constants as hf_constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for call in (lambda: fetch_files("madebyollin/taesd", ["config.json"], tmp_path / "taesd"),
                 lambda: plan_pack("sd15-cpu", folders, tmp_path / "hf")):
        with pytest.raises(DownloadError) as exc:
            call()
        assert exc.value.key == "download.unreachable" and f"127.0.0.1:{port}" in str(exc.value)
        assert "\n" not in str(exc.value) and "Traceback" not in str(exc.value)


def test_cancel_keeps_the_part_file_and_the_next_run_resumes(hub, tmp_path, hub_files):
    data = hub_files[BIG]["weights.safetensors"]
    dest = tmp_path / "out"
    seen = []
    with pytest.raises(Interrupted):
        fetch_files(BIG, ["weights.safetensors"], dest, on_progress=lambda *a: seen.append(a[1]),
                    should_stop=lambda: bool(seen) and seen[-1] > 0)
    part = part_path(dest / "weights.safetensors")
    kept = part.stat().st_size
    assert 0 < kept < len(data) and not (dest / "weights.safetensors").exists()
    [path] = fetch_files(BIG, ["weights.safetensors"], dest)
    assert hub.gets("weights.safetensors")[-1] == f"bytes={kept}-"
    assert _sha(path.read_bytes()) == _sha(data) and not part.exists()


# -- the CLI and the API ------------------------------------------------------------------------------------------
def test_cli_download_pack_end_to_end(hub, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "PYTHONPATH": str(REPO_ROOT)}
    models = tmp_path / "models"
    listed = subprocess.run([sys.executable, "-m", "modules.cli", "download", "--list-packs", "--models-dir",
                             str(models)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert listed.returncode == 0, listed.stderr
    sd15_line = next(line for line in listed.stdout.splitlines() if line.startswith("sd15-cpu\t"))
    assert re.search(r"\t\d+\.\d MB$", sd15_line), sd15_line  # its size, asked from the (local) Hub
    assert "zimage-portrait" in listed.stdout and "size unknown" in listed.stdout  # not on the local Hub
    run = subprocess.run([sys.executable, "-m", "modules.cli", "download", "--pack", "sd15-cpu", "--models-dir",
                          str(models)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (models / "Lora" / "lcm-lora-sdv1-5.safetensors").is_file()
    assert (models / "VAE-approx" / "taesd" / "config.json").is_file()
    assert "to download" in run.stderr and "B/s" in run.stderr  # the plan, then the byte bar
    assert str(models / "Lora" / "lcm-lora-sdv1-5.safetensors") in run.stdout
    offline = subprocess.run([sys.executable, "-m", "modules.cli", "download", "--pack", "sd15-cpu", "--models-dir",
                              str(tmp_path / "other")], cwd=REPO_ROOT, env={**env, "HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True, check=False, timeout=120)
    assert offline.returncode == 2 and "Traceback" not in offline.stderr
    assert offline.stderr.strip().startswith("error: cannot download") and len(offline.stderr.strip().splitlines()) == 1


def test_api_post_download_then_progress(hub, tmp_path):
    from api_fixtures import make_settings
    from fastapi.testclient import TestClient

    from modules.api import build_api
    from modules.engine import Engine

    folders = Folders(models=tmp_path / "models", outputs=tmp_path / "outputs", cache=tmp_path / "cache")
    folders.checkpoints.mkdir(parents=True)
    settings = make_settings(folders, hf_cache=tmp_path / "hf", model=None, api_auth=(("u", "p"),))
    engine = Engine(settings)
    engine.start(load_initial=False)
    try:
        client = TestClient(build_api(engine, settings), raise_server_exceptions=False)
        assert client.get("/api/v1/packs").status_code == 401
        client.auth = ("u", "p")
        packs = client.get("/api/v1/packs").json()
        assert {"sd15-cpu", "zimage-portrait"} <= {p["id"] for p in packs}
        assert engine.loras() == []
        r = client.post("/api/v1/downloads", json={"pack": "sd15-cpu"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["plan"]["total_bytes"] > 0 and body["plan"]["pack"] == "sd15-cpu"
        deadline = time.monotonic() + 120
        while True:
            status = client.get(f"/api/v1/downloads/{body['job_id']}").json()
            if status["state"] in ("done", "failed", "interrupted") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status["state"] == "done", status
        assert status["done_bytes"] == status["total_bytes"] > 0 and status["result"]
        assert [i.name for i in engine.loras()] == ["lcm-lora-sdv1-5"]  # listed at once
        assert any(e.supported and e.family == Family.SD15 for e in engine.models())
        bad = client.post("/api/v1/downloads", json={"pack": "nope"})
        assert bad.status_code == 422 and bad.json()["key"] == "download.unknown_pack"
        nothing = client.post("/api/v1/downloads", json={})
        assert nothing.status_code == 422 and nothing.json()["key"] == "download.what"
        assert client.get("/api/v1/downloads/99999").status_code == 404
        plan_only = client.post("/api/v1/downloads", json={"repo_id": LCM_REPO, "filename":
                                                           "pytorch_lora_weights.safetensors", "plan_only": True})
        assert plan_only.json()["job_id"] is None and plan_only.json()["plan"]["items"][0]["kind"] == "lora"
    finally:
        engine.close()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_page_shows_pack_sizes_first_then_downloads_with_a_byte_progress_bar(hub, tmp_path, monkeypatch, lang):
    """Models tab: the starter pack radio lists every pack; "Check sizes" shows each item's size and destination
    without fetching a byte; Download makes the plan again, streams a progress bar, and the new models are listed."""
    from html import escape

    from api_fixtures import make_settings

    from modules.engine import Engine
    from modules.ui import build_blocks
    from modules.ui.i18n import Translator

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    folders = Folders(models=tmp_path / "models", outputs=tmp_path / "outputs", cache=tmp_path / "cache")
    folders.checkpoints.mkdir(parents=True)
    engine = Engine(make_settings(folders, hf_cache=tmp_path / "hf", model=None))
    engine.start(load_initial=False)
    try:
        t = Translator(lang, strict=True)
        demo = build_blocks(engine, t)
        fn = {f.api_name: f.fn for f in demo.fns.values() if f.api_name}
        radio = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "models_packs")
        assert {"sd15-cpu", "zimage-portrait"} <= {value for _label, value in radio.choices}
        fetched = len(_resolve_gets(hub))
        table = fn["plan_download"]("sd15-cpu", "", "")
        assert len(_resolve_gets(hub)) == fetched, "checking sizes fetched file contents"
        assert LCM_REPO in table and "models/Lora" in table and t("models.kind_lora") in table
        assert engine.loras() == []
        outputs = list(fn["download_pack"]("sd15-cpu", "", ""))
        bars = [html for _table, html, _job in outputs if isinstance(html, str) and "<progress" in html]
        assert LCM_REPO in outputs[0][0] and outputs[0][1] == escape(t("models.download_waiting"))  # sizes first
        assert bars, "no byte progress bar"
        assert get_pack("sd15-cpu").title(lang) in outputs[-1][1]
        assert [i.name for i in engine.loras()] == ["lcm-lora-sdv1-5"]
    finally:
        engine.close()
