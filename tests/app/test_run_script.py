"""scripts/run: a throwaway Redis with a generated password, then the service."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.app.service import (
    child_pids,
    descendant_pids,
    pids_with_cmdline_containing,
    read_proc,
)
from tests.support.servers import LOOPBACK, free_port, read_log_tail

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_SCRIPT = REPO_ROOT / "scripts" / "run"
# A developer's own password file, which the tests must leave alone.
REPO_SECRET = REPO_ROOT / "secrets" / "redis_password"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
REDIS_STARTED = re.compile(r"redis-server started pid=(\d+) port=(\d+)")


def file_state(path: Path) -> tuple[int, int] | None:
    """Return the modification time and inode of `path`, or None if it is absent."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None

    return (info.st_mtime_ns, info.st_ino)


def write_redis_shim(directory: Path, argv_path: Path) -> Path:
    """Write a `redis-server` that records its arguments, then runs the real one.

    redis-server replaces its /proc cmdline with a title soon after it starts,
    so only a record made before that shows what the script passed to it.
    """
    real = shutil.which("redis-server")
    assert real is not None, "redis-server is not installed"
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "redis-server"
    shim.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" >> {shlex.quote(str(argv_path))}\n"
        f'exec {shlex.quote(real)} "$@"\n'
    )
    shim.chmod(0o755)

    return directory


