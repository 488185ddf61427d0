"""Shared set-up for the API tests: a private models folder with tiny models, an engine, the API app,
and a real server (webui.py) on a free port."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO_ROOT
from modules.api import ApiLimits, build_api
from modules.paths import Folders
from modules.settings import Settings

#: narrowed limits for test servers: generated requests stay cheap on tiny models
TEST_LIMITS = ApiLimits(max_side=96, max_steps=2, max_batch_size=2, max_batch_count=2)
SD15 = "tiny-sd15-single-file-0"
ZIMAGE = "tiny-zimage-diffusers-0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def private_models(root: Path, tiny_folders: Folders, tiny_models, wanted=(("sd15", "single-file"),
                                                                        ("zimage", "diffusers"))) -> Folders:
    """A models folder of its own (copies, not links: links out of the folder are refused by the API)."""
    folders = Folders(models=root / "models", outputs=root / "outputs", cache=root / "cache")
    folders.checkpoints.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_folders.tokenizers, folders.tokenizers, dirs_exist_ok=True)
    for family, fmt in wanted:
        src = Path(tiny_models(family, fmt))
        dst = folders.checkpoints / src.name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dst)
    return folders


def make_settings(folders: Folders, **extra) -> Settings:
    values = dict(models_dir=folders.models, outputs_dir=folders.outputs, cache_dir=folders.cache,
                  hf_cache=folders.cache / "no-hf-cache", config_file=folders.cache / "config.json",
                  presets_dir=folders.cache / "presets", styles_file=folders.models / "styles.csv",
                  warm_presets=False, embed_cache_persist=False, model=SD15)
    values.update(extra)
    return Settings(**values)


def start_engine(settings: Settings):
    from modules.engine import Engine

    engine = Engine(settings)
    job = engine.start()
    if job is not None:
        job.wait(120)
    return engine


def make_client(engine, settings: Settings, limits: ApiLimits = TEST_LIMITS):
    from fastapi.testclient import TestClient

    return TestClient(build_api(engine, settings, limits=limits), raise_server_exceptions=False)


class Server:
    """``webui.py`` in a subprocess on a free port (stopped with :meth:`stop`)."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
        if not {"--extensions-dir", "--disable-all-extensions"} & set(args):
            args = [*args, "--disable-all-extensions"]  # hermetic: not whatever sits in ./extensions
        self.proc = subprocess.Popen([sys.executable, "webui.py", "--port", str(self.port), *args], cwd=REPO_ROOT,
                                     env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"webui.py exited ({self.proc.returncode}): {self.log()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def wait_listening(self, timeout: float = 120) -> "Server":
        wait_until(self.listening, timeout, "webui.py to listen")
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
