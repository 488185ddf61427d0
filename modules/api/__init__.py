"""The HTTP API: Visage's own (``/healthz``, ``/api/v1``) and A1111's (``/sdapi/v1``). Torch-free.

:func:`build_api` returns a FastAPI app holding both APIs and their OpenAPI schema (``/openapi.json``,
``/docs``). ``webui.py`` mounts the Gradio page on the same app (``--api``) or serves it alone
(``--nowebui``). Everything goes through the engine's one job queue, the same one the page uses.
"""
from __future__ import annotations

import logging

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from modules import __version__
from modules.api.auth import auth_dependency
from modules.api.downloads import downloads_router
from modules.api.errors import ApiError, error_response, install_handlers
from modules.api.health import health_router
from modules.api.models import ApiLimits, request_models
from modules.api.native import native_router
from modules.api.options import OptionsStore
from modules.api.runtime import ApiRuntime
from modules.api.sdapi import sdapi_router

__all__ = ["API_PREFIXES", "ApiLimits", "build_api"]
log = logging.getLogger(__name__)

#: paths served by the API (the page, when mounted, gets everything else)
API_PREFIXES = ("/api/", "/sdapi/", "/healthz", "/openapi.json", "/docs")
#: where /docs takes Swagger UI's scripts and styles from (served here, so the docs work offline)
DOCS_ASSETS = "/docs/assets"


def swagger_ui_static() -> str:
    """The folder of Swagger UI's files inside the swagger-ui-py package."""
    from importlib.resources import files

    return str(files("swagger_ui") / "static")


#: uploads may be larger than other requests (A1111 txt2img bodies may carry images for extensions,
#: e.g. ControlNet in alwayson_scripts: accepted, then ignored)
UPLOAD_PATHS = ("/sdapi/v1/png-info", "/sdapi/v1/txt2img",
                "/api/v1/restore-faces")  # the gpen extension's photo upload


class BodyLimit:
    """ASGI middleware: refuse API request bodies over a limit with 413, before reading them whole."""

    def __init__(self, app, limits: ApiLimits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_upload_body_bytes if path in UPLOAD_PATHS else self.limits.max_body_bytes
        too_large = ApiError(413, "too_large", f"request body over {limit} bytes")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await error_response(too_large)(scope, receive, send)
                    return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(413, f"request body over {limit} bytes")
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await error_response(too_large)(scope, receive, send)


def include_extension_routes(app: FastAPI, extensions, deps: list) -> None:
    """Each loaded extension's routers, with the native API's auth. A router with a path and method Visage (or
    an earlier extension) already serves is left out, and that is logged: built-in routes always win."""
    taken = {(r.path, m) for r in app.routes for m in (getattr(r, "methods", None) or ())}
    for item in extensions.routers:
        mine = {(r.path, m) for r in item.router.routes for m in (getattr(r, "methods", None) or ())}
        clash = sorted(mine & taken)
        if clash:
            message = "routes not served, already taken: " + ", ".join(f"{m} {p}" for p, m in clash)
            log.warning("extension %s: %s", item.extension, message)
            info = extensions.infos.get(item.extension)
            if info is not None and message not in info.warnings:
                info.warnings.append(message)
            continue
        app.include_router(item.router, dependencies=deps)
        taken |= mine


class _BodyTooLarge(StarletteHTTPException):
    """Raised while the body is read; FastAPI passes HTTP exceptions through, so the handler answers 413."""


def build_api(engine, settings, *, limits: ApiLimits | None = None, title: str = "Visage API",
              extensions=None) -> FastAPI:
    """A FastAPI app serving both APIs for ``engine``.

    ``settings.api_auth`` (pairs of user, password) protects every API path with HTTP Basic, the
    schema and docs included. ``limits`` narrows what one request may ask for (default: the engine's).
    ``extensions`` (default: the engine's): their routes are served with the same auth.
    """
    limits = limits or ApiLimits()
    if extensions is None:
        extensions = getattr(engine, "extensions", None)
    rt = ApiRuntime(engine, settings, limits, OptionsStore(getattr(settings, "config_file", None)), extensions)
    check = auth_dependency(getattr(settings, "api_auth", ()))
    deps = [Depends(check)] if check else []
    models = request_models(limits)

    app = FastAPI(title=title, version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  description="Visage's own API (/healthz, /api/v1) and the A1111-compatible API (/sdapi/v1). "
                              "See docs/api.md.")
    install_handlers(app)
    app.include_router(health_router(engine, settings.max_queue, deps))
    app.include_router(native_router(rt, models, deps))
    app.include_router(sdapi_router(rt, models, deps))
    app.include_router(downloads_router(engine, deps))
    if extensions is not None:
        include_extension_routes(app, extensions, deps)
    app.state.visage = rt

    def openapi_schema() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                             routes=app.routes)
        return app.openapi_schema

    app.openapi = openapi_schema  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False, dependencies=deps)
    def openapi_json() -> dict:
        return openapi_schema()

    # Swagger UI from the swagger-ui-py wheel: /docs works offline (no CDN)
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_static()), name="docs-assets")

    @app.get("/docs", include_in_schema=False, dependencies=deps)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} - docs",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")

    app.add_middleware(BodyLimit, limits=limits)
    return app
