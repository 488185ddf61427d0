"""Find (or rebuild offline) the CLIP BPE tokenizer that single-file SD1.5/SDXL checkpoints lack. Torch-free.

Search order of :func:`find_clip_tokenizer`:

1. ``models/tokenizers/clip-vit-large-patch14/`` (Visage's own folder);
2. a Hugging Face cache copy of ``openai/clip-vit-large-patch14`` (or the ``tokenizer`` folder of the
   SD1.5 / SDXL base repositories);
3. a rebuild from ``bpe_simple_vocab_16e6.txt.gz`` found in an ``open_clip_torch`` / ``clip-anytorch`` wheel
   dropped into ``models/tokenizers/``, or in such a package already installed; the result is written to (1).

When none of these has it, :func:`ensure_clip_tokenizer` (what the loader calls) fetches vocab.json and
merges.txt of ``openai/clip-vit-large-patch14`` from the Hub into (1), inside the job that loads the model
(:mod:`modules.loader.on_demand`); offline it raises the one-sentence MissingComponent.

``python -m modules.cli fetch-tokenizer`` calls :func:`install_clip_tokenizer`: the same Hub fetch, or when the
Hub cannot be reached, the open_clip_torch wheel downloaded with pip and the tokenizer rebuilt from it.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from modules.checkpoints.hf_cache import repo_snapshots
from modules.errors import DownloadError, MissingComponent
from modules.loader.on_demand import Piece, ProgressCallback, fetch_piece
from modules.messages import Message
from modules.paths import Folders

CLIP_FOLDER_NAME = "clip-vit-large-patch14"
CLIP_FILES = ("vocab.json", "merges.txt")
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
#: CLIP keeps merges 1 .. 49152-256-2 of the BPE file (line 0 is a header).
CLIP_MERGE_COUNT = 49152 - 256 - 2
CLIP_MAX_LENGTH = 77
#: tokens of the real CLIP tokenizer (SD1.5's text encoder and both of SDXL's have this many embeddings)
CLIP_VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
FETCH_COMMAND = "python -m modules.cli fetch-tokenizer"
CLIP_REPO = "openai/clip-vit-large-patch14"
#: what is fetched on demand (into models/tokenizers/clip-vit-large-patch14, through a hidden sibling folder)
CLIP_PIECE = Piece("CLIP tokenizer", CLIP_REPO, CLIP_FILES, FETCH_COMMAND)
#: (repo id, sub-folder) of Hugging Face cache entries holding the same CLIP tokenizer files.
HF_CLIP_SOURCES = (
    ("openai/clip-vit-large-patch14", ""),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer"),
    ("runwayml/stable-diffusion-v1-5", "tokenizer"),
    ("stabilityai/stable-diffusion-xl-base-1.0", "tokenizer"),
)
WHEEL_PREFIXES = ("open_clip_torch-", "clip_anytorch-")
#: top-level packages of those wheels; their data file is found without importing them
PACKAGE_NAMES = ("open_clip", "clip")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: byte value -> printable character, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in [*printable, *(b for b in range(256) if b not in printable)]}


def clip_tokenizer_config(pad_token: str = EOS) -> dict:
    """tokenizer_config.json of the CLIP tokenizer (SDXL's second tokenizer pads with ``!``)."""
    return {
        "model_max_length": CLIP_MAX_LENGTH, "bos_token": BOS, "eos_token": EOS, "unk_token": EOS,
        "pad_token": pad_token, "do_lower_case": True, "errors": "replace", "tokenizer_class": "CLIPTokenizer",
    }


def write_clip_tokenizer(merges: list[str], out: Path, *, pad_token: str = EOS, vocab: dict | None = None) -> Path:
    """Write a CLIP-format tokenizer folder (vocab.json, merges.txt, configs) from ``"a b"`` merge lines.

    Vocabulary order is CLIP's: byte characters, the same with ``</w>``, the joined merges, BOS, EOS.
    ``vocab`` overrides that order (to copy an existing tokenizer exactly).
    Written to a temporary sibling and renamed, so ``out`` is never half-written.
    """
    if vocab is None:
        chars = list(bytes_to_unicode().values())
        tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split(" ")) for m in merges] + [BOS, EOS]
        vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (tmp / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps(clip_tokenizer_config(pad_token), indent=2),
                                               encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _read_bpe_source(source: Path) -> bytes:
    """The gzip bytes of the BPE file from a wheel, a folder (searched recursively) or the .gz itself."""
    if not source.exists():
        raise MissingComponent(f"{source} does not exist")
    if source.is_dir():
        found = sorted(source.rglob(BPE_FILE_NAME))
        if not found:
            raise MissingComponent(f"no {BPE_FILE_NAME} under {source}")
        return found[0].read_bytes()
    if source.name.endswith(".gz"):
        return source.read_bytes()
    if not zipfile.is_zipfile(source):
        raise MissingComponent(f"{source.name} is not a wheel (zip) file")
    with zipfile.ZipFile(source) as wheel:
        names = [n for n in wheel.namelist() if n.endswith("/" + BPE_FILE_NAME)]
        if not names:
            raise MissingComponent(f"{source.name} does not contain {BPE_FILE_NAME}")
        return wheel.read(names[0])


def build_clip_tokenizer_from_wheel(wheel_or_dir: Path, out: Path) -> Path:
    """Rebuild the CLIP tokenizer from the BPE file shipped in an open_clip_torch / clip-anytorch wheel."""
    try:
        lines = gzip.decompress(_read_bpe_source(Path(wheel_or_dir))).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise MissingComponent(f"{BPE_FILE_NAME} in {wheel_or_dir} is unreadable ({exc})") from exc
    merges = lines[1:1 + CLIP_MERGE_COUNT]
    if len(merges) != CLIP_MERGE_COUNT or any(len(m.split(" ")) != 2 for m in merges):
        raise MissingComponent(f"{BPE_FILE_NAME} in {wheel_or_dir} is not the CLIP BPE file")
    return write_clip_tokenizer(merges, Path(out))


def _has_clip_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in CLIP_FILES)


