"""Environment variables: the canonical name first, then its aliases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._fields import Field
from .._model import Candidate, Findings, Origin
from .._secret import Secret


class EnvSource:
    """Reads the process environment. An empty variable counts as unset."""

    def __init__(
        self,
        variables: Mapping[str, str],
        *,
        name: str = "env",
        locate: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.variables = variables
        # For .env: a variable's locator, such as the file and line it is on.
        self.locate = locate

    def collect(self, fields: Sequence[Field[Any]]) -> Findings:
        findings = Findings(self.name)

        for fld in fields:
            for variable in (fld.name, *fld.aliases):
                text = self.variables.get(variable)
                if text is None or text == "":
                    continue
                raw: str | Secret = Secret(text) if fld.secret else text
                findings.candidates.append(
                    Candidate(fld.name, raw, self._origin(variable))
                )

        return findings

    def _origin(self, variable: str) -> Origin:
        if self.locate is None:
            return Origin(self.name, variable)
        return Origin(self.name, f"{variable} ({self.locate[variable]})")
