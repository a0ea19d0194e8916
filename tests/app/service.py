"""The service under gunicorn as a child process, and /proc readers for leak tests.

`GunicornService` runs the production command,
`gunicorn -c python:app.gunicorn_conf 'app:create_app()'`, on a free port on
127.0.0.1 with a clean environment, and keeps stdout and stderr in separate files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

from tests.support.processes import (
    child_pids,
    descendant_pids,
    pids_with_cmdline_containing,
    read_proc,
    stop_gracefully,
)
from tests.support.servers import LOOPBACK, free_port, read_log_tail

# Re-exported for the tests that import them from here.
__all__ = [
    "GunicornService",
    "ServiceStartError",
    "child_pids",
    "descendant_pids",
    "pids_with_cmdline_containing",
    "read_proc",
]

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
COMMAND = [GUNICORN, "-c", "python:app.gunicorn_conf", "app:create_app()"]
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
REQUEST_TIMEOUT_SECONDS = 10.0


class ServiceStartError(RuntimeError):
    """Raised when gunicorn exits early or /healthz returns no 200 in time."""


class GunicornService:
    """The hit counter under gunicorn, started with `settings` as its environment.

    The environment contains only PATH, HOME, LANG, TMPDIR, HTTP_HOST, HTTP_PORT
    and `settings`, so nothing from the test runner's environment reaches the service.
    """

    def __init__(self, directory: Path, settings: Mapping[str, str]) -> None:
        self.directory = directory
        self.port = free_port()
        self.stdout_path = directory / "gunicorn.stdout"
        self.stderr_path = directory / "gunicorn.stderr"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(directory),
            "LANG": "C.UTF-8",
            # gunicorn_conf makes its metrics directory under TMPDIR.
            "TMPDIR": str(directory),
            "HTTP_HOST": LOOPBACK,
            "HTTP_PORT": str(self.port),
            **settings,
        }
        directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "gunicorn was not started"
        return self.process.pid

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start gunicorn without waiting for it, and return the process."""
        with (
            self.stdout_path.open("ab") as stdout,
            self.stderr_path.open("ab") as stderr,
        ):
            self.process = subprocess.Popen(
                COMMAND,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=self.env,
                cwd=self.directory,
            )

        return self.process

    def start(self, workers: int = 1) -> None:
        """Start gunicorn and wait for /healthz to return 200 and `workers` workers."""
        self.spawn()
        self.wait_until(self._healthy, "answering /healthz")
        self.wait_until(
            lambda: len(self.worker_pids()) >= workers, f"{workers} workers"
        )

    def wait_until(self, ready: Callable[[], bool], condition: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                self._fail(f"gunicorn exited before {condition}")
            if ready():
                return
            time.sleep(0.05)

        self.stop()
        self._fail(f"gunicorn timed out after {START_TIMEOUT_SECONDS}s: {condition}")

    def _fail(self, reason: str) -> None:
        message = (
            f"{reason}; stderr:\n{read_log_tail(self.stderr_path)}\n"
            f"stdout:\n{read_log_tail(self.stdout_path)}"
        )
        raise ServiceStartError(message)

    def _healthy(self) -> bool:
        try:
            response = requests.get(self.url("/healthz"), timeout=2)
        except requests.ConnectionError:
            return False

        return response.status_code == 200

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url(path), timeout=REQUEST_TIMEOUT_SECONDS)

    def worker_pids(self) -> list[int]:
        return child_pids(self.pid)

    def stop(self) -> int | None:
        """Stop gunicorn gracefully with SIGTERM, and return its exit code."""
        if self.process is None:
            return None
        return stop_gracefully(self.process, STOP_TIMEOUT_SECONDS)

    def output(self) -> str:
        """Return everything gunicorn wrote so far, stdout then stderr."""
        return self.stdout_path.read_text(
            errors="replace"
        ) + self.stderr_path.read_text(errors="replace")
