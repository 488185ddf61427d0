"""Applying LoRAs to tiny pipelines: exactness against PEFT references, reversibility, hot swap, errors.

Every LoRA file here is written by the test itself from a random PEFT LoRA on a copy of the tiny
model's own layers (the reference), in the real key layouts: kohya (SD1.5 diffusers names, SDXL sgm
names, te/te1/te2, per-layer alpha, LoCon convs), diffusers ``save_lora_weights`` with and without
metadata, Z-Image ``diffusion_model.*`` and kohya ``lora_unet_layers_*``, cloneofsimo ``unet:{i}:up``.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
tiny = pytest.importorskip("modules.tiny.components")

from safetensors.torch import save_file  # noqa: E402

from modules.families import Family  # noqa: E402
from modules.lora import LoraError, LoraFormat, ensure_hashes, inspect_lora  # noqa: E402
from modules.lora import keymap  # noqa: E402
from modules.lora import patcher as patcher_mod  # noqa: E402
from modules.lora.patcher import LoraPatcher, text_encoder_state  # noqa: E402

TOL = 1e-5


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def pipes():
    built: dict[str, object] = {}

    def get(family: str):
        if family not in built:
            pipe = tiny.tiny_pipeline(family, seed=0)
            pipe.set_progress_bar_config(disable=True)
            built[family] = pipe
        return built[family]

    return get


@pytest.fixture
def sd15(pipes):
    pipe = pipes("sd15")
    yield pipe
    _strip(pipe)


@pytest.fixture
def sdxl(pipes):
    pipe = pipes("sdxl")
    yield pipe
    _strip(pipe)


@pytest.fixture
def zimage(pipes):
    pipe = pipes("zimage")
    yield pipe
    _strip(pipe)


def _strip(pipe):
    """Leave the shared pipeline without any adapter for the next test."""
    pipe.unload_lora_weights()


def image(pipe, family: str = "sd15"):
    kwargs = dict(num_inference_steps=2, height=64, width=64, output_type="np",
                  generator=torch.Generator().manual_seed(0))
    if family == "zimage":
        kwargs["guidance_scale"] = 0.0
    return pipe("a photo of a woman", **kwargs).images[0]


def peft_reference(model, targets: list[str], rank: int = 4, alpha: float = 4.0, seed: int = 0,
                   alpha_pattern: dict | None = None, rank_pattern: dict | None = None):
    """A deep copy of ``model`` with a random PEFT LoRA on ``targets`` (the ground truth)."""
    from peft import LoraConfig, inject_adapter_in_model

    ref = copy.deepcopy(model)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False,
                     alpha_pattern=alpha_pattern or {}, rank_pattern=rank_pattern or {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(cfg, ref, adapter_name="default")
    return ref, cfg


def ref_layers(ref, targets):
    """module -> (down, up, alpha) as stored by the PEFT reference."""
    out = {}
    for name in targets:
        layer = ref.get_submodule(name)
        down = layer.lora_A["default"].weight.detach().clone()
        up = layer.lora_B["default"].weight.detach().clone()
        alpha = layer.scaling["default"] * layer.r["default"]
        out[name] = (down, up, float(alpha))
    return out


def layer_delta(layer) -> torch.Tensor:
    """What a (PEFT-wrapped) layer adds to its base layer's output on a fixed input."""
    base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
    if not hasattr(layer, "get_base_layer"):
        return torch.zeros(1)
    with torch.no_grad():
        if isinstance(base, torch.nn.Conv2d):
            x = torch.randn(1, base.in_channels, 6, 6, generator=torch.Generator().manual_seed(3))
        else:
            x = torch.eye(base.in_features)
        return layer(x) - base(x)


def assert_delta(pipe_model, ref_model, module: str, weight: float = 1.0, tol: float = TOL):
    got = layer_delta(pipe_model.get_submodule(module))
    want = layer_delta(ref_model.get_submodule(module)) * weight
    scale = max(1.0, want.abs().max().item())
    assert got.shape == want.shape, module
    assert (got - want).abs().max().item() <= tol * scale, module
    return got


