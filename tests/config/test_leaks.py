"""Canary secrets: planted in every source, absent from every output.

Each canary is `canary-` and 24 random URL-safe characters. A check fails when
the whole canary or any 6 consecutive characters of its random part appear,
so a truncated or partly masked value is caught as well.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

import config
from config import _vault
from config.cli import explain_records, print_table
from config.errors import ConfigError
from config.sources.files import MAX_FILE_BYTES
from tests.config.conftest import Layout, VaultData, load, load_error, run_cli
from tests.support.servers import free_port

WINDOW = 6


def make_canary() -> str:
    return "canary-" + secrets.token_urlsafe(18)


class Canaries:
    """The canary values of one test and the check that none of them leaked."""

    def __init__(self) -> None:
        self.file_password = make_canary()
        self.vault_password = make_canary()
        self.env_password = make_canary()
        self.vault_token = make_canary()

    @property
    def values(self) -> list[str]:
        return [
            self.file_password,
            self.vault_password,
            self.env_password,
            self.vault_token,
        ]

    def assert_absent(self, text: str, where: str) -> None:
        for canary in self.values:
            random_part = canary.removeprefix("canary-")
            assert canary not in text, f"canary in {where}"
            for start in range(len(random_part) - WINDOW + 1):
                piece = random_part[start : start + WINDOW]
                assert piece not in text, f"canary piece {piece!r} in {where}"


@pytest.fixture
def canaries() -> Canaries:
    return Canaries()


@pytest.mark.parametrize(
    "leak",
    [
        lambda c: c,
        lambda c: c[:10] + "***" + c[13:],
        lambda c: f"prefix {c[9:15]} suffix",
        lambda c: c[-6:],
    ],
)
def test_canary_check_catches_pieces(canaries: Canaries, leak: object) -> None:
    with pytest.raises(AssertionError):
        canaries.assert_absent(leak(canaries.env_password), "a test string")  # type: ignore[operator]


def test_canary_check_ignores_prefix(canaries: Canaries) -> None:
    canaries.assert_absent("canary- in a path, like test_canary_leak0", "a path")


def exception_texts(error: BaseException) -> Iterator[str]:
    """Yield str and repr of `error`, its args and every chained exception."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (repr(arg) for arg in current.args)
        for problem in getattr(current, "problems", ()):
            yield str(problem)
            yield repr(problem)
        pending += [current.__cause__, current.__context__]


def assert_error_clean(error: BaseException, canaries: Canaries) -> None:
    for text in exception_texts(error):
        canaries.assert_absent(text, f"exception text {text[:60]!r}")


@pytest.fixture
def vault_with_canaries(vault: VaultData, canaries: Canaries) -> VaultData:
    """The test's Vault path holding a canary password, read by a canary token."""
    vault.server.client().auth.token.create(
        id=canaries.vault_token, policies=["root"], ttl="10m"
    )
    vault.token = canaries.vault_token
    vault.write(redis_password=canaries.vault_password, redis_host="cache.vault")
    return vault


@pytest.fixture
def planted_environ(
    layout: Layout, vault_with_canaries: VaultData, canaries: Canaries
) -> dict[str, str]:
    """An environ with a canary password in a file, in Vault and in env."""
    layout.secret_file("redis_password", canaries.file_password + "\n")
    return layout.environ(
        **vault_with_canaries.environ(), REDIS_PASSWORD=canaries.env_password
    )


