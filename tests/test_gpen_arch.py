"""GPEN generator: the state-dict layout of the released GPEN-BFR-256/512/1024 files, strict loading with
the weights-only loader, and the forward pass on CPU.

The expected layout below is written from a reading of upstream (yangxy/GPEN ``face_model/gpen_model.py``:
``FullGenerator(size, 512, 8, channel_multiplier, narrow=narrow, isconcat=True)``; op/fused_act.py's
``FusedLeakyReLU`` holds one ``bias`` of ``channel`` values; Blur/Upsample register their FIR kernel as a
persistent buffer), independently of the extension's own code, and a file built from it must load strictly.
"""
from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch

from conftest import REPO_ROOT


def gpen(module: str):
    """A module of the gpen extension, imported the way Visage imports it (package ``visage_ext_gpen``)."""
    if "visage_ext_gpen.main" not in sys.modules:
        from modules.extensions import load_extensions
        ext = load_extensions(REPO_ROOT / "extensions", models_dir=REPO_ROOT / "models",
                              outputs_dir=REPO_ROOT / "outputs")
        assert "gpen" in ext.loaded, ext.failed
    return importlib.import_module(f"visage_ext_gpen.{module}")


# -- upstream facts ------------------------------------------------------------------------------------
VARIANTS = {  # name: (size, channel_multiplier, narrow)
    "GPEN-BFR-256": (256, 1, 0.5),
    "GPEN-BFR-512": (512, 2, 1.0),
    "GPEN-BFR-1024": (1024, 2, 1.0),
}


def upstream_layout(size: int, cm: int, narrow: float) -> dict[str, tuple[int, ...]]:
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}
    ch = {k: int(v * narrow) for k, v in ch.items()}
    log_size = int(math.log2(size))
    sd: dict[str, tuple[int, ...]] = {}
    g = "generator."
    for i in range(1, 9):  # style.0 is PixelNorm
        sd[f"{g}style.{i}.weight"] = (512, 512)
        sd[f"{g}style.{i}.bias"] = (512,)

    def styled(prefix: str, cin: int, cout: int, up: bool):
        sd[prefix + "conv.weight"] = (1, cout, cin, 3, 3)
        sd[prefix + "conv.modulation.weight"] = (cin, 512)
        sd[prefix + "conv.modulation.bias"] = (cin,)
        if up:
            sd[prefix + "conv.blur.kernel"] = (4, 4)
        sd[prefix + "noise.weight"] = (1,)
        sd[prefix + "activate.bias"] = (cout * 2,)  # noise is concatenated: twice the channels

    def to_rgb(prefix: str, cin: int, up: bool):
        if up:
            sd[prefix + "upsample.kernel"] = (4, 4)
        sd[prefix + "conv.weight"] = (1, 3, cin, 1, 1)
        sd[prefix + "conv.modulation.weight"] = (cin, 512)
        sd[prefix + "conv.modulation.bias"] = (cin,)
        sd[prefix + "bias"] = (1, 3, 1, 1)

    sd[g + "input.input"] = (1, ch[4], 4, 4)
    styled(g + "conv1.", ch[4], ch[4], False)
    to_rgb(g + "to_rgb1.", ch[4] * 2, False)
    cin = ch[4]
    for j, level in enumerate(range(3, log_size + 1)):
        cout = ch[2 ** level]
        styled(f"{g}convs.{2 * j}.", cin * 2, cout, True)
        styled(f"{g}convs.{2 * j + 1}.", cout * 2, cout, False)
        to_rgb(f"{g}to_rgbs.{j}.", cout * 2, True)
        cin = cout
    # encoder: ecd0 = Sequential(ConvLayer(3, ch[size], 1)) = [EqualConv2d (no bias), FusedLeakyReLU]
    sd["ecd0.0.0.weight"] = (ch[size], 3, 1, 1)
    sd["ecd0.0.1.bias"] = (ch[size],)
    cin = ch[size]
    for i in range(log_size, 2, -1):  # names[log_size - i + 1]: ecd1 .. ecd{log_size-2}
        cout = ch[2 ** (i - 1)]
        name = f"ecd{log_size - i + 1}"
        sd[f"{name}.0.0.kernel"] = (4, 4)  # Blur before the stride-2 conv
        sd[f"{name}.0.1.weight"] = (cout, cin, 3, 3)
        sd[f"{name}.0.2.bias"] = (cout,)
        cin = cout
    sd["final_linear.0.weight"] = (512, ch[4] * 16)
    sd["final_linear.0.bias"] = (512,)
    return sd


