"""The API against bad input and faults: schemathesis on its own OpenAPI schema, ≥ 20 traversal and odd
names across every endpoint that takes one, upload limits, corrupt models, pickles, simulated OOM."""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from api_fixtures import SD15, ZIMAGE, TEST_LIMITS, make_client, make_settings, private_models, start_engine
from fixtures_models import tiny_folders, tiny_models  # noqa: F401 - pytest fixtures
from modules.api.models import ApiLimits

OUTSIDE_SECRET = "outside-secret"
#: the cheapest generation the tiny models allow: 64x64, one step, up to 2x2 images
FUZZ_LIMITS = ApiLimits(max_side=64, max_steps=1, max_batch_size=2, max_batch_count=2)


@pytest.fixture(scope="module")
def env(tiny_folders, tiny_models, tmp_path_factory):
    """Engine + API on a private models folder, with traps outside it (files, symlinks)."""
    root = tmp_path_factory.mktemp("hardening")
    folders = private_models(root / "inside", tiny_folders, tiny_models)
    outside = root / "outside"
    outside.mkdir()
    # a real model and a real LoRA-like file outside the folders, reachable only through symlinks
    (outside / "escaped.safetensors").write_bytes(folders.checkpoints.joinpath(f"{SD15}.safetensors").read_bytes())
    (outside / "secret.png").write_bytes(_png_bytes("secret"))
    (outside / "secret.txt").write_text(OUTSIDE_SECRET)
    os.symlink(outside / "escaped.safetensors", folders.checkpoints / "linked-out.safetensors")
    folders.lora.mkdir(parents=True)
    os.symlink(outside / "escaped.safetensors", folders.lora / "lora-out.safetensors")
    (folders.outputs / "txt2img").mkdir(parents=True)
    os.symlink(outside / "secret.png", folders.outputs / "txt2img" / "link-out.png")
    os.symlink(outside, folders.outputs / "dir-out")
    settings = make_settings(folders)
    engine = start_engine(settings)
    client = make_client(engine, settings, FUZZ_LIMITS)
    yield engine, client, folders, outside
    engine.close()


def _png_bytes(text: str | None, size=(8, 8)) -> bytes:
    from modules.outputs.saving import png_bytes

    return png_bytes(Image.new("RGB", size, (10, 20, 30)), text)


def _tiny(**fields) -> dict:
    return {"prompt": "a portrait", "width": 64, "height": 64, "steps": 1, **fields}


# --------------------------------------------------------------------------------------- schemathesis

def _runnable(case_and_plain):
    """Half of the generated /api/v1/generate bodies made runnable on the test server: unset sizes and
    steps (whose family defaults exceed the test limits) filled, and with ``plain`` the names (which
    hypothesis makes up and the server rightly answers with 404/422) left out."""
    case, plain = case_and_plain
    if isinstance(case.body, dict):
        for key, value in (("width", 64), ("height", 64), ("steps", 1)):
            if case.body.get(key) is None:
                case.body[key] = value
        if plain:
            for key in ("model", "preset", "styles", "loras", "sampler"):
                case.body.pop(key, None)
    return case


