"""Tests of the test servers themselves, so fixture failures show up here first."""

from __future__ import annotations

import socket

import hvac.exceptions
import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import BaoFactory, ProxyFactory, RedisFactory
from tests.support.servers import (
    BaoServer,
    RedisServer,
    ServerStartError,
    free_port,
    random_secret,
)


def redis_client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(port=port, password=password, retry=Retry(NoBackoff(), 0))


def test_redis_requires_password(redis_server: RedisServer) -> None:
    anonymous = redis_server.client()

    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    assert redis_server.admin_client().ping()


def test_redis_rejects_wrong_password(redis_server: RedisServer) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis_server.client(password="wrong").ping()


def test_redis_acl_user_limited(redis_factory: RedisFactory) -> None:
    server = redis_factory(
        password=random_secret(), users={"reader": "on >reader-pw ~* +get +ping"}
    )
    reader = server.client("reader", "reader-pw")
    server.admin_client().set("key", "value")

    assert reader.get("key") == "value"
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.set("key", "other")


def test_redis_restart_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.admin_client().set("key", "value")

    redis_server.stop()
    with pytest.raises(redis.ConnectionError):
        redis_server.admin_client().ping()
    redis_server.start()

    assert redis_server.port == port
    assert redis_server.admin_client().ping()
    assert redis_server.admin_client().get("key") is None


def test_redis_bad_option_shows_log(redis_factory: RedisFactory) -> None:
    with pytest.raises(ServerStartError, match="exited before") as raised:
        redis_factory(extra_args=["--no-such-option", "1"])

    assert "no-such-option" in str(raised.value)


def test_proxy_forwards_to_redis(
    redis_server: RedisServer, tcp_proxy_factory: ProxyFactory
) -> None:
    proxy = tcp_proxy_factory(redis_server.port)
    client = redis_client(proxy.port, redis_server.password)

    assert client.incr("hits") == 1
    assert client.incr("hits") == 2


def test_proxy_disable_refuses_and_resets(
    redis_server: RedisServer, tcp_proxy_factory: ProxyFactory
) -> None:
    proxy = tcp_proxy_factory(redis_server.port)
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as live:
        live.sendall(f"AUTH {redis_server.password}\r\n".encode())
        assert live.recv(100) == b"+OK\r\n"

        proxy.disable()

        with pytest.raises(ConnectionResetError):
            live.sendall(b"PING\r\n")
            live.recv(100)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=5)


def test_proxy_enable_again_same_port(
    redis_server: RedisServer, tcp_proxy_factory: ProxyFactory
) -> None:
    proxy = tcp_proxy_factory(redis_server.port)
    client = redis_client(proxy.port, redis_server.password)
    assert client.ping()

    proxy.disable()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    proxy.enable()

    assert client.ping()


def test_proxy_target_down_resets_client(tcp_proxy_factory: ProxyFactory) -> None:
    proxy = tcp_proxy_factory(free_port())

    with pytest.raises(redis.ConnectionError):
        redis_client(proxy.port).ping()


def test_bao_server_healthy(bao_server: BaoServer) -> None:
    client = bao_server.client()

    assert client.is_authenticated()
    assert not client.sys.read_seal_status()["sealed"]
    assert "secret/" in client.sys.list_mounted_secrets_engines()["data"]


def test_bao_rejects_wrong_token(bao_server: BaoServer) -> None:
    assert not bao_server.client(token="wrong").is_authenticated()


def test_bao_seal_then_unseal_keeps_state(bao_factory: BaoFactory) -> None:
    server = bao_factory()
    server.client().secrets.kv.v2.create_or_update_secret(
        path="kept", secret={"value": "1"}
    )

    server.seal()
    assert not server.healthy()
    with pytest.raises(hvac.exceptions.VaultDown):
        server.client().secrets.kv.v2.read_secret_version(
            path="kept", raise_on_deleted_version=True
        )
    server.unseal()

    secret = server.client().secrets.kv.v2.read_secret_version(
        path="kept", raise_on_deleted_version=True
    )
    assert secret["data"]["data"] == {"value": "1"}


def test_bao_restart_loses_state(bao_factory: BaoFactory) -> None:
    server = bao_factory()
    server.client().secrets.kv.v2.create_or_update_secret(
        path="lost", secret={"value": "1"}
    )

    server.stop()
    assert not server.healthy()
    server.start()

    with pytest.raises(hvac.exceptions.InvalidPath):
        server.client().secrets.kv.v2.read_secret_version(
            path="lost", raise_on_deleted_version=True
        )


def test_bao_behind_disabled_proxy(
    bao_server: BaoServer, tcp_proxy_factory: ProxyFactory
) -> None:
    proxy = tcp_proxy_factory(bao_server.port)
    client = hvac.Client(url=proxy.addr, token=bao_server.root_token, timeout=5)
    assert client.is_authenticated()

    proxy.disable()
    with pytest.raises(requests.ConnectionError):
        client.is_authenticated()
    proxy.enable()

    assert client.is_authenticated()
