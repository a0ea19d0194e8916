"""gunicorn exits at startup on a wrong or expired secret id or a denied read."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.leases.conftest import GunicornFactory
from tests.leases.stack import ROLE, Gunicorn, Stack
from tests.support.servers import random_secret

EXIT_TIMEOUT_SECONDS = 30.0
ROLE_CREDS = f"database/creds/{ROLE}"


def wait_for_exit(service: Gunicorn) -> int:
    process = service.spawn()
    try:
        return process.wait(timeout=EXIT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn still running after {EXIT_TIMEOUT_SECONDS}s")


def expiring_secret_id(stack: Stack, ttl: int) -> str:
    reply = stack.bao.client().adapter.post(
        f"/v1/auth/approle/role/{ROLE}/secret-id", json={"ttl": ttl}
    )
    secret_id: str = reply["data"]["secret_id"]
    return secret_id


def assert_clear_login_error(output: str, secret_id: str) -> None:
    assert "approle" in output
    assert "auth/approle/login" in output
    assert secret_id not in output
    assert "Traceback" not in output


def test_wrong_secret_id_stops_startup(
    stack: Stack, gunicorn_factory: GunicornFactory
) -> None:
    wrong = random_secret()
    stack.secret_id_file.write_text(wrong + "\n")
    service = gunicorn_factory(stack, start=False)

    code = wait_for_exit(service)

    output = service.output()
    assert code != 0
    assert_clear_login_error(output, wrong)
    assert "Booting worker" not in output
    assert stack.service_users() == set()


def test_expired_secret_id_stops_startup(
    stack: Stack, gunicorn_factory: GunicornFactory
) -> None:
    expired = expiring_secret_id(stack, ttl=1)
    login = stack.bao.client(token="").auth.approle.login(
        role_id=stack.role_id, secret_id=expired, use_token=False
    )
    stack.secret_id_file.write_text(expired + "\n")
    time.sleep(2)
    service = gunicorn_factory(stack, start=False)

    code = wait_for_exit(service)

    output = service.output()
    assert login["auth"]["client_token"]
    assert code != 0
    assert_clear_login_error(output, expired)
    assert "Booting worker" not in output
    assert stack.service_users() == set()


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        # The master's check through sys/capabilities-self finds no read.
        ([ROLE_CREDS], "policy does not allow reading database/creds/hitcounter"),
        # Without sys/capabilities-self the master skips its check, and the
        # worker's first credentials read is denied instead.
        ([ROLE_CREDS, "sys/capabilities-self"], "permission denied (403)"),
    ],
    ids=["checked-by-master", "denied-in-worker"],
)
def test_policy_without_read_stops_startup(
    stack: Stack,
    gunicorn_factory: GunicornFactory,
    removed: list[str],
    message: str,
) -> None:
    client = stack.bao.client()
    rules = client.sys.read_policy(ROLE)["data"]["rules"]
    denied = rules
    for path in removed:
        denied = denied.replace(f'path "{path}"', f'path "{path}-not"')
    client.sys.create_or_update_policy(ROLE, denied)
    service = gunicorn_factory(stack, start=False)

    code = wait_for_exit(service)

    output = service.output()
    assert denied.count("-not") == len(removed)
    assert code != 0
    assert message in output
    assert stack.secret_id not in output
    assert stack.service_users() == set()
