"""A Hub-compatible HTTP server on 127.0.0.1: just enough for the real huggingface_hub client.

What huggingface_hub 2.x calls for `create_repo`, `create_commit` and `hf_hub_download`:

- `POST /api/repos/create`: {"name", "organization", "visibility"} -> {"url"}; 409 (with the
  url, as the Hub does) when the repo exists, which `exist_ok=True` accepts.
- `POST /api/validate-yaml`: the README.md front matter must parse as a YAML mapping.
- `POST /api/models/{repo}/preupload/{revision}`: every file is "regular", so its content comes
  base64-encoded in the commit; with `FakeHub(lfs=True)`, weight files (`*.safetensors`, `*.bin`,
  `*.pt`, as the Hub's default .gitattributes tracks them) and files of 10 MB or more are "lfs".
- LFS, as a client without hf_xet uploads large files (`HF_HUB_DISABLE_XET=1`): `POST
  /{repo}.git/info/lfs/objects/batch` answers a "basic" upload action per object, `PUT
  /lfs-objects/{oid}` takes the bytes (refused unless their sha256 is the oid), and the commit
  names them in `lfsFile` lines.
- `POST /api/models/{repo}/commit/{revision}`: NDJSON, a header line then one line per file.
- `HEAD` and `GET /{repo}/resolve/{revision}/{path}`: X-Repo-Commit, ETag and Content-Length,
  and the bytes for GET; a missing repo, revision or file gets the Hub's X-Error-Code.
- Spaces alike (`/api/spaces/...`, `/spaces/{repo}/resolve/...`; gradio ones only), kept in
  `repos` under "spaces/OWNER/NAME", and `POST /api/spaces/{repo}/variables` into `variables`.

Anything else is answered 404 and recorded in `unhandled`. Files are kept in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_MAX_BODY = 256 * 2**20
Answer = tuple[int, object, dict[str, str]]
"""Status, body (bytes, or data sent as JSON) and headers."""


@dataclass
class Repo:
    """A repo: its commits' snapshots (oid -> {path: bytes}), the newest last."""

    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    summaries: list[str] = field(default_factory=list)

    @property
    def files(self) -> dict[str, bytes]:
        """The files at the head of main (none before the first commit)."""
        return self.commits[next(reversed(self.commits))] if self.commits else {}


