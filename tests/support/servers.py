"""Real Redis and OpenBao servers, and a TCP proxy, for tests on loopback.

Every server listens on 127.0.0.1 only, on a port picked by `free_port`, and writes
its stdout and stderr to a log file in the directory it is given. A server that
fails to start raises `ServerStartError` with the tail of that log.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import selectors
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import hvac
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0
LOG_TAIL_LINES = 40


class ServerStartError(RuntimeError):
    """Raised when a test server is missing, exits early or never becomes ready."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when checked."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def free_port_pair() -> int:
    """Return a port P on 127.0.0.1 such that P and P + 1 were both free."""
    for _ in range(100):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind((LOOPBACK, port + 1))
            return port

    message = "no pair of adjacent free ports found on 127.0.0.1"
    raise ServerStartError(message)


def random_secret(nbytes: int = 18) -> str:
    """Return a random URL-safe string for passwords and tokens."""
    return secrets.token_urlsafe(nbytes)


def require_binary(name: str) -> str:
    """Return the path of executable `name` on PATH, or raise ServerStartError."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name!r} not found on PATH; run the tests through scripts/test, "
            "which installs it"
        )
        raise ServerStartError(message)

    return path


def read_log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last `lines` lines of the log file at `path`."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"

    return "\n".join(text.splitlines()[-lines:])


class _ServerProcess:
    """A child process whose stdout and stderr go to one log file."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        if self.running:
            message = f"{self.name} is already running"
            raise ServerStartError(message)

        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=self.log_path.parent,
            )

    def wait_until(self, ready: Callable[[], bool], condition: str) -> None:
        """Poll `ready` until it returns true, or raise with the log tail."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if not self.running:
                self.fail(f"{self.name} exited before {condition}")
            if ready():
                return
            time.sleep(0.05)

        self.stop()
        self.fail(
            f"{self.name} timed out after {START_TIMEOUT_SECONDS}s waiting for "
            f"{condition}"
        )

    def fail(self, reason: str) -> None:
        tail = read_log_tail(self.log_path)
        message = f"{reason}; last lines of {self.log_path}:\n{tail}"
        raise ServerStartError(message)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return

        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisServer:
    """A redis-server on 127.0.0.1 that keeps nothing on disk.

    `password` protects the default user. `users` maps extra ACL usernames to their
    rules (for example ``{"reader": "on >secret ~* +get"}``), which go into an
    aclfile next to the log. `stop` then `start` runs the same configuration on the
    same port again. Users created at runtime with ACL SETUSER are lost on restart.
    """

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        users: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.directory = directory
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self.password = password
        self.users = dict(users or {})
        self.extra_args = list(extra_args)
        directory.mkdir(parents=True, exist_ok=True)
        self._process = _ServerProcess(
            f"redis-server on port {self.port}", directory / "redis.log"
        )

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def url(self) -> str:
        """A redis:// URL for the default user, with the password if there is one."""
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [
            require_binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]
        if self.users:
            argv += ["--aclfile", str(self._write_aclfile())]
        elif self.password is not None:
            argv += ["--requirepass", self.password]

        return argv + self.extra_args

    def _write_aclfile(self) -> Path:
        # Redis 7.0 ignores requirepass when it loads an aclfile, so the default
        # user's password goes into the file as well.
        default_auth = f">{self.password}" if self.password is not None else "nopass"
        lines = [f"user default on {default_auth} ~* &* +@all"]
        lines += [f"user {name} {rules}" for name, rules in self.users.items()]
        path = self.directory / "users.acl"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

        return path

    def start(self) -> None:
        """Start the server and wait until it replies to PING."""
        self._process.spawn(self.argv())
        self._process.wait_until(self._answers_ping, "answering PING")

    def stop(self) -> None:
        """Stop the server. A later `start` listens on the same port again."""
        self._process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(
        self, username: str | None = None, password: str | None = None
    ) -> redis.Redis:
        """Return a client that logs in as `username` with `password`.

        The client does not retry: redis-py 8 retries even a failed AUTH three
        times with backoff by default, which makes every failing check take
        seconds.
        """
        return redis.Redis(
            host=self.host,
            port=self.port,
            username=username,
            password=password,
            socket_timeout=5,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
        )

    def admin_client(self) -> redis.Redis:
        """Return a client logged in as the default user, which may run anything."""
        return self.client(password=self.password)

    def _answers_ping(self) -> bool:
        client = self.admin_client()
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()


UNSEAL_KEY_PATTERN = re.compile(rb"^Unseal Key: (\S+)$", re.MULTILINE)


