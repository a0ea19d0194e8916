"""The app image's configuration, and what .dockerignore keeps out of builds."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.docker.engine import REPO_ROOT, DockerEngine

pytestmark = pytest.mark.docker

GUNICORN_CMD = ["gunicorn", "-c", "python:app.gunicorn_conf", "app:create_app()"]
# Paths under the build context that may contain credentials or local state.
PRIVATE_PATHS = [
    "secrets/redis_password",
    ".env",
    "config/.env",
    ".venv/pyvenv.cfg",
    ".git/config",
]


@pytest.fixture(scope="module")
def image_config(docker_engine: DockerEngine, app_image: str) -> dict[str, Any]:
    """The `Config` section of `docker image inspect` for the app image."""
    output = docker_engine.docker("image", "inspect", app_image).stdout
    config: dict[str, Any] = json.loads(output)[0]["Config"]
    return config


def test_image_runs_as_uid_10001(image_config: dict[str, Any]) -> None:
    assert image_config["User"] == "10001:10001"


@pytest.mark.parametrize("variable", ["APP_ENV=production", "HTTP_HOST=0.0.0.0"])
def test_image_sets_environment(image_config: dict[str, Any], variable: str) -> None:
    assert variable in image_config["Env"]


def test_image_command_is_gunicorn(image_config: dict[str, Any]) -> None:
    assert image_config["Cmd"] == GUNICORN_CMD


def test_image_probes_healthz(image_config: dict[str, Any]) -> None:
    probe = image_config["Healthcheck"]["Test"]

    assert probe[0] == "CMD"
    assert "/healthz" in " ".join(probe)


def test_dockerignore_excludes_private_files(
    docker_engine: DockerEngine, base_image: str, tmp_path: Path
) -> None:
    # A copy of the repository's .dockerignore, over a context that has a
    # canary in every private file and one ordinary file as a positive control.
    canary = "canary-" + secrets.token_hex(16)
    context = tmp_path / "context"
    for relative in PRIVATE_PATHS:
        path = context / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(canary + "\n")

    (context / "pyproject.toml").write_text("[project]\n")
    shutil.copyfile(REPO_ROOT / ".dockerignore", context / ".dockerignore")
    (context / "Dockerfile").write_text(f"FROM {base_image}\nCOPY . /context\n")
    image = "hitcounter-test/dockerignore:latest"
    docker_engine.docker("build", "--network", "none", "-t", image, str(context))
    listing = docker_engine.docker(
        "run", "--rm", "--network", "none", image, "find", "/context"
    ).stdout.split()
    contents = docker_engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "sh",
        "-c",
        "cat $(find /context -type f)",
    ).stdout

    assert "/context/pyproject.toml" in listing
    for relative in PRIVATE_PATHS:
        assert f"/context/{relative}" not in listing

    assert canary not in contents
