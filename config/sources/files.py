"""Secret files: a directory of one file per setting, and `<NAME>_FILE` paths.

Docker mounts secrets at `/run/secrets/<name>`; Kubernetes secret volumes hold
the same names as symlinks into a `..data` folder. A setting is read from the
file named by its lower-cased name, so only declared names are ever opened and
neither `..data` nor a service-account folder is read as a setting.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._fields import Field
from .._model import Candidate, Findings, Origin, Problem
from .._secret import Secret

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 64 * 1024
COMPOSE_HINT = (
    "docker compose creates an empty directory in place of a missing host file, "
    "so check that the file on the host exists"
)
EXTERNAL_HINT = (
    "plain `docker compose` does not mount secrets declared `external: true`; "
    "only Swarm does, so deploy with `docker stack deploy` or point the secret "
    "at a `file:`"
)


class FileSource:
    """Reads `<NAME>_FILE` paths first, then `<secrets_dir>/<name>`."""

    name = "files"

    def __init__(
        self,
        directory: Path,
        variables: Mapping[str, str],
        *,
        directory_origin: Origin | str = "SECRETS_DIR",
    ) -> None:
        self.directory = directory
        self.variables = variables
        # Where the directory's path came from, for problems with the directory.
        self.directory_origin = directory_origin
        self._stripped_logged: set[str] = set()

    def collect(self, fields: Sequence[Field[Any]]) -> Findings:
        findings = Findings(self.name)
        read_directory = self._directory_usable(findings)

        for fld in fields:
            if fld.env_only:
                continue
            self._collect_one(fld, findings, read_directory=read_directory)

        return findings

    def _directory_usable(self, findings: Findings) -> bool:
        """Return whether to read the directory, and report it once if unusable.

        Without this check, a path that is a file or cannot be entered would
        give one problem per declared setting.
        """
        try:
            info = self.directory.stat()
        except FileNotFoundError:
            logger.debug("secrets directory absent path=%s", self.directory)
            return False
        except OSError as error:
            reason = f"cannot read {self.directory}: {error.strerror}"
            self._directory_problem(findings, reason)
            return False

        if not stat.S_ISDIR(info.st_mode):
            reason = (
                f"{self.directory} is not a directory; set SECRETS_DIR to the "
                "directory that contains the secret files"
            )
            self._directory_problem(findings, reason)
            return False
        if not os.access(self.directory, os.X_OK):
            reason = (
                f"permission denied entering {self.directory} (process uid "
                f"{os.getuid()}); make the directory searchable by the "
                "service's user"
            )
            self._directory_problem(findings, reason)
            return False

        return True

    def _directory_problem(self, findings: Findings, reason: str) -> None:
        problem = Problem("SECRETS_DIR", self.directory_origin, reason)
        findings.problems.append(problem)

    def _collect_one(
        self, fld: Field[Any], findings: Findings, *, read_directory: bool
    ) -> None:
        variable = f"{fld.name}_FILE"
        named = self.variables.get(variable)
        if named:
            if self.variables.get(fld.name):
                reason = f"both {fld.name} and {variable} are set; set only one"
                findings.problems.append(Problem(fld.name, f"env {variable}", reason))
                return
            if fld.secret and not _plausible_path(named) and not Path(named).exists():
                # Likely the secret itself, set in the _FILE variable by mistake.
                reason = (
                    f"{variable} names a path that does not exist; it is not shown "
                    "because it may be the secret itself: set it to the path of "
                    "a file that holds the value"
                )
                findings.problems.append(Problem(fld.name, f"env {variable}", reason))
                return
            origin = Origin("file", f"{named} (from {variable})", path=named)
            self._read(fld, Path(named), origin, findings, explicit=True)

        if not read_directory:
            return
        path = self.directory / fld.key
        origin = Origin("file", str(path), path=str(path))
        self._read(fld, path, origin, findings, explicit=False)

    def _read(
        self,
        fld: Field[Any],
        path: Path,
        origin: Origin,
        findings: Findings,
        *,
        explicit: bool,
    ) -> None:
        try:
            text = self._read_text(path)
        except FileNotFoundError:
            if explicit:
                reason = f"{path} does not exist"
                if self._looks_like_secret_mount(path):
                    reason = f"{reason}; {EXTERNAL_HINT}"
                findings.problems.append(Problem(fld.name, origin, reason))
            return
        except _Unreadable as error:
            findings.problems.append(Problem(fld.name, origin, str(error)))
            return

        raw: str | Secret = Secret(text) if fld.secret else text
        findings.candidates.append(Candidate(fld.name, raw, origin))

    def _looks_like_secret_mount(self, path: Path) -> bool:
        parent = path.parent
        return parent in (self.directory, Path("/run/secrets"))

    def _read_text(self, path: Path) -> str:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise
        except PermissionError:
            raise _Unreadable(_permission_reason(path)) from None
        except OSError as error:
            raise _Unreadable(f"cannot read {path}: {error.strerror}") from None
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
            # A FIFO would block startup forever and /dev/zero never ends.
            kind = "a FIFO, device or socket"
            raise _Unreadable(f"{path} is not a regular file ({kind})")

        try:
            with path.open("rb") as handle:
                info = os.fstat(handle.fileno())
                if stat.S_ISDIR(info.st_mode):
                    raise IsADirectoryError(errno.EISDIR, "is a directory")
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise
        except IsADirectoryError:
            raise _Unreadable(self._directory_reason(path)) from None
        except PermissionError:
            raise _Unreadable(_permission_reason(path)) from None
        except OSError as error:
            raise _Unreadable(f"cannot read {path}: {error.strerror}") from None

        if len(data) > MAX_FILE_BYTES:
            limit = MAX_FILE_BYTES // 1024
            raise _Unreadable(f"{path} is larger than {limit} KiB")

        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            reason = f"{path} is not valid UTF-8 (invalid byte at offset {error.start})"
            raise _Unreadable(reason) from None

        stripped = _strip_one_newline(text)
        if stripped != text and str(path) not in self._stripped_logged:
            self._stripped_logged.add(str(path))
            logger.debug("stripped trailing newline path=%s", path)
        if stripped == "":
            raise _Unreadable(f"{path} is empty")

        return stripped

    def _directory_reason(self, path: Path) -> str:
        try:
            empty = not any(path.iterdir())
        except OSError:
            empty = False
        if empty:
            return f"{path} is an empty directory, not a file; {COMPOSE_HINT}"
        return f"{path} is a directory, not a file"


class _Unreadable(Exception):
    """Raised inside this module for a file that exists but cannot be used."""


def _plausible_path(text: str) -> bool:
    """Return True for an absolute path whose directory exists."""
    path = Path(text)
    return path.is_absolute() and path.parent.is_dir()


def _strip_one_newline(text: str) -> str:
    # `echo` and most editors end a file with one newline that is not part of
    # the secret; any other byte, spaces included, is kept.
    for ending in ("\r\n", "\n", "\r"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _permission_reason(path: Path) -> str:
    try:
        info = path.stat()
    except OSError:
        return f"permission denied reading {path} (process uid {os.getuid()})"
    mode = stat.S_IMODE(info.st_mode)
    return (
        f"permission denied reading {path} (process uid {os.getuid()}, "
        f"file owner uid {info.st_uid} gid {info.st_gid}, mode {mode:04o}); "
        "make the file readable by the service's user, e.g. mode 0444 or the "
        "secret's uid/gid/mode options"
    )
