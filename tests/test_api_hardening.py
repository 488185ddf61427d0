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
    client = make_client(engine, settings)
    yield engine, client, folders, outside
    engine.close()


def _png_bytes(text: str | None, size=(8, 8)) -> bytes:
    from modules.outputs.saving import png_bytes

    return png_bytes(Image.new("RGB", size, (10, 20, 30)), text)


def _tiny(**fields) -> dict:
    return {"prompt": "a portrait", "width": 64, "height": 64, "steps": 1, **fields}


# --------------------------------------------------------------------------------------- schemathesis

def test_schemathesis_no_server_errors_and_responses_match_schema(env):
    """≥ 200 generated requests (valid and invalid) over every operation: no 5xx, every answer as documented."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
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
        for mode, examples in ((GenerationMode.POSITIVE, 8), (GenerationMode.NEGATIVE, 4)):
            mode_checks = checks + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case):
                response = case.call()
                sent.append((op.label, response.status_code))
                try:
                    case.validate_response(response, checks=mode_checks)
                except Exception as exc:  # noqa: BLE001 - schemathesis failure groups; collect, report at the end
                    failures.append(f"{op.label} [{mode.value}] -> {response.status_code}: {str(exc)[:400]}")

            try:
                run()
            except Unsatisfiable:  # nothing to negate (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, op.label
    server_errors = [s for s in sent if s[1] >= 500]
    print(f"schemathesis: {len(sent)} requests over {len(operations)} operations, "
          f"{len(server_errors)} server errors, {len(failures)} check failures")
    assert len(sent) >= 200
    assert not server_errors, server_errors[:10]
    assert not failures, "\n".join(failures[:10])
    # the server still works afterwards
    assert client.get("/healthz").json()["ready"]
    assert client.post("/api/v1/generate", json=_tiny(seed=1, save=False)).status_code == 200
