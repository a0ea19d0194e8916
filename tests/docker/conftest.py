"""Session fixtures for the container tests: one engine, one base, one app image.

The engine is a dockerd started for this session under a short folder in /tmp
and stopped by its pid at the end. The first run on a machine spends about a
minute on debootstrap, later runs reuse the cached root file system.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.deploy import (
    APP_IMAGE,
    COMPOSE_FILE,
    ComposeProject,
    build_override,
    image_variables,
)
from tests.docker.engine import (
    DockerEngine,
    build_base_image,
    default_cache_dir,
    machine_lock,
    missing_tools,
    remove_engine_root,
)


@pytest.fixture(scope="session")
def docker_engine(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DockerEngine]:
    """A dockerd of this session's own, with state under a temporary folder.

    Its log is copied to pytest's base temporary folder as dockerd.log.
    """
    missing = missing_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}; scripts/test installs them")

    if os.geteuid() != 0:
        pytest.skip("dockerd and debootstrap need root")

    with machine_lock(default_cache_dir() / "engine.lock"):
        # Short, because the socket path must fit in a unix socket address.
        root = Path(tempfile.mkdtemp(prefix="hcd-", dir="/tmp"))
        engine = DockerEngine(root)
        try:
            engine.start()
            yield engine
        finally:
            engine.stop()
            if engine.log_path.exists():
                log_copy = tmp_path_factory.getbasetemp() / "dockerd.log"
                shutil.copyfile(engine.log_path, log_copy)

            remove_engine_root(root)


@pytest.fixture(scope="session")
def base_image(
    docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Name of the Debian stand-in for both python:3.12-slim and redis:7."""
    return build_base_image(
        docker_engine, default_cache_dir(), tmp_path_factory.mktemp("base")
    )


@pytest.fixture(scope="session")
def app_image(
    docker_engine: DockerEngine,
    base_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """Name of the app image, built once by `docker compose build` from this repo."""
    work_dir = tmp_path_factory.mktemp("build")
    project = ComposeProject(
        docker_engine,
        "hc-build",
        [COMPOSE_FILE, build_override(work_dir / "build.override.json")],
        image_variables(base_image),
        work_dir,
    )
    started = time.monotonic()
    build = project.compose("build", "web", timeout=900)
    print(f"app image built in {time.monotonic() - started:.0f} s")
    # Checked with docker itself, because the compose exit code is not reliable.
    found = docker_engine.docker("image", "inspect", APP_IMAGE, check=False)
    assert found.returncode == 0, f"compose build failed:\n{build.stderr}"
    return APP_IMAGE
