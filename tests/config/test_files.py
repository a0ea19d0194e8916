"""Secret files: `<SECRETS_DIR>/<name>`, `<NAME>_FILE`, and Kubernetes volumes."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import config
from config.sources.files import MAX_FILE_BYTES
from tests.config.conftest import Layout, VaultData, load, load_error, problem_for

NOBODY_UID = 65534

PEM_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAu1SU1LfVLPHCozMx\n"
    "H2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTK\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("s3cr3t", "s3cr3t"),
        ("s3cr3t\n", "s3cr3t"),
        ("s3cr3t\r\n", "s3cr3t"),
        ("s3cr3t\r", "s3cr3t"),
        ("s3cr3t\n\n", "s3cr3t\n"),
        ("s3cr3t\r\n\r\n", "s3cr3t\r\n"),
        ("s3cr3t\n\r", "s3cr3t\n"),
        ("  s3cr3t-A  \n", "  s3cr3t-A  "),
        ("\ts3cr3t\t", "\ts3cr3t\t"),
        ("pässwörd\n", "pässwörd"),
        (PEM_KEY, PEM_KEY[:-1]),
    ],
    ids=repr,
)
def test_secret_file_strips_one_newline(
    layout: Layout, content: str, expected: str
) -> None:
    layout.secret_file("redis_password", content)

    settings = load(layout.environ())

    assert settings["REDIS_PASSWORD"].reveal() == expected


def test_secret_file_origin_is_path(layout: Layout) -> None:
    path = layout.secret_file("redis_password", "s3cr3t\n")

    record = load(layout.environ()).resolved("REDIS_PASSWORD")

    assert str(record.origin) == f"file {path}"


def test_plain_setting_from_file_is_typed(layout: Layout) -> None:
    layout.secret_file("redis_port", "6380\n")

    assert load(layout.environ())["REDIS_PORT"] == 6380


def test_plain_setting_invalid_in_file(layout: Layout) -> None:
    path = layout.secret_file("redis_port", "abc\n")

    error = load_error(layout.environ())

    message = problem_for(error, "REDIS_PORT")
    assert message.startswith(f"REDIS_PORT from file {path}: 'abc' is not an integer")


@pytest.mark.parametrize("content", ["", "\n", "\r\n", "\r"], ids=repr)
def test_secret_file_empty_is_error(layout: Layout, content: str) -> None:
    path = layout.secret_file("redis_password", content)

    message = problem_for(load_error(layout.environ()), "REDIS_PASSWORD")

    assert f"{path} is empty" in message


def test_secret_file_empty_directory_hint(layout: Layout) -> None:
    path = layout.secrets_dir / "redis_password"
    path.mkdir(parents=True)

    message = problem_for(load_error(layout.environ()), "REDIS_PASSWORD")

    assert f"{path} is an empty directory, not a file" in message
    assert "docker compose creates an empty directory" in message


def test_secret_file_nonempty_directory(layout: Layout) -> None:
    path = layout.secrets_dir / "redis_password"
    path.mkdir(parents=True)
    (path / "inner").write_text("x")

    message = problem_for(load_error(layout.environ()), "REDIS_PASSWORD")

    assert f"{path} is a directory, not a file" in message
    assert "docker compose" not in message


def test_secret_file_invalid_utf8(layout: Layout) -> None:
    path = layout.secret_file("redis_password", b"ok\xff\xfe\n")

    message = problem_for(load_error(layout.environ()), "REDIS_PASSWORD")

    assert f"{path} is not valid UTF-8 (invalid byte at offset 2)" in message


def test_secret_file_over_size_limit(layout: Layout) -> None:
    path = layout.secret_file("redis_password", b"a" * (MAX_FILE_BYTES + 1))

    message = problem_for(load_error(layout.environ()), "REDIS_PASSWORD")

    assert f"{path} is larger than 64 KiB" in message


def test_secret_file_at_size_limit(layout: Layout) -> None:
    layout.secret_file("redis_password", b"a" * MAX_FILE_BYTES)

    settings = load(layout.environ())

    assert len(settings["REDIS_PASSWORD"]) == MAX_FILE_BYTES


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    """A directory outside `tmp_path` that any user may enter.

    pytest makes the parents of `tmp_path` private to their owner, so a process
    running as another user could not reach a file there at all.
    """
    directory = Path(tempfile.mkdtemp(prefix="config-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def load_as_user(uid: int | None, secrets_dir: Path) -> str:
    """Load in a forked child, as `uid` when given, and return the error text.

    A child of this interpreter is used because the virtual environment's
    interpreter may sit where an unprivileged user cannot execute it.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        status = 1
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            try:
                config.load_settings(environ={"SECRETS_DIR": str(secrets_dir)})
                os.write(writer, b"loaded without error")
            except config.SettingsError as error:
                os.write(writer, str(error).encode())
            status = 0
        finally:
            os._exit(status)

    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output


