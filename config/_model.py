"""Provenance records and the interface every source implements. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._fields import Field
from ._secret import Secret


@dataclass(frozen=True)
class Origin:
    """The place a value came from: a kind of source and a locator within it."""

    kind: str
    locator: str = ""
    # The file a value was read from, so it can be read again (a secret id).
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.locator}" if self.locator else self.kind


DEFAULT = Origin("default")


@dataclass(frozen=True)
class Candidate:
    """A value one source has for one setting, before it is typed.

    `raw` is a `Secret` for secret settings, so a candidate prints masked.
    """

    setting: str
    raw: str | Secret
    origin: Origin

    def text(self) -> str:
        return self.raw.reveal() if isinstance(self.raw, Secret) else self.raw


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one load: the setting, where, and what was expected."""

    setting: str | None
    origin: Origin | str
    reason: str

    def __str__(self) -> str:
        if self.setting is None:
            return f"{self.origin}: {self.reason}"
        return f"{self.setting} from {self.origin}: {self.reason}"


@dataclass
class Findings:
    """The result of reading one source: candidates in its own order, and problems."""

    source: str
    candidates: list[Candidate] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class Source(Protocol):
    """A place settings come from. `collect` reads it once for all fields."""

    name: str

    def collect(self, fields: Sequence[Field[Any]]) -> Findings: ...
