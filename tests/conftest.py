"""Shared test set-up: offline, private temp folders, and tiny models built once per session."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Hermetic: never see (or write to) the user's real Hugging Face cache. Set before any hub import.
_HF_HOME = tempfile.mkdtemp(prefix="visage-test-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_ASSETS = SHARED / "assets"


@pytest.fixture(autouse=True, scope="session")
def _private_temp(tmp_path_factory):
    """Gradio and huggingface_hub write only into the test's own temp folders."""
    root = tmp_path_factory.mktemp("env")
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module of tiny-model tests: faster for tiny models, and they do not fight other
    processes for the cores (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def shared_assets() -> Path:
    if not SHARED_ASSETS.is_dir():
        pytest.skip("../shared/assets is not present on this machine")
    return SHARED_ASSETS