def random_models_folder(root, seed: int):
    """``root/GPEN/GPEN-BFR-256.pth`` with random weights in the released layout; returns ``root`` (a models folder)."""
    (root / "GPEN").mkdir()
    torch.save(upstream_state_dict(256, 1, 0.5, seed=seed), root / "GPEN" / "GPEN-BFR-256.pth")
    return root


def upstream_state_dict(size, cm, narrow, seed=0) -> dict[str, torch.Tensor]:
    """Random weights in exactly the upstream layout (what a released file holds, values aside)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in upstream_layout(size, cm, narrow).items():
        out[key] = torch.randn(shape, generator=gen) * 0.5
    return out


# -- layout --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_table_matches_upstream(name):
    v = gpen("variants").get_variant(name)
    assert (v.size, v.channel_multiplier, v.narrow) == VARIANTS[name]
    assert v.filename == f"{name}.pth"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_state_dict_keys_and_shapes_match_upstream(name):
    arch = gpen("arch")
    size, cm, narrow = VARIANTS[name]
    with torch.device("meta"):  # shapes only: no memory for the 1024 model's 71 M parameters
        model = arch.GPEN(size, cm, narrow)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = upstream_layout(size, cm, narrow)
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert wrong == {}


def test_parameter_counts():
    """The 512 and 1024 generators hold about 71 M parameters, the 256 one about 19 M (file sizes of the
    released weights: ~284 MB / ~285 MB / ~76 MB in fp32)."""
    counts = {}
    for name, (size, cm, narrow) in VARIANTS.items():
        counts[name] = sum(math.prod(s) for s in upstream_layout(size, cm, narrow).values())
    assert 18.5e6 < counts["GPEN-BFR-256"] < 19.5e6
    assert 70e6 < counts["GPEN-BFR-512"] < 72e6
    assert counts["GPEN-BFR-512"] < counts["GPEN-BFR-1024"] < 72e6


def test_fir_kernels_have_upstream_gains():
    arch = gpen("arch")
    model = arch.GPEN(64, 1, 0.0625)  # a tiny generator of the same structure
    sd = model.state_dict()
    assert float(sd["generator.convs.0.conv.blur.kernel"].sum()) == pytest.approx(4.0)  # upsample blur x factor^2
    assert float(sd["generator.to_rgbs.0.upsample.kernel"].sum()) == pytest.approx(4.0)
    assert float(sd["ecd1.0.0.kernel"].sum()) == pytest.approx(1.0)  # downsample blur
    k = sd["ecd1.0.0.kernel"]
    assert torch.allclose(k, k.T) and torch.allclose(k[0] / k[0, 0], torch.tensor([1.0, 3.0, 3.0, 1.0]))


# -- strict loading ------------------------------------------------------------------------------------
def _save_upstream(path, name, seed=0):
    size, cm, narrow = VARIANTS[name]
    torch.save(upstream_state_dict(size, cm, narrow, seed), path)
    return path


def test_upstream_layout_file_loads_strictly_with_weights_only_loader(tmp_path):
    restore, variants = gpen("restore"), gpen("variants")
    path = _save_upstream(tmp_path / "GPEN-BFR-256.pth", "GPEN-BFR-256")
    model = restore.load_gpen(path, variants.get_variant("GPEN-BFR-256"), torch.device("cpu"), torch.float32)
    ref = torch.load(path, weights_only=True)
    loaded = model.state_dict()
    assert set(loaded) == set(ref)
    assert all(torch.equal(loaded[k], ref[k]) for k in ref)


def test_wrong_variant_file_is_one_typed_error(tmp_path):
    from modules.errors import ModelLoadError
    restore, variants = gpen("restore"), gpen("variants")
    path = _save_upstream(tmp_path / "GPEN-BFR-512.pth", "GPEN-BFR-256")  # a 256 file under the 512 name
    with pytest.raises(ModelLoadError, match="not a GPEN-BFR-512 generator"):
        restore.load_gpen(path, variants.get_variant("GPEN-BFR-512"), torch.device("cpu"), torch.float32)


def test_pickled_code_is_refused(tmp_path):
    """The weights-only unpickler: a file that would run code on load is refused with a typed error."""
    import pickle
    from modules.errors import ModelLoadError
    restore, variants = gpen("restore"), gpen("variants")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "GPEN-BFR-256.pth"
    path.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(ModelLoadError, match="cannot read"):
        restore.load_gpen(path, variants.get_variant("GPEN-BFR-256"), torch.device("cpu"), torch.float32)


def test_missing_weights_name_the_file(tmp_path):
    from modules.errors import MissingComponent
    variants = gpen("variants")
    with pytest.raises(MissingComponent) as info:
        variants.weights_path(variants.get_variant("GPEN-BFR-512"), tmp_path / "models")
    assert "models/GPEN/GPEN-BFR-512.pth" in str(info.value)
    assert "non-commercial" in str(info.value)


# -- ops and forward -----------------------------------------------------------------------------------
def test_upsampling_blur_keeps_a_constant_image_constant():
    arch = gpen("arch")
    up = arch.Blur((2, 1), up=2, gain=4.0)
    x = torch.full((1, 2, 8, 8), 3.0)
    y = up(x)
    assert y.shape == (1, 2, 16, 16)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 3.0))


def test_forward_256_on_cpu(tmp_path):
    restore, variants = gpen("restore"), gpen("variants")
    path = _save_upstream(tmp_path / "GPEN-BFR-256.pth", "GPEN-BFR-256")
    model = restore.load_gpen(path, variants.get_variant("GPEN-BFR-256"), torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 3, 256, 256, generator=gen) * 2 - 1, torch.rand(1, 3, 256, 256, generator=gen) * 2 - 1
    with torch.inference_mode():
        ya, yb = model(a), model(b)
        y2 = model(torch.cat([a, b]))
    assert ya.shape == (1, 3, 256, 256) and torch.isfinite(ya).all()
    assert not torch.allclose(ya, yb)  # the output depends on the face
    assert torch.allclose(y2[:1], ya, atol=1e-4) and torch.allclose(y2[1:], yb, atol=1e-4)  # batching


@pytest.mark.slow
@pytest.mark.parametrize("name", ["GPEN-BFR-512", "GPEN-BFR-1024"])
def test_full_size_forward_on_cpu(tmp_path, name):
    restore, variants = gpen("restore"), gpen("variants")
    size = VARIANTS[name][0]
    path = _save_upstream(tmp_path / f"{name}.pth", name)
    model = restore.load_gpen(path, variants.get_variant(name), torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        y = model(torch.zeros(1, 3, size, size))
    assert y.shape == (1, 3, size, size) and torch.isfinite(y).all()


def test_half_precision_forward_matches_fp32():
    """The fp16 path (--fp16 on a GPU) run on the CPU: no overflow in modulation/demodulation, same image."""
    arch = gpen("arch")
    torch.manual_seed(0)
    model = arch.GPEN(128, 1, 0.25).eval()
    half = arch.GPEN(128, 1, 0.25)
    half.load_state_dict(model.state_dict())
    half = half.half().eval()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.inference_mode():
        y, yh = model(x), half(x.half()).float()
    assert torch.isfinite(yh).all()
    assert (y - yh).abs().max() < 0.05


def test_legacy_pth_format_loads_too(tmp_path):
    """Files written by old torch versions (pre-zip serialization) cannot be memory-mapped: read them whole."""
    restore, variants = gpen("restore"), gpen("variants")
    path = tmp_path / "GPEN-BFR-256.pth"
    torch.save(upstream_state_dict(256, 1, 0.5, seed=2), path, _use_new_zipfile_serialization=False)
    model = restore.load_gpen(path, variants.get_variant("GPEN-BFR-256"), torch.device("cpu"), torch.float32)
    assert torch.equal(model.state_dict()["final_linear.0.bias"], torch.load(path, weights_only=True)["final_linear.0.bias"])