def test_schemathesis_no_server_errors_and_responses_match_schema(env):
    """≥ 200 generated requests (valid and invalid) over every operation: no 5xx, every answer as documented."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance, negative_data_rejection, response_headers_conformance,
        response_schema_conformance, status_code_conformance,
    )

    engine, client, _folders, _outside = env
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 20
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_headers_conformance, response_schema_conformance]
    sent: list[tuple[str, int]] = []
    failures: list[str] = []
    for op in operations:
        generates = op.label in ("POST /api/v1/generate", "POST /sdapi/v1/txt2img")
        for mode, examples in ((GenerationMode.POSITIVE, 16 if generates else 20), (GenerationMode.NEGATIVE, 12)):
            mode_checks = checks + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

            strategy = op.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE and op.label == "POST /api/v1/generate":
                strategy = st.tuples(strategy, st.booleans()).map(_runnable)

            @given(case=strategy)
            @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case):
                response = case.call(timeout=120)
                sent.append((op.label, response.status_code))
                if response.status_code >= 500:
                    failures.append(f"{op.label} -> {response.status_code} {response.text[:300]} for "
                                    f"{case.as_curl_command()[:600]}")
                try:
                    case.validate_response(response, checks=mode_checks)
                except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect, report at the end
                    failures.append(f"{op.label} [{mode.value}] -> {response.status_code}: {str(exc)[:400]}")

            try:
                run()
            except Unsatisfiable:  # nothing to negate (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, op.label
    server_errors = [s for s in sent if s[1] >= 500]
    generated = sum(1 for label, status in sent if status == 200 and label.endswith(("generate", "txt2img")))
    print(f"schemathesis: {len(sent)} requests over {len(operations)} operations ({generated} generations ran), "
          f"{len(server_errors)} server errors, {len(failures)} check failures")
    assert len(sent) >= 200
    assert not server_errors, "\n".join(failures[:10])
    assert not failures, "\n".join(failures[:10])
    # the server still works afterwards
    assert client.get("/healthz").json()["ready"]
    assert client.post("/api/v1/generate", json=_tiny(seed=1, save=False)).status_code == 200


# ------------------------------------------------------------------------------------------- names

UNSAFE = "unsafe_name"
#: (method, path, JSON body, expected status): every endpoint that takes a name, and the ways out
NAME_CASES = [
    ("POST", "/api/v1/generate", _tiny(model="../../etc/passwd"), 422),
    ("POST", "/api/v1/generate", _tiny(model="/etc/passwd"), 422),
    ("POST", "/api/v1/generate", _tiny(model="..\\..\\windows\\system32\\config"), 422),
    ("POST", "/api/v1/generate", _tiny(model="C:\\Windows\\win.ini"), 422),
    ("POST", "/api/v1/generate", _tiny(model="~/.ssh/id_rsa"), 422),
    ("POST", "/api/v1/generate", _tiny(model="tiny\x00.safetensors"), 422),
    ("POST", "/api/v1/generate", _tiny(model="m" * 300), 422),
    ("POST", "/api/v1/generate", _tiny(model="m" * 5000), 422),
    ("POST", "/api/v1/generate", _tiny(model=f"{SD15}/../../../outside/escaped"), 422),
    ("POST", "/api/v1/generate", _tiny(model="linked-out"), 422),  # a symlink in the folder pointing out
    ("POST", "/api/v1/generate", _tiny(model="%2e%2e%2f%2e%2e%2fetc%2fpasswd"), 404),  # not decoded: no such name
    ("POST", "/api/v1/generate", _tiny(preset="../../etc/passwd"), 422),
    ("POST", "/api/v1/generate", _tiny(styles=["../styles"]), 422),
    ("POST", "/api/v1/generate", _tiny(loras=[{"name": "../../outside/escaped"}]), 422),
    ("POST", "/api/v1/generate", _tiny(loras=[{"name": "lora-out"}]), 422),  # symlink out of models/Lora
    ("POST", "/api/v1/generate", _tiny(prompt="a face <lora:../../outside/escaped:1>"), 422),
    ("POST", "/api/v1/generate", _tiny(prompt="a face <lora:lora-out:0.5>"), 422),
    ("POST", "/api/v1/models/switch", {"model": "../outside/escaped"}, 422),
    ("POST", "/api/v1/models/switch", {"model": "linked-out"}, 422),
    ("POST", "/api/v1/models/switch", {"model": "/proc/self/environ"}, 422),
    ("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "/etc/passwd"}, 422),
    ("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "linked-out [0123456789]"}, 422),
    ("POST", "/sdapi/v1/txt2img", _tiny(override_settings={"sd_model_checkpoint": "../../etc/passwd"}), 422),
    ("POST", "/sdapi/v1/txt2img", _tiny(override_settings={"sd_model_checkpoint": "linked-out"}), 422),
    ("POST", "/sdapi/v1/txt2img", _tiny(styles=["/etc/passwd"]), 422),
    ("POST", "/sdapi/v1/txt2img", _tiny(prompt="<lora:lora-out:1> a face"), 422),
    ("GET", "/api/v1/outputs/%2e%2e/%2e%2e/outside/secret.png", None, 422),
    ("GET", "/api/v1/outputs/..%2f..%2f..%2foutside%2fsecret.png", None, 422),
    ("GET", "/api/v1/outputs/..%5c..%5coutside%5csecret.png", None, 422),
    ("GET", "/api/v1/outputs/%2fetc%2fpasswd", None, 422),
    ("GET", "/api/v1/outputs/txt2img/link-out.png", None, 422),  # symlinked file pointing out
    ("GET", "/api/v1/outputs/dir-out/secret.png", None, 422),  # symlinked folder pointing out
    ("GET", "/api/v1/outputs/dir-out/secret.txt", None, 422),
    ("GET", "/api/v1/outputs/txt2img/%00.png", None, 422),
    ("GET", "/api/v1/outputs/" + "a" * 250 + ".png", None, 422),
    # double-encoded: refused or not found, depending on how many times the client stack decodes
    ("GET", "/api/v1/outputs/%252e%252e%252f%252e%252e%252foutside%252fsecret.png", None, (404, 422)),
]


def test_at_least_twenty_name_cases():
    assert len(NAME_CASES) >= 20
    assert len({path.split("/")[3] if path.startswith("/api/v1/outputs") else path
                for _m, path, _b, _s in NAME_CASES}) >= 5


@pytest.mark.parametrize("method,path,body,status", NAME_CASES,
                         ids=[f"{i}-{c[1].rsplit('/', 1)[-1][:20]}" for i, c in enumerate(NAME_CASES)])
def test_names_never_escape_their_folders(env, method, path, body, status):
    engine, client, _folders, outside = env
    before = engine.status().model
    response = client.request(method, path, json=body)
    assert response.status_code in (status if isinstance(status, tuple) else (status,)), response.text
    data = response.json()
    assert data["error"] in ("invalid_request", UNSAFE, "model_not_found", "not_found"), data
    if response.status_code == 422:
        assert data["field"], data  # the answer names the field at fault
    assert OUTSIDE_SECRET not in response.text
    assert engine.status().model == before  # nothing was loaded


def test_outputs_serves_saved_images_by_their_relative_name(env):
    _engine, client, folders, _outside = env
    r = client.post("/api/v1/generate", json=_tiny(seed=77))
    assert r.status_code == 200, r.text
    name = r.json()["files"][0]
    assert name.startswith("txt2img/") and name.endswith("-77.png")
    got = client.get(f"/api/v1/outputs/{name}")
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.content == (folders.outputs / name).read_bytes()
    assert client.get("/api/v1/outputs/txt2img/nothing-here.png").status_code == 404


# ------------------------------------------------------------------------------------------ uploads

def _bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's calling card)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_png_info_reads_text_and_refuses_bombs_and_garbage(env):
    engine, client, _folders, _outside = env
    text = "a face\nNegative prompt: blur\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 9, Size: 64x64"
    ok = client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + _b64(_png_bytes(text))})
    assert ok.status_code == 200 and ok.json()["info"] == text
    assert ok.json()["parameters"]["Seed"] == "9" and ok.json()["parameters"]["Size-1"] == 64
    for bad, rule in ((_bomb_png(100_000, 100_000), "image"), (_bomb_png(9000, 9000), "megapixels"),
                      (b"GIF89a not really", "image"), (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image")):
        r = client.post("/sdapi/v1/png-info", json={"image": _b64(bad)})
        assert r.status_code == 422 and r.json()["field"] == "image", (rule, r.text)
    r = client.post("/sdapi/v1/png-info", json={"image": "not base64 at all!"})
    assert r.status_code == 422 and "base64" in r.json()["rule"]
    assert engine.status().state == "ready"


def test_request_size_limits_answer_413(env):
    engine, _client, _folders, _outside = env
    small = make_client(engine, engine.settings, ApiLimits(max_body_bytes=4096, max_upload_bytes=50_000))
    big_prompt = {"prompt": "x" * 10_000}
    r = small.post("/api/v1/generate", json=big_prompt)
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"prompt": "'
        for _ in range(20):
            yield b"y" * 1000
        yield b'"}'

    r = small.post("/api/v1/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    upload = _b64(_png_bytes(None, size=(256, 256)) + b"\x00" * 60_000)
    r = small.post("/sdapi/v1/png-info", json={"image": upload})
    assert r.status_code in (413, 422), r.text  # over the decoded limit, or over the upload body limit
    huge = "A" * 200_000
    assert small.post("/sdapi/v1/png-info", json={"image": huge}).status_code == 413


# ------------------------------------------------------------------------------------- bad models

def _broken_weights(good: Path, out: Path) -> None:
    """A file with a sound header whose weights do not fit the model (one U-Net tensor missing)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(good), "pt") as f:
        metadata = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    victim = next(k for k in sorted(state) if k.startswith("model.diffusion_model.out."))
    del state[victim]
    save_file(state, str(out), metadata=metadata)


