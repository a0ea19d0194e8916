"""Rotation of Vault-issued Redis credentials under gunicorn, with live traffic.

The tests run real Redis, OpenBao configured by the bootstrap and, except
where a docstring says otherwise, gunicorn. With the default TTLs (3 s, max
6 s) each worker rotates about every four seconds. The token tests set their
own TTLs.
"""

from __future__ import annotations

import gc
import hashlib
import time

from app import create_app
from config import Secret, load_settings
from config.leases import DynamicCredentials
from tests.leases.conftest import GunicornFactory, StackFactory
from tests.leases.stack import (
    COUNTER_KEY,
    ROLE,
    Poller,
    Stack,
    WorkerLog,
    run_traffic,
    wait_for,
)

# The service revokes a replaced lease two seconds after the rotation.
REVOKE_WAIT_SECONDS = 4.0


def test_rotation_new_user_counter_in_order(
    stack: Stack, gunicorn_factory: GunicornFactory
) -> None:
    service = gunicorn_factory(stack)
    users_seen: set[str] = set()

    with Poller(lambda: users_seen.update(stack.service_users()), 0.1) as poller:
        traffic = run_traffic(service.url(), seconds=9, pause=0.005)

    log = service.log()
    usernames = log.usernames()
    replaced = set(log.replaced_usernames())
    assert poller.errors == []
    assert traffic.failures == []
    assert traffic.counts == list(range(1, traffic.ok + 1))
    assert len(log.rotated()) >= 2
    assert len(set(usernames)) == len(usernames)
    assert len(replaced) >= 2
    assert replaced <= users_seen
    assert wait_for(lambda: not replaced & stack.service_users(), REVOKE_WAIT_SECONDS)
    # The revoke is due when Vault's own expiry of the capped lease is, so the
    # user can vanish a moment before the service logs the revoke.
    assert wait_for(lambda: replaced <= revoked_usernames(service.log()), 2.0)


def revoked_usernames(log: WorkerLog) -> set[str | None]:
    return {event.username for event in log.of_kind("revoked")}


def test_concurrent_traffic_across_rotations(
    stack: Stack, gunicorn_factory: GunicornFactory
) -> None:
    service = gunicorn_factory(stack)

    traffic = run_traffic(service.url(), seconds=9, threads=6)

    rotations = service.log().rotated()
    assert traffic.failures == []
    assert traffic.ok > 100
    assert len(rotations) >= 2
    assert len({event.pid for event in rotations}) == 2
    assert stack.counter() == traffic.ok
    assert sorted(traffic.counts) == list(range(1, traffic.ok + 1))


