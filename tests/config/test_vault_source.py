"""The Vault KV source against a real OpenBao dev server.

Every failure must fail the load with a `SettingsError`: a Vault that is
configured but broken never lets a lower source (env) supply the value.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import config
from tests.config.conftest import (
    AuditedBaoServer,
    Layout,
    TlsBaoServer,
    VaultData,
    load,
    load_error,
    problem_for,
)
from tests.conftest import BaoFactory, ProxyFactory
from tests.support.servers import BaoServer, free_port


def vault_problem(error: object) -> str:
    """Return the text of the single Vault problem of a failed load."""
    problems = [str(p) for p in error.problems]  # type: ignore[attr-defined]
    assert len(problems) == 1, problems
    assert problems[0].startswith("vault: "), problems[0]
    return problems[0]


def test_kv2_reads_all_keys_once(
    layout: Layout, audited_bao_server: AuditedBaoServer
) -> None:
    vault = VaultData(audited_bao_server, "hitcounter")
    version = vault.write(
        redis_host="cache.vault", redis_port="6380", redis_password="vault-pass"
    )
    before = len(audited_bao_server.request_paths())

    settings = load(layout.environ(**vault.environ()))

    assert settings["REDIS_HOST"] == "cache.vault"
    assert settings["REDIS_PORT"] == 6380
    assert settings["REDIS_PASSWORD"].reveal() == "vault-pass"
    paths = audited_bao_server.request_paths()[before:]
    assert [p for p in paths if p.startswith("secret/")] == ["secret/data/hitcounter"]
    origin = str(settings.resolved("REDIS_PORT").origin)
    assert origin == f"vault secret/data/hitcounter#redis_port (version {version})"


def test_kv2_reports_latest_version(layout: Layout, vault: VaultData) -> None:
    vault.write(redis_host="old.vault")
    version = vault.write(redis_host="new.vault")

    record = load(layout.environ(**vault.environ())).resolved("REDIS_HOST")

    assert version == 2
    assert record.value == "new.vault"
    assert str(record.origin).endswith("#redis_host (version 2)")


def test_kv1_mount(layout: Layout, bao_server: BaoServer) -> None:
    mount = f"kv1-{secrets.token_hex(3)}"
    root = bao_server.client()
    root.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    root.secrets.kv.v1.create_or_update_secret(
        path="hitcounter", secret={"redis_host": "cache.kv1"}, mount_point=mount
    )
    environ = layout.environ(
        VAULT_ADDR=bao_server.addr,
        VAULT_TOKEN=bao_server.root_token,
        VAULT_KV_MOUNT=mount,
        VAULT_KV_PATH="hitcounter",
        VAULT_KV_VERSION="1",
    )

    record = load(environ).resolved("REDIS_HOST")

    assert record.value == "cache.kv1"
    assert str(record.origin) == f"vault {mount}/hitcounter#redis_host"


def test_non_string_value_typed(layout: Layout, vault: VaultData) -> None:
    vault.server.client().secrets.kv.v2.create_or_update_secret(
        path=vault.path, secret={"redis_port": 6380, "redis_tls": True}
    )

    settings = load(layout.environ(**vault.environ()))

    assert settings["REDIS_PORT"] == 6380
    assert settings["REDIS_TLS"] is True


def test_unknown_and_vault_keys_ignored(
    layout: Layout, vault: VaultData, caplog: pytest.LogCaptureFixture
) -> None:
    # Settings that configure Vault cannot come from Vault itself.
    vault.write(
        something_else="x",
        vault_kv_path="elsewhere",
        vault_addr="http://127.0.0.1:9",
        REDIS_DB="3",
    )
    caplog.set_level(logging.DEBUG, logger="config")

    settings = load(layout.environ(**vault.environ()))

    assert settings["REDIS_DB"] == 3
    assert settings["VAULT_KV_PATH"] == vault.path
    assert settings.resolved("VAULT_ADDR").origin.kind == "env"
    assert "vault key is not a setting key=something_else" in caplog.text


def test_vault_needs_kv_path(
    layout: Layout, audited_bao_server: AuditedBaoServer
) -> None:
    vault = VaultData(audited_bao_server, "hitcounter")
    vault.write(redis_host="cache.vault")
    environ = layout.environ(**vault.environ())
    del environ["VAULT_KV_PATH"]
    before = len(audited_bao_server.request_paths())

    settings = load(environ)

    assert settings["REDIS_HOST"] == "localhost"
    assert audited_bao_server.request_paths()[before:] == []


@pytest.mark.parametrize(
    ("variable", "reason"),
    [
        ("VAULT_KV_PATH", "the settings at this path come from Vault"),
        ("VAULT_DB_ROLE", "Vault issues the Redis credentials"),
    ],
)
def test_vault_setting_needs_addr(layout: Layout, variable: str, reason: str) -> None:
    error = load_error(layout.environ(**{variable: "hitcounter"}))

    assert [str(p) for p in error.problems] == [
        f"{variable} from env {variable}: needs VAULT_ADDR, because {reason}"
    ]


def test_token_from_token_file(
    layout: Layout, vault: VaultData, tmp_path: Path
) -> None:
    vault.write(redis_host="cache.vault")
    token_file = tmp_path / "vault-token"
    token_file.write_text(vault.token + "\n")
    environ = layout.environ(**vault.environ(), VAULT_TOKEN_FILE=str(token_file))
    del environ["VAULT_TOKEN"]

    settings = load(environ)

    assert settings["REDIS_HOST"] == "cache.vault"
    origin = str(settings.resolved("VAULT_TOKEN").origin)
    assert origin == f"file {token_file} (from VAULT_TOKEN_FILE)"


def test_token_from_secrets_dir(layout: Layout, vault: VaultData) -> None:
    vault.write(redis_host="cache.vault")
    layout.secret_file("vault_token", vault.token + "\n")
    environ = layout.environ(**vault.environ())
    del environ["VAULT_TOKEN"]

    assert load(environ)["REDIS_HOST"] == "cache.vault"


class AppRole:
    """An AppRole auth mount of one test's own, allowed to read one KV path."""

    def __init__(self, vault: VaultData) -> None:
        root = vault.server.client()
        self.mount = f"approle-{secrets.token_hex(3)}"
        policy = f"read-{self.mount}"
        root.sys.enable_auth_method("approle", path=self.mount)
        root.sys.create_or_update_policy(
            policy, f'path "secret/data/{vault.path}" {{ capabilities = ["read"] }}'
        )
        root.auth.approle.create_or_update_approle(
            "hitcounter", token_policies=[policy], mount_point=self.mount
        )
        role = root.auth.approle.read_role_id("hitcounter", mount_point=self.mount)
        self.role_id = role["data"]["role_id"]
        issued = root.auth.approle.generate_secret_id(
            "hitcounter", mount_point=self.mount
        )
        self.secret_id = issued["data"]["secret_id"]


