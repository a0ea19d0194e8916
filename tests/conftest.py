"""Fixtures shared by every test: an isolated environment and real servers.

Servers come from `tests.support.servers` and listen on free ports on 127.0.0.1.
Each one is stopped when its fixture's scope ends, and its log stays in the
test's temporary directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config import SETTINGS
from tests.support.servers import BaoServer, RedisServer, TcpProxy, random_secret

# Variables that would point the code under test at a server outside the test.
ISOLATED_PREFIXES = ("VAULT_", "BAO_", "REDIS_")
# Every name a setting is read from, so a developer's shell cannot change a test.
ISOLATED_NAMES = frozenset(
    name
    for field in SETTINGS
    for base in (field.name, *field.aliases)
    for name in (base, f"{base}_FILE")
) | {"PROMETHEUS_MULTIPROC_DIR", "FLASK_DEBUG"}

# `bao` and `docker-compose` are installed into the virtual environment's bin
# directory, which is on PATH under scripts/test but not under a bare pytest.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(autouse=True)
def isolated_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Run each test in `tmp_path` with the caller's Vault and Redis settings removed.

    `os.environ` is restored after the test, whatever the test changed.
    """
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES) or name in ISOLATED_NAMES:
            del os.environ[name]
    monkeypatch.chdir(tmp_path)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


RedisFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Return `make(**options) -> RedisServer`, which starts a new redis-server.

    Options are those of `RedisServer` (password, users, extra_args, port).
    Every server made is stopped after the test.
    """
    servers: list[RedisServer] = []

    def make(**options: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", **options)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(redis_factory: RedisFactory) -> RedisServer:
    """A running redis-server whose default user has a random password."""
    return redis_factory(password=random_secret())


BaoFactory = Callable[..., BaoServer]


@pytest.fixture
def bao_factory(tmp_path: Path) -> Iterator[BaoFactory]:
    """Return `make(**options) -> BaoServer`, which starts a new OpenBao dev server.

    Use it for tests that seal, stop or otherwise break the server; the others
    can share `bao_server`. Every server made is stopped after the test.
    """
    servers: list[BaoServer] = []

    def make(**options: Any) -> BaoServer:
        server = BaoServer(tmp_path / f"bao-{len(servers)}", **options)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def bao_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """An OpenBao dev server shared by the whole session.

    Tests must leave it unsealed and running, and should use mount paths and
    names of their own, because other tests see what they write.
    """
    server = BaoServer(tmp_path_factory.mktemp("bao-session"))
    server.start()
    yield server
    server.stop()


ProxyFactory = Callable[..., TcpProxy]


@pytest.fixture
def tcp_proxy_factory() -> Iterator[ProxyFactory]:
    """Return `make(target_port, target_host="127.0.0.1") -> TcpProxy`, enabled.

    Every proxy made is disabled after the test.
    """
    proxies: list[TcpProxy] = []

    def make(target_port: int, target_host: str = "127.0.0.1") -> TcpProxy:
        proxy = TcpProxy(target_port, target_host)
        proxies.append(proxy)
        proxy.enable()
        return proxy

    yield make
    for proxy in proxies:
        proxy.disable()
