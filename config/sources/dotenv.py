"""A `.env` file for local development, read with python-dotenv.

Values are taken literally: no `${VAR}` expansion, so a password holding `$`
survives as written. The file is parsed, never loaded into `os.environ`.
"""

from __future__ import annotations

import io
import logging
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dotenv.parser import Binding, parse_stream

from .._fields import Field
from .._model import Findings, Origin, Problem
from .env import EnvSource

logger = logging.getLogger(__name__)

MAX_DOTENV_BYTES = 1024 * 1024

# python-dotenv drops ` #...` from an unquoted value as a comment. The match
# starts at the binding's first `=`, so a quoted value containing `=` and ` #`
# is not taken for an unquoted one.
_UNQUOTED_COMMENT = re.compile(r"[^=]*=[ \t]*[^'\"\s][^\r\n]*[ \t]#")


class DotenvSource:
    """Reads one `.env` file; a missing file is normal and yields nothing."""

    name = "dotenv"

    def __init__(self, path: Path) -> None:
        self.path = path
        # Every binding of the last `collect`, for `<NAME>_FILE` look-ups.
        self.values: dict[str, str] = {}

    def collect(self, fields: Sequence[Field[Any]]) -> Findings:
        origin = Origin(".env", str(self.path))
        try:
            text = self._read()
        except _Unusable as error:
            problem = Problem(None, origin, f"{self.path} {error}")
            return Findings(self.name, problems=[problem])
        except FileNotFoundError:
            logger.debug("dotenv file absent path=%s", self.path)
            return Findings(self.name)
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "is not valid UTF-8"
            problem = Problem(None, origin, f"cannot read {self.path}: {reason}")
            return Findings(self.name, problems=[problem])

        values: dict[str, str] = {}
        lines: dict[str, str] = {}
        findings = Findings(self.name)
        secrets = {f.name for f in fields if f.secret}

        for binding in parse_stream(io.StringIO(text)):
            line = _first_line(binding)
            if binding.error:
                # Like python-dotenv, name the line but never show its content.
                reason = f"line {line} could not be parsed"
                findings.problems.append(Problem(None, origin, reason))
                continue
            if binding.key is None or binding.value is None:
                continue
            values[binding.key] = binding.value
            lines[binding.key] = f"{self.path}:{line}"
            if binding.key in secrets and _UNQUOTED_COMMENT.match(
                binding.original.string.lstrip()
            ):
                logger.warning(
                    "dotenv value cut at '#' setting=%s path=%s line=%d: "
                    "quote the value to keep the text after the '#'",
                    binding.key,
                    self.path,
                    line,
                )

        self.values = values
        usable = [f for f in fields if not f.env_only]
        env = EnvSource(values, name=".env", locate=lines).collect(usable)
        findings.candidates = env.candidates

        return findings

    def _read(self) -> str:
        # A FIFO or /dev/zero as DOTENV_PATH would block or never end.
        info = self.path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise _Unusable("is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise _Unusable("is not a regular file")
        if info.st_size > MAX_DOTENV_BYTES:
            raise _Unusable(f"is larger than {MAX_DOTENV_BYTES // 1024} KiB")
        return self.path.read_text(encoding="utf-8")


def _first_line(binding: Binding) -> int:
    """Return the number of the line where the binding's own text starts.

    python-dotenv (1.2) counts a binding from the blank lines before it, so
    its `original.line` points above the key after an empty line.
    """
    original = binding.original.string
    leading = original[: len(original) - len(original.lstrip())]
    return binding.original.line + leading.count("\n")


class _Unusable(Exception):
    """Raised inside this module for a .env path that exists but is not usable."""