class UserSamples:
    """Snapshots of Redis's ACL users and of the service's connections' users."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.samples: list[tuple[set[str], list[str]]] = []

    def take(self) -> None:
        users = self.stack.service_users()
        connections = self.stack.client_users()
        self.samples.append((users, connections))

    def switched_before_delete(self, old: str, new: str) -> bool:
        """Return whether a sample shows `new` connected while `old` still exists
        and has no connection left."""
        return any(
            old in users and new in connections and old not in connections
            for users, connections in self.samples
        )


def test_capped_renewal_rotates_once(
    stack: Stack, gunicorn_factory: GunicornFactory
) -> None:
    service = gunicorn_factory(stack, workers=1)
    samples = UserSamples(stack)

    with Poller(samples.take) as poller:
        traffic = run_traffic(service.url(), seconds=9, pause=0.005)

    log = service.log()
    capped = log.of_kind("capped")
    assert poller.errors == []
    assert traffic.failures == []
    assert len(capped) >= 2
    for event in capped:
        after = [e for e in log.events if e.index > event.index]
        renewed_after = [
            e for e in after if e.kind == "renewed" and e.lease == event.lease
        ]
        renewals = [
            e
            for e in log.events
            if e.lease == event.lease and e.kind in ("renewed", "capped")
        ]
        rotation = next(e for e in after if e.kind == "rotated")
        old_user = log.username_of(event.lease)
        assert renewed_after == []
        # TTL 3 s, max 6 s: one full renewal at 2 s, the capped one at 4 s.
        assert len(renewals) <= 3
        assert rotation.previous == event.lease
        assert old_user is not None
        assert rotation.username is not None
        assert samples.switched_before_delete(old_user, rotation.username)


def test_pool_reconnects_as_new_user(
    stack: Stack, gunicorn_factory: GunicornFactory
) -> None:
    # Four threads in one worker keep several connections in the pool.
    service = gunicorn_factory(stack, workers=1, args=["--threads", "4"])
    samples = UserSamples(stack)

    with Poller(samples.take) as poller:
        traffic = run_traffic(service.url(), seconds=6, threads=4)

    log = service.log()
    rotation = log.rotated()[0]
    old_user = log.username_of(rotation.previous or "")
    peak = max(len(connections) for _, connections in samples.samples)
    assert poller.errors == []
    assert traffic.failures == []
    assert peak >= 2
    assert old_user is not None
    assert rotation.username is not None
    assert samples.switched_before_delete(old_user, rotation.username)


def live_passwords() -> list[str]:
    """Return the plaintext of every `Secret` the garbage collector can reach."""
    gc.collect()
    return [obj.reveal() for obj in gc.get_objects() if isinstance(obj, Secret)]


def test_rotation_drops_old_password(stack: Stack) -> None:
    """Run the app in this process (the code a worker runs) across a rotation."""
    settings = load_settings(
        {
            "VAULT_ADDR": stack.bao.addr,
            "VAULT_ROLE_ID": stack.role_id,
            "VAULT_SECRET_ID_FILE": str(stack.secret_id_file),
            "VAULT_DB_ROLE": ROLE,
            "REDIS_HOST": stack.redis.host,
            "REDIS_PORT": str(stack.redis.port),
            "COUNTER_KEY": COUNTER_KEY,
            "SECRETS_DIR": str(stack.directory / "no-secrets"),
        }
    )
    app = create_app(settings)
    dynamic: DynamicCredentials = app.extensions["lease"]
    client = app.test_client()
    try:
        first = dynamic.start()
        # Only a digest is kept here, so this test holds no reference to it.
        first_digest = hashlib.sha256(first.password.reveal().encode()).digest()
        first_user = first.username
        del first

        statuses = []
        deadline = time.monotonic() + stack.max_ttl + 4
        while time.monotonic() < deadline and not revoked_after_rotation(dynamic):
            statuses.append(client.get("/").status_code)
            time.sleep(0.01)

        current = dynamic.current()
        digests = [hashlib.sha256(p.encode()).digest() for p in live_passwords()]
        assert dynamic.generation >= 2
        assert dynamic._retired == []
        assert first_user not in stack.service_users()
        assert set(statuses) == {200}
        assert first_digest not in digests
        assert hashlib.sha256(current.password.reveal().encode()).digest() in digests
    finally:
        dynamic.close()


def revoked_after_rotation(dynamic: DynamicCredentials) -> bool:
    return dynamic.generation >= 2 and not dynamic._retired


def test_token_max_ttl_forces_relogin(
    stack_factory: StackFactory, gunicorn_factory: GunicornFactory
) -> None:
    # Leases die with the token that created them, so a token that reaches
    # its max TTL (8 s) before the lease does must be replaced first.
    stack = stack_factory(
        default_ttl=20,
        max_ttl=60,
        bootstrap_args=["--token-ttl=4", "--token-max-ttl=8"],
    )
    service = gunicorn_factory(stack, workers=1)

    traffic = run_traffic(service.url(), seconds=10, pause=0.01)

    log = service.log()
    relogins = [line for line in log.text.splitlines() if "logging in again" in line]
    assert traffic.failures == []
    assert relogins
    assert log.text.count("reason='new vault login'") == len(relogins)
    assert "redis rejected the credentials" not in log.text
    assert "vault unavailable" not in log.text


def test_token_renewal_keeps_credentials(
    stack_factory: StackFactory, gunicorn_factory: GunicornFactory
) -> None:
    # The token (TTL 4 s, max 30 s) is renewed every 2.7 s and is not capped
    # while the test runs, so the lease (TTL 20 s) needs no new login.
    stack = stack_factory(
        default_ttl=20,
        max_ttl=60,
        bootstrap_args=["--token-ttl=4", "--token-max-ttl=30"],
    )
    service = gunicorn_factory(stack, workers=1)

    traffic = run_traffic(service.url(), seconds=6, pause=0.01)

    log = service.log()
    assert traffic.failures == []
    assert "logging in again" not in log.text
    assert log.rotated() == []
