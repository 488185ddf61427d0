"""Export the pieces of an SD1.x pipeline to ONNX (TorchScript exporter, opset 17).

Every graph takes and returns float32; batch and spatial sizes are dynamic. Weights of graphs over
``EXTERNAL_THRESHOLD`` bytes go to one ``NAME.onnx.data`` file beside the graph (the exporter itself would
write hundreds of files, one per tensor, for the full U-Net; they are gathered into one).
"""
from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

OPSET = 17
EXPORTER = "torchscript"
EXTERNAL_THRESHOLD = 256 * 2**20  # bytes of weights above which they go to a .data file


def text_encoder_module(text_encoder):
    """input_ids -> final-layer-normed hidden state of every layer, stacked: (L+1, B, T, D).

    Index -1 is ``last_hidden_state`` (A1111 clip skip 1); index -k is clip skip k, exactly as
    :func:`modules.generation.encoding._clip_hidden_state` computes it."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = text_encoder

        def forward(self, input_ids):
            out = self.encoder(input_ids, output_hidden_states=True)
            norm = self.encoder.final_layer_norm
            return torch.stack([norm(h) for h in out.hidden_states])

    return TextEncoder().eval()


def unet_module(unet):
    """The U-Net as (sample, timestep, encoder_hidden_states) -> noise prediction."""
    import torch

    class Unet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    return Unet().eval()


def fused_attention(original):
    """An attention processor that exports as ONNX Runtime's fused ``com.microsoft.MultiHeadAttention``.

    Plain ONNX spells attention as MatMul -> Softmax -> MatMul and materialises every score: for a 512x512
    image's self-attention that is 8 x 4096 x 4096 floats per layer (512 MB, twice with the softmax), and the
    static INT8 quantizer then wraps the scores in QuantizeLinear pairs (QLinearSoftmax alone took 43 % of a
    pruned INT8 step). ORT's CPU kernel of the fused op computes attention in tiles (flash attention): one
    4096-token layer measured 0.29 s and 121 MB peak against 0.6 s and 1.2 GB unfused. In torch (and for any
    other call shape, which goes to ``original``) the result is that of ``scaled_dot_product_attention``.
    Graphs with this op run in ONNX Runtime only: ``standard_attention`` is the portable variant."""
    import torch
    import torch.nn.functional as F

    class MultiHeadAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, heads: int):
            batch, dim = q.shape[0], q.shape[-1] // heads
            q, k, v = (x.view(batch, -1, heads, dim).transpose(1, 2) for x in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v)
            return out.transpose(1, 2).reshape(batch, -1, heads * dim)

        @staticmethod
        def symbolic(g, q, k, v, heads: int):
            out = g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=heads)
            out.setType(q.type())
            return out

    class FusedAttnProcessor:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     *args, **kwargs):
            if (attention_mask is not None or hidden_states.ndim != 3 or attn.group_norm is not None
                    or attn.spatial_norm is not None or attn.residual_connection or attn.norm_cross):
                return original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
            out = MultiHeadAttention.apply(q, k, v, attn.heads)
            out = attn.to_out[1](attn.to_out[0](out))
            return out / attn.rescale_output_factor

    return FusedAttnProcessor()


def head_sliced(original):
    """The portable variant of :func:`fused_attention` (standard ONNX ops, e.g. for OpenVINO): self-attention
    one head at a time, so that only one head's 4096 x 4096 scores are alive at once (peak memory of a step
    -0.8 GB against the plain export, speed unchanged). Anything but plain 3-D self-attention goes to
    ``original``."""
    import torch
    import torch.nn.functional as F

    class HeadSlicedAttnProcessor:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     *args, **kwargs):
            if (encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3
                    or attn.group_norm is not None or attn.spatial_norm is not None or attn.residual_connection):
                return original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
            batch = hidden_states.shape[0]
            q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
            dim = k.shape[-1] // attn.heads
            q, k, v = (x.view(batch, -1, attn.heads, dim).transpose(1, 2) for x in (q, k, v))
            heads = [F.scaled_dot_product_attention(q[:, h:h + 1], k[:, h:h + 1], v[:, h:h + 1])
                     for h in range(attn.heads)]
            out = torch.cat(heads, dim=1).transpose(1, 2).reshape(batch, -1, attn.heads * dim)
            out = attn.to_out[1](attn.to_out[0](out))
            return out / attn.rescale_output_factor

    return HeadSlicedAttnProcessor()


#: ``attention=`` of :func:`export_unet`: "fused" (ONNX Runtime's MultiHeadAttention) or "standard" (ONNX ops only)
ATTENTION_KINDS = ("fused", "standard")


def vae_decoder_module(vae):
    """The full VAE decoder as latents (denoiser space) -> images in [0, 1]."""
    import torch

    class VaeDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, latents):
            image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
            return (image / 2 + 0.5).clamp(0, 1)

    return VaeDecoder().eval()


def _export(module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict, *, external: bool | None = None) -> list[Path]:
    """Export ``module`` to ``path``; returns the files written (graph and, if any, its data file)."""
    import onnx
    import torch

    path = Path(path)
    work = path.parent / f".{path.stem}.export"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about python-side shape checks
            torch.onnx.export(module, args, str(work / path.name), input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes, opset_version=OPSET,
                              do_constant_folding=True, dynamo=False, custom_opsets={"com.microsoft": 1})
        weights = sum(p.numel() * p.element_size() for p in module.parameters())
        if external is None:
            external = weights > EXTERNAL_THRESHOLD
        model = onnx.load(str(work / path.name), load_external_data=True)
        data_name = path.name + ".data"
        if external:
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            return [path, path.with_name(data_name)]
        onnx.save_model(model, str(path))
        return [path]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_text_encoder(text_encoder, path: Path, max_length: int = 77) -> list[Path]:
    import torch

    ids = torch.zeros((1, max_length), dtype=torch.int64)
    return _export(text_encoder_module(text_encoder), (ids,), path, ["input_ids"], ["hidden_states"],
                   {"input_ids": {0: "batch"}, "hidden_states": {1: "batch"}})


def export_unet(unet, path: Path, *, latent_size: int = 8, seq_len: int = 77,
                attention: str = "fused") -> list[Path]:
    """The U-Net as (sample, timestep, encoder_hidden_states) -> noise_pred. ``attention``: see
    :data:`ATTENTION_KINDS` (fused: every attention layer; standard: self-attention sliced by head)."""
    import torch

    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)}, not {attention!r}")

    cfg = unet.config
    sample = torch.randn(1, cfg.in_channels, latent_size, latent_size)
    timestep = torch.tensor([500.0])
    ehs = torch.randn(1, seq_len, cfg.cross_attention_dim)
    original = unet.attn_processors
    if attention == "fused":
        unet.set_attn_processor({name: fused_attention(proc) for name, proc in original.items()})
    else:
        unet.set_attn_processor({name: head_sliced(proc) if ".attn1." in name else proc
                                 for name, proc in original.items()})
    try:
        return _export(unet_module(unet), (sample, timestep, ehs), path,
                       ["sample", "timestep", "encoder_hidden_states"], ["noise_pred"],
                       {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                        "encoder_hidden_states": {0: "batch", 1: "sequence"},
                        "noise_pred": {0: "batch", 2: "height", 3: "width"}})
    finally:
        unet.set_attn_processor(original)


def export_decoder(module, path: Path, latent_channels: int = 4, latent_size: int = 8) -> list[Path]:
    """``module``: latents -> [0, 1] images (see :func:`modules.taesd.tae_decoder_module`,
    :func:`vae_decoder_module`)."""
    import torch

    latents = torch.randn(1, latent_channels, latent_size, latent_size)
    return _export(module, (latents,), path, ["latents"], ["images"],
                   {"latents": {0: "batch", 2: "height", 3: "width"},
                    "images": {0: "batch", 2: "height", 3: "width"}})


def versions() -> dict:
    """Library versions recorded in the manifest."""
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "opset": OPSET, "exporter": EXPORTER}
