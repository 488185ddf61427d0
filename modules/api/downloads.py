"""Downloads over the native API: starter packs, a download job, its progress. Torch-free.

- ``GET /api/v1/packs``: the starter packs (what each holds; sizes come with a plan).
- ``POST /api/v1/downloads``: ``{"pack": id}``, ``{"repo_id": …, "filename": …}`` (no filename: the whole repo into
  the HF cache) or ``{"url": "https://huggingface.co/ORG/REPO/blob/REV/FILE"}``; with ``"plan_only": true`` it only
  answers the plan. Answers the job id and the plan (destinations, sizes, free disk) — the plan is made before the
  job is queued, so an offline Hub or a full disk is answered at once (502 / ``download_error``).
- ``GET /api/v1/downloads/{job_id}``: state, phase (``downloading NAME``), bytes done/total, result or error.
- ``DELETE /api/v1/downloads/{job_id}``: cancel (the part files stay; the same POST resumes).

Served with the native API's auth (the router's dependencies).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from modules.api.errors import ERROR_RESPONSES, ApiError, to_api_error

#: download jobs remembered for GET (the oldest finished ones are forgotten first)
MAX_JOBS = 64


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pack: str | None = Field(None, max_length=100, description="a starter pack id (GET /api/v1/packs)")
    repo_id: str | None = Field(None, max_length=200, description="a Hub repo id, e.g. madebyollin/taesd")
    filename: str | None = Field(None, max_length=500, description="one file of repo_id")
    url: str | None = Field(None, max_length=1000, description="a Hub file URL (/blob/ or /resolve/)")
    plan_only: bool = Field(False, description="answer the plan without starting")


class DownloadStarted(BaseModel):
    job_id: int | None
    plan: dict[str, Any]


class DownloadStatus(BaseModel):
    job_id: int
    state: str
    phase: str
    done_bytes: int
    total_bytes: int
    fraction: float
    result: list[str] | None = None
    error: dict[str, Any] | None = None


def downloads_router(engine, dependencies: list) -> APIRouter:
    router = APIRouter(dependencies=dependencies, responses=ERROR_RESPONSES)
    jobs: OrderedDict[int, Any] = OrderedDict()

    def remember(job) -> None:
        jobs[job.id] = job
        while len(jobs) > MAX_JOBS:
            oldest = next((k for k, j in jobs.items() if j.finished), None)
            if oldest is None:
                break
            del jobs[oldest]

    def job_for(job_id: int):
        job = jobs.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no download job {job_id}")
        return job

    @router.get("/api/v1/packs", tags=["downloads"], summary="Starter packs: what each holds, where it goes")
    def packs() -> list[dict[str, Any]]:
        return [p.to_dict() for p in engine.starter_packs()]

    @router.post("/api/v1/downloads", response_model=DownloadStarted, tags=["downloads"],
                 summary="Plan a download (sizes, destinations, free disk) and start it")
    async def start(body: DownloadRequest) -> DownloadStarted:
        plan = await run_in_threadpool(engine.plan_download, pack=body.pack, repo_id=body.repo_id,
                                       filename=body.filename, url=body.url)
        if body.plan_only:
            return DownloadStarted(job_id=None, plan=plan.to_dict())
        job = engine.download(plan)
        remember(job)
        return DownloadStarted(job_id=job.id, plan=plan.to_dict())

    @router.get("/api/v1/downloads/{job_id}", response_model=DownloadStatus, tags=["downloads"],
                summary="Progress (bytes), result or error of a download job")
    def status(job_id: int) -> DownloadStatus:
        job = job_for(job_id)
        p = job.progress
        error = None
        if job.finished and job.error is not None:
            err = to_api_error(job.error)
            error = {"error": err.code, "message": err.message, "key": err.key, "params": err.params}
        result = [str(x) for x in job.result] if job.finished and job.error is None and job.result else None
        return DownloadStatus(job_id=job.id, state=job.state.value, phase=p.phase, done_bytes=p.step,
                              total_bytes=p.total, fraction=p.fraction, result=result, error=error)

    @router.delete("/api/v1/downloads/{job_id}", response_model=DownloadStatus, tags=["downloads"],
                   summary="Cancel a download (its part files stay; the same POST resumes)")
    def cancel(job_id: int) -> DownloadStatus:
        job_for(job_id).cancel()
        return status(job_id)

    return router