def test_secret_file_unreadable(world_traversable_dir: Path) -> None:
    secrets_dir = world_traversable_dir / "secrets"
    secrets_dir.mkdir(mode=0o755)
    path = secrets_dir / "redis_password"
    path.write_text("s3cr3t\n")
    path.chmod(0o600)

    if os.geteuid() == 0:
        # Root reads any file, so the load runs as user nobody.
        output = load_as_user(NOBODY_UID, secrets_dir)
        uid, mode = NOBODY_UID, "0600"
    else:
        path.chmod(0o000)
        if os.access(path, os.R_OK):
            pytest.skip("this user can read a file of mode 0000")
        output = load_as_user(None, secrets_dir)
        uid, mode = os.getuid(), "0000"

    assert f"permission denied reading {path} (process uid {uid}" in output
    assert f"mode {mode}" in output
    assert "s3cr3t" not in output


def test_secrets_dir_not_searchable(world_traversable_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to load as another user")
    secrets_dir = world_traversable_dir / "secrets"
    secrets_dir.mkdir(mode=0o700)
    (secrets_dir / "redis_password").write_text("s3cr3t\n")

    output = load_as_user(NOBODY_UID, secrets_dir)

    # One problem for the directory, not one per declared setting.
    assert output.startswith("invalid configuration, 1 problem:\n")
    assert f"permission denied entering {secrets_dir} (process uid" in output
    assert "SECRETS_DIR from env SECRETS_DIR" in output


def test_secrets_dir_is_a_file(layout: Layout) -> None:
    layout.secrets_dir.write_text("not a directory\n")

    error = load_error(layout.environ())

    assert len(error.problems) == 1
    assert str(error.problems[0]) == (
        f"SECRETS_DIR from env SECRETS_DIR: {layout.secrets_dir} is not a "
        "directory; set SECRETS_DIR to the directory that contains the secret files"
    )


def test_secrets_dir_problem_keeps_named_files(layout: Layout, tmp_path: Path) -> None:
    layout.secrets_dir.write_text("not a directory\n")
    missing = tmp_path / "no-such-file"

    error = load_error(layout.environ(REDIS_PASSWORD_FILE=str(missing)))

    assert {p.setting for p in error.problems} == {"SECRETS_DIR", "REDIS_PASSWORD"}


def make_kubernetes_volume(secrets_dir: Path) -> None:
    """Lay out `secrets_dir` as the kubelet lays out a secret volume."""
    timestamped = secrets_dir / "..2026_12_04"
    timestamped.mkdir(parents=True)
    (timestamped / "redis_password").write_text("k8s-pass\n")
    (secrets_dir / "..data").symlink_to("..2026_12_04")
    (secrets_dir / "redis_password").symlink_to("..data/redis_password")
    # A key with no link at the top level is not part of the volume's names,
    # and would fail REDIS_PORT if it were read.
    (timestamped / "redis_port").write_text("not-a-port")


def test_kubernetes_volume_layout(layout: Layout) -> None:
    make_kubernetes_volume(layout.secrets_dir)

    settings = load(layout.environ())

    assert settings["REDIS_PASSWORD"].reveal() == "k8s-pass"
    path = layout.secrets_dir / "redis_password"
    assert str(settings.resolved("REDIS_PASSWORD").origin) == f"file {path}"
    assert settings["REDIS_PORT"] == 6379


def test_kubernetes_data_dirs_not_settings(layout: Layout) -> None:
    make_kubernetes_volume(layout.secrets_dir)

    settings = load(layout.environ())

    origins = [str(r.origin) for r in settings.records()]
    origins += [str(c.origin) for r in settings.records() for c in r.shadowed]
    assert not [o for o in origins if "..data" in o or "..2026" in o]


def test_service_account_folder_not_read(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    make_kubernetes_volume(layout.secrets_dir)
    account = layout.secrets_dir / "kubernetes.io" / "serviceaccount"
    account.mkdir(parents=True)
    # Invalid UTF-8, so reading it as a setting would fail the load.
    (account / "token").write_bytes(b"\xff\xfe-service-account-token")
    (account / "namespace").write_bytes(b"\xff")
    caplog.set_level(logging.DEBUG)

    settings = load(layout.environ())

    origins = [str(r.origin) for r in settings.records()]
    assert not [o for o in origins if "kubernetes.io" in o]
    assert "kubernetes.io" not in caplog.text


def test_missing_secrets_dir_no_warning(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    settings = load(layout.environ())

    assert not layout.secrets_dir.exists()
    assert settings.resolved("REDIS_PASSWORD").origin.kind == "default"
    assert caplog.records == []


def test_missing_secrets_dir_logs_debug(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="config")

    load(layout.environ())

    assert f"secrets directory absent path={layout.secrets_dir}" in caplog.text


def test_password_file_variable_read(layout: Layout, tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "password.txt"
    path.parent.mkdir()
    path.write_text("from-named-file\n")

    settings = load(layout.environ(REDIS_PASSWORD_FILE=str(path)))

    assert settings["REDIS_PASSWORD"].reveal() == "from-named-file"
    record = settings.resolved("REDIS_PASSWORD")
    assert str(record.origin) == f"file {path} (from REDIS_PASSWORD_FILE)"


def test_password_file_variable_beats_dir(layout: Layout, tmp_path: Path) -> None:
    dir_file = layout.secret_file("redis_password", "from-dir\n")
    named = tmp_path / "named"
    named.write_text("from-named-file\n")

    record = load(layout.environ(REDIS_PASSWORD_FILE=str(named))).resolved(
        "REDIS_PASSWORD"
    )

    assert record.value.reveal() == "from-named-file"
    assert [str(c.origin) for c in record.shadowed] == [f"file {dir_file}"]


def test_password_file_variable_missing(layout: Layout, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    # A file in the secrets directory must not be used in its place.
    layout.secret_file("redis_password", "from-dir\n")

    error = load_error(layout.environ(REDIS_PASSWORD_FILE=str(missing)))

    message = problem_for(error, "REDIS_PASSWORD")
    assert f"{missing} does not exist" in message
    assert "REDIS_PASSWORD_FILE" in message


def test_password_file_missing_no_fallback(
    layout: Layout, vault: VaultData, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-file"
    # Vault is the one lower source that may hold the password while
    # REDIS_PASSWORD_FILE is set, because env and .env would conflict with it.
    vault.write(redis_password="from-vault")
    environ = layout.environ(**vault.environ(), REDIS_PASSWORD_FILE=str(missing))

    error = load_error(environ)

    assert len(error.problems) == 1
    assert f"{missing} does not exist" in problem_for(error, "REDIS_PASSWORD")


@pytest.mark.parametrize("source", ["env", "dotenv"])
def test_password_file_missing_with_password(
    layout: Layout, tmp_path: Path, source: str
) -> None:
    missing = tmp_path / "no-such-file"
    environ = layout.environ(APP_ENV="development", REDIS_PASSWORD_FILE=str(missing))
    if source == "env":
        environ["REDIS_PASSWORD"] = "from-env"
    else:
        layout.dotenv("REDIS_PASSWORD=from-dotenv\n")

    message = problem_for(load_error(environ), "REDIS_PASSWORD")

    assert "both REDIS_PASSWORD and REDIS_PASSWORD_FILE are set" in message


def test_password_file_external_hint(layout: Layout) -> None:
    missing = layout.secrets_dir / "redis_password"
    layout.secrets_dir.mkdir()

    error = load_error(layout.environ(REDIS_PASSWORD_FILE=str(missing)))

    assert "external: true" in problem_for(error, "REDIS_PASSWORD")


def test_password_and_file_both_set(layout: Layout, tmp_path: Path) -> None:
    named = tmp_path / "named"
    named.write_text("from-named-file\n")
    environ = layout.environ(REDIS_PASSWORD="from-env", REDIS_PASSWORD_FILE=str(named))

    message = problem_for(load_error(environ), "REDIS_PASSWORD")

    assert "both REDIS_PASSWORD and REDIS_PASSWORD_FILE are set" in message
    assert "from-env" not in message


def test_strip_logged_once_per_file(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    path = layout.secret_file("redis_password", "s3cr3t\n")
    layout.secret_file("redis_host", "cache\n")
    caplog.set_level(logging.DEBUG, logger="config")

    # The same file is named twice: by REDIS_PASSWORD_FILE and by its place.
    load(layout.environ(REDIS_PASSWORD_FILE=str(path)))

    stripped = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("stripped trailing newline")
    ]
    assert stripped.count(f"stripped trailing newline path={path}") == 1
    assert len(stripped) == 2
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "strip" in r.msg)


def test_file_without_newline_not_logged(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    layout.secret_file("redis_password", "s3cr3t")
    caplog.set_level(logging.DEBUG, logger="config")

    load(layout.environ())

    assert "stripped trailing newline" not in caplog.text


def test_fifo_secret_file_rejected(layout: Layout) -> None:
    layout.secrets_dir.mkdir(parents=True)
    fifo = layout.secrets_dir / "redis_password"
    os.mkfifo(fifo)

    # Opening a FIFO for reading would block until a writer appears.
    message = problem_for(load_error(layout.environ()), "REDIS_PASSWORD")

    assert message == (
        f"REDIS_PASSWORD from file {fifo}: {fifo} is not a regular file "
        "(a FIFO, device or socket)"
    )


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_device_as_file_rejected(layout: Layout, device: str) -> None:
    error = load_error(layout.environ(REDIS_PASSWORD_FILE=device))

    assert "is not a regular file" in problem_for(error, "REDIS_PASSWORD")


def test_secret_in_file_variable_hidden(layout: Layout) -> None:
    # The password itself put in REDIS_PASSWORD_FILE by mistake.
    canary = "Zq8-canary-not-a-path"

    error = load_error(layout.environ(REDIS_PASSWORD_FILE=canary))

    assert "REDIS_PASSWORD_FILE names a path that does not exist" in str(error)
    assert canary not in str(error)
    assert canary[:6] not in str(error)


def test_missing_absolute_file_path_shown(layout: Layout, tmp_path: Path) -> None:
    # An absolute path in an existing directory is a path, not a password.
    missing = tmp_path / "redis_password"

    error = load_error(layout.environ(REDIS_PASSWORD_FILE=str(missing)))

    assert str(missing) in problem_for(error, "REDIS_PASSWORD")
