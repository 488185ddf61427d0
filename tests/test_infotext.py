"""Infotext (A1111 "parameters") build/parse, PNG saving and reading."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import zlib
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from modules.errors import InvalidRequest
from modules.outputs import build_infotext, parse_infotext, read_png_parameters, request_from_infotext, save_png
from modules.outputs import saving
from modules.outputs.infotext import format_value, quote, unquote

REPO = Path(__file__).resolve().parents[1]


def base_params(**extra):
    params = {"Steps": 20, "Sampler": "DPM++ 2M Karras", "CFG scale": 7.0, "Seed": 123, "Size": "512x512",
              "Model hash": "abcdef1234", "Model": "name"}
    params.update(extra)
    params["Version"] = "visage-0.1.0"
    return params


def test_exact_a1111_text():
    text = build_infotext("a woman, smiling", "blurry", base_params())
    assert text == (
        "a woman, smiling\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 123, Size: 512x512, "
        "Model hash: abcdef1234, Model: name, Version: visage-0.1.0"
    )


def test_empty_negative_omits_line_and_none_values_dropped():
    text = build_infotext("portrait", "", base_params(**{"Clip skip": None, "Preset": "anime"}))
    assert "Negative prompt" not in text
    assert "Clip skip" not in text
    assert text.splitlines()[0] == "portrait"
    assert text.splitlines()[1].startswith("Steps: 20, ")
    assert ", Preset: anime, Version: visage-0.1.0" in text


@pytest.mark.parametrize("value, expected", [
    (7.0, "7"), (7.5, "7.5"), (0.0, "0"), (20, "20"), (True, "True"), ("x", "x"), (1e-05, "1e-05"),
])
def test_format_value(value, expected):
    assert format_value(value) == expected


@pytest.mark.parametrize("raw, quoted", [
    ("plain", "plain"),
    ("a, b", '"a, b"'),
    ("k: v", '"k: v"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("two\nlines", '"two\\nlines"'),
    ("人像, 中文", '"人像, 中文"'),  # ensure_ascii=False, as A1111
    (" padded", '" padded"'),
])
def test_quote_unquote(raw, quoted):
    assert quote(raw) == quoted
    assert unquote(quoted) == raw


def test_unquote_leaves_broken_json():
    assert unquote('"not json') == '"not json'
    assert unquote('"bad \\q"') == '"bad \\q"'


ROUND_TRIP = [
    ("plain", "a photo of a woman", "lowres, blurry"),
    ("chinese", "人像，中文提示词，微笑的女孩", "模糊, 低质量"),
    ("punctuation", 'portrait, (smile:1.2), "quoted" words: yes', "bad: hands, (ugly:1.3)"),
    ("multiline", "line one,\nline two: more\nline three", "neg one\nneg two"),
    ("empty negative", "just a prompt", ""),
    ("empty prompt", "", "only negative"),
]


@pytest.mark.parametrize("label, prompt, negative", ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_round_trip(label, prompt, negative):
    params = base_params(**{"Lora hashes": "a: 1234567890, b: abc", "Note": 'he said "ok"\nthen left',
                            "Clip skip": 2, "Preset": "realistic_portrait"})
    text = build_infotext(prompt, negative, params)
    got_prompt, got_negative, got = parse_infotext(text)
    assert (got_prompt, got_negative) == (prompt, negative)
    assert got == {k: format_value(v) for k, v in params.items()}
    assert got["Lora hashes"] == "a: 1234567890, b: abc"
    assert got["CFG scale"] == "7"


def test_lora_hashes_written_quoted():
    text = build_infotext("p", "", base_params(**{"Lora hashes": "a: 1234567890, b: abc"}))
    assert 'Lora hashes: "a: 1234567890, b: abc", Version' in text


def test_parse_real_a1111_sample():
    text = (
        "masterpiece, 1girl, (smile:1.1),\n<lora:detail:0.6>\n"
        "Negative prompt: (worst quality:1.4), lowres\nbad hands\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 4094581262, "
        "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, "
        'Lora hashes: "detail: 7c6e0b3e6f1a", Version: v1.10.1'
    )
    prompt, negative, params = parse_infotext(text)
    assert prompt == "masterpiece, 1girl, (smile:1.1),\n<lora:detail:0.6>"
    assert negative == "(worst quality:1.4), lowres\nbad hands"
    assert params["Schedule type"] == "Karras"
    assert params["Lora hashes"] == "detail: 7c6e0b3e6f1a"
    req = request_from_infotext(text)
    assert req == {
        "prompt": prompt, "negative_prompt": negative, "steps": 28, "sampler": "DPM++ 2M Karras",
        "cfg_scale": 6.5, "seed": 4094581262, "width": 512, "height": 768, "clip_skip": 2,
        "model": "v1-5-pruned-emaonly",
    }


def test_last_line_needs_three_pairs():
    # as A1111: a short "key: value" last line is part of the prompt
    prompt, negative, params = parse_infotext("a cat\nstyle: cute, mood: calm")
    assert prompt == "a cat\nstyle: cute, mood: calm"
    assert params == {}


def test_params_only_text():
    prompt, negative, params = parse_infotext("Steps: 8, Sampler: Euler (flow match), CFG scale: 0, Seed: 1")
    assert (prompt, negative) == ("", "")
    assert params["Sampler"] == "Euler (flow match)"


def test_request_from_infotext_fields_and_preset():
    text = build_infotext("人像", "", base_params(**{"Clip skip": 2, "Preset": "anime"}))
    req = request_from_infotext(text)
    assert req["prompt"] == "人像" and req["negative_prompt"] == ""
    assert (req["steps"], req["sampler"], req["cfg_scale"], req["seed"]) == (20, "DPM++ 2M Karras", 7.0, 123)
    assert (req["width"], req["height"], req["clip_skip"]) == (512, 512, 2)
    assert (req["model"], req["preset"]) == ("name", "anime")
    from modules.generation.params import GenerationRequest
    GenerationRequest(**req)  # every key is a request field


def test_request_from_infotext_bad_numbers():
    with pytest.raises(InvalidRequest) as err:
        request_from_infotext("p\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1")
    assert err.value.field == "Steps"
    with pytest.raises(InvalidRequest) as err:
        request_from_infotext("p\nSteps: 2, Sampler: Euler, Size: big, Seed: 1")
    assert err.value.field == "Size"


def test_build_rejects_unparseable_key():
    with pytest.raises(ValueError):
        build_infotext("p", "", {"Bad, key": 1})


# --- saving ---------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 22, 10, 30)


def image(color=(200, 100, 50)):
    return Image.new("RGB", (16, 16), color)


def test_save_png_layout_counter_and_text(tmp_path):
    text = build_infotext("a portrait", "blurry", base_params())
    first = save_png(image(), text, tmp_path, 123, now=NOW)
    second = save_png(image(), text, tmp_path, 7, now=NOW)
    assert first == tmp_path / "2026-11-22" / "00000-123.png"
    assert second == tmp_path / "2026-11-22" / "00001-7.png"
    (tmp_path / "2026-11-22" / "00041-9.png").write_bytes(b"")  # A1111 continues after the largest number
    (tmp_path / "2026-11-22" / "notes.txt").write_text("x")
    third = save_png(image(), text, tmp_path, 5, now=NOW)
    assert third.name == "00042-5.png"
    assert read_png_parameters(first) == text
    with Image.open(first) as img:
        assert img.size == (16, 16) and img.getpixel((0, 0)) == (200, 100, 50)
    assert not [p for p in (tmp_path / "2026-11-22").iterdir() if p.name.startswith(".")]  # no temp left


def test_latin1_text_is_tEXt_and_unicode_is_iTXt(tmp_path):
    ascii_path = save_png(image(), "plain text\nSteps: 1, Seed: 2, Size: 8x8", tmp_path, 1, now=NOW)
    cjk_path = save_png(image(), "人像\nSteps: 1, Seed: 2, Size: 8x8", tmp_path, 2, now=NOW)
    assert b"tEXtparameters\x00plain text" in ascii_path.read_bytes()
    assert b"iTXtparameters" not in ascii_path.read_bytes()
    data = cjk_path.read_bytes()
    assert b"iTXtparameters" in data and "人像".encode() in data
    assert read_png_parameters(cjk_path) == "人像\nSteps: 1, Seed: 2, Size: 8x8"


def test_concurrent_saves_never_collide(tmp_path):
    paths, errors = [], []

    def worker(i):
        try:
            paths.append(save_png(image((i, i, i)), f"image {i}", tmp_path, 42, now=NOW))
        except Exception as exc:  # noqa: BLE001 - collect and fail below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(p.name for p in paths) == [f"{i:05d}-42.png" for i in range(16)]
    texts = {read_png_parameters(p) for p in paths}
    assert texts == {f"image {i}" for i in range(16)}


def test_exclusive_write_does_not_overwrite(tmp_path):
    from modules.atomic import write_bytes_exclusive
    target = tmp_path / "a.bin"
    write_bytes_exclusive(target, b"one")
    with pytest.raises(FileExistsError):
        write_bytes_exclusive(target, b"two")
    assert target.read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_read_from_bytes_image_and_missing(tmp_path):
    text = "p\nSteps: 1, Seed: 2, Size: 8x8"
    path = save_png(image(), text, tmp_path, 1, now=NOW)
    assert read_png_parameters(path.read_bytes()) == text
    with Image.open(path) as img:
        assert read_png_parameters(img) == text
    plain = tmp_path / "plain.png"
    image().save(plain)
    assert read_png_parameters(plain) is None
    with pytest.raises(InvalidRequest):
        read_png_parameters(tmp_path / "nope.png")
    with pytest.raises(InvalidRequest):
        read_png_parameters(b"this is not an image")


def test_read_text_chunk_after_image_data(tmp_path):
    # some tools write text chunks after IDAT; build one by hand
    buf = io.BytesIO()
    image().save(buf, format="PNG")
    data = buf.getvalue()
    iend = data.rindex(b"IEND") - 4
    body = b"parameters\x00late text"
    late = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    path = tmp_path / "late.png"
    path.write_bytes(data[:iend] + late + data[iend:])
    assert read_png_parameters(path) == "late text"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("byteorder", ["utf-16-be", "utf-16-le"])
def test_read_exif_user_comment(tmp_path, fmt, byteorder):
    text = "人像, portrait\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 8x8"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + text.encode(byteorder)
    path = tmp_path / f"x.{fmt.lower()}"
    image().save(path, format=fmt, exif=exif)
    assert read_png_parameters(path) == text


def test_read_limits(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("L", (100, 60)).save(big)
    monkeypatch.setattr(saving, "MAX_READ_PIXELS", 5000)
    with pytest.raises(InvalidRequest, match="megapixels"):
        read_png_parameters(big)
    monkeypatch.setattr(saving, "MAX_READ_PIXELS", 50_000_000)
    monkeypatch.setattr(saving, "MAX_READ_BYTES", 10)
    with pytest.raises(InvalidRequest, match="MB"):
        read_png_parameters(big)
    with pytest.raises(InvalidRequest, match="MB"):
        read_png_parameters(big.read_bytes())
    assert Image.MAX_IMAGE_PIXELS != 5000  # nothing global was changed


def test_torch_free():
    code = ("import sys, modules.outputs, modules.outputs.saving, modules.atomic; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
