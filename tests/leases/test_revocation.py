"""Leases ended from outside the service, at shutdown and with worker restarts."""

from __future__ import annotations

import re
import threading
import time

from tests.leases.conftest import GunicornFactory, StackFactory
from tests.leases.stack import Stack, Traffic, connected_ports, run_traffic, wait_for

# Long TTLs, so that every rotation in these tests comes from a revocation.
LONG_TTL = 60
LONG_MAX_TTL = 120
REVOCATIONS = 3
# What the store reports when Redis closed the connection after the command
# was sent (redis-py 8 wording).
AMBIGUOUS_FAILURE = re.compile(
    r"error=ConnectionError: (Connection closed by server|"
    r"Error while reading from .*Connection reset by peer)"
)


def test_external_revoke_during_traffic(
    stack_factory: StackFactory, gunicorn_factory: GunicornFactory
) -> None:
    """Revoke both workers' leases from outside, three times, under load.

    A request that arrives after a revocation gets WRONGPASS, new credentials
    and one retry, so it succeeds. A command already sent when Redis dropped
    the connection may or may not have run, so the store does not send it
    again and the request fails with 503. Measured with this setup (2 workers,
    4 client threads, a revocation about every 1.3 s) on a shared 2-core
    machine: 20 of 45,925 requests failed this way over 160 revoked worker
    leases, and 7 of those 20 had counted. This test allows those failures
    and no other kind.
    """
    stack = stack_factory(default_ttl=LONG_TTL, max_ttl=LONG_MAX_TTL)
    service = gunicorn_factory(stack)
    result: list[Traffic] = []
    sender = threading.Thread(
        target=lambda: result.append(
            run_traffic(service.url(), seconds=2 + 1.5 * REVOCATIONS, threads=4)
        )
    )
    rounds: list[tuple[set[str], bool, bool]] = []

    sender.start()
    for _ in range(REVOCATIONS):
        time.sleep(1.5)
        rounds.append(revoke_and_watch(stack))
    sender.join()

    traffic = result[0]
    in_flight = [
        line
        for line in service.log().lines("WARNING")
        if "counter update failed" in line
    ]
    assert all(len(users) == 2 for users, _, _ in rounds)
    assert all(dropped for _, dropped, _ in rounds)
    assert all(replaced for _, _, replaced in rounds)
    assert traffic.ok > 100
    assert len(service.log().rotated()) == 2 * REVOCATIONS
    # At most one request in flight per worker (sync workers) per revocation.
    assert len(traffic.failures) <= 2 * REVOCATIONS
    # The view logs at most five failures per worker in ten seconds.
    assert min(len(traffic.failures), 5) <= len(in_flight) <= len(traffic.failures)
    assert all(AMBIGUOUS_FAILURE.search(line) for line in in_flight), in_flight
    # No success is lost and none is counted twice. A failed one may have run.
    assert traffic.ok <= stack.counter() <= traffic.ok + len(traffic.failures)


def revoke_and_watch(stack: Stack) -> tuple[set[str], bool, bool]:
    """Revoke every lease of the role and watch Redis.

    Returns the users revoked, whether Redis closed all their connections
    within a second, and whether two new users appeared within three.
    """
    users = stack.service_users()
    stack.revoke_all()
    dropped = wait_for(lambda: not users & set(stack.client_users()), 1.0)
    replaced = wait_for(lambda: len(stack.service_users() - users) == 2, 3.0)

    return users, dropped, replaced


def test_second_revoke_within_a_second(
    stack_factory: StackFactory, gunicorn_factory: GunicornFactory
) -> None:
    stack = stack_factory(default_ttl=LONG_TTL, max_ttl=LONG_MAX_TTL)
    service = gunicorn_factory(stack)
    result: list[Traffic] = []
    sender = threading.Thread(
        target=lambda: result.append(run_traffic(service.url(), seconds=3, threads=4))
    )

    sender.start()
    time.sleep(1.0)
    first = revoke_and_watch(stack)
    time.sleep(0.1)
    second = revoke_and_watch(stack)
    sender.join()

    traffic = result[0]
    assert first[2]
    assert second[2]
    assert traffic.ok > 100
    # Only commands in flight at each revocation may fail.
    assert len(traffic.failures) <= 2 * 2