def _hf_cache_clip(hf_cache: Path | None) -> Path | None:
    for repo_id, sub in HF_CLIP_SOURCES:
        for snapshot in repo_snapshots(repo_id, hf_cache):
            if _has_clip_files(snapshot / sub):
                return snapshot / sub
    return None


def _local_bpe_source(folders: Folders) -> Path | None:
    """A wheel dropped into models/tokenizers/, or the data file of an installed package."""
    if folders.tokenizers.is_dir():
        for wheel in sorted(folders.tokenizers.glob("*.whl")):
            if wheel.name.lower().startswith(WHEEL_PREFIXES):
                return wheel
    for package in PACKAGE_NAMES:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            if (Path(location) / BPE_FILE_NAME).is_file():
                return Path(location) / BPE_FILE_NAME
    return None


def find_clip_tokenizer(folders: Folders, hf_cache: Path | None = None) -> Path:
    """A folder with vocab.json + merges.txt for ``CLIPTokenizer``; raises MissingComponent if none."""
    own = folders.tokenizers / CLIP_FOLDER_NAME
    if _has_clip_files(own):
        return own
    cached = _hf_cache_clip(hf_cache)
    if cached is not None:
        return cached
    source = _local_bpe_source(folders)
    if source is not None:
        return build_clip_tokenizer_from_wheel(source, own)
    raise MissingComponent(missing_message(folders))


def missing_message(folders: Folders) -> Message:
    """What is missing, where it goes and which command fetches it."""
    return Message("missing.clip_tokenizer", folder=str(folders.tokenizers / CLIP_FOLDER_NAME),
                   command=FETCH_COMMAND, repo=CLIP_REPO)


def ensure_clip_tokenizer(folders: Folders, hf_cache: Path | None = None, *,
                          on_progress: ProgressCallback | None = None,
                          should_stop=None) -> Path:
    """:func:`find_clip_tokenizer`, else fetch it from the Hub into ``models/tokenizers/clip-vit-large-patch14``
    (progress as ``on_progress(phase, done_bytes, total_bytes)``). MissingComponent (one sentence) when it is
    neither on disk nor fetchable now."""
    try:
        return find_clip_tokenizer(folders, hf_cache)
    except MissingComponent:
        pass
    return fetch_clip_tokenizer(folders, on_progress=on_progress, should_stop=should_stop)


def fetch_clip_tokenizer(folders: Folders, *, on_progress: ProgressCallback | None = None,
                         should_stop=None) -> Path:
    """vocab.json + merges.txt of ``openai/clip-vit-large-patch14`` from the Hub into Visage's own folder.

    They land in a hidden sibling (``.clip-vit-large-patch14.fetch``, kept between tries so a cut download
    resumes) and are then written to the final folder in one rename (:func:`copy_clip_tokenizer`)."""
    out = folders.tokenizers / CLIP_FOLDER_NAME
    staging = folders.tokenizers / f".{CLIP_FOLDER_NAME}.fetch"
    fetch_piece(CLIP_PIECE, staging, missing_message(folders), on_progress=on_progress, should_stop=should_stop)
    copy_clip_tokenizer(staging, out)
    shutil.rmtree(staging, ignore_errors=True)
    return out


def download_clip_wheel(dest: Path) -> Path:
    """``pip download --no-deps open_clip_torch`` into ``dest``; returns the wheel."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "open_clip_torch",
           "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("open_clip_torch-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DownloadError(f"pip download open_clip_torch failed: {tail[0]}")
    return wheels[0]


def copy_clip_tokenizer(folder: Path, out: Path) -> Path:
    """Copy vocab.json + merges.txt from an existing CLIP tokenizer folder into ``out`` (with Visage's configs)."""
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [line for line in lines if line and not line.startswith("#version")]
    return write_clip_tokenizer(merges, out, vocab=vocab)


def install_clip_tokenizer(folders: Folders, source: Path | None = None, *,
                           on_progress: ProgressCallback | None = None) -> Path:
    """Put the CLIP tokenizer into ``models/tokenizers/clip-vit-large-patch14`` and return that folder.

    ``source``: an open_clip_torch / clip-anytorch wheel, the BPE .gz, a folder containing one of those, or a
    folder with vocab.json + merges.txt. Without it: fetched from the Hub (:func:`fetch_clip_tokenizer`), or
    when that fails, rebuilt from the open_clip_torch wheel fetched with ``pip download`` (the registry).
    """
    out = folders.tokenizers / CLIP_FOLDER_NAME
    if source is not None and _has_clip_files(Path(source)):
        return copy_clip_tokenizer(Path(source), out)
    if source is not None:
        return build_clip_tokenizer_from_wheel(Path(source), out)
    try:
        return fetch_clip_tokenizer(folders, on_progress=on_progress)
    except MissingComponent as hub_error:
        try:
            with tempfile.TemporaryDirectory(prefix="visage-wheel-") as tmp:
                return build_clip_tokenizer_from_wheel(download_clip_wheel(Path(tmp)), out)
        except DownloadError:
            raise hub_error from None
