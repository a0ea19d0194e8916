"""Real Redis, OpenBao and gunicorn for the lease tests, and the tools to watch them.

`start_stack` starts a redis-server whose default user has an admin password
and an OpenBao dev server, then configures OpenBao with the real bootstrap
(`python -m app.vault_bootstrap`). `Gunicorn` runs the production command with
Vault-issued credentials, `run_traffic` sends a bounded number of requests, and
`WorkerLog` reads the service's log lines by worker pid.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import hvac.exceptions
import requests

from tests.support.processes import child_pids, stop_gracefully
from tests.support.servers import (
    LOOPBACK,
    BaoServer,
    RedisServer,
    free_port,
    random_secret,
    read_log_tail,
)

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
COMMAND = [GUNICORN, "-c", "python:app.gunicorn_conf"]
APP = "app:create_app()"
REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 20.0
REQUEST_TIMEOUT_SECONDS = 10.0
MOUNT = "database"
ROLE = "hitcounter"
COUNTER_KEY = "hits"


class StackError(RuntimeError):
    """Raised when the bootstrap fails or gunicorn does not become ready."""


@dataclass
class Stack:
    """A configured Redis and OpenBao pair, and what the service needs to log in."""

    redis: RedisServer
    bao: BaoServer
    role_id: str
    secret_id_file: Path
    directory: Path
    default_ttl: int
    max_ttl: int

    @property
    def secret_id(self) -> str:
        return self.secret_id_file.read_text().strip()

    @property
    def creds_prefix(self) -> str:
        return f"{MOUNT}/creds/{ROLE}"

    def service_users(self) -> set[str]:
        """Return the Redis ACL users other than `default`, the admin."""
        users = self.redis.admin_client().acl_users()
        return {str(user) for user in users if user != "default"}

    def client_users(self) -> list[str]:
        """Return the `user=` field of every Redis connection not made as `default`."""
        clients = self.redis.admin_client().client_list()
        return [c["user"] for c in clients if c["user"] != "default"]

    def vault_leases(self) -> list[str]:
        """Return the lease ids under `<mount>/creds/<role>/` (sys/leases/lookup)."""
        try:
            reply = self.bao.client().sys.list_leases(f"{self.creds_prefix}/")
        except hvac.exceptions.InvalidPath:
            return []  # Vault returns 404 when no lease is left.

        keys: list[str] = reply["data"]["keys"]
        return keys

    def revoke_all(self) -> None:
        """Revoke every lease of the role with the root token, as an operator would."""
        self.bao.client().sys.revoke_prefix(self.creds_prefix)

    def counter(self) -> int:
        value = self.redis.admin_client().get(COUNTER_KEY)
        return int(value or 0)


def start_stack(
    directory: Path,
    *,
    default_ttl: int,
    max_ttl: int,
    bootstrap_args: Sequence[str] = (),
) -> Stack:
    """Start Redis and OpenBao under `directory` and run the real bootstrap.

    The caller stops `stack.redis` and `stack.bao`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    admin_password = random_secret()
    redis = RedisServer(directory / "redis", password=admin_password)
    bao = BaoServer(directory / "bao")
    redis.start()
    try:
        bao.start()
        role_id = bootstrap(directory, redis, bao, default_ttl, max_ttl, bootstrap_args)
    except BaseException:
        redis.stop()
        bao.stop()
        raise

    return Stack(
        redis,
        bao,
        role_id,
        directory / "secret-id",
        directory,
        default_ttl,
        max_ttl,
    )


def bootstrap(
    directory: Path,
    redis: RedisServer,
    bao: BaoServer,
    default_ttl: int,
    max_ttl: int,
    extra_args: Sequence[str],
) -> str:
    """Run `python -m app.vault_bootstrap` and return the role id it prints."""
    admin_file = directory / "redis-admin-password"
    admin_file.write_text(f"{redis.password}\n")
    admin_file.chmod(0o600)
    token_file = directory / "root-token"
    token_file.write_text(f"{bao.root_token}\n")
    token_file.chmod(0o600)
    argv = [
        sys.executable,
        "-m",
        "app.vault_bootstrap",
        f"--vault-addr={bao.addr}",
        f"--vault-token-file={token_file}",
        f"--redis-host={redis.host}",
        f"--redis-port={redis.port}",
        f"--redis-admin-password-file={admin_file}",
        f"--role={ROLE}",
        f"--counter-key={COUNTER_KEY}",
        f"--default-ttl={default_ttl}",
        f"--max-ttl={max_ttl}",
        f"--secret-id-file={directory / 'secret-id'}",
        *extra_args,
    ]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(directory)}
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        message = f"bootstrap exited {result.returncode}:\n{result.stderr[-2000:]}"
        raise StackError(message)

    return result.stdout.strip().splitlines()[-1]