def test_sigterm_revokes_every_lease(
    stack: Stack, gunicorn_factory: GunicornFactory
) -> None:
    service = gunicorn_factory(stack)
    traffic = run_traffic(service.url(), seconds=1, threads=2)
    # Stop inside a rotation's grace period, so that a retired lease is held too.
    assert wait_for(lambda: len(service.log().rotated()) >= 1, 8.0)
    users_before = stack.service_users()
    leases_before = stack.vault_leases()

    code = service.stop()

    assert traffic.failures == []
    assert code == 0
    assert len(users_before) >= 3
    assert len(leases_before) >= 3
    assert stack.redis.admin_client().acl_users() == ["default"]
    assert stack.vault_leases() == []
    # Only the root token is left: each worker's AppRole token was revoked too.
    accessors = stack.bao.client().adapter.list("/v1/auth/token/accessors")
    assert len(accessors["data"]["keys"]) == 1


def test_preload_workers_own_leases(
    stack_factory: StackFactory, gunicorn_factory: GunicornFactory
) -> None:
    # Renewals every two seconds and no rotation while the test runs.
    stack = stack_factory(default_ttl=3, max_ttl=LONG_MAX_TTL)
    service = gunicorn_factory(
        stack, args=["--preload", "--max-requests", "25", "--max-requests-jitter", "0"]
    )
    first_workers = service.worker_pids()

    assert wait_for(lambda: len(service.log().of_kind("renewed")) >= 2, 5.0)
    log = service.log()
    owners = {event.lease: event.pid for event in log.issued()}
    assert sorted(owners.values()) == first_workers
    assert service.pid not in first_workers
    assert len({event.username for event in log.issued()}) == 2
    assert {event.pid for event in log.of_kind("renewed")} == set(first_workers)
    for event in log.of_kind("renewed"):
        assert owners[event.lease] == event.pid
    assert len(stack.service_users()) == 2
    assert len(stack.vault_leases()) == 2
    ports = {stack.redis.port, stack.bao.port}
    assert not ports & set(connected_ports(service.pid))
    assert any(stack.redis.port in connected_ports(pid) for pid in first_workers)

    # 60 requests take each worker past 25, so both are replaced.
    traffic = run_traffic(service.url(), seconds=10, max_requests=60)
    assert wait_for(lambda: not set(first_workers) & set(service.worker_pids()), 10.0)
    assert wait_for(lambda: len(service.log().issued()) == 4, 10.0)

    log = service.log()
    old_users = {event.username for event in log.issued() if event.pid in first_workers}
    new_users = {event.username for event in log.issued()} - old_users
    assert traffic.failures == []
    assert len(new_users) == 2
    assert wait_for(lambda: stack.service_users() == new_users, 3.0)
    assert len(stack.vault_leases()) == 2
    assert {event.pid for event in log.of_kind("revoked")} == set(first_workers)
    assert not ports & set(connected_ports(service.pid))


def test_redis_restart_recovers_without_restart(
    stack_factory: StackFactory, gunicorn_factory: GunicornFactory
) -> None:
    stack = stack_factory(default_ttl=LONG_TTL, max_ttl=LONG_MAX_TTL)
    service = gunicorn_factory(stack)
    master = service.pid
    before = run_traffic(service.url(), seconds=1, threads=2)

    # Redis keeps nothing on disk, so the users Vault created are gone too.
    stack.redis.restart()
    came_back = wait_for(
        lambda: all(service.get("/").status_code == 200 for _ in range(6)), 10.0
    )
    after = run_traffic(service.url(), seconds=1, threads=2)

    assert before.failures == []
    assert came_back
    assert after.failures == []
    assert service.pid == master
    # Each worker replaced the user that Redis no longer has.
    assert len(service.log().rotated()) >= 2
    assert len(stack.service_users()) == 2
