"""Benchmark the hit counter with static Redis credentials and with Vault's.

Starts its own redis-server, OpenBao dev server and gunicorn on loopback and
sends GET / from threads for a fixed time. It does this twice, first with a
static Redis user, then with Vault-issued users that rotate every few seconds,
and prints requests per second, latency percentiles and failed requests for
each run. The load generator runs on the same machine as the service, so the
figures compare the two runs rather than measure the service alone.

Run from the repository root, with bao and redis-server on PATH:
``PATH=$PWD/.venv/bin:$PATH .venv/bin/python scripts/bench.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.leases.stack import (  # noqa: E402
    APP,
    COMMAND,
    COUNTER_KEY,
    MOUNT,
    ROLE,
    Traffic,
    WorkerLog,
    bootstrap,
    run_traffic,
    wait_for,
)
from tests.support.servers import (  # noqa: E402
    LOOPBACK,
    BaoServer,
    RedisServer,
    free_port,
    random_secret,
)

STATIC_USER = "counter"
# The same rules as the Vault role's users: the counter key and its commands.
STATIC_RULES = f"on >{{password}} ~{COUNTER_KEY} +incr +incrby +get +ping"


@dataclass(frozen=True)
class Result:
    """The figures of one run."""

    name: str
    seconds: float
    traffic: Traffic
    rotations: int
    failed_but_counted: int

    @property
    def requests(self) -> int:
        return self.traffic.ok + len(self.traffic.failures)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        """Return the latency at `fraction` (0 to 1), in milliseconds."""
        latencies = sorted(self.traffic.latencies)
        if not latencies:
            return float("nan")
        if len(latencies) == 1:
            return latencies[0] * 1000
        cuts = statistics.quantiles(latencies, n=1000, method="inclusive")
        return cuts[round(fraction * 1000) - 1] * 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="length of each measured run, in seconds (default 20)",
    )
    parser.add_argument(
        "--threads", type=int, default=8, help="client threads (default 8)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="gunicorn workers (default 2)"
    )
    parser.add_argument(
        "--ttl", type=int, default=3, help="Vault lease TTL, in seconds (default 3)"
    )
    parser.add_argument(
        "--max-ttl",
        type=int,
        default=6,
        help="Vault lease max TTL, in seconds. A worker rotates shortly before "
        "it (default 6)",
    )
    parser.add_argument(
        "--revoke-every",
        type=float,
        default=0.0,
        help="seconds between revocations of every lease of the role from "
        "outside during the vault run, as an operator would revoke them. "
        "0 turns this off (default 0)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of load before each measured run (default 2)",
    )
    return parser.parse_args(argv)


def base_env(directory: Path, redis: RedisServer, workers: int) -> dict[str, str]:
    """Return the service's environment shared by both runs."""
    (directory / "secrets").mkdir(parents=True, exist_ok=True)
    (directory / "metrics").mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(directory),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO_ROOT),
        "SECRETS_DIR": str(directory / "secrets"),
        "DOTENV_PATH": str(directory / "absent.env"),
        "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"),
        "REDIS_HOST": redis.host,
        "REDIS_PORT": str(redis.port),
        "COUNTER_KEY": COUNTER_KEY,
        "WEB_CONCURRENCY": str(workers),
        "HTTP_HOST": LOOPBACK,
        "HTTP_PORT": str(free_port()),
    }