def test_canary_absent_from_debug_logs(
    planted_environ: dict[str, str],
    canaries: Canaries,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    settings = load(planted_environ)

    assert settings["REDIS_PASSWORD"].reveal() == canaries.file_password
    assert caplog.records, "expected debug records from the load"
    canaries.assert_absent(caplog.text, "captured logs")
    for record in caplog.records:
        canaries.assert_absent(record.getMessage(), "a log message")


def test_canary_absent_from_reprs(
    planted_environ: dict[str, str], canaries: Canaries
) -> None:
    settings = load(planted_environ)

    record = settings.resolved("REDIS_PASSWORD")
    assert [c.origin.kind for c in record.shadowed] == ["vault", "env"]
    canaries.assert_absent(repr(settings), "repr(settings)")
    canaries.assert_absent(str(settings), "str(settings)")
    for resolved in settings.records():
        canaries.assert_absent(repr(resolved), f"repr of {resolved.name}")
        canaries.assert_absent(str(resolved), f"str of {resolved.name}")
        for candidate in resolved.shadowed:
            canaries.assert_absent(repr(candidate), f"candidate of {resolved.name}")


def test_canary_absent_from_json(
    planted_environ: dict[str, str], canaries: Canaries
) -> None:
    settings = load(planted_environ)

    dumped = json.dumps(dict(settings), default=config.json_default)
    records = json.dumps(explain_records(settings.records()))

    assert json.loads(dumped)["REDIS_PASSWORD"] == config.MASK
    canaries.assert_absent(dumped, "json.dumps(settings)")
    canaries.assert_absent(records, "explain records")


def test_canary_absent_from_formatting(
    planted_environ: dict[str, str], canaries: Canaries
) -> None:
    settings = load(planted_environ)
    password = settings["REDIS_PASSWORD"]
    token = settings["VAULT_TOKEN"]

    for secret in (password, token):
        for text in (
            str(secret),
            repr(secret),
            f"{secret}",
            f"{secret!r:>40}",
            "%s %r" % (secret, secret),  # noqa: UP031
            json.dumps({"value": secret}, default=config.json_default),
        ):
            canaries.assert_absent(text, "a formatted secret")
    with pytest.raises(TypeError):
        json.dumps({"value": password})


def test_canary_absent_from_table(
    planted_environ: dict[str, str], canaries: Canaries, tmp_path: Path
) -> None:
    settings = load(planted_environ)
    out = tmp_path / "table.txt"

    with out.open("w") as handle:
        print_table(settings, settings.records(), handle)

    text = out.read_text()
    assert "REDIS_PASSWORD" in text
    canaries.assert_absent(text, "explain table")


@pytest.mark.parametrize(
    "args", [("explain",), ("explain", "--json"), ("check",)], ids=" ".join
)
def test_canary_absent_from_cli(
    planted_environ: dict[str, str], canaries: Canaries, args: tuple[str, ...]
) -> None:
    result = run_cli(*args, environ=planted_environ)

    assert result.returncode == 0, result.stderr
    assert result.stdout
    canaries.assert_absent(result.stdout, f"{' '.join(args)} stdout")
    canaries.assert_absent(result.stderr, f"{' '.join(args)} stderr")


def test_canary_absent_from_failing_check(
    planted_environ: dict[str, str], canaries: Canaries
) -> None:
    environ = planted_environ | {"REDIS_PORT": "abc"}

    result = run_cli("check", environ=environ)

    assert result.returncode == 1
    assert "REDIS_PORT" in result.stderr
    canaries.assert_absent(result.stdout + result.stderr, "failing check output")


def test_canary_token_forbidden(
    layout: Layout,
    vault: VaultData,
    canaries: Canaries,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault.server.client().auth.token.create(
        id=canaries.vault_token, policies=["default"], ttl="10m"
    )
    vault.write(redis_password=canaries.vault_password)
    caplog.set_level(logging.DEBUG)

    error = load_error(
        layout.environ(**vault.environ(VAULT_TOKEN=canaries.vault_token))
    )

    assert "permission denied (403)" in str(error)
    assert_error_clean(error, canaries)
    canaries.assert_absent(caplog.text, "logs")


def test_canary_token_unknown(
    layout: Layout,
    vault: VaultData,
    canaries: Canaries,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    error = load_error(
        layout.environ(**vault.environ(VAULT_TOKEN=canaries.vault_token))
    )

    assert "token lookup" in str(error)
    assert_error_clean(error, canaries)
    canaries.assert_absent(caplog.text, "logs")


def test_canary_token_unreachable(
    layout: Layout, canaries: Canaries, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    environ = layout.environ(
        VAULT_ADDR=f"http://127.0.0.1:{free_port()}",
        VAULT_TOKEN=canaries.vault_token,
        VAULT_KV_PATH="hitcounter",
        VAULT_RETRY_SECONDS="1",
    )

    error = load_error(environ)

    assert "unreachable" in str(error)
    assert_error_clean(error, canaries)
    canaries.assert_absent(caplog.text, "logs")


def test_canary_secret_id_rejected(
    layout: Layout,
    vault: VaultData,
    canaries: Canaries,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mount = f"approle-{secrets.token_hex(3)}"
    root = vault.server.client()
    root.sys.enable_auth_method("approle", path=mount)
    root.auth.approle.create_or_update_approle("hitcounter", mount_point=mount)
    role_id = root.auth.approle.read_role_id("hitcounter", mount_point=mount)
    secret_id_file = tmp_path / "secret-id"
    secret_id_file.write_text(canaries.vault_token)
    environ = layout.environ(
        **vault.environ(),
        VAULT_ROLE_ID=role_id["data"]["role_id"],
        VAULT_SECRET_ID_FILE=str(secret_id_file),
        VAULT_APPROLE_MOUNT=mount,
    )
    del environ["VAULT_TOKEN"]
    caplog.set_level(logging.DEBUG)

    error = load_error(environ)

    assert "approle login" in str(error)
    assert_error_clean(error, canaries)
    canaries.assert_absent(caplog.text, "logs")


def test_canary_in_vault_error_chain(vault: VaultData, canaries: Canaries) -> None:
    # The error raised below the source, before it becomes a Problem, must not
    # keep hvac's exception as its context: that one may hold the token.
    vault_config = _vault.VaultConfig(
        addr=vault.server.addr,
        token=config.Secret(canaries.vault_token),
        retry_seconds=1,
    )
    client = _vault.make_client(vault_config)

    with pytest.raises(ConfigError) as raised:
        _vault.login(client, vault_config)

    assert raised.value.__context__ is None
    assert raised.value.__cause__ is None
    assert_error_clean(raised.value, canaries)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda c: c.encode() + b"\xff\n", id="invalid-utf8"),
        pytest.param(
            lambda c: (c * (MAX_FILE_BYTES // len(c) + 1)).encode(), id="too-large"
        ),
    ],
)
def test_canary_in_unusable_file(
    layout: Layout, canaries: Canaries, content: object
) -> None:
    layout.secret_file("redis_password", content(canaries.file_password))  # type: ignore[operator]

    error = load_error(layout.environ())

    assert_error_clean(error, canaries)


def test_canary_with_password_file_conflict(
    layout: Layout, canaries: Canaries, tmp_path: Path
) -> None:
    named = tmp_path / "named"
    named.write_text(canaries.file_password)
    environ = layout.environ(
        REDIS_PASSWORD=canaries.env_password, REDIS_PASSWORD_FILE=str(named)
    )

    error = load_error(environ)

    assert_error_clean(error, canaries)


@pytest.mark.parametrize(
    "line",
    [
        "REDIS_PASSWORD='{canary}",
        "REDIS_PASSWORD {canary}",
        "{canary} {canary}",
    ],
)
def test_canary_in_malformed_dotenv(
    layout: Layout, canaries: Canaries, line: str
) -> None:
    layout.dotenv("REDIS_HOST=cache\n" + line.format(canary=canaries.env_password))

    error = load_error(layout.environ(APP_ENV="development"))

    assert "line 2 could not be parsed" in str(error)
    assert_error_clean(error, canaries)


def test_canary_in_cut_dotenv_value(
    layout: Layout, canaries: Canaries, caplog: pytest.LogCaptureFixture
) -> None:
    layout.dotenv(f"REDIS_PASSWORD={canaries.env_password} #{canaries.file_password}\n")
    caplog.set_level(logging.DEBUG)

    load(layout.environ(APP_ENV="development"))

    assert "dotenv value cut at '#'" in caplog.text
    canaries.assert_absent(caplog.text, "logs")


def test_canary_in_redis_url(layout: Layout, canaries: Canaries) -> None:
    url = f"redis://:{canaries.env_password}@cache:6379/0"

    error = load_error(layout.environ(REDIS_URL=url))

    assert_error_clean(error, canaries)


def test_canary_secret_from_env_warning(
    layout: Layout, canaries: Canaries, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    load(layout.environ(REDIS_PASSWORD=canaries.env_password))

    assert "secret read from an environment variable" in caplog.text
    canaries.assert_absent(caplog.text, "logs")


def test_problems_reported_without_canaries(
    layout: Layout,
    vault_with_canaries: VaultData,
    canaries: Canaries,
    caplog: pytest.LogCaptureFixture,
) -> None:
    layout.secret_file("redis_host", "")
    layout.secret_file("redis_password", canaries.file_password)
    environ = layout.environ(**vault_with_canaries.environ(), REDIS_PORT="abc")
    caplog.set_level(logging.DEBUG)

    error = load_error(environ)

    assert len(error.problems) == 2
    assert {p.setting for p in error.problems} == {"REDIS_PORT", "REDIS_HOST"}
    assert_error_clean(error, canaries)
    canaries.assert_absent(caplog.text, "logs")
