"""The command line as users and later issues call it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT
from modules.outputs.infotext import parse_infotext
from modules.outputs.saving import read_png_parameters


def cli(*args, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "modules.cli", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_make_tiny_models_list_and_generate(tmp_path):
    models = tmp_path / "models"
    ckpt = models / "Stable-diffusion"
    cli("make-tiny-model", "--family", "sd15", "--format", "diffusers", "--out", ckpt / "tiny-a", "--seed", 1)
    cli("make-tiny-model", "--family", "zimage", "--format", "single-file", "--out", ckpt / "tiny-z.safetensors")
    (ckpt / "old.ckpt").write_bytes(b"not loaded")
    listing = json.loads(cli("models", "--models-dir", models, "--cache-dir", tmp_path / "cache",
                             "--json").stdout)
    by_name = {e["name"]: e for e in listing}
    assert by_name["tiny-a"]["family"] == "sd15" and by_name["tiny-a"]["format"] == "diffusers"
    assert by_name["tiny-z"]["family"] == "zimage" and by_name["tiny-z"]["format"] == "single-file"
    assert len(by_name["tiny-z"]["hash"]) == 10
    assert by_name["old"]["supported"] is False and "pickle" in by_name["old"]["reason"]

    out = cli("generate", "--models-dir", models, "--cache-dir", tmp_path / "cache", "--model", "tiny-a",
              "--prompt", "portrait, 50mm", "--steps", 2, "--width", 64, "--height", 64, "--seed", 99,
              "--sampler", "DDIM", "--out", tmp_path / "out").stdout.split()
    assert len(out) == 1 and out[0].endswith("-99.png")
    prompt, _neg, params = parse_infotext(read_png_parameters(out[0]))
    assert prompt == "portrait, 50mm" and params["Sampler"] == "DDIM" and params["Model"] == "tiny-a"


def test_errors_are_one_line_messages(tmp_path):
    proc = cli("generate", "--models-dir", tmp_path, "--model", "nope", "--prompt", "x", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def test_presets_listing_and_generate_with_preset(tmp_path):
    listing = json.loads(cli("presets", "--json", "--presets-dir", tmp_path / "user").stdout)
    ids = {p["id"] for p in listing["presets"]}
    assert {"realistic_portrait", "anime", "id_photo", "traditional_chinese"} <= ids and len(ids) >= 12
    assert listing["errors"] == []
    models = tmp_path / "models"
    cli("make-tiny-model", "--family", "sd15", "--out", models / "Stable-diffusion" / "tiny")
    out = cli("generate", "--models-dir", models, "--cache-dir", tmp_path / "cache", "--model", "tiny",
              "--preset", "id_photo", "--prompt", "a man", "--steps", 2, "--width", 64, "--height", 64,
              "--seed", 5, "--out", tmp_path / "out").stdout.split()
    prompt, _neg, params = parse_infotext(read_png_parameters(out[0]))
    assert params["Preset"] == "id_photo" and "a man" in prompt and prompt != "a man"
    stats = json.loads(cli("cache-stats", "--cache-dir", tmp_path / "cache", "--json").stdout)
    assert stats["disk_entries"] >= 1, "the generation's embeddings persist on disk"


def test_styles_import_export_round_trip(tmp_path):
    a1111 = tmp_path / "a1111.csv"
    a1111.write_bytes("\ufeffname,prompt,negative_prompt\n胶片,\"{prompt}, film grain\",digital\n#skip,x,y\n"
                      .encode("utf-8"))
    ours = tmp_path / "styles.csv"
    cli("styles", "--styles-file", ours, "--import", a1111)
    listing = cli("styles", "--styles-file", ours).stdout
    assert listing.strip() == "胶片\t{prompt}, film grain\tdigital"
    out = tmp_path / "export.csv"
    cli("styles", "--styles-file", ours, "--export", out)
    from modules.styles import load_styles
    assert load_styles(out) == load_styles(ours)
