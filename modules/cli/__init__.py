"""The command line: ``python -m modules.cli <command> ...`` (:mod:`modules.cli.app`). Torch-free at import.

One module per command group: :mod:`.tiny` (make-tiny-model), :mod:`.models` (models, download,
fetch-tokenizer), :mod:`.generate`, :mod:`.presets` (presets, styles, cache-stats), :mod:`.lora` (loras,
merge-lora), :mod:`.edge` (build-edge), :mod:`.extensions` (extensions, and the extensions' own commands).
:mod:`.settings` is the one way flags become :class:`~modules.settings.Settings`, for these commands and for
webui.py (whose flags are in :mod:`.serve`). Benchmarks are not product commands: ``python -m bench.edge``.
"""
from __future__ import annotations

from modules.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
