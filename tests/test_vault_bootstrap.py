"""python -m app.vault_bootstrap against a real OpenBao dev server and Redis 7."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
import redis

from tests.conftest import BaoFactory
from tests.support.servers import BaoServer, RedisServer, free_port, random_secret

STEPS = (
    "database secrets engine",
    "redis connection",
    "database role",
    "policy",
    "approle auth method",
    "approle role",
    "secret id",
)


@dataclass
class Bootstrap:
    """One bootstrap target: a Redis server, Vault paths of its own, and files."""

    bao: BaoServer
    redis: RedisServer
    directory: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def mount(self) -> str:
        return f"database-{self.suffix}"

    @property
    def approle_mount(self) -> str:
        return f"approle-{self.suffix}"

    @property
    def password_file(self) -> Path:
        return self.directory / "redis-admin-password"

    @property
    def secret_id_file(self) -> Path:
        return self.directory / "secret-id"

    def argv(self, *extra: str) -> list[str]:
        return [
            "--redis-host",
            self.redis.host,
            "--redis-port",
            str(self.redis.port),
            "--db-mount",
            self.mount,
            "--policy",
            f"hitcounter-{self.suffix}",
            "--approle-mount",
            self.approle_mount,
            "--secret-id-file",
            str(self.secret_id_file),
            *extra,
        ]

    def environment(self, **overrides: str) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "VAULT_ADDR": self.bao.addr,
            "VAULT_TOKEN": self.bao.root_token,
            "REDIS_ADMIN_PASSWORD_FILE": str(self.password_file),
            **overrides,
        }

    def run(self, *extra: str, **environment: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.vault_bootstrap", *self.argv(*extra)],
            env=self.environment(**environment),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def run_ok(self, *extra: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*extra)
        assert result.returncode == 0, result.stderr
        return result

    def credentials(
        self, client: hvac.Client | None = None, role: str = "hitcounter"
    ) -> dict[str, Any]:
        client = client or self.bao.client()
        return client.secrets.database.generate_credentials(
            role, mount_point=self.mount
        )

    def login(self) -> hvac.Client:
        role_id = self.bao.client().auth.approle.read_role_id(
            "hitcounter", mount_point=self.approle_mount
        )["data"]["role_id"]
        client = hvac.Client(url=self.bao.addr, timeout=10)
        client.auth.approle.login(
            role_id,
            self.secret_id_file.read_text().strip(),
            mount_point=self.approle_mount,
        )
        return client


@pytest.fixture
def target(
    bao_server: BaoServer, redis_server: RedisServer, tmp_path: Path
) -> Bootstrap:
    target = Bootstrap(bao_server, redis_server, tmp_path)
    target.password_file.write_text(f"{redis_server.password}\n")
    return target


def redis_user(target: Bootstrap, credentials: dict[str, Any]) -> redis.Redis:
    data = credentials["data"]
    return target.redis.client(data["username"], data["password"])


def acl_usernames(server: RedisServer) -> list[str]:
    return [str(name) for name in server.admin_client().acl_users()]


def test_first_run_creates_every_step(target: Bootstrap) -> None:
    result = target.run_ok()

    for step in STEPS:
        assert f"created {step} " in result.stderr
    assert "7 of 7 steps changed" in result.stderr


def test_stdout_is_only_role_id(target: Bootstrap) -> None:
    result = target.run_ok()
    role_id = target.bao.client().auth.approle.read_role_id(
        "hitcounter", mount_point=target.approle_mount
    )["data"]["role_id"]

    assert result.stdout == f"{role_id}\n"


def test_second_run_changes_nothing(target: Bootstrap) -> None:
    first = target.run_ok()
    secret_id = target.secret_id_file.read_text()

    second = target.run_ok()

    for step in STEPS:
        assert f"unchanged {step} " in second.stderr
    assert "created" not in second.stderr
    assert "updated" not in second.stderr
    assert "nothing changed" in second.stderr
    assert second.stdout == first.stdout
    assert target.secret_id_file.read_text() == secret_id


def test_changed_ttl_updates_role_only(target: Bootstrap) -> None:
    target.run_ok()

    result = target.run_ok("--default-ttl", "120")

    assert "updated database role " in result.stderr
    assert "1 of 7 steps changed" in result.stderr
    role = target.bao.client().secrets.database.read_role(
        "hitcounter", mount_point=target.mount
    )
    assert role["data"]["default_ttl"] == 120


def test_credentials_can_count_and_ping(target: Bootstrap) -> None:
    target.run_ok()
    credentials = target.credentials()
    user = redis_user(target, credentials)

    assert credentials["data"]["username"].startswith("V_")
    assert user.ping()
    assert user.incr("hits") == 1
    assert user.execute_command("INCR", "hits") == 2
    assert user.get("hits") == "2"


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "other", "1"),
        ("INCR", "other"),
        ("GET", "other"),
        ("SET", "hits", "100"),
        ("DEL", "hits"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
        ("ACL", "LIST"),
        ("KEYS", "*"),
    ],
    ids=lambda command: " ".join(command),
)
def test_credentials_reject_other_commands(
    target: Bootstrap, command: tuple[str, ...]
) -> None:
    target.run_ok()
    target.redis.admin_client().set("other", "untouched")
    user = redis_user(target, target.credentials())

    with pytest.raises(redis.exceptions.NoPermissionError):
        user.execute_command(*command)
    assert target.redis.admin_client().get("other") == "untouched"


def test_counter_key_option_moves_grant(target: Bootstrap) -> None:
    target.run_ok("--counter-key", "visits")
    user = redis_user(target, target.credentials())

    assert user.incr("visits") == 1
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.incr("hits")


def test_revoked_lease_deletes_redis_user(target: Bootstrap) -> None:
    target.run_ok()
    credentials = target.credentials()
    username = credentials["data"]["username"]
    assert username in acl_usernames(target.redis)

    target.bao.client().sys.revoke_lease(credentials["lease_id"])

    assert username not in acl_usernames(target.redis)
    with pytest.raises(redis.AuthenticationError):
        redis_user(target, credentials).ping()


def test_secret_id_file_is_private(target: Bootstrap) -> None:
    target.run_ok()

    assert target.secret_id_file.stat().st_mode & 0o777 == 0o600
    assert target.secret_id_file.read_text().strip()


def test_approle_token_reads_credentials(target: Bootstrap) -> None:
    target.run_ok()
    client = target.login()

    credentials = target.credentials(client)

    assert redis_user(target, credentials).incr("hits") == 1


def test_approle_token_renews_and_revokes(target: Bootstrap) -> None:
    target.run_ok()
    client = target.login()
    credentials = target.credentials(client)
    lease_id = credentials["lease_id"]

    renewed = client.sys.renew_lease(lease_id, increment=60)
    assert renewed["lease_id"] == lease_id
    renewed = client.adapter.put(f"/v1/sys/leases/renew/{lease_id}")
    assert renewed["lease_id"] == lease_id
    assert client.auth.token.renew_self()["auth"]["client_token"]
    assert client.auth.token.lookup_self()["data"]["policies"] == [
        f"hitcounter-{target.suffix}"
    ]
    client.adapter.put(f"/v1/sys/leases/revoke/{lease_id}")

    assert credentials["data"]["username"] not in acl_usernames(target.redis)


@pytest.mark.parametrize(
    "path",
    [
        "secret/data/hitcounter",
        "sys/mounts",
        "sys/policy",
        "{mount}/config/redis",
        "{mount}/roles/hitcounter",
        "auth/{approle_mount}/role/hitcounter/role-id",
    ],
)
def test_approle_token_denied_elsewhere(target: Bootstrap, path: str) -> None:
    target.bao.client().secrets.kv.v2.create_or_update_secret(
        path="hitcounter", secret={"REDIS_PASSWORD": "kv-canary"}
    )
    target.run_ok()
    client = target.login()
    path = path.format(mount=target.mount, approle_mount=target.approle_mount)

    with pytest.raises(hvac.exceptions.Forbidden):
        client.read(path)


def test_approle_token_cannot_revoke_by_body(target: Bootstrap) -> None:
    target.run_ok()
    credentials = target.credentials()
    client = target.login()

    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.revoke_lease(credentials["lease_id"])
    assert credentials["data"]["username"] in acl_usernames(target.redis)


def test_rotate_secret_id_destroys_old(target: Bootstrap) -> None:
    target.run_ok()
    old_secret_id = target.secret_id_file.read_text().strip()

    result = target.run_ok("--rotate-secret-id")

    assert "updated secret id " in result.stderr
    assert target.secret_id_file.read_text().strip() != old_secret_id
    assert target.login().is_authenticated()
    lookup = target.bao.client().auth.approle.read_secret_id(
        "hitcounter", old_secret_id, mount_point=target.approle_mount
    )
    assert not isinstance(lookup, dict)


def test_invalid_secret_id_file_replaced(target: Bootstrap) -> None:
    target.secret_id_file.write_text("not-a-secret-id\n")

    result = target.run_ok()

    assert "updated secret id " in result.stderr
    assert target.login().is_authenticated()


def test_without_secret_id_file_makes_none(target: Bootstrap) -> None:
    argv = target.argv()
    index = argv.index("--secret-id-file")
    del argv[index : index + 2]

    result = subprocess.run(
        [sys.executable, "-m", "app.vault_bootstrap", *argv],
        env=target.environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "secret id" not in result.stderr
    assert not target.secret_id_file.exists()


def test_token_file_replaces_environment(target: Bootstrap) -> None:
    token_file = target.directory / "vault-token"
    token_file.write_text(f"{target.bao.root_token}\n")

    result = target.run("--vault-token-file", str(token_file), VAULT_TOKEN="")

    assert result.returncode == 0, result.stderr


def test_output_never_contains_secrets(target: Bootstrap) -> None:
    password = target.redis.password
    assert password is not None
    runs = [target.run_ok(), target.run_ok("--rotate-secret-id")]
    target.password_file.write_text("wrong-admin-password-canary\n")
    runs.append(target.run("--update-admin-password"))
    assert runs[-1].returncode == 1
    runs.append(target.run(VAULT_TOKEN="wrong-token-canary"))
    assert runs[-1].returncode == 1

    secret_id = target.secret_id_file.read_text().strip()
    for result in runs:
        output = result.stdout + result.stderr
        assert password not in output
        assert "wrong-admin-password-canary" not in output
        assert target.bao.root_token not in output
        assert "wrong-token-canary" not in output
        assert secret_id not in output


def test_wrong_admin_password_names_step(target: Bootstrap) -> None:
    target.password_file.write_text("wrong-admin-password-canary\n")

    result = target.run()

    assert result.returncode == 1
    assert "redis connection failed at " in result.stderr
    assert f"{target.mount}/config/redis" in result.stderr
    assert "WRONGPASS" in result.stderr


def test_wrong_token_names_lookup(target: Bootstrap) -> None:
    result = target.run(VAULT_TOKEN=random_secret())

    assert result.returncode == 1
    assert "vault token lookup failed at auth/token/lookup-self" in result.stderr
    assert "Forbidden" in result.stderr


def test_unreachable_vault_names_address(target: Bootstrap) -> None:
    address = f"http://127.0.0.1:{free_port()}"

    result = target.run(VAULT_ADDR=address)

    assert result.returncode == 1
    assert f"failed to connect to {address}" in result.stderr


def test_sealed_vault_fails_clearly(
    bao_factory: BaoFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    bao = bao_factory()
    target = Bootstrap(bao, redis_server, tmp_path)
    target.password_file.write_text(f"{redis_server.password}\n")
    bao.seal()

    result = target.run()

    assert result.returncode == 1
    assert "VaultDown" in result.stderr
    assert "sealed" in result.stderr


def test_mount_of_other_type_rejected(target: Bootstrap) -> None:
    target.bao.client().sys.enable_secrets_engine("kv", path=target.mount)

    result = target.run()

    assert result.returncode == 1
    assert f"mount {target.mount}/ exists with type 'kv'" in result.stderr
    assert "--db-mount" in result.stderr


@pytest.mark.parametrize(
    ("extra", "environment", "expected"),
    [
        ((), {"VAULT_ADDR": ""}, "missing required options: --vault-addr"),
        ((), {"VAULT_TOKEN": ""}, "missing Vault token"),
        ((), {"REDIS_ADMIN_PASSWORD_FILE": "/nonexistent/pw"}, "/nonexistent/pw"),
        (("--redis-port", "70000"), {}, "invalid --redis-port '70000'"),
        (("--default-ttl", "0"), {}, "invalid --default-ttl or --max-ttl"),
        (("--token-ttl", "90", "--token-max-ttl", "60"), {}, "exceeds"),
        (("--db-mount", "/"), {}, "invalid --db-mount '/'"),
        (
            (),
            {"VAULT_CACERT": "/nonexistent/ca.pem"},
            "CA bundle '/nonexistent/ca.pem'",
        ),
    ],
    ids=[
        "no addr",
        "no token",
        "missing password file",
        "port range",
        "zero ttl",
        "ttl above max",
        "empty mount",
        "missing ca file",
    ],
)
def test_invalid_options_rejected(
    target: Bootstrap,
    extra: tuple[str, ...],
    environment: dict[str, str],
    expected: str,
) -> None:
    result = target.run(*extra, **environment)

    assert result.returncode == 1
    assert expected in result.stderr
    assert result.stdout == ""


def test_empty_password_file_rejected(target: Bootstrap) -> None:
    target.password_file.write_text("\n")

    result = target.run()

    assert result.returncode == 1
    assert f"{target.password_file} is empty" in result.stderr


def test_update_admin_password_rewrites(target: Bootstrap) -> None:
    target.run_ok()

    result = target.run_ok("--update-admin-password")

    assert "updated redis connection " in result.stderr
    assert "1 of 7 steps changed" in result.stderr
    assert redis_user(target, target.credentials()).ping()


def test_second_role_keeps_first(target: Bootstrap) -> None:
    target.run_ok()

    result = target.run_ok(
        "--role",
        "reporter",
        "--approle-role",
        "reporter",
        "--policy",
        f"reporter-{target.suffix}",
        "--secret-id-file",
        str(target.directory / "reporter-secret-id"),
    )

    assert "updated redis connection " in result.stderr
    assert "created database role " in result.stderr
    connection = target.bao.client().secrets.database.read_connection(
        "redis", mount_point=target.mount
    )
    assert connection["data"]["allowed_roles"] == ["hitcounter", "reporter"]
    assert redis_user(target, target.credentials()).ping()
    assert redis_user(target, target.credentials(role="reporter")).ping()
    assert target.login().is_authenticated()


def test_token_without_rights_names_path(target: Bootstrap) -> None:
    root = target.bao.client()
    root.sys.create_or_update_policy(
        f"lookup-only-{target.suffix}",
        'path "auth/token/lookup-self" { capabilities = ["read"] }',
    )
    token = root.auth.token.create(
        policies=[f"lookup-only-{target.suffix}"], no_default_policy=True, ttl="5m"
    )["auth"]["client_token"]

    result = target.run(VAULT_TOKEN=token)

    assert result.returncode == 1
    assert (
        "database secrets engine failed at sys/mounts/"
        f"{target.mount}: Forbidden" in result.stderr
    )
    assert token not in result.stderr
