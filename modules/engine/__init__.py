"""The engine: state built once from Settings and passed to the page, the CLI and the API.

- :mod:`core`     :class:`Engine`: life cycle, queries, and every device action as a job on the one queue
- :mod:`prepare`  ``Engine.prepare``: a request checked and resolved once (presets, styles, defaults, LoRAs,
                  backend capability, decoder) into a :class:`PreparedJob`
- :mod:`generate` the generation job body (numbered steps, on the worker thread)
- :mod:`warmup`   the prompt-embedding warm-up: low-priority jobs on the same queue
"""
from modules.engine.core import Engine, EngineStatus, ModelState
from modules.engine.prepare import PreparedJob

__all__ = ["Engine", "EngineStatus", "ModelState", "PreparedJob"]