def kohya_file(path: Path, layers: dict[str, tuple], names: dict[str, str], extra: dict | None = None) -> Path:
    sd = {}
    for module, (down, up, alpha) in layers.items():
        k = names[module]
        sd[f"{k}.lora_down.weight"] = down.contiguous()
        sd[f"{k}.lora_up.weight"] = up.contiguous()
        sd[f"{k}.alpha"] = torch.tensor(alpha)
    sd.update(extra or {})
    save_file(sd, str(path))
    return path


SD15_UNET = ["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
             "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
             "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0",
             "up_blocks.0.attentions.2.transformer_blocks.0.ff.net.0.proj",
             "mid_block.attentions.0.proj_in",  # 1x1 conv in SD1.5
             "down_blocks.0.resnets.1.conv1"]  # 3x3 conv (LoCon)
SD15_TE = ["encoder.layers.0.self_attn.q_proj", "encoder.layers.1.self_attn.out_proj", "encoder.layers.1.mlp.fc1"]


def sd15_kohya(tmp_path, pipe, seed=0, name="kohya_sd15", unet_targets=SD15_UNET, te_targets=SD15_TE,
               extra=None, alpha=2.0):
    """kohya SD1.5 LoRA (unet + te, alpha != rank, one layer with its own alpha, one with its own
    rank) and its references."""
    uref, _ = peft_reference(pipe.unet, unet_targets, rank=4, alpha=alpha, seed=seed,
                             alpha_pattern={"attn2.to_k": 8.0}, rank_pattern={"ff.net.0.proj": 2})
    layers = ref_layers(uref, unet_targets)
    names = {m: "lora_unet_" + m.replace(".", "_") for m in unet_targets}
    tref = None
    if te_targets:
        tref, _ = peft_reference(pipe.text_encoder, te_targets, rank=4, alpha=1.0, seed=seed + 1)
        layers.update(ref_layers(tref, te_targets))
        names.update({m: "lora_te_text_model_" + m.replace(".", "_") for m in te_targets})
    path = kohya_file(tmp_path / f"{name}.safetensors", layers, names, extra)
    return inspect_lora(path), uref, tref


# ---------------------------------------------------------------------------------------------
# exactness per format
# ---------------------------------------------------------------------------------------------

def test_kohya_sd15_matches_peft_and_reports_unmatched(tmp_path, sd15):
    bogus = "lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q"
    fake = {f"{bogus}.lora_down.weight": torch.ones(4, 64), f"{bogus}.lora_up.weight": torch.ones(64, 4),
            f"{bogus}.alpha": torch.tensor(4.0)}
    info, uref, tref = sd15_kohya(tmp_path, sd15, extra=fake)
    assert (info.format, info.family, info.has_text_encoder) == (LoraFormat.KOHYA, Family.SD15, True)
    report = LoraPatcher().apply(sd15, "sd15", [(info, 0.75, 0.5)])
    assert report.applied == ["kohya_sd15"] and report.loaded == ["kohya_sd15"]
    assert report.unmatched_count == 1
    assert "down_blocks_7" in report.unmatched_examples[0]
    for m in SD15_UNET:
        assert_delta(sd15.unet, uref, m, 0.75)
    for m in SD15_TE:
        assert_delta(sd15.text_encoder, tref, m, 0.5)
    # the per-layer alpha really differs (8/4 vs 2/4): the reference would not match otherwise
    assert uref.get_submodule(SD15_UNET[1]).scaling["default"] == 2.0
    assert uref.get_submodule(SD15_UNET[0]).scaling["default"] == 0.5
    assert sd15.unet.get_submodule(SD15_UNET[3]).r[report.active[0].adapter] == 2  # its own rank