class Gunicorn:
    """The service under gunicorn, as a child process with a clean environment.

    The environment contains only PATH, HOME, LANG, the Vault and Redis
    settings of `stack` and `extra_env`. stdout and stderr go to one log file.
    """

    def __init__(
        self,
        directory: Path,
        stack: Stack,
        *,
        workers: int = 2,
        args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        vault_addr: str | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "secrets").mkdir(exist_ok=True)
        (directory / "metrics").mkdir(exist_ok=True)
        self.directory = directory
        self.workers = workers
        self.port = free_port()
        self.log_path = directory / "gunicorn.log"
        self.argv = [*COMMAND, *args, APP]
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(directory),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO_ROOT),
            "SECRETS_DIR": str(directory / "secrets"),
            "DOTENV_PATH": str(directory / "absent.env"),
            "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"),
            "VAULT_ADDR": vault_addr or stack.bao.addr,
            "VAULT_ROLE_ID": stack.role_id,
            "VAULT_SECRET_ID_FILE": str(stack.secret_id_file),
            "VAULT_DB_ROLE": ROLE,
            "REDIS_HOST": stack.redis.host,
            "REDIS_PORT": str(stack.redis.port),
            "COUNTER_KEY": COUNTER_KEY,
            "WEB_CONCURRENCY": str(workers),
            "HTTP_HOST": LOOPBACK,
            "HTTP_PORT": str(self.port),
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "gunicorn was not started"
        return self.process.pid

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start gunicorn without waiting for it."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.directory,
            )

        return self.process

    def start(self) -> None:
        """Start gunicorn and wait until every worker has a Redis lease."""
        self.spawn()
        self.wait_until(
            lambda: len(self.log().issued()) >= self.workers,
            f"{self.workers} workers holding credentials",
        )
        self.wait_until(self._ready, "/readyz returning 200")

    def wait_until(
        self,
        ready: Callable[[], bool],
        condition: str,
        timeout: float = START_TIMEOUT_SECONDS,
    ) -> None:
        """Poll `ready` every 50 ms; raise with the log tail if gunicorn exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                self._fail(f"gunicorn exited before {condition}")
            if ready():
                return
            time.sleep(0.05)

        self._fail(f"timed out after {timeout:g}s waiting for {condition}")

    def _fail(self, reason: str) -> None:
        message = f"{reason}; last lines of {self.log_path}:\n"
        raise StackError(message + read_log_tail(self.log_path, 60))

    def _ready(self) -> bool:
        try:
            return self.get("/readyz").status_code == 200
        except requests.ConnectionError:
            return False

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url(path), timeout=REQUEST_TIMEOUT_SECONDS)

    def worker_pids(self) -> list[int]:
        return child_pids(self.pid)

    def stop(self) -> int | None:
        """Send SIGTERM, gunicorn's graceful stop, and return the exit code."""
        if self.process is None:
            return None
        return stop_gracefully(self.process, STOP_TIMEOUT_SECONDS)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log(self) -> WorkerLog:
        return WorkerLog(self.output())


# The service's log format is "<date> <time> LEVEL [pid] logger: message".
LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) \[(?P<pid>\d+)\] (?P<msg>.*)$")
ISSUED = re.compile(r"redis credentials issued lease=(\S+) username=(\S+)")
ROTATED = re.compile(
    r"redis credentials rotated .* lease=(\S+) username=(\S+) previous=(\S+)"
)
RENEWED = re.compile(r"lease renewed lease=(\S+)")
CAPPED = re.compile(r"lease renewal capped by max ttl lease=(\S+)")
REVOKED = re.compile(r"lease revoked lease=(\S+) username=(\S+)")


@dataclass(frozen=True)
class LogEvent:
    """One lease event from the service's log, in the order it was written."""

    index: int
    pid: int
    kind: str
    lease: str
    username: str | None = None
    previous: str | None = None


