"""docker-compose.yml on a real engine: the counter, users and secret handling.

One deployment is shared by the module. Its Redis password is a canary: after
the counter has run, no docker view of the deployment may show it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker.deploy import (
    ALL_COMMAND_LINES,
    ALL_ENVIRONMENTS,
    COMPOSE_FILE,
    ComposeProject,
    counter_value,
    http_get,
    image_variables,
    wait_until_ready,
    write_override,
    write_secret_file,
)
from tests.docker.engine import DockerEngine
from tests.support.servers import free_port

pytestmark = pytest.mark.docker

SECRET_TARGET = "/run/secrets/redis_password"


@dataclass
class Deployment:
    project: ComposeProject
    base_url: str
    password: str
    secret_file: Path
    work_dir: Path

    @property
    def engine(self) -> DockerEngine:
        return self.project.engine

    def container(self, service: str) -> str:
        return self.project.container_id(service)


@pytest.fixture(scope="module")
def deployment(
    docker_engine: DockerEngine,
    base_image: str,
    app_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """The plain compose deployment, up and ready, with a canary password."""
    work_dir = tmp_path_factory.mktemp("compose")
    password = "canary-" + secrets.token_hex(16)
    secret_file = write_secret_file(work_dir / "secrets", password)
    # The only test-only change: the secret file lives in the temporary folder.
    override = write_override(
        work_dir / "secret.override.json",
        {"secrets": {"redis_password": {"file": str(secret_file)}}},
    )
    port = free_port()
    variables = image_variables(base_image) | {"HTTP_PORT": str(port)}
    project = ComposeProject(
        docker_engine, "hc-compose", [COMPOSE_FILE, override], variables, work_dir
    )
    project.compose("up", "--detach", "--no-build")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(
            lambda: http_get(f"{base_url}/readyz", timeout=3), lambda: _logs(project)
        )
        yield Deployment(project, base_url, password, secret_file, work_dir)
    finally:
        project.down()


def _logs(project: ComposeProject) -> str:
    result = project.compose("logs", "--no-color", check=False)
    return result.stdout + result.stderr


def test_counter_counts_from_one(deployment: Deployment) -> None:
    replies = [http_get(deployment.base_url + "/") for _ in range(3)]

    assert [status for status, _ in replies] == [200, 200, 200]
    assert [counter_value(body) for _, body in replies] == [1, 2, 3]


def test_healthz_is_ok(deployment: Deployment) -> None:
    status, _ = http_get(deployment.base_url + "/healthz")

    assert status == 200


@pytest.mark.parametrize("service", ["web", "redis"])
def test_service_runs_as_non_root(deployment: Deployment, service: str) -> None:
    container = deployment.container(service)
    uid = deployment.engine.docker("exec", container, "id", "-u").stdout.strip()
    pid1_uid = deployment.engine.docker(
        "exec", container, "sh", "-c", "stat -c %u /proc/1"
    ).stdout.strip()

    assert uid != "0"
    assert pid1_uid == uid


def test_web_runs_as_uid_10001(deployment: Deployment) -> None:
    container = deployment.container("web")
    uid = deployment.engine.docker("exec", container, "id", "-u").stdout.strip()

    assert uid == "10001"


@pytest.mark.parametrize("service", ["web", "redis"])
def test_secret_is_mounted(deployment: Deployment, service: str) -> None:
    container = deployment.container(service)
    probe = deployment.engine.docker(
        "exec", container, "test", "-r", SECRET_TARGET, check=False
    )

    assert probe.returncode == 0, f"{SECRET_TARGET} not readable in {service}"


def test_redis_rejects_unauthenticated_client(deployment: Deployment) -> None:
    container = deployment.container("redis")
    reply = deployment.engine.docker("exec", container, "redis-cli", "ping").stdout

    assert "NOAUTH" in reply


def test_redis_only_on_internal_network(deployment: Deployment) -> None:
    container = deployment.container("redis")
    networks = deployment.engine.docker(
        "inspect",
        "--format",
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
        container,
    ).stdout.split()
    internal = [
        deployment.engine.docker(
            "network", "inspect", "--format", "{{.Internal}}", name
        ).stdout.strip()
        for name in networks
    ]

    assert networks == ["hc-compose_backend"]
    assert internal == ["true"]


@pytest.mark.parametrize("service", ["web", "redis"])
def test_healthcheck_command_passes(deployment: Deployment, service: str) -> None:
    # Runs the configured check now instead of waiting for its first interval.
    container = deployment.container(service)
    output = deployment.engine.docker(
        "inspect", "--format", "{{json .Config.Healthcheck.Test}}", container
    ).stdout
    kind, *command = json.loads(output)
    argv = ["sh", "-c", command[0]] if kind == "CMD-SHELL" else command
    probe = deployment.engine.docker("exec", container, *argv, check=False)

    assert kind in ("CMD", "CMD-SHELL")
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_compose_config_shows_path_not_password(deployment: Deployment) -> None:
    config = deployment.project.compose("config").stdout

    assert str(deployment.secret_file) in config
    assert deployment.password not in config


# Each entry is a docker view of the deployment that must not contain the
# password. Entries are functions of the deployment, returning the text to search.
def _inspect_containers(deployment: Deployment) -> str:
    containers = [deployment.container(name) for name in ("web", "redis")]
    return deployment.engine.docker("inspect", *containers).stdout


def _inspect_images(deployment: Deployment) -> str:
    images = deployment.project.variables
    return deployment.engine.docker(
        "image", "inspect", images["APP_IMAGE"], images["REDIS_IMAGE"]
    ).stdout


def _image_history(deployment: Deployment) -> str:
    image = deployment.project.variables["APP_IMAGE"]
    return deployment.engine.docker("history", "--no-trunc", image).stdout


def _container_logs(deployment: Deployment) -> str:
    return _logs(deployment.project)


def _process_command_lines(deployment: Deployment) -> str:
    return "".join(
        deployment.engine.docker(
            "exec", deployment.container(name), "sh", "-c", ALL_COMMAND_LINES
        ).stdout
        for name in ("web", "redis")
    )


def _process_environments(deployment: Deployment) -> str:
    return "".join(
        deployment.engine.docker(
            "exec", deployment.container(name), "sh", "-c", ALL_ENVIRONMENTS
        ).stdout
        for name in ("web", "redis")
    )


VIEWS = {
    "docker inspect of containers": _inspect_containers,
    "docker image inspect": _inspect_images,
    "docker history --no-trunc": _image_history,
    "container logs": _container_logs,
    "/proc/*/cmdline in containers": _process_command_lines,
    "environment in containers": _process_environments,
}


@pytest.mark.parametrize("view", VIEWS.values(), ids=VIEWS.keys())
def test_password_absent_from(
    deployment: Deployment, view: Callable[[Deployment], str]
) -> None:
    text = view(deployment)

    assert text, "the view returned no text, so the check proves nothing"
    assert deployment.password not in text


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param("save", id="docker save of the app image"),
        pytest.param("export", id="docker export of the web container"),
    ],
)
def test_password_absent_from_filesystem(deployment: Deployment, archive: str) -> None:
    if archive == "save":
        argv = ["save", deployment.project.variables["APP_IMAGE"]]
    else:
        argv = ["export", deployment.container("web")]

    found = _archive_contains(deployment, argv, deployment.password.encode())

    assert not found


def _archive_contains(deployment: Deployment, argv: list[str], needle: bytes) -> bool:
    """Stream `docker ARGV` (a tar archive) and search it for `needle`."""
    with subprocess.Popen(
        ["docker", *argv], stdout=subprocess.PIPE, env=deployment.engine.env
    ) as process:
        assert process.stdout is not None
        found = False
        tail = b""
        chunk_size = 1 << 20
        while chunk := process.stdout.read(chunk_size):
            # Keep the end of the previous chunk so a match across chunks counts.
            if needle in tail + chunk:
                found = True

            tail = chunk[-len(needle) :]

    assert process.returncode == 0, f"docker {' '.join(argv)} failed"
    return found
