"""The embedding warm-up is low-priority work on the one queue: a generation never waits for it (issue 11).

The bug this guards against: the warm-up ran on its own thread, owned a pending cache entry and slept until
the queue was empty, while the queue's running job waited for that very entry — a dead-lock, hit every time
by a second CLI run with a preset. Now every encode runs on the worker thread, generations first.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from conftest import REPO_ROOT
from modules.engine import Engine
from modules.generation.params import GenerationRequest
from modules.jobs import Priority
from modules.settings import Settings
from modules.tiny import make_tiny_model

MODEL = "tiny-warm"
RUN_TIMEOUT_S = 240  # a tiny 2-step 64x64 run takes seconds; the dead-lock never ended


def _cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "modules.cli", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def test_second_cli_run_with_a_preset_finishes(tmp_path):
    """The reproduction from the issue, with the default (persistent) embedding cache: run 2 found run 1's
    entries on disk, so the warm-up reached the job's own key first and the job waited for it forever."""
    models, cache = tmp_path / "models", tmp_path / "cache"
    make = _cli("make-tiny-model", "--family", "sd15", "--format", "diffusers",
                "--out", models / "Stable-diffusion" / "tiny15")
    assert make.returncode == 0, make.stderr[-2000:]
    for prompt in ("a man", "a child"):
        run = _cli("generate", "--models-dir", models, "--cache-dir", cache, "--model", "tiny15",
                   "--preset", "anime", "--prompt", prompt, "--steps", 2, "--width", 64, "--height", 64,
                   "--out", tmp_path / "out")
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.strip().endswith(".png")
    assert any((cache / "embeddings").rglob("*.safetensors")), "the runs used the persistent cache"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    make_tiny_model("sd15", "diffusers", root / "models" / "Stable-diffusion" / MODEL, seed=3)
    eng = Engine(Settings(models_dir=root / "models", outputs_dir=root / "out", cache_dir=root / "cache",
                          hf_cache=root / "no-hf", presets_dir=root / "presets", threads=1,
                          warm_presets=True, embed_cache_persist=True))
    eng.start(load_initial=False)
    yield eng
    eng.close()


@pytest.fixture
def encodes(engine, monkeypatch):
    """(job kind, thread name) of every text-encoder run of the loaded model."""
    from modules.backends.diffusers import DiffusersBackend

    calls = []
    real = DiffusersBackend.encode

    def spy(self, *args, **kwargs):
        job = engine.queue.current
        calls.append((job.kind if job else None, threading.current_thread().name))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DiffusersBackend, "encode", spy)
    return calls


def _gate(engine):
    """A job that holds the worker until released, so what is queued behind it is ordered deterministically."""
    started, release = threading.Event(), threading.Event()
    job = engine.queue.submit("gate", lambda ctx: (started.set(), release.wait(60)))
    assert started.wait(60)
    return job, release


def test_a_generation_queued_with_a_load_runs_before_its_warm_up(engine, encodes):
    """Load + a preset generation queued together: the load queues the warm-up, the generation still
    encodes first, itself, on the worker; every warm encode runs after it, on the worker too."""
    engine.embed_cache.clear()
    gate, release = _gate(engine)
    switch = engine.switch_model(MODEL)
    gen = engine.generate(GenerationRequest(prompt="a child", preset="anime", steps=2, width=64, height=64,
                                            seed=1, save=False))
    release.set()
    gate.wait(60)
    switch.wait(120)
    assert len(gen.wait(RUN_TIMEOUT_S).images) == 1
    assert engine.wait_for_warming(RUN_TIMEOUT_S)
    kinds = [kind for kind, _thread in encodes]
    assert kinds[0] == "generate", kinds
    assert kinds.count("generate") == 1 and kinds.count("warm-embeddings") >= 1, kinds
    assert {thread for _kind, thread in encodes} == {"visage-worker"}, "an encode ran outside the queue"


def test_generations_with_warm_up_on_always_finish(engine):
    """Switches (each starts a warm-up) interleaved with preset generations whose keys the warm-up also
    computes: all finish, and each waits behind at most the one warm job already running."""
    for preset in ("anime", "id_photo", "realistic_portrait"):
        engine.switch_model(MODEL)
        for prompt in ("", "a man", "a child"):
            job = engine.generate(GenerationRequest(prompt=prompt, preset=preset, steps=1, width=64, height=64,
                                                    seed=2, save=False))
            assert job.wait(RUN_TIMEOUT_S).images
    assert engine.wait_for_warming(RUN_TIMEOUT_S)


def test_warm_jobs_wait_behind_user_jobs_and_are_not_counted(engine):
    gate, release = _gate(engine)
    order = []
    background = engine.queue.submit("background", lambda ctx: order.append("background"),
                                     priority=Priority.BACKGROUND)
    user = engine.queue.submit("user", lambda ctx: order.append("user"))
    assert engine.queue_length() == 2  # the gate and the user job: background work is nobody's queue
    assert engine.queue_position(user) == 1
    assert engine.current_job() is gate
    release.set()
    background.wait(30)
    user.wait(30)
    assert order == ["user", "background"]  # submitted later, the user job still ran first
