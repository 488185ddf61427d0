"""Inputs an edge build samples from the model itself: preset prompts (calibration and distillation),
the recorded U-Net inputs that calibrate static INT8, and the TAESD decoder's calibration latents.
Torch is imported inside the functions."""
from __future__ import annotations

import re
from collections.abc import Sequence

from modules.families import Family

CALIB_PROMPT = "a person"  # the user part put into each preset's template for calibration/distillation


def decoder_calibration(unet_samples: Sequence[dict], channels: int, count: int = 8) -> list[dict]:
    """Calibration inputs for the TAESD decoder: the recorded U-Net latents (unit-variance, like the final
    latents it decodes), or seeded standard-normal latents when none were recorded (dynamic INT8 U-Net)."""
    import numpy as np

    if unet_samples:
        return [{"latents": np.ascontiguousarray(s["sample"][:1])} for s in unet_samples[:count]]
    rng = np.random.default_rng(0)
    return [{"latents": rng.standard_normal((1, channels, 32, 32)).astype(np.float32)} for _ in range(count)]


def preset_prompts(family: Family, count: int) -> list[tuple[str, str]]:
    """(prompt, negative) of the first ``count`` shipped presets for ``family``, filled with a neutral subject."""
    from modules.presets import PresetStore, apply_preset
    from modules.settings import REPO_ROOT

    store = PresetStore([REPO_ROOT / "presets"])
    out = []
    for preset in store.list():
        if family not in preset.families:
            continue
        fields = apply_preset(preset, CALIB_PROMPT, family)
        out.append((re.sub(r"<lora:[^>]*>", "", fields["prompt"]).strip(), fields["negative_prompt"]))
        if len(out) >= count:
            break
    return out or [(CALIB_PROMPT, "")]


def encode_prompt(pipe, family: Family, prompt: str, negative: str):
    """The float32 prompt embeddings of ``prompt`` (no CFG, CPU): the distillation's conditioning."""
    import torch

    from modules.generation.encoding import encode_prompts

    return encode_prompts(pipe, family, prompt, negative, do_cfg=False, clip_skip=1,
                          device=torch.device("cpu"))["prompt_embeds"].float()


def record_unet_inputs(pipe, family: Family, prompts: Sequence[tuple[str, str]], *, steps: int, size: int,
                       seed: int = 0) -> list[dict]:
    """Sample each prompt (Euler, no CFG) and record every U-Net input as numpy feeds for calibration."""
    import numpy as np
    import torch

    from modules.generation.encoding import encode_prompts
    from modules.generation.samplers import make_scheduler

    records: list[dict] = []

    def hook(_module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        ehs = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
        records.append({"sample": sample.detach().float().numpy().copy(),
                        "timestep": np.ascontiguousarray(t.numpy(), dtype=np.float32),
                        "encoder_hidden_states": ehs.detach().float().numpy().copy()})

    old_scheduler = pipe.scheduler
    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        pipe.scheduler = make_scheduler("Euler", old_scheduler.config)
        for i, (prompt, negative) in enumerate(prompts):
            embeds = encode_prompts(pipe, family, prompt, negative, do_cfg=False, clip_skip=1,
                                    device=torch.device("cpu"))
            pipe(prompt_embeds=embeds["prompt_embeds"], height=size, width=size, num_inference_steps=steps,
                 guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(seed + i), output_type="latent")
    finally:
        handle.remove()
        pipe.scheduler = old_scheduler
    return records
