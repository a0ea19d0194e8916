"""Canary test: no credential reaches gunicorn's output, a response or /proc.

The Redis passwords that Vault issues to the workers are never seen by the
test, but Redis stores each one as a SHA-256 hash (`ACL GETUSER`). The test
hashes every substring of the right length in what it collected and compares.
A password issued to an in-process `DynamicCredentials` checks that this
detector finds a real Vault-issued password when one is present.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from config import load_settings
from config._load import vault_config
from config.leases import DynamicCredentials
from tests.leases.conftest import GunicornFactory
from tests.leases.stack import MOUNT, ROLE, Poller, Stack, run_traffic

TOKEN = re.compile(r"[A-Za-z0-9_\-.~+/=]+")
PATHS = ["/", "/readyz", "/healthz", "/metrics", "/missing"]


def password_hashes(stack: Stack, users: Iterable[str]) -> set[str]:
    """Return the SHA-256 hex digests Redis stores for `users`' passwords."""
    admin = stack.redis.admin_client()
    hashes: set[str] = set()
    for user in users:
        rules = admin.acl_getuser(user)
        if rules is None:
            continue  # Deleted since it was listed.
        passwords = rules["passwords"]
        assert isinstance(passwords, list)
        hashes.update(str(digest) for digest in passwords)

    return hashes


def find_hashed(texts: Iterable[str], hashes: set[str], length: int) -> list[str]:
    """Return each substring of `length` characters whose SHA-256 is in `hashes`."""
    found = []
    for text in texts:
        for token in TOKEN.findall(text):
            for start in range(len(token) - length + 1):
                window = token[start : start + length]
                if hashlib.sha256(window.encode()).hexdigest() in hashes:
                    found.append(window)

    return found


def read_proc(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/{name}", "rb") as file:
        return file.read().replace(b"\0", b"\n").decode(errors="replace")


def in_process_password(stack: Stack) -> tuple[str, set[str]]:
    """Obtain a lease in this process; return its password and Redis's hash."""
    settings = load_settings(
        {
            "VAULT_ADDR": stack.bao.addr,
            "VAULT_ROLE_ID": stack.role_id,
            "VAULT_SECRET_ID_FILE": str(stack.secret_id_file),
            "SECRETS_DIR": str(stack.directory / "no-secrets"),
        }
    )
    dynamic = DynamicCredentials(vault_config(settings.__getitem__), MOUNT, ROLE)
    lease = dynamic.start()
    hashes = password_hashes(stack, [lease.username])
    dynamic.close()

    return lease.password.reveal(), hashes


def test_credentials_absent_from_outputs(
    stack: Stack, gunicorn_factory: GunicornFactory
) -> None:
    canary, canary_hashes = in_process_password(stack)
    service = gunicorn_factory(stack, extra_env={"LOG_LEVEL": "DEBUG"})
    users: set[str] = set()
    hashes: set[str] = set()
    proc_texts: list[str] = []

    def sample() -> None:
        # Read while the users exist: Redis drops a hash with its user.
        for user in stack.service_users():
            found = password_hashes(stack, [user])
            if found:
                users.add(user)
                hashes.update(found)

    with Poller(sample, 0.05) as poller:
        traffic = run_traffic(service.url(), seconds=3, keep_bodies=True)
        stack.revoke_all()
        traffic_after = run_traffic(service.url(), seconds=3, keep_bodies=True)
    bodies = traffic.bodies + traffic_after.bodies
    bodies += [service.get(path).text for path in PATHS]
    for pid in [service.pid, *service.worker_pids()]:
        proc_texts += [read_proc(pid, "cmdline"), read_proc(pid, "environ")]
    code = service.stop()
    output = service.output()
    texts = [output, *bodies, *proc_texts]

    assert poller.errors == []
    assert code == 0
    # Two workers' first users, and two more after the revocation.
    assert len(users) >= 4
    assert len(hashes) >= 4
    assert len(canary_hashes) == 1
    assert find_hashed([f"planted password={canary};"], canary_hashes, len(canary))
    assert find_hashed(texts, hashes, len(canary)) == []
    for secret in (stack.secret_id, stack.bao.root_token):
        assert all(secret not in text for text in texts)
