"""`python -m config explain|check`: where each setting came from.

Output is rendered from `Resolved` records, whose secret values are `Secret`
instances, so no option can print a secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._load import load_settings, source_order
from ._model import Candidate
from ._resolve import Resolved, Settings
from ._secret import MASK, Secret
from .errors import ConfigError, SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m config",
        description="Show or check the service's resolved settings.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser(
        "explain", help="print each setting, its source and what it shadowed"
    )
    explain.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("check", help="exit non-zero and list errors, if any")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"invalid configuration: {error}", file=sys.stderr)
        return 1

    if args.command == "check":
        print(f"configuration is valid ({len(settings)} settings)")
        return 0
    if args.json:
        json.dump(explain_records(settings), sys.stdout, indent=2)
        print()
    else:
        print_table(settings, sys.stdout)
    return 0


def explain_records(settings: Settings) -> list[dict[str, Any]]:
    """Return one JSON-ready object per setting; secret values are masked."""
    return [
        {
            "name": r.name,
            "value": _json_value(r.value),
            "secret": r.secret,
            "source": str(r.origin),
            "shadowed": [_shadowed_text(c) for c in r.shadowed],
            "note": r.note or None,
        }
        for r in settings.records()
    ]


def print_table(settings: Settings, out: TextIO) -> None:
    order = ",".join(source_order(settings))
    print(f"source order: {order},default (first wins)", file=out)
    rows = [("SETTING", "VALUE", "SOURCE", "SHADOWED")]
    rows += [_row(r) for r in settings.records()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]

    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]).rstrip(), file=out)


def _row(record: Resolved) -> tuple[str, str, str, str]:
    shadowed = "; ".join(_shadowed_text(c) for c in record.shadowed)
    if record.note:
        shadowed = f"{shadowed}; {record.note}" if shadowed else record.note
    return (record.name, _display(record.value), str(record.origin), shadowed)


def _shadowed_text(candidate: Candidate) -> str:
    if isinstance(candidate.raw, Secret):
        return f"{candidate.origin} ({MASK})"
    return f"{candidate.origin} = {candidate.raw!r}"


def _display(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    return str(value)


def _json_value(value: object) -> object:
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, tuple):
        return list(value)
    return value