class RunScript:
    """scripts/run as a child process, with its output in two files."""

    def __init__(
        self,
        directory: Path,
        *args: str,
        http_port: int | str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.http_port = free_port() if http_port is None else http_port
        self.repo_secret_before = file_state(REPO_SECRET)
        self.secrets_dir = directory / "secrets"
        self.stdout_path = directory / "run.stdout"
        self.stderr_path = directory / "run.stderr"
        self.redis_argv_path = directory / "redis-server.argv"
        shim_dir = write_redis_shim(directory / "bin", self.redis_argv_path)
        env = {
            **os.environ,
            "PATH": f"{shim_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HTTP_PORT": str(self.http_port),
            "RUN_SECRETS_DIR": str(self.secrets_dir),
            # The script runs the development profile, which reads .env from the
            # repository by default. This path names a file that does not exist.
            "DOTENV_PATH": str(directory / "absent.env"),
            **(extra_env or {}),
        }
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as err:
            # A session of its own, so a failed test can stop the whole tree.
            self.process = subprocess.Popen(
                [str(RUN_SCRIPT), *args],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=err,
                env=env,
                start_new_session=True,
            )

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.http_port}{path}"

    def redis_password(self) -> str:
        return (self.secrets_dir / "redis_password").read_text().strip()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Wait until the script has printed the URL and /readyz returns 200."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"scripts/run exited early:\n{self.log_tail()}")
            if self.url() in self.stdout() and self._ready():
                return
            time.sleep(0.1)

        pytest.fail(f"scripts/run not ready in time:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            return requests.get(self.url("/readyz"), timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def log_tail(self) -> str:
        return f"{read_log_tail(self.stderr_path)}\n{read_log_tail(self.stdout_path)}"

    def terminate(self) -> int:
        """Send SIGTERM to the script alone and return its exit code.

        Like a supervisor, this signals only the script, which must stop
        gunicorn and redis-server itself.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def kill_tree(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def run_script(tmp_path: Path) -> Iterator[RunScript]:
    """scripts/run, started, with /readyz returning 200."""
    script = RunScript(tmp_path)
    try:
        script.wait_ready()
        yield script
    finally:
        try:
            script.terminate()
        except subprocess.TimeoutExpired:
            script.kill_tree()


def connection_refused(port: int) -> bool:
    client = redis.Redis(host=LOOPBACK, port=port, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.ConnectionError as error:
        return not isinstance(error, redis.AuthenticationError)
    finally:
        client.close()

    return False


def redis_started(script: RunScript) -> tuple[int, int]:
    """Return the pid and port of the redis-server that `script` logged."""
    found = REDIS_STARTED.search(script.stderr())
    assert found is not None, script.log_tail()

    return int(found.group(1)), int(found.group(2))


def redis_admin(script: RunScript) -> redis.Redis:
    """Return a client for the script's redis-server, with the generated password."""
    _, port = redis_started(script)
    return redis.Redis(
        host=LOOPBACK,
        port=port,
        password=script.redis_password(),
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def gunicorn_master(script: RunScript) -> int:
    masters = [
        pid
        for pid in child_pids(script.process.pid)
        if b"gunicorn" in read_proc(pid, "cmdline")
    ]
    assert len(masters) == 1, masters

    return masters[0]


def assert_all_stopped(script: RunScript, tree: list[int], redis_port: int) -> None:
    for pid in tree:
        assert not Path(f"/proc/{pid}").exists(), pid
    assert connection_refused(redis_port)
    with pytest.raises(requests.ConnectionError):
        requests.get(script.url("/healthz"), timeout=2)
    assert "redis-server stopped" in script.stderr()


def test_run_serves_counter(run_script: RunScript) -> None:
    bodies = [requests.get(run_script.url(), timeout=10).text for _ in range(2)]

    assert bodies == ["Hello World! 1 times.\n", "Hello World! 2 times.\n"]
    assert f"serving the hit counter at {run_script.url()}" in run_script.stdout()


def test_run_writes_password_file(run_script: RunScript) -> None:
    path = run_script.secrets_dir / "redis_password"

    password = run_script.redis_password()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(password) >= 32
    assert sorted(p.name for p in run_script.secrets_dir.iterdir()) == [
        "redis_password"
    ]
    assert file_state(REPO_SECRET) == run_script.repo_secret_before


def test_run_replaces_old_password(tmp_path: Path) -> None:
    old = tmp_path / "secrets" / "redis_password"
    old.parent.mkdir()
    old.write_text("old-password\n")
    old.chmod(0o644)

    script = RunScript(tmp_path)
    try:
        script.wait_ready()
        password = script.redis_password()
        mode = stat.S_IMODE(old.stat().st_mode)
    finally:
        script.terminate()

    assert password != "old-password"
    assert mode == 0o600


def test_run_ignores_inherited_redis_settings(tmp_path: Path) -> None:
    inherited = {
        "REDIS_PASSWORD_FILE": str(tmp_path / "absent-password"),
        "REDIS_USERNAME": "someone-else",
        "REDIS_PORT": "1",
        # Nothing listens on port 1, so a service that used this would fail.
        "VAULT_ADDR": "http://127.0.0.1:1",
    }
    script = RunScript(tmp_path, extra_env=inherited)
    try:
        script.wait_ready()
        body = requests.get(script.url(), timeout=10).text
    finally:
        script.terminate()

    assert body == "Hello World! 1 times.\n"


def test_run_redis_requires_password(run_script: RunScript) -> None:
    _, port = redis_started(run_script)
    anonymous = redis.Redis(host=LOOPBACK, port=port, retry=Retry(NoBackoff(), 0))
    admin = redis_admin(run_script)

    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    assert admin.ping()
    assert admin.config_get("save") == {"save": ""}
    assert admin.config_get("appendonly") == {"appendonly": "no"}
    assert admin.config_get("bind") == {"bind": "127.0.0.1"}
    assert list(Path(admin.config_get("dir")["dir"]).iterdir()) == []


def test_run_password_on_no_command_line(run_script: RunScript) -> None:
    password = run_script.redis_password()
    requests.get(run_script.url(), timeout=10)
    tree = [run_script.process.pid, *descendant_pids(run_script.process.pid)]

    assert pids_with_cmdline_containing(password) == []
    assert run_script.redis_argv_path.read_text() == "-\n"
    # scripts/run, redis-server, the gunicorn master and its two workers.
    assert len(tree) >= 4
    for pid in tree:
        assert password.encode() not in read_proc(pid, "environ"), pid
    assert password not in run_script.stdout() + run_script.stderr()


@pytest.mark.parametrize(
    ("signal_number", "expected_code"),
    [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 128 + signal.SIGINT)],
)
def test_run_signal_stops_everything(
    run_script: RunScript, signal_number: int, expected_code: int
) -> None:
    redis_pid, redis_port = redis_started(run_script)
    tree = descendant_pids(run_script.process.pid)
    assert redis_pid in tree
    assert read_proc(redis_pid, "comm") == b"redis-server\n"
    # Redis's working directory is in the script's scratch directory.
    scratch = Path(redis_admin(run_script).config_get("dir")["dir"]).parent

    # Only the script gets the signal, so it must stop the others itself.
    run_script.process.send_signal(signal_number)
    returncode = run_script.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    assert returncode == expected_code
    assert_all_stopped(run_script, tree, redis_port)
    assert not scratch.exists()


def test_run_gunicorn_exit_stops_redis(run_script: RunScript) -> None:
    _, redis_port = redis_started(run_script)
    tree = descendant_pids(run_script.process.pid)

    os.kill(gunicorn_master(run_script), signal.SIGTERM)
    returncode = run_script.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    assert returncode == 0
    assert "gunicorn exited with status 0" in run_script.stderr()
    assert_all_stopped(run_script, tree, redis_port)


def test_run_failed_service_stops_redis(tmp_path: Path) -> None:
    script = RunScript(tmp_path, http_port="not-a-port")

    returncode = script.process.wait(timeout=READY_TIMEOUT_SECONDS)

    _, redis_port = redis_started(script)
    assert returncode == 1
    assert "HTTP_PORT" in script.stderr()
    assert "serving the hit counter" not in script.stdout()
    assert connection_refused(redis_port)
    assert "redis-server stopped" in script.stderr()


def test_run_rejects_unknown_option(tmp_path: Path) -> None:
    script = RunScript(tmp_path, "--no-such-option")

    returncode = script.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    assert returncode == 2
    assert "unknown option: --no-such-option" in script.stderr()
    assert "Usage: scripts/run" in script.stderr()
    assert not script.secrets_dir.exists()


def test_run_help(tmp_path: Path) -> None:
    script = RunScript(tmp_path, "--help")

    returncode = script.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    assert returncode == 0
    assert "Usage: scripts/run" in script.stdout()
    assert not script.secrets_dir.exists()


def scratch_dir(script: RunScript) -> Path:
    """Return the script's scratch directory: the parent of Redis's working dir."""
    redis_pid, _ = redis_started(script)
    return Path(os.readlink(f"/proc/{redis_pid}/cwd")).parent


def test_run_vault_issues_redis_users(tmp_path: Path) -> None:
    script = RunScript(tmp_path, "--vault")
    try:
        script.wait_ready()
        bodies = [requests.get(script.url(), timeout=10).text for _ in range(2)]
        ready = requests.get(script.url("/readyz"), timeout=10).json()
        scratch = scratch_dir(script)
        admin_password = (scratch / "redis_admin_password").read_text().strip()
        secret_id = (scratch / "secrets" / "vault_secret_id").read_text().strip()
        server_log = (scratch / "vault" / "server.log").read_text()
        root_token = re.search(r"^Root Token: (\S+)$", server_log, re.MULTILINE)
        tree = [script.process.pid, *descendant_pids(script.process.pid)]
        environs = [read_proc(pid, "environ") for pid in tree]
    finally:
        returncode = script.terminate()
    output = script.stdout() + script.stderr()

    assert bodies == ["Hello World! 1 times.\n", "Hello World! 2 times.\n"]
    assert ready["credentials"]["state"] == "ok"
    assert ready["credentials"]["lease"].startswith("database/creds/hitcounter/")
    assert output.count("redis credentials issued") == 2
    assert root_token is not None
    for secret in (admin_password, secret_id, root_token.group(1)):
        assert pids_with_cmdline_containing(secret) == []
        assert all(secret.encode() not in environ for environ in environs)
        assert secret not in output
    assert not (script.secrets_dir / "redis_password").exists()
    assert returncode == 128 + signal.SIGTERM
    # Each worker revoked its lease before OpenBao was stopped.
    assert output.count("lease revoked") == 2
    assert "OpenBao stopped" in output
    assert not scratch.exists()
