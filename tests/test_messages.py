"""Messages by key: every keyed template has its Chinese, every key the source uses exists, the page
translates errors and notes by key (not by matching English), free text still shows, and the API's error
JSON carries the key and params."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from modules import messages  # noqa: E402
from modules.errors import (  # noqa: E402
    InvalidRequest, ModelNotFound, UnsupportedCapability, VisageError,
)
from modules.messages import EN, Message, placeholders  # noqa: E402
from modules.ui import i18n  # noqa: E402
from modules.ui.i18n import Translator, error_text, message_text  # noqa: E402
from modules.ui.strings.en import PAGE_EN  # noqa: E402
from modules.ui.strings.zh import ZH  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: the calls that make a keyed message: Message("key", ...) and an extension's msg("key", ...)
MESSAGE_CALLS = {"Message", "msg"}


def _gpen_strings():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpen_strings_for_test", REPO / "extensions/gpen/strings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def used_keys(*roots: Path) -> dict[str, str]:
    """key -> "file:line" of every ``Message("literal", …)`` / ``msg("literal", …)`` call under ``roots``."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                first = node.args[0]
                if name in MESSAGE_CALLS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                    found.setdefault(first.value, f"{where}:{node.lineno}")
    return found


def known_keys() -> set[str]:
    return set(EN) | set(_gpen_strings().CATALOG["en"])


# -- the tables ------------------------------------------------------------------------------------------

def test_every_keyed_message_has_chinese_with_the_same_placeholders():
    assert {"rule.between", "note.lora_unmatched", "interrupted.at_step", "capability.unsupported"} <= set(EN)
    assert sorted(set(EN) - set(ZH)) == []
    odd = [k for k in EN if placeholders(EN[k]) != placeholders(ZH[k])]
    assert odd == []


def test_page_english_does_not_copy_the_keyed_templates():
    assert sorted(set(PAGE_EN) & set(EN)) == []
    assert i18n.EN["rule.between"] == EN["rule.between"]  # the page's English takes them from modules.messages


def test_gpen_catalog_is_complete():
    catalog = _gpen_strings().CATALOG
    assert set(catalog["en"]) == set(catalog["zh"])
    assert all(k.startswith("gpen.") for k in catalog["en"])
    assert [k for k in catalog["en"] if placeholders(catalog["en"][k]) != placeholders(catalog["zh"][k])] == []


def test_no_regex_translation_left():
    source = (REPO / "modules/ui/i18n.py").read_text(encoding="utf-8")
    assert "import re" not in source and "_RULES" not in source and "_NOTES" not in source


# -- every key the source uses exists ------------------------------------------------------------------

def test_every_message_key_in_the_source_exists():
    used = used_keys(REPO / "modules", REPO / "extensions")
    assert len(used) > 30
    unknown = {k: where for k, where in used.items() if k not in known_keys()}
    assert unknown == {}


def test_the_key_scan_catches_a_bogus_key(tmp_path):
    (tmp_path / "bogus.py").write_text('from modules.messages import Message\nx = Message("rule.no_such_key", n=1)\n')
    used = used_keys(tmp_path)
    assert "rule.no_such_key" in used and "rule.no_such_key" not in known_keys()


# -- rendering by key ------------------------------------------------------------------------------------

def test_message_is_its_english_text_and_keeps_key_and_params():
    m = Message("rule.between", low=1, high=150)
    assert m == "must be between 1 and 150" and isinstance(m, str)
    assert (m.key, m.params) == ("rule.between", {"low": 1, "high": 150})
    exc = InvalidRequest("steps", m)
    assert str(exc) == "steps: must be between 1 and 150"
    assert (exc.key, exc.params) == ("rule.between", {"low": 1, "high": 150})


def test_rewording_an_english_template_keeps_the_chinese(monkeypatch):
    monkeypatch.setitem(messages.EN, "rule.between", "has to lie within {low}..{high}")
    exc = InvalidRequest("steps", Message("rule.between", low=1, high=150))
    assert exc.rule == "has to lie within 1..150"  # the English follows the template
    assert error_text(Translator("en", strict=True), exc) == "Sampling steps: has to lie within 1..150"
    assert error_text(Translator("zh", strict=True), exc) == "参数“采样步数”无效：必须在 1 到 150 之间"


def test_free_text_still_renders():
    exc = InvalidRequest("steps", "must be something only this caller says")
    for lang in ("en", "zh"):
        text = error_text(Translator(lang, strict=True), exc)
        assert text.endswith("must be something only this caller says")
    assert error_text(Translator("zh"), ModelNotFound("no model named 'x'")) == "找不到模型：no model named 'x'"
    assert error_text(Translator("zh"), VisageError("plain")) == "plain"
    assert message_text(Translator("zh"), "a note without a key") == "a note without a key"


