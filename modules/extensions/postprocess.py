"""Run the requested post-processors on a generation job's images (called by the engine on its worker,
with the device lock held, before the images are saved). Torch-free.

A post-processor that raises leaves that image as it was and adds a note to the result (the generation
is not lost); Interrupt and out-of-memory errors go on up to the engine as usual.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modules.errors import Interrupted, OutOfMemory, VisageError
from modules.extensions.api import PostprocessContext, PostprocessResult, Postprocessor
from modules.messages import Message
from modules.outputs.infotext import build_infotext

log = logging.getLogger(__name__)


@dataclass
class PostprocessOutput:
    images: list
    infotexts: list[dict[str, str]]  # per image: entries to add to its infotext
    notes: list[str]


def run_postprocessors(images: Sequence, seeds: Sequence[int], request, postprocessors: Sequence[Postprocessor], *,
                       report: Callable[[str, int, int], None], check_cancelled: Callable[[], None],
                       options_for: Callable[[str], dict], device: str) -> PostprocessOutput:
    """Each image through each post-processor in turn (``postprocessors`` already in load order)."""
    images = list(images)
    extra: list[dict[str, str]] = [{} for _ in images]
    notes: list[str] = []
    if not postprocessors:
        return PostprocessOutput(images, extra, notes)
    failed: set[str] = set()
    for pp in postprocessors:
        for i, (image, seed) in enumerate(zip(images, seeds)):
            if pp.id in failed:
                break
            check_cancelled()
            report(f"{pp.label_en} {i + 1}/{len(images)}", i, len(images))
            ctx = PostprocessContext(request=request, seed=seed, index=i, options=options_for(pp.extension),
                                     device=device, report=report, check_cancelled=check_cancelled)
            try:
                out = pp.run(image, ctx)
                new_image, entries = _result(out)
            except (Interrupted, OutOfMemory, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - a broken post-processor must not lose the images
                if type(exc).__name__ == "OutOfMemoryError":  # torch's, without importing torch here
                    raise
                if isinstance(exc, VisageError):  # expected and explained (e.g. weights missing): one line
                    log.warning("post-processor %s (extension %s) failed: %s", pp.id, pp.extension, exc)
                else:
                    log.exception("post-processor %s (extension %s) failed", pp.id, pp.extension)
                notes.append(Message("note.postprocess_failed", id=pp.id, kind=type(exc).__name__, detail=str(exc)))
                failed.add(pp.id)
                break
            images[i] = new_image
            extra[i].update(entries)
    report("post-processing", len(images), len(images))
    return PostprocessOutput(images, extra, notes)


def _result(out) -> tuple[object, dict[str, str]]:
    if isinstance(out, PostprocessResult):
        image, entries = out.image, dict(out.infotext or {})
    else:
        image, entries = out, {}
    if not (hasattr(image, "size") and hasattr(image, "mode") and hasattr(image, "save")):
        raise TypeError(f"returned {type(image).__name__}, not a PIL image or PostprocessResult")
    clean = {}
    for key, value in entries.items():
        if not isinstance(key, str):
            raise TypeError(f"infotext key {key!r} is not text")
        build_infotext("", "", {key: value})  # raises ValueError for a key A1111's parser cannot read back
        clean[key] = str(value)
    return image, clean
