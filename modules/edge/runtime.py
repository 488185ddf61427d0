"""Run an edge package: text encoder, U-Net and decoder in ONNX Runtime (or OpenVINO), the rest as in diffusers.

:class:`EdgePipeline` answers the same calls :func:`modules.generation.txt2img.txt2img` makes on a
diffusers ``StableDiffusionPipeline`` (``scheduler``, ``__call__(prompt_embeds=..., generator=...,
callback_on_step_end=...)``, ``to``), so the samplers (diffusers schedulers drive the loop), seeds
(``randn_tensor`` with per-image generators), progress, interrupt and previews are the very same code.
Prompt embeddings go through :meth:`EdgePipeline.encode_prompts`, which has the signature of the
embedding-cache seam (``encode(prompt, negative, do_cfg, clip_skip)``).

Execution providers: ``"cpu"`` (default) or ``"auto"`` (TensorRT, then CUDA, when onnxruntime has them).
"""
from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from modules.edge.manifest import DECODERS, SCHEDULER_DIR, TOKENIZER_DIR, check_package
from modules.errors import InvalidRequest, ModelLoadError, UnsupportedModel
from modules.messages import Message

log = logging.getLogger(__name__)

ENGINES = ("onnxruntime", "openvino")
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(providers) -> list[str]:
    """``"cpu"`` / None -> CPU only; ``"auto"`` -> TensorRT, CUDA when installed, then CPU; a list as given."""
    import onnxruntime as ort

    if providers in (None, "cpu"):
        return ["CPUExecutionProvider"]
    if providers == "auto":
        available = ort.get_available_providers()
        return [p for p in PROVIDER_ORDER if p in available] + ["CPUExecutionProvider"]
    return list(providers)


