"""DynamicCredentials in-process: the token's life, against real OpenBao and Redis.

The gunicorn-level lifecycle (rotation under traffic, revocation, outages,
shutdown) is specified in tests/leases. These tests drive one
`DynamicCredentials` directly, so that the Vault token can be made to expire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import Secret, load_settings
from config._load import vault_config_of
from config._vault import VaultConfig
from config.leases import DynamicCredentials
from tests.conftest import ProxyFactory
from tests.leases.stack import MOUNT, ROLE, Stack, bootstrap, start_stack


@pytest.fixture
def short_token_stack(tmp_path: Path) -> Iterator[Stack]:
    """Leases of 30 s (max 120 s), AppRole tokens of 3 s (max 4 s)."""
    stack = start_stack(
        tmp_path / "stack",
        default_ttl=30,
        max_ttl=120,
        bootstrap_args=["--token-ttl=3", "--token-max-ttl=4"],
    )
    yield stack
    stack.redis.stop()
    stack.bao.stop()


def credentials(stack: Stack, addr: str) -> DynamicCredentials:
    config = VaultConfig(
        addr=addr,
        role_id=stack.role_id,
        secret_id=Secret(stack.secret_id),
        secret_id_file=str(stack.secret_id_file),
        timeout=1.0,
        retry_seconds=2.0,
    )
    return DynamicCredentials(config, MOUNT, ROLE)


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_capped_token_leads_to_new_login(
    short_token_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    dynamic = credentials(short_token_stack, short_token_stack.bao.addr)
    caplog.set_level(logging.INFO, logger="config.leases")
    first = dynamic.start()
    try:
        # The token ends long before the 30 s lease, and the lease ends with it.
        replaced = wait_for(lambda: dynamic.current().username != first.username, 8)
        current = dynamic.current()
        users = short_token_stack.service_users()
    finally:
        dynamic.close()

    assert replaced
    assert "vault token near its end, logging in again" in caplog.text
    assert current.generation > first.generation
    assert current.username in users
    assert short_token_stack.service_users() == set()


def test_token_expired_in_outage_recovers(
    short_token_stack: Stack,
    tcp_proxy_factory: ProxyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = tcp_proxy_factory(short_token_stack.bao.port)
    dynamic = credentials(short_token_stack, proxy.addr)
    caplog.set_level(logging.INFO, logger="config.leases")
    first = dynamic.start()
    try:
        proxy.disable()
        # Longer than the token's 4 s max TTL: Vault revokes the token and,
        # with it, the lease and its Redis user.
        time.sleep(6)
        during = dynamic.status()
        proxy.enable()
        recovered = wait_for(lambda: dynamic.status().state == "ok", 10)
        current = dynamic.current()
    finally:
        dynamic.close()

    assert during.state in ("degraded", "expired")
    assert recovered
    assert current.username != first.username
    assert "logging in again" in caplog.text
    assert short_token_stack.service_users() == set()


def test_rotated_secret_id_used_at_next_login(
    short_token_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = short_token_stack
    dynamic = credentials(stack, stack.bao.addr)
    caplog.set_level(logging.INFO, logger="config.leases")
    first = dynamic.start()
    old_secret_id = stack.secret_id
    try:
        # The operator rotates the secret id: the old one stops working.
        bootstrap(
            stack.directory,
            stack.redis,
            stack.bao,
            stack.default_ttl,
            stack.max_ttl,
            ["--token-ttl=3", "--token-max-ttl=4", "--rotate-secret-id"],
        )
        rotated = stack.secret_id
        caplog.clear()
        # The next login, within the token's 4 s max TTL, reads the new one.
        replaced = wait_for(lambda: dynamic.current().username != first.username, 8)
        state = dynamic.status().state
    finally:
        dynamic.close()

    assert rotated != old_secret_id
    assert replaced
    assert "vault token near its end, logging in again" in caplog.text
    assert state == "ok"


def test_secret_id_file_tracked_from_settings(tmp_path: Path) -> None:
    named = tmp_path / "sid"
    named.write_text("secret-id-one\n")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "vault_secret_id").write_text("secret-id-two\n")
    base = {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_ROLE_ID": "role"}

    from_variable = load_settings(
        {**base, "SECRETS_DIR": str(secrets_dir), "VAULT_SECRET_ID_FILE": str(named)}
    )
    from_directory = load_settings({**base, "SECRETS_DIR": str(secrets_dir)})
    from_env = load_settings(
        {**base, "SECRETS_DIR": str(tmp_path / "none"), "VAULT_SECRET_ID": "x"}
    )

    assert vault_config_of(from_variable).secret_id_file == str(named)
    assert vault_config_of(from_directory).secret_id_file == str(
        secrets_dir / "vault_secret_id"
    )
    assert vault_config_of(from_env).secret_id_file is None