class BaoServer:
    """An OpenBao dev server (`bao server -dev`) on 127.0.0.1.

    The dev server keeps everything in memory, so `stop` then `start` gives an
    empty server with the same address and root token. `seal` and `unseal` keep
    the state. The dev server also listens on port + 1 for cluster traffic.
    """

    def __init__(
        self,
        directory: Path,
        *,
        root_token: str | None = None,
        port: int | None = None,
    ) -> None:
        self.directory = directory
        self.host = LOOPBACK
        self.port = port if port is not None else free_port_pair()
        self.root_token = root_token if root_token is not None else random_secret()
        self.unseal_key: str | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self._process = _ServerProcess(
            f"bao dev server on port {self.port}", directory / "bao.log"
        )
        self._log_offset = 0

    @property
    def addr(self) -> str:
        """The server's HTTP address, as VAULT_ADDR expects it."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process.running

    def argv(self) -> list[str]:
        return [
            require_binary("bao"),
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address={self.host}:{self.port}",
        ]

    def environment(self) -> dict[str, str]:
        # A clean environment keeps the caller's VAULT_* and BAO_* settings out,
        # and HOME points into the test directory in case bao writes there.
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.directory),
            "LANG": "C.UTF-8",
        }

    def start(self) -> None:
        """Start an empty, unsealed dev server and wait until it is active."""
        self._log_offset = self._log_size()
        self.unseal_key = None
        self._process.spawn(self.argv(), self.environment())
        self._process.wait_until(self._read_unseal_key, "printing its unseal key")
        self._process.wait_until(self.healthy, "an unsealed, active health check")

    def stop(self) -> None:
        self._process.stop()

    def client(self, token: str | None = None) -> hvac.Client:
        """Return an hvac client for `token`, the root token by default."""
        return hvac.Client(
            url=self.addr,
            token=self.root_token if token is None else token,
            timeout=10,
        )

    def healthy(self) -> bool:
        """Return whether /v1/sys/health reports initialized, unsealed and active."""
        try:
            response = requests.get(f"{self.addr}/v1/sys/health", timeout=2)
        except requests.ConnectionError:
            return False

        return response.status_code == 200

    def seal(self) -> None:
        self.client().sys.seal()

    def unseal(self) -> None:
        """Unseal with the key the dev server printed, and wait until it is active."""
        if self.unseal_key is None:
            message = "the dev server has not printed an unseal key"
            raise ServerStartError(message)

        self.client().sys.submit_unseal_key(self.unseal_key)
        self._process.wait_until(self.healthy, "an active health check after unseal")

    def _log_size(self) -> int:
        try:
            return self._process.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _read_unseal_key(self) -> bool:
        with self._process.log_path.open("rb") as log:
            log.seek(self._log_offset)
            match = UNSEAL_KEY_PATTERN.search(log.read())
        if match is None:
            return False

        self.unseal_key = match.group(1).decode()
        return True


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of one server on loopback.

    `disable` closes the listening socket and resets every open connection, so
    clients see "connection refused" for new connections and "connection reset"
    on old ones. `enable` listens on the same port again.
    """

    def __init__(
        self, target_port: int, target_host: str = LOOPBACK, port: int | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self._listener: socket.socket | None = None
        self._disabled = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._listener is not None

    @property
    def addr(self) -> str:
        """An http:// address for the proxy, for HTTP servers such as OpenBao."""
        return f"http://{self.host}:{self.port}"

    def enable(self) -> None:
        """Listen on the proxy's port and forward new connections to the target."""
        if self._listener is not None:
            return

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        self._disabled = threading.Event()
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(listener, self._disabled),
            name=f"tcp-proxy-{self.port}",
            daemon=True,
        )
        self._accept_thread.start()

    def disable(self) -> None:
        """Stop listening, reset every forwarded connection and wait for both."""
        listener, self._listener = self._listener, None
        if listener is None:
            return

        self._disabled.set()
        # Only the accept thread starts forwarding threads, so once it has
        # stopped the list no longer grows.
        if self._accept_thread is not None:
            self._accept_thread.join()
        with self._lock:
            forwarders, self._threads = self._threads, []
        for thread in forwarders:
            thread.join()
        listener.close()

    def _start_thread(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [known for known in self._threads if known.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket, disabled: threading.Event) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not disabled.is_set():
                if not selector.select(timeout=POLL_SECONDS):
                    continue
                try:
                    client, _ = listener.accept()
                except OSError:
                    # A client that resets first makes accept() fail; keep listening.
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    _reset(client)
                    continue
                self._start_thread(_forward, client, upstream, disabled)


POLL_SECONDS = 0.05


def _forward(
    client: socket.socket, upstream: socket.socket, disabled: threading.Event
) -> None:
    """Copy bytes both ways until both sides close, or reset both on `disabled`.

    Only this thread closes the two sockets, because a close from another thread
    would not interrupt a blocked call and would send no reset.
    """
    peers = {client: upstream, upstream: client}
    failed = False
    with selectors.DefaultSelector() as selector:
        for sock in peers:
            sock.setblocking(True)
            selector.register(sock, selectors.EVENT_READ)
        while peers and not disabled.is_set() and not failed:
            for key, _ in selector.select(timeout=POLL_SECONDS):
                source = key.fileobj
                assert isinstance(source, socket.socket)
                try:
                    chunk = source.recv(65536)
                    if chunk:
                        peers[source].sendall(chunk)
                        continue
                    # End of stream: pass the half-close on and stop reading here.
                    selector.unregister(source)
                    peers.pop(source).shutdown(socket.SHUT_WR)
                except OSError:
                    failed = True
                    break

    for sock in (client, upstream):
        if disabled.is_set() or failed:
            _reset(sock)
        else:
            sock.close()


def _reset(connection: socket.socket) -> None:
    """Close `connection` with a TCP reset rather than an orderly shutdown."""
    with contextlib.suppress(OSError):
        linger = struct.pack("ii", 1, 0)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    with contextlib.suppress(OSError):
        connection.close()