def test_kohya_sdxl_sgm_names_te1_te2(tmp_path, sdxl):
    from diffusers import StableDiffusionXLPipeline

    sgm = {  # diffusers module -> kohya (sgm) name, worked out by hand for the tiny SDXL U-Net
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
        "down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_k": "input_blocks_5_1_transformer_blocks_1_attn2_to_k",
        "mid_block.attentions.0.transformer_blocks.0.ff.net.2": "middle_block_1_transformer_blocks_0_ff_net_2",
        "up_blocks.0.attentions.2.proj_out": "output_blocks_2_1_proj_out",
        "down_blocks.0.resnets.1.conv1": "input_blocks_2_0_in_layers_2",
        "up_blocks.0.resnets.0.time_emb_proj": "output_blocks_0_0_emb_layers_1",
    }
    unet_targets = list(sgm)
    uref, _ = peft_reference(sdxl.unet, unet_targets, rank=4, alpha=2.0, seed=5)
    t1 = ["encoder.layers.0.self_attn.q_proj"]
    t2 = ["text_model.encoder.layers.1.mlp.fc1", "text_projection"]
    r1, _ = peft_reference(sdxl.text_encoder, t1, seed=6)
    r2, _ = peft_reference(sdxl.text_encoder_2, t2, seed=7)
    layers = {**ref_layers(uref, unet_targets), **ref_layers(r1, t1), **ref_layers(r2, t2)}
    names = {m: "lora_unet_" + n for m, n in sgm.items()}
    names[t1[0]] = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    names[t2[0]] = "lora_te2_text_model_encoder_layers_1_mlp_fc1"
    names[t2[1]] = "lora_te2_text_projection"
    path = kohya_file(tmp_path / "xl.safetensors", layers, names)

    # diffusers' own converter maps the hand-written sgm names to the same modules
    converted, _ = StableDiffusionXLPipeline.lora_state_dict(str(path), unet_config=sdxl.unet.config)
    got = {re.sub(r"(_lora)?\.(lora\.)?down\.weight$", "", k.removeprefix("unet.")).replace(".processor.", ".")
           for k in converted if k.startswith("unet.") and k.endswith("down.weight")}
    assert got == set(unet_targets)

    info = inspect_lora(path)
    assert (info.format, info.family, info.text_encoders) == (
        LoraFormat.KOHYA, Family.SDXL, ("text_encoder", "text_encoder_2"))
    report = LoraPatcher().apply(sdxl, "sdxl", [(info, 1.0, 0.8)])
    assert report.unmatched_count == 0
    for m in unet_targets:
        assert_delta(sdxl.unet, uref, m, 1.0)
    assert_delta(sdxl.text_encoder, r1, t1[0], 0.8)
    for m in t2:
        assert_delta(sdxl.text_encoder_2, r2, m, 0.8)


def test_diffusers_format_with_and_without_metadata(tmp_path, sd15):
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    unet_targets = SD15_UNET[:3]
    uref, ucfg = peft_reference(sd15.unet, unet_targets, rank=4, alpha=2.0, seed=11)
    tref, tcfg = peft_reference(sd15.text_encoder, SD15_TE[:1], rank=4, alpha=8.0, seed=12)
    kwargs = dict(unet_lora_layers=get_peft_model_state_dict(uref),
                  text_encoder_lora_layers=get_peft_model_state_dict(tref))
    StableDiffusionPipeline.save_lora_weights(tmp_path / "meta", weight_name="with_meta.safetensors",
                                              unet_lora_adapter_metadata=ucfg.to_dict(),
                                              text_encoder_lora_adapter_metadata=tcfg.to_dict(), **kwargs)
    StableDiffusionPipeline.save_lora_weights(tmp_path / "plain", weight_name="no_meta.safetensors", **kwargs)
    with_meta = inspect_lora(tmp_path / "meta" / "with_meta.safetensors")
    no_meta = inspect_lora(tmp_path / "plain" / "no_meta.safetensors")
    assert (with_meta.format, with_meta.alpha_present) == (LoraFormat.DIFFUSERS, True)
    assert (no_meta.format, no_meta.alpha_present) == (LoraFormat.DIFFUSERS, False)
    assert any("alpha" in n for n in no_meta.notes)

    patcher = LoraPatcher()
    patcher.apply(sd15, "sd15", [(with_meta, 1.0, 1.0)])
    for m in unet_targets:
        assert_delta(sd15.unet, uref, m)
    assert_delta(sd15.text_encoder, tref, SD15_TE[0])
    # without metadata the file cannot tell alpha: alpha = rank, i.e. the reference times r/alpha
    patcher.apply(sd15, "sd15", [(no_meta, 1.0, 1.0)])
    assert_delta(sd15.unet, uref, unet_targets[0], 4 / 2.0)
    assert_delta(sd15.text_encoder, tref, SD15_TE[0], 4 / 8.0)


