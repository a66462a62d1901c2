"""What tests/test_hostile.py sends: the page's own requests (upload, queue, event stream) for
the events that have no API name, a fake Hub that records who asked, and hostile files built
on the spot (a zip bomb, a zip of ten thousand files, a model repo describing a huge model)."""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from hub_server import FakeHub, Repo


@dataclass
class Answer:
    """What an event answered: its outputs, or the message of its refusal (None: it crashed
    with no message for the visitor, which a test counts as a crash)."""

    ok: bool
    output: list | None = None
    error: str | None = None


class Page:
    """One visitor's page: its events joined as the browser joins them, under one session hash,
    so that consecutive clicks share the session's state on the server."""

    def __init__(self, root: str) -> None:
        self.root, self.http = root.rstrip("/"), httpx.Client(timeout=300)
        self.session_hash = uuid.uuid4().hex
        config = self.http.get(f"{self.root}/config").json()
        self.components = {c["id"]: c for c in config["components"]}
        self.dependencies = config["dependencies"]

    def event(self, button: str) -> dict:
        """The click event of the button labelled `button` (the page's own words)."""
        ids = [
            i for i, c in self.components.items()
            if c["type"] == "button" and c["props"].get("value") == button
        ]  # fmt: skip
        for dependency in self.dependencies:
            if any(target[0] in ids and target[1] == "click" for target in dependency["targets"]):
                return dependency
        raise LookupError(f"no click event for a button {button!r} on the page")

    def upload(self, *paths: Path) -> list[dict]:
        """The files posted as the page posts them; their FileData, as an event takes them."""
        files = [("files", (path.name, path.read_bytes())) for path in paths]
        answer = self.http.post(f"{self.root}/gradio_api/upload", files=files)
        answer.raise_for_status()
        return [
            {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
            for server_path, path in zip(answer.json(), paths, strict=True)
        ]

    def click(self, button: str, values: dict[str, object]) -> Answer:
        """Click `button` with the given inputs by their labels (the rest None: a state is
        the server's); what came back once the event completed."""
        dependency = self.event(button)
        labels = [self.components[i]["props"].get("label") or "" for i in dependency["inputs"]]
        return self.join(dependency, [values.get(label) for label in labels])

    def call(self, api_name: str, data: list) -> Answer:
        """The endpoint `api_name` called with `data` as raw JSON (NaN and Infinity included,
        as Python's json writes them), the state inputs None."""
        dependency = next(d for d in self.dependencies if d.get("api_name") == api_name)
        return self.join(dependency, data + [None] * (len(dependency["inputs"]) - len(data)))

    def join(self, dependency: dict, data: list) -> Answer:
        body = {
            "data": data,
            "fn_index": dependency["id"],
            "session_hash": self.session_hash,
            "event_data": None,
            "trigger_id": (dependency["targets"] or [[None]])[0][0],
        }
        joined = self.http.post(f"{self.root}/gradio_api/queue/join", content=json.dumps(body),
                                headers={"Content-Type": "application/json"})  # fmt: skip
        if joined.status_code != 200:
            return Answer(False, error=f"HTTP {joined.status_code}: {joined.text}")
        stream = self.http.stream(
            "GET", f"{self.root}/gradio_api/queue/data", params={"session_hash": self.session_hash}
        )
        with stream as events:
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    if message.get("success"):
                        return Answer(True, output=output.get("data"))
                    return Answer(False, error=output.get("error"))
                if message.get("msg") == "unexpected_error":
                    return Answer(False, error=message.get("message"))
        return Answer(False, error="the event stream ended with no answer")


class RecordingHub(FakeHub):
    """A fake Hub that also records each request's Authorization header (None: none sent)."""

    def __init__(self, token: str = "fake") -> None:
        super().__init__(token=token)
        self.authorizations: list[tuple[str, str | None]] = []

    def answer(self, method: str, path: str, body: bytes, authorization: str | None):
        with self.lock:
            self.authorizations.append((f"{method} {path}", authorization))
        return super().answer(method, path, body, authorization)

    def plant(self, repo_id: str, files: dict[str, bytes]) -> None:
        """A public model repo holding `files` at the head of main."""
        oid = hashlib.sha1(repr(sorted(files)).encode() + repo_id.encode()).hexdigest()
        with self.lock:
            self.repos[repo_id] = Repo(private=False, commits={oid: dict(files)})


def config_json(model: str, **extra: object) -> bytes:
    """A config.json as zoo.save_pretrained writes it, for `model` with `extra` keys."""
    config = {"model": model, "num_classes": 1, "in_channels": 3, "model_kwargs": {}}
    return json.dumps({**config, **extra}).encode()


def zip_bomb(path: Path, megabytes: int) -> Path:
    """A zip whose one member is `megabytes` MB of zeros: a few hundred KB on disk, its
    directory declaring the full size."""
    chunk = bytes(2**20)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("images/zeros.png", "w", force_zip64=True) as member,
    ):
        for _ in range(megabytes):
            member.write(chunk)
    return path


def zip_of_many(path: Path, count: int) -> Path:
    """A zip of `count` empty files (images/0.png ...)."""
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(count):
            archive.writestr(f"images/{number}.png", b"")
    return path


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under `folder` (0 where it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