def test_corrupt_model_gives_clear_error_and_previous_model_keeps_serving(env):
    engine, client, folders, _outside = env
    good = folders.checkpoints / f"{SD15}.safetensors"
    data = good.read_bytes()
    bad_files = [folders.checkpoints / n for n in ("truncated.safetensors", "garbage.safetensors",
                                                    "broken.safetensors")]
    bad_files[0].write_bytes(data[: len(data) // 2])
    bad_files[1].write_bytes(b"\xff" * 4096)
    _broken_weights(good, bad_files[2])
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    try:
        titles = [m["title"] for m in client.get("/sdapi/v1/sd-models").json()]
        assert not any(t.startswith(("garbage", "truncated")) for t in titles)  # unreadable: not offered
        before = client.get("/healthz").json()["model"]
        r = client.post("/api/v1/models/switch", json={"model": "truncated"})
        assert r.status_code == 422 and r.json()["error"] == "unsupported_model", r.text
        assert "truncated" in r.json()["message"] and "Traceback" not in r.text
        r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "garbage"})
        assert r.status_code == 422 and r.json()["error"] == "unsupported_model", r.text
        r = client.post("/api/v1/models/switch", json={"model": "broken"})  # the header is fine: it loads, and fails
        assert r.status_code == 500 and r.json()["error"] == "model_load_error", r.text
        assert "broken.safetensors" in r.json()["message"] and "Traceback" not in r.text
        health = client.get("/healthz").json()
        assert health["model"] == before and health["queue_length"] == 0
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == before
        r = client.post("/api/v1/generate", json=_tiny(seed=3, save=False))
        assert r.status_code == 200 and r.json()["model"] == before
        r = client.post("/sdapi/v1/txt2img", json=_tiny(override_settings={"sd_model_checkpoint": "broken"}))
        assert r.status_code == 500 and r.json()["error"] == "model_load_error"
        assert client.post("/api/v1/generate", json=_tiny(save=False)).json()["model"] == before
    finally:
        for path in bad_files:
            path.unlink()
        client.post("/sdapi/v1/refresh-checkpoints")


