"""Precedence: files, Vault, env, .env, default, and orders set by CONFIG_SOURCES.

One setting, REDIS_HOST, is planted in each source with a value naming that
source, so each test can read the winner and the shadowed candidates.
"""

from __future__ import annotations

import pytest

from config import Settings
from tests.config.conftest import Layout, VaultData, load, load_error, problem_for
from tests.support.servers import BaoServer

ALL_SOURCES = ("files", "vault", "env", "dotenv")


class Planted:
    """REDIS_HOST written to the chosen sources, and the origin each one gives."""

    def __init__(self, layout: Layout, vault: VaultData) -> None:
        self.layout = layout
        self.vault = vault
        self.origins: dict[str, str] = {}
        self.variables: dict[str, str] = {}

    def plant(self, *sources: str) -> None:
        if "files" in sources:
            path = self.layout.secret_file("redis_host", "from-files\n")
            self.origins["files"] = f"file {path}"
        # The Vault secret always exists, so that a source without the key is
        # still read, and still reachable.
        data = {"counter_key": "hits-from-vault"}
        if "vault" in sources:
            data["redis_host"] = "from-vault"
        version = self.vault.write(**data)
        locator = f"{self.vault.mount}/data/{self.vault.path}"
        self.origins["vault"] = f"vault {locator}#redis_host (version {version})"
        if "env" in sources:
            self.variables["REDIS_HOST"] = "from-env"
            self.origins["env"] = "env REDIS_HOST"
        if "dotenv" in sources:
            path = self.layout.dotenv("REDIS_HOST=from-dotenv\n")
            self.origins["dotenv"] = f".env REDIS_HOST ({path}:1)"

    def load(self, **variables: str) -> Settings:
        environ = self.layout.environ(
            APP_ENV="development",
            **self.vault.environ(),
            **self.variables,
            **variables,
        )
        return load(environ)


@pytest.fixture
def planted(layout: Layout, vault: VaultData) -> Planted:
    return Planted(layout, vault)


@pytest.fixture
def hitcounter(bao_server: BaoServer) -> VaultData:
    """The service's default KV path, `secret/hitcounter`, on the shared server."""
    return VaultData(bao_server, "hitcounter")


@pytest.mark.parametrize(
    "present",
    [ALL_SOURCES[start:] for start in range(len(ALL_SOURCES) + 1)],
    ids=lambda present: "+".join(present) or "none",
)
def test_removing_sources_one_by_one(
    layout: Layout, hitcounter: VaultData, present: tuple[str, ...]
) -> None:
    planted = Planted(layout, hitcounter)
    planted.plant(*present)

    record = planted.load().resolved("REDIS_HOST")

    if present:
        winner, *rest = present
        assert record.value == f"from-{winner}"
        assert str(record.origin) == planted.origins[winner]
        assert [str(c.origin) for c in record.shadowed] == [
            planted.origins[name] for name in rest
        ]
        assert [c.raw for c in record.shadowed] == [f"from-{name}" for name in rest]
    else:
        assert record.value == "localhost"
        assert str(record.origin) == "default"
        assert record.shadowed == ()


def test_default_path_origin(layout: Layout, hitcounter: VaultData) -> None:
    version = hitcounter.write(redis_password="vault-pass", redis_host="cache")

    settings = load(layout.environ(**hitcounter.environ()))

    record = settings.resolved("REDIS_PASSWORD")
    assert str(record.origin) == (
        f"vault secret/data/hitcounter#redis_password (version {version})"
    )
    assert record.value.reveal() == "vault-pass"


@pytest.mark.parametrize(
    ("order", "winner", "shadowed"),
    [
        ("env,files", "env", ["files"]),
        ("vault,files,env", "vault", ["files", "env"]),
        ("dotenv,env", "dotenv", ["env"]),
        ("env,dotenv,vault,files", "env", ["dotenv", "vault", "files"]),
        ("files", "files", []),
    ],
)
def test_configured_order_wins(
    planted: Planted, order: str, winner: str, shadowed: list[str]
) -> None:
    planted.plant(*ALL_SOURCES)

    record = planted.load(CONFIG_SOURCES=order).resolved("REDIS_HOST")

    assert record.value == f"from-{winner}"
    assert str(record.origin) == planted.origins[winner]
    assert [str(c.origin) for c in record.shadowed] == [
        planted.origins[name] for name in shadowed
    ]


def test_files_beat_vault(planted: Planted) -> None:
    planted.plant("files", "vault")

    record = planted.load().resolved("REDIS_HOST")

    assert record.value == "from-files"
    assert [str(c.origin) for c in record.shadowed] == [planted.origins["vault"]]


