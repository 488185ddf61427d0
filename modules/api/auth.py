"""HTTP Basic authentication for the API (``--api-auth``). Torch-free."""
from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from fastapi import Depends
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from modules.api.errors import ApiError

_REALM = {"WWW-Authenticate": 'Basic realm="Visage API"'}


def _matches(credentials: HTTPBasicCredentials, pairs: Sequence[tuple[str, str]]) -> bool:
    """Constant-time comparison against every pair (no early exit that would leak which user exists)."""
    user = credentials.username.encode("utf-8", "surrogatepass")
    password = credentials.password.encode("utf-8", "surrogatepass")
    ok = False
    for want_user, want_password in pairs:
        same_user = secrets.compare_digest(user, want_user.encode("utf-8"))
        same_password = secrets.compare_digest(password, want_password.encode("utf-8"))
        ok |= same_user and same_password
    return ok


def auth_dependency(pairs: Sequence[tuple[str, str]]) -> Callable | None:
    """A FastAPI dependency that answers 401 unless the request carries one of ``pairs``; None when
    ``pairs`` is empty (the API is open, as on a 127.0.0.1-only server)."""
    if not pairs:
        return None
    pairs = tuple(pairs)
    basic = HTTPBasic(auto_error=False, realm="Visage API")

    def check(credentials: HTTPBasicCredentials | None = Depends(basic)) -> str:
        if credentials is None or not _matches(credentials, pairs):
            raise ApiError(401, "unauthorized", "this API needs HTTP Basic credentials (--api-auth)",
                           headers=_REALM)
        return credentials.username

    return check
