"""LoRAs through the engine: <lora:…> tags, Lora hashes infotext, hot swap, exact restore, cache key."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.engine import Engine
from modules.errors import ModelNotFound
from modules.families import Family
from modules.generation.params import GenerationRequest
from modules.lora import LoraError
from modules.outputs.infotext import parse_infotext
from modules.settings import Settings

SMALL = dict(width=64, height=64, steps=2, save=False, seed=21, cfg_scale=3.0)


def write_kohya(path, pipe, seed: int, te: bool = True):
    """A kohya LoRA on some attention layers of ``pipe``'s U-Net (and text encoder), large enough to see."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    targets = [("lora_unet_", pipe.unet, ["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
                                           "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"])]
    if te:
        targets.append(("lora_te_text_model_", pipe.text_encoder, ["encoder.layers.0.self_attn.q_proj",
                                                                    "encoder.layers.1.mlp.fc1"]))
    for prefix, model, names in targets:
        for name in names:
            layer = model.get_submodule(name)
            key = prefix + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"] = torch.randn(4, layer.in_features, generator=g)
            sd[f"{key}.lora_up.weight"] = torch.randn(layer.out_features, 4, generator=g)
            sd[f"{key}.alpha"] = torch.tensor(4.0)
    save_file(sd, str(path))


@pytest.fixture(scope="module")
def engine(tiny_folders, tiny_models, tmp_path_factory):
    tiny_models(Family.SD15, "diffusers")
    tiny_models(Family.SDXL, "diffusers")
    root = tmp_path_factory.mktemp("lora-engine")
    eng = Engine(Settings(models_dir=tiny_folders.models, outputs_dir=root / "out", cache_dir=root / "cache",
                          hf_cache=root / "no-hf", lora_dirs=(root / "loras",)))
    eng.start(load_initial=False)
    eng.switch_model("tiny-sd15-diffusers-0").wait(120)
    pipe = eng.manager.current.pipe
    (root / "loras").mkdir()
    write_kohya(root / "loras" / "face_a.safetensors", pipe, seed=1)
    write_kohya(root / "loras" / "face_b.safetensors", pipe, seed=2, te=False)
    eng.loras(refresh=True)
    yield eng
    eng.close()


def gen(engine, prompt="portrait of a man", **fields):
    return engine.generate(GenerationRequest(model="tiny-sd15-diffusers-0", prompt=prompt, **{**SMALL, **fields}))\
        .wait(120)


def test_lora_tag_applies_records_and_restores_exactly(engine, monkeypatch):
    base = gen(engine)
    loads = []
    original = engine.manager._loader
    monkeypatch.setattr(engine.manager, "_loader", lambda *a: loads.append(a) or original(*a))
    with_lora = gen(engine, prompt="portrait of a man <lora:face_a:0.8>")
    assert with_lora.images[0].tobytes() != base.images[0].tobytes()
    prompt, _neg, params = parse_infotext(with_lora.infotexts[0])
    assert prompt == "portrait of a man <lora:face_a:0.8>"  # A1111 keeps the tag in the infotext
    active = engine.lora_patcher.active(engine.manager.current.pipe)
    assert params["Lora hashes"] == f"face_a: {active[0].hash}" and len(active[0].hash) == 12
    reweighted = gen(engine, prompt="portrait of a man <lora:face_a:0.3>")  # hot swap: weights only
    assert reweighted.images[0].tobytes() not in (with_lora.images[0].tobytes(), base.images[0].tobytes())
    restored = gen(engine)
    assert restored.images[0].tobytes() == base.images[0].tobytes(), "removing all LoRAs must restore the base"
    assert loads == [], "LoRA changes must never reload the base model from disk"


def test_two_loras_and_request_list(engine):
    one = gen(engine, prompt="a face <lora:face_a:1>")
    both = gen(engine, prompt="a face <lora:face_a:1>", loras=[("face_b", 0.7)])
    assert one.images[0].tobytes() != both.images[0].tobytes()
    hashes = parse_infotext(both.infotexts[0])[2]["Lora hashes"]
    assert "face_a:" in hashes and "face_b:" in hashes


def test_text_encoder_lora_weight_changes_the_cache_key(engine):
    gen(engine, prompt="key test <lora:face_a:1>")
    misses = engine.cache_stats().misses
    gen(engine, prompt="key test <lora:face_a:0.5>")
    assert engine.cache_stats().misses == misses + 1, "another text-encoder weight must not hit"
    misses = engine.cache_stats().misses
    gen(engine, prompt="key test <lora:face_b:0.5>")  # U-Net only: the base embeddings are reusable
    gen(engine, prompt="key test")
    assert engine.cache_stats().misses == misses + 1


def test_unknown_lora_and_family_mismatch_fail_at_submit(engine):
    with pytest.raises(ModelNotFound):
        engine.generate(GenerationRequest(model="tiny-sd15-diffusers-0", prompt="<lora:nope:1>"))
    with pytest.raises(LoraError) as info:
        engine.generate(GenerationRequest(model="tiny-sdxl-diffusers-0", prompt="x <lora:face_a:1>"))
    message = str(info.value)
    assert "face_a" in message and "1.5" in message and "XL" in message


def test_merge_job_writes_a_listed_model_matching_base_plus_lora(engine):
    import numpy as np

    job = engine.merge_lora("tiny-sd15-diffusers-0", [("face_a", 0.8, 0.8)], "merged-face-a", dtype="fp32")
    entry = job.wait(300)
    assert entry.name == "merged-face-a" and entry.family == Family.SD15
    assert "merged-face-a" in [e.name for e in engine.models()]
    unmerged = gen(engine, prompt="a face <lora:face_a:0.8>")
    merged = engine.generate(GenerationRequest(model="merged-face-a", prompt="a face", **SMALL)).wait(120)
    diff = np.abs(np.asarray(unmerged.images[0], dtype=np.int16) - np.asarray(merged.images[0], dtype=np.int16))
    assert diff.max() <= 1, f"merged output differs from base+LoRA by {diff.max()} levels"