class HubError(Exception):
    """An error answer: status, X-Error-Code header, message, and the commit it refers to."""

    def __init__(self, status: int, code: str, message: str, commit: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.commit = status, code, commit


class FakeHub:
    """The server and its state; `with FakeHub() as hub:` serves on `hub.url` in a thread."""

    def __init__(self, token: str = "fake", lfs: bool = False) -> None:
        self.token, self.lfs = token, lfs
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> the bytes PUT for it
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self.unhandled: list[str] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.variables: dict[str, dict[str, str]] = {}  # "spaces/OWNER/NAME" -> its variables
        kind, rev = r"(?P<kind>models|spaces)", r"(?P<rev>[^/]+)"
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Answer]]] = [
            ("POST", re.compile(r"/api/repos/create"), self._create),
            ("POST", re.compile(r"/api/validate-yaml"), self._validate_yaml),
            (
                "POST",
                re.compile(rf"/api/{kind}/{_REPO}/preupload/{rev}"),
                self._preupload,
            ),
            ("POST", re.compile(rf"/api/{kind}/{_REPO}/commit/{rev}"), self._commit),
            ("POST", re.compile(rf"/api/spaces/{_REPO}/variables"), self._variable),
            (
                "POST",
                re.compile(rf"/(?P<kind>spaces/)?{_REPO}\.git/info/lfs/objects/batch"),
                self._lfs_batch,
            ),
            ("PUT", re.compile(r"/lfs-objects/(?P<oid>[0-9a-f]{64})"), self._lfs_put),
            (
                "GET",
                re.compile(rf"/(?P<kind>spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
                self._resolve,
            ),
        ]

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Hub is not running: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); later connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, method: str, path: str, body: bytes, authorization: str | None) -> Answer:
        """The answer to one request; every request is recorded, unknown ones in `unhandled`."""
        wanted = "GET" if method == "HEAD" else method
        with self.lock:
            self.requests.append(f"{method} {path}")
            route = next(
                (
                    (handler, match)
                    for verb, pattern, handler in self.routes
                    if verb == wanted and (match := pattern.fullmatch(path))
                ),
                None,
            )
            if route is None:
                self.unhandled.append(f"{method} {path}")
                return 404, {"error": f"the fake Hub has no {method} {path}"}, {}
            if method == "POST" and authorization != f"Bearer {self.token}":
                return 401, {"error": "Invalid credentials in Authorization header"}, {}
            handler, match = route
            try:
                groups = {k: unquote(v) if v else v for k, v in match.groupdict().items()}
                return handler(body, **groups)
            except HubError as error:
                headers = {"X-Error-Code": error.code, "X-Repo-Commit": error.commit}
                return error.status, {"error": str(error)}, headers

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        return self.repos[repo_id]

    def _create(self, body: bytes) -> Answer:
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}"
        if payload.get("type") == "space":  # a Space: kept apart from a model of the same name
            if payload.get("sdk") != "gradio":
                raise HubError(
                    400, "", f"this fake Hub hosts gradio Spaces, not {payload.get('sdk')}"
                )
            repo_id = f"spaces/{repo_id}"
        answer = {"url": f"{self.url}/{repo_id}"}
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", **answer}, {}
        self.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
        return 200, answer, {}

    def _validate_yaml(self, body: bytes) -> Answer:
        content = json.loads(body)["content"]
        match = re.match(r"---\n(.*?)\n---\n", content, re.DOTALL)
        metadata = yaml.safe_load(match.group(1)) if match else None
        if not isinstance(metadata, dict):
            raise HubError(400, "", "README.md has no YAML mapping between '---' lines")
        return 200, {"errors": [], "warnings": []}, {}

    @staticmethod
    def _key(kind: str | None, repo: str) -> str:
        return f"spaces/{repo}" if kind and kind.startswith("spaces") else repo

    def _variable(self, body: bytes, repo: str) -> Answer:
        self._repo(f"spaces/{repo}")
        payload = json.loads(body)
        variables = self.variables.setdefault(f"spaces/{repo}", {})
        variables[payload["key"]] = payload["value"]
        return 200, {key: {"value": value} for key, value in variables.items()}, {}

    def _preupload(self, body: bytes, kind: str, repo: str, rev: str) -> Answer:
        self._repo(self._key(kind, repo))
        files = json.loads(body)["files"]
        modes = [
            {"path": f["path"], "uploadMode": self._mode(f), "shouldIgnore": False} for f in files
        ]
        return 200, {"files": modes}, {}

    def _mode(self, file: dict) -> str:
        weights = file["path"].endswith((".safetensors", ".bin", ".pt"))
        return "lfs" if self.lfs and (weights or file["size"] >= 10 * 2**20) else "regular"

    def _lfs_batch(self, body: bytes, kind: str | None, repo: str) -> Answer:
        self._repo(self._key(kind, repo))
        payload = json.loads(body)
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", []):
            raise HubError(400, "", "this fake Hub takes basic LFS uploads only")
        objects = [
            {**item, "authenticated": True,
             "actions": {"upload": {"href": f"{self.url}/lfs-objects/{item['oid']}"}}}
            for item in payload["objects"]
        ]  # fmt: skip
        return 200, {"transfer": "basic", "objects": objects}, {}

    def _lfs_put(self, body: bytes, oid: str) -> Answer:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "", f"the bytes PUT for {oid} have another sha256")
        self.lfs_objects[oid] = body
        return 200, b"", {}

    def _commit(self, body: bytes, kind: str, repo: str, rev: str) -> Answer:
        record = self._repo(self._key(kind, repo))
        if rev != "main":
            raise HubError(404, "RevisionNotFound", f"this fake Hub commits to main, not {rev}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "", "a commit starts with a header line")
        files = dict(record.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile" and value.get("oid") in self.lfs_objects:
                files[value["path"]] = self.lfs_objects[value["oid"]]
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:
                raise HubError(400, "", f"a {key!r} line this fake Hub cannot take: {value}")
        digest = hashlib.sha1(f"{list(record.commits)}{lines[0]}".encode())
        for path, content in sorted(files.items()):
            digest.update(path.encode() + hashlib.sha256(content).digest())
        oid = digest.hexdigest()
        record.commits[oid] = files
        record.summaries.append(lines[0]["value"]["summary"])
        commit_url = f"{self.url}/{repo}/commit/{oid}"
        return 200, {"commitUrl": commit_url, "commitOid": oid, "pullRequestUrl": None}, {}

    def _resolve(self, body: bytes, kind: str | None, repo: str, rev: str, path: str) -> Answer:
        record = self._repo(self._key(kind, repo))
        oid = next(reversed(record.commits), None) if rev == "main" else rev
        if oid not in record.commits:
            raise HubError(404, "RevisionNotFound", f"{repo} has no revision {rev}")
        files = record.commits[oid]
        if path not in files:
            raise HubError(404, "EntryNotFound", f"{repo}@{rev} has no {path}", commit=oid)
        content = files[path]
        etag = f'"{hashlib.sha256(content).hexdigest()}"'
        return 200, content, {"X-Repo-Commit": oid, "ETag": etag}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer has a length
    timeout = 30  # a stuck client cannot hold a thread forever
    hub: FakeHub

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self.close_connection = True  # the body is left unread
            self._send(413, {"error": f"a body over {_MAX_BODY} bytes"}, {})
            return
        body = self.rfile.read(length)
        path = urlsplit(self.path).path
        self._send(*self.hub.answer(self.command, path, body, self.headers.get("Authorization")))

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    def _send(self, status: int, answer: object, headers: dict[str, str]) -> None:
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        kind = "application/octet-stream" if isinstance(answer, bytes) else "application/json"
        self.send_response(status)
        for name, value in {**headers, "Content-Type": kind}.items():
            if value:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: `FakeHub.requests` records every request."""
