"""`python -m config explain [--json]` and `check`, run as a user runs them."""

from __future__ import annotations

import json

import pytest

from config import MASK, SETTINGS
from tests.config.conftest import Layout, run_cli


@pytest.fixture
def planted(layout: Layout) -> dict[str, str]:
    """A development setup with values in files, env and .env."""
    layout.secret_file("redis_password", "file-pass\n")
    layout.dotenv("REDIS_HOST=cache.dotenv\nREDIS_PORT=6390\n")
    return layout.environ(
        APP_ENV="development", REDIS_HOST="cache.env", REDIS_PASSWORD="env-pass"
    )


def table_row(output: str, name: str) -> list[str]:
    """Return the cells of the row for `name`, split on runs of two spaces."""
    for line in output.splitlines():
        if line.startswith(f"{name} "):
            return [cell.strip() for cell in line.split("  ") if cell.strip()]
    raise AssertionError(f"no row for {name} in:\n{output}")


def test_explain_table(layout: Layout, planted: dict[str, str]) -> None:
    result = run_cli("explain", environ=planted)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "source order: files,vault,env,dotenv,default (first wins)"
    assert lines[1].split() == ["SETTING", "VALUE", "SOURCE", "SHADOWED"]
    password_file = layout.secrets_dir / "redis_password"
    assert table_row(result.stdout, "REDIS_PASSWORD") == [
        "REDIS_PASSWORD",
        MASK,
        f"file {password_file}",
        f"env REDIS_PASSWORD ({MASK})",
    ]
    assert table_row(result.stdout, "REDIS_HOST") == [
        "REDIS_HOST",
        "cache.env",
        "env REDIS_HOST",
        f".env REDIS_HOST ({layout.dotenv_path}:1) = 'cache.dotenv'",
    ]
    assert table_row(result.stdout, "REDIS_PORT") == [
        "REDIS_PORT",
        "6390",
        f".env REDIS_PORT ({layout.dotenv_path}:2)",
    ]
    assert table_row(result.stdout, "REDIS_DB") == ["REDIS_DB", "0", "default"]
    assert "file-pass" not in result.stdout
    assert "env-pass" not in result.stdout


def test_explain_lists_every_setting(planted: dict[str, str]) -> None:
    result = run_cli("explain", environ=planted)

    for fld in SETTINGS:
        assert table_row(result.stdout, fld.name)[0] == fld.name


def test_explain_json(layout: Layout, planted: dict[str, str]) -> None:
    result = run_cli("explain", "--json", environ=planted)

    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert isinstance(records, list)
    assert [r["name"] for r in records] == [f.name for f in SETTINGS]
    for record in records:
        assert {"name", "value", "secret", "source", "shadowed"} <= set(record)
        assert isinstance(record["shadowed"], list)
    by_name = {r["name"]: r for r in records}
    assert by_name["REDIS_PASSWORD"]["value"] == MASK
    assert by_name["REDIS_PASSWORD"]["secret"] is True
    assert by_name["REDIS_PASSWORD"]["source"] == (
        f"file {layout.secrets_dir / 'redis_password'}"
    )
    assert by_name["REDIS_PASSWORD"]["shadowed"] == [f"env REDIS_PASSWORD ({MASK})"]
    assert by_name["REDIS_PORT"]["value"] == 6390
    assert by_name["REDIS_PORT"]["secret"] is False
    assert by_name["REDIS_HOST"]["shadowed"] == [
        f".env REDIS_HOST ({layout.dotenv_path}:1) = 'cache.dotenv'"
    ]
    assert by_name["CONFIG_SOURCES"]["value"] is None
    assert by_name["VAULT_TOKEN"]["value"] is None
    assert "file-pass" not in result.stdout
    assert "env-pass" not in result.stdout


def test_explain_json_configured_order(layout: Layout) -> None:
    environ = layout.environ(CONFIG_SOURCES="env,files")

    records = json.loads(run_cli("explain", "--json", environ=environ).stdout)

    by_name = {r["name"]: r for r in records}
    assert by_name["CONFIG_SOURCES"]["value"] == ["env", "files"]


def test_explain_table_configured_order(layout: Layout) -> None:
    result = run_cli("explain", environ=layout.environ(CONFIG_SOURCES="env,files"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "source order: env,files,default (first wins)"
    )


def test_check_valid(planted: dict[str, str]) -> None:
    result = run_cli("check", environ=planted)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"configuration is valid ({len(SETTINGS)} settings)\n"
    assert result.stderr == ""


def test_check_lists_every_error(layout: Layout) -> None:
    empty = layout.secret_file("redis_host", "\n")
    environ = layout.environ(REDIS_PORT="abc", REDIS_DB="-1", APP_DEBUG="maybe")

    result = run_cli("check", environ=environ)

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "invalid configuration, 4 problems:"
    assert len(lines) == 5
    problems = "\n".join(lines[1:])
    assert "REDIS_PORT from env REDIS_PORT: 'abc' is not an integer" in problems
    assert "REDIS_DB from env REDIS_DB: '-1' is out of range" in problems
    assert "APP_DEBUG from env APP_DEBUG: 'maybe' is not a boolean" in problems
    assert f"REDIS_HOST from file {empty}: {empty} is empty" in problems


def test_explain_invalid_exits_nonzero(layout: Layout) -> None:
    result = run_cli("explain", environ=layout.environ(REDIS_PORT="abc"))

    assert result.returncode == 1
    assert result.stdout == ""
    assert "REDIS_PORT from env REDIS_PORT" in result.stderr


def test_cli_requires_command() -> None:
    result = run_cli(environ={})

    assert result.returncode == 2
    assert "explain" in result.stderr
