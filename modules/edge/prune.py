"""Structured pruning of an SD1.x U-Net with ``torch-pruning``, and a short data-free distillation.

What is pruned: the *inner* channels of each block, so the U-Net keeps its interface and its
residual/skip widths (``block_out_channels``) and every shape stays valid:

* ResNet blocks: ``conv1`` output channels (with ``norm2``, ``time_emb_proj`` and ``conv2``'s input),
  the same number in every GroupNorm group, so group boundaries keep their meaning;
* attention (self and cross): query/key/value/output head dimensions, the same number in every head
  (the head count is unchanged; queries are rescaled so that the softmax temperature stays that of
  the original head size);
* feed-forward (GEGLU): hidden units (both halves of the GEGLU projection together).

Which channels go: the lowest L2 magnitude over every weight the channel touches (torch-pruning's
``GroupMagnitudeImportance``). torch-pruning's ``DependencyGraph``, traced once through the whole U-Net,
finds the coupled layers of each group; a group that reaches outside its own block is left alone.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class PruneReport:
    ratio: float
    params_before: int
    params_after: int
    groups_pruned: int = 0
    groups_skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "params_before": self.params_before, "params_after": self.params_after,
                "groups_pruned": self.groups_pruned, "groups_skipped": len(self.groups_skipped),
                "seconds": round(self.seconds, 2)}


@dataclass
class DistillReport:
    steps: int
    seconds: float
    losses: list[float]
    latent_size: int
    lr: float

    def to_dict(self) -> dict:
        first = self.losses[:3]
        last = self.losses[-3:]
        return {"steps": self.steps, "seconds": round(self.seconds, 2), "latent_size": self.latent_size,
                "lr": self.lr, "loss_first": [round(x, 6) for x in first], "loss_last": [round(x, 6) for x in last]}


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _targets(unet):
    """(block name, root layer, pruning function, channel count, buckets, attention module or None)."""
    import torch
    import torch_pruning as tp
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    out = []
    for name, m in unet.named_modules():
        if isinstance(m, ResnetBlock2D):
            out.append((name, m.conv1, tp.prune_conv_out_channels, m.conv1.out_channels, m.norm2.num_groups, None))
        elif isinstance(m, Attention):
            if getattr(m, "to_q", None) is not None and not getattr(m, "residual_connection", False):
                out.append((name, m.to_q, tp.prune_linear_out_channels, m.to_q.out_features, m.heads, m))
        if isinstance(m, BasicTransformerBlock) and getattr(m, "ff", None) is not None:
            last = m.ff.net[-1]
            if isinstance(last, torch.nn.Linear):
                out.append((f"{name}.ff", last, tp.prune_linear_in_channels, last.in_features, 1, None))
    return out


def _choose(importance, n: int, buckets: int, ratio: float) -> list[int]:
    """Indices to remove: the same count from each of ``buckets`` contiguous buckets, least important first."""
    size = n // buckets
    remove = min(size - 1, int(round(size * ratio)))
    if remove <= 0 or size * buckets != n:
        return []
    idxs = []
    for b in range(buckets):
        part = importance[b * size:(b + 1) * size]
        order = sorted(range(size), key=lambda i: float(part[i]))
        idxs.extend(b * size + i for i in order[:remove])
    return sorted(idxs)


def _inside(group, prefix: str, names: dict) -> bool:
    for dep, _idxs in group:
        module = dep.target.module
        name = names.get(id(module))
        if name is None:  # an op node (add, reshape, ...), not a layer
            continue
        if not (name == prefix or name.startswith(prefix + ".")):
            return False
    return True


def prune_unet(unet, ratio: float, *, example_size: int = 16, seq_len: int = 8,
               on_progress: Progress | None = None) -> PruneReport:
    """Prune ``unet`` in place (float32, CPU). ``ratio`` in [0, 0.9]: share of inner channels removed."""
    import torch
    import torch_pruning as tp

    if not 0.0 <= ratio <= 0.9:
        raise ValueError("prune ratio must be between 0 and 0.9")
    start = time.perf_counter()
    before = count_params(unet)
    report = PruneReport(ratio=ratio, params_before=before, params_after=before)
    if ratio == 0:
        return report
    unet.eval()
    cfg = unet.config
    example = (torch.randn(1, cfg.in_channels, example_size, example_size), torch.tensor([500.0]),
               torch.randn(1, seq_len, cfg.cross_attention_dim))
    grads = {p: p.requires_grad for p in unet.parameters()}
    try:
        unet.requires_grad_(True)  # the graph is traced through autograd
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                unet, example_inputs=example, forward_fn=lambda m, x: m(*x, return_dict=False)[0])
    finally:
        for p, flag in grads.items():
            p.requires_grad_(flag)
    names = {id(m): n for n, m in unet.named_modules()}
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    targets = _targets(unet)
    for i, (block, root, fn, n, buckets, attn) in enumerate(targets):
        if on_progress is not None:
            on_progress("pruning", i, len(targets))
        prefix = block[:-3] if block.endswith(".ff") else block
        full = graph.get_pruning_group(root, fn, idxs=list(range(n)))
        if not _inside(full, prefix, names):
            report.groups_skipped.append(block)
            continue
        scores = importance(full)
        if scores is None:
            report.groups_skipped.append(block)
            continue
        idxs = _choose(scores.tolist(), n, buckets, ratio)
        if not idxs:
            continue
        group = graph.get_pruning_group(root, fn, idxs=idxs)
        if not graph.check_pruning_group(group):
            report.groups_skipped.append(block)
            continue
        group.prune()
        if attn is not None:
            _keep_temperature(attn, n // buckets, (n - len(idxs)) // buckets)
        report.groups_pruned += 1
    report.params_after = count_params(unet)
    report.seconds = time.perf_counter() - start
    if report.groups_skipped:
        log.info("pruning left %d coupled group(s) alone, e.g. %s", len(report.groups_skipped),
                 report.groups_skipped[0])
    return report


def _keep_temperature(attn, old_dim: int, new_dim: int) -> None:
    """Scaled dot-product attention divides by sqrt(head_dim): scale queries so the scores stay as before."""
    import torch

    factor = math.sqrt(new_dim / old_dim)
    with torch.no_grad():
        attn.to_q.weight.mul_(factor)
        if attn.to_q.bias is not None:
            attn.to_q.bias.mul_(factor)


# ---------------------------------------------------------------------------------------------
# data-free distillation
# ---------------------------------------------------------------------------------------------

def distill(student, teacher, embeddings: Sequence, alphas_cumprod, *, steps: int, latent_size: int = 32,
            lr: float = 1e-5, seed: int = 0, on_progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None) -> DistillReport:
    """Teach ``student`` (pruned) to match ``teacher`` (unpruned) on noisy latents.

    No images are needed: each step draws clean latents ~ N(0, I), a timestep uniformly from the training
    range, noises them with the scheduler's ``alphas_cumprod`` and takes a prompt embedding from
    ``embeddings`` (encoded preset prompts); loss = MSE between the two noise predictions.
    """
    import torch

    if steps <= 0:
        return DistillReport(0, 0.0, [], latent_size, lr)
    if not embeddings:
        raise ValueError("distillation needs at least one prompt embedding")
    start = time.perf_counter()
    gen = torch.Generator("cpu").manual_seed(seed)
    teacher.eval().requires_grad_(False)
    student.train().requires_grad_(True)
    optim = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    acp = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
    channels = student.config.in_channels
    losses = []
    try:
        for step in range(steps):
            if should_stop is not None and should_stop():
                from modules.errors import Interrupted

                raise Interrupted(step, steps)
            if on_progress is not None:
                on_progress("distilling", step, steps)
            x0 = torch.randn(1, channels, latent_size, latent_size, generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            t = int(torch.randint(0, len(acp), (1,), generator=gen))
            a = acp[t]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            ehs = embeddings[int(torch.randint(0, len(embeddings), (1,), generator=gen))]
            tt = torch.tensor([float(t)])
            with torch.no_grad():
                target = teacher(xt, tt, ehs, return_dict=False)[0]
            pred = student(xt, tt, ehs, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(pred, target)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            losses.append(float(loss.detach()))
    finally:
        student.eval().requires_grad_(False)
        del optim
    return DistillReport(steps, time.perf_counter() - start, losses, latent_size, lr)
