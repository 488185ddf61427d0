"""img2img and inpainting: request rules, capability choice, masks, the engine on tiny models, the APIs."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from modules.backends.base import Capability
from modules.engine.prepare import Preparer
from modules.errors import InvalidRequest, UnsupportedCapability
from modules.families import Family
from modules.generation.params import GenerationRequest
from modules.registry.entry import ModelEntry, ModelFormat

SD = Family("sd15")


def _image(size=(64, 64), color=(200, 120, 80)):
    return Image.new("RGB", size, color)


def _mask(size=(64, 64), box=(16, 16, 48, 48)):
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def _checked(**fields):
    req = GenerationRequest(**fields).with_defaults(SD)
    req.check_inputs(SD)
    return req


# -- 1. request rules ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, field, key", [
    (dict(mask=_mask()), "mask", "rule.mask_needs_image"),
    (dict(init_image=_image(), mask=_mask((32, 64))), "mask", "rule.mask_size"),
    (dict(init_image="not an image"), "init_image", "rule.image"),
    (dict(init_image=_image(), mask=b"png"), "mask", "rule.image"),
    (dict(init_image=_image(), denoising_strength=1.5), "denoising_strength", "rule.between"),
    (dict(init_image=_image(), denoising_strength=-0.1), "denoising_strength", "rule.between"),
    (dict(init_image=_image(), resize_mode=3), "resize_mode", "rule.choice"),
    (dict(init_image=_image(), mask=_mask(), mask_blur=65), "mask_blur", "rule.between"),
    (dict(init_image=_image(), mask=_mask(), inpaint_full_res_padding=-1), "inpaint_full_res_padding",
     "rule.between"),
    (dict(init_image=_image(), mask=_mask(), inpainting_fill=4), "inpainting_fill", "rule.choice"),
])
def test_image_rules(fields, field, key):
    with pytest.raises(InvalidRequest) as info:
        _checked(**fields)
    assert info.value.field == field and info.value.rule.key == key, str(info.value)


def test_mask_size_message_names_both_sizes():
    with pytest.raises(InvalidRequest) as info:
        _checked(init_image=_image((64, 64)), mask=_mask((32, 64)))
    assert "64x64" in str(info.value) and "32x64" in str(info.value)


def test_defaults_and_size_from_the_init_image():
    req = _checked(init_image=_image((200, 130)))
    assert (req.width, req.height) == (200, 128)  # to the family's multiple of 8
    assert req.denoising_strength == 0.75 and req.resize_mode == 0 and req.mask_blur == 4
    assert req.inpainting_fill == 1 and not req.inpaint_full_res and req.inpaint_full_res_padding == 32
    assert req.to_dict()["init_image"] == {"width": 200, "height": 130}


def test_capability_from_the_request():
    assert GenerationRequest().capability_name == "txt2img"
    assert GenerationRequest(init_image=_image()).capability_name == "img2img"
    assert GenerationRequest(init_image=_image(), mask=_mask()).capability_name == "inpaint"


@pytest.mark.parametrize("fields, capability", [
    (dict(init_image=_image()), "img2img"), (dict(init_image=_image(), mask=_mask()), "inpaint")])
def test_edge_package_refuses_image_input(tmp_path, fields, capability):
    entry = ModelEntry(name="edge/tiny", path=tmp_path, format=ModelFormat.EDGE, family=SD, source="edge")
    preparer = Preparer(presets=None, styles_file=Path(tmp_path / "styles.csv"), loras=list, lora_roots=list,
                        taesd_available=lambda f: False, taesd_missing=lambda f: "", extensions=None)
    with pytest.raises(UnsupportedCapability) as info:
        preparer.prepare(GenerationRequest(**fields), entry)
    assert info.value.capability == capability and Capability(capability)
