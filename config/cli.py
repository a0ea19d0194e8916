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

from . import schema as s
from ._load import load_settings, source_order, vault_config_of
from ._model import Candidate, Origin
from ._resolve import Resolved, Settings
from ._secret import MASK, Secret
from .errors import ConfigError, SettingsError
from .leases import DynamicCredentials, Lease

DYNAMIC = ("REDIS_USERNAME", "REDIS_PASSWORD")


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
    explain.add_argument(
        "--no-lease",
        action="store_true",
        help="with VAULT_DB_ROLE, do not request (and then revoke) a lease to show",
    )
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

    try:
        records = with_dynamic_credentials(settings, request=not args.no_lease)
    except ConfigError as error:
        print(f"invalid configuration: {error}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(explain_records(records), sys.stdout, indent=2)
        print()
    else:
        print_table(settings, records, sys.stdout)
    return 0


def with_dynamic_credentials(settings: Settings, *, request: bool) -> list[Resolved]:
    """Return the records, with Vault's credentials in place of static ones.

    With VAULT_DB_ROLE set, any static Redis username and password is ignored.
    To show the lease, one is requested and revoked straight away.
    """
    records = settings.records()
    role = settings[s.VAULT_DB_ROLE]
    if not role:
        return records

    path = f"{settings[s.VAULT_DB_MOUNT]}/creds/{role}"
    lease: Lease | None = None
    if request:
        dynamic = DynamicCredentials(
            vault_config_of(settings), settings[s.VAULT_DB_MOUNT], role
        )
        lease = dynamic.start()
        dynamic.close(revoke=True)

    return [_dynamic(r, path, lease) if r.name in DYNAMIC else r for r in records]


def _dynamic(record: Resolved, path: str, lease: Lease | None) -> Resolved:
    shadowed = record.shadowed
    if record.origin.kind != "default":
        shadowed = (Candidate(record.name, _raw(record), record.origin), *shadowed)
    note = "static value ignored: VAULT_DB_ROLE is set"
    if lease is None:
        origin = Origin("vault", f"{path} (no lease requested)")
        return Resolved(record.name, None, record.secret, origin, shadowed, note)

    locator = f"{path} (lease {lease.short_id}, {int(lease.remaining())} s left)"
    value: object = lease.password if record.secret else lease.username
    return Resolved(
        record.name, value, record.secret, Origin("vault", locator), shadowed, note
    )


def _raw(record: Resolved) -> str | Secret:
    if isinstance(record.value, Secret):
        return record.value
    return "" if record.value is None else str(record.value)


def explain_records(records: Sequence[Resolved]) -> list[dict[str, Any]]:
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
        for r in records
    ]


def print_table(settings: Settings, records: Sequence[Resolved], out: TextIO) -> None:
    order = ",".join(source_order(settings))
    print(f"source order: {order},default (first wins)", file=out)
    rows = [("SETTING", "VALUE", "SOURCE", "SHADOWED")]
    rows += [_row(r) for r in records]
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