def test_zimage_diffusion_model_and_kohya_keys(tmp_path, zimage):
    targets = ["layers.0.attention.to_q", "layers.0.attention.to_out.0", "layers.1.feed_forward.w2",
               "noise_refiner.0.attention.to_k"]
    ref, _ = peft_reference(zimage.transformer, targets, rank=4, alpha=4.0, seed=21)  # no alpha: scale 1
    kref, _ = peft_reference(zimage.transformer, targets[:2], rank=4, alpha=2.0, seed=22)
    sd = {}
    for m, (down, up, _) in ref_layers(ref, targets).items():
        sd[f"diffusion_model.{m}.lora_A.weight"] = down
        sd[f"diffusion_model.{m}.lora_B.weight"] = up
    sd["diffusion_model.layers.9.attention.to_q.lora_A.weight"] = torch.ones(4, 32)
    sd["diffusion_model.layers.9.attention.to_q.lora_B.weight"] = torch.ones(32, 4)
    save_file(sd, str(tmp_path / "awportrait_style.safetensors"))
    info = inspect_lora(tmp_path / "awportrait_style.safetensors")
    assert (info.format, info.family, info.alpha_present) == (LoraFormat.DIFFUSION_MODEL, Family.ZIMAGE, False)

    base = image(zimage, "zimage")
    patcher = LoraPatcher()
    report = patcher.apply(zimage, "zimage", [(info, 0.6, 1.0)])
    assert report.unmatched_count == 1 and "layers.9" in report.unmatched_examples[0]
    for m in targets:
        assert_delta(zimage.transformer, ref, m, 0.6)
    assert not (image(zimage, "zimage") == base).all()
    patcher.apply(zimage, "zimage", [])
    assert (image(zimage, "zimage") == base).all()

    names = {targets[0]: "lora_unet_layers_0_attention_to_q", targets[1]: "lora_unet_layers_0_attention_to_out_0"}
    path = kohya_file(tmp_path / "zi_kohya.safetensors", ref_layers(kref, targets[:2]), names)
    kinfo = inspect_lora(path)
    assert (kinfo.format, kinfo.family) == (LoraFormat.KOHYA, Family.ZIMAGE)
    patcher.apply(zimage, "zimage", [(kinfo, 1.0, 1.0)])
    for m in targets[:2]:
        assert_delta(zimage.transformer, kref, m, 1.0)


def _cloneofsimo_file(tmp_path, pipe, rank=2, seed=31):
    """A tiny file in lora_diffusion's layout (per block attn1 q,k,v,out, ff proj, attn2 q,k,v,out;
    down, up, mid; CLIP attention k,v,q,out), plus a textual-inversion token."""
    blocks = []
    for group in ("down_blocks", "up_blocks", "mid_block"):
        blocks += [n for n, m in pipe.unet.named_modules()
                   if n.startswith(group + ".") and type(m).__name__ == "BasicTransformerBlock"]
    attn = lambda b, a: [f"{b}.{a}.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0")]  # noqa: E731
    unet_order = [m for b in blocks for m in attn(b, "attn1") + [f"{b}.ff.net.0.proj"] + attn(b, "attn2")]
    te_layers = sorted({int(x.group(1)) for n, _ in pipe.text_encoder.named_modules()
                        if (x := re.match(r"encoder\.layers\.(\d+)\.self_attn$", n))})
    te_order = [f"encoder.layers.{i}.self_attn.{p}"
                for i in te_layers for p in ("k_proj", "v_proj", "q_proj", "out_proj")]
    uref, _ = peft_reference(pipe.unet, unet_order, rank=rank, alpha=rank, seed=seed)
    tref, _ = peft_reference(pipe.text_encoder, te_order, rank=rank, alpha=rank, seed=seed + 1)
    sd = {}
    for part, order, ref in (("unet", unet_order, uref), ("text_encoder", te_order, tref)):
        for i, (down, up, _) in enumerate(ref_layers(ref, order).values()):
            sd[f"{part}:{i}:down"], sd[f"{part}:{i}:up"] = down, up
    sd["<s1>"] = torch.zeros(32)
    path = tmp_path / "clone.safetensors"
    save_file(sd, str(path), metadata={"<s1>": "<embed>", "unet": '["CrossAttention", "Attention", "GEGLU"]'})
    return path, uref, tref, unet_order, te_order