@pytest.mark.parametrize("error", ["torch", "python"])
def test_out_of_memory_during_a_job_frees_memory_and_the_next_job_runs(env, monkeypatch, error):
    import torch

    import modules.backends.diffusers as backend_module
    import modules.engine.generate as runner_module

    engine, client, _folders, _outside = env
    real_txt2img = backend_module.txt2img
    released = []
    real_release = runner_module.release_memory
    calls = {"n": 0}

    def failing_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            big = torch.ones(1024, 1024)  # noqa: F841 - held by the frame the error unwinds
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB") if error == "torch" \
                else MemoryError()
        return real_txt2img(*args, **kwargs)

    monkeypatch.setattr(backend_module, "txt2img", failing_once)
    monkeypatch.setattr(runner_module, "release_memory", lambda device: (released.append(device),
                                                                         real_release(device)))
    r = client.post("/api/v1/generate", json=_tiny(seed=11, save=False))
    assert r.status_code == 500 and r.json()["error"] == "out_of_memory", r.text
    assert "out of memory" in r.json()["message"] and "Traceback" not in r.text
    assert released, "memory was not released after the failed job"
    r = client.post("/sdapi/v1/txt2img", json=_tiny(seed=11))
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    assert client.get("/healthz").json()["state"] == "ready"


# --------------------------------------------------------------------------------------- pickles

