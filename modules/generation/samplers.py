"""Sampler names (A1111's) to diffusers schedulers, built from the model's own scheduler config."""
from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)

from modules.errors import InvalidRequest
from modules.messages import Message

# name -> (scheduler class, config overrides)
_SAMPLERS = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ 2M Karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "UniPC": (UniPCMultistepScheduler, {}),
    "DDIM": (DDIMScheduler, {}),
    "LCM": (LCMScheduler, {}),
    "Euler (flow match)": (FlowMatchEulerDiscreteScheduler, {}),
}

def make_scheduler(name: str, base_config):
    """A fresh scheduler for ``name`` that keeps the model's own beta/sigma settings."""
    try:
        cls, overrides = _SAMPLERS[name]
    except KeyError:
        raise InvalidRequest("sampler", Message("rule.unknown_sampler", name=name)) from None
    return cls.from_config(base_config, **overrides)