def test_cloneofsimo_tiny_file(tmp_path, sd15):
    path, uref, tref, unet_order, te_order = _cloneofsimo_file(tmp_path, sd15)
    info = inspect_lora(path)
    assert info.format == LoraFormat.CLONEOFSIMO and info.supported
    report = LoraPatcher().apply(sd15, "sd15", [(info, 1.0, 1.0)])
    assert report.unmatched_count == 0
    assert any("<s1>" in n for n in report.notes)
    for m in unet_order[:6] + unet_order[-3:]:
        assert_delta(sd15.unet, uref, m)
    for m in te_order[:4]:
        assert_delta(sd15.text_encoder, tref, m)


def test_real_cloneofsimo_files_fit_full_size_sd15(shared_assets):
    """Non-circular check of the cloneofsimo index order: the real files' shapes line up with a
    full-size SD1.5 U-Net / CLIP-L (built on the meta device) in the old layout and not the other."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
            attention_head_dim=8)
        te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                          num_attention_heads=12, projection_dim=768))
    fake_pipe = SimpleNamespace(unet=unet, text_encoder=te)
    tables = {"unet": keymap.lora_modules(unet), "text_encoder": keymap.lora_modules(te)}
    for fname in ("cloneofsimo_lora_disney.safetensors", "cloneofsimo_analog_svd_rank4.safetensors"):
        sd = load_file(str(shared_assets / "lora" / fname))
        targets, unmatched = keymap.cloneofsimo_layers(fake_pipe, sd, tables)
        assert not unmatched
        assert sum(1 for c, _ in targets if c == "unet") == 144
        assert sum(1 for c, _ in targets if c == "text_encoder") == 48
        old, new = keymap.cloneofsimo_orders(unet)
        entries = {}
        for key, tensor in sd.items():
            if key.startswith("unet:"):
                _, i, kind = key.split(":")
                layer = entries.setdefault(int(i), keymap.Layer())
                setattr(layer, kind, tensor)
        assert keymap.fits_order(old, entries, tables["unet"])
        assert not keymap.fits_order(new, entries, tables["unet"])


def test_real_cloneofsimo_file_on_tiny_model_is_a_clear_error(shared_assets, sd15):
    info = inspect_lora(shared_assets / "lora" / "cloneofsimo_analog_svd_rank4.safetensors")
    with pytest.raises(LoraError, match="cloneofsimo"):
        LoraPatcher().apply(sd15, "sd15", [(info, 1.0, 1.0)])
    assert not sd15.get_list_adapters()  # nothing half-loaded


# ---------------------------------------------------------------------------------------------
# reversibility, weights, hot swap
# ---------------------------------------------------------------------------------------------

def test_apply_then_remove_restores_base_bitwise(tmp_path, sd15):
    info, _, _ = sd15_kohya(tmp_path, sd15)
    base = image(sd15)
    patcher = LoraPatcher()
    patcher.apply(sd15, "sd15", [(info, 1.0, 1.0)])
    with_lora = image(sd15)
    assert not (with_lora == base).all()
    report = patcher.apply(sd15, "sd15", [])
    assert report.applied == [] and patcher.resident(sd15)  # kept for a quick return
    assert (image(sd15) == base).all()
    patcher.apply(sd15, "sd15", [(info, 1.0, 1.0)])
    assert (image(sd15) == with_lora).all()
    patcher.unload_all(sd15)
    assert not sd15.get_list_adapters()
    assert (image(sd15) == base).all()


def test_weight_zero_is_bitwise_no_lora(tmp_path, sd15):
    unet_only, _, _ = sd15_kohya(tmp_path, sd15, te_targets=[], name="unet_only")
    both, _, _ = sd15_kohya(tmp_path, sd15, seed=3, name="both")
    base = image(sd15)
    patcher = LoraPatcher()
    report = patcher.apply(sd15, "sd15", [(both, 0.0, 0.0)])
    assert report.skipped == ["both"] and report.applied == [] and report.loaded == []
    assert (image(sd15) == base).all()
    # active adapter whose only weight is 0: PEFT runs it at scale 0
    report = patcher.apply(sd15, "sd15", [(unet_only, 0.0, 1.0)])
    assert report.applied == ["unet_only"]
    assert (image(sd15) == base).all()


def test_two_loras_add_their_deltas(tmp_path, sd15):
    a, aref, _ = sd15_kohya(tmp_path, sd15, seed=1, name="a", te_targets=[])
    b, bref, _ = sd15_kohya(tmp_path, sd15, seed=2, name="b", te_targets=[])
    LoraPatcher().apply(sd15, "sd15", [(a, 0.7, 0.7), (b, -0.4, -0.4)])
    for m in SD15_UNET[:4]:
        got = layer_delta(sd15.unet.get_submodule(m))
        want = 0.7 * layer_delta(aref.get_submodule(m)) - 0.4 * layer_delta(bref.get_submodule(m))
        assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())


def test_same_file_twice_adds_up(tmp_path, sd15):
    a, aref, _ = sd15_kohya(tmp_path, sd15, seed=1, name="a", te_targets=[])
    report = LoraPatcher().apply(sd15, "sd15", [(a, 0.25, 0.25), (a, 0.5, 0.5)])
    assert report.applied == ["a"]
    assert_delta(sd15.unet, aref, SD15_UNET[0], 0.75)


def test_hot_swap_reads_nothing(tmp_path, sd15, monkeypatch):
    import diffusers
    import safetensors.torch

    a, aref, atref = sd15_kohya(tmp_path, sd15, seed=1, name="a")
    b, bref, _ = sd15_kohya(tmp_path, sd15, seed=2, name="b", te_targets=[])
    patcher = LoraPatcher()
    patcher.apply(sd15, "sd15", [(a, 1.0, 1.0)])
    patcher.apply(sd15, "sd15", [(b, 1.0, 1.0)])

    def forbidden(*args, **kwargs):
        raise AssertionError("hot swap must not read files or reload the model")

    monkeypatch.setattr(patcher_mod, "read_lora_file", forbidden)
    monkeypatch.setattr(safetensors.torch, "load_file", forbidden)
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", forbidden)
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_single_file", forbidden)
    a_h = ensure_hashes(a)  # a LoraInfo whose hashes the caller already knows
    report = patcher.apply(sd15, "sd15", [(a_h, 0.5, 0.25)])
    assert report.loaded == [] and report.reused == ["a"]
    assert_delta(sd15.unet, aref, SD15_UNET[0], 0.5)
    assert_delta(sd15.text_encoder, atref, SD15_TE[0], 0.25)
    report = patcher.apply(sd15, "sd15", [(b, 1.0, 1.0), (a, 0.1, 0.1)])  # hashes from the patcher's memo
    assert report.loaded == [] and report.reused == ["b", "a"]
    got = layer_delta(sd15.unet.get_submodule(SD15_UNET[0]))
    want = layer_delta(bref.get_submodule(SD15_UNET[0])) + 0.1 * layer_delta(aref.get_submodule(SD15_UNET[0]))
    assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())


def test_per_component_weights_and_text_encoder_state(tmp_path, sd15):
    a, aref, atref = sd15_kohya(tmp_path, sd15, seed=1, name="a")
    b, bref, _ = sd15_kohya(tmp_path, sd15, seed=2, name="b", te_targets=[])
    patcher = LoraPatcher()
    report = patcher.apply(sd15, "sd15", [(a, 1.0, 0.0), (b, 0.5, 1.0)])
    got = layer_delta(sd15.unet.get_submodule(SD15_UNET[0]))
    want = layer_delta(aref.get_submodule(SD15_UNET[0])) + 0.5 * layer_delta(bref.get_submodule(SD15_UNET[0]))
    assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())
    assert layer_delta(sd15.text_encoder.get_submodule(SD15_TE[0])).abs().max().item() == 0.0
    assert report.text_encoder_state == []  # a: te weight 0; b: no text-encoder layers
    report = patcher.apply(sd15, "sd15", [(a, 0.0, 0.5), (b, 1.0, 1.0)])
    assert_delta(sd15.unet, bref, SD15_UNET[0], 1.0)  # a's U-Net part is off, b's is on
    assert_delta(sd15.text_encoder, atref, SD15_TE[0], 0.5)
    [(name, h, w)] = text_encoder_state(report.active)
    assert (name, w) == ("a", 0.5) and len(h) == 12
    assert patcher.text_encoder_state(sd15) == [(name, h, w)]


def test_eviction_keeps_at_most_max_resident(tmp_path, sd15):
    a, _, _ = sd15_kohya(tmp_path, sd15, seed=1, name="a", te_targets=[])
    b, _, _ = sd15_kohya(tmp_path, sd15, seed=2, name="b", te_targets=[])
    patcher = LoraPatcher(max_resident=1)
    patcher.apply(sd15, "sd15", [(a, 1.0, 1.0)])
    patcher.apply(sd15, "sd15", [(b, 1.0, 1.0)])
    assert len(patcher.resident(sd15)) == 1 and len(sd15.get_list_adapters()["unet"]) == 1
    assert patcher.apply(sd15, "sd15", [(a, 1.0, 1.0)]).loaded == ["a"]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_family_mismatch_names_both_families(tmp_path, sd15, sdxl):
    info, _, _ = sd15_kohya(tmp_path, sd15)
    with pytest.raises(LoraError) as err:
        LoraPatcher().apply(sdxl, "sdxl", [(info, 1.0, 1.0)])
    assert "SD 1.5" in str(err.value) and "SDXL" in str(err.value)
    assert not sdxl.get_list_adapters()


def test_lora_matching_nothing_or_wrong_sizes_is_an_error(tmp_path, sd15, sdxl, zimage):
    from peft.utils import get_peft_model_state_dict

    uref, _ = peft_reference(sd15.unet, [SD15_UNET[1]], seed=41)  # attn2.to_k reads the 32-wide context
    sd = {f"unet.{k}": v for k, v in get_peft_model_state_dict(uref).items()}
    save_file(sd, str(tmp_path / "unet_only.safetensors"))
    info = inspect_lora(tmp_path / "unet_only.safetensors")
    assert info.family is None  # tiny widths and diffusers names: family unknown
    with pytest.raises(LoraError, match="does not fit"):
        LoraPatcher().apply(sdxl, "sdxl", [(info, 1.0, 1.0)])  # same module name, context 96
    with pytest.raises(LoraError, match="matches no layer"):
        LoraPatcher().apply(zimage, "zimage", [(info, 1.0, 1.0)])
    assert not sdxl.get_list_adapters() and not zimage.get_list_adapters()


def test_unsupported_formats_are_refused_before_loading(tmp_path, sd15):
    sd = {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_a": torch.ones(64, 2),
          "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_b": torch.ones(2, 64)}
    save_file(sd, str(tmp_path / "loha.safetensors"))
    info = inspect_lora(tmp_path / "loha.safetensors")
    with pytest.raises(LoraError, match="LoHa"):
        LoraPatcher().apply(sd15, "sd15", [(info, 1.0, 1.0)])


def test_peft_dora_and_zimage_lokr(tmp_path, sd15, zimage):
    """Two formats diffusers/PEFT load natively: PEFT DoRA (magnitude vectors) and Z-Image LoKr."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    target = SD15_UNET[0]
    ref = copy.deepcopy(sd15.unet)
    cfg = LoraConfig(r=4, lora_alpha=2, target_modules=[target], init_lora_weights=False, use_dora=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(51)
        inject_adapter_in_model(cfg, ref, adapter_name="default")
    StableDiffusionPipeline.save_lora_weights(tmp_path, weight_name="dora.safetensors",
                                              unet_lora_layers=get_peft_model_state_dict(ref),
                                              unet_lora_adapter_metadata=cfg.to_dict())
    info = inspect_lora(tmp_path / "dora.safetensors")
    assert info.supported and any("DoRA" in n for n in info.notes)
    LoraPatcher().apply(sd15, "sd15", [(info, 1.0, 1.0)])
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = sd15.unet.get_submodule(target)(x), ref.get_submodule(target)(x)
        base = ref.get_submodule(target).get_base_layer()(x)
    assert (want - base).abs().max().item() > 0.1
    assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())

    w1 = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    w2 = torch.randn(8, 8, generator=torch.Generator().manual_seed(2))
    save_file({"diffusion_model.layers.0.attention.to_q.lokr_w1": w1,
               "diffusion_model.layers.0.attention.to_q.lokr_w2": w2}, str(tmp_path / "lokr.safetensors"))
    info = inspect_lora(tmp_path / "lokr.safetensors")
    assert (info.format, info.family, info.supported) == (LoraFormat.LOKR, Family.ZIMAGE, True)
    LoraPatcher().apply(zimage, "zimage", [(info, 0.5, 1.0)])
    delta = layer_delta(zimage.transformer.get_submodule("layers.0.attention.to_q")).T
    want = 0.5 * torch.kron(w1, w2)
    assert (delta - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())


