"""GPEN face restoration as a Visage extension: ``register(api)`` wires

* the txt2img post-processor ``gpen`` ("Restore faces (GPEN)", kind ``face_restore``, so A1111's
  ``restore_faces: true`` selects it); infotext ``Face restoration: GPEN-BFR-512``;
* the page tab "Restore faces" (:mod:`.tab`, torch-free: the work goes through the engine's job queue);
* ``POST /api/v1/restore-faces`` (:mod:`.routes`);
* ``python -m modules.cli restore-faces -i IN -o OUT`` (:mod:`.cli`).

Options (``api.settings``, from the extensions settings file under ``"gpen"``): ``model``, ``max_side``,
``tile``, ``fp16``, ``upscale``, ``strength``, ``detector``, ``min_neighbors``, ``color_match``.
Nothing heavy is imported here: torch is imported inside the functions that run a restoration.
"""
from __future__ import annotations

from .restore import FaceRestorer, RestoreOptions
from .strings import register_strings, text


def register(api) -> None:
    register_strings()  # the gpen.* keys (labels, errors, notes) in every language
    defaults = RestoreOptions.from_mapping(api.settings)
    restorer = FaceRestorer(api.models_dir, default_device=api.device)
    api.add_postprocessor("gpen", text("postprocessor", "en"), text("postprocessor", "zh"),
                          make_postprocessor(restorer, defaults), kind="face_restore")

    from .tab import make_build
    api.add_tab("restore-faces", text("tab", "en"), text("tab", "zh"), make_build(restorer, defaults))

    from .routes import build_router
    api.add_routes(build_router(restorer, defaults, api.submit))

    from .cli import configure, make_run
    api.add_cli_command("restore-faces", "restore the faces in a photo or a folder of photos with GPEN",
                        configure, make_run(api.models_dir, defaults))


def make_postprocessor(restorer: FaceRestorer, defaults: RestoreOptions):
    """``run(image, ctx)`` for a generation job: runs on the engine's worker, on the engine's device."""
    from modules.extensions import PostprocessResult

    def run(image, ctx):
        options = RestoreOptions.from_mapping(ctx.options or {}, defaults)
        if options.device == "auto":
            options.device = "cuda" if str(ctx.device).startswith("cuda") else "cpu"

        def cancelled() -> bool:
            ctx.check_cancelled()  # raises Interrupted when the user pressed Interrupt
            return False

        result = restorer.restore(image, options, report=ctx.report, cancelled=cancelled)
        return PostprocessResult(result.image, infotext=result.infotext)

    return run
