"""Shared test helpers: run Python in a fresh interpreter, for tests of discovery and imports;
the fuzzing profiles (registered here so `--hypothesis-profile` can name them; only
`tests/test_fuzz.py` uses them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# For the fuzz tests only (test_fuzz.py applies them; nothing is loaded here, so another `@given`
# test keeps Hypothesis's defaults): `ci` (their default), the same cases on every run of a
# commit, so CI cannot turn red at random; `explore` (`--hypothesis-profile=explore`), fresh
# randomness, to find new cases for the corpus.
_FUZZ = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=10_000, derandomize=True, **_FUZZ)
settings.register_profile("explore", max_examples=50_000, derandomize=False, **_FUZZ)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `code` in a fresh interpreter; `env` entries are added to a copy of the environment."""

    def run(
        code: str, *, cwd: Path = REPO, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "PYTHONWARNINGS": "default", **(env or {})}
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"subprocess failed:\n{result.stdout}\n{result.stderr}")
        return result

    return run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    """Wait (up to 180 s) until the server `process` listens on `port`; fail with its `log`
    when it exits first, or kill it when it does not start in time."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"app.py exited early:\n{log.read_text()}")
            time.sleep(0.5)
    process.kill()
    pytest.fail("app.py did not start within 180 s")
