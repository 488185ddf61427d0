"""``/healthz``: loading/ready/error and the queue, for monitoring. Served with the API (``--api``) and also
without it, next to the page (protected by the page's ``--auth`` when set). Torch-free."""
from __future__ import annotations

from fastapi import APIRouter

from modules import __version__
from modules.api.models import Health


def health_router(engine, max_queue: int, dependencies: list | None = None) -> APIRouter:
    router = APIRouter(dependencies=dependencies or [])

    @router.get("/healthz", response_model=Health, tags=["native"], summary="Loading/ready/error and the queue")
    def healthz() -> Health:
        s = engine.status()
        return Health(state=s.state, ready=s.state == "ready", model=s.model, family=s.family, message=s.message,
                      queue_length=s.queue_length, max_queue=max_queue, device=s.device, dtype=s.dtype,
                      version=__version__)

    return router
