"""Which language page a browser gets: ?lang=, the switch's cookie, Accept-Language, the system locale."""
from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import webui
from modules.ui.i18n import lang_from_accept_language, preferred_lang


@pytest.mark.parametrize("header, expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("fr-FR,fr;q=0.9,zh-TW;q=0.7,en;q=0.5", "zh"),
    ("en;q=0.5, zh;q=0.6", "zh"),
    ("zh;q=0, en", "en"),
    ("fr, de", None),
    ("", None),
    (None, None),
    ("zh-Hans-CN", "zh"),
    ("en;q=bad, zh;q=0.1", "zh"),
])
def test_accept_language(header, expected):
    assert lang_from_accept_language(header) == expected


def test_preferred_lang_rule():
    pick = dict(query=None, cookie=None, accept_language=None)
    # auto: zh when the browser or the system (the default) asks for it, else en
    assert preferred_lang(**{**pick, "accept_language": "zh-CN"}, default="en", follow_browser=True) == "zh"
    assert preferred_lang(**{**pick, "accept_language": "en-US"}, default="zh", follow_browser=True) == "zh"
    assert preferred_lang(**{**pick, "accept_language": "en-US"}, default="en", follow_browser=True) == "en"
    # --lang en: the browser does not override the flag, an explicit choice does
    assert preferred_lang(**{**pick, "accept_language": "zh-CN"}, default="en", follow_browser=False) == "en"
    assert preferred_lang(**{**pick, "cookie": "zh"}, default="en", follow_browser=False) == "zh"
    assert preferred_lang(query="en", cookie="zh", accept_language="zh", default="zh", follow_browser=True) == "en"
    assert preferred_lang(query="xx", cookie="bogus", accept_language=None, default="en", follow_browser=True) == "en"


def test_page_mounts():
    assert webui.page_mounts("en") == {"en": "/", "zh": "/zh"}
    assert webui.page_mounts("zh") == {"zh": "/", "en": "/en"}


def app_with_pages(root_lang: str, follow_browser: bool) -> TestClient:
    mounts = webui.page_mounts(root_lang)
    pages = {code: FastAPI() for code in mounts}
    for code, page in pages.items():
        page.add_api_route("/", lambda code=code: PlainTextResponse(f"page:{code}"))
        page.add_api_route("/config", lambda code=code: PlainTextResponse(f"config:{code}"))
    routes = [Mount(mounts[c], app=pages[c]) for c in sorted(mounts, key=lambda c: mounts[c] == "/")]
    app = FastAPI(routes=[Route("/healthz", lambda request: PlainTextResponse("ok")), *routes])
    webui.add_language_routing(app, mounts, follow_browser=follow_browser)
    return TestClient(app, follow_redirects=False)


def test_routing_auto_follows_the_browser_and_remembers_the_switch():
    client = app_with_pages("en", follow_browser=True)
    assert client.get("/").text == "page:en"
    r = client.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert r.status_code == 307 and r.headers["location"] == "/zh/"
    # the switch: ?lang=en on the Chinese page goes to "/", and the cookie keeps it there
    r = client.get("/zh/?lang=en&__theme=dark")
    assert r.status_code == 307 and r.headers["location"] == "/?__theme=dark"
    assert "visage_lang=en" in r.headers["set-cookie"]
    client.cookies.set("visage_lang", "en")
    assert client.get("/", headers={"Accept-Language": "zh-CN"}).text == "page:en"
    # an explicit /zh/ is served as asked; "/zh" gets its slash; non-page paths are untouched
    assert client.get("/zh/").text == "page:zh"
    r = client.get("/zh")
    assert r.status_code == 307 and r.headers["location"] == "/zh/"
    assert client.get("/config", headers={"Accept-Language": "zh-CN"}).text == "config:en"
    assert client.get("/healthz", headers={"Accept-Language": "zh-CN"}).text == "ok"
    assert client.post("/?lang=zh").status_code != 307


def test_routing_with_a_fixed_language_ignores_the_browser():
    client = app_with_pages("zh", follow_browser=False)
    assert client.get("/", headers={"Accept-Language": "en-US"}).text == "page:zh"
    r = client.get("/?lang=en")
    assert r.status_code == 307 and r.headers["location"] == "/en/" and "visage_lang=en" in r.headers["set-cookie"]
    r = client.get("/?lang=zh")
    assert r.status_code == 200 and r.text == "page:zh" and "visage_lang=zh" in r.headers["set-cookie"]