@dataclass
class WorkerLog:
    """The lease events in one gunicorn log, parsed from its lines."""

    text: str
    events: list[LogEvent] = field(init=False)

    def __post_init__(self) -> None:
        patterns = {
            "issued": ISSUED,
            "rotated": ROTATED,
            "renewed": RENEWED,
            "capped": CAPPED,
            "revoked": REVOKED,
        }
        self.events = []
        for index, line in enumerate(self.text.splitlines()):
            match = LOG_LINE.match(line)
            if match is None:
                continue
            for kind, pattern in patterns.items():
                found = pattern.search(match["msg"])
                if found is None:
                    continue
                extra = [*found.groups()[1:], None, None]
                event = LogEvent(
                    index, int(match["pid"]), kind, found[1], extra[0], extra[1]
                )
                self.events.append(event)

    def of_kind(self, kind: str) -> list[LogEvent]:
        return [event for event in self.events if event.kind == kind]

    def issued(self) -> list[LogEvent]:
        return self.of_kind("issued")

    def rotated(self) -> list[LogEvent]:
        return self.of_kind("rotated")

    def usernames(self) -> list[str]:
        """Return every username issued or rotated to, in log order."""
        return [
            event.username
            for event in self.events
            if event.kind in ("issued", "rotated") and event.username
        ]

    def username_of(self, lease: str) -> str | None:
        """Return the username issued with `lease` (a shortened lease id)."""
        for event in self.events:
            if event.kind in ("issued", "rotated") and event.lease == lease:
                return event.username

        return None

    def replaced_usernames(self) -> list[str]:
        """Return the usernames that a rotation replaced, in log order."""
        replaced = []
        for event in self.rotated():
            username = self.username_of(event.previous or "")
            if username is not None:
                replaced.append(username)

        return replaced

    def current_usernames(self) -> dict[int, str]:
        """Return each worker pid's latest username."""
        latest: dict[int, str] = {}
        for event in self.events:
            if event.kind in ("issued", "rotated") and event.username:
                latest[event.pid] = event.username

        return latest

    def lines(self, level: str) -> list[str]:
        found = []
        for line in self.text.splitlines():
            match = LOG_LINE.match(line)
            if match is not None and match["level"] == level:
                found.append(line)

        return found


@dataclass
class Traffic:
    """What a run of requests to `/` saw."""

    counts: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.counts)


COUNT_BODY = re.compile(r"^Hello World! (\d+) times\.$")


def run_traffic(
    url: str,
    *,
    seconds: float,
    threads: int = 1,
    max_requests: int = 100_000,
    pause: float = 0.0,
    keep_bodies: bool = False,
) -> Traffic:
    """Send GET requests to `url` from `threads` threads for `seconds` seconds.

    Stops earlier after `max_requests` in total. Each thread uses its own
    keep-alive session. A failure is any status other than 200 or any request
    error, recorded with its reason.
    """
    traffic = Traffic()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    sent = 0

    def worker() -> None:
        nonlocal sent
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    if sent >= max_requests:
                        return
                    sent += 1
                _send_one(session, url, traffic, lock, keep_bodies)
                if pause:
                    time.sleep(pause)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()

    return traffic


def _send_one(
    session: requests.Session,
    url: str,
    traffic: Traffic,
    lock: threading.Lock,
    keep_bodies: bool,
) -> None:
    started = time.perf_counter()
    try:
        response = session.get(url, timeout=REQUEST_TIMEOUT_SECONDS)
    except requests.RequestException as error:
        with lock:
            traffic.failures.append(f"{type(error).__name__}: {error}")
        return

    elapsed = time.perf_counter() - started
    match = COUNT_BODY.match(response.text.strip())
    with lock:
        traffic.latencies.append(elapsed)
        if keep_bodies:
            traffic.bodies.append(response.text)
        if response.status_code == 200 and match is not None:
            traffic.counts.append(int(match.group(1)))
        else:
            traffic.failures.append(f"{response.status_code}: {response.text[:80]}")


class Poller:
    """Calls `sample` every `interval` seconds in a thread, until stopped."""

    def __init__(self, sample: Callable[[], None], interval: float = 0.05) -> None:
        self._sample = sample
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception as error:  # Reported by the test, never swallowed.
                self.errors.append(f"{type(error).__name__}: {error}")
            self._stop.wait(self._interval)


def wait_for(
    condition: Callable[[], bool], timeout: float, interval: float = 0.05
) -> bool:
    """Poll `condition` until it is true or `timeout` seconds pass; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)

    return condition()


def connected_ports(pid: int) -> list[int]:
    """Return the remote ports of `pid`'s established TCP connections over IPv4.

    Matches the socket inodes in /proc/<pid>/fd against /proc/<pid>/net/tcp.
    """
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])

    ports = []
    established = "01"
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == established and inode in inodes:
            ports.append(int(remote.rsplit(":", 1)[1], 16))

    return ports
