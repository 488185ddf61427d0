"""Presets: schema validation, store, apply, and the shipped preset files."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modules.errors import InvalidRequest
from modules.families import Family, family_info
from modules.generation.params import GenerationRequest
from modules.presets import LoraRef, PresetError, PresetStore, apply_preset, parse_preset
from modules.presets.schema import FamilyParams, LocalizedText, Preset

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "presets"

GOOD = {
    "id": "my_portrait",
    "name": {"zh": "我的人像", "en": "My portrait"},
    "description": {"zh": "说明", "en": "About"},
    "families": ["sdxl", "sd15"],
    "prompt": "{prompt}, portrait photograph",
    "negative_prompt": "lowres, blurry",
    "family_params": {
        "sd15": {"steps": 28, "cfg_scale": 6.5, "width": 512, "height": 768, "sampler": "DPM++ 2M Karras",
                 "clip_skip": 2},
        "sdxl": {"steps": 30, "cfg_scale": 5.5, "width": 832, "height": 1216, "sampler": "Euler a"},
    },
    "seed": "random",
    "tags": ["photo"],
}


def variant(**changes):
    data = copy.deepcopy(GOOD)
    for path, value in changes.items():
        node = data
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return data


DELETE = object()


def test_parse_good_and_round_trip():
    preset = parse_preset(GOOD, "my_portrait", "my_portrait.json")
    assert preset.families == (Family.SDXL, Family.SD15)
    assert preset.best_family is Family.SDXL
    assert preset.family_params[Family.SD15] == FamilyParams(28, 6.5, 512, 768, "DPM++ 2M Karras", 2)
    assert preset.seed == -1
    assert preset.name.get("zh") == "我的人像" and preset.name.get("en") == "My portrait"
    assert parse_preset(preset.to_dict(), "my_portrait") == preset
    assert parse_preset(variant(seed=12345), "my_portrait").seed == 12345


BAD = [
    ("not an object", ["a list"], "(top level)", "JSON object"),
    ("unknown field", variant(negtive_prompt="x"), "negtive_prompt", "unknown field"),
    ("id mismatch", variant(id="other"), "id", "does not match"),
    ("missing name", variant(name=DELETE), "name", "required"),
    ("empty zh name", variant(name__zh=" "), "name.zh", "empty"),
    ("name wrong type", variant(name="just text"), "name", "must be an object"),
    ("prompt not text", variant(prompt=5), "prompt", "must be text"),
    ("families empty", variant(families=[]), "families", "non-empty"),
    ("unknown family", variant(families=["sdxl", "flux"]), "families[1]", "unknown family 'flux'"),
    ("family twice", variant(families=["sdxl", "sdxl"]), "families[1]", "twice"),
    ("family without params", variant(families=["sdxl", "zimage"]), "family_params.zimage", "required"),
    ("steps float", variant(family_params__sd15__steps=20.5), "family_params.sd15.steps", "whole number"),
    ("steps zero", variant(family_params__sd15__steps=0), "family_params.sd15.steps", "between 1 and 150"),
    ("cfg too big", variant(family_params__sdxl__cfg_scale=31), "family_params.sdxl.cfg_scale", "between 0"),
    ("cfg bool", variant(family_params__sdxl__cfg_scale=True), "family_params.sdxl.cfg_scale", "number"),
    ("width not /8", variant(family_params__sd15__width=510), "family_params.sd15.width", "multiple of 8"),
    ("height too big", variant(family_params__sdxl__height=4096), "family_params.sdxl.height", "between 64"),
    ("missing sampler", variant(family_params__sdxl__sampler=DELETE), "family_params.sdxl.sampler", "required"),
    ("flow sampler on sd", variant(family_params__sd15__sampler="Euler (flow match)"),
     "family_params.sd15.sampler", "not a Stable Diffusion 1.5 sampler"),
    ("unknown param", variant(family_params__sd15__cfg=7), "family_params.sd15.cfg", "unknown field"),
    ("seed text", variant(seed="lucky"), "seed", '"random" or a whole number'),
    ("seed too big", variant(seed=2**32), "seed", "between 0"),
    ("lora no name", variant(loras=[{"weight": 0.5}]), "loras[0].name", "must be text"),
    ("lora bad weight", variant(loras=[{"name": "a", "weight": "high"}]), "loras[0].weight", "number"),
    ("lora colon", variant(loras=[{"name": "a:b"}]), "loras[0].name", "must not contain"),
    ("thumbnail path", variant(thumbnail="../x.png"), "thumbnail", "plain file name"),
    ("thumbnail ext", variant(thumbnail="x.exe"), "thumbnail", "plain file name"),
    ("tags not list", variant(tags="photo"), "tags", "list"),
]


@pytest.mark.parametrize("label, data, field, problem", BAD, ids=[b[0] for b in BAD])
def test_validation_errors_name_file_field_problem(label, data, field, problem):
    with pytest.raises(PresetError) as err:
        parse_preset(data, "my_portrait", "my_portrait.json")
    assert err.value.file == "my_portrait.json"
    assert err.value.field == field
    assert problem in err.value.problem
    assert str(err.value).startswith(f"my_portrait.json: {field}: ")
    assert isinstance(err.value, InvalidRequest)


def test_clip_skip_refused_for_zimage():
    data = variant(families=["zimage"], family_params={"zimage": {
        "steps": 8, "cfg_scale": 0.0, "width": 1024, "height": 1024, "sampler": "Euler (flow match)", "clip_skip": 2}})
    with pytest.raises(PresetError) as err:
        parse_preset(data, "my_portrait")
    assert err.value.field == "family_params.zimage.clip_skip"


@pytest.mark.parametrize("bad_id", ["", "Upper", "has space", "../x", "-lead", "a" * 65, "中文"])
def test_bad_ids(bad_id):
    with pytest.raises(PresetError) as err:
        parse_preset(variant(id=DELETE), bad_id)
    assert err.value.field == "id"


def write(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_store_keeps_bad_files_out_without_breaking_others(tmp_path):
    write(tmp_path, "good.json", variant(id="good"))
    write(tmp_path, "broken.json", "{ not json")
    write(tmp_path, "bad_sampler.json", variant(id=DELETE, family_params__sd15__sampler="Heun"))
    write(tmp_path, "Bad Name.json", variant(id=DELETE))
    write(tmp_path, "README.md", "not a preset")
    store = PresetStore([tmp_path])
    assert store.ids() == ["good"]
    problems = {(e.file, e.field) for e in store.errors}
    assert problems == {("broken.json", "(file)"), ("bad_sampler.json", "family_params.sd15.sampler"),
                        ("Bad Name.json", "id")}
    broken = next(e for e in store.errors if e.file == "broken.json")
    assert "line 1 column 3" in broken.problem


def test_store_override_save_delete(tmp_path):
    builtin, user = tmp_path / "builtin", tmp_path / "user"
    write(builtin, "my_portrait.json", GOOD)
    store = PresetStore([builtin, user])
    assert store.save_dir == user
    original = store.get("my_portrait")
    changed = parse_preset(variant(prompt="{prompt}, changed"), "my_portrait")
    path = store.save(changed)
    assert path == user / "my_portrait.json"
    assert store.get("my_portrait").prompt == "{prompt}, changed"
    store.reload()
    assert store.get("my_portrait").prompt == "{prompt}, changed"  # later folder overrides
    assert json.loads(path.read_text(encoding="utf-8"))["name"]["zh"] == "我的人像"
    store.delete("my_portrait")
    assert store.get("my_portrait") == original  # the built-in one shows again
    with pytest.raises(InvalidRequest, match="built in"):
        store.delete("my_portrait")
    assert (builtin / "my_portrait.json").exists()
    with pytest.raises(InvalidRequest, match="no preset"):
        store.get("missing")
    assert sorted(p.name for p in user.iterdir()) == []


def test_store_save_refuses_invalid(tmp_path):
    store = PresetStore([tmp_path])
    bad = Preset(id="bad", name=LocalizedText("名", "Name"), families=(Family.SD15,),
                 family_params={Family.SD15: FamilyParams(20, 7.0, 500, 768, "Euler")})
    with pytest.raises(PresetError) as err:
        store.save(bad)
    assert err.value.field == "family_params.sd15.width"
    assert not list(tmp_path.iterdir())


def test_thumbnail_path(tmp_path):
    write(tmp_path, "my_portrait.json", variant(thumbnail="my_portrait.png"))
    store = PresetStore([tmp_path])
    assert store.thumbnail_path("my_portrait") is None
    (tmp_path / "my_portrait.png").write_bytes(b"\x89PNG")
    assert store.thumbnail_path("my_portrait") == tmp_path / "my_portrait.png"


def test_apply_template_and_params():
    preset = parse_preset(GOOD, "my_portrait")
    fields = apply_preset(preset, "a young woman", "sd15", user_negative="hat")
    assert fields == {
        "prompt": "a young woman, portrait photograph",
        "negative_prompt": "hat, lowres, blurry",
        "steps": 28, "cfg_scale": 6.5, "width": 512, "height": 768, "sampler": "DPM++ 2M Karras",
        "seed": -1, "clip_skip": 2, "preset": "my_portrait",
    }
    assert apply_preset(preset, "x", Family.SDXL)["clip_skip"] == 1


def test_apply_without_placeholder_appends_like_a1111():
    preset = parse_preset(variant(prompt="studio light"), "my_portrait")
    assert apply_preset(preset, "a man", "sdxl")["prompt"] == "a man, studio light"
    assert apply_preset(preset, "", "sdxl")["prompt"] == "studio light"


def test_apply_unlisted_family_uses_family_defaults_and_loras_become_tags():
    preset = parse_preset(variant(loras=[{"name": "detail", "weight": 0.6}, {"name": "skin"}]), "my_portrait")
    assert preset.loras == (LoraRef("detail", 0.6), LoraRef("skin", 1.0))
    fields = apply_preset(preset, "a man", "zimage")
    info = family_info("zimage")
    assert (fields["steps"], fields["cfg_scale"], fields["sampler"]) == (info.steps, info.cfg, info.default_sampler)
    assert fields["prompt"] == "a man, portrait photograph <lora:detail:0.6> <lora:skin:1>"


# --- shipped presets ------------------------------------------------------------------------------

EXPECTED_IDS = {
    "realistic_portrait", "anime", "id_photo", "business_headshot", "vintage_film", "black_and_white",
    "traditional_chinese", "oil_painting", "watercolor", "cyberpunk", "soft_beauty", "children_portrait",
}


def test_shipped_presets_all_valid():
    store = PresetStore([SHIPPED])
    assert store.errors == []
    assert EXPECTED_IDS <= set(store.ids())
    assert len(store.ids()) >= 12
    for preset in store.list():
        assert "{prompt}" in preset.prompt, preset.id
        assert preset.name.zh and preset.name.en and preset.description.zh and preset.description.en
        assert preset.negative_prompt.count(",") >= 5, preset.id  # a real negative prompt
        assert set(preset.families) == set(Family), preset.id
        assert preset.family_params[Family.ZIMAGE].steps == 8
        assert preset.family_params[Family.ZIMAGE].cfg_scale == 0.0
        for family in Family:
            fields = store.apply(preset.id, "a 25-year-old Chinese woman", family)
            assert "a 25-year-old Chinese woman" in fields["prompt"]
            request = GenerationRequest(**fields).with_defaults(family)
            request.check_inputs(family)  # the generator would accept every shipped combination
            if family is Family.ZIMAGE:
                assert request.width % 16 == 0 and request.height % 16 == 0


def test_shipped_files_are_canonical():
    """Each shipped file equals what ``save`` would write, so editing via the UI gives tiny diffs."""
    for path in sorted(SHIPPED.glob("*.json")):
        preset = parse_preset(json.loads(path.read_text(encoding="utf-8")), path.stem, path.name)
        expected = json.dumps(preset.to_dict(), ensure_ascii=False, indent=2) + "\n"
        assert path.read_text(encoding="utf-8") == expected, path.name


def test_id_photo_sizes_close_to_5_by_7():
    preset = PresetStore([SHIPPED]).get("id_photo")
    for params in preset.family_params.values():
        assert abs(params.width / params.height - 5 / 7) < 0.02


def test_torch_free():
    code = "import sys, modules.presets, modules.styles; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