def approle_environ(
    layout: Layout, vault: VaultData, role: AppRole, secret_id_file: Path
) -> dict[str, str]:
    environ = layout.environ(
        **vault.environ(),
        VAULT_ROLE_ID=role.role_id,
        VAULT_SECRET_ID_FILE=str(secret_id_file),
        VAULT_APPROLE_MOUNT=role.mount,
    )
    del environ["VAULT_TOKEN"]
    return environ


def test_approle_login(layout: Layout, vault: VaultData, tmp_path: Path) -> None:
    vault.write(redis_host="cache.approle")
    role = AppRole(vault)
    secret_id_file = tmp_path / "secret-id"
    secret_id_file.write_text(role.secret_id + "\n")

    settings = load(approle_environ(layout, vault, role, secret_id_file))

    assert settings["REDIS_HOST"] == "cache.approle"
    assert settings["VAULT_SECRET_ID"].reveal() == role.secret_id


def test_approle_wrong_secret_id(
    layout: Layout, vault: VaultData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vault.write(redis_host="cache.approle")
    role = AppRole(vault)
    wrong = f"wrong-{secrets.token_hex(12)}"
    secret_id_file = tmp_path / "secret-id"
    secret_id_file.write_text(wrong)
    caplog.set_level(logging.DEBUG)
    environ = approle_environ(layout, vault, role, secret_id_file)

    error = load_error({**environ, "REDIS_HOST": "cache.env"})

    message = vault_problem(error)
    assert message.startswith("vault: vault approle login at ")
    assert f"/v1/auth/{role.mount}/login" in message
    assert "secret id was rejected" in message
    assert vault.server.addr in message
    assert wrong not in str(error)
    assert wrong[6:18] not in str(error)
    assert wrong not in caplog.text


def test_approle_without_secret_id(layout: Layout, vault: VaultData) -> None:
    vault.write(redis_host="cache.approle")
    environ = layout.environ(**vault.environ(), VAULT_ROLE_ID="some-role-id")
    del environ["VAULT_TOKEN"]

    message = vault_problem(load_error(environ))

    assert "VAULT_ROLE_ID is set but no secret id was found" in message
    assert "VAULT_SECRET_ID_FILE" in message


def test_no_credentials(layout: Layout, vault: VaultData) -> None:
    environ = layout.environ(**vault.environ())
    del environ["VAULT_TOKEN"]

    message = vault_problem(load_error(environ))

    assert "no credentials" in message
    assert "VAULT_TOKEN_FILE" in message


def test_unreachable_closed_port(layout: Layout, vault: VaultData) -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    environ = layout.environ(**vault.environ(VAULT_ADDR=addr), REDIS_HOST="cache.env")

    message = vault_problem(load_error(environ))

    assert f"at {addr}: unreachable (connection failed)" in message
    assert "gave up after" in message


def test_unreachable_proxy_disabled(
    layout: Layout,
    vault: VaultData,
    tcp_proxy_factory: ProxyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault.write(redis_host="cache.vault")
    proxy = tcp_proxy_factory(vault.server.port)
    environ = layout.environ(
        **vault.environ(VAULT_ADDR=proxy.addr), REDIS_HOST="cache.env"
    )
    assert load(environ)["REDIS_HOST"] == "cache.vault"
    proxy.disable()
    caplog.set_level(logging.WARNING)

    message = vault_problem(load_error(environ))

    assert "unreachable (connection failed)" in message
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert retries
    assert all(r.levelno == logging.WARNING for r in retries)


def sealed_server(bao_factory: BaoFactory, layout: Layout) -> tuple[BaoServer, dict]:
    server = bao_factory()
    data = VaultData(server, "hitcounter")
    data.write(redis_host="cache.vault")
    environ = layout.environ(**data.environ(), REDIS_HOST="cache.env")
    server.seal()
    return server, environ


def test_sealed_vault(bao_factory: BaoFactory, layout: Layout) -> None:
    _, environ = sealed_server(bao_factory, layout)

    message = vault_problem(load_error(environ))

    assert "Vault is sealed or unavailable (503)" in message
    assert "gave up after" in message


def test_unsealed_within_retry_window(bao_factory: BaoFactory, layout: Layout) -> None:
    server, environ = sealed_server(bao_factory, layout)
    unseal = threading.Timer(1.0, server.unseal)
    unseal.start()

    try:
        settings = load({**environ, "VAULT_RETRY_SECONDS": "15"})
    finally:
        unseal.join()

    assert settings["REDIS_HOST"] == "cache.vault"


def test_forbidden_path(layout: Layout, vault: VaultData) -> None:
    vault.write(redis_host="cache.vault")
    root = vault.server.client()
    # A token whose only policy is `default`, which grants no KV path.
    token = root.auth.token.create(policies=["default"], ttl="10m")["auth"][
        "client_token"
    ]
    environ = layout.environ(**vault.environ(VAULT_TOKEN=token), REDIS_HOST="cache.env")

    message = vault_problem(load_error(environ))

    assert f"read of secret/data/{vault.path}" in message
    assert "permission denied (403)" in message
    assert "VAULT_KV_VERSION" not in message
    assert token not in message


def test_invalid_token(layout: Layout, vault: VaultData) -> None:
    token = f"s.{secrets.token_hex(12)}"
    environ = layout.environ(**vault.environ(VAULT_TOKEN=token))

    message = vault_problem(load_error(environ))

    assert "token lookup at auth/token/lookup-self" in message
    assert "permission denied (403)" in message
    assert token not in message


def test_missing_path(layout: Layout, vault: VaultData) -> None:
    environ = layout.environ(**vault.environ(), REDIS_HOST="cache.env")

    message = vault_problem(load_error(environ))

    assert f"read of secret/data/{vault.path}" in message
    assert "path not found (404)" in message
    assert "VAULT_KV_VERSION" not in message


def test_kv1_setting_on_kv2_mount(layout: Layout, vault: VaultData) -> None:
    vault.write(redis_host="cache.vault")
    environ = layout.environ(**vault.environ(VAULT_KV_VERSION="1"))

    message = vault_problem(load_error(environ))

    assert f"read of secret/{vault.path}" in message
    assert "secret is a KV version 2 mount" in message
    assert "set VAULT_KV_VERSION=2" in message


def test_kv_mismatch_with_narrow_policy(layout: Layout, vault: VaultData) -> None:
    vault.write(redis_host="cache.vault")
    root = vault.server.client()
    policy = f"read-{secrets.token_hex(3)}"
    root.sys.create_or_update_policy(
        policy, f'path "secret/data/{vault.path}" {{ capabilities = ["read"] }}'
    )
    token = root.auth.token.create(policies=[policy], ttl="10m")["auth"]
    environ = layout.environ(
        **vault.environ(VAULT_TOKEN=token["client_token"], VAULT_KV_VERSION="1")
    )

    message = vault_problem(load_error(environ))

    assert "set VAULT_KV_VERSION=2" in message


def test_kv2_setting_on_kv1_mount(layout: Layout, bao_server: BaoServer) -> None:
    mount = f"kv1-{secrets.token_hex(3)}"
    root = bao_server.client()
    root.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    root.secrets.kv.v1.create_or_update_secret(
        path="hitcounter", secret={"redis_host": "cache.kv1"}, mount_point=mount
    )
    environ = layout.environ(
        VAULT_ADDR=bao_server.addr,
        VAULT_TOKEN=bao_server.root_token,
        VAULT_KV_MOUNT=mount,
        VAULT_KV_PATH="hitcounter",
        VAULT_RETRY_SECONDS="1",
    )

    message = vault_problem(load_error(environ))

    assert f"{mount} is a KV version 1 mount" in message
    assert "set VAULT_KV_VERSION=1" in message


def test_cacert_missing_file(layout: Layout, vault: VaultData, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    environ = layout.environ(**vault.environ(VAULT_CACERT=str(missing)))

    message = vault_problem(load_error(environ))

    assert f"CA bundle {missing} does not exist" in message


def tls_environ(layout: Layout, server: TlsBaoServer, **extra: str) -> dict[str, str]:
    data = VaultData(server, "hitcounter")
    data.write(redis_host="cache.tls")
    return layout.environ(**data.environ(), **extra)


def test_tls_without_cacert_fails(layout: Layout, tls_bao_server: TlsBaoServer) -> None:
    message = vault_problem(load_error(tls_environ(layout, tls_bao_server)))

    assert "TLS verification failed; set VAULT_CACERT" in message


def test_tls_cacert_from_env(layout: Layout, tls_bao_server: TlsBaoServer) -> None:
    environ = tls_environ(
        layout, tls_bao_server, VAULT_CACERT=str(tls_bao_server.ca_path)
    )

    assert load(environ)["REDIS_HOST"] == "cache.tls"


def test_tls_cacert_from_secret_file(
    layout: Layout, tls_bao_server: TlsBaoServer
) -> None:
    environ = tls_environ(layout, tls_bao_server)
    layout.secret_file("vault_cacert", f"{tls_bao_server.ca_path}\n")

    settings = load(environ)

    assert settings["REDIS_HOST"] == "cache.tls"
    assert settings.resolved("VAULT_CACERT").origin.kind == "file"


def test_tls_cacert_from_dotenv(layout: Layout, tls_bao_server: TlsBaoServer) -> None:
    environ = tls_environ(layout, tls_bao_server, APP_ENV="development")
    layout.dotenv(f"VAULT_CACERT={tls_bao_server.ca_path}\n")

    settings = load(environ)

    assert settings["REDIS_HOST"] == "cache.tls"
    assert settings.resolved("VAULT_CACERT").origin.kind == ".env"


def test_tls_wrong_cacert(
    layout: Layout, tls_bao_server: TlsBaoServer, tmp_path: Path
) -> None:
    # The CA of a second dev server, which did not sign the first one's certificate.
    other = TlsBaoServer(tmp_path / "other-ca")
    other.start()
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(other.ca_path.read_bytes())
    other.stop()
    environ = tls_environ(layout, tls_bao_server, VAULT_CACERT=str(other_ca))

    message = vault_problem(load_error(environ))

    assert "TLS verification failed; check VAULT_CACERT" in message


def test_vault_values_stay_out_of_os_environ(
    layout: Layout, vault: VaultData, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.write(redis_password="vault-only-pass", redis_host="cache.vault")
    for name, value in layout.environ(**vault.environ()).items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)

    settings = config.load_settings()

    assert settings["REDIS_HOST"] == "cache.vault"
    assert dict(os.environ) == before
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.environ.items()))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "vault-only-pass" not in child.stdout
    assert "cache.vault" not in child.stdout


@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, "null"), ({"a": "b"}, "a JSON object"), (["x"], "a JSON array")],
    ids=["null", "object", "array"],
)
def test_kv_non_text_value_rejected(
    layout: Layout, vault: VaultData, value: object, kind: str
) -> None:
    vault.server.client().secrets.kv.v2.create_or_update_secret(
        path=vault.path, secret={"redis_password": value}, mount_point=vault.mount
    )

    error = load_error(layout.environ(**vault.environ()))

    assert problem_for(error, "REDIS_PASSWORD").endswith(
        f"the value is {kind}; expected a string"
    )


def test_kv_number_value_accepted(layout: Layout, vault: VaultData) -> None:
    vault.server.client().secrets.kv.v2.create_or_update_secret(
        path=vault.path, secret={"redis_port": 6380}, mount_point=vault.mount
    )

    assert load(layout.environ(**vault.environ()))["REDIS_PORT"] == 6380


def test_kv_keys_differing_in_case_rejected(layout: Layout, vault: VaultData) -> None:
    vault.write(redis_host="one", REDIS_HOST="two")

    error = load_error(layout.environ(**vault.environ()))

    assert "both set it; keep one" in problem_for(error, "REDIS_HOST")