def test_failed_load_keeps_the_previous_set(tmp_path, sd15, monkeypatch):
    a, aref, _ = sd15_kohya(tmp_path, sd15, seed=1, name="a", te_targets=[])
    b, _, _ = sd15_kohya(tmp_path, sd15, seed=2, name="b")
    patcher = LoraPatcher()
    patcher.apply(sd15, "sd15", [(a, 1.0, 1.0)])
    with_a = image(sd15)
    real_inject = LoraPatcher._inject

    def failing(pipe, plan, adapter, loaded):
        real_inject(pipe, plan, adapter, loaded)  # the U-Net and text encoder get the adapter ...
        raise RuntimeError("simulated failure")  # ... and then something breaks

    monkeypatch.setattr(LoraPatcher, "_inject", staticmethod(failing))
    with pytest.raises(LoraError, match="simulated failure"):
        patcher.apply(sd15, "sd15", [(a, 1.0, 1.0), (b, 1.0, 1.0)])
    assert [x.name for x in patcher.active(sd15)] == ["a"]
    assert len(patcher.resident(sd15)) == 1
    assert all(len(v) == 1 for v in sd15.get_list_adapters().values() if v)  # b's layers are gone
    assert_delta(sd15.unet, aref, SD15_UNET[0], 1.0)
    assert (image(sd15) == with_a).all()
    patcher.clear(sd15)
    assert patcher.active(sd15) == [] and patcher.resident(sd15)


def test_bare_peft_keys_are_applied(tmp_path, sd15):
    """A raw PEFT adapter file (no ``unet.`` prefix): diffusers 0.42's SD loader silently skips it."""
    from peft.utils import get_peft_model_state_dict

    uref, _ = peft_reference(sd15.unet, SD15_UNET[:2], rank=4, alpha=4.0, seed=61)
    save_file({f"base_model.model.{k}": v for k, v in get_peft_model_state_dict(uref).items()},
              str(tmp_path / "raw_peft.safetensors"))
    info = inspect_lora(tmp_path / "raw_peft.safetensors")
    assert info.format == LoraFormat.DIFFUSERS
    report = LoraPatcher().apply(sd15, "sd15", [(info, 1.0, 1.0)])
    assert report.unmatched_count == 0
    for m in SD15_UNET[:2]:
        assert_delta(sd15.unet, uref, m)
