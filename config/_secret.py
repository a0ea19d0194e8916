"""A string wrapper that never shows its value by accident."""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

MASK = "**********"


class Secret:
    """A secret string: `str`, `repr`, `format` and JSON give a mask.

    The plaintext is returned only by `reveal()`, so every place that needs it
    names that method and can be found with a search.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the plaintext. Call this only where the value is used."""
        return self._value

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __format__(self, format_spec: str) -> str:
        return format(MASK, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, so equality checks do not leak the value by timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        # Immutable, so a copy can be the object itself; no plaintext moves.
        return self

    def __reduce__(self) -> NoReturn:
        # Pickling would write the plaintext into whatever stores the pickle.
        raise TypeError("Secret values cannot be pickled")


def json_default(value: object) -> Any:
    """Serialize a `Secret` as its mask; use as `json.dumps(..., default=...)`."""
    if isinstance(value, Secret):
        return MASK
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
