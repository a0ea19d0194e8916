"""Precedence: the one place where the order of sources is applied. No I/O."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar, overload

from ._fields import Field, HiddenValueError
from ._model import DEFAULT, Candidate, Findings, Origin, Problem
from ._secret import Secret

T = TypeVar("T")


@dataclass(frozen=True)
class Resolved:
    """A typed value with the source that won and the candidates it shadowed."""

    name: str
    value: Any
    secret: bool
    origin: Origin
    shadowed: tuple[Candidate, ...] = ()
    note: str = ""


class Settings(Mapping[str, Any]):
    """An immutable mapping from setting name to typed value, with provenance."""

    __slots__ = ("_resolved",)
    _resolved: Mapping[str, Resolved]

    def __init__(self, resolved: Mapping[str, Resolved]) -> None:
        object.__setattr__(self, "_resolved", MappingProxyType(dict(resolved)))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Settings are immutable")

    @overload
    def __getitem__(self, key: Field[T]) -> T: ...
    @overload
    def __getitem__(self, key: str) -> Any: ...
    def __getitem__(self, key: Field[Any] | str) -> Any:
        name = key.name if isinstance(key, Field) else key
        return self._resolved[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved)

    def __len__(self) -> int:
        return len(self._resolved)

    def resolved(self, key: Field[Any] | str) -> Resolved:
        """Return the value of one setting with its provenance."""
        name = key.name if isinstance(key, Field) else key
        return self._resolved[name]

    def records(self) -> list[Resolved]:
        return list(self._resolved.values())

    def __repr__(self) -> str:
        # Secret values are `Secret` instances, so their repr is the mask.
        body = ", ".join(f"{r.name}={r.value!r}" for r in self._resolved.values())
        return f"Settings({body})"


def resolve(
    fields: Sequence[Field[Any]], findings: Sequence[Findings]
) -> tuple[dict[str, Resolved], list[Problem]]:
    """Pick, for each field, the first candidate in source order and type it.

    A source problem for a field stops that field, whatever other sources
    hold: a broken source never falls back to a lower one.
    """
    problems = [p for f in findings for p in f.problems]
    broken = {p.setting for p in problems}
    resolved: dict[str, Resolved] = {}

    for fld in fields:
        candidates = [
            c for f in findings for c in f.candidates if c.setting == fld.name
        ]
        if fld.name in broken:
            continue
        if not candidates:
            resolved[fld.name] = Resolved(fld.name, fld.default, fld.secret, DEFAULT)
            continue

        winner, shadowed = candidates[0], tuple(candidates[1:])
        try:
            value = fld.parse(winner.text())
        except ValueError as error:
            problems.append(_invalid(fld, winner, error))
            continue

        resolved[fld.name] = Resolved(
            fld.name, value, fld.secret, winner.origin, shadowed
        )

    return resolved, problems


def _invalid(fld: Field[Any], winner: Candidate, error: ValueError) -> Problem:
    reason = str(error)
    if (
        fld.secret
        or isinstance(winner.raw, Secret)
        or isinstance(error, HiddenValueError)
    ):
        return Problem(fld.name, winner.origin, f"the value {reason}")
    return Problem(fld.name, winner.origin, f"{winner.text()!r} {reason}")
