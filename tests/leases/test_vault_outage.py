"""The service while Vault is unreachable or sealed, and after it is back.

Vault is reached through a `TcpProxy`, so that "unreachable" is a refused
connection on loopback, as when Vault's process or host is down.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import requests

from tests.conftest import ProxyFactory
from tests.leases.conftest import GunicornFactory, StackFactory
from tests.leases.stack import Gunicorn, Stack, run_traffic, wait_for

TTL = 4
MAX_TTL = 120
RECOVERY_SECONDS = 5.0


@dataclass(frozen=True)
class Probe:
    """One request to `/` and one to `/readyz`, taken together."""

    elapsed: float
    counter_status: int
    ready_status: int
    ready: dict[str, Any]

    @property
    def credentials(self) -> dict[str, Any]:
        credentials: dict[str, Any] = self.ready.get("credentials", {})
        return credentials


def probe_for(service: Gunicorn, seconds: float) -> list[Probe]:
    """Probe `/` and `/readyz` every 100 ms for `seconds` seconds."""
    probes = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        counter = requests.get(service.url("/"), timeout=5)
        ready = requests.get(service.url("/readyz"), timeout=5)
        probes.append(
            Probe(
                time.monotonic() - started,
                counter.status_code,
                ready.status_code,
                ready.json(),
            )
        )
        time.sleep(0.1)

    return probes


def min_lease_ttl(stack: Stack) -> float:
    """Return the smallest TTL left on the role's leases, as Vault reports it."""
    client = stack.bao.client()
    ttls = []
    for key in stack.vault_leases():
        lease_id = f"{stack.creds_prefix}/{key}"
        ttls.append(client.sys.read_lease(lease_id)["data"]["ttl"])

    return float(min(ttls))


def renewed_recently(stack: Stack) -> bool:
    """Return whether every lease was renewed in the last second or so."""
    return min_lease_ttl(stack) >= TTL - 1


def recovered(service: Gunicorn) -> bool:
    return (
        service.get("/").status_code == 200
        and service.get("/readyz").json()["status"] == "ready"
    )


def every_worker_back(service: Gunicorn, workers: list[int]) -> bool:
    """Return True once each worker has logged that Vault is reachable again.

    A probe of `/` reaches one worker only, and the others may still be
    waiting for their next retry.
    """
    output = service.output()
    back = [
        f"[{pid}] config.leases: vault reachable again" in output for pid in workers
    ]
    return all(back) and recovered(service)


def test_vault_unreachable_serves_until_expiry(
    stack_factory: StackFactory,
    tcp_proxy_factory: ProxyFactory,
    gunicorn_factory: GunicornFactory,
) -> None:
    # One worker, so that `/` and `/readyz` in a probe reach the same lease.
    # With a 6 s TTL the renewal fails 4 s in, leaving 2 s of degraded service.
    ttl = 6
    stack = stack_factory(default_ttl=ttl, max_ttl=MAX_TTL)
    proxy = tcp_proxy_factory(stack.bao.port)
    service = gunicorn_factory(stack, workers=1, vault_addr=proxy.addr)
    workers = service.worker_pids()

    proxy.disable()
    probes = probe_for(service, ttl + 1.5)
    proxy.enable()
    came_back = wait_for(lambda: recovered(service), RECOVERY_SECONDS)

    degraded = [p for p in probes if p.credentials["state"] == "degraded"]
    # Vault deletes the Redis user at its own expiry time, which can come a
    # few milliseconds before the worker's, so the last second is left out.
    serving = [
        p
        for p in probes
        if p.credentials["state"] == "ok" or p.credentials["seconds_left"] >= 2
    ]
    expired = [p for p in probes if p.elapsed > ttl + 0.5]
    assert degraded
    assert all(p.ready_status == 200 for p in degraded)
    assert all(p.ready["status"] == "degraded" for p in degraded)
    assert all(p.credentials["seconds_left"] >= 1 for p in degraded)
    assert {p.credentials["state"] for p in serving} == {"ok", "degraded"}
    assert all(p.counter_status == 200 for p in serving)
    # Vault deletes the Redis user when the lease ends, so `/` fails too.
    assert expired
    assert all(p.counter_status == 503 for p in expired)
    assert all(p.ready_status == 503 for p in expired)
    assert all(p.credentials["state"] == "expired" for p in expired)
    assert came_back
    assert service.process is not None and service.process.poll() is None
    assert service.worker_pids() == workers


def test_vault_sealed_serves_and_recovers(
    stack_factory: StackFactory, gunicorn_factory: GunicornFactory
) -> None:
    stack = stack_factory(default_ttl=TTL, max_ttl=MAX_TTL)
    service = gunicorn_factory(stack)
    master = service.pid
    workers = service.worker_pids()

    assert wait_for(lambda: renewed_recently(stack), TTL)
    left = min_lease_ttl(stack)
    stack.bao.seal()
    sealed_traffic = run_traffic(service.url(), seconds=left - 1, threads=2)
    degraded = wait_for(
        lambda: service.get("/readyz").json()["status"] == "degraded", 1.0, 0.02
    )
    # Sealed past the end of the leases: /readyz fails, and workers keep retrying.
    # A sealed Vault deletes no Redis user, but expired credentials are not used
    # on pooled connections either, so `/` fails too.
    expired = wait_for(lambda: service.get("/readyz").status_code == 503, TTL)
    counter_refused = wait_for(lambda: service.get("/").status_code == 503, TTL)
    stack.bao.unseal()
    came_back = wait_for(lambda: every_worker_back(service, workers), RECOVERY_SECONDS)
    after = run_traffic(service.url(), seconds=1, threads=2)

    retries = [
        line
        for line in service.log().lines("WARNING")
        if "vault unavailable, serving on current credentials" in line
    ]
    assert sealed_traffic.ok > 20
    assert sealed_traffic.failures == []
    assert degraded
    assert expired
    assert counter_refused
    assert came_back
    assert after.failures == []
    assert len(retries) == len(workers)
    assert service.process is not None and service.process.poll() is None
    assert service.pid == master
    assert service.worker_pids() == workers
    assert service.output().count("Booting worker") == len(workers)


def test_worker_replaced_during_outage_keeps_service(
    stack_factory: StackFactory,
    tcp_proxy_factory: ProxyFactory,
    gunicorn_factory: GunicornFactory,
) -> None:
    # Long leases: the healthy worker can serve through the whole outage.
    stack = stack_factory(default_ttl=60, max_ttl=MAX_TTL)
    proxy = tcp_proxy_factory(stack.bao.port)
    service = gunicorn_factory(
        stack, vault_addr=proxy.addr, extra_env={"VAULT_RETRY_SECONDS": "1"}
    )
    master = service.pid
    survivor, victim = service.worker_pids()

    proxy.disable()
    os.kill(victim, signal.SIGKILL)
    # The replacement cannot log in, gives up after 1 s and exits; gunicorn
    # starts another, and the master and the other worker stay up meanwhile.
    time.sleep(4)
    during = [service.get("/").status_code for _ in range(10)]
    master_alive = service.process is not None and service.process.poll() is None
    proxy.enable()
    # Two leases from the first start, then one for a replacement.
    came_back = wait_for(
        lambda: service.output().count("redis credentials issued") >= 3,
        RECOVERY_SECONDS,
    )

    assert master_alive
    assert service.pid == master
    assert survivor in service.worker_pids()
    assert during.count(200) == len(during)
    assert "worker has no Redis credentials, exiting" in service.output()
    assert came_back
    assert len(service.worker_pids()) == 2
