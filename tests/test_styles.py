"""A1111 styles.csv: loading, saving, applying."""
from __future__ import annotations

import csv
import io

import pytest

from modules.errors import InvalidRequest
from modules.styles import Style, apply_style_text, apply_styles, format_styles, load_styles, save_styles


@pytest.mark.parametrize("style_text, prompt, expected", [
    ("{prompt}, best quality", "a cat", "a cat, best quality"),
    ("photo of {prompt}, {prompt} again", "x", "photo of x, x again"),
    ("{prompt}", "", ""),
    ("best quality", "a cat", "a cat, best quality"),
    ("best quality", "", "best quality"),
    ("", "a cat", "a cat"),
    ("", "", ""),
    ("  best quality  ", "  a cat ", "a cat, best quality"),
    ("高质量", "人像", "人像, 高质量"),
])
def test_apply_style_text(style_text, prompt, expected):
    assert apply_style_text(style_text, prompt) == expected


def test_apply_styles_in_order():
    styles = [
        Style("photo", "photo of {prompt}", "cartoon"),
        Style("quality", "best quality", "{prompt}, lowres"),
        Style("empty"),
    ]
    assert apply_styles("a woman", "blurry", styles) == (
        "photo of a woman, best quality",
        "blurry, cartoon, lowres",
    )
    assert apply_styles("a woman", "", []) == ("a woman", "")


LOAD_CASES = [
    ("header, no BOM", "name,prompt,negative_prompt\nA,pa,na\n", {"A": ("pa", "na")}),
    ("BOM", "\ufeffname,prompt,negative_prompt\r\nA,pa,na\r\n", {"A": ("pa", "na")}),
    ("legacy name,text", "name,text\nOld,old text\n", {"Old": ("old text", "")}),
    ("comment rows and blanks", "name,prompt,negative_prompt\n# Portraits,,\n\nA,pa,\n", {"A": ("pa", "")}),
    ("quoted fields", 'name,prompt,negative_prompt\n"B, quoted","{prompt}, ""x"", y","line1\nline2"\n',
     {"B, quoted": ('{prompt}, "x", y', "line1\nline2")}),
    ("space after comma", "name, prompt, negative_prompt\nA, pa, na\n", {"A": ("pa", "na")}),
    ("short row", "name,prompt,negative_prompt\nA,pa\n", {"A": ("pa", "")}),
    ("duplicate keeps last", "name,prompt,negative_prompt\nA,one,\nA,two,\n", {"A": ("two", "")}),
    ("chinese", "name,prompt,negative_prompt\n古风,汉服，{prompt},模糊\n", {"古风": ("汉服，{prompt}", "模糊")}),
    ("empty file", "", {}),
    ("header only", "name,prompt,negative_prompt\n", {}),
]


@pytest.mark.parametrize("label, text, expected", LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_load_styles(tmp_path, label, text, expected):
    path = tmp_path / "styles.csv"
    path.write_bytes(text.encode("utf-8"))
    styles = load_styles(path)
    assert {k: (v.prompt, v.negative_prompt) for k, v in styles.items()} == expected
    assert all(v.name == k for k, v in styles.items())


def test_missing_file_is_empty(tmp_path):
    assert load_styles(tmp_path / "none.csv") == {}


def test_broken_csv_is_a_clear_error(tmp_path):
    path = tmp_path / "styles.csv"
    # (an unterminated quote just runs to the end of the file in Python's csv; an over-long field
    # is what reliably raises csv.Error)
    path.write_text("name,prompt\nA," + "x" * (csv.field_size_limit() + 1) + "\n", encoding="utf-8")
    with pytest.raises(InvalidRequest) as err:
        load_styles(path)
    assert err.value.field == "styles.csv"


def test_save_matches_a1111_writer(tmp_path):
    styles = {
        "A": Style("A", "pa", "na"),
        "B, comma": Style("B, comma", '{prompt}, "quoted"', "line1\nline2"),
        "古风": Style("古风", "汉服", ""),
    }
    path = save_styles(tmp_path / "styles.csv", styles)
    raw = path.read_bytes()
    # what A1111 writes: utf-8-sig, csv.DictWriter with default dialect (QUOTE_MINIMAL, \r\n)
    expected = io.StringIO(newline="")
    writer = csv.DictWriter(expected, fieldnames=["name", "prompt", "negative_prompt"])
    writer.writeheader()
    for style in styles.values():
        writer.writerow({"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt})
    assert raw == expected.getvalue().encode("utf-8-sig")
    assert raw.startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")
    assert load_styles(path) == styles
    assert [p.name for p in tmp_path.iterdir()] == ["styles.csv"]


def test_save_accepts_a_list_and_replaces(tmp_path):
    path = tmp_path / "styles.csv"
    save_styles(path, [Style("one", "1", "")])
    save_styles(path, [Style("two", "2", "")])
    assert list(load_styles(path)) == ["two"]
    assert format_styles([]) == "name,prompt,negative_prompt\r\n"
