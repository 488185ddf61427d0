"""``<lora:name:weight>`` prompt tags (A1111 semantics)."""
from __future__ import annotations

import pytest

from modules.errors import InvalidRequest
from modules.lora import PromptLora, format_lora_tag, parse_prompt_loras

L = PromptLora

CASES = [
    # prompt, clean prompt, loras
    ("a photo of a woman", "a photo of a woman", []),
    ("", "", []),
    ("a photo, <lora:film:0.8>, smiling", "a photo, smiling", [L("film", 0.8, 0.8)]),
    ("<lora:film> portrait", "portrait", [L("film", 1.0, 1.0)]),
    ("portrait <lora:film:1>", "portrait", [L("film", 1.0, 1.0)]),
    ("portrait, <lora:film:.8>", "portrait", [L("film", 0.8, 0.8)]),
    ("<lora:a:-0.5>, <lora:b:1.25>, portrait", "portrait", [L("a", -0.5, -0.5), L("b", 1.25, 1.25)]),
    ("portrait <lora:a:0.5><lora:b:0.5> light", "portrait light", [L("a", 0.5, 0.5), L("b", 0.5, 0.5)]),
    ("a <lora:my style v1.2:0.7> b", "a b", [L("my style v1.2", 0.7, 0.7)]),
    ("a <lora:add-detail_XL.v2:+1.5e-1> b", "a b", [L("add-detail_XL.v2", 0.15, 0.15)]),
    ("a <lora:sub/dir\\name:1> b", "a b", [L("sub/dir\\name", 1.0, 1.0)]),
    ("x <lora: spaced name : 0.3 > y", "x y", [L("spaced name", 0.3, 0.3)]),
    # text-encoder weight first, then U-Net weight (A1111's positional order)
    ("x <lora:n:0.2:0.9> y", "x y", [L("n", unet_weight=0.9, te_weight=0.2)]),
    ("x <lora:n:te=0.3:unet=0.6> y", "x y", [L("n", unet_weight=0.6, te_weight=0.3)]),
    ("x <lora:n:0.4:unet=1> y", "x y", [L("n", unet_weight=1.0, te_weight=0.4)]),
    ("x <lora:n:1:0.5:8> y", "x y", [L("n", unet_weight=0.5, te_weight=1.0)]),
    ("x <lora:n:0.7:dyn=16> y", "x y", [L("n", 0.7, 0.7)]),
    # lyco is an alias; tag word case-insensitive
    ("x, <lyco:loha thing:0.6>, y", "x, y", [L("loha thing", 0.6, 0.6)]),
    ("x <LoRA:n:0.5> y", "x y", [L("n", 0.5, 0.5)]),
    # Chinese text and full-width commas
    ("一个女孩，<lora:汉服:0.8>，微笑", "一个女孩，微笑", [L("汉服", 0.8, 0.8)]),
    ("<lora:古风-v2:1>高质量、细节", "高质量、细节", [L("古风-v2", 1.0, 1.0)]),
    ("照片<lora:x:1>肖像", "照片肖像", [L("x", 1.0, 1.0)]),
    ("girl<lora:x:1>smiling", "girl smiling", [L("x", 1.0, 1.0)]),
    ("line one\n<lora:x:1>\nline two", "line one\nline two", [L("x", 1.0, 1.0)]),
    # the rest of the prompt is untouched (emphasis, double spaces, other tags)
    ("(masterpiece:1.2),  best <lora:x:1>, quality", "(masterpiece:1.2),  best, quality", [L("x", 1.0, 1.0)]),
    ("a <hypernet:foo:1> b <lora:x:1>", "a <hypernet:foo:1> b", [L("x", 1.0, 1.0)]),
    # malformed: not a LoRA tag, left alone
    ("a <lora:> b", "a <lora:> b", []),
    ("a <lora: :1> b", "a <lora: :1> b", []),
    ("a <lora> b", "a <lora> b", []),
    ("a <lora:x b", "a <lora:x b", []),
    ("a lora:x:1> b", "a lora:x:1> b", []),
    ("only <lora:x:1>", "only", [L("x", 1.0, 1.0)]),
    ("<lora:x:1>", "", [L("x", 1.0, 1.0)]),
    ("dup <lora:x:0.5> <lora:x:0.25>", "dup", [L("x", 0.5, 0.5), L("x", 0.25, 0.25)]),
]


@pytest.mark.parametrize("prompt,clean,loras", CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_parse(prompt, clean, loras):
    got_clean, got = parse_prompt_loras(prompt)
    assert got_clean == clean
    assert got == loras


@pytest.mark.parametrize("prompt,fragment", [
    ("a <lora:x:abc> b", "abc"),
    ("a <lora:x:> b", "weight"),
    ("a <lora:x:1:zz> b", "zz"),
    ("a <lora:x:nan> b", "out of range"),
    ("a <lora:x:inf> b", "out of range"),
    ("a <lora:x:1e9> b", "out of range"),
    ("a <lora:x:foo=1> b", "foo"),
    ("a <lora:x:1:1:8:9> b", "too many"),
    ("a <lora:x:1:dyn=big> b", "dyn"),
])
def test_bad_weights_are_errors(prompt, fragment):
    with pytest.raises(InvalidRequest) as err:
        parse_prompt_loras(prompt)
    assert err.value.field == "prompt"
    assert fragment in str(err.value)


def test_weight_property_is_unet_weight():
    _, [lora] = parse_prompt_loras("<lora:n:0.2:0.9>")
    assert lora.weight == 0.9 and lora.te_weight == 0.2


@pytest.mark.parametrize("name,unet,te", [("a", 1.0, None), ("my lora.v2", 0.75, 0.75), ("x", -0.5, 0.25)])
def test_format_round_trip(name, unet, te):
    tag = format_lora_tag(name, unet, te)
    _, [lora] = parse_prompt_loras(f"p, {tag}")
    assert lora == PromptLora(name, unet, unet if te is None else te)


def test_not_text():
    with pytest.raises(InvalidRequest):
        parse_prompt_loras(None)  # type: ignore[arg-type]