def test_vault_beats_env(planted: Planted) -> None:
    planted.plant("vault", "env")

    record = planted.load().resolved("REDIS_HOST")

    assert record.value == "from-vault"
    assert [str(c.origin) for c in record.shadowed] == [planted.origins["env"]]


def test_env_beats_dotenv(planted: Planted) -> None:
    planted.plant("env", "dotenv")

    record = planted.load().resolved("REDIS_HOST")

    assert record.value == "from-env"
    assert [str(c.origin) for c in record.shadowed] == [planted.origins["dotenv"]]


def test_dotenv_beats_default(planted: Planted) -> None:
    planted.plant("dotenv")

    record = planted.load().resolved("REDIS_HOST")

    assert record.value == "from-dotenv"
    assert str(record.origin) == planted.origins["dotenv"]
    assert record.shadowed == ()


def test_shadowed_secret_stays_masked(layout: Layout, vault: VaultData) -> None:
    layout.secret_file("redis_password", "from-files\n")
    vault.write(redis_password="from-vault")

    record = load(
        layout.environ(**vault.environ(), REDIS_PASSWORD="from-env")
    ).resolved("REDIS_PASSWORD")

    assert record.value.reveal() == "from-files"
    assert [c.origin.kind for c in record.shadowed] == ["vault", "env"]
    assert [c.raw.reveal() for c in record.shadowed] == ["from-vault", "from-env"]
    assert "from-vault" not in repr(record)
    assert "from-env" not in repr(record)


@pytest.mark.parametrize(
    ("alias", "text", "name", "expected"),
    [
        ("HOST_REDIS", "cache.alias", "REDIS_HOST", "cache.alias"),
        ("PORT_REDIS", "6380", "REDIS_PORT", 6380),
        ("HOST_RUN", "127.0.0.2", "HTTP_HOST", "127.0.0.2"),
        ("DEBUG", "true", "APP_DEBUG", True),
    ],
)
def test_alias_read(
    layout: Layout, alias: str, text: str, name: str, expected: object
) -> None:
    settings = load(layout.environ(APP_ENV="development", **{alias: text}))

    assert settings[name] == expected
    assert str(settings.resolved(name).origin) == f"env {alias}"


@pytest.mark.parametrize(
    ("name", "canonical", "alias", "text", "expected"),
    [
        ("REDIS_HOST", "cache.canonical", "HOST_REDIS", "cache.alias", None),
        ("REDIS_PORT", "6381", "PORT_REDIS", "6380", 6381),
        ("HTTP_HOST", "127.0.0.3", "HOST_RUN", "127.0.0.2", None),
        # In production an alias that won would fail the load.
        ("APP_DEBUG", "false", "DEBUG", "true", False),
    ],
)
def test_canonical_beats_alias(
    layout: Layout,
    name: str,
    canonical: str,
    alias: str,
    text: str,
    expected: object,
) -> None:
    settings = load(layout.environ(**{name: canonical, alias: text}))

    record = settings.resolved(name)
    assert record.value == (canonical if expected is None else expected)
    assert str(record.origin) == f"env {name}"
    assert [str(c.origin) for c in record.shadowed] == [f"env {alias}"]


def test_alias_in_env_beats_dotenv(layout: Layout) -> None:
    layout.dotenv("REDIS_HOST=cache.dotenv\n")

    settings = load(layout.environ(APP_ENV="development", HOST_REDIS="cache.alias"))

    assert settings["REDIS_HOST"] == "cache.alias"
    assert str(settings.resolved("REDIS_HOST").origin) == "env HOST_REDIS"


def test_vault_only_order_reads_connection_from_env(
    layout: Layout, vault: VaultData
) -> None:
    vault.write(redis_host="vault-host")
    # env is not a source here, but VAULT_ADDR and the token still come from it.
    environ = layout.environ(CONFIG_SOURCES="vault", **vault.environ())

    settings = load(environ)

    assert settings["REDIS_HOST"] == "vault-host"
    assert str(settings.resolved("VAULT_ADDR").origin) == "env VAULT_ADDR"


def test_vault_only_order_ignores_env_settings(
    layout: Layout, vault: VaultData
) -> None:
    vault.write(redis_host="vault-host")
    environ = layout.environ(
        CONFIG_SOURCES="vault", REDIS_PORT="6390", **vault.environ()
    )

    settings = load(environ)

    assert settings["REDIS_PORT"] == 6379
    assert str(settings.resolved("REDIS_PORT").origin) == "default"


def test_named_vault_source_needs_kv_path(layout: Layout) -> None:
    error = load_error(layout.environ(CONFIG_SOURCES="vault,files"))

    message = problem_for(error, "CONFIG_SOURCES")
    assert "names vault, but VAULT_ADDR and VAULT_KV_PATH are not both set" in message
