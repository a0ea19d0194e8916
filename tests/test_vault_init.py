"""python -m app.vault_init against real OpenBao servers, new and initialized."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from tests.conftest import BaoFactory
from tests.support.servers import (
    LOOPBACK,
    START_TIMEOUT_SECONDS,
    BaoServer,
    free_port,
    free_port_pair,
    read_log_tail,
    require_binary,
)

# The storage and listener of docker-compose.vault.yml's demo server.
SERVER_CONFIG = """\
storage "inmem" {{}}

listener "tcp" {{
  address     = "{address}"
  tls_disable = true
}}

disable_mlock = true
"""


@pytest.fixture
def new_server(tmp_path: Path) -> Iterator[str]:
    """Return the address of a running OpenBao server that is not initialized."""
    port = free_port_pair()
    config = tmp_path / "server.hcl"
    config.write_text(SERVER_CONFIG.format(address=f"{LOOPBACK}:{port}"))
    log_path = tmp_path / "bao.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [require_binary("bao"), "server", f"-config={config}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
    try:
        _wait_for_port(port, process, log_path)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"bao exited:\n{read_log_tail(log)}"
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)

    pytest.fail(f"bao did not listen on port {port}:\n{read_log_tail(log)}")


def run_init(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m app.vault_init ARGV` with no inherited VAULT_* variables."""
    return subprocess.run(
        [sys.executable, "-m", "app.vault_init", *argv],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_new_server_is_initialized_and_unsealed(
    new_server: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "root_token"

    result = run_init("--vault-addr", new_server, "--root-token-file", str(token_file))
    client = hvac.Client(url=new_server, token=token_file.read_text().strip())

    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert client.sys.read_seal_status()["sealed"] is False
    assert client.auth.token.lookup_self()["data"]["policies"] == ["root"]


def test_second_run_keeps_root_token(new_server: str, tmp_path: Path) -> None:
    token_file = tmp_path / "root_token"
    argv = ["--vault-addr", new_server, "--root-token-file", str(token_file)]
    run_init(*argv)
    first = token_file.read_text()

    result = run_init(*argv)

    assert result.returncode == 0, result.stderr
    assert token_file.read_text() == first


def test_root_token_absent_from_output(new_server: str, tmp_path: Path) -> None:
    token_file = tmp_path / "root_token"

    result = run_init("--vault-addr", new_server, "--root-token-file", str(token_file))
    token = token_file.read_text().strip()

    assert token not in result.stdout
    assert token not in result.stderr


def test_initialized_server_without_token_file_fails(
    bao_server: BaoServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "root_token"

    result = run_init(
        "--vault-addr", bao_server.addr, "--root-token-file", str(token_file)
    )

    assert result.returncode == 1
    assert f"{token_file} contains no root token" in result.stderr


def test_sealed_server_fails(bao_factory: BaoFactory, tmp_path: Path) -> None:
    server = bao_factory()
    server.seal()
    token_file = tmp_path / "root_token"
    token_file.write_text(server.root_token + "\n")

    result = run_init("--vault-addr", server.addr, "--root-token-file", str(token_file))

    assert result.returncode == 1
    assert "is initialized but sealed" in result.stderr


def test_unreachable_server_fails_after_wait(tmp_path: Path) -> None:
    # Nothing listens on a port that free_port has just released.
    addr = f"http://{LOOPBACK}:{free_port()}"
    started = time.monotonic()

    result = run_init(
        "--vault-addr",
        addr,
        "--root-token-file",
        str(tmp_path / "root_token"),
        "--wait-seconds",
        "1",
    )

    assert result.returncode == 1
    assert time.monotonic() - started < 10
    assert f"vault at {addr} did not respond" in result.stderr


def test_missing_vault_addr_fails(tmp_path: Path) -> None:
    result = run_init("--root-token-file", str(tmp_path / "root_token"))

    assert result.returncode == 1
    assert "missing --vault-addr" in result.stderr
