"""Visage WebUI entry point: ``bash webui.sh [flags]`` (or ``python webui.py [flags]`` inside the venv).

One server (uvicorn) on one port: the Gradio page at ``/`` and ``/healthz``, and with ``--api`` the HTTP API
(``/api/v1``, ``/sdapi/v1``, ``/docs``); ``--nowebui`` serves the API alone.
"""
from __future__ import annotations

import locale
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import replace

from modules.cli.serve import build_parser
from modules.cli.settings import settings_from_args
from modules.settings import Settings

log = logging.getLogger("visage")

#: seconds the share-link thread waits for the local server before giving up
SHARE_WAIT_S = 120


def system_lang() -> str:
    """zh when the system locale asks for Chinese, else en (the page also follows the browser)."""
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(var, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    code = (locale.getlocale()[0] or "").lower()
    return "zh" if code.startswith("zh") else "en"


def access_problem(settings: Settings) -> str | None:
    """Why these settings must not start (a public link without credentials), or None."""
    if settings.share and not settings.auth and not (settings.nowebui and settings.api_auth):
        return ("--share publishes Visage on the internet; it needs --auth user:pass (or, with --nowebui, "
                "--api-auth user:pass) so that nobody else can use your GPU.")
    return None


def api_settings(settings: Settings) -> Settings:
    """The API's credentials: --api-auth, or with --share (a public link) the page's --auth ones."""
    if settings.share and not settings.api_auth and settings.auth:
        log.info("--share without --api-auth: the API uses the --auth credentials (HTTP Basic)")
        return replace(settings, api_auth=settings.auth)
    return settings


#: cookie the language switch leaves (an explicit choice, remembered for a year)
LANG_COOKIE = "visage_lang"


def page_mounts(root_lang: str) -> dict[str, str]:
    """Where each language's page is served: ``root_lang`` at ``/``, the other at ``/<lang>``."""
    from modules.ui.i18n import LANGUAGES

    return {code: ("/" if code == root_lang else f"/{code}") for code in LANGUAGES}


def language_redirect(path: str, query: dict[str, str], cookie: str | None, accept_language: str | None,
                      mounts: dict[str, str], follow_browser: bool) -> str | None:
    """The mount to send a page request to, or None to serve it where it is.

    Only page roots are concerned (``/`` and ``/zh``/``/zh/``): ``?lang=`` moves to that language's page; at
    ``/``, the cookie and (``--lang auto``) the browser's Accept-Language choose (see
    :func:`modules.ui.i18n.preferred_lang`); an explicit ``/zh/`` is served as asked.
    """
    from modules.ui.i18n import LANGUAGES, preferred_lang

    here = next((code for code, mount in mounts.items() if path in (mount, mount.rstrip("/") + "/")), None)
    if here is None:
        return None
    asked = query.get("lang")
    if asked in LANGUAGES:
        wanted = asked
    elif mounts[here] == "/":
        wanted = preferred_lang(query=None, cookie=cookie, accept_language=accept_language, default=here,
                                follow_browser=follow_browser)
    else:
        wanted = here
    return None if wanted == here else mounts[wanted]


def add_language_routing(app, mounts: dict[str, str], follow_browser: bool) -> None:
    """Redirect page requests to the page in the wanted language; remember ``?lang=`` in a cookie."""
    from urllib.parse import urlencode

    from starlette.responses import RedirectResponse

    bare_mounts = {mount.rstrip("/") for mount in mounts.values() if mount != "/"}

    @app.middleware("http")
    async def route_language(request, call_next):
        if request.method not in ("GET", "HEAD"):
            return await call_next(request)
        query = dict(request.query_params)
        target = language_redirect(request.url.path, query, request.cookies.get(LANG_COOKIE),
                                   request.headers.get("accept-language"), mounts, follow_browser)
        asked = query.pop("lang", None)
        if target is None and request.url.path in bare_mounts:  # "/zh" -> "/zh/" (the page's own URLs are relative)
            target = request.url.path
        if target is not None:
            location = request.scope.get("root_path", "").rstrip("/") + target.rstrip("/") + "/"
            if query:
                location += "?" + urlencode(query)
            response = RedirectResponse(location, status_code=307)
        else:
            response = await call_next(request)
        if asked in mounts:
            response.set_cookie(LANG_COOKIE, asked, max_age=365 * 24 * 3600, samesite="lax")
        return response


def create_app(engine, settings: Settings, lang: str, extensions=None):
    """The FastAPI app to serve: the API (with --api / --nowebui) and the page (unless --nowebui).

    The page is built once per language: ``lang`` at ``/`` and the other at ``/<code>/``
    (:func:`page_mounts`); the in-page switch and ``/?lang=zh`` move between them.
    ``extensions``: the ExtensionSet loaded at start (default: the engine's)."""
    if extensions is None:
        extensions = getattr(engine, "extensions", None)
    if settings.api:
        from modules.api import build_api

        app = build_api(engine, api_settings(settings), extensions=extensions)
    else:
        from fastapi import Depends, FastAPI

        from modules.api.auth import auth_dependency
        from modules.api.errors import install_handlers
        from modules.api.health import health_router

        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        install_handlers(app)  # a 401 from the check below answers as the API does
        check = auth_dependency(settings.auth)  # monitoring without --api: /healthz, behind the page's --auth
        app.include_router(health_router(engine, settings.max_queue, [Depends(check)] if check else []))
    if not settings.nowebui:
        import gradio as gr

        from modules.ui import PAGE_CSS, build_page

        mounts = page_mounts(lang)
        # sub-paths first: the mount at "/" takes every path not matched before it
        for code in sorted(mounts, key=lambda c: mounts[c] == "/"):
            page = build_page(engine, settings, lang=code, extensions=extensions)
            page.queue(default_concurrency_limit=4)
            app = gr.mount_gradio_app(app, page, path=mounts[code], auth=list(settings.auth) or None,
                                      show_error=True, ssr_mode=False, server_name=settings.host,
                                      server_port=settings.port, allowed_paths=[str(settings.outputs_dir)],
                                      css=PAGE_CSS)
        add_language_routing(app, mounts, follow_browser=settings.lang == "auto")
    return app


def open_share_link(server, settings: Settings) -> str | None:
    """Once the local server runs, ask Gradio's share service for a public link. Offline (or on any
    failure) say so and return None: the local server keeps running either way."""
    deadline = time.monotonic() + SHARE_WAIT_S
    while not server.started and not server.should_exit and time.monotonic() < deadline:
        time.sleep(0.2)
    if not server.started:
        return None
    local_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    try:
        from gradio import networking

        url = networking.setup_tunnel(local_host=local_host, local_port=settings.port,
                                      share_token=secrets.token_urlsafe(32), share_server_address=None,
                                      share_server_tls_certificate=None)
    except Exception as exc:  # noqa: BLE001 - offline, blocked, missing binary: all mean "no link"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        print(f"share: could not create a public link ({type(exc).__name__}: {first}); "
              f"the local server keeps running at http://{local_host}:{settings.port}/", file=sys.stderr, flush=True)
        return None
    print(f"share: public URL {url} (protected by --auth)", flush=True)
    return url


def serve(app, settings: Settings) -> None:
    """Run ``app`` with uvicorn until interrupted (Ctrl+C / SIGTERM)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False,
                                           log_level="info", timeout_graceful_shutdown=5))
    if settings.share:
        threading.Thread(target=open_share_link, args=(server, settings), name="visage-share",
                         daemon=True).start()
    what = "API" if settings.nowebui else ("page and API" if settings.api else "page")
    print(f"Visage: serving the {what} on http://{settings.host}:{settings.port}/", flush=True)
    server.run()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    problem = access_problem(settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not (settings.auth or settings.api_auth):
        log.warning("listening on %s without --auth/--api-auth: anyone on the network can use this GPU",
                    settings.host)
    lang = system_lang() if settings.lang == "auto" else settings.lang

    from modules.extensions import load_from_settings

    extensions = load_from_settings(settings, lang=lang)  # before torch: a broken extension is listed, never fatal

    from modules.engine import Engine

    engine = Engine(settings, extensions)
    engine.start()  # the first model loads in the background; the page and /healthz show loading/ready/error
    try:
        serve(create_app(engine, settings, lang, extensions), settings)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