@pytest.fixture(scope="module")
def pickles(env):
    """A benign tiny .ckpt and a malicious one (its unpickling would create a marker file)."""
    import torch
    from safetensors.torch import load_file

    _engine, _client, folders, outside = env
    state = load_file(str(folders.checkpoints / f"{SD15}.safetensors"))
    benign = folders.checkpoints / "tiny-pickle.ckpt"
    torch.save({"state_dict": state, "global_step": 1}, benign)
    marker = outside / "PWNED"
    evil = folders.checkpoints / "evil.ckpt"
    torch.save({"state_dict": {"x": _Evil(str(marker))}}, evil)
    yield benign, evil, marker
    benign.unlink()
    evil.unlink()


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tiny_sd15_configs(folders, tmp: Path) -> Path:
    """The loader's config root with the tiny SD1.5's configs (its single file carries them; a .ckpt cannot)."""
    import shutil

    from modules.tiny import make_tiny_model

    model = make_tiny_model("sd15", "diffusers", tmp / "tiny-sd15-diffusers")
    root = tmp / "configs"
    shutil.copytree(model, root / "sd15", ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return root


def test_pickles_refused_without_the_flag(env, pickles):
    _engine, client, _folders, _outside = env
    _benign, _evil, marker = pickles
    client.post("/sdapi/v1/refresh-checkpoints")
    models = {m["name"]: m for m in client.get("/api/v1/models").json()}
    assert not models["tiny-pickle"]["supported"] and "--allow-pickle" in models["tiny-pickle"]["reason"]
    assert "tiny-pickle" not in {m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()}
    r = client.post("/api/v1/models/switch", json={"model": "tiny-pickle"})
    assert r.status_code == 422 and r.json()["error"] == "unsupported_model"
    assert not marker.exists()


def test_allow_pickle_loads_with_weights_only_and_refuses_code(env, pickles, monkeypatch, tmp_path):
    import modules.loader as loader

    _engine, _client, folders, _outside = env
    _benign, _evil, marker = pickles
    monkeypatch.setattr(loader, "CONFIG_ROOT", _tiny_sd15_configs(folders, tmp_path))
    settings = make_settings(folders, allow_pickle=True, model="tiny-pickle")
    engine = start_engine(settings)
    try:
        client = make_client(engine, settings)
        models = {m["name"]: m for m in client.get("/api/v1/models").json()}
        assert models["tiny-pickle"]["supported"] and models["tiny-pickle"]["format"] == "pickle"
        assert not models["evil"]["supported"] and "weights_only" in models["evil"]["reason"]
        assert client.get("/healthz").json()["model"].startswith("tiny-pickle")
        r = client.post("/api/v1/generate", json=_tiny(seed=5, save=False))
        assert r.status_code == 200 and r.json()["model"].startswith("tiny-pickle"), r.text
        r = client.post("/api/v1/models/switch", json={"model": "evil"})
        assert r.status_code == 422 and r.json()["error"] == "unsupported_model"
        assert not marker.exists(), "unpickling ran code"
    finally:
        engine.close()


# ---------------------------------------------------------------------------------- settings file

def test_options_file_validated_on_load_and_written_atomically(tmp_path, caplog):
    from modules.api.options import DEFAULTS, OptionsStore

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"CLIP_stop_at_last_layers": "two", "samples_save": False,
                                "sd_vae": "keep-me"}))
    with caplog.at_level("WARNING"):
        store = OptionsStore(path)
    assert store.get("CLIP_stop_at_last_layers") == DEFAULTS["CLIP_stop_at_last_layers"]
    assert store.get("samples_save") is False
    assert any("CLIP_stop_at_last_layers" in w for w in store.warnings)
    assert "CLIP_stop_at_last_layers" in caplog.text
    assert store.update({"CLIP_stop_at_last_layers": 2, "unknown_key": 1}) == ["unknown_key"]
    saved = json.loads(path.read_text())
    assert saved == {**DEFAULTS, "sd_vae": "keep-me", "CLIP_stop_at_last_layers": 2, "samples_save": False}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    from modules.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as err:
        store.update({"CLIP_stop_at_last_layers": 99})
    assert err.value.field == "CLIP_stop_at_last_layers"
    assert json.loads(path.read_text())["CLIP_stop_at_last_layers"] == 2  # unchanged
    path.write_text("{not json")
    assert OptionsStore(path).values() == DEFAULTS
    path.write_text("[1, 2]")
    assert OptionsStore(path).values() == DEFAULTS
