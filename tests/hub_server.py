"""A local stand-in for the Hugging Face Hub's file API, for download tests (no network).

:class:`HubServer` serves in-memory repos on a free 127.0.0.1 port, closely enough for huggingface_hub and
:mod:`modules.downloads`:

- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: ``ETag``, ``X-Repo-Commit``, ``Content-Length``, and for LFS
  files (``.safetensors``, ``.bin``, ``.ckpt``) ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``;
  ``Range: bytes=N-`` answers 206 with ``Content-Range``.
- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: ``id``, ``sha``, ``siblings`` with
  ``size``, ``blobId`` and ``lfs`` (``sha256``, ``size``); ``/api/models/{repo}/tree/{rev}``: the file list
  snapshot_download asks for (one page, no pagination).

Faults, for tests: ``drop_after[path] = n`` cuts the next GET of ``path`` after ``n`` bytes (once);
``bad_sha`` advertises a wrong sha256 for the paths in it; ``requests`` logs ``(method, path, range)``.
Use :func:`hub_env` to point ``HF_ENDPOINT`` at it and switch offline mode off for one test.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    def __init__(self, repos: dict[str, dict[str, bytes]] | None = None):
        self.repos: dict[str, dict[str, bytes]] = {k: dict(v) for k, v in (repos or {}).items()}
        self.drop_after: dict[str, int] = {}
        self.bad_sha: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:  # noqa: PYI034 - a plain class, never subclassed
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add(self, repo_id: str, files: dict[str, bytes]) -> None:
        self.repos.setdefault(repo_id, {}).update(files)

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of the GETs of a file path (None: no range)."""
        return [rng for method, p, rng in self.requests if method == "GET" and p.endswith("/" + path)]

    # -- what the handler asks --------------------------------------------------------------------
    def sha256(self, path: str, data: bytes) -> str:
        return "0" * 64 if path in self.bad_sha else hashlib.sha256(data).hexdigest()

    def siblings(self, repo_id: str) -> list[dict]:
        out = []
        for path, data in sorted(self.repos[repo_id].items()):
            item = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
            if path.endswith(LFS_SUFFIXES):
                item["lfs"] = {"sha256": self.sha256(path, data), "size": len(data), "pointerSize": 134}
            out.append(item)
        return out


    def tree(self, repo_id: str) -> list[dict]:
        """``/api/models/{repo}/tree/{rev}?recursive=true``: files (and their folders), as the Hub lists them."""
        out, folders = [], set()
        for s in self.siblings(repo_id):
            parts = s["rfilename"].split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
            item = {"type": "file", "path": s["rfilename"], "size": s["size"], "oid": s["blobId"]}
            if "lfs" in s:
                item["lfs"] = {"oid": s["lfs"]["sha256"], "size": s["size"], "pointerSize": 134}
            out.append(item)
        out += [{"type": "directory", "path": f, "oid": "0" * 40, "size": 0} for f in sorted(folders)]
        return out


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send_json(self, obj, code: int = 200) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self, what: str) -> None:
            body = json.dumps({"error": f"{what} not found"}).encode()
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if "resolve" in self.path else "RepoNotFound")
            self.send_header("X-Error-Message", f"{what} not found")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def _serve(self) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path, self.headers.get("Range")))
            parts = [p for p in path.split("/") if p]
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id = f"{parts[2]}/{parts[3]}"
                if repo_id not in hub.repos:
                    return self._not_found(repo_id)
                if len(parts) >= 6 and parts[4] == "tree":  # snapshot_download lists the tree (one page)
                    return self._send_json(hub.tree(repo_id))
                return self._send_json({"id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False,
                                        "siblings": hub.siblings(repo_id)})
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id, file_path = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
                data = hub.repos.get(repo_id, {}).get(file_path)
                if data is None:
                    return self._not_found(f"{repo_id}/{file_path}")
                return self._serve_file(file_path, data)
            self._not_found(path)

        def _serve_file(self, file_path: str, data: bytes) -> None:
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes="):-1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            self.send_response(206 if start else 200)
            lfs = file_path.endswith(LFS_SUFFIXES)
            etag = hub.sha256(file_path, data) if lfs else git_blob_id(data)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Accept-Ranges", "bytes")
            if lfs:
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(data)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if self.command == "HEAD":
                return
            body = data[start:]
            cut = hub.drop_after.pop(file_path, None) if self.command == "GET" else None
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_WR)  # cut mid-file: fewer bytes than Content-Length
                return
            self.wfile.write(body)

    return Handler


def hub_env(monkeypatch, server: HubServer) -> None:
    """Point the Hub at ``server`` for one test: ``HF_ENDPOINT`` (read at call time by modules.downloads),
    offline mode off (environment and huggingface_hub's import-time constant)."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.url)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