def test_nested_messages_render_in_the_same_language():
    note = Message("note.lora", lora="soft", note=Message("note.lora_dora"))
    assert note == "soft: DoRA (PEFT magnitude vectors)"
    assert message_text(Translator("zh"), note) == "soft：DoRA（PEFT 幅度向量）"


def test_keyed_errors_other_than_invalid_request_are_translated():
    exc = UnsupportedCapability("inpaint", "edge/tiny", "onnx")
    zh = error_text(Translator("zh", strict=True), exc)
    assert zh == "此模型无法完成该操作：edge/tiny 运行在 onnx 后端上，无法进行 inpaint"
    assert "cannot do inpaint" in error_text(Translator("en", strict=True), exc)


def test_repr_quotes_survive_in_chinese():
    exc = InvalidRequest("preset", Message("rule.no_preset", name="nope"))
    assert str(exc) == "preset: no preset named 'nope'"
    assert error_text(Translator("zh"), exc) == "参数“预设”无效：没有名为 'nope' 的预设"


def test_extension_catalog_renders_in_each_language():
    strings = _gpen_strings()
    exc = InvalidRequest("upscale", strings.msg("gpen.rule.upscale"))
    assert str(exc) == "upscale: must be 1..4"
    assert error_text(Translator("zh"), exc).endswith("必须在 1 到 4 之间")
    with pytest.raises(ValueError, match="no English template"):
        messages.add_catalog({"zh": {"gpen.not_in_english": "x"}})
    with pytest.raises(ValueError, match="placeholders"):
        messages.add_catalog({"zh": {"gpen.rule.output_over": "超过 {n}"}})


def test_message_pickles_by_key():
    import pickle
    m = pickle.loads(pickle.dumps(Message("rule.multiple", n=8)))
    assert isinstance(m, Message) and m.key == "rule.multiple" and m == "must be a multiple of 8"


# -- the API's error JSON ---------------------------------------------------------------------------------

def test_api_error_json_has_key_and_params():
    from pathlib import PurePosixPath

    from modules.api.errors import error_response, to_api_error
    exc = InvalidRequest("out", Message("rule.exists_in", name="x.safetensors", folder=PurePosixPath("/m")))
    body = json.loads(error_response(to_api_error(exc)).body)
    assert body["error"] == "invalid_request" and body["field"] == "out"
    assert body["rule"] == "x.safetensors already exists in /m (choose another name)"
    assert body["detail"] == body["message"] == "out: " + body["rule"]
    assert body["key"] == "rule.exists_in" and body["params"] == {"name": "x.safetensors", "folder": "/m"}
    free = json.loads(error_response(to_api_error(ModelNotFound("no model named 'x'"))).body)
    assert free["key"] is None and free["params"] == {}
    cap = json.loads(error_response(to_api_error(UnsupportedCapability("inpaint", "edge/t", "onnx"))).body)
    assert cap["key"] == "capability.unsupported"
    assert cap["params"] == {"model": "edge/t", "backend": "onnx", "capability": "inpaint"}


# -- rules that used to be free text ---------------------------------------------------------------------

def test_converted_rules_say_chinese_on_the_page_and_keep_their_english():
    from modules.generation.samplers import make_scheduler
    from modules.lora.prompt import parse_prompt_loras
    from modules.names import UnsafeField, check_name

    zh, en = Translator("zh", strict=True), Translator("en", strict=True)

    with pytest.raises(UnsafeField) as unsafe:
        check_name("model", "../outside")
    assert str(unsafe.value) == "model: must not contain '..'"
    assert (unsafe.value.key, unsafe.value.params) == ("rule.name_dotdot", {})
    assert error_text(zh, unsafe.value) == "名称被拒绝：model：不能包含 '..'"
    assert error_text(en, unsafe.value) == "Name refused: model: must not contain '..'"

    with pytest.raises(InvalidRequest) as sampler:
        make_scheduler("Heun++", {})
    assert str(sampler.value) == "sampler: unknown sampler 'Heun++'"
    assert error_text(zh, sampler.value) == "参数“采样方法”无效：未知的采样方法 'Heun++'"

    with pytest.raises(InvalidRequest) as weight:
        parse_prompt_loras("a portrait, <lora:soft:abc>")
    assert str(weight.value) == "prompt: <lora:soft:abc>: weight 'abc' is not a number"
    assert weight.value.key == "rule.lora_weight_nan"
    assert error_text(zh, weight.value) == "参数“提示词”无效：<lora:soft:abc>：权重 'abc' 不是数字"
    assert not zh.missing and not en.missing
