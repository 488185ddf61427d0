"""Visage WebUI entry point: ``bash webui.sh [flags]`` (or ``python webui.py [flags]`` inside the venv)."""
from __future__ import annotations

import locale
import logging
import os
import sys

from modules.settings import build_parser, settings_from_args

log = logging.getLogger("visage")


def system_lang() -> str:
    """zh when the system locale asks for Chinese, else en (the page also follows the browser)."""
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(var, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    code = (locale.getlocale()[0] or "").lower()
    return "zh" if code.startswith("zh") else "en"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    if settings.share and not settings.auth:
        print("error: --share publishes the page on the internet; it needs --auth user:pass "
              "so that nobody else can use your GPU.", file=sys.stderr)
        return 2
    lang = system_lang() if settings.lang == "auto" else settings.lang

    from modules.engine import Engine
    from modules.ui import build_page

    engine = Engine(settings)
    engine.start()  # the first model loads in the background; the page shows loading/ready/error
    page = build_page(engine, settings, lang=lang)
    page.queue(default_concurrency_limit=4)
    try:
        page.launch(server_name=settings.host, server_port=settings.port, share=settings.share,
                    auth=list(settings.auth) or None, inbrowser=False, show_error=True)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
