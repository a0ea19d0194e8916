"""docker-compose.secrets.yml deployed as a Swarm stack on the test engine.

The engine becomes a single-node swarm that listens on 127.0.0.1 only, and
leaves the swarm when the module ends. Swarm's routing mesh would publish the
web port on every host interface, so the stack is deployed without `ports:`
and the counter is called from inside the web container.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.docker.deploy import (
    ALL_COMMAND_LINES,
    ALL_ENVIRONMENTS,
    STACK_FILE,
    counter_value,
    http_get_in_container,
    image_variables,
    strip_published_ports,
    wait_until_ready,
)
from tests.docker.engine import DockerEngine
from tests.support.servers import free_port

pytestmark = pytest.mark.docker

STACK = "hc-swarm"
SECRET_TARGET = "/run/secrets/redis_password"
TASK_TIMEOUT_SECONDS = 60.0


@dataclass
class Stack:
    engine: DockerEngine
    password: str
    containers: dict[str, str]

    def get(self, path: str) -> tuple[int, str]:
        return http_get_in_container(self.engine, self.containers["web"], path)


@pytest.fixture(scope="module")
def stack(
    docker_engine: DockerEngine,
    base_image: str,
    app_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The stack, deployed with a canary password as the redis_password secret."""
    engine = docker_engine
    stack_file = tmp_path_factory.mktemp("swarm") / "stack.yml"
    stack_file.write_text(strip_published_ports(STACK_FILE.read_text()))
    password = "canary-" + secrets.token_hex(16)
    engine.docker(
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--listen-addr",
        f"127.0.0.1:{free_port()}",
        "--data-path-addr",
        "127.0.0.1",
    )
    try:
        engine.docker("secret", "create", "redis_password", "-", input=password)
        engine.docker(
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            str(stack_file),
            STACK,
            env=image_variables(base_image),
        )
        containers = {name: _task_container(engine, name) for name in ("web", "redis")}
        deployed = Stack(engine, password, containers)
        wait_until_ready(lambda: deployed.get("/readyz"), lambda: _logs(engine))
        yield deployed
    finally:
        _remove_stack(engine)
        engine.docker("swarm", "leave", "--force", check=False)


def _remove_stack(engine: DockerEngine) -> None:
    """Remove the stack and wait until its containers and networks are gone."""
    engine.docker("stack", "rm", STACK, check=False)
    label = f"label=com.docker.stack.namespace={STACK}"
    deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        containers = engine.docker("ps", "--all", "--quiet", "--filter", label)
        networks = engine.docker("network", "ls", "--quiet", "--filter", label)
        if not containers.stdout.strip() and not networks.stdout.strip():
            return

        time.sleep(0.5)


def _task_container(engine: DockerEngine, service: str) -> str:
    """Wait for the running container of the stack's `service` and return its id."""
    label = f"com.docker.swarm.service.name={STACK}_{service}"
    deadline = time.monotonic() + TASK_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        found = engine.docker("ps", "--quiet", "--filter", f"label={label}").stdout
        if found.strip():
            return found.split()[0]

        time.sleep(0.5)

    tasks = engine.docker("service", "ps", "--no-trunc", f"{STACK}_{service}")
    message = f"no running container for {STACK}_{service}:\n{tasks.stdout}"
    raise AssertionError(message)


def _logs(engine: DockerEngine) -> str:
    # docker service logs writes the containers' stderr to its own stderr.
    results = [
        engine.docker("service", "logs", f"{STACK}_{name}", check=False)
        for name in ("web", "redis")
    ]
    return "".join(result.stdout + result.stderr for result in results)


def test_counter_counts_from_one(stack: Stack) -> None:
    replies = [stack.get("/") for _ in range(3)]

    assert [status for status, _ in replies] == [200, 200, 200]
    assert [counter_value(body) for _, body in replies] == [1, 2, 3]


def test_web_secret_is_private_to_app_user(stack: Stack) -> None:
    owner_and_mode = stack.engine.docker(
        "exec", stack.containers["web"], "stat", "-c", "%u %g %a", SECRET_TARGET
    ).stdout.split()

    assert owner_and_mode == ["10001", "10001", "400"]


def test_redis_secret_is_mounted(stack: Stack) -> None:
    probe = stack.engine.docker(
        "exec", stack.containers["redis"], "test", "-r", SECRET_TARGET, check=False
    )

    assert probe.returncode == 0


@pytest.mark.parametrize("service", ["web", "redis"])
def test_service_runs_as_non_root(stack: Stack, service: str) -> None:
    uid = stack.engine.docker(
        "exec", stack.containers[service], "id", "-u"
    ).stdout.strip()

    assert uid not in ("", "0")


def test_redis_rejects_unauthenticated_client(stack: Stack) -> None:
    reply = stack.engine.docker(
        "exec", stack.containers["redis"], "redis-cli", "ping"
    ).stdout

    assert "NOAUTH" in reply


def _inspect_services(stack: Stack) -> str:
    return stack.engine.docker(
        "service", "inspect", f"{STACK}_web", f"{STACK}_redis"
    ).stdout


def _inspect_secret(stack: Stack) -> str:
    return stack.engine.docker("secret", "inspect", "redis_password").stdout


def _inspect_containers(stack: Stack) -> str:
    return stack.engine.docker("inspect", *stack.containers.values()).stdout


def _service_logs(stack: Stack) -> str:
    return _logs(stack.engine)


def _process_command_lines(stack: Stack) -> str:
    return "".join(
        stack.engine.docker("exec", container, "sh", "-c", ALL_COMMAND_LINES).stdout
        for container in stack.containers.values()
    )


def _process_environments(stack: Stack) -> str:
    return "".join(
        stack.engine.docker("exec", container, "sh", "-c", ALL_ENVIRONMENTS).stdout
        for container in stack.containers.values()
    )


VIEWS = {
    "docker service inspect": _inspect_services,
    "docker secret inspect": _inspect_secret,
    "docker inspect of task containers": _inspect_containers,
    "docker service logs": _service_logs,
    "/proc/*/cmdline in containers": _process_command_lines,
    "environment in containers": _process_environments,
}


@pytest.mark.parametrize("view", VIEWS.values(), ids=VIEWS.keys())
def test_password_absent_from(stack: Stack, view: Callable[[Stack], str]) -> None:
    text = view(stack)

    assert text, "the view returned no text, so the check proves nothing"
    assert stack.password not in text