def measure(
    name: str,
    directory: Path,
    env: dict[str, str],
    redis: RedisServer,
    args: argparse.Namespace,
    revoke: Callable[[], None] | None = None,
) -> Result:
    """Run gunicorn with `env`, warm it up, then load it for `args.seconds`.

    `revoke`, if given, is called every `args.revoke_every` seconds during the
    measured load.
    """
    log_path = directory / "gunicorn.log"
    url = f"http://{LOOPBACK}:{env['HTTP_PORT']}/"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*COMMAND, APP],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=directory,
        )
    try:
        if not wait_for(lambda: _ready(url), 30.0):
            message = f"{name}: gunicorn did not become ready; see {log_path}"
            raise SystemExit(message)
        run_traffic(url, seconds=args.warmup, threads=args.threads)
        rotations_before = len(WorkerLog(log_path.read_text()).rotated())
        counter_before = _counter(redis)
        started = time.monotonic()
        with _repeating(revoke, args.revoke_every):
            traffic = run_traffic(url, seconds=args.seconds, threads=args.threads)
        elapsed = time.monotonic() - started
        counted = _counter(redis) - counter_before
        rotations = len(WorkerLog(log_path.read_text()).rotated()) - rotations_before
    finally:
        process.terminate()
        process.wait(timeout=30)

    return Result(name, elapsed, traffic, rotations, counted - traffic.ok)


def _counter(redis: RedisServer) -> int:
    return int(redis.admin_client().get(COUNTER_KEY) or 0)


@contextlib.contextmanager
def _repeating(action: Callable[[], None] | None, interval: float) -> Iterator[None]:
    """Call `action` every `interval` seconds in a thread while the block runs."""
    if action is None or interval <= 0:
        yield
        return

    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "readyz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def run_static(directory: Path, args: argparse.Namespace) -> Result:
    password = random_secret()
    rules = STATIC_RULES.format(password=password)
    redis = RedisServer(
        directory / "redis", password=random_secret(), users={STATIC_USER: rules}
    )
    redis.start()
    try:
        env = base_env(directory / "service", redis, args.workers)
        secret = directory / "service" / "secrets" / "redis_password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        env["REDIS_USERNAME"] = STATIC_USER
        return measure("static", directory / "service", env, redis, args)
    finally:
        redis.stop()


def run_vault(directory: Path, args: argparse.Namespace) -> Result:
    redis = RedisServer(directory / "redis", password=random_secret())
    bao = BaoServer(directory / "bao")
    redis.start()
    try:
        bao.start()
        role_id = bootstrap(directory, redis, bao, args.ttl, args.max_ttl, ())
        env = base_env(directory / "service", redis, args.workers)
        env.update(
            VAULT_ADDR=bao.addr,
            VAULT_ROLE_ID=role_id,
            VAULT_SECRET_ID_FILE=str(directory / "secret-id"),
            VAULT_DB_ROLE=ROLE,
        )
        prefix = f"{MOUNT}/creds/{ROLE}"
        return measure(
            "vault",
            directory / "service",
            env,
            redis,
            args,
            revoke=lambda: bao.client().sys.revoke_prefix(prefix),
        )
    finally:
        bao.stop()
        redis.stop()


def print_table(results: list[Result]) -> None:
    header = (
        f"{'run':<8} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'failed':>7} {'counted':>7} {'rotations':>9}"
    )
    print(header)
    for result in results:
        print(
            f"{result.name:<8} {result.requests:>9} {result.rate:>8.1f} "
            f"{result.percentile(0.50):>7.2f} {result.percentile(0.95):>7.2f} "
            f"{result.percentile(0.99):>7.2f} {len(result.traffic.failures):>7} "
            f"{result.failed_but_counted:>7} {result.rotations:>9}"
        )

    static, vault = results
    print(
        f"vault/static: req/s {vault.rate / static.rate:.3f}, "
        f"p50 {vault.percentile(0.5) / static.percentile(0.5):.3f}, "
        f"p99 {vault.percentile(0.99) / static.percentile(0.99):.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hitcounter-bench-") as temp:
        root = Path(temp)
        revocations = (
            f", revoked every {args.revoke_every:g} s" if args.revoke_every else ""
        )
        print(
            f"{args.seconds:g} s per run, {args.threads} client threads, "
            f"{args.workers} workers, Vault TTL {args.ttl} s, max {args.max_ttl} s"
            f"{revocations}",
            flush=True,
        )
        print(
            "counted: failed requests whose INCR ran in Redis all the same",
            flush=True,
        )
        results = [run_static(root / "static", args), run_vault(root / "vault", args)]
    print_table(results)

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