class OrtRunner:
    """One ONNX Runtime session; ``run(feeds)`` returns the first output as a numpy array."""

    def __init__(self, path: Path, *, providers=None, threads: int = 0, arena: bool = False):
        import onnxruntime as ort

        try:
            ort.disable_telemetry_events()
        except AttributeError:  # older builds
            pass
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = max(0, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = arena  # off: activations go back to the OS after each run (peak RSS)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=choose_providers(providers))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ModelLoadError(f"{Path(path).parent.name}/{Path(path).name}: onnxruntime cannot load it ({msg})") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict):
        return self.session.run(None, feeds)[0]


class OpenVinoRunner:
    """The same graph compiled by OpenVINO for the CPU (per input shape, on first use)."""

    def __init__(self, path: Path, *, threads: int = 0, precision: str = "f32"):
        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.input_names = [i.get_any_name() for i in self.model.inputs]
        self.config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self._compiled: dict = {}

    def run(self, feeds: dict):
        key = tuple((k, tuple(v.shape)) for k, v in sorted(feeds.items()))
        compiled = self._compiled.get(key)
        if compiled is None:
            model = self.model.clone()
            model.reshape({k: list(v.shape) for k, v in feeds.items()})
            compiled = self._compiled[key] = self.core.compile_model(model, "CPU", self.config)
        return compiled(feeds)[compiled.output(0)]


def make_runner(path: Path, *, engine: str = "onnxruntime", providers=None, threads: int = 0,
                ov_precision: str = "f32"):
    if engine == "onnxruntime":
        return OrtRunner(path, providers=providers, threads=threads)
    if engine == "openvino":
        return OpenVinoRunner(path, threads=threads, precision=ov_precision)
    raise InvalidRequest("engine", Message("rule.choice", choices=", ".join(ENGINES)))


@dataclass
class EdgeOutput:
    images: list  # PIL images, or a latents tensor for output_type="latent"


class EdgeDecoder:
    """Latents (torch, denoiser space) -> PIL images with one exported decoder."""

    def __init__(self, runner):
        self.runner = runner

    def decode_tensor(self, latents):
        import torch

        out = self.runner.run({"latents": latents.detach().float().cpu().numpy()})
        return torch.from_numpy(out)

    def decode(self, latents) -> list:
        from modules.taesd import to_pil

        return to_pil(self.decode_tensor(latents))


class EdgePipeline:
    """An edge package loaded for inference (the engine runs it through :class:`modules.backends.edge.EdgeBackend`)."""

    def __init__(self, package: Path, *, providers=None, threads: int = 0, engine: str = "onnxruntime",
                 ov_precision: str = "f32"):
        import diffusers
        from transformers import CLIPTokenizer

        self.package = Path(package)
        self.manifest = check_package(self.package)
        comps = self.manifest["components"]
        if engine == "openvino" and comps["unet"].get("attention", "standard") == "fused":
            raise UnsupportedModel(f"{self.package.name}: its U-Net uses ONNX Runtime's fused attention; "
                                   "rebuild with --attention standard to run it in OpenVINO")
        start = time.perf_counter()

        def runner(name: str):
            return make_runner(self.package / comps[name]["file"], engine=engine, providers=providers,
                               threads=threads, ov_precision=ov_precision)

        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(str(self.package / TOKENIZER_DIR), local_files_only=True)
            config = json.loads((self.package / SCHEDULER_DIR / "scheduler_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{self.package.name}: tokenizer or scheduler unreadable ({exc})") from exc
        cls = getattr(diffusers, str(config.get("_class_name")), diffusers.PNDMScheduler)
        self.scheduler = cls.from_config(config)
        self.text_encoder = runner("text_encoder")
        self.unet = runner("unet")
        self.decoders = {name: EdgeDecoder(runner(name)) for name in DECODERS if name in comps}
        self.engine = engine
        self.latent_channels = int(self.manifest.get("latent_channels", 4))
        self.vae_scale_factor = int(self.manifest.get("vae_scale_factor", 8))
        self.load_seconds = time.perf_counter() - start

    # -- decoders --------------------------------------------------------------------------------
    def decoder(self, prefer: str = "vae") -> EdgeDecoder:
        """The VAE decoder when asked for and packaged, else TAESD (and the other way round)."""
        order = ("vae_decoder", "taesd_decoder") if prefer == "vae" else ("taesd_decoder", "vae_decoder")
        return next(self.decoders[n] for n in order if n in self.decoders)

    def tae(self) -> EdgeDecoder | None:
        """The packaged TAESD decoder (live previews), if any."""
        return self.decoders.get("taesd_decoder")

    # -- text ------------------------------------------------------------------------------------
    def _hidden(self, texts: list[str], clip_skip: int):
        import numpy as np
        import torch

        max_len = self.tokenizer.model_max_length
        ids = self.tokenizer(texts, padding="max_length", max_length=max_len, truncation=True,
                             return_tensors="np").input_ids.astype(np.int64)
        states = self.text_encoder.run({"input_ids": ids})  # (layers + 1, B, T, D)
        if not 1 <= clip_skip < states.shape[0]:
            raise InvalidRequest("clip_skip", Message("rule.between_model", low=1, high=states.shape[0] - 1))
        return torch.from_numpy(np.ascontiguousarray(states[-clip_skip]))

    def encode_prompts(self, prompt: str, negative: str, do_cfg: bool, clip_skip: int = 1) -> dict:
        """The embedding-cache seam: same keys and values as :func:`modules.generation.encoding.encode_prompts`."""
        if do_cfg:
            both = self._hidden([negative or "", prompt], clip_skip)
            return {"prompt_embeds": both[1:2], "negative_prompt_embeds": both[0:1]}
        return {"prompt_embeds": self._hidden([prompt], clip_skip), "negative_prompt_embeds": None}

    # -- sampling --------------------------------------------------------------------------------
    def __call__(self, *, prompt_embeds, negative_prompt_embeds=None, height: int, width: int,
                 num_inference_steps: int, guidance_scale: float = 1.0, num_images_per_prompt: int = 1,
                 generator=None, output_type: str = "pil", callback_on_step_end=None,
                 callback_on_step_end_tensor_inputs=("latents",), decoder: str = "vae", **_unused) -> EdgeOutput:
        """The denoising loop of diffusers' ``StableDiffusionPipeline`` with the U-Net in ONNX."""
        import numpy as np
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        do_cfg = guidance_scale > 1.0
        n = num_images_per_prompt
        pos = prompt_embeds.float().repeat_interleave(n, dim=0)
        if do_cfg:
            if negative_prompt_embeds is None:
                raise InvalidRequest("negative_prompt_embeds", "needed when guidance_scale > 1")
            cond = torch.cat([negative_prompt_embeds.float().repeat_interleave(n, dim=0), pos])
        else:
            cond = pos
        cond_np = cond.numpy()

        sched = self.scheduler
        sched.set_timesteps(num_inference_steps, device="cpu")
        shape = (pos.shape[0], self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        latents = latents * sched.init_noise_sigma
        params = set(inspect.signature(sched.step).parameters)
        extra = {k: v for k, v in (("eta", 0.0), ("generator", generator)) if k in params}

        for i, t in enumerate(sched.timesteps):
            model_in = torch.cat([latents] * 2) if do_cfg else latents
            model_in = sched.scale_model_input(model_in, t)
            feeds = {"sample": model_in.float().numpy(),
                     "timestep": np.full((model_in.shape[0],), float(t), dtype=np.float32),
                     "encoder_hidden_states": cond_np}
            noise = torch.from_numpy(self.unet.run(feeds))
            if do_cfg:
                uncond, text = noise.chunk(2)
                noise = uncond + guidance_scale * (text - uncond)
            latents = sched.step(noise, t, latents, **extra, return_dict=False)[0]
            if callback_on_step_end is not None:
                names = callback_on_step_end_tensor_inputs or ()
                outputs = callback_on_step_end(self, i, t, {k: latents for k in names if k == "latents"}) or {}
                latents = outputs.pop("latents", latents)

        if output_type == "latent":
            return EdgeOutput(images=latents)
        return EdgeOutput(images=self.decoder(decoder).decode(latents))


def load_edge_pipeline(package: Path, *, providers=None, threads: int = 0) -> EdgePipeline:
    """Load ``package`` (a folder under models/edge) with ONNX Runtime."""
    return EdgePipeline(package, providers=providers, threads=threads)
