"""Process helpers for tests that run the service as a subprocess: /proc and stop."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def child_pids(pid: int) -> list[int]:
    """Return the ids of the live child processes of `pid`, from /proc."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children += [int(child) for child in text.split()]

    return sorted(children)


def descendant_pids(pid: int) -> list[int]:
    """Return `pid`'s children, their children and so on."""
    found: list[int] = []
    pending = child_pids(pid)
    while pending:
        child = pending.pop()
        found.append(child)
        pending += child_pids(child)

    return sorted(found)


def read_proc(pid: int, name: str) -> bytes:
    """Return `/proc/<pid>/<name>`, or b"" when the process has exited."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def pids_with_cmdline_containing(text: str) -> list[int]:
    """Return every process on the machine whose command line contains `text`."""
    needle = text.encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if needle in cmdline:
            found.append(int(entry.name))

    return found


def stop_gracefully(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Send SIGTERM (a graceful stop for gunicorn) and return the exit code.

    The process is killed if it has not exited after `timeout` seconds.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    return process.returncode
