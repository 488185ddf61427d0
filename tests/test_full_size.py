"""Full-size checks (slow): an SD1.5-shaped random model, one 512x512 step, through the real load path."""
from __future__ import annotations

import pytest

from fixtures_models import entry_for, make_folders

pytestmark = pytest.mark.slow


def test_full_size_sd15_single_file_one_step(tmp_path):
    from bench.common import random_pipeline
    from modules.families import Family
    from modules.generation.params import GenerationRequest
    from modules.generation.txt2img import txt2img
    from modules.jobs import Job, JobContext
    from modules.loader import load_pipeline
    from modules.checkpoints.single_file import save_single_file
    from modules.tiny import install_tiny_clip_tokenizer
    import torch

    folders = make_folders(tmp_path)
    install_tiny_clip_tokenizer(folders)
    pipe = random_pipeline(Family.SD15, seed=0, tokenizer_dir=folders.tokenizers / "clip-vit-large-patch14")
    assert sum(p.numel() for p in pipe.unet.parameters()) == 859_520_964
    path = save_single_file(pipe, Family.SD15, folders.checkpoints / "full.safetensors")
    del pipe
    loaded = load_pipeline(entry_for(path, Family.SD15, "single-file"), folders=folders)
    loaded.set_progress_bar_config(disable=True)
    req = GenerationRequest(prompt="a portrait", steps=1, width=512, height=512, seed=1,
                            sampler="Euler").with_defaults(Family.SD15)
    out = txt2img(loaded, Family.SD15, req, JobContext(Job(1, "t", None)), device=torch.device("cpu"))
    assert out.images[0].size == (512, 512)
