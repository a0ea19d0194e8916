"""What the deployments do when the Redis password file cannot be used."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.docker.deploy import (
    COMPOSE_FILE,
    STACK_FILE,
    ComposeProject,
    image_variables,
    write_override,
    write_secret_file,
)
from tests.docker.engine import DockerEngine

pytestmark = pytest.mark.docker

SECRET_TARGET = "/run/secrets/redis_password"
EXIT_TIMEOUT_SECONDS = 60.0


def _mount_targets(engine: DockerEngine, container: str) -> list[str]:
    targets = engine.docker(
        "inspect", "--format", "{{range .Mounts}}{{.Destination}} {{end}}", container
    ).stdout
    return targets.split()


def test_external_secret_not_mounted_without_swarm(
    docker_engine: DockerEngine, base_image: str, app_image: str, tmp_path: Path
) -> None:
    # The stack file publishes on every interface, so the override drops its ports.
    no_ports = tmp_path / "no-ports.override.yml"
    no_ports.write_text("services:\n  web:\n    ports: !reset []\n")
    project = ComposeProject(
        docker_engine,
        "hc-external",
        [STACK_FILE, no_ports],
        image_variables(base_image),
        tmp_path,
    )
    try:
        up = project.compose("up", "--detach")
        containers = project.compose("ps", "--all", "--quiet").stdout.split()
        mounted = [
            container
            for container in containers
            if SECRET_TARGET in _mount_targets(docker_engine, container)
        ]
        print(f"compose up output:\n{up.stdout}{up.stderr}")
        print(f"containers created: {len(containers)}")

        assert mounted == []
        assert "redis_password" in up.stderr
    finally:
        project.down()


def test_unreadable_secret_file_stops_web(
    docker_engine: DockerEngine, base_image: str, app_image: str, tmp_path: Path
) -> None:
    secret_file = write_secret_file(tmp_path / "secrets", "unused", mode=0o400)
    os.chown(secret_file, 0, 0)
    # restart: "no" leaves the failed container in place, so its exit code and
    # log can be read. Redis is not started: it could not read the file either.
    override = write_override(
        tmp_path / "override.json",
        {
            "services": {"web": {"restart": "no"}},
            "secrets": {"redis_password": {"file": str(secret_file)}},
        },
    )
    project = ComposeProject(
        docker_engine,
        "hc-unreadable",
        [COMPOSE_FILE, override],
        image_variables(base_image),
        tmp_path,
    )
    try:
        project.compose("up", "--detach", "--no-build", "--no-deps", "web")
        container = project.container_id("web")
        state = _wait_for_exit(docker_engine, container)
        logs = docker_engine.docker("logs", container)
        log_text = logs.stdout + logs.stderr
        print(f"web exit code {state}, log:\n{log_text}")

        assert state != 0
        assert SECRET_TARGET in log_text
        assert "permission denied" in log_text.lower()
    finally:
        project.down()


def _wait_for_exit(engine: DockerEngine, container: str) -> int:
    """Wait until `container` has stopped and return its exit code."""
    deadline = time.monotonic() + EXIT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = engine.docker(
            "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", container
        ).stdout.split()
        if state[0] == "false":
            return int(state[1])

        time.sleep(0.5)

    message = f"container {container} still running after {EXIT_TIMEOUT_SECONDS} s"
    raise AssertionError(message)
