"""Where MTCNN's weights live and how ``python -m modules.cli fetch-face-detector`` gets them. Torch-free
(the check after fetching imports :mod:`.mtcnn` on use).

The weights are the three state dicts shipped in the ``facenet-pytorch`` 2.6.0 wheel on PyPI
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``, MIT licence). Only the wheel's files are used, never the
package (it pins an old torch): ``pip download --no-deps`` fetches the wheel, the three files are taken out of
it, checked (SHA-256 and a strict weights-only load) and written to ``models/face-detection/mtcnn/``.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from modules.errors import DownloadError, MissingComponent, ModelLoadError
from modules.messages import Message

SUBDIR = Path("face-detection") / "mtcnn"
PACKAGE, VERSION = "facenet-pytorch", "2.6.0"
WHEEL_NAME = "facenet_pytorch-2.6.0-py3-none-any.whl"
FETCH_COMMAND = "python -m modules.cli fetch-face-detector"
#: file -> SHA-256 of the file in facenet_pytorch-2.6.0-py3-none-any.whl
SHA256 = {
    "pnet.pt": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet.pt": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet.pt": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
PIP_TIMEOUT_S = 300


def mtcnn_folder(models_dir: Path) -> Path:
    return Path(models_dir) / SUBDIR


def have_weights(folder: Path) -> bool:
    return all((Path(folder) / name).is_file() for name in SHA256)


def weight_paths(folder: Path) -> dict[str, Path]:
    """``{"pnet": path, ...}``; MissingComponent naming the folder and the fetch command when a file is absent."""
    folder = Path(folder)
    missing = [name for name in SHA256 if not (folder / name).is_file()]
    if missing:
        raise MissingComponent(Message("faces.mtcnn_missing", folder=str(folder), files=", ".join(missing),
                                       command=FETCH_COMMAND))
    return {name[:-3]: folder / name for name in SHA256}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_wheel(wheel: Path) -> dict[str, bytes]:
    """The three weight files out of a facenet-pytorch wheel, each checked against its SHA-256."""
    wheel = Path(wheel)
    if not zipfile.is_zipfile(wheel):
        raise ModelLoadError(Message("faces.mtcnn_bad_wheel", path=str(wheel), reason="not a wheel (zip) file"))
    files = {}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name, digest in SHA256.items():
            member = f"facenet_pytorch/data/{name}"
            if member not in names:
                raise ModelLoadError(Message("faces.mtcnn_bad_wheel", path=str(wheel), reason=f"no {member}"))
            data = archive.read(member)
            if _sha256(data) != digest:
                raise ModelLoadError(Message("faces.mtcnn_bad_wheel", path=str(wheel),
                                             reason=f"{member} is not the {PACKAGE} {VERSION} file (SHA-256)"))
            files[name] = data
    return files


def download_wheel(dest: Path, target: Path) -> Path:
    """``pip download --no-deps facenet-pytorch==2.6.0`` into ``dest`` (the registry pip is configured with).
    DownloadError with the offline instructions (naming ``target``, where the weights go) when pip cannot."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", "--retries", "1", "--timeout", "15", f"{PACKAGE}=={VERSION}", "-d", str(dest)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise DownloadError(offline_message(target, f"pip gave no answer in {PIP_TIMEOUT_S} s")) from exc
    wheel = Path(dest) / WHEEL_NAME
    if result.returncode != 0 or not wheel.is_file():
        lines = [ln.strip() for ln in (result.stderr or result.stdout or "").splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no output")
        raise DownloadError(offline_message(target, reason))
    return wheel


def offline_message(folder: Path, reason: str) -> Message:
    return Message("faces.mtcnn_offline", package=f"{PACKAGE}=={VERSION}", reason=reason[:300],
                   command=FETCH_COMMAND, wheel=WHEEL_NAME, folder=str(folder))


def install_weights(files: dict[str, bytes], folder: Path) -> Path:
    """Write the files to ``folder`` (each through a temporary sibling and a rename), then load each net
    strictly to check it."""
    from .mtcnn import load_net

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, folder / name)
    for name, path in weight_paths(folder).items():
        load_net(name, path)
    return folder


def fetch_face_detector(models_dir: Path, wheel: Path | None = None) -> Path:
    """Put MTCNN's weights into ``models/face-detection/mtcnn`` from ``wheel`` or from a wheel pip downloads."""
    folder = mtcnn_folder(models_dir)
    if wheel is not None:
        if not Path(wheel).is_file():
            raise MissingComponent(Message("faces.mtcnn_bad_wheel", path=str(wheel), reason="no such file"))
        return install_weights(read_wheel(Path(wheel)), folder)
    with tempfile.TemporaryDirectory(prefix="visage-mtcnn-") as tmp:
        return install_weights(read_wheel(download_wheel(Path(tmp) / "wheel", folder)), folder)
